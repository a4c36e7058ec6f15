import json
import math
import os
import re
import subprocess
import sys

import pytest

from dgl_capsules.cli import main, reconstruction_grid
from data_files import write_mnist


def test_route_demo_prints_falling_entropy(capsys):
    assert main(["route-demo", "--children", "60", "--parents", "5", "--batch", "2", "--iters", "4"]) == 0
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


def test_bad_data_path_exits_2_with_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dgl_capsules", "train", "--data", f"mnist:{tmp_path / 'nowhere'}",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "is not a directory" in proc.stderr


@pytest.mark.parametrize("argv,message", [
    (["train", "--model", "resnet"], "unknown model 'resnet'; expected one of capsnet, cnn, matrixcaps"),
    (["train", "--data", "cifar10"], "unknown data set 'cifar10'; expected one of mnist5k"),
    (["train", "--data", "smallnorb:/no/such/dir"], "'/no/such/dir' is not a directory"),
    (["train", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "--set", "stem_stride"], "--set takes KEY=VALUE; got 'stem_stride'"),
    (["train", "--rotate", "200"], "--rotate must be in [0, 180] degrees; got 200.0"),
    (["train", "--scale", "1"], "--scale must be in [0, 1); got 1.0"),
    (["train", "--model", "matrixcaps", "--set", "stem=1"], "--set: MatrixCapsNet has no setting 'stem'"),
    (["train", "--data", "multi:mnist5k", "--image-size", "30"],
     "--image-size must be at least 36 for MultiMNIST pairs; got 30"),
    (["evaluate", "--checkpoint", "/no/such/model.pt"], "'/no/such/model.pt': no such file"),
    (["visualize", "--checkpoint", "/no/such/model.pt"], "'/no/such/model.pt': no such file"),
])
def test_usage_errors_exit_2_with_one_line(capsys, tmp_path, argv, message):
    assert main(argv + ([] if argv[0] != "train" else ["--out", str(tmp_path / "r")])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith(f"dgl-capsules {argv[0]}: error:")


def test_train_evaluate_visualize_on_idx_files(tmp_path, capsys):
    data = tmp_path / "mnist"
    write_mnist(data, n_train=40, n_test=10)
    out = tmp_path / "run"
    assert main(["train", "--data", f"mnist:{data}", "--preset", "tiny", "--epochs", "1", "--batch-size", "16",
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["model"] == "capsnet"

    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--json", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["accuracy"]["test"] == pytest.approx(metrics["test_accuracy"])
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--on", "affine"]) == 2
    assert "train it with --image-size 40" in capsys.readouterr().err

    assert main(["visualize", "--checkpoint", str(out / "model.pt"), "--index", "3", "--out",
                 str(tmp_path / "viz")]) == 0
    for name in ("entropy.png", "histogram.gif", "bipartite.gif"):
        assert (tmp_path / "viz" / "digitcaps" / name).stat().st_size > 0
    assert json.loads((tmp_path / "viz" / "digit.json").read_text())["index"] == 3
    assert main(["visualize", "--checkpoint", str(out / "model.pt"), "--index", "10"]) == 2
    assert "--index must be in [0, 10); got 10" in capsys.readouterr().err


def test_reconstruction_grid_writes_a_png(tmp_path):
    from PIL import Image

    from dgl_capsules.data import ImageDataset
    from dgl_capsules.models import CapsNet
    import torch

    ds = ImageDataset(torch.rand(5, 1, 28, 28), torch.arange(5), 10)
    path = reconstruction_grid(CapsNet.from_preset("tiny").eval(), ds, str(tmp_path / "grid.png"), n=5)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_train_and_evaluate_on_multimnist_pairs(tmp_path, capsys):
    data = tmp_path / "mnist"
    write_mnist(data, n_train=40, n_test=10)
    out = tmp_path / "multi"
    assert main(["train", "--data", f"multi:mnist:{data}", "--preset", "tiny", "--epochs", "1",
                 "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == f"multi:mnist:{data}" and 0 <= metrics["test_accuracy"] <= 1
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--on", "test", "multi",
                 "--json", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())["accuracy"]
    assert ev["test"] == ev["multi"] == pytest.approx(metrics["test_accuracy"])
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--on", "affine"]) == 2
    assert "trained on MultiMNIST pairs; use --on test or multi" in capsys.readouterr().err
    assert main(["train", "--data", f"multi:multi:mnist:{data}", "--out", str(tmp_path / "x")]) == 2
    assert "already holds pairs" in capsys.readouterr().err
