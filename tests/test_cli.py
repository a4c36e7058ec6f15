import math
import re
import subprocess
import sys

from dgl_capsules.cli import main


def test_demo_prints_falling_entropy(capsys):
    assert main(["demo", "--children", "60", "--parents", "5", "--batch", "2", "--iters", "4"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+", out, flags=re.M)
    entropy = [float(h) for _, h in rows]
    assert len(entropy) == 4
    assert entropy[0] == round(math.log(5), 4)
    assert all(b < a for a, b in zip(entropy, entropy[1:]))


def test_unknown_command_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "dgl_capsules", "fly"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice: 'fly'" in proc.stderr and "Traceback" not in proc.stderr
