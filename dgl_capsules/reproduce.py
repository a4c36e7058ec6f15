"""Named reproduction experiments: tables of training runs over seeds, resumable, one JSON per run.

An experiment is data: an :class:`Experiment` holds :class:`Row` s, each a
label, the :class:`~dgl_capsules.train.TrainConfig` fields of its runs, the
seeds to train and the published figure to print beside ours.
:func:`reproduce` trains every (row, seed) that has no result yet, resumes
runs that were stopped, writes ``OUT/<row>-seed<k>.json`` per finished run and
``OUT/table.md`` (mean ± std over seeds and every seed's number; for the
novel-viewpoint experiments, familiar and novel error at matched familiar
error, :func:`matched_errors`).

>>> sorted(list_experiments())[:3]
['affnist-style', 'efficient-capsnet', 'efficient-capsnet-tiny']
>>> [row.label for row in experiment("tiny").rows]
['1 iteration', '3 iterations', 'uniform coupling']
"""
import copy
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

__all__ = ["Row", "Experiment", "list_experiments", "experiment", "reproduce", "load_results", "render_table",
           "write_table", "matched_errors"]

DEFAULT_ROOT = "results"


@dataclass(frozen=True)
class Row:
    """One line of an experiment's table.

    Parameters
    ----------
    label : str
        What the row is, as printed in the table (``"3 iterations + reconstruction"``).
    config : dict
        :class:`~dgl_capsules.train.TrainConfig` fields of the row's runs, all but ``seed``.
    seeds : tuple of int
        The seeds trained when :func:`reproduce` is called without ``seeds``.
    paper : str
        The published figure printed beside ours (``""`` if the paper has none).
    same_as : str, optional
        Label of another row whose runs this row equals by construction; such a
        row is not trained, the table prints that row's numbers and ``note``.
    note : str
        One line printed under the table.
    evaluate_on : tuple of str
        Extra test sets scored after training: ``"affine"`` (``affine_mnist`` of
        the test split at 40x40, seed 0).
    """

    label: str
    config: dict = field(default_factory=dict)
    seeds: tuple = (0,)
    paper: str = ""
    same_as: Optional[str] = None
    note: str = ""
    evaluate_on: tuple = ()

    @property
    def slug(self):
        """The row's file-name stem: ``"3 iterations + reconstruction"`` -> ``"3-iterations-reconstruction"``."""
        out = "".join(c if c.isalnum() else "-" for c in self.label.lower())
        while "--" in out:
            out = out.replace("--", "-")
        return out.strip("-")


@dataclass(frozen=True)
class Experiment:
    """A named table of training runs.

    ``hours`` is the estimated wall time of every run of the experiment on the
    2-core machine the README's figures come from, one run at a time with two
    threads (``estimate`` says how it was derived); ``paper`` names the source
    of the published figures. ``table`` is ``"accuracy"`` (test accuracy per
    row) or ``"matched"`` (familiar and novel error at matched familiar error,
    for rows trained with ``eval_each_epoch=("test", "novel")``; see
    :func:`matched_errors`).
    """

    name: str
    title: str
    rows: tuple
    paper: str = ""
    hours: Optional[float] = None
    estimate: str = ""
    metric: str = "test accuracy"
    table: str = "accuracy"

    def row(self, label):
        """The row whose label (or its :attr:`Row.slug`) is ``label``."""
        for r in self.rows:
            if label in (r.label, r.slug):
                return r
        raise ValueError(f"label: experiment {self.name!r} has no row {label!r}; rows are "
                         f"{', '.join(r.label for r in self.rows)}")

    def runs(self, seeds=None, rows=None):
        """``[(row, seed), ...]`` to train: every row without ``same_as`` (or only ``rows``, labels or slugs,
        in that order), over ``seeds`` or the row's own."""
        chosen = self.rows if rows is None else [self.row(label) for label in rows]
        for r in chosen:
            if r.same_as is not None and rows is not None:
                raise ValueError(f"rows: row {r.label!r} is not trained (it equals {r.same_as!r}); "
                                 f"ask for {r.same_as!r}")
        return [(r, s) for r in chosen if r.same_as is None for s in (r.seeds if seeds is None else seeds)]


# ---------------------------------------------------------------------------- the experiments

# CapsNet ``small`` on the full MNIST: the demo's optimiser settings (lr 2e-3, decay 0.9 per epoch,
# shifts of up to 2 px as in Sabour et al.), batch 64 (about 860 steps per epoch).
_CAPS = dict(model="capsnet", preset="small", data="mnist", batch_size=64, lr=2e-3, lr_decay=0.9, shift=2)
_NO_DECODER = dict(decoder=None)
_EM = dict(model="matrixcaps", preset="small", batch_size=32, lr=3e-3, lr_decay=0.95, shift=1, rotate=10.0,
           scale=0.1, ema=0.995)

_UNIFORM_NOTE = ("uniform coupling equals the 1-iteration rows: dynamic routing starts every sample from "
                 "logits b = 0, so one iteration routes with c = softmax(0) = 1/10 for every class and never "
                 "updates them (tests/test_reproduce.py checks this); it is not trained twice")

_EXPERIMENTS = {}


def _register(exp):
    _EXPERIMENTS[exp.name] = exp
    return exp


_register(Experiment(
    name="sabour-table1",
    title="Sabour et al. (2017) Table 1 on the full MNIST: CapsNet `small` vs a width-matched CNN",
    rows=(
        Row("CNN (width-matched)", dict(_CAPS, model="cnn", epochs=20), seeds=(0, 1, 2), paper="error 0.39 % (99.61 %)",
            note="the CNN is width-matched to the CapsNet `small` with its decoder (same parameter count)"),
        Row("1 iteration", dict(_CAPS, settings=dict(_NO_DECODER, n_iters=1), epochs=20),
            paper="error 0.34 ± 0.032 % (99.66 %)"),
        Row("1 iteration + reconstruction", dict(_CAPS, settings=dict(n_iters=1), epochs=20),
            paper="error 0.29 ± 0.011 % (99.71 %)"),
        Row("3 iterations", dict(_CAPS, settings=dict(_NO_DECODER, n_iters=3), epochs=20),
            paper="error 0.35 ± 0.036 % (99.65 %)"),
        Row("3 iterations + reconstruction", dict(_CAPS, settings=dict(n_iters=3), epochs=20), seeds=(0, 1, 2),
            paper="error 0.25 ± 0.005 % (99.75 %)"),
        Row("uniform coupling", same_as="1 iteration", note=_UNIFORM_NOTE),
        Row("uniform coupling + reconstruction", same_as="1 iteration + reconstruction"),
    ),
    paper="Sabour, Frosst, Hinton 2017, Table 1 (8.2 M parameters, 3 iterations + reconstruction); "
          "reproductions report about 0.34 % error on average",
    hours=11.6,
    estimate="tools/estimate_times.py, one thread, CPU s per step at batch 64 (860 steps per epoch): CapsNet "
             "3 iterations + reconstruction 0.158, 3 iterations 0.157, 1 iteration + reconstruction 0.149, "
             "1 iteration 0.115, CNN 0.510; 20 epochs: 0.76 / 0.75 / 0.71 / 0.55 / 2.44 h per run, 9 runs "
             "11.6 h with one thread (about 6 h with two runs side by side)",
))

_register(Experiment(
    name="sabour-long",
    title="CapsNet `small`, 3 iterations + reconstruction, on a schedule twice as long as sabour-table1's",
    rows=(
        Row("3 iterations + reconstruction, 40 epochs",
            dict(_CAPS, settings=dict(n_iters=3), epochs=40, lr_decay=0.95), seeds=(0, 1, 2),
            paper="error 0.25 ± 0.005 % (99.75 %)"),
    ),
    paper="Sabour, Frosst, Hinton 2017, Table 1 (8.2 M parameters). The question: sabour-table1's 20 epochs "
          "(learning rate decay 0.9 per epoch) ended every seed at its best validation accuracy; this row "
          "trains 40 epochs with decay 0.95, which ends at about the same learning rate (0.95^40 = 0.13, "
          "0.9^20 = 0.12 of the first)",
    hours=4.5,
    estimate="tools/estimate_times.py, one thread: 0.158 CPU s per step (sabour-table1's row), 860 steps per "
             "epoch, 40 epochs: 1.5 h per seed, 3 seeds",
))

# The published code of Sabour et al. (github.com/Sarasra/models, research/capsules): Adam 1e-3 decayed smoothly by
# 0.96 every 2,000 steps, batch 128, shifts of up to 2 px, reconstruction 0.0005 x the summed squared error. Its margin
# loss is the paper's / 20 (halved, and averaged over the 10 classes instead of summed); Adam's steps do not change
# when the whole loss is scaled, so with this library's margin loss (summed over classes) the same balance is
# recon_weight = 20 x 0.0005 = 0.01. 200 epochs of 430 steps end at 0.96^43 = 0.17 of the first rate.
_OFFICIAL = dict(_CAPS, settings=dict(n_iters=3, recon_weight=0.01), batch_size=128, lr=1e-3, lr_decay=0.96,
                 lr_decay_steps=2000, epochs=200)

_register(Experiment(
    name="sabour-official",
    title="CapsNet `small`, 3 iterations + reconstruction, on the learning-rate schedule of Sabour et al.'s code",
    rows=(
        Row("3 iterations + reconstruction, official schedule", _OFFICIAL, seeds=(0,),
            paper="error 0.25 ± 0.005 % (99.75 %); best public reproduction 99.66 % mean (99.71 % best)"),
    ),
    paper="Sabour, Frosst, Hinton 2017, Table 1, and the schedule of their published code (Adam 1e-3 x 0.96 per "
          "2,000 steps, batch 128, 2-px shifts); best public reproduction: XifengGuo/CapsNet-Keras, 99.66 % mean "
          "of 3 runs with the test set as validation, and Apache MXNet example/capsnet, 99.70 % average over 200 "
          "epochs; seeds 1 and 2 and the width-matched CNN on the same schedule follow only if seed 0 reaches "
          "99.60 %",
    hours=4.6,
    estimate="about 70 s per epoch of sabour-table1's row at 2 threads on a quiet machine (batch 64); batch 128 "
             "has half the steps: 200 epochs about 4 h of training plus 0.6 h of validation",
))

_register(Experiment(
    name="sabour-official-tiny",
    title="Smoke test of sabour-official: CapsNet `tiny` on its schedule with a decay every 5 steps, two epochs",
    rows=(Row("official schedule, tiny", dict(_OFFICIAL, preset="tiny", data="mnist5k", batch_size=16,
                                              lr_decay_steps=5, epochs=2), paper="none"),),
    hours=0.0, estimate="seconds",
))

# Efficient-CapsNet (Mazzia, Salvetti & Chiaberge 2021) on the recipe of its published code (EscVM/Efficient-CapsNet,
# config.json and utils/): Adam 5e-4, x0.97 per epoch with a floor of 5e-5 (reached from epoch 77 on), batch 16,
# 150 epochs, its rotation / shift / squish / erase augmentation on every training image, margin loss + 0.392 x mean
# squared error (= recon_weight 0.0005 on the summed error, the model's default). Model selection: the epoch with
# the best accuracy on our 5,000 validation digits (the published code keeps the epoch with the best test accuracy).
_EFFICIENT = dict(model="efficient-capsnet", preset="mnist", data="mnist", batch_size=16, lr=5e-4, lr_decay=0.97,
                  lr_floor=5e-5, epochs=150, augment="efficient-capsnet")
_EFFICIENT_ROWS = (  # label, config changes, seeds, published figure
    ("Efficient-CapsNet", dict(), (0, 1, 2),
     "error 0.26 % (99.74 %) for single models as quoted from Table 2 (not verified here); 0.16 % with an ensemble "
     "(Table 3)"),
    ("Efficient-CapsNet, uniform couplings", dict(settings=dict(routing="uniform")), (0,), "none"),
    ("CNN (same parameters, same decoder)", dict(model="cnn", preset="efficient-capsnet"), (0,), "none"),
)
_EFFICIENT_PAPER = (
    "Mazzia, Salvetti, Chiaberge 2021 (Scientific Reports 11:14634), MNIST with 161,824 parameters without the "
    "decoder, and the recipe of their published code (EscVM/Efficient-CapsNet): Adam 5e-4 x0.97 per epoch down to "
    "5e-5, batch 16, 150 epochs, rotation / shift / squish / erase augmentation. Our runs select the epoch with the "
    "best accuracy on 5,000 validation digits held out of the training set (55,000 digits left to train on); the "
    "published code trains on all 60,000 and keeps the epoch with the best test accuracy, so its figure is "
    "selected on the test set. The table gives the validation-selected model's test accuracy and the last epoch's. "
    "Uniform couplings: the same network and parameters with c = 1/10 instead of self-attention routing. CNN: the "
    "baseline CNN with Efficient-CapsNet's decoder and reconstruction loss, its parameters outside the decoder "
    "matched to 161,824 (161,745)")

_register(Experiment(
    name="efficient-capsnet",
    title="Efficient-CapsNet on the full MNIST with its published recipe: does self-attention routing help?",
    rows=tuple(Row(label, dict(_EFFICIENT, **change), seeds=seeds, paper=paper)
               for label, change, seeds, paper in _EFFICIENT_ROWS),
    paper=_EFFICIENT_PAPER,
    hours=73.0,
    estimate="tools/estimate_times.py efficient-capsnet with one thread (OMP_NUM_THREADS=1, PYTHONPATH the checkout), "
             "50 training steps per row at batch 16 (augmentation, forward, loss, backward, Adam) and one validation "
             "pass per epoch, CPU time, while other sessions' training runs, benchmarks and test suites loaded the 2 "
             "cores (load average 8 to 14): Efficient-CapsNet 0.094 to 0.128 s per step, uniform couplings 0.094 to "
             "0.115, CNN 0.061 to 0.066; 3,438 steps per epoch (55,000 digits). The first seed-0 run (commit "
             "ffeadab, one thread beside another training run) took 6.4 CPU min and 10 wall min per epoch: about "
             "16 h of CPU per 150-epoch Efficient-CapsNet run, 9 h per CNN run; 4 x 16 + 9 = 73 h at one thread, "
             "half that as two runs side by side on a quiet machine"))

_register(Experiment(
    name="efficient-capsnet-tiny",
    title="Smoke test of efficient-capsnet: the tiny presets on its recipe with a decay that reaches the floor in "
          "the second epoch, two epochs",
    rows=tuple(Row(label, dict(_EFFICIENT, data="mnist5k", epochs=2, lr_decay=0.05,
                               **dict(change, preset="efficient-capsnet-tiny" if "model" in change else "tiny")),
                   seeds=(0,), paper="none")
               for label, change, _, _ in _EFFICIENT_ROWS),
    hours=0.0, estimate="seconds",
))

_register(Experiment(
    name="affnist-style",
    title="affNIST-style robustness on the full MNIST: train on 40x40 padded digits with 2-px shifts, "
          "test on affine-transformed test digits",
    rows=(
        Row("CapsNet `small`", dict(_CAPS, image_size=40, epochs=10), seeds=(0, 1), evaluate_on=("affine",),
            paper="79 % on affNIST"),
        Row("CNN (width-matched)", dict(_CAPS, model="cnn", image_size=40, epochs=10), seeds=(0, 1),
            evaluate_on=("affine",), paper="66 % on affNIST"),
    ),
    paper="Sabour et al. 2017, section 5.2 (the real affNIST; ours is `affine_mnist` of the test digits: "
          "rotation ±20°, shear ±0.2, scale 0.8-1.2, translation ±4 px, seed 0)",
    hours=11.4,
    estimate="tools/estimate_times.py, one thread, batch 64 at 40x40: CapsNet 0.64 s, CNN 1.74 s per step "
             "(9.1 and 25 min per epoch); 10 epochs x 2 seeds: 3.0 + 8.3 h",
))

_register(Experiment(
    name="multimnist",
    title="MultiMNIST at full scale: 36x36 overlays of two digits, both right",
    rows=(
        Row("CapsNet `small` 3 iterations + reconstruction",
            dict(model="capsnet", preset="small", data="multi:mnist", batch_size=64, lr=2e-3, lr_decay=0.9,
                 epochs=15),
            paper="94.8 % (5.2 % error, 60 M pairs)"),
    ),
    paper="Sabour et al. 2017, section 6 (60 M training pairs); ours: 55,000 training pairs drawn anew "
          "every epoch, one per training digit, 825,000 in all",
    hours=1.3,
    estimate="tools/estimate_times.py, one thread: 0.35 s per step at batch 64 and 36x36, 860 steps: "
             "5.0 min per epoch, 15 epochs",
))

_register(Experiment(
    name="em-mnist",
    title="MatrixCapsNet `small` (EM routing) on the full MNIST",
    rows=(
        Row("MatrixCapsNet `small`", dict(_EM, data="mnist", epochs=10),
            paper="99.56 % (0.44 % error, Hinton et al. 2018); best public PyTorch reproduction 99.3 %"),
    ),
    paper="Hinton, Sabour, Frosst 2018 (quoted error 0.44 %)",
    hours=0.7,
    estimate="measured (issue 17): one epoch of this row's recipe took 237 to 332 s (four runs, median "
             "262 s) of training and validation at 2 threads with nothing else running (the dgl-capsules "
             "command, freed memory reused); 10 epochs about 0.7 h",
))

_register(Experiment(
    name="em-mnist5k",
    title="The README's MatrixCapsNet command on mnist5k, three seeds (issue 21)",
    rows=(
        Row("MatrixCapsNet `small`, README command", dict(_EM, data="mnist5k", epochs=40), seeds=(0, 1, 2),
            paper="README before issue 21: 98.50 % (one run, seed 0)"),
    ),
    paper="the README's one-run figure",
    hours=2.4,
    estimate="tools/estimate_times.py, one thread: 0.66 s per step at batch 32, 110 steps per epoch: "
             "0.8 h per 40-epoch run (README: 44 min), 3 seeds",
))

# Novel viewpoints (issue 20): Hinton et al. 2018's smallNORB experiment on the rendered set. Every row trains
# with the same data and augmentation (batch 32, shifts of up to 2 px, lr decay 0.95 per epoch, 30 epochs) and
# scores the familiar and novel test sets after every epoch, so the table can read every row at one familiar error.
_VIEW = dict(preset="small", batch_size=32, shift=2, lr_decay=0.95, epochs=30, eval_each_epoch=("test", "novel"))
_VIEW_ROWS = (  # label, config, published familiar -> novel error (Hahn et al. 2019) on the azimuth / elevation split
    ("CapsNet `{preset}` (dynamic routing)", dict(model="capsnet", lr=2e-3), "6.86 % -> 20.33 %",
     "5.78 % -> 16.37 %"),
    ("MatrixCapsNet `{preset}` (EM routing)", dict(model="matrixcaps", lr=3e-3), "7.36 % -> 20.16 %",
     "5.97 % -> 17.51 %"),
    ("HeinsenImageNet `{preset}`", dict(model="heinsen", lr=3e-3), "none", "none"),
    ("CNN (width-matched)", dict(model="cnn", lr=1e-3), "8.39 % -> 22.07 %", "7.51 % -> 18.78 %"),
)
_VIEW_PAPER = ("Hahn, Pyeon, Kim 2019 (Self-Routing Capsule Networks), on the real smallNORB, familiar -> novel "
               "error; ours is the rendered set `dc.data.viewpoints` (10 objects, 2x32x32 stereo pairs, held-out "
               "lightings), so the figures are beside ours, not comparable one to one")
_VIEW_ESTIMATE = ("measured on the azimuth split at 1 thread with another training run on the other core "
                  "(30 epochs, training + validation seconds; wall time with the per-epoch scoring of the "
                  "familiar and novel test sets in brackets): CapsNet 613 s (943 s), HeinsenImageNet 530 s "
                  "(1,175 s), MatrixCapsNet after the EM speed-up 1,414 s (2,427 s), CNN 1,819 s (3,007 s; "
                  "elevation 1,831 s (3,011 s)); 1.2 h of training per split and seed, 2.1 h with the scoring")


def _viewpoint_experiment(name, split, paper_column):
    rows = tuple(Row(label.format(preset="small"), dict(_VIEW, data="viewpoints" if split == "azimuth" else f"viewpoints:{split}", **cfg),
                     paper=papers[paper_column]) for label, cfg, *papers in _VIEW_ROWS)
    return Experiment(
        name=name, rows=rows, paper=_VIEW_PAPER, hours=2.1, estimate=_VIEW_ESTIMATE, table="matched",
        title=f"Novel viewpoints, {split} split (Hinton et al. 2018, section 5.1, on the rendered set): familiar "
              f"and novel error at matched familiar error")


_register(_viewpoint_experiment("viewpoints", "azimuth", 0))
_register(_viewpoint_experiment("viewpoints-elevation", "elevation", 1))
_register(Experiment(
    name="viewpoints-tiny",
    title="Smoke test of the viewpoints experiment: the four models' `tiny` presets, two epochs",
    rows=tuple(Row(label.format(preset="tiny"), dict(_VIEW, data="viewpoints", **cfg, preset="tiny", epochs=2,
                                                     batch_size=8), paper="none")
               for label, cfg, *_ in _VIEW_ROWS),
    hours=0.3, estimate="a guess: tiny models, 2 epochs, after the one-off rendering of the set", table="matched",
))

_register(Experiment(
    name="tiny",
    title="Smoke test: CapsNet `tiny`, one epoch on mnist5k (under a minute per run)",
    rows=(
        Row("1 iteration", dict(model="capsnet", preset="tiny", settings=dict(n_iters=1), data="mnist5k", epochs=1,
                                batch_size=16, lr=2e-3), paper="none"),
        Row("3 iterations", dict(model="capsnet", preset="tiny", settings=dict(n_iters=3), data="mnist5k",
                                 epochs=1, batch_size=16, lr=2e-3), seeds=(0, 1), paper="none"),
        Row("uniform coupling", same_as="1 iteration", note=_UNIFORM_NOTE),
    ),
    hours=0.0,
    estimate="seconds",
))


def list_experiments():
    """Names of the experiments :func:`reproduce` knows, sorted."""
    return sorted(_EXPERIMENTS)


def experiment(name):
    """The :class:`Experiment` called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :func:`list_experiments`.
    """
    if name not in _EXPERIMENTS:
        raise ValueError(f"name: unknown experiment {name!r}; expected one of {', '.join(list_experiments())}")
    return _EXPERIMENTS[name]


# ---------------------------------------------------------------------------- running


def _commit():
    """``git describe``-style id of the checkout this package runs from (``"+dirty"`` if its code changed)."""
    here = os.path.dirname(os.path.abspath(__file__))
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


def _result_path(out, row, seed):
    return os.path.join(out, f"{row.slug}-seed{seed}.json")


def _extra_evaluations(row, model, splits, config):
    """Scores of the trained (validation-selected) ``model`` on the test sets ``row.evaluate_on``."""
    from .train import eval_set, evaluate

    return {f"{on}_accuracy": evaluate(model, eval_set(on, splits, image_size=config.image_size))
            for on in row.evaluate_on}


def _machine_text(machine):
    """``metrics["machine"]`` (a dict from :func:`~dgl_capsules.train.train`) as one line."""
    if not isinstance(machine, dict):
        return machine
    return (f"{machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}, "
            f"torch {machine.get('torch')}, DGL {machine.get('dgl')}")


def reproduce(name, seeds=None, out=None, *, rows=None, progress=True, log=print, splits=None):
    """Train every run of experiment ``name`` that has no result yet and write its table.

    Finished runs (``OUT/<row>-seed<k>.json`` present) are skipped; a run that
    was stopped continues from its checkpoint in ``OUT/runs/<row>-seed<k>/``
    (:func:`~dgl_capsules.train.train` with ``resume=True``), so calling this
    again after an interruption loses at most one epoch.

    Parameters
    ----------
    name : str
        One of :func:`list_experiments`.
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
    """
    from .train import TrainConfig, train

    exp = experiment(name)
    seeds = _check_seeds(seeds)
    if isinstance(rows, str) or (rows is not None and not rows):
        raise ValueError(f"rows: a non-empty sequence of row labels; got {rows!r}")
    out = os.path.join(DEFAULT_ROOT, name) if out is None else out
    os.makedirs(out, exist_ok=True)
    runs = exp.runs(seeds, rows)
    configs = {}
    for row, seed in runs:  # every config is checked before the first run trains
        config = TrainConfig(**copy.deepcopy(row.config), seed=seed)
        config.validate()
        configs[row.label, seed] = config
    commit = _commit()
    for i, (row, seed) in enumerate(runs, 1):
        path = _result_path(out, row, seed)
        tag = f"[{i}/{len(runs)}] {name}: {row.label}, seed {seed}"
        if os.path.exists(path):
            log(f"{tag}: done ({path})")
            continue
        config = configs[row.label, seed]
        run_dir = os.path.join(out, "runs", f"{row.slug}-seed{seed}")
        resume = os.path.isfile(os.path.join(run_dir, "checkpoint.pt"))
        log(f"{tag}: {'resuming' if resume else 'training'} in {run_dir}")
        t0 = time.time()
        data = splits
        if data is None and row.evaluate_on:  # loaded once for training and the extra test sets
            from .data import get_dataset

            data = get_dataset(config.data, config.image_size)
        # without a checkpoint the run never finished an epoch: whatever it left is replaced
        metrics, model = train(config, run_dir, resume=resume, overwrite=not resume, progress=progress, log=log,
                               splits=data, return_model=True)
        extra = _extra_evaluations(row, model, data, config) if row.evaluate_on else {}
        record = dict(
            experiment=name, row=row.label, seed=seed, config=asdict(config),
            test_accuracy=metrics["test_accuracy"], last_test_accuracy=metrics.get("last_test_accuracy"),
            test_correct=metrics.get("test_correct"), **extra,
            best_val_accuracy=metrics.get("best_val_accuracy"), best_epoch=metrics.get("best_epoch"),
            seconds=metrics.get("seconds"), cpu_seconds=metrics.get("cpu_seconds"),
            wall_seconds_this_call=round(time.time() - t0, 2),
            threads=metrics.get("threads"), processes=metrics.get("processes"),
            machine=_machine_text(metrics.get("machine")) or _machine(),
            parameters=metrics.get("parameters"), commit=commit, paper=row.paper,
            small_data=splits is not None, curve=metrics.get("curve"),
            finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)
        log(f"{tag}: test accuracy {100 * record['test_accuracy']:.2f} % ({path})")
    return write_table(name, out)


# ---------------------------------------------------------------------------- tables


def load_results(name, out=None):
    """``{row label: {seed: record}}`` of the result JSONs of experiment ``name`` in ``out``."""
    exp = experiment(name)
    out = os.path.join(DEFAULT_ROOT, name) if out is None else out
    labels = {r.label for r in exp.rows}
    results = {}
    if not os.path.isdir(out):
        return results
    for fname in sorted(os.listdir(out)):
        if not fname.endswith(".json"):
            continue
        with open(os.path.join(out, fname)) as f:
            rec = json.load(f)
        if rec.get("experiment") != name or rec.get("row") not in labels:
            raise ValueError(f"out: {os.path.join(out, fname)} is not a result of experiment {name!r} "
                             f"(experiment {rec.get('experiment')!r}, row {rec.get('row')!r})")
        results.setdefault(rec["row"], {})[rec["seed"]] = rec
    return results


def _mean_std(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def _pct(values):
    """``"99.61 ± 0.04 %"`` (sample std over seeds) or ``"99.61 %"`` for one value."""
    mean, std = _mean_std([100 * v for v in values])
    return f"{mean:.2f} %" if len(values) == 1 else f"{mean:.2f} ± {std:.2f} %"


def _duration(seconds):
    """``"14 s"``, ``"45 min"`` or ``"2.4 h"``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


_COLUMN = {"last_test_accuracy": "last epoch's test accuracy"}


def render_table(name, out=None):
    """The markdown table of experiment ``name`` from the result JSONs in ``out`` (default ``results/NAME``).

    One line per row: mean ± std of the test accuracy over its finished seeds
    (sample standard deviation), every seed's number, the same for each extra
    test set of the row's ``evaluate_on`` (``"affine"``: column "affine
    accuracy"), parameters, mean
    training time per run (training and validation, wall clock), mean CPU
    time per run (all threads and processes; runs resumed from a checkpoint
    written before it was recorded have none), threads, and the paper's
    figure. Rows with no finished
    run say so; rows equal to another by construction print that row's numbers.
    The test accuracy is that of the model selected on the validation split;
    runs that recorded it also show the last epoch's test accuracy.
    """
    exp = experiment(name)
    results = load_results(name, out)
    if exp.table == "matched":
        return _render_matched(exp, results)
    extra = sorted({k for row in results.values() for rec in row.values() for k in rec if k.endswith("_accuracy")
                    and k not in ("test_accuracy", "best_val_accuracy")}, key=lambda k: (k in _COLUMN, k))
    cols = ["row", "test accuracy (mean ± std)", "every seed"] + [
        _COLUMN.get(k, k.replace("_", " ")) for k in extra] + [
        "parameters", "training time per run", "CPU time per run", "threads", "paper"]
    lines = [f"### {exp.title}", "", f"`dgl-capsules reproduce {name}`", "",
             "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    notes = []
    for row in exp.rows:
        source = exp.row(row.same_as) if row.same_as else row
        recs = results.get(source.label, {})
        label = row.label + (f" (= {row.same_as})" if row.same_as else "")
        if row.note:
            notes.append(f"- {row.label}: {row.note}.")
        if not recs:
            lines.append("| " + " | ".join([label, "not run yet", "", *[""] * len(extra), "", "", "", "", row.paper])
                         + " |")
            continue
        seeds = sorted(recs)
        acc = [recs[s]["test_accuracy"] for s in seeds]
        every = ", ".join(f"{100 * recs[s]['test_accuracy']:.2f} (seed {s})" for s in seeds)
        cells = [label, _pct(acc) + f" ({len(seeds)} seed{'s' * (len(seeds) > 1)})", every]
        for k in extra:  # mean ± std, then every seed's value (the "every seed" column is the test accuracy's)
            vals = [recs[s][k] for s in seeds if recs[s].get(k) is not None]
            each = f" ({', '.join(f'{100 * v:.2f}' for v in vals)})" if len(vals) > 1 else ""
            cells.append(_pct(vals) + each if vals else "")
        params = {recs[s].get("parameters") for s in seeds}
        cells.append(", ".join(f"{p:,}" for p in sorted(p for p in params if p is not None)))
        secs = [recs[s]["seconds"] for s in seeds if recs[s].get("seconds") is not None]
        cells.append(_duration(sum(secs) / len(secs)) if secs else "")
        cpu = [recs[s]["cpu_seconds"] for s in seeds if recs[s].get("cpu_seconds") is not None]
        part = f" ({len(cpu)} of {len(seeds)} seeds)" if cpu and len(cpu) < len(seeds) else ""
        cells.append(_duration(sum(cpu) / len(cpu)) + part if cpu else "not recorded")
        cells.append(", ".join(str(t) for t in sorted({recs[s].get("threads") for s in seeds} - {None})))
        cells.append(row.paper)
        lines.append("| " + " | ".join(cells) + " |")
    notes.append("- training time per run: training and validation, wall clock, mean over seeds (with any time a "
                 "run was stopped); CPU time per run: all its threads and processes, not recorded for runs made, or "
                 "begun and later resumed, before dgl_capsules recorded it.")
    lines += [""] + notes
    return _footer(exp, results, lines)


def _footer(exp, results, lines):
    """``lines`` and the notes every table ends with (small data, paper, machine, commit), as one string."""
    machines = sorted({rec.get("machine") for row in results.values() for rec in row.values()} - {None})
    commits = sorted({rec.get("commit") for row in results.values() for rec in row.values()} - {None})
    if any(rec.get("small_data") for row in results.values() for rec in row.values()):
        lines.append("- some runs used a small stand-in data set (`splits=`), not the experiment's data.")
    if exp.paper:
        lines.append(f"- paper: {exp.paper}.")
    if machines:
        lines.append(f"- machine: {'; '.join(machines)}.")
    if commits:
        lines.append(f"- commit: {', '.join(commits)}.")
    return "\n".join(lines).rstrip() + "\n"


def _seed_curves(recs):
    """Per-epoch familiar / novel errors and seconds of every seed, over the epochs all seeds have; or None."""
    curves = [recs[s].get("curve") or [] for s in sorted(recs)]
    n = min(len(c) for c in curves)
    if n == 0 or any("test_accuracy" not in r or "novel_accuracy" not in r for c in curves for r in c[:n]):
        return None
    return dict(familiar=[[1 - c[e]["test_accuracy"] for c in curves] for e in range(n)],
                novel=[[1 - c[e]["novel_accuracy"] for c in curves] for e in range(n)],
                seconds=[[c[e]["seconds"] for c in curves] for e in range(n)])


def matched_errors(results):
    """Familiar and novel error of every row at matched familiar error (Hinton et al. 2018, section 5.1).

    The target ``T`` is the largest, over the rows, of the lowest seed-mean
    familiar test error each row reaches; every row is read at the first epoch
    whose seed-mean familiar error is at most ``T``. Only the familiar test
    set decides (as in the paper); the novel set chooses nothing.

    Parameters
    ----------
    results : dict
        ``{row label: {seed: record}}`` (:func:`load_results`); a record's
        ``"curve"`` rows need ``"test_accuracy"`` and ``"novel_accuracy"``
        (training with ``eval_each_epoch=("test", "novel")``) and ``"seconds"``.
        Rows without them are left out.

    Returns
    -------
    (float or None, dict)
        ``T`` and ``{label: dict(epoch, familiar, novel, seconds)}``: the
        1-based epoch, and per seed (sorted) the familiar and novel errors
        there and the training seconds up to it. ``(None, {})`` with no row.

    Examples
    --------
    >>> def rec(errors):
    ...     return {"curve": [dict(test_accuracy=1 - e, novel_accuracy=0.5, seconds=10.0 * i)
    ...                       for i, e in enumerate(errors, 1)]}
    >>> target, rows = matched_errors({"A": {0: rec([0.5, 0.2, 0.1])}, "B": {0: rec([0.5, 0.375, 0.25])}})
    >>> target, rows["A"]["epoch"], rows["B"]["epoch"]
    (0.25, 2, 3)
    """
    curves = {label: c for label, recs in results.items() if recs for c in [_seed_curves(recs)] if c is not None}
    if not curves:
        return None, {}
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    target = max(min(mean(f) for f in c["familiar"]) for c in curves.values())
    out = {}
    for label, c in curves.items():
        # the row that sets T reaches it exactly; the tolerance only absorbs rounding in the means
        e = next(i for i, f in enumerate(c["familiar"]) if mean(f) <= target + 1e-12)
        out[label] = dict(epoch=e + 1, familiar=c["familiar"][e], novel=c["novel"][e], seconds=c["seconds"][e])
    return target, out


def _best_val(recs):
    """Per seed: (familiar error, novel error, epoch) of the validation-selected model, or None."""
    out = []
    for s in sorted(recs):
        rec, curve = recs[s], recs[s].get("curve") or []
        e = rec.get("best_epoch")
        if not e or len(curve) < e or "novel_accuracy" not in curve[e - 1]:
            return None
        out.append((1 - rec["test_accuracy"], 1 - curve[e - 1]["novel_accuracy"], e))
    return out


def _render_matched(exp, results):
    """The table of an experiment with ``table="matched"`` (see :func:`render_table`)."""
    target, matched = matched_errors({r.label: results.get(r.label, {}) for r in exp.rows})
    setter = [label for label, m in matched.items()
              if abs(min(sum(f) / len(f) for f in _seed_curves(results[label])["familiar"]) - target) <= 1e-12]
    cols = ["row", "familiar error", "novel error", "epoch", "training time to it", "best-val model: familiar -> "
            "novel error (epoch)", "parameters", "seeds", "paper: familiar -> novel error"]
    lines = [f"### {exp.title}", "", f"`dgl-capsules reproduce {exp.name}`", ""]
    if target is not None:
        lines += [f"Matched familiar error T = {100 * target:.2f} % (set by {', '.join(setter)}).", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    missing = []
    for row in exp.rows:
        recs = results.get(row.label, {})
        if row.label not in matched:
            missing.append(row.label)
            why = "not run yet" if not recs else "no per-epoch familiar / novel scores"
            lines.append("| " + " | ".join([row.label, why, *[""] * 6, row.paper]) + " |")
            continue
        m, seeds = matched[row.label], sorted(recs)
        best = _best_val(recs)
        best_text = "" if best is None else (
            f"{_pct([b[0] for b in best])} -> {_pct([b[1] for b in best])} "
            f"({', '.join(str(b[2]) for b in best)})")
        params = sorted({recs[s].get("parameters") for s in seeds} - {None})
        lines.append("| " + " | ".join([
            row.label, _pct(m["familiar"]), _pct(m["novel"]), str(m["epoch"]),
            _duration(sum(m["seconds"]) / len(m["seconds"])), best_text, ", ".join(f"{p:,}" for p in params),
            ", ".join(str(s) for s in seeds), row.paper]) + " |")
    lines += ["", "- T is the largest, over the rows, of the lowest familiar test error (mean over seeds) each row "
                  "reaches; each row is read at the first epoch whose familiar error is at most T. Matching uses "
                  "the familiar test set, as in the paper; the novel set never chooses anything (no epoch, no "
                  "model).",
              "- training time to it: training and validation seconds up to that epoch (mean over seeds), without "
              "the per-epoch scoring of the test sets; best-val model: the epoch with the best validation "
              "accuracy (familiar viewpoints, training lightings), as `train` selects it."]
    common = {k: v for k, v in exp.rows[0].config.items() if all(r.config.get(k) == v for r in exp.rows)}
    own = [f"{r.label}: " + ", ".join(f"{k}={v!r}" for k, v in r.config.items() if k not in common and k != "model")
           for r in exp.rows]
    lines.append(f"- every row trains with {', '.join(f'{k}={v!r}' for k, v in common.items())}; {'; '.join(own)}.")
    if missing and matched:
        lines.append(f"- T is over the rows run so far; it can change when {', '.join(missing)} "
                     f"{'is' if len(missing) == 1 else 'are'} run.")
    return _footer(exp, results, lines)


def write_table(name, out=None):
    """Write :func:`render_table` to ``OUT/table.md`` and return its path."""
    out = os.path.join(DEFAULT_ROOT, name) if out is None else out
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "table.md")
    with open(path, "w") as f:
        f.write(render_table(name, out))
    return path
