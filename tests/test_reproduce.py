import json
import math
import os
import sys

import pytest
import torch

import dgl_capsules as dc
from dgl_capsules import reproduce as rp
from helpers import band_splits

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import readme_tables  # noqa: E402


def small_splits(n_train=32, seed=0):
    return band_splits(n_train, seed)


def quiet(lines):
    return lambda *a: lines.append(" ".join(str(x) for x in a))


# ---------------------------------------------------------------------------- experiments as data


def test_uniform_coupling_is_one_iteration_of_dynamic_routing():
    """The claim behind not training the "uniform coupling" rows: one iteration routes with c = 1/#parents."""
    g = dc.capsule_graph(12, 5)
    votes = torch.randn(g.num_edges(), 3, 4, dtype=torch.float64)
    r = dc.routing.dynamic_routing(g, votes, n_iters=1)
    assert torch.equal(r.coupling, torch.full_like(r.coupling, 1 / 5))
    # dense formulation: v_j = squash(mean over children of the votes for j)
    src, dst = g.edges()
    s = torch.zeros(5, 3, 4, dtype=torch.float64).index_add_(0, dst, votes / 5)
    n2 = (s ** 2).sum(-1, keepdim=True)
    torch.testing.assert_close(r.poses, n2 / (1 + n2) * s / n2.sqrt())
    # and three iterations do move the couplings (the rows are not all equal)
    assert not torch.allclose(dc.routing.dynamic_routing(g, votes, n_iters=3).coupling, r.coupling)


def test_every_row_is_a_valid_train_config():
    from dgl_capsules.train import TrainConfig

    for name in rp.list_experiments():
        exp = rp.experiment(name)
        labels = [r.label for r in exp.rows]
        assert len(set(labels)) == len(labels), name
        assert len({r.slug for r in exp.rows}) == len(labels), name
        for row in exp.rows:
            if row.same_as is not None:
                assert row.same_as in labels and exp.row(row.same_as).same_as is None
                assert row.config == {}
                continue
            assert "seed" not in row.config
            TrainConfig(**row.config, seed=0).validate()
        assert exp.runs(), name


def test_sabour_table1_rows():
    exp = rp.experiment("sabour-table1")
    seeds = {r.label: len(r.seeds) for r in exp.rows if r.same_as is None}
    assert seeds["3 iterations + reconstruction"] >= 3 and seeds["CNN (width-matched)"] >= 3
    assert exp.row("uniform coupling").same_as == "1 iteration"
    assert exp.row("1 iteration").config["settings"]["n_iters"] == 1
    assert exp.row("3 iterations").config["settings"]["decoder"] is None
    assert all(r.config["data"] == "mnist" for r in exp.rows if r.same_as is None)


def test_unknown_experiment_and_bad_seeds(tmp_path):
    with pytest.raises(ValueError, match="name: unknown experiment 'nope'; expected one of affnist-style"):
        rp.experiment("nope")
    with pytest.raises(ValueError, match="seeds must be a sequence of non-negative ints; got 3"):
        rp.reproduce("tiny", seeds=3, out=str(tmp_path))
    with pytest.raises(ValueError, match=r"seeds must hold at least one seed; got \(\)"):
        rp.reproduce("tiny", seeds=[], out=str(tmp_path))
    with pytest.raises(ValueError, match="label: experiment 'tiny' has no row 'x'"):
        rp.experiment("tiny").row("x")


def test_rows_choose_what_is_trained_and_in_which_order():
    exp = rp.experiment("sabour-table1")
    runs = exp.runs((0, 1), rows=["3-iterations-reconstruction", "CNN (width-matched)"])
    assert [(r.label, s) for r, s in runs] == [("3 iterations + reconstruction", 0), ("3 iterations + reconstruction", 1),
                                              ("CNN (width-matched)", 0), ("CNN (width-matched)", 1)]
    assert [s for _, s in exp.runs(rows=["1 iteration"])] == list(exp.row("1 iteration").seeds)
    with pytest.raises(ValueError, match="rows: row 'uniform coupling' is not trained .it equals '1 iteration'."):
        exp.runs(rows=["uniform coupling"])
    with pytest.raises(ValueError, match="label: experiment 'sabour-table1' has no row 'nope'"):
        exp.runs(rows=["nope"])
    with pytest.raises(ValueError, match="rows: a non-empty sequence of row labels; got '1 iteration'"):
        rp.reproduce("sabour-table1", rows="1 iteration")


# ---------------------------------------------------------------------------- running


def test_tiny_end_to_end_then_skips_finished_runs(tmp_path, monkeypatch):
    out = str(tmp_path / "tiny")
    lines = []
    table = rp.reproduce("tiny", out=out, splits=small_splits(), progress=False, log=quiet(lines))
    assert table == os.path.join(out, "table.md")
    files = sorted(f for f in os.listdir(out) if f.endswith(".json"))
    assert files == ["1-iteration-seed0.json", "3-iterations-seed0.json", "3-iterations-seed1.json"]
    rec = json.load(open(os.path.join(out, "3-iterations-seed1.json")))
    assert rec["experiment"] == "tiny" and rec["row"] == "3 iterations" and rec["seed"] == 1
    assert rec["config"]["seed"] == 1 and rec["config"]["settings"] == {"n_iters": 3}
    assert 0.0 <= rec["test_accuracy"] <= 1.0
    assert rec["parameters"] > 0 and rec["threads"] >= 1 and rec["seconds"] > 0 and rec["cpu_seconds"] > 0
    assert rec["machine"] and rec["small_data"] is True and "commit" in rec
    text = open(table).read()
    accs = [100 * json.load(open(os.path.join(out, f"3-iterations-seed{s}.json")))["test_accuracy"] for s in (0, 1)]
    mean, std = sum(accs) / 2, math.sqrt(sum((a - sum(accs) / 2) ** 2 for a in accs))
    assert f"| 3 iterations | {mean:.2f} ± {std:.2f} % (2 seeds) | {accs[0]:.2f} (seed 0), {accs[1]:.2f} (seed 1) |" \
        in text
    assert "uniform coupling (= 1 iteration)" in text and "softmax(0)" in text

    def no_training(*a, **kw):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("dgl_capsules.train.train", no_training)
    lines.clear()
    rp.reproduce("tiny", out=out, splits=small_splits(), progress=False, log=quiet(lines))
    assert sum(": done (" in line for line in lines) == 3
    assert open(table).read() == text


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    """A run stopped after its first epoch continues from its checkpoint and ends as an uninterrupted one."""
    import dataclasses

    import dgl_capsules.train as T

    real = T.train
    exp = rp.experiment("tiny")
    two_epochs = rp.Experiment("tiny", exp.title, tuple(
        dataclasses.replace(r, config=dict(r.config, epochs=2), seeds=(0,)) if r.same_as is None else r
        for r in exp.rows))
    monkeypatch.setitem(rp._EXPERIMENTS, "tiny", two_epochs)

    rp.reproduce("tiny", seeds=[0], out=str(tmp_path / "straight"), splits=small_splits(), progress=False,
                 log=quiet([]))

    def stopped_after_one_epoch(config, out, **kw):
        real(dataclasses.replace(config, epochs=1), out, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train", stopped_after_one_epoch)
    out = str(tmp_path / "stopped")
    with pytest.raises(KeyboardInterrupt):
        rp.reproduce("tiny", seeds=[0], out=out, splits=small_splits(), progress=False, log=quiet([]))
    assert not any(f.endswith(".json") for f in os.listdir(out))
    monkeypatch.setattr(T, "train", real)
    lines = []
    rp.reproduce("tiny", seeds=[0], out=out, splits=small_splits(), progress=False, log=quiet(lines))
    assert any("1 iteration, seed 0: resuming in" in line for line in lines)
    # the resumed row trains only its second epoch, the row that never started trains both
    assert sum(line.startswith("epoch   1 ") for line in lines) == 1
    assert sum(line.startswith("epoch   2 ") for line in lines) == 2
    for f in ("1-iteration-seed0.json", "3-iterations-seed0.json"):
        a = json.load(open(tmp_path / "straight" / f))
        b = json.load(open(os.path.join(out, f)))
        assert [r["epoch"] for r in b["curve"]] == [1, 2]
        assert [r["train_loss"] for r in b["curve"]] == [r["train_loss"] for r in a["curve"]]
        assert b["test_accuracy"] == a["test_accuracy"]


# ---------------------------------------------------------------------------- tables


def fake_results(folder):
    """A made-up results folder of the tiny experiment: 1 iteration one seed, 3 iterations two seeds."""
    os.makedirs(folder)
    for label, slug, seed, acc, cpu in [("1 iteration", "1-iteration", 0, 0.9, None),
                                        ("3 iterations", "3-iterations", 0, 0.95, 10800.0),
                                        ("3 iterations", "3-iterations", 1, 0.97, 18000.0)]:
        rec = dict(experiment="tiny", row=label, seed=seed, test_accuracy=acc, parameters=1234, seconds=7200.0,
                   threads=2, machine="test machine", commit="abc123")
        if cpu is not None:  # the first run has no CPU time, as a run begun before it was recorded
            rec["cpu_seconds"] = cpu
        with open(os.path.join(folder, f"{slug}-seed{seed}.json"), "w") as f:
            json.dump(rec, f)


def test_render_table_mean_std_and_every_seed(tmp_path):
    fake_results(tmp_path / "tiny")
    text = rp.render_table("tiny", str(tmp_path / "tiny"))
    # 95 and 97: mean 96.00, sample std sqrt(2) = 1.41
    assert "| 3 iterations | 96.00 ± 1.41 % (2 seeds) | 95.00 (seed 0), 97.00 (seed 1) | 1,234 | 2.0 h | 4.0 h | 2 " \
        "| none |" in text
    assert "| 1 iteration | 90.00 % (1 seed) | 90.00 (seed 0) | 1,234 | 2.0 h | not recorded | 2 |" in text
    assert "| uniform coupling (= 1 iteration) | 90.00 % (1 seed) |" in text
    assert "machine: test machine" in text and "commit: abc123" in text


def test_tables_give_mcnemar_between_rows_per_seed_from_the_stored_correctness(tmp_path):
    fake_results(tmp_path / "tiny")
    one = torch.tensor([True] * 20 + [False] * 7 + [True] * 3)  # 30 digits: 1 iteration right on 23
    three = torch.tensor([True] * 20 + [True] * 7 + [False] * 3)  # 3 iterations right on 27
    for slug, right in [("1-iteration", one), ("3-iterations", three)]:
        path = tmp_path / "tiny" / f"{slug}-seed0.json"
        rec = json.loads(path.read_text())
        rec["test_correct"] = dc.evaluation.pack_correct(right)
        path.write_text(json.dumps(rec))
    results = rp.load_results("tiny", str(tmp_path / "tiny"))
    (t,) = rp.paired_tests(rp.experiment("tiny"), results)  # seed 1 has one row only; the "=" row is not paired
    # 3 digits only "1 iteration" gets right, 7 only "3 iterations": p = 2 * P(X <= 3), X ~ Bin(10, 1/2) = 352 / 1024
    assert (t["a"], t["b"], t["seed"], t["a_only"], t["b_only"]) == ("1 iteration", "3 iterations", 0, 3, 7)
    assert t["p"] == pytest.approx(352 / 1024, rel=1e-12)
    text = rp.render_table("tiny", str(tmp_path / "tiny"))
    assert "McNemar's exact test" in text and "1 iteration vs 3 iterations: seed 0: 3 / 7, p = 0.34" in text


def test_tables_pair_rows_through_the_reruns_of_seeds_whose_records_hold_no_correctness(tmp_path):
    """A committed record without per-digit correctness is represented by its re-run in ``weights-reruns/``, and
    the note says so with the re-runs' accuracies; a re-run of a seed with no committed record is not used."""
    fake_results(tmp_path / "tiny")  # no record holds per-digit correctness
    assert "McNemar" not in rp.render_table("tiny", str(tmp_path / "tiny"))
    one = torch.tensor([True] * 20 + [False] * 7 + [True] * 3)  # 30 digits
    three = torch.tensor([True] * 20 + [True] * 7 + [False] * 3)
    rerun = tmp_path / "weights-reruns" / "tiny"
    rerun.mkdir(parents=True)
    for label, slug, seed, right in [("1 iteration", "1-iteration", 0, one), ("3 iterations", "3-iterations", 0, three),
                                     ("1 iteration", "1-iteration", 1, one)]:
        rec = dict(experiment="tiny", row=label, seed=seed, test_accuracy=float(right.float().mean()),
                   test_correct=dc.evaluation.pack_correct(right))
        (rerun / f"{slug}-seed{seed}.json").write_text(json.dumps(rec))
    text = rp.render_table("tiny", str(tmp_path / "tiny"))
    line = next(x for x in text.splitlines() if "McNemar" in x)
    assert line == ("- McNemar's exact test on the test digits, per seed (digits only the first row gets right / only "
                    "the second, two-sided p): 1 iteration vs 3 iterations: seed 0: 3 / 7, p = 0.34 (the seed's "
                    "re-runs in weights-reruns/: 76.67 % / 90.00 %).")
    # the table's accuracies stay those of the committed records
    assert "| 1 iteration | 90.00 % (1 seed) | 90.00 (seed 0) |" in text


def test_tables_give_mcnemar_against_the_rows_of_another_experiment(tmp_path, monkeypatch):
    """``paired_with``: every row against another experiment's row, seed by seed; that row's committed record
    when it holds per-digit correctness, else its re-run in ``weights-reruns/``; records without it are left out."""
    base = rp.experiment("tiny")
    exp = rp.Experiment(name="tiny-paired", title="paired", rows=(rp.Row("long", base.rows[1].config, seeds=(0, 1)),),
                        paired_with=(("tiny", "3 iterations"),))
    monkeypatch.setitem(rp._EXPERIMENTS, exp.name, exp)
    fake_results(tmp_path / "tiny")  # tiny's own records hold no per-digit correctness
    ours = torch.tensor([True] * 20 + [True] * 7 + [False] * 3)  # 30 digits
    theirs = torch.tensor([True] * 20 + [False] * 7 + [True] * 3)
    (tmp_path / "tiny-paired").mkdir()
    for seed in (0, 1):
        rec = dict(experiment="tiny-paired", row="long", seed=seed, test_accuracy=0.9,
                   test_correct=dc.evaluation.pack_correct(ours))
        (tmp_path / "tiny-paired" / f"long-seed{seed}.json").write_text(json.dumps(rec))
    table = rp.render_table("tiny-paired", str(tmp_path / "tiny-paired"))
    assert "McNemar" not in table  # no record of tiny holds what the test needs
    rerun = tmp_path / "weights-reruns" / "tiny"
    rerun.mkdir(parents=True)
    rec = dict(experiment="tiny", row="3 iterations", seed=0, test_accuracy=0.8,
               test_correct=dc.evaluation.pack_correct(theirs))
    (rerun / "3-iterations-seed0.json").write_text(json.dumps(rec))
    table = rp.render_table("tiny-paired", str(tmp_path / "tiny-paired"))
    # 7 digits only "long" gets right, 3 only tiny's row: p = 352 / 1024; seed 1 has no partner
    line = ("- McNemar's exact test against tiny's '3 iterations' on the test digits (digits only this experiment's "
            "row gets right / only tiny's, two-sided p): long, seed 0 (90.00 %) vs seed 0 (80.00 %, "
            f"{tmp_path.name}/weights-reruns/tiny): 7 / 3, p = 0.34.")
    assert line in table.splitlines()
    committed = json.loads((tmp_path / "tiny" / "3-iterations-seed0.json").read_text())
    committed["test_correct"] = dc.evaluation.pack_correct(ours)  # the committed record wins over the re-run
    (tmp_path / "tiny" / "3-iterations-seed0.json").write_text(json.dumps(committed))
    table = rp.render_table("tiny-paired", str(tmp_path / "tiny-paired"))
    assert f"vs seed 0 (95.00 %, {tmp_path.name}/tiny): 0 / 0, p = 1." in table


def test_extra_test_sets_are_scored_by_the_selected_model_and_tabled(tmp_path, monkeypatch):
    """A row's ``evaluate_on`` sets: each run records the validation-selected model's accuracy on them (what
    ``evaluate`` gives for the saved ``model.pt``), and the table gives each set a column with mean ± std and
    every seed's value."""
    from dgl_capsules.data import Splits
    from dgl_capsules.train import eval_set, evaluate, fit_images, load_model

    exp = rp.Experiment(name="tiny-affine", title="Smoke test of evaluate_on", rows=(
        rp.Row("CapsNet", dict(model="capsnet", preset="tiny", data="mnist5k", image_size=40, epochs=1,
                               batch_size=16, lr=2e-3), seeds=(0, 1), evaluate_on=("affine",)),))
    monkeypatch.setitem(rp._EXPERIMENTS, exp.name, exp)
    with pytest.raises(ValueError, match="image_size: the config asks for 40x40 images but splits holds 28x28"):
        rp.reproduce(exp.name, out=str(tmp_path / "t"), splits=small_splits(), progress=False, log=quiet([]))
    splits, out = Splits(*(fit_images(s, 40) for s in small_splits())), str(tmp_path / "t")
    rp.reproduce(exp.name, out=out, splits=splits, progress=False, log=quiet([]))
    affine = []
    for seed in (0, 1):
        rec = json.load(open(os.path.join(out, f"capsnet-seed{seed}.json")))
        model, _ = load_model(os.path.join(out, "runs", f"capsnet-seed{seed}", "model.pt"))
        assert rec["affine_accuracy"] == evaluate(model, eval_set("affine", splits, image_size=40))
        affine.append(100 * rec["affine_accuracy"])
    mean, std = sum(affine) / 2, math.sqrt(sum((a - sum(affine) / 2) ** 2 for a in affine))
    text = open(os.path.join(out, "table.md")).read()
    assert "| every seed | affine accuracy | last epoch's test accuracy | parameters |" in text
    assert f"| {mean:.2f} ± {std:.2f} % ({affine[0]:.2f}, {affine[1]:.2f}) |" in text


def test_render_table_rejects_a_foreign_json(tmp_path):
    fake_results(tmp_path / "tiny")
    with open(tmp_path / "tiny" / "x.json", "w") as f:
        json.dump(dict(experiment="sabour-table1", row="1 iteration", seed=0), f)
    with pytest.raises(ValueError, match="out: .*x.json is not a result of experiment 'tiny'"):
        rp.render_table("tiny", str(tmp_path / "tiny"))


def test_readme_tables_regenerates_only_between_markers(tmp_path, capsys):
    fake_results(tmp_path / "results" / "tiny")
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nkept text\n<!-- results:tiny -->\nold hand-typed table\n<!-- /results -->\nafter\n")
    args = ["--readme", str(readme), "--results", str(tmp_path / "results")]
    assert readme_tables.main(args + ["--check"]) == 1
    assert readme_tables.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nkept text\n<!-- results:tiny -->\n### Smoke test")
    assert text.endswith("<!-- /results -->\nafter\n")
    assert "old hand-typed table" not in text
    assert "| 3 iterations | 96.00 ± 1.41 % (2 seeds) |" in text
    assert readme_tables.main(args + ["--check"]) == 0
    assert readme_tables.main(args) == 0 and readme.read_text() == text
    readme.write_text("no markers\n")
    assert readme_tables.main(args) == 1
    assert "no <!-- results:NAME --> markers" in capsys.readouterr().err


def test_em_recipe_is_bitwise_deterministic_on_one_thread(tmp_path):
    """The README MatrixCapsNet recipe (shift, rotation, scaling, weight average) run twice with
    one seed on one thread gives the same curve and the same weights, bit for bit."""
    from dgl_capsules.train import TrainConfig, train

    torch.set_num_threads(1)
    row = rp.experiment("em-mnist5k").rows[0]
    config = TrainConfig(**dict(row.config, preset="tiny", epochs=1, batch_size=8), seed=3)
    runs = [train(config, str(tmp_path / f"run{i}"), splits=small_splits(), progress=False, log=quiet([]),
                  return_model=True) for i in range(2)]
    (m0, net0), (m1, net1) = runs
    assert [r["train_loss"] for r in m0["curve"]] == [r["train_loss"] for r in m1["curve"]]
    for (k, a), b in zip(net0.state_dict().items(), net1.state_dict().values()):
        assert torch.equal(a, b), k
    other = train(TrainConfig(**dict(row.config, preset="tiny", epochs=1, batch_size=8), seed=4),
                  str(tmp_path / "seed4"), splits=small_splits(), progress=False, log=quiet([]))
    assert other["curve"][0]["train_loss"] != m0["curve"][0]["train_loss"]


# ---------------------------------------------------------------------------- novel viewpoints


def test_viewpoints_experiments_are_listed_with_their_rows_and_published_figures():
    from dgl_capsules.train import TrainConfig

    assert {"viewpoints", "viewpoints-elevation", "viewpoints-tiny"} <= set(rp.list_experiments())
    for name, data, figures in [
            ("viewpoints", "viewpoints", ["6.86 % -> 20.33 %", "7.36 % -> 20.16 %", "none", "8.39 % -> 22.07 %"]),
            ("viewpoints-elevation", "viewpoints:elevation",
             ["5.78 % -> 16.37 %", "5.97 % -> 17.51 %", "none", "7.51 % -> 18.78 %"])]:
        exp = rp.experiment(name)
        assert exp.table == "matched" and exp.hours == 2.1 and "CNN 1,819 s (3,007 s" in exp.estimate
        assert [(r.config["model"], r.config["lr"]) for r in exp.rows] == [
            ("capsnet", 2e-3), ("matrixcaps", 3e-3), ("heinsen", 3e-3), ("cnn", 1e-3)]
        assert [r.paper for r in exp.rows] == figures
        for r in exp.rows:
            config = TrainConfig(**r.config).validate()
            assert (config.data, config.preset, config.batch_size, config.shift, config.lr_decay, config.epochs,
                    config.eval_each_epoch, config.ema, r.seeds) == (data, "small", 32, 2, 0.95, 30,
                                                                     ("test", "novel"), 0.0, (0,))
    assert {r.config["preset"] for r in rp.experiment("viewpoints-tiny").rows} == {"tiny"}


def viewpoint_record(label, seed, familiar, novel, best_epoch, parameters=100):
    """A made-up result of the viewpoints experiment: per-epoch familiar and novel errors, 60 s per epoch."""
    curve = [dict(epoch=i, val_accuracy=0.5, test_accuracy=1 - f, novel_accuracy=1 - n, seconds=60.0 * i)
             for i, (f, n) in enumerate(zip(familiar, novel), 1)]
    return dict(experiment="viewpoints", row=label, seed=seed, test_accuracy=1 - familiar[best_epoch - 1],
                best_epoch=best_epoch, parameters=parameters, seconds=60.0 * len(familiar), curve=curve)


def viewpoint_results():
    caps, em, heinsen, cnn = (r.label for r in rp.experiment("viewpoints").rows)
    return {
        # seed-mean familiar error 0.45, 0.2, 0.12: lowest 0.12
        caps: {0: viewpoint_record(caps, 0, [0.5, 0.2, 0.1], [0.7, 0.4, 0.3], 3),
               1: viewpoint_record(caps, 1, [0.4, 0.2, 0.14], [0.6, 0.5, 0.35], 2)},
        em: {0: viewpoint_record(em, 0, [0.6, 0.3, 0.25, 0.3], [0.8, 0.45, 0.4, 0.5], 3)},  # lowest 0.25
        heinsen: {0: viewpoint_record(heinsen, 0, [0.4, 0.35, 0.3], [0.6, 0.5, 0.45], 3)},  # lowest 0.3: T
        cnn: {0: viewpoint_record(cnn, 0, [0.5, 0.28, 0.1], [0.7, 0.5, 0.3], 3)},
    }


def test_matched_errors_by_hand(tmp_path):
    results = viewpoint_results()
    caps, em, heinsen, cnn = (r.label for r in rp.experiment("viewpoints").rows)
    target, rows = rp.matched_errors(results)
    # T = max(0.12, 0.25, 0.3, 0.1) = 0.3; first epochs at or below it: caps 2 (0.2), em 2 (0.3), heinsen 3, cnn 2
    assert target == pytest.approx(0.3)
    assert {k: v["epoch"] for k, v in rows.items()} == {caps: 2, em: 2, heinsen: 3, cnn: 2}
    assert rows[caps]["familiar"] == pytest.approx([0.2, 0.2]) and rows[caps]["novel"] == pytest.approx([0.4, 0.5])
    assert rows[cnn]["novel"] == pytest.approx([0.5]) and rows[heinsen]["seconds"] == [180.0]
    # the novel set chooses nothing: other novel errors, the same epochs
    for recs in results.values():
        for rec in recs.values():
            for r in rec["curve"]:
                r["novel_accuracy"] = 1 - r["novel_accuracy"]
    assert {k: v["epoch"] for k, v in rp.matched_errors(results)[1].items()} == {caps: 2, em: 2, heinsen: 3, cnn: 2}
    assert rp.matched_errors({}) == (None, {})

    out = tmp_path / "viewpoints"
    out.mkdir()
    for label, recs in viewpoint_results().items():
        for seed, rec in recs.items():
            (out / f"{rp.experiment('viewpoints').row(label).slug}-seed{seed}.json").write_text(json.dumps(rec))
    text = rp.render_table("viewpoints", str(out))
    assert "Matched familiar error T = 30.00 % (set by HeinsenImageNet `small`)." in text
    # caps at epoch 2: familiar 20, 20 (std 0), novel 40, 50 (mean 45, std 7.07); 120 s; best-val epochs 3 and 2:
    # familiar 10, 20 (15 ± 7.07), novel 30, 50 (40 ± 14.14)
    assert ("| CapsNet `small` (dynamic routing) | 20.00 ± 0.00 % | 45.00 ± 7.07 % | 2 | 2 min | "
            "15.00 ± 7.07 % -> 40.00 ± 14.14 % (3, 2) | 100 | 0, 1 | 6.86 % -> 20.33 % |") in text
    assert "| MatrixCapsNet `small` (EM routing) | 30.00 % | 45.00 % | 2 | 2 min | 25.00 % -> 40.00 % (3) |" in text
    assert "| CNN (width-matched) | 28.00 % | 50.00 % | 2 | 2 min | 10.00 % -> 30.00 % (3) | 100 | 0 |" in text
    assert "the novel set never chooses anything" in text and "Hahn" in text
    assert ("- every row trains with preset='small', batch_size=32, shift=2, lr_decay=0.95, epochs=30, "
            "eval_each_epoch=('test', 'novel'), data='viewpoints'; CapsNet `small` (dynamic routing): lr=0.002; "
            "MatrixCapsNet `small` (EM routing): lr=0.003;") in text
    (out / "cnn-width-matched-seed0.json").unlink()
    text = rp.render_table("viewpoints", str(out))
    assert "| CNN (width-matched) | not run yet |" in text and "T is over the rows run so far" in text


@pytest.mark.needs("pybullet")
def test_viewpoints_tiny_end_to_end(tmp_path):
    """The four models of the viewpoints experiment train on a tiny rendered set and fill the matched table."""
    splits = dc.data.viewpoints(classes=2, size=32, lightings=3, azimuths=[0, 20, 100, 200], elevations=[30, 40],
                                supersample=1, val_fraction=0.25, cache_dir=str(tmp_path / "cache"), progress=False)
    assert len(splits.novel) > 0
    out = str(tmp_path / "viewpoints-tiny")
    table = rp.reproduce("viewpoints-tiny", out=out, splits=splits, progress=False, log=quiet([]))
    results = rp.load_results("viewpoints-tiny", out)
    assert sorted(results) == sorted(r.label for r in rp.experiment("viewpoints-tiny").rows)
    for recs in results.values():
        assert [sorted(k for k in r if k.endswith("_accuracy")) for r in recs[0]["curve"]] == \
            [["novel_accuracy", "test_accuracy", "train_accuracy", "val_accuracy"]] * 2
    target, rows = rp.matched_errors(results)
    text = open(table).read()
    assert f"Matched familiar error T = {100 * target:.2f} %" in text
    for label, m in rows.items():
        assert f"| {label} | {100 * m['familiar'][0]:.2f} % | {100 * m['novel'][0]:.2f} % | {m['epoch']} |" in text


def test_sabour_official_follows_the_published_schedule_and_records_it(tmp_path):
    """The per-step schedule of Sabour et al.'s code, end to end through the tiny variant."""
    from dgl_capsules.evaluation import unpack_correct
    from dgl_capsules.train import TrainConfig, learning_rate

    row = rp.experiment("sabour-official").rows[0]
    assert row.config["batch_size"] == 128 and row.config["lr"] == 1e-3 and row.config["epochs"] >= 200
    assert (row.config["lr_decay"], row.config["lr_decay_steps"], row.config["shift"]) == (0.96, 2000, 2)
    # the code's margin loss is the paper's / 20, so its 0.0005 is 0.01 beside this library's margin loss
    assert row.config["settings"] == dict(n_iters=3, recon_weight=0.01)

    splits = small_splits(32)
    rp.reproduce("sabour-official-tiny", out=str(tmp_path), progress=False, log=lambda *a: None, splits=splits)
    (name,) = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    rec = json.loads((tmp_path / name).read_text())
    assert rec["config"]["lr_decay_steps"] == 5 and rec["config"]["lr_floor"] == 0.0
    config = TrainConfig(**rec["config"])
    for row in rec["curve"]:  # the rate of each epoch's last step: 2 steps per epoch at batch 16
        assert row["lr"] == pytest.approx(learning_rate(config, row["epoch"] - 1, row["step"] - 1))
        assert row["lr"] == pytest.approx(1e-3 * 0.96 ** ((row["step"] - 1) / 5))
    right = unpack_correct(rec["test_correct"], len(splits.test))
    assert right.float().mean().item() == pytest.approx(rec["test_accuracy"])
    assert 0 <= rec["last_test_accuracy"] <= 1


# ---------------------------------------------------------------------------- damaged results, interruptions


def test_a_damaged_result_json_is_reported_by_name_and_trained_again(tmp_path):
    out = str(tmp_path / "tiny")
    rp.reproduce("tiny", seeds=[0], rows=["1 iteration"], out=out, splits=small_splits(), progress=False,
                 log=quiet([]))
    path = os.path.join(out, "1-iteration-seed0.json")
    good = json.load(open(path))
    with open(path, "w") as f:
        f.write(json.dumps(good)[:40])  # cut short, as by a full disk
    with pytest.warns(UserWarning, match=rf"{path}: not a readable result JSON \(.*\); left out of the table"):
        assert "| 1 iteration | not run yet |" in rp.render_table("tiny", out)
    lines = []
    rp.reproduce("tiny", seeds=[0], rows=["1 iteration"], out=out, splits=small_splits(), progress=False,
                 log=quiet(lines))
    assert any(f"{path}: not a readable result JSON (" in line and line.endswith("training it again")
               for line in lines)
    again = json.load(open(path))
    assert again["test_accuracy"] == good["test_accuracy"] and again["curve"] == good["curve"]
    for bad, why in ((dict(good, test_accuracy="0.9"), "test_accuracy is '0.9'"), ([1, 2], "a list, not an object")):
        with open(path, "w") as f:
            json.dump(bad, f)
        with pytest.raises(rp.CorruptResultError, match=f"^{path}: not a readable result JSON \\({why}"):
            rp.read_result(path)


def test_a_failed_table_leaves_the_previous_table_not_an_empty_one(tmp_path, monkeypatch):
    fake_results(tmp_path / "tiny")
    path = rp.write_table("tiny", str(tmp_path / "tiny"))
    before = open(path).read()
    assert "| 3 iterations |" in before

    def broken(name, out=None):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(rp.tables, "render_table", broken)
    with pytest.raises(RuntimeError, match="rendering failed"):
        rp.write_table("tiny", str(tmp_path / "tiny"))
    assert open(path).read() == before
    assert not [f for f in os.listdir(tmp_path / "tiny") if ".tmp" in f]


def test_a_results_folder_belongs_to_one_reproduce(tmp_path):
    from dgl_capsules.files import FolderInUseError, FolderLock

    out = tmp_path / "tiny"
    with FolderLock(out):
        with pytest.raises(FolderInUseError, match=rf"^out '{out}' is in use by another run"):
            rp.reproduce("tiny", out=str(out), splits=small_splits(), progress=False, log=quiet([]))


def test_reproduce_stopped_by_a_signal_continues_to_the_same_results(tmp_path, monkeypatch):
    """SIGTERM inside the second run: the first run's result is kept, the second run's checkpoint says where
    it stopped, and calling reproduce again ends with the results of a run never stopped."""
    import signal

    from dgl_capsules.interrupt import TrainingInterrupted
    from dgl_capsules.models import CapsNet

    torch.set_num_threads(1)
    kw = dict(seeds=[0], splits=small_splits(), progress=False, log=quiet([]))
    rp.reproduce("tiny", out=str(tmp_path / "straight"), **kw)
    real, calls = CapsNet.loss, []

    def loss(self, out, y, step=None):
        calls.append(step)
        if len(calls) == 3:  # the first run has 2 steps (32 images, batch 16): the first step of the second run
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, out, y, step)

    monkeypatch.setattr(CapsNet, "loss", loss)
    out = str(tmp_path / "stopped")
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM after step 1 \(epoch 1, batch 1 of 2\)"):
        rp.reproduce("tiny", out=out, **kw)
    assert sorted(f for f in os.listdir(out) if f.endswith(".json")) == ["1-iteration-seed0.json"]
    assert not os.path.exists(os.path.join(out, ".lock"))
    monkeypatch.undo()
    rp.reproduce("tiny", out=out, **kw)
    for f in ("1-iteration-seed0.json", "3-iterations-seed0.json"):
        a, b = (json.load(open(os.path.join(d, f))) for d in (str(tmp_path / "straight"), out))
        assert [r["train_loss"] for r in a["curve"]] == [r["train_loss"] for r in b["curve"]]
        assert a["test_correct"] == b["test_correct"]


def test_efficient_capsnet_follows_the_published_recipe_and_records_it(tmp_path, monkeypatch):
    """Efficient-CapsNet's recipe (Adam 5e-4 x0.97 per epoch, floor 5e-5, batch 16, 150 epochs, its augmentation),
    end to end through the tiny variant, whose decay reaches the floor in the second epoch."""
    from dgl_capsules.evaluation import unpack_correct
    from dgl_capsules.models import get_model
    from dgl_capsules.models.efficient import n_parameters_without_decoder
    from dgl_capsules.train import TrainConfig, learning_rate

    exp = rp.experiment("efficient-capsnet")
    assert [r.label for r in exp.rows] == ["Efficient-CapsNet", "Efficient-CapsNet, uniform couplings",
                                           "CNN (same parameters, same decoder)", "Efficient-CapsNet, 30 epochs"]
    assert [r.seeds for r in exp.rows] == [(0, 1, 2), (0,), (0,), (0,)]
    short = exp.row("Efficient-CapsNet, 30 epochs").config
    assert (short["epochs"], short["lr_decay"]) == (30, pytest.approx(0.97 ** 5))
    assert dict(short, epochs=150, lr_decay=0.97) == exp.rows[0].config  # only the schedule differs
    short_config = TrainConfig(**short)
    assert learning_rate(short_config, 15, 0) > 5e-5 and learning_rate(short_config, 16, 0) == 5e-5  # from epoch 17
    for row in exp.rows[:3]:
        c = row.config
        assert (c["lr"], c["lr_decay"], c["lr_decay_steps"] if "lr_decay_steps" in c else 0, c["lr_floor"]) == (
            5e-4, 0.97, 0, 5e-5)
        assert (c["batch_size"], c["epochs"], c["augment"], c["data"]) == (16, 150, "efficient-capsnet", "mnist")
        assert "shift" not in c and "rotate" not in c  # the named augmentation is the whole augmentation
    config = TrainConfig(**exp.rows[0].config)
    assert learning_rate(config, 0, 0) == 5e-4 and learning_rate(config, 10, 0) == pytest.approx(5e-4 * 0.97 ** 10)
    assert learning_rate(config, 75, 0) > 5e-5 and learning_rate(config, 76, 0) == 5e-5  # the floor from epoch 77 on
    assert exp.row("Efficient-CapsNet, uniform couplings").config["settings"] == dict(routing="uniform")
    assert "validation digits" in exp.paper and "best test accuracy" in exp.paper
    caps, cnn = (get_model(r.config["model"], r.config["preset"], **r.config.get("settings", {}))
                 for r in (exp.rows[0], exp.rows[2]))
    assert n_parameters_without_decoder(caps) == 161_824
    assert abs(n_parameters_without_decoder(cnn) - 161_824) / 161_824 < 0.01

    from dgl_capsules.data import augment

    seen = []
    published = augment.get_augmentation("efficient-capsnet")

    def counted(images, generator):
        seen.append(tuple(images.shape))
        return published(images, generator)

    monkeypatch.setitem(augment._AUGMENTATIONS, "efficient-capsnet", counted)
    splits = small_splits(32)
    rp.reproduce("efficient-capsnet-tiny", out=str(tmp_path), progress=False, log=lambda *a: None, splits=splits)
    assert seen == [(16, 1, 28, 28)] * (4 * 2 * 2)  # every training batch: 4 runs x 2 epochs x 2 batches
    names = sorted(f for f in os.listdir(tmp_path) if f.endswith(".json"))
    assert names == ["cnn-same-parameters-same-decoder-seed0.json", "efficient-capsnet-30-epochs-seed0.json",
                     "efficient-capsnet-seed0.json", "efficient-capsnet-uniform-couplings-seed0.json"]
    for name in names:
        rec = json.loads((tmp_path / name).read_text())
        assert rec["config"]["augment"] == "efficient-capsnet" and rec["config"]["lr_floor"] == 5e-5
        assert rec["config"]["lr_decay_steps"] == 0 and rec["config"]["batch_size"] == 16
        config = TrainConfig(**rec["config"])
        assert [row["lr"] for row in rec["curve"]] == pytest.approx([5e-4, 5e-5])  # 5e-4 x 0.05 is below the floor
        for row in rec["curve"]:
            assert row["lr"] == pytest.approx(learning_rate(config, row["epoch"] - 1, row["step"] - 1))
        right = unpack_correct(rec["test_correct"], len(splits.test))
        assert right.float().mean().item() == pytest.approx(rec["test_accuracy"])
        assert 0 <= rec["last_test_accuracy"] <= 1
    table = (tmp_path / "table.md").read_text()
    assert "Efficient-CapsNet, uniform couplings" in table and "last epoch's test accuracy" in table


def test_the_best_public_reproduction_has_its_own_column_where_a_row_has_one(tmp_path):
    text = rp.render_table("sabour-table1", str(tmp_path / "none"))
    header = next(line for line in text.splitlines() if line.startswith("| row |"))
    assert header.endswith("| paper | best public reproduction |")
    row = next(line for line in text.splitlines() if line.startswith("| 3 iterations + reconstruction |"))
    assert row.endswith("| error 0.25 ± 0.005 % (99.75 %) | 99.66 % mean of 3, 99.71 % best "
                        "(XifengGuo/CapsNet-Keras); 99.70 % mean (Apache MXNet example/capsnet) |")
    cnn = next(line for line in text.splitlines() if line.startswith("| CNN (width-matched) |"))
    assert cnn.endswith("| error 0.39 % (99.61 %) |  |")
    assert "best public reproduction" not in rp.render_table("tiny", str(tmp_path / "none-tiny"))
