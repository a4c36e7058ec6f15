"""One line per experiment: the headline number, its seeds, the paper's and the best public reproduction's.

The published figures and the choice of each experiment's headline row are
data here, beside nothing else: :data:`HEADLINES`. An experiment of
:func:`dgl_capsules.reproduce.list_experiments` without an entry still gets a
line (its first capsule row, the ``paper`` string of that row), so a new
experiment appears in the README and the site without an edit.
"""
import math
from dataclasses import dataclass
from pathlib import Path

from dgl_capsules.reproduce import experiment, list_experiments, load_results, matched_errors

__all__ = ["Headline", "HEADLINES", "documented_experiments", "is_smoke_test", "headline_row", "cnn_rows",
           "row_values", "progress", "summary", "summary_markdown", "pct"]


@dataclass(frozen=True)
class Headline:
    """How an experiment is summed up in one line.

    ``row`` is the label of the row whose number heads the line (default: the
    first trained row that is not a CNN); ``metric`` is ``"test_accuracy"``,
    any other ``*_accuracy`` key of the result JSONs (``"affine_accuracy"``)
    or ``"novel_error"`` (novel-viewpoint error at matched familiar error,
    :func:`~dgl_capsules.reproduce.matched_errors`); ``what`` says in a few
    words what the number is; ``paper`` and ``public`` are the paper's figure
    and the best public reproduction's, with their sources.
    """

    row: str = ""
    metric: str = "test_accuracy"
    what: str = ""
    paper: str = ""
    public: str = ""


_SABOUR_PAPER = "99.75 % (Sabour et al. 2017, Table 1)"
_SABOUR_PUBLIC = "99.66 % mean / 99.71 % best (XifengGuo/CapsNet-Keras, Apache MXNet example/capsnet)"
_VIEW_PAPER = "{} % (the real smallNORB; dynamic routing as measured by Hahn et al. 2019)"

#: The headline of each experiment, with the published figures beside it.
HEADLINES = {
    "sabour-table1": Headline(
        "3 iterations + reconstruction", what="MNIST test accuracy, CapsNet `small`, 3 routing iterations "
        "+ reconstruction, 20 epochs", paper=_SABOUR_PAPER, public=_SABOUR_PUBLIC),
    "sabour-long": Headline(
        "3 iterations + reconstruction, 40 epochs", what="MNIST test accuracy, CapsNet `small`, 3 routing "
        "iterations + reconstruction, 40 epochs (twice sabour-table1's schedule)",
        paper=_SABOUR_PAPER, public=_SABOUR_PUBLIC),
    "sabour-official": Headline(
        "3 iterations + reconstruction, official schedule", what="MNIST test accuracy, CapsNet `small`, 3 routing "
        "iterations + reconstruction, on the schedule of Sabour et al.'s code (200 epochs)", paper=_SABOUR_PAPER,
        public=_SABOUR_PUBLIC),
    "efficient-capsnet": Headline(
        "Efficient-CapsNet", what="MNIST test accuracy, Efficient-CapsNet (self-attention routing) on the "
        "recipe of its published code, 150 epochs, selected on validation digits",
        paper="99.74 % (0.26 % error of single models as quoted from Mazzia et al. 2021, Table 2, not verified "
        "here; selected on the test set; 0.16 % error with an ensemble)"),
    "affnist-style": Headline(
        "CapsNet `small`", metric="affine_accuracy", what="accuracy on affine-transformed MNIST test digits "
        "(our set, milder than affNIST), trained on shifted digits", paper="79 % on the real affNIST (CNN 66 %)"),
    "multimnist": Headline(
        what="MultiMNIST: both digits of a 36x36 overlay right", paper="94.8 % (60 M training pairs)"),
    "em-mnist": Headline(
        what="MNIST test accuracy, MatrixCapsNet `small` (EM routing), 10 epochs",
        paper="99.56 % (Hinton et al. 2018, 0.44 % error)", public="99.3 % (best public PyTorch reproduction)"),
    "em-mnist5k": Headline(
        what="test accuracy on mnist5k's 1,000 test digits, MatrixCapsNet `small`, 40 epochs",
        paper="none (our earlier single run: 98.50 %)"),
    "viewpoints": Headline(
        "CapsNet `small` (dynamic routing)", metric="novel_error", what="novel-azimuth error at matched familiar "
        "error, CapsNet `small`, on our rendered set (lower is better)",
        paper=_VIEW_PAPER.format("20.33")),
    "viewpoints-elevation": Headline(
        "CapsNet `small` (dynamic routing)", metric="novel_error", what="novel-elevation error at matched "
        "familiar error, CapsNet `small`, on our rendered set (lower is better)",
        paper=_VIEW_PAPER.format("16.37")),
}


def is_smoke_test(name):
    """Whether experiment ``name`` only checks that the machinery runs (``tiny``, ``*-tiny``)."""
    return name == "tiny" or name.endswith("-tiny")


def documented_experiments():
    """Every experiment of :func:`~dgl_capsules.reproduce.list_experiments` but the smoke tests: those of
    :data:`HEADLINES` in its order, then the others by name."""
    order = list(HEADLINES)
    names = [n for n in list_experiments() if not is_smoke_test(n)]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _model(row):
    return (row.config or {}).get("model")


def cnn_rows(exp):
    """The trained rows of ``exp`` whose model is the CNN baseline."""
    return [r for r in exp.rows if r.same_as is None and _model(r) == "cnn"]


def headline_row(exp):
    """The row that heads ``exp``'s summary line (:data:`HEADLINES`, else its first trained non-CNN row)."""
    wanted = HEADLINES.get(exp.name, Headline()).row
    trained = [r for r in exp.rows if r.same_as is None]
    for r in trained:
        if r.label == wanted:
            return r
    capsules = [r for r in trained if _model(r) != "cnn"]
    return (capsules or trained or list(exp.rows))[0]


def row_values(exp, results, row, metric):
    """Per finished seed (sorted), the ``metric`` of ``row``: accuracies as fractions, or novel errors."""
    if metric == "novel_error":
        _, matched = matched_errors({r.label: results.get(r.label, {}) for r in exp.rows})
        return list(matched[row.label]["novel"]) if row.label in matched else []
    recs = results.get(row.label, {})
    return [recs[s][metric] for s in sorted(recs) if recs[s].get(metric) is not None]


def progress(exp, results):
    """``(finished, planned)``: runs with a result JSON among the (row, seed) pairs the experiment plans."""
    planned = [(r.label, s) for r in exp.rows if r.same_as is None for s in r.seeds]
    done = sum(1 for label, s in planned if s in results.get(label, {}))
    return done, len(planned)


def pct(values):
    """``"99.52 ± 0.04 %"`` (sample standard deviation) from fractions, ``"99.47 %"`` for one value."""
    values = [100 * v for v in values]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f} %"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.2f} ± {std:.2f} %"


def _seeds(n):
    return f"{n} seed{'s' * (n != 1)}"


def summary(name, results_root):
    """The summary line of experiment ``name`` from the JSONs in ``results_root/NAME``, as a dict of texts.

    Keys: ``name``, ``title``, ``what``, ``ours``, ``seeds`` (finished of
    planned, for the headline row), ``paper``, ``public``, ``cnn`` (the CNN
    rows' same number, or ``""``), ``finished`` and ``planned`` (runs of the
    whole experiment) and ``hours`` (the catalogue's estimate, or None).
    """
    exp = experiment(name)
    results = load_results(name, str(Path(results_root) / name))
    spec = HEADLINES.get(name, Headline())
    row = headline_row(exp)
    values = row_values(exp, results, row, spec.metric)
    finished, planned = progress(exp, results)
    hours = exp.hours
    if values:
        ours = pct(values) + (" novel error" if spec.metric == "novel_error" else "")
    else:
        ours = "not run yet" + (f" (estimated {hours:g} h)" if hours is not None else "")
        others = [(r.label, row_values(exp, results, r, spec.metric)) for r in exp.rows
                  if r.same_as is None and r is not row and _model(r) != "cnn"]
        ours += "".join(f"; {label}: {pct(v)} ({_seeds(len(v))})" for label, v in others if v)
    cnn = []
    for r in cnn_rows(exp):
        v = row_values(exp, results, r, spec.metric)
        if v:
            cnn.append(f"{pct(v)} ({_seeds(len(v))})")
    return dict(name=name, title=exp.title, what=spec.what or f"{spec.metric.replace('_', ' ')}, {row.label}",
                ours=ours, seeds=f"{len(values)} of {len(row.seeds)}", paper=spec.paper or row.paper or "none",
                public=spec.public or "none known", cnn="; ".join(cnn), finished=finished, planned=planned,
                hours=hours, row=row.label)


SUMMARY_COLUMNS = ("experiment", "what the number is", "ours (mean ± std over seeds)", "seeds",
                   "width-matched CNN", "paper", "best public reproduction")


def summary_markdown(results_root, link):
    """The README's summary table: one line per :func:`documented_experiments`; ``link(name)`` is its page."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + " --- |" * len(SUMMARY_COLUMNS)]
    for name in documented_experiments():
        s = summary(name, results_root)
        cells = [f"[`{name}`]({link(name)})", s["what"], s["ours"], s["seeds"], s["cnn"] or "-", s["paper"],
                 s["public"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"

