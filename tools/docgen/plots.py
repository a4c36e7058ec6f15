"""The Results section's plots, drawn from the result JSONs (no pyplot: nothing is shown or left open).

- :func:`curves_figure`: training and validation error per epoch of every run
  of an experiment (the JSONs' ``"curve"``);
- :func:`viewpoints_figure`: familiar and novel error per epoch, and novel
  against familiar error, for the novel-viewpoint experiments;
- :func:`beside_figure`: one row's curves beside another experiment's row
  (a longer schedule against the short one it questions);
- :func:`cost_figure`: each run's accuracy against the CPU-hours it took
  (training hours where CPU time was not recorded, drawn hollow), capsule
  networks beside CNNs, one panel per experiment.
"""
import math

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dgl_capsules.reproduce import experiment, matched_errors

from .summary import HEADLINES, Headline

__all__ = ["curves_figure", "beside_figure", "viewpoints_figure", "cost_figure", "run_metric", "run_hours", "METRIC_LABELS"]

DPI = 100
SEED_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
CAPSULE, CNN = "#1f77b4", "#ff7f0e"

#: What :func:`run_metric` returns for each headline metric, as an axis label.
METRIC_LABELS = {
    "test_accuracy": "test accuracy (%)",
    "affine_accuracy": "affine test accuracy (%)",
    "novel_error": "novel-viewpoint accuracy of the selected model (%)",
}


def _save(fig, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def _grid(n, width=4.2, height=3.0, cols=3):
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _error(acc):
    return 100 * (1 - acc)


def _label(text):
    """A row label for a plot: Markdown's code backticks dropped."""
    return text.replace("`", "")


def _error_axis(ax, which="y"):
    """Errors on a log scale that still shows 0 (linear below 0.1 %)."""
    getattr(ax, f"set_{which}scale")("symlog", linthresh=0.1, linscale=0.5)


def _fit(ax, xs, ys, top=None):
    """Hours from 0; accuracies with some room around them, never past ``top``."""
    ax.set_xlim(0, 1.1 * max(xs))
    lo, hi = min(ys), max(ys)
    pad = max(0.25 * (hi - lo), 0.3)
    ax.set_ylim(lo - pad, hi + pad if top is None else min(hi + pad, top))


def curves_figure(exp, results, path):
    """Training (dashed) and validation (solid) error per epoch, one panel per row, one colour per seed.

    Errors are ``100 - accuracy`` on a log scale (linear below 0.1 %), so
    99.4 % and 99.6 % stay apart. Returns ``path``, or None when no run has a curve.
    """
    rows = [(r, results[r.label]) for r in exp.rows
            if r.same_as is None and any(rec.get("curve") for rec in results.get(r.label, {}).values())]
    if not rows:
        return None
    fig, axes = _grid(len(rows))
    for ax, (row, recs) in zip(axes, rows):
        for k, seed in enumerate(sorted(recs)):
            curve = recs[seed].get("curve") or []
            colour = SEED_COLOURS[k % len(SEED_COLOURS)]
            epochs = [c["epoch"] for c in curve]
            ax.plot(epochs, [_error(c["train_accuracy"]) for c in curve], "--", color=colour, lw=1.2)
            ax.plot(epochs, [_error(c["val_accuracy"]) for c in curve], "-", color=colour, lw=1.6,
                    label=f"seed {seed}")
        _error_axis(ax)
        ax.set_title(_label(row.label), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("error = 100 - accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{exp.name}: training (dashed) and validation (solid) error per epoch", fontsize=11)
    return _save(fig, path)


def beside_figure(runs, path, title):
    """Training (dashed) and validation (solid) error per epoch of several rows' runs on one axes.

    ``runs`` is ``[(label, {seed: record}), ...]``: one colour per label, seeds
    of a label in that colour. Returns ``path``, or None when no run has a curve.
    """
    drawn = [(label, recs) for label, recs in runs if any(rec.get("curve") for rec in recs.values())]
    if not drawn:
        return None
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    handles = []
    for k, (label, recs) in enumerate(drawn):
        colour = SEED_COLOURS[k % len(SEED_COLOURS)]
        for seed in sorted(recs):
            curve = recs[seed].get("curve") or []
            epochs = [c["epoch"] for c in curve]
            ax.plot(epochs, [_error(c["train_accuracy"]) for c in curve], "--", color=colour, lw=1.0)
            ax.plot(epochs, [_error(c["val_accuracy"]) for c in curve], "-", color=colour, lw=1.4)
        seeds = ", ".join(str(s) for s in sorted(recs))
        handles.append(Line2D([], [], color=colour, lw=1.4, label=f"{label} (seed {seeds})"))
    handles += [Line2D([], [], color="0.3", ls="--", label="training"), Line2D([], [], color="0.3", label="validation")]
    _error_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error = 100 - accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper right")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def viewpoints_figure(exp, results, path):
    """Familiar (solid) and novel (dashed) test error per epoch; novel against familiar error.

    The right panel marks the matched familiar error ``T`` and each row's
    point there (:func:`~dgl_capsules.reproduce.matched_errors`); seeds are
    averaged. Returns ``path``, or None without per-epoch familiar and novel
    scores.
    """
    target, matched = matched_errors({r.label: results.get(r.label, {}) for r in exp.rows})
    if not matched:
        return None
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for k, row in enumerate(r for r in exp.rows if r.label in matched):
        recs = results[row.label]
        n = min(len(recs[s]["curve"]) for s in recs)
        fam = [sum(_error(recs[s]["curve"][e]["test_accuracy"]) for s in recs) / len(recs) for e in range(n)]
        nov = [sum(_error(recs[s]["curve"][e]["novel_accuracy"]) for s in recs) / len(recs) for e in range(n)]
        colour = SEED_COLOURS[k % len(SEED_COLOURS)]
        epochs = range(1, n + 1)
        left.plot(epochs, fam, "-", color=colour, lw=1.5, label=_label(row.label))
        left.plot(epochs, nov, "--", color=colour, lw=1.5)
        right.plot(fam, nov, "-o", color=colour, ms=2.5, lw=1, label=_label(row.label))
        m = matched[row.label]
        right.plot([100 * sum(m["familiar"]) / len(m["familiar"])], [100 * sum(m["novel"]) / len(m["novel"])],
                   "*", color=colour, ms=14, mec="black")
    _error_axis(left)
    left.set_xlabel("epoch")
    left.set_ylabel("test error (%)")
    left.set_title("familiar (solid) and novel (dashed) viewpoints", fontsize=10)
    fig.legend(handles=left.get_lines()[::2], loc="outside lower center", ncols=4, fontsize=9)
    right.axvline(100 * target, color="grey", ls=":", label=f"matched familiar error T = {100 * target:.2f} %")
    _error_axis(right, "x")
    right.set_xlim(left=0)
    right.set_xlabel("familiar-viewpoint error (%)")
    right.set_ylabel("novel-viewpoint error (%)")
    right.set_title("novel against familiar error, per epoch (star: read at T)", fontsize=10)
    right.legend(handles=right.get_lines()[-1:], fontsize=8, loc="upper left")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{exp.name}: familiar and novel viewpoints, mean over seeds", fontsize=11)
    return _save(fig, path)


def run_metric(rec, metric):
    """A run's number for the cost plot, as a fraction: the metric's accuracy, or for ``"novel_error"`` the
    novel-viewpoint accuracy at the validation-selected epoch. None if the run did not record it."""
    if metric == "novel_error":
        curve, e = rec.get("curve") or [], rec.get("best_epoch")
        return curve[e - 1].get("novel_accuracy") if e and len(curve) >= e else None
    return rec.get(metric)


def run_hours(rec):
    """``(hours, True)`` from the run's CPU time, else ``(hours, False)`` from its training wall time."""
    if rec.get("cpu_seconds") is not None:
        return rec["cpu_seconds"] / 3600, True
    if rec.get("seconds") is not None:
        return rec["seconds"] / 3600, False
    return None, False


def _cost_points(name, results):
    exp = experiment(name)
    metric = HEADLINES.get(name, Headline()).metric
    points = []
    for row in exp.rows:
        if row.same_as is not None:
            continue
        for seed, rec in sorted(results.get(row.label, {}).items()):
            value, (hours, cpu) = run_metric(rec, metric), run_hours(rec)
            if value is not None and hours is not None:
                points.append((row, hours, 100 * value, cpu))
    return metric, points


def cost_figure(names, load, path, title=None):
    """Accuracy against CPU-hours per run, one panel per experiment of ``names`` that has runs.

    ``load(name)`` returns the experiment's results (``{label: {seed: record}}``).
    Capsule networks are blue, CNNs orange; a filled marker is CPU time (all
    threads), a hollow one training wall time (runs made before CPU time was
    recorded). Returns ``path`` and the number of panels, or ``(None, 0)``.
    """
    panels = [(n, *_cost_points(n, load(n))) for n in names]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None, 0
    fig, axes = _grid(len(panels), width=4.0, height=3.2)
    for ax, (name, metric, points) in zip(axes, panels):
        rows = list(dict.fromkeys(p[0].label for p in points))
        markers = "osD^vP*X"
        for row, hours, value, cpu in points:
            colour = CNN if (row.config or {}).get("model") == "cnn" else CAPSULE
            marker = markers[rows.index(row.label) % len(markers)]
            ax.plot([hours], [value], marker, ms=7, mec=colour, mfc=colour if cpu else "none", mew=1.5)
        _fit(ax, [p[1] for p in points], [p[2] for p in points], top=100.0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("hours per run (filled: CPU, hollow: training wall time)", fontsize=8)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric.replace("_", " ")), fontsize=8)
        ax.grid(True, alpha=0.3)
        handles = [Line2D([], [], ls="", marker=markers[i % len(markers)], color="black", mfc="none",
                          label=_label(label)) for i, label in enumerate(rows)]
        ax.legend(handles=handles, fontsize=7, loc="best")
    fig.legend(handles=[Line2D([], [], ls="", marker="o", color=CAPSULE, label="capsule network"),
                        Line2D([], [], ls="", marker="o", color=CNN, label="CNN (width-matched)")],
               loc="outside lower center", ncols=2, fontsize=9)
    fig.suptitle(title or "accuracy against the hours each run took", fontsize=11)
    return _save(fig, path), len(panels)
