"""dgl-capsules analyze: analysis.json and pictures of a tiny trained model; one-line errors naming the flag."""
import json

import pytest
import torch

from dgl_capsules.cli import main
from data_files import write_mnist


@pytest.fixture(autouse=True)
def same_threads_as_the_worker(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny CapsNet trained for one epoch (three steps) on 40 fake IDX digits: its model.pt."""
    root = tmp_path_factory.mktemp("analyze")
    write_mnist(root / "mnist", n_train=40, n_test=10)
    threads = ["--threads", str(torch.get_num_threads())]
    assert main([*threads, "train", "--data", f"mnist:{root / 'mnist'}", "--preset", "tiny", "--epochs", "1",
                 "--batch-size", "16", "--quiet", "--out", str(root / "run")]) == 0
    return root / "run" / "model.pt"


def error_line(capsys):
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("dgl-capsules analyze: error: ")
    return captured.err


def test_analyze_writes_the_analysis_and_its_pictures(run, tmp_path, capsys):
    out = tmp_path / "an"
    assert main(["analyze", "--checkpoint", str(run), "--out", str(out), "--max-samples", "6", "--swap-iters", "1",
                 "4", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"analysis: {out / 'analysis.json'}" in printed and "with uniform couplings" in printed
    result = json.loads((out / "analysis.json").read_text())
    assert result["source"] == str(run) and result["data"].startswith("mnist:")
    assert result["analysis"]["samples"] == 6 and result["swap"]["samples"] == 6
    (layer,) = result["analysis"]["layers"]
    assert layer["routing"] == "dynamic" and len(layer["iterations"]) == 3
    assert sorted(result["swap"]["iterations"]) == ["1", "4"] and "robustness" not in result
    for name in ("entropy", "swap", "dead"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert not (out / "robustness.png").exists()


def test_analyze_robustness_draws_every_model_on_one_axes(run, tmp_path, capsys):
    out = tmp_path / "rob"
    assert main(["analyze", "--checkpoint", str(run), "--out", str(out), "--max-samples", "4", "--swap-iters", "2",
                 "--robustness", "rotation", "--compare", f"again={run}", "--quiet"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    (rotation,) = result["robustness"].values()
    assert rotation["transform"] == "rotation" and rotation["samples"] == 4
    assert sorted(rotation["models"]) == ["CapsNet", "again"]
    assert rotation["models"]["CapsNet"] == rotation["models"]["again"]  # the same weights
    assert (out / "robustness.png").stat().st_size > 1000
    assert "robustness: " in capsys.readouterr().out


def test_analyze_compares_with_shipped_weights_by_model_and_name(run, tmp_path):
    out = tmp_path / "shipped"
    assert main(["analyze", "--checkpoint", str(run), "--out", str(out), "--max-samples", "4", "--swap-iters", "2",
                 "--robustness", "rotation", "--compare", "EM=matrixcaps:mnist", "--quiet"]) == 0
    (rotation,) = json.loads((out / "analysis.json").read_text())["robustness"].values()
    assert sorted(rotation["models"]) == ["CapsNet", "EM"]


@pytest.mark.parametrize("extra, message", [
    ([], "--checkpoint: give either --checkpoint"),
    (["--checkpoint", "RUN", "--max-samples", "1"], "--max-samples must be None or an integer >= 2; got 1"),
    (["--checkpoint", "RUN", "--batch-size", "0"], "--batch-size must be a positive integer; got 0"),
    (["--checkpoint", "RUN", "--swap-iters", "0"], r"--swap-iters must be integers >= 1; got \[0\]"),
    (["--checkpoint", "RUN", "--robustness", "spin"], "--robustness must be one of rotation, shear, scale, "
                                                      "translation; got 'spin'"),
    (["--checkpoint", "RUN", "--compare", "RUN"], "--compare: --compare draws other models on the robustness"),
    (["--checkpoint", "RUN", "--robustness", "--compare", "x=/no/such.pt"],
     r"--compare '/no/such.pt': no such file, nor shipped weights \(one of capsnet:mnist, .*matrixcaps:mnist"),
    (["--checkpoint", "RUN", "--robustness", "--compare", "x=capsnet:svhn"], "--compare 'capsnet:svhn': no such file"),
    (["--checkpoint", "/no/such/model.pt"], "--checkpoint '/no/such/model.pt': no such file"),
])
def test_bad_input_is_one_line_naming_the_flag(run, tmp_path, capsys, extra, message):
    import re

    argv = ["analyze", "--out", str(tmp_path / "x"), "--quiet"] + [str(run) if a == "RUN" else a for a in extra]
    assert main(argv) == 2
    assert re.search(message, error_line(capsys))
