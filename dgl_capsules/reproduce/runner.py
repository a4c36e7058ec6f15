"""The runner of reproduction experiments: train every (row, seed) without a result, resumably.

:func:`reproduce` trains every run of an experiment that has no readable
result yet, resumes runs that were stopped, writes ``OUT/<row>-seed<k>.json``
per finished run (:mod:`~dgl_capsules.reproduce.results`) and the table
(:func:`~dgl_capsules.reproduce.write_table`). One process at a time works in
a results folder (its lock file); Ctrl-C or SIGTERM stop it at the end of the
current training step, and the same call continues where it stopped.
"""
import copy
import os
import platform
import subprocess
import time
from dataclasses import asdict

from ..files import FolderLock, check_writable_folder
from ..interrupt import StopRequests, TrainingInterrupted
from .catalogue import experiment
from .results import CorruptResultError, read_result, result_path, write_result
from .tables import DEFAULT_ROOT, write_table

__all__ = ["reproduce"]


def _commit():
    """``git describe``-style id of the checkout this package runs from (``"+dirty"`` if its code changed)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the dgl_capsules package
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", here], cwd=here, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores"


def _check_seeds(seeds):
    if seeds is None:
        return None
    if isinstance(seeds, int) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be a sequence of non-negative ints; got {seeds!r}")
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed; got ()")
    return seeds


def _extra_evaluations(row, model, splits, config):
    """Scores of the trained (validation-selected) ``model`` on the test sets ``row.evaluate_on``."""
    from ..train import eval_set, evaluate

    return {f"{on}_accuracy": evaluate(model, eval_set(on, splits, image_size=config.image_size))
            for on in row.evaluate_on}


def _machine_text(machine):
    """``metrics["machine"]`` (a dict from :func:`~dgl_capsules.train.train`) as one line."""
    if not isinstance(machine, dict):
        return machine
    return (f"{machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}, "
            f"torch {machine.get('torch')}, DGL {machine.get('dgl')}")


def _finished(path, name, row, seed, log, tag):
    """Whether ``path`` holds the readable result of this run; an unreadable or foreign file is reported."""
    if not os.path.exists(path):
        return False
    try:
        rec = read_result(path)
    except CorruptResultError as e:
        log(f"{tag}: {e}; training it again")
        return False
    if (rec["experiment"], rec["row"], rec["seed"]) != (name, row.label, seed):
        log(f"{tag}: {path} holds the result of experiment {rec['experiment']!r}, row {rec['row']!r}, seed "
            f"{rec['seed']}; training it again")
        return False
    return True


def _record(name, row, seed, config, metrics, extra, t0, commit, small_data):
    """The result JSON of one finished run."""
    return dict(
        experiment=name, row=row.label, seed=seed, config=asdict(config),
        test_accuracy=metrics["test_accuracy"], last_test_accuracy=metrics.get("last_test_accuracy"),
        test_correct=metrics.get("test_correct"), **extra,
        best_val_accuracy=metrics.get("best_val_accuracy"), best_epoch=metrics.get("best_epoch"),
        seconds=metrics.get("seconds"), cpu_seconds=metrics.get("cpu_seconds"),
        wall_seconds_this_call=round(time.time() - t0, 2),
        threads=metrics.get("threads"), processes=metrics.get("processes"),
        machine=_machine_text(metrics.get("machine")) or _machine(),
        parameters=metrics.get("parameters"), commit=commit, paper=row.paper,
        small_data=small_data, curve=metrics.get("curve"),
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _train_run(name, row, seed, config, out, splits, progress, log, tag, commit):
    """Train (or resume) one run in ``OUT/runs/<row>-seed<k>`` and write its result JSON."""
    from ..train import train

    path = result_path(out, row, seed)
    run_dir = os.path.join(out, "runs", f"{row.slug}-seed{seed}")
    resume = os.path.isfile(os.path.join(run_dir, "checkpoint.pt"))
    log(f"{tag}: {'resuming' if resume else 'training'} in {run_dir}")
    t0 = time.time()
    data = splits
    if data is None and row.evaluate_on:  # loaded once for training and the extra test sets
        from ..data import get_dataset

        data = get_dataset(config.data, config.image_size)
    # without a checkpoint the run never finished an epoch: whatever it left is replaced
    metrics, model = train(config, run_dir, resume=resume, overwrite=not resume, progress=progress, log=log,
                           splits=data, return_model=True)
    extra = _extra_evaluations(row, model, data, config) if row.evaluate_on else {}
    record = _record(name, row, seed, config, metrics, extra, t0, commit, splits is not None)
    write_result(path, record)
    log(f"{tag}: test accuracy {100 * record['test_accuracy']:.2f} % ({path})")


def reproduce(name, seeds=None, out=None, *, rows=None, progress=True, log=print, splits=None):
    """Train every run of experiment ``name`` that has no result yet and write its table.

    Finished runs (a readable ``OUT/<row>-seed<k>.json``) are skipped; a
    result file that is unreadable or belongs to another run is reported by
    name and trained again. A run that was stopped continues from its
    checkpoint in ``OUT/runs/<row>-seed<k>/`` (:func:`~dgl_capsules.train.train`
    with ``resume=True``), so calling this again after an interruption loses
    nothing (a signal) or at most one epoch (a crash).

    Parameters
    ----------
    name : str
        One of :func:`~dgl_capsules.reproduce.list_experiments`.
    seeds : sequence of int, optional
        Seeds for every trained row (default: each row's own ``seeds``).
    out : str, optional
        Results folder (default ``results/NAME``).
    rows : sequence of str, optional
        Train only these rows (labels or slugs), in this order; the table is
        still written from every finished run.
    progress : bool
        Progress bars while training.
    log : callable
        Receives one line per event.
    splits : Splits, optional
        Train / val / test data to use instead of loading each row's ``data``
        (tests pass a few digits).

    Returns
    -------
    str
        Path of the written ``table.md``.

    Raises
    ------
    ValueError
        For an unknown experiment or row, bad seeds or a bad row config.
    ~dgl_capsules.files.FolderInUseError
        If another process works in ``out``.
    ~dgl_capsules.interrupt.TrainingInterrupted
        After SIGINT or SIGTERM (call again to continue).
    """
    from ..train import TrainConfig

    exp = experiment(name)
    seeds = _check_seeds(seeds)
    if isinstance(rows, str) or (rows is not None and not rows):
        raise ValueError(f"rows: a non-empty sequence of row labels; got {rows!r}")
    out = os.path.join(DEFAULT_ROOT, name) if out is None else out
    check_writable_folder(out, "out", "a results folder")
    runs = exp.runs(seeds, rows)
    configs = {}
    for row, seed in runs:  # every config is checked before the first run trains
        config = TrainConfig(**copy.deepcopy(row.config), seed=seed)
        config.validate()
        configs[row.label, seed] = config
    commit = _commit()
    with FolderLock(out, "out", log), StopRequests() as stop:
        for i, (row, seed) in enumerate(runs, 1):
            tag = f"[{i}/{len(runs)}] {name}: {row.label}, seed {seed}"
            if stop.requested:
                raise TrainingInterrupted(stop.signum, where=f"before {row.label}, seed {seed}")
            if _finished(result_path(out, row, seed), name, row, seed, log, tag):
                log(f"{tag}: done ({result_path(out, row, seed)})")
                continue
            _train_run(name, row, seed, configs[row.label, seed], out, splits, progress, log, tag, commit)
        return write_table(name, out)
