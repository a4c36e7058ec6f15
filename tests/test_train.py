import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dgl_capsules.data import ImageDataset, Splits
from dgl_capsules.train import (
    UsageError, accuracy, build_model, load_model, parse_overrides, save_atomic, train,
)


def tiny_splits(n_train=48, seed=0):
    """Learnable little images: the class is the row of a bright band."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n) % 10
        x = 0.1 * torch.rand(n, 1, 28, 28, generator=g)
        for i in range(n):
            x[i, 0, 2 * y[i] + 3:2 * y[i] + 6, 4:24] = 1.0
        return ImageDataset(x, y, 10)

    return Splits(make(n_train), make(20), make(20))


def run(tmp_path, name, **kw):
    args = dict(model="capsnet", preset="tiny", epochs=2, batch_size=16, lr=3e-3, seed=0,
                out=str(tmp_path / name), splits=tiny_splits(), progress=False, log=lambda *a: None)
    args.update(kw)
    return train(**args)


def weights(path):
    return torch.load(path)["model"]


def test_training_writes_metrics_and_learns(tmp_path):
    m = run(tmp_path, "a", epochs=3)
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for key in ("test_accuracy", "best_val_accuracy", "epochs", "seconds", "parameters", "curve"):
        assert key in saved
    assert saved["epochs"] == 3 and len(saved["curve"]) == 3
    assert saved["curve"][-1]["train_loss"] < saved["curve"][0]["train_loss"]
    assert saved["test_accuracy"] == m["test_accuracy"]
    assert saved["best_val_accuracy"] == max(r["val_accuracy"] for r in saved["curve"])
    assert os.path.exists(tmp_path / "a" / "checkpoint.pt")


@pytest.mark.parametrize("model,kw", [("capsnet", {}), ("cnn", dict(width=0.05, shift=2, rotate=10, scale=0.1)),
                                      ("cnn", dict(width=0.05, ema=0.9))])
def test_resume_equals_an_uninterrupted_run(tmp_path, model, kw):
    full = run(tmp_path, "full", model=model, epochs=2, **kw)
    run(tmp_path, "split", model=model, epochs=1, **kw)
    torch.manual_seed(123)  # a different global RNG state must not matter: the checkpoint restores it
    resumed = run(tmp_path, "split", model=model, epochs=2, resume=True, **kw)
    a, b = weights(tmp_path / "full" / "checkpoint.pt"), weights(tmp_path / "split" / "checkpoint.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(full["curve"]) == drop(resumed["curve"])
    assert full["test_accuracy"] == resumed["test_accuracy"]


def test_rotate_and_scale_augment_the_training_images(tmp_path, monkeypatch):
    import dgl_capsules.train as train_module

    seen = []
    real = train_module.random_affine
    monkeypatch.setattr(train_module, "random_affine", lambda x, g, **kw: seen.append(kw) or real(x, g, **kw))
    run(tmp_path, "plain", model="cnn", width=0.05, epochs=1)
    assert seen == []
    run(tmp_path, "aug", model="cnn", width=0.05, epochs=1, rotate=15, scale=0.1)
    assert seen and all(kw == dict(rotation=15, scale=(0.9, 1.1)) for kw in seen)
    a, b = weights(tmp_path / "plain" / "checkpoint.pt"), weights(tmp_path / "aug" / "checkpoint.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "aug" / "metrics.json").read_text())
    assert saved["rotate"] == 15 and saved["scale"] == 0.1


def test_ema_validates_and_keeps_the_moving_average_of_the_weights(tmp_path, monkeypatch):
    import dgl_capsules.train as train_module

    snapshots = []  # the weights after every optimizer step
    real = train_module._update_average

    def spy(avg, net, decay):
        snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        real(avg, net, decay)

    monkeypatch.setattr(train_module, "_update_average", spy)
    m = run(tmp_path, "ema", model="cnn", width=0.05, epochs=1, ema=0.8)
    assert m["ema"] == 0.8 and len(snapshots) == 3  # 48 images, batch 16
    start = weights(tmp_path / "ema" / "checkpoint.pt")  # the trained weights; the average is stored beside them
    ckpt = torch.load(tmp_path / "ema" / "checkpoint.pt")
    key = next(k for k in ckpt["average"] if k.endswith("weight"))
    torch.manual_seed(0)  # the run seeds with its seed, 0, before building: the same initial weights
    net0 = build_model("cnn", width=0.05)
    expected = net0.state_dict()[key].clone()
    for snap in snapshots:
        expected = 0.8 * expected + 0.2 * snap[key]
    torch.testing.assert_close(ckpt["average"][key], expected)
    assert not torch.equal(ckpt["average"][key], start[key])
    saved, _ = load_model(str(tmp_path / "ema" / "model.pt"))
    torch.testing.assert_close(saved.state_dict()[key], expected)  # the selected model is the average
    run(tmp_path, "plain", model="cnn", width=0.05, epochs=1)
    with pytest.raises(UsageError, match="--resume --ema: .* was written without --ema"):
        run(tmp_path, "plain", model="cnn", width=0.05, epochs=2, ema=0.8, resume=True)
    with pytest.raises(UsageError, match=r"--ema must be in \[0, 1\); got 1.0"):
        run(tmp_path, "bad", ema=1.0)


def test_resume_refuses_another_runs_checkpoint(tmp_path):
    run(tmp_path, "a", epochs=1)
    with pytest.raises(UsageError, match="was written for"):
        run(tmp_path, "a", epochs=2, seed=1, resume=True)


def test_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    save_atomic({"epoch": 1, "w": torch.arange(3)}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": 2, "w": torch.arange(5)}, path)
    monkeypatch.undo()
    back = torch.load(path)
    assert back["epoch"] == 1 and torch.equal(back["w"], torch.arange(3))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_load_model_rebuilds_the_selected_model(tmp_path):
    run(tmp_path, "a", epochs=2)
    net, ckpt = load_model(str(tmp_path / "a" / "model.pt"))
    splits = tiny_splits()
    with torch.no_grad():
        acc = accuracy(net.scores(net(splits.test.images)), splits.test.labels)
    assert acc == json.loads((tmp_path / "a" / "metrics.json").read_text())["test_accuracy"]
    with pytest.raises(UsageError, match="no such file"):
        load_model(str(tmp_path / "nothing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UsageError, match="is not a dgl-capsules checkpoint"):
        load_model(str(tmp_path / "junk.pt"))


def test_accuracy_single_and_multi_label():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.9, 0.1, 0.8], [0.1, 0.2, 0.3]])
    assert accuracy(scores, torch.tensor([0, 2, 2])) == pytest.approx(2 / 3)
    two_hot = torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 1, 1]])
    assert accuracy(scores, two_hot) == pytest.approx(2 / 3)


def test_bad_training_arguments(tmp_path):
    with pytest.raises(UsageError, match="unknown model 'resnet'"):
        run(tmp_path, "a", model="resnet")
    with pytest.raises(UsageError, match="--epochs must be a positive integer; got 0"):
        run(tmp_path, "a", epochs=0)
    with pytest.raises(UsageError, match="unknown data set 'cifar'"):
        train(data="cifar", out=str(tmp_path / "b"))


def test_two_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch, torch.distributed as dist
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_train import tiny_splits
        from dgl_capsules.train import train
        torch.set_num_threads(1)
        metrics, net = train(model="capsnet", preset="tiny", epochs=1, batch_size=8, lr=3e-3, seed=0,
                             out={str(tmp_path / "run")!r}, splits=tiny_splits(), progress=False,
                             return_model=True)
        rank = dist.get_rank()
        torch.save(net.state_dict(), {str(tmp_path)!r} + f"/rank{{rank}}.pt")
        dist.destroy_process_group()
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = build_model("capsnet", preset="tiny")
    assert not all(torch.equal(a[k], v) for k, v in start.state_dict().items())  # they did train
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["processes"] == 2
    # each rank saw half of the 48 training images: 3 steps of 8
    assert m["curve"][0]["step"] == 3


def test_the_trainer_drives_matrixcaps_through_the_same_protocol(tmp_path):
    m = run(tmp_path, "em", model="matrixcaps", epochs=1, batch_size=24)
    assert m["model"] == "matrixcaps" and m["epochs"] == 1 and m["curve"][0]["step"] == 2
    net, _ = load_model(str(tmp_path / "em" / "model.pt"))
    layers = net.routing(tiny_splits().test.images[:1])
    assert layers and all(r.trace for _, _, r, _ in layers)


def test_the_trainer_redraws_multimnist_pairs_every_epoch_and_on_resume(tmp_path):
    from dgl_capsules.data import MultiPairs, multi_splits

    class Spy(MultiPairs):
        def set_epoch(self, epoch):
            self.calls = getattr(self, "calls", []) + [epoch]
            super().set_epoch(epoch)

    base = tiny_splits(n_train=20)
    splits = multi_splits(base, pairs_per_digit=2)
    spy = Spy(base.train, 40, seed=5)
    assert spy.calls == [0]  # construction draws epoch 0
    drawn = [spy.images.clone()]
    spy.set_epoch(1)
    drawn.append(spy.images.clone())
    spy.set_epoch(0)
    assert torch.equal(spy.images, drawn[0]) and not torch.equal(drawn[0], drawn[1])

    spy.calls = []
    run(tmp_path, "multi", splits=splits._replace(train=spy), epochs=2)
    assert spy.calls == [0, 1]
    spy.calls = []
    run(tmp_path, "multi", splits=splits._replace(train=spy), epochs=3, resume=True)
    assert spy.calls == [2]
    metrics = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and 0 <= metrics["test_accuracy"] <= 1


def test_overrides_replace_preset_settings_and_are_saved_with_the_run(tmp_path):
    from dgl_capsules.models import MatrixCapsNet

    net = build_model("matrixcaps", preset="tiny", overrides=dict(stem_stride=1, primary_kernel=3, primary_stride=2))
    assert isinstance(net, MatrixCapsNet) and net.conv.stride == (1, 1) and net.primary.kernel_size == 3
    assert build_model("capsnet", preset="tiny", overrides=dict(n_iters=1)).digits.n_iters == 1
    with pytest.raises(UsageError, match=r"--set: MatrixCapsNet has no setting 'stem'; settings are .*stem_stride"):
        build_model("matrixcaps", preset="tiny", overrides=dict(stem=1))
    with pytest.raises(UsageError, match="--set works for --model capsnet and matrixcaps, not 'cnn'"):
        build_model("cnn", preset="tiny", overrides=dict(width=2))
    with pytest.raises(UsageError, match="--set: stem_stride must be a positive integer"):
        build_model("matrixcaps", preset="tiny", overrides=dict(stem_stride=0))

    splits = tiny_splits()
    out = str(tmp_path / "run")
    metrics = train(model="matrixcaps", preset="tiny", epochs=1, batch_size=16, lr=3e-3, seed=0, out=out,
                    progress=False, splits=splits, log=lambda *a: None, overrides=dict(stem_stride=1))
    assert metrics["overrides"] == dict(stem_stride=1)
    model, ckpt = load_model(os.path.join(out, "model.pt"))
    assert ckpt["model_args"]["overrides"] == dict(stem_stride=1) and model.conv.stride == (1, 1)
    with pytest.raises(UsageError, match="--resume: .* was written for"):
        train(model="matrixcaps", preset="tiny", epochs=2, batch_size=16, lr=3e-3, seed=0, out=out,
              resume=True, progress=False, splits=splits, log=lambda *a: None)


def test_parse_overrides_reads_literals_and_refuses_items_without_equals():
    assert parse_overrides(["n_iters=2", "name=abc", " k = [1, 2] "]) == dict(n_iters=2, name="abc", k=[1, 2])
    assert parse_overrides([]) == {}
    with pytest.raises(UsageError, match="--set takes KEY=VALUE; got 'stem_stride'"):
        parse_overrides(["stem_stride"])
