"""tools/routing_necessity.py: the table of the shipped networks, rendered from its JSONs."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import routing_necessity  # noqa: E402


def record(**changes):
    rec = dict(model="capsnet", preset="small", weights="mnist", data="mnist", samples=10000,
               layers=[dict(name="digitcaps", routing="dynamic", entropy=0.99644, weighted_entropy=0.98487,
                            static_index=0.00628, dead=0.0)],
               trained=0.9953, uniform=dict(accuracy=0.9943, b=16, c=6, p=0.0525), random=dict(
                   accuracy=0.8592, b=1373, c=12, p=0.0),
               trained_uniform=dict(row="uniform coupling + reconstruction", accuracy=0.9956, seeds=[0]),
               commit="abc1234", command="python tools/routing_necessity.py")
    rec.update(changes)
    return rec


def test_the_table_gives_every_measure_and_says_where_p_underflows(tmp_path):
    folder = tmp_path / routing_necessity.FOLDER
    folder.mkdir()
    (folder / "capsnet-small-mnist.json").write_text(json.dumps(record()))
    (folder / "matrixcaps-small-mnist.json").write_text(json.dumps(record(
        model="matrixcaps", trained_uniform=None, layers=[
            dict(name="caps1", routing="em", entropy=0.5, weighted_entropy=0.4, static_index=0.1, dead=0.25),
            dict(name="class", routing="em", entropy=0.7, weighted_entropy=0.6, static_index=0.2, dead=None)])))
    text = routing_necessity.render(str(tmp_path))
    assert ("| capsnet small `mnist` | digitcaps (dynamic) | 10,000 | 99.53 % | 99.43 % (p = 0.052) | 85.92 % "
            "(p < 1e-300) | 99.56 % (1 seed) | 0.9964 (0.9849) | 0.0063 | 0.0 % |") in text
    assert "| matrixcaps small `mnist` | caps1 (em) | 10,000 | 99.53 % | 99.43 % (p = 0.052) |" in text
    assert "| none | 0.5000 (0.4000) | 0.1000 | 25.0 % |" in text
    assert "| matrixcaps small `mnist` | class (em) |  |  |  |  |  | 0.7000 (0.6000) | 0.2000 |  |" in text
    assert "`python tools/routing_necessity.py` (commit abc1234)" in text


def test_no_record_says_how_to_make_one(tmp_path):
    assert routing_necessity.render(str(tmp_path)) == \
        "No shipped network measured yet (`python tools/routing_necessity.py`).\n"
