"""``dgl-capsules reproduce --list`` and ``dgl-capsules data --list``: what they print."""
import json
import os
from pathlib import Path

import pytest
import torch

from dgl_capsules import reproduce
from dgl_capsules.cli import main
from dgl_capsules.data import list_datasets

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def same_threads_as_the_worker(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))


def write_result(folder, experiment, row, slug, seed, accuracy=0.9):
    folder.mkdir(parents=True, exist_ok=True)
    rec = dict(experiment=experiment, row=row, seed=seed, test_accuracy=accuracy)
    (folder / f"{slug}-seed{seed}.json").write_text(json.dumps(rec))


def blocks(out):
    """``{experiment: [its lines]}`` of the ``reproduce --list`` output."""
    found = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            name = line.split(":")[0]
            found[name] = [line]
        else:
            found[name].append(line)
    return found


def test_reproduce_list_gives_title_rows_seeds_finished_and_planned_and_hours(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # results/NAME/*.json are read from the working directory
    write_result(tmp_path / "results" / "tiny", "tiny", "3 iterations", "3-iterations", 1)
    write_result(tmp_path / "results" / "tiny", "tiny", "3 iterations", "3-iterations", 5)  # a seed not planned
    assert main(["reproduce", "--list"]) == 0
    found = blocks(capsys.readouterr().out)
    assert list(found) == reproduce.list_experiments()
    tiny = found["tiny"]
    assert tiny[0] == f"tiny: {reproduce.experiment('tiny').title}"
    assert tiny[1] == "  1 of 3 planned runs finished; estimated 0 h"
    assert tiny[2].split() == "1 iteration 0 of 1 seeds finished; to run: 0".split()
    assert tiny[3].split() == "3 iterations 1 of 2 seeds finished; to run: 0; also finished: 5".split()
    assert tiny[4].split() == "uniform coupling = 1 iteration (not trained)".split()
    for name, lines in found.items():  # every experiment: its planned runs and its estimate
        exp = reproduce.experiment(name)
        planned = sum(len(r.seeds) for r in exp.rows if r.same_as is None)
        assert lines[1].startswith(f"  0 of {planned} planned runs finished") or name == "tiny"
        assert f"estimated {exp.hours:g} h" in lines[1]
        assert [line.split()[0] for line in lines[2:]] == [r.label.split()[0] for r in exp.rows]


def test_reproduce_list_reads_the_committed_results(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the repository: results/ holds finished tables
    assert main(["reproduce", "--list"]) == 0
    table1 = blocks(capsys.readouterr().out)["sabour-table1"]
    assert table1[1].startswith("  9 of 9 planned runs finished")
    assert any("CNN (width-matched)" in line and "3 of 3 seeds finished" in line for line in table1)


def test_data_list_is_every_registered_data_set(capsys):
    assert main(["data", "--list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    specs = [spec for spec, _ in list_datasets()]
    starts = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert starts[:len(specs)] == specs
    words = " ".join(out.split())
    for spec, text in list_datasets():  # every description, wrapped or not
        assert " ".join(text.split()) in words
    assert lines[-1].startswith("train on one with: dgl-capsules train --data SPEC")
    assert main(["data"]) == 0 and capsys.readouterr().out == out


def write_checkpoint(folder, epoch, epochs, partial=None):
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = dict(config=dict(epochs=epochs), state=dict(epoch=epoch))
    if partial is not None:
        ckpt["partial"] = partial
    torch.save(ckpt, folder / "checkpoint.pt")


def test_reproduce_list_says_where_each_unfinished_run_stands(tmp_path, monkeypatch, capsys):
    from dgl_capsules.files import FolderLock

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "results" / "tiny" / "runs"
    write_checkpoint(runs / "3-iterations-seed0", 1, 2)  # between epochs
    write_checkpoint(runs / "3-iterations-seed1", 1, 2, partial=dict(epoch=1, batches=3, of=10))  # stopped inside
    (runs / "1-iteration-seed0").mkdir(parents=True)
    (runs / "1-iteration-seed0" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with FolderLock(runs / "3-iterations-seed0"):
        assert main(["reproduce", "--list"]) == 0
    tiny = blocks(capsys.readouterr().out)["tiny"]
    assert tiny[1] == "  0 of 3 planned runs finished; estimated 0 h"
    assert " ".join(tiny[3].split()) == (
        "seed 0: its checkpoint cannot be read (checkpoint 'results/tiny/runs/1-iteration-seed0/checkpoint.pt': not "
        "loaded: it is cut short or was not written by torch.save); delete it to train the run from the start")
    assert tiny[5].split() == f"seed 0: 1 of 2 epochs done, training now (PID {os.getpid()})".split()
    assert tiny[6].split() == ("seed 1: 1 of 2 epochs done, stopped after batch 3 of 10 of epoch 2; resume: "
                               "dgl-capsules reproduce tiny --rows 3-iterations --seeds 1").split()
    assert main(["reproduce", "--list"]) == 0  # the lock released: the run can be resumed
    tiny = blocks(capsys.readouterr().out)["tiny"]
    assert tiny[5].split() == ("seed 0: 1 of 2 epochs done; resume: dgl-capsules reproduce tiny --rows 3-iterations "
                               "--seeds 0").split()


def test_reproduce_list_leaves_out_finished_seeds_and_runs_never_started(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_result(tmp_path / "results" / "tiny", "tiny", "3 iterations", "3-iterations", 0)
    write_checkpoint(tmp_path / "results" / "tiny" / "runs" / "3-iterations-seed0", 2, 2)  # its JSON is written
    assert main(["reproduce", "--list"]) == 0
    tiny = blocks(capsys.readouterr().out)["tiny"]
    assert len(tiny) == 5 and not any("epochs done" in line for line in tiny)
