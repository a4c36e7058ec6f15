import json
import math
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict, fields

import pytest
import torch

import dgl_capsules.train as train_module
from helpers import band_splits
from dgl_capsules.models import get_model
from dgl_capsules.train import TrainConfig, accuracy, load_model, save_atomic, set_threads, train

QUIET = dict(progress=False, log=lambda *a: None)


def tiny_splits(n_train=48, seed=0):
    return band_splits(n_train, seed)


def config(**kw):
    return TrainConfig(**dict(dict(model="capsnet", preset="tiny", epochs=2, batch_size=16, lr=3e-3, seed=0), **kw))


def run(tmp_path, name, resume=False, overwrite=False, splits=None, **kw):
    return train(config(**kw), str(tmp_path / name), resume=resume, overwrite=overwrite,
                 splits=splits if splits is not None else tiny_splits(), **QUIET)


def weights(path):
    return torch.load(path)["model"]


def drop_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_training_writes_metrics_and_learns(tmp_path):
    m = run(tmp_path, "a", epochs=3, shift=1)
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    # the config, all of it (through JSON: the tuple eval_each_epoch comes back a list)
    assert {k: saved[k] for k in asdict(config())} == json.loads(json.dumps(asdict(config(epochs=3, shift=1))))
    for key in ("test_accuracy", "best_val_accuracy", "best_epoch", "seconds", "cpu_seconds", "parameters", "processes",
                "threads", "machine", "curve"):
        assert key in saved
    assert saved["threads"] == torch.get_num_threads() and saved["processes"] == 1
    assert {"cpu", "torch", "dgl"} <= set(saved["machine"]) and saved["machine"]["torch"] == torch.__version__
    assert saved["epochs"] == 3 and len(saved["curve"]) == 3
    assert saved["curve"][-1]["train_loss"] < saved["curve"][0]["train_loss"]
    assert saved["test_accuracy"] == m["test_accuracy"]
    assert saved["best_val_accuracy"] == max(r["val_accuracy"] for r in saved["curve"])
    assert torch.load(tmp_path / "a" / "checkpoint.pt")["config"] == asdict(config(epochs=3, shift=1))


@pytest.mark.parametrize("kw", [dict(model="capsnet"), dict(model="cnn", settings=dict(width=0.05), shift=2,
                                                               rotate=10, scale=0.1),
                                dict(model="cnn", settings=dict(width=0.05), ema=0.9)])
def test_resume_equals_an_uninterrupted_run(tmp_path, kw):
    full = run(tmp_path, "full", epochs=2, **kw)
    run(tmp_path, "split", epochs=1, **kw)
    torch.manual_seed(123)  # a different global RNG state must not matter: the checkpoint restores it
    resumed = run(tmp_path, "split", epochs=2, resume=True, **kw)
    a, b = weights(tmp_path / "full" / "checkpoint.pt"), weights(tmp_path / "split" / "checkpoint.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert drop_seconds(full["curve"]) == drop_seconds(resumed["curve"])
    assert full["test_accuracy"] == resumed["test_accuracy"]


@pytest.mark.parametrize("model,kw", [("capsnet", dict(shift=1)),
                                      pytest.param("matrixcaps", dict(shift=1, rotate=10, scale=0.1, ema=0.9),
                                                   marks=pytest.mark.slow)])
def test_same_seed_on_one_thread_gives_identical_losses_fresh_and_resumed(tmp_path, model, kw):
    # what must be deterministic: two fresh runs and a run stopped after epoch 1 and resumed
    # give the same per-epoch losses and weights, bit for bit, on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = tiny_splits(n_train=200)
        kw = dict(model=model, epochs=2, batch_size=32, splits=splits, **kw)
        first, second = run(tmp_path, "a", **kw), run(tmp_path, "b", **kw)
        run(tmp_path, "c", **dict(kw, epochs=1))
        resumed = run(tmp_path, "c", resume=True, **kw)
    finally:
        torch.set_num_threads(threads)
    losses = [r["train_loss"] for r in first["curve"]]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert [r["train_loss"] for r in second["curve"]] == losses
    assert [r["train_loss"] for r in resumed["curve"]] == losses
    assert drop_seconds(first["curve"]) == drop_seconds(second["curve"]) == drop_seconds(resumed["curve"])
    a, c = weights(tmp_path / "a" / "checkpoint.pt"), weights(tmp_path / "c" / "checkpoint.pt")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_rotate_and_scale_augment_the_training_images(tmp_path, monkeypatch):
    seen = []
    real = train_module.random_affine
    monkeypatch.setattr(train_module, "random_affine", lambda x, g, **kw: seen.append(kw) or real(x, g, **kw))
    cnn = dict(model="cnn", settings=dict(width=0.05), epochs=1)
    run(tmp_path, "plain", **cnn)
    assert seen == []
    run(tmp_path, "aug", rotate=15, scale=0.1, **cnn)
    assert seen and all(kw == dict(rotation=15, scale=(0.9, 1.1)) for kw in seen)
    a, b = weights(tmp_path / "plain" / "checkpoint.pt"), weights(tmp_path / "aug" / "checkpoint.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "aug" / "metrics.json").read_text())
    assert saved["rotate"] == 15 and saved["scale"] == 0.1


def test_ema_validates_and_keeps_the_moving_average_of_the_weights(tmp_path, monkeypatch):
    snapshots = []  # the weights after every optimizer step
    real = train_module._update_average

    def spy(avg, net, decay):
        snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        real(avg, net, decay)

    monkeypatch.setattr(train_module, "_update_average", spy)
    cnn = dict(model="cnn", settings=dict(width=0.05), epochs=1)
    m = run(tmp_path, "ema", ema=0.8, **cnn)
    assert m["ema"] == 0.8 and len(snapshots) == 3  # 48 images, batch 16
    start = weights(tmp_path / "ema" / "checkpoint.pt")  # the trained weights; the average is stored beside them
    ckpt = torch.load(tmp_path / "ema" / "checkpoint.pt")
    key = next(k for k in ckpt["average"] if k.endswith("weight"))
    torch.manual_seed(0)  # the run seeds with its seed, 0, before building: the same initial weights
    net0 = get_model("cnn", "tiny", width=0.05, in_channels=1, image_size=28, n_classes=10)
    expected = net0.state_dict()[key].clone()
    for snap in snapshots:
        expected = 0.8 * expected + 0.2 * snap[key]
    torch.testing.assert_close(ckpt["average"][key], expected)
    assert not torch.equal(ckpt["average"][key], start[key])
    saved, _ = load_model(str(tmp_path / "ema" / "model.pt"))
    torch.testing.assert_close(saved.state_dict()[key], expected)  # the selected model is the average


@pytest.mark.parametrize("change,message", [
    (dict(shift=2), r"shift: .*checkpoint.pt was written with shift=1; got shift=2"),
    (dict(ema=0.5), r"ema: .* was written with ema=0.0; got ema=0.5"),
    (dict(lr=1e-2), r"lr: .* was written with lr=0.003; got lr=0.01"),
    (dict(seed=1), r"seed: .* was written with seed=0; got seed=1"),
    (dict(settings=dict(n_iters=1)), r"settings: .* was written with settings=\{\}; got settings=\{'n_iters': 1\}"),
    (dict(data="mnist"), r"data: .* was written with data='mnist5k'; got data='mnist'"),
    (dict(epochs=1), r"epochs: .* was written with epochs=2; got epochs=1; a resumed run may only raise epochs"),
])
def test_resume_refuses_any_changed_setting_but_more_epochs(tmp_path, change, message):
    # a run resumed with another setting would record a setting it never used: refused
    run(tmp_path, "a", epochs=2, shift=1)
    with pytest.raises(ValueError, match=message):
        run(tmp_path, "a", resume=True, **dict(dict(epochs=2, shift=1), **change))
    assert run(tmp_path, "a", resume=True, epochs=3, shift=1)["epochs"] == 3


def test_a_run_directory_holds_one_run(tmp_path):
    # train into a directory holding another run is refused unless resume or overwrite,
    # and resume without a checkpoint is refused instead of silently starting fresh
    with pytest.raises(ValueError, match=r"resume: there is no checkpoint to resume at .*a.checkpoint.pt"):
        run(tmp_path, "a", epochs=1, resume=True)
    first = run(tmp_path, "a", epochs=1)
    with pytest.raises(ValueError, match=r"out '.*a' holds another run \(checkpoint.pt, model.pt, metrics.json\); "
                                         r"continue it with resume=True or replace it with overwrite=True"):
        run(tmp_path, "a", epochs=1, seed=1)
    with pytest.raises(ValueError, match="preset: "):  # a bad config leaves the run it would replace alone
        run(tmp_path, "a", epochs=1, preset="huge", overwrite=True)
    assert sorted(os.listdir(tmp_path / "a")) == ["checkpoint.pt", "metrics.json", "model.pt"]
    (tmp_path / "a" / "routing_trace").mkdir()
    second = run(tmp_path, "a", epochs=1, seed=1, overwrite=True)
    assert not (tmp_path / "a" / "routing_trace").exists()
    assert second["seed"] == 1 and torch.load(tmp_path / "a" / "checkpoint.pt")["config"]["seed"] == 1
    assert first["curve"][0]["train_loss"] != second["curve"][0]["train_loss"]
    with pytest.raises(ValueError, match="resume=True and overwrite=True exclude each other"):
        run(tmp_path, "a", epochs=2, resume=True, overwrite=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("a directory without a run is fine")
    run(tmp_path, "b", epochs=1)


@pytest.mark.parametrize("kw,message", [
    (dict(shift=-3), r"shift must be an integer >= 0; got -3"),
    (dict(lr_decay=0), r"lr_decay must be a finite number > 0; got 0"),
    (dict(lr_decay=float("nan")), r"lr_decay must be a finite number > 0; got nan"),
    (dict(lr=0.0), r"lr must be a finite number > 0; got 0.0"),
    (dict(lr=float("nan")), r"lr must be a finite number > 0; got nan"),
    (dict(lr=float("inf")), r"lr must be a finite number > 0; got inf"),
    (dict(ema=1.0), r"ema must be in \[0, 1\); got 1.0"),
    (dict(ema=float("nan")), r"ema must be in \[0, 1\); got nan"),
    (dict(ema=-0.1), r"ema must be in \[0, 1\); got -0.1"),
    (dict(rotate=200), r"rotate must be in \[0, 180\] degrees; got 200"),
    (dict(scale=1), r"scale must be in \[0, 1\); got 1"),
    (dict(scale=float("nan")), r"scale must be in \[0, 1\); got nan"),
    (dict(trace_routing=-1), r"trace_routing must be an integer >= 0; got -1"),
    (dict(eval_each_epoch=("test", "val")),
     r"eval_each_epoch must name distinct extra evaluation sets \('val' is scored every epoch already\); "
     r"got \('test', 'val'\)"),
    (dict(eval_each_epoch=("test", "test")),
     r"eval_each_epoch must name distinct extra evaluation sets \(a name is repeated\)"),
    (dict(epochs=0), r"epochs must be an integer >= 1; got 0"),
    (dict(batch_size=2.5), r"batch_size must be an integer >= 1; got 2.5"),
    (dict(image_size=0), r"image_size must be None or a positive integer; got 0"),
    (dict(seed=True), r"seed must be an integer; got True"),
    (dict(model="resnet"), r"model: unknown model 'resnet'; expected one of capsnet, cnn, "),
    (dict(preset="huge"), r"preset: unknown \w+ preset 'huge'; expected one of paper, small, tiny"),
    (dict(model="matrixcaps", settings=dict(stem=1)),
     r"settings: \w+ has no setting 'stem'; settings are .*stem_stride"),
    (dict(settings=dict(image_size=40)), r"settings: image_size comes from the data, not from the settings"),
    (dict(model="matrixcaps", settings=dict(inverse_temperatures=[1.0, float("nan"), 1.0])),
     r"settings: inverse_temperatures must not be NaN"),
])
def test_bad_configs_are_refused_before_any_data_is_loaded(tmp_path, monkeypatch, kw, message):
    import dgl_capsules.data as data

    def no_data(*a, **k):
        raise AssertionError("data loaded before the config was validated")

    monkeypatch.setattr(data, "get_dataset", no_data)
    with pytest.raises(ValueError, match=f"^{message}"):
        config(**kw).validate()
    with pytest.raises(ValueError, match=f"^{message}"):
        train(config(**kw), str(tmp_path / "r"), **QUIET)
    assert not (tmp_path / "r").exists()


def test_bad_types_are_refused(tmp_path):
    with pytest.raises(TypeError, match="config must be a TrainConfig; got dict"):
        train(dict(model="capsnet"), str(tmp_path / "r"))
    with pytest.raises(TypeError, match="settings must be a dict of setting name -> value; got \\['n_iters=1'\\]"):
        config(settings=["n_iters=1"]).validate()
    with pytest.raises(TypeError, match="data must be a data set spec string; got None"):
        config(data=None).validate()
    with pytest.raises(TypeError, match=r"eval_each_epoch must be a tuple of evaluation set names such as "
                                        r"\('test', 'novel'\); got 'novel'"):
        config(eval_each_epoch="novel").validate()
    with pytest.raises(TypeError, match=r"eval_each_epoch must be a tuple .*; got \('test', 3\)"):
        config(eval_each_epoch=("test", 3)).validate()


def test_a_bad_setting_value_names_settings(tmp_path):
    with pytest.raises(ValueError, match="^settings: stem_stride must be a positive integer"):
        run(tmp_path, "a", model="matrixcaps", settings=dict(stem_stride=0))


def test_settings_replace_preset_settings_and_are_saved_with_the_run(tmp_path):
    metrics = run(tmp_path, "run", model="matrixcaps", epochs=1, settings=dict(stem_stride=1))
    assert metrics["settings"] == dict(stem_stride=1)
    model, ckpt = load_model(str(tmp_path / "run" / "model.pt"))
    assert ckpt["config"]["settings"] == dict(stem_stride=1) and model.conv.stride == (1, 1)
    with pytest.raises(ValueError, match="settings: .* was written with settings=\\{'stem_stride': 1\\}"):
        run(tmp_path, "run", model="matrixcaps", epochs=2, resume=True)


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
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_model(str(tmp_path / "nothing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="path '.*junk.pt': not loaded: it is cut short or was not written by torch"):
        load_model(str(tmp_path / "junk.pt"))
    torch.save(dict(weights=torch.zeros(2)), tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="path '.*foreign.pt' is not a dgl-capsules checkpoint"):
        load_model(str(tmp_path / "foreign.pt"))
    # a model.pt written before TrainConfig (model_args) still loads
    legacy = dict(model_args=dict(model="capsnet", in_channels=1, image_size=28, n_classes=10, preset="tiny",
                                  width=None), data="mnist5k", image_size=None, model=net.state_dict())
    torch.save(legacy, tmp_path / "legacy.pt")
    old, ckpt = load_model(str(tmp_path / "legacy.pt"))
    assert ckpt["config"]["preset"] == "tiny"
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), net.state_dict().values()))


def test_accuracy_single_and_multi_label():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.9, 0.1, 0.8], [0.1, 0.2, 0.3]])
    assert accuracy(scores, torch.tensor([0, 2, 2])) == pytest.approx(2 / 3)
    two_hot = torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 1, 1]])
    assert accuracy(scores, two_hot) == pytest.approx(2 / 3)


def test_trace_routing_records_after_initialisation_and_every_epoch_without_changing_the_run(tmp_path,
                                                                                             monkeypatch):
    import dgl_capsules.viz as viz

    calls = []

    def record(model, dataset, path, n=8):
        calls.append((os.path.relpath(path, tmp_path), n, len(dataset), model.training))
        with torch.no_grad():
            model.eval()(dataset.images[:n])
        torch.rand(3)  # a recorder that draws random numbers must not change the run
        open(path, "wb").close()
        return path

    monkeypatch.setattr(viz, "record_routing", record, raising=False)
    plain = run(tmp_path, "plain", epochs=2)
    traced = run(tmp_path, "traced", epochs=2, trace_routing=3)
    trace = os.path.join("traced", "routing_trace")
    assert [c[0] for c in calls] == [os.path.join(trace, f"epoch_{e:03d}.pt") for e in (0, 1, 2)]
    assert all(c[1] == 3 and c[2] == 20 for c in calls)  # the validation split
    assert drop_seconds(plain["curve"]) == drop_seconds(traced["curve"])
    a, b = weights(tmp_path / "plain" / "checkpoint.pt"), weights(tmp_path / "traced" / "checkpoint.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    calls.clear()
    run(tmp_path, "traced", epochs=3, trace_routing=3, resume=True)
    assert [c[0] for c in calls] == [os.path.join(trace, "epoch_003.pt")]  # no second epoch 0


_FAULTS_OF_LATER_STEPS = textwrap.dedent("""
    import resource, sys
    import torch
    if sys.argv[1] == "reuse":
        from dgl_capsules.train import reuse_freed_memory
        assert reuse_freed_memory() is True
    faults = []
    for step in range(10):  # a tensor of 64 MB (above glibc's largest mmap threshold) per step
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.ones(16 << 20)  # new pages, or a block freed by an earlier step
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del x
    print(sum(faults[-4:]))  # of the last 4 steps
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt; elsewhere a no-op")
def test_reuse_freed_memory_serves_later_steps_from_freed_blocks():
    # a 64 MB tensor allocated after an equal one was freed is faulted in page by page
    # (16,384 pages of 4 KB) by default; once freed memory is kept for reuse, the heap stops
    # growing after the first steps and later steps do not fault at all. The heap settles on up to
    # three such blocks (PyTorch's 64-byte aligned allocations do not always fit the block just
    # freed): seen settled by the fifth step in 30 runs of 12 steps, so the last 4 of 10 are measured.
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE="0")
    faults = {}
    for mode in ("default", "reuse"):
        proc = subprocess.run([sys.executable, "-c", _FAULTS_OF_LATER_STEPS, mode], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        faults[mode] = int(proc.stdout.split()[-1])
    assert faults["default"] > 4 * 10_000 and faults["reuse"] < 500, faults


def test_reuse_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    assert train_module.reuse_freed_memory() is False


def test_set_threads_sizes_torch_and_dgl_and_defaults_to_a_share_of_the_cores(monkeypatch):
    from dgl.utils import get_num_threads, set_num_threads

    before = torch.get_num_threads(), get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        assert set_threads(2) == 2 and torch.get_num_threads() == 2 and get_num_threads() == 2
        assert os.environ["OMP_NUM_THREADS"] == "2"
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
        assert set_threads() == 8
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads() == 1
        with pytest.raises(ValueError, match="threads must be a positive integer; got 0"):
            set_threads(0)
    finally:
        torch.set_num_threads(before[0])
        set_num_threads(before[1])


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch, torch.distributed as dist
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_train import tiny_splits
        from dgl_capsules.train import TrainConfig, set_threads, train
        set_threads()
        config = TrainConfig(model="capsnet", preset="tiny", epochs=1, batch_size=8, lr=3e-3, seed=0)
        metrics, net = train(config, {str(tmp_path / "run")!r}, splits=tiny_splits(), progress=False,
                             return_model=True)
        rank = dist.get_rank()
        torch.save(net.state_dict(), {str(tmp_path)!r} + f"/rank{{rank}}.pt")
        dist.destroy_process_group()
    """))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = get_model("capsnet", "tiny")
    assert not all(torch.equal(a[k], v) for k, v in start.state_dict().items())  # they did train
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["processes"] == 2
    # torchrun sets OMP_NUM_THREADS=1 for two processes; each process keeps to its share
    assert m["threads"] == 1
    # each rank saw half of the 48 training images: 3 steps of 8
    assert m["curve"][0]["step"] == 3


def test_the_trainer_drives_matrixcaps_through_the_same_protocol(tmp_path):
    m = run(tmp_path, "em", model="matrixcaps", epochs=1, batch_size=24)
    assert m["model"] == "matrixcaps" and m["epochs"] == 1 and m["curve"][0]["step"] == 2
    net, _ = load_model(str(tmp_path / "em" / "model.pt"))
    layers = net.routing(tiny_splits().test.images[:1])
    assert layers and all(layer.result.trace for layer in layers)


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


def test_train_config_fields_are_the_agreed_ones():
    assert [f.name for f in fields(TrainConfig)] == [
        "model", "preset", "settings", "data", "image_size", "epochs", "batch_size", "lr", "lr_decay",
        "lr_decay_steps", "lr_floor", "shift", "rotate", "scale", "augment", "ema", "seed", "trace_routing", "eval_each_epoch"]


def test_the_library_speaks_of_parameters_not_flags():
    # only the cli*.py modules know --flags; docstrings may describe the command line, messages may not
    import ast
    import re
    from pathlib import Path

    import dgl_capsules

    root = Path(dgl_capsules.__file__).parent
    hits = []
    for path in sorted(root.rglob("*.py")):
        if path.parent == root and path.name.startswith("cli"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value
                if re.search(r"(?<![\w-])--[a-z]", text) and not re.fullmatch(r"--[\w-]+", text):  # not argv items
                    hits.append(f"{path.relative_to(root)}:{node.lineno}: {text.strip()}")
    assert hits == []


def test_a_registered_model_trains_with_no_other_change(tmp_path):
    # adding a model is one registration; the trainer, its checks and load_model know it by name
    from torch import nn

    from dgl_capsules.models import register_model, unregister_model

    @register_model("toy-linear", presets={"wide": dict(hidden=32)})
    class ToyLinear(nn.Module):
        def __init__(self, in_channels=1, image_size=28, n_classes=10, hidden=8):
            super().__init__()
            self.image_size = image_size
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, hidden), nn.ReLU(),
                                     nn.Linear(hidden, n_classes))

        def forward(self, x, y=None):
            return self.net(x)

        def loss(self, out, y, step=None):
            return nn.functional.cross_entropy(out, y)

        def scores(self, out):
            return out

        def routing(self, x):
            return []

    try:
        with pytest.raises(ValueError, match="settings: .* has no setting 'width'; settings are .*hidden"):
            run(tmp_path, "bad", model="toy-linear", preset="wide", settings=dict(width=2))
        m = run(tmp_path, "toy", model="toy-linear", preset="wide", epochs=3, lr=1e-2)
        assert m["model"] == "toy-linear" and m["parameters"] == 784 * 32 + 32 + 32 * 10 + 10
        assert m["curve"][-1]["train_loss"] < m["curve"][0]["train_loss"]
        net, _ = load_model(str(tmp_path / "toy" / "model.pt"))
        assert isinstance(net, ToyLinear) and net.net[1].out_features == 32
    finally:
        unregister_model("toy-linear")


# ---------------------------------------------------------------------------- eval_each_epoch


def novel_splits(n_train=48):
    """band_splits plus a ``novel`` set, like :class:`~dgl_capsules.data.ViewpointSplits`."""
    from dgl_capsules.data import ViewpointSplits

    train_set, val, test = tiny_splits(n_train)
    novel = band_splits(20, seed=5).test
    novel = type(novel)(novel.images.flip(-1), novel.labels, novel.n_classes)  # the bands mirrored: other images
    return ViewpointSplits(train_set, val, test, novel)


def test_eval_each_epoch_scores_the_named_sets_every_epoch_without_changing_the_run(tmp_path):
    from dgl_capsules.train import evaluate

    splits = novel_splits()
    plain = run(tmp_path, "plain", epochs=2, shift=1, splits=splits)
    scored = train(config(epochs=2, shift=1, eval_each_epoch=("test", "novel")), str(tmp_path / "scored"),
                   splits=splits, return_model=True, **QUIET)
    metrics, net = scored
    assert metrics["eval_each_epoch"] == ("test", "novel")
    for a, b in zip(plain["curve"], metrics["curve"]):  # the same run, plus two accuracies per epoch
        assert set(b) - set(a) == {"test_accuracy", "novel_accuracy"}
        assert {k: v for k, v in b.items() if k in a and k != "seconds"} == {k: v for k, v in a.items()
                                                                            if k != "seconds"}
        assert 0 <= b["test_accuracy"] <= 1 and 0 <= b["novel_accuracy"] <= 1
    assert plain["test_accuracy"] == metrics["test_accuracy"]
    assert "test_accuracy" not in plain["curve"][0]  # the default () leaves the curve as it was
    # the best-validation epoch's row holds the scores of the model the run returns
    best = metrics["curve"][metrics["best_epoch"] - 1]
    assert best["test_accuracy"] == metrics["test_accuracy"] == evaluate(net, splits.test)
    assert best["novel_accuracy"] == evaluate(net, splits.novel)
    saved = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert saved["eval_each_epoch"] == ["test", "novel"] and saved["curve"][1]["novel_accuracy"] >= 0
    # resuming compares it, and a JSON list equals the tuple it was
    with pytest.raises(ValueError, match=r"eval_each_epoch: .* was written with eval_each_epoch=\('test', "
                                         r"'novel'\); got eval_each_epoch=\('novel',\)"):
        train(config(epochs=3, shift=1, eval_each_epoch=("novel",)), str(tmp_path / "scored"), resume=True,
              splits=splits, **QUIET)
    resumed = train(TrainConfig(**dict(saved_config(saved), epochs=3)), str(tmp_path / "scored"), resume=True,
                    splits=splits, **QUIET)
    assert len(resumed["curve"]) == 3 and "novel_accuracy" in resumed["curve"][2]


def saved_config(saved):
    return {f.name: saved[f.name] for f in fields(TrainConfig)}


def test_eval_each_epoch_unknown_name_is_refused_when_the_data_is_loaded(tmp_path, monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("trained before the evaluation sets were checked")

    monkeypatch.setattr(train_module, "_one_epoch", no_training)
    with pytest.raises(ValueError, match="^eval_each_epoch: the data has no evaluation set 'novel'; it has test$"):
        run(tmp_path, "a", eval_each_epoch=("novel",))
    with pytest.raises(ValueError, match="^eval_each_epoch: the data has no evaluation set 'metadata'; "
                                         "it has test, novel$"):
        run(tmp_path, "b", eval_each_epoch=("test", "metadata"), splits=novel_splits())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_checkpoint_written_before_eval_each_epoch_still_resumes(tmp_path):
    run(tmp_path, "old", epochs=1)
    path = tmp_path / "old" / "checkpoint.pt"
    ckpt = torch.load(path)
    del ckpt["config"]["eval_each_epoch"]
    torch.save(ckpt, path)
    assert run(tmp_path, "old", epochs=2, resume=True)["epochs"] == 2
    with pytest.raises(ValueError, match=r"eval_each_epoch: .* was written with eval_each_epoch=\(\); "):
        run(tmp_path, "old", epochs=3, resume=True, eval_each_epoch=("test",))


class _FakeCpuClock:
    """``time.process_time`` of the train module: each call advances by ``step`` CPU seconds."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def process_time(self):
        self.now += self.step
        return self.now

    def __getattr__(self, name):  # the rest of the time module
        import time

        return getattr(time, name)


def test_cpu_seconds_add_up_over_epochs_and_resumes(tmp_path, monkeypatch):
    # the trainer reads the clock once at the start and once at the end of every epoch: 5 s per epoch
    monkeypatch.setattr(train_module, "time", _FakeCpuClock(5.0))
    assert run(tmp_path, "a", epochs=1)["cpu_seconds"] == 5.0
    resumed = run(tmp_path, "a", epochs=3, resume=True)
    assert resumed["cpu_seconds"] == 15.0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["cpu_seconds"] == 15.0


def test_cpu_seconds_are_unknown_after_a_checkpoint_without_them(tmp_path):
    run(tmp_path, "old", epochs=1)
    path = tmp_path / "old" / "checkpoint.pt"
    ckpt = torch.load(path)
    del ckpt["state"]["cpu_seconds"]  # as written before the field existed
    torch.save(ckpt, path)
    m = run(tmp_path, "old", epochs=2, resume=True)
    assert m["epochs"] == 2 and m["cpu_seconds"] is None and m["seconds"] > 0  # not the later epochs alone
    fresh = run(tmp_path, "new", epochs=1)
    assert 0 < fresh["cpu_seconds"]


def test_learning_rate_per_step_per_epoch_and_floor():
    from dgl_capsules.train import learning_rate

    per_step = TrainConfig(lr=1e-3, lr_decay=0.96, lr_decay_steps=2000)
    assert learning_rate(per_step, 5, 0) == 1e-3
    assert learning_rate(per_step, 0, 1000) == pytest.approx(1e-3 * 0.96 ** 0.5)  # smooth, not a staircase
    per_epoch = TrainConfig(lr=2e-3, lr_decay=0.9)
    assert learning_rate(per_epoch, 3, 12345) == pytest.approx(2e-3 * 0.9 ** 3)
    floored = TrainConfig(lr=5e-4, lr_decay=0.97, lr_floor=5e-5)
    assert learning_rate(floored, 75, 0) > 5e-5 and learning_rate(floored, 76, 0) == 5e-5
    with pytest.raises(ValueError, match=r"lr_floor must be a number in \[0, lr\] = \[0, 0.001\]; got 0.01"):
        TrainConfig(lr=1e-3, lr_floor=0.01).validate()
    with pytest.raises(ValueError, match="lr_decay_steps must be an integer >= 0; got -1"):
        TrainConfig(lr_decay_steps=-1).validate()


def test_non_finite_loss_stops_at_once_and_saves_nothing_of_the_epoch(tmp_path, monkeypatch):
    from dgl_capsules.models import CapsNet
    from dgl_capsules.train import NonFiniteLossError

    cfg = TrainConfig(preset="tiny", epochs=3, batch_size=8, lr=1e-3, seed=0)
    train(cfg, str(tmp_path), progress=False, splits=tiny_splits(), log=lambda *a: None)
    before = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    steps = []
    finite_loss = CapsNet.loss

    def loss_nan_in_epoch_4(self, out, y, step=None):
        steps.append(step)
        loss = finite_loss(self, out, y, step)
        return loss * float("nan") if step >= before["state"]["step"] else loss

    monkeypatch.setattr(CapsNet, "loss", loss_nan_in_epoch_4)
    with pytest.raises(NonFiniteLossError, match=r"loss: the training loss is nan at step \d+ \(epoch 4\) with "
                                                 r"learning rate 0.001; nothing of this epoch was saved"):
        train(TrainConfig(preset="tiny", epochs=4, batch_size=8, lr=1e-3, seed=0), str(tmp_path), resume=True,
              progress=False, splits=tiny_splits(), log=lambda *a: None)
    assert steps == [before["state"]["step"]]  # stopped at the first bad step, before any update
    after = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert after["state"]["epoch"] == 3 and all(torch.equal(after["model"][k], v) for k, v in before["model"].items())


def test_checkpoints_and_models_load_without_unpickling_code(tmp_path):
    """Every file train writes loads with weights_only=True; a file that would run code is refused by name."""
    from dgl_capsules.train import load_model

    cfg = TrainConfig(preset="tiny", epochs=1, batch_size=8, seed=0)
    train(cfg, str(tmp_path / "a"), progress=False, splits=tiny_splits(), log=lambda *a: None)
    for f in ("checkpoint.pt", "model.pt"):
        torch.load(tmp_path / "a" / f, weights_only=True)
    train(TrainConfig(preset="tiny", epochs=2, batch_size=8, seed=0), str(tmp_path / "a"), resume=True,
          progress=False, splits=tiny_splits(), log=lambda *a: None)

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    torch.save(dict(config=asdict(cfg), shape={}, model=Payload()), evil)
    with pytest.raises(ValueError, match=r"path '.*evil.pt': not loaded: it holds Python objects beyond tensors"):
        load_model(str(evil))
    assert not marker.exists()
    run = tmp_path / "r"
    run.mkdir()
    torch.save(dict(config=asdict(cfg), state={}, model=Payload()), run / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"resume '.*checkpoint.pt': not loaded: it holds Python objects"):
        train(cfg, str(run), resume=True, progress=False, splits=tiny_splits(), log=lambda *a: None)
    assert not marker.exists()


def test_a_named_augmentation_is_applied_to_every_training_batch(tmp_path):
    from dgl_capsules.data import register_augmentation, unregister_augmentation

    seen = []

    @register_augmentation("test-count")
    def count(images, generator):
        seen.append(images.shape[0])
        return images.flip(-1)

    try:
        train(TrainConfig(preset="tiny", epochs=1, batch_size=16, augment="test-count"), str(tmp_path),
              progress=False, splits=tiny_splits(), log=lambda *a: None)
    finally:
        unregister_augmentation("test-count")
    assert seen == [16, 16, 16]
    with pytest.raises(ValueError, match="augment: unknown augmentation 'nope'; expected one of"):
        TrainConfig(augment="nope").validate()


# ---------------------------------------------------------------------------- one run per directory


def test_a_second_run_into_a_directory_in_use_is_refused_with_one_line(tmp_path):
    from dgl_capsules.files import FolderInUseError, FolderLock

    out = tmp_path / "a"
    with FolderLock(out):  # another process training into it (a lock is per open file, even in one process)
        for kw in (dict(), dict(overwrite=True)):
            with pytest.raises(FolderInUseError, match=rf"^out '{out}' is in use by another run \(PID \d+, lock "
                                                       rf"file {out}/.lock\); wait for it to end or stop it$"):
                run(tmp_path, "a", epochs=1, **kw)
        assert os.listdir(out) == [".lock"]
    run(tmp_path, "a", epochs=1)
    with FolderLock(out):
        with pytest.raises(FolderInUseError, match="is in use by another run"):
            run(tmp_path, "a", epochs=2, resume=True)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1  # the finished run is untouched
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "metrics.json", "model.pt"]  # and its lock is gone


def test_a_stale_lock_is_taken_over_with_one_line(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".lock").write_text(f"{dead.pid} somehost\n")
    lines = []
    train(config(epochs=1), str(tmp_path / "a"), splits=tiny_splits(), progress=False, log=lines.append)
    assert lines[0] == f"out '{tmp_path / 'a'}': taking over the lock of PID {dead.pid}, which has ended " \
                       f"({tmp_path / 'a' / '.lock'})"
    assert not (tmp_path / "a" / ".lock").exists()


def test_an_output_path_that_is_a_file_or_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=rf"^out '{tmp_path / 'file'}' is a file; expected a directory for the run$"):
        run(tmp_path, "file", epochs=1)
    with pytest.raises(ValueError, match=rf"^out '{tmp_path / 'file' / 'run'}' cannot be created: "
                                         rf"'{tmp_path / 'file'}' is a file$"):
        run(tmp_path, "file/run", epochs=1)
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real(path, mode))
    with pytest.raises(ValueError, match=rf"^out '{tmp_path / 'new'}' cannot be written: no permission to write in "
                                         rf"'{tmp_path}'$"):
        run(tmp_path, "new", epochs=1)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_resume_from_a_cut_short_checkpoint_names_the_file(tmp_path):
    run(tmp_path, "a", epochs=1)
    ckpt = tmp_path / "a" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"^resume '{ckpt}': not loaded: it is cut short or was not written by "
                                         rf"torch.save$"):
        run(tmp_path, "a", epochs=2, resume=True)
