"""Stopping and crashing training runs: Ctrl-C / SIGTERM stop at the end of a step, SIGKILL loses at most an epoch.

A run stopped by a signal leaves a checkpoint that says where in the epoch it
stopped; resuming it gives the same losses, weights and test accuracy as a run
that was never stopped (one thread). A run killed outright resumes from its
last epoch and ends the same too.
"""
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

import dgl_capsules.train as train_module
from dgl_capsules.cli import main
from dgl_capsules.interrupt import StopRequests, TrainingInterrupted
from dgl_capsules.models import BaselineCNN, CapsNet
from dgl_capsules.train import TrainConfig, train
from data_files import write_mnist
from helpers import band_splits

QUIET = dict(progress=False, log=lambda *a: None)
TINY_CLI = ["--preset", "tiny", "--batch-size", "8", "--quiet"]


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-for-bit comparisons need one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def config(**kw):
    return TrainConfig(**dict(dict(model="capsnet", preset="tiny", epochs=2, batch_size=16, lr=3e-3, seed=0), **kw))


def run(tmp_path, name, resume=False, **kw):
    return train(config(**kw), str(tmp_path / name), resume=resume, splits=band_splits(48), **QUIET)


def signal_at_step(monkeypatch, model_class, step, signum):
    """Send ``signum`` to this process while the loss of optimiser step ``step`` (0-based) is computed."""
    real = model_class.loss

    def loss(self, out, y, s=None):
        if s == step:
            os.kill(os.getpid(), signum)
        return real(self, out, y, s)

    monkeypatch.setattr(model_class, "loss", loss)


def same_run(a, b, folders):
    """Two finished runs: the same curve (but for the clock), test accuracy and weights."""
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(a["curve"]) == drop(b["curve"])
    assert a["test_accuracy"] == b["test_accuracy"] and a["test_correct"] == b["test_correct"]
    wa, wb = (torch.load(os.path.join(f, "model.pt"), weights_only=True)["model"] for f in folders)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stop_requests_record_the_signal_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequests() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        with pytest.raises(TrainingInterrupted, match="SIGTERM at once"):
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal stops at once
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    e = TrainingInterrupted(signal.SIGTERM, checkpoint="c.pt", where="after step 3")
    assert isinstance(e, KeyboardInterrupt) and e.exit_code == 143 and e.signal_name == "SIGTERM"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference runs, trained once: ``{name: (metrics, folder)}``."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("uninterrupted")
    out = {name: (run(root, name, **kw), root) for name, kw in CONFIGS.items()}
    torch.set_num_threads(saved)
    return out


CONFIGS = {  # every step is 16 of 48 images: 3 steps per epoch
    "capsnet": dict(shift=1),
    "cnn": dict(model="cnn", settings=dict(width=0.05), shift=2, rotate=10, scale=0.1, ema=0.9),  # dropout too
}


def same_as(name, metrics, uninterrupted, tmp_path, folder):
    full, root = uninterrupted[name]
    same_run(full, metrics, (root / name, tmp_path / folder))


@pytest.mark.parametrize("signum,name,model_class", [(signal.SIGINT, "capsnet", CapsNet),
                                                     (signal.SIGTERM, "cnn", BaselineCNN)])
def test_a_signal_stops_after_the_step_and_the_resumed_run_equals_an_uninterrupted_one(
        tmp_path, monkeypatch, uninterrupted, signum, name, model_class):
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal_at_step(monkeypatch, model_class, 4, signum)  # the second step of epoch 2
    with pytest.raises(TrainingInterrupted) as stopped:
        run(tmp_path, "split", **CONFIGS[name])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    e = stopped.value
    assert e.signum == signum and e.exit_code == 128 + signum
    assert e.where == "after step 5 (epoch 2, batch 2 of 3)" and e.checkpoint == str(tmp_path / "split" /
                                                                                       "checkpoint.pt")
    ckpt = torch.load(e.checkpoint, weights_only=True)
    assert ckpt["state"]["epoch"] == 1 and ckpt["state"]["step"] == 5 and ckpt["partial"]["batches"] == 2
    assert sorted(os.listdir(tmp_path / "split")) == ["checkpoint.pt"]  # no lock left, no metrics
    monkeypatch.undo()
    torch.manual_seed(123)  # the global random state of the stopped step comes back from the checkpoint
    same_as(name, run(tmp_path, "split", resume=True, **CONFIGS[name]), uninterrupted, tmp_path, "split")


def test_a_signal_during_validation_stops_before_the_next_epoch(tmp_path, monkeypatch, uninterrupted):
    real, calls = train_module.evaluate, []

    def evaluate(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(train_module, "evaluate", evaluate)
    with pytest.raises(TrainingInterrupted, match="SIGTERM after epoch 1"):
        run(tmp_path, "split", **CONFIGS["capsnet"])
    ckpt = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1 and "partial" not in ckpt  # the epoch was whole and saved
    monkeypatch.undo()
    same_as("capsnet", run(tmp_path, "split", resume=True, **CONFIGS["capsnet"]), uninterrupted, tmp_path, "split")


def test_a_run_stopped_twice_still_equals_an_uninterrupted_one(tmp_path, monkeypatch, uninterrupted):
    for step, where in ((1, "epoch 1, batch 2 of 3"), (3, "epoch 2, batch 1 of 3")):
        with monkeypatch.context() as m:
            signal_at_step(m, CapsNet, step, signal.SIGINT)
            with pytest.raises(TrainingInterrupted, match=rf"after step {step + 1} \({where}\)"):
                run(tmp_path, "split", resume=step > 1, **CONFIGS["capsnet"])
    same_as("capsnet", run(tmp_path, "split", resume=True, **CONFIGS["capsnet"]), uninterrupted, tmp_path, "split")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Fake IDX digits: 36 training images (5 steps of 8), 4 for validation, 10 for the test."""
    root = tmp_path_factory.mktemp("idx")
    write_mnist(root, n_train=40, n_test=10)
    return f"mnist:{root}"


def _argv(digits):
    return ["--threads", "1", "train", "--data", digits, *TINY_CLI, "--epochs", "4"]


@pytest.fixture(scope="module")
def command_run(tmp_path_factory, digits):
    """The uninterrupted run of the command: ``(metrics, folder, seconds)``."""
    out = tmp_path_factory.mktemp("command") / "full"
    t0 = time.time()
    assert main(_argv(digits) + ["--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text()), out, time.time() - t0


def test_the_command_stopped_by_ctrl_c_says_how_to_resume_and_that_command_finishes_the_run(
        tmp_path, monkeypatch, capsys, digits, command_run):
    signal_at_step(monkeypatch, CapsNet, 6, signal.SIGINT)
    capsys.readouterr()
    stopped = _argv(digits) + ["--out", str(tmp_path / "split"), "--overwrite"]
    assert main(stopped) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    ckpt = tmp_path / "split" / "checkpoint.pt"
    command = shlex.join(["dgl-capsules", *[a for a in stopped if a != "--overwrite"], "--resume"])
    assert err == (f"dgl-capsules train: stopped by SIGINT after step 7 (epoch 2, batch 2 of 5); checkpoint {ckpt}; "
                   f"resume with: {command}\n")
    monkeypatch.undo()
    assert main(shlex.split(command)[1:]) == 0
    full, folder, _ = command_run
    same_run(full, json.loads((tmp_path / "split" / "metrics.json").read_text()), (folder, tmp_path / "split"))


def _command(*args):
    return [sys.executable, "-m", "dgl_capsules", *args]


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")


def test_sigterm_to_the_command_exits_143_with_one_line_and_a_resumable_checkpoint(tmp_path, digits):
    out = tmp_path / "run"
    argv = _argv(digits) + ["--epochs", "50", "--out", str(out)]  # (the last --epochs counts)
    proc = subprocess.Popen(_command(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    for line in proc.stdout:  # training has started when the first epoch is logged
        if line.startswith("epoch   1 "):
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith("dgl-capsules train: stopped by SIGTERM after ")
    assert stderr.endswith(f"; resume with: {shlex.join(['dgl-capsules', *argv, '--resume'])}\n")
    assert not (out / ".lock").exists() and not (out / "metrics.json").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["state"]["epoch"] >= 1


def test_a_training_process_killed_at_a_random_point_resumes_to_the_same_result(tmp_path, capsys, digits,
                                                                                command_run):
    """Fault injection: SIGKILL at a random moment of training (nothing runs on the way out: the lock file
    stays, the last checkpoint is that of the last whole epoch), then the same command with --resume, or
    again from the start if no epoch was saved; the final metrics and weights equal an uninterrupted run's."""
    full, folder, seconds = command_run
    rng = random.Random()
    after_epoch, fraction = rng.randrange(4), rng.uniform(0.05, 0.5)  # killed in epoch after_epoch + 1 (or + 2)
    out = tmp_path / "killed"
    victim = subprocess.Popen(_command(*_argv(digits), "--out", str(out)), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=_env())
    epoch_seconds = seconds / 4  # the uninterrupted run's mean epoch, until the victim's own first epoch is timed
    for line in victim.stdout:  # the victim's progress, not a guess of its speed, says when training runs
        if " parameters) on " in line:  # data and model are ready: training starts now
            started = time.time()
        if line.startswith("epoch   1 "):
            epoch_seconds = time.time() - started  # the first epoch is the slowest (warm-up)
        if " parameters) on " in line and after_epoch == 0 or line.startswith(f"epoch {after_epoch:3d} "):
            break
    time.sleep(fraction * epoch_seconds)  # at most half an epoch: before the fourth epoch ends
    victim.kill()
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, (f"the run ended before the kill, {fraction:.2f} "
                                                       f"of an epoch after epoch {after_epoch}")
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    capsys.readouterr()
    assert main(_argv(digits) + ["--out", str(out), *resume]) == 0, capsys.readouterr().err
    assert f"taking over the lock of PID {victim.pid}, which has ended" in capsys.readouterr().out
    same_run(full, json.loads((out / "metrics.json").read_text()), (folder, out))
