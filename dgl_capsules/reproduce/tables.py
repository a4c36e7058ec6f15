"""Tables of reproduction experiments, rendered from their result JSONs.

:func:`render_table` turns the results of an experiment into markdown (mean ±
std over seeds and every seed's number; for the novel-viewpoint experiments,
familiar and novel error at matched familiar error, :func:`matched_errors`);
:func:`write_table` writes it to ``OUT/table.md`` atomically. The README's
tables are the same text (``tools/readme_tables.py``).
"""
import base64
import math
import os
import warnings

from ..evaluation import mcnemar, unpack_correct
from ..files import write_text
from .catalogue import experiment
from .results import CorruptResultError, check_record, read_record

__all__ = ["DEFAULT_ROOT", "load_results", "render_table", "write_table", "matched_errors", "paired_tests"]

#: Where results go without ``out``: ``results/NAME`` under the working directory.
DEFAULT_ROOT = "results"


def load_results(name, out=None):
    """``{row label: {seed: record}}`` of the result JSONs of experiment ``name`` in ``out``.

    An unreadable result file is left out with a warning naming it (the runner
    trains that run again).

    Raises
    ------
    ValueError
        If a readable JSON in ``out`` is the result of another experiment or row.
    """
    exp = experiment(name)
    out = os.path.join(DEFAULT_ROOT, name) if out is None else out
    labels = {r.label for r in exp.rows}
    results = {}
    if not os.path.isdir(out):
        return results
    for fname in sorted(os.listdir(out)):
        if not fname.endswith(".json"):
            continue
        path = os.path.join(out, fname)
        try:
            rec = read_record(path)
            if isinstance(rec.get("experiment"), str) and (rec["experiment"] != name or rec.get("row") not in labels):
                raise ValueError(f"out: {path} is not a result of experiment {name!r} "
                                 f"(experiment {rec.get('experiment')!r}, row {rec.get('row')!r})")
            check_record(rec, path)
        except CorruptResultError as e:
            warnings.warn(f"{e}; left out of the table", stacklevel=2)
            continue
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
    written before it was recorded have none), threads, the paper's
    figure and, where a row has one, the best public reproduction of it. Rows with no finished
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
    public = any(row.public for row in exp.rows)
    cols += ["best public reproduction"] * public
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
            lines.append("| " + " | ".join([label, "not run yet", "", *[""] * len(extra), "", "", "", "", row.paper,
                                             *[row.public] * public]) + " |")
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
        cells += [row.paper] + [row.public] * public
        lines.append("| " + " | ".join(cells) + " |")
    notes += _paired_notes(exp, results, _root(exp, out)) + _cross_notes(exp, results, out)
    notes.append("- training time per run: training and validation, wall clock, mean over seeds (with any time a "
                 "run was stopped); CPU time per run: all its threads and processes, not recorded for runs made, or "
                 "begun and later resumed, before dgl_capsules recorded it.")
    lines += [""] + notes
    return _footer(exp, results, lines)


def _correct_bits(text):
    """Every bit :func:`~dgl_capsules.evaluation.pack_correct` stored (the padding bits of the last byte are 0 in
    every record, so they agree between any two runs and never count in McNemar's test)."""
    return unpack_correct(text, 8 * len(base64.b64decode(text)))


def paired_tests(exp, results):
    """McNemar's exact test between every two rows of ``exp``, seed by seed, on the test digits both scored.

    Parameters
    ----------
    exp : Experiment
        The experiment (its rows give the order of the pairs).
    results : dict
        ``{row label: {seed: record}}`` (:func:`load_results`); records without
        ``"test_correct"`` (runs made before it was stored) are left out.

    Returns
    -------
    list of dict
        One per pair of rows and seed both have: ``a``, ``b`` (row labels),
        ``seed``, ``a_only`` (digits A gets right and B wrong), ``b_only``
        and the two-sided ``p``.
    """
    labels = [r.label for r in exp.rows if not r.same_as]
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            ra, rb = results.get(a, {}), results.get(b, {})
            for seed in sorted(set(ra) & set(rb)):
                ta, tb = ra[seed].get("test_correct"), rb[seed].get("test_correct")
                if not ta or not tb or len(ta) != len(tb):
                    continue
                a_only, b_only, p = mcnemar(_correct_bits(ta), _correct_bits(tb))
                out.append(dict(a=a, b=b, seed=seed, a_only=a_only, b_only=b_only, p=p))
    return out


def _paired_notes(exp, results, root):
    """McNemar between the rows of ``exp``; a seed whose committed record holds no per-digit correctness is
    represented by its re-run in ``ROOT/weights-reruns/NAME`` where one exists (said in the note)."""
    filled = {}
    for label, recs in results.items():
        filled[label] = dict(recs)
        for seed, rec in _with_correct(exp.name, label, root).items():
            if seed in recs and not recs[seed].get("test_correct"):
                filled[label][seed] = rec
    tests = paired_tests(exp, filled)
    if not tests:
        return []
    pairs = {}
    for t in tests:
        a, b = filled[t["a"]][t["seed"]], filled[t["b"]][t["seed"]]
        reruns = "" if "weights-reruns" not in a.get("folder", "") + b.get("folder", "") else (
            f" (the seed's re-runs in weights-reruns/: {100 * a['test_accuracy']:.2f} % / "
            f"{100 * b['test_accuracy']:.2f} %)")
        pairs.setdefault((t["a"], t["b"]), []).append(f"seed {t['seed']}: {t['a_only']} / {t['b_only']}, "
                                                      f"p = {t['p']:.2g}{reruns}")
    return ["- McNemar's exact test on the test digits, per seed (digits only the first row gets right / only the "
            "second, two-sided p): " + "; ".join(f"{a} vs {b}: {', '.join(v)}" for (a, b), v in pairs.items())
            + "."]


def _root(exp, out):
    """The results root that holds the experiment's folder ``out`` (default: the committed ``results/``)."""
    return os.path.dirname(os.path.abspath(os.path.join(DEFAULT_ROOT, exp.name) if out is None else out))


def _with_correct(name, label, root):
    """``{seed: record}`` of row ``label`` of experiment ``name`` holding per-digit correctness: from
    ``ROOT/NAME``, else from ``ROOT/weights-reruns/NAME`` (re-runs of committed seeds that saved their model)."""
    found = {}
    for folder in (os.path.join(root, "weights-reruns", name), os.path.join(root, name)):  # committed runs win
        for seed, rec in load_results(name, folder).get(label, {}).items():
            if rec.get("test_correct"):
                found[seed] = dict(rec, folder=folder)
    return found


def _cross_notes(exp, results, out):
    """McNemar's test of every row against each row of :attr:`Experiment.paired_with`, seed by seed."""
    root = _root(exp, out)
    lines = []
    for other, label in exp.paired_with:
        theirs = _with_correct(other, label, root)
        parts = []
        for row in exp.rows:
            for seed, rec in sorted(results.get(row.label, {}).items()):
                ref = theirs.get(seed)
                if not rec.get("test_correct") or ref is None or len(ref["test_correct"]) != len(rec["test_correct"]):
                    continue
                a_only, b_only, p = mcnemar(_correct_bits(rec["test_correct"]), _correct_bits(ref["test_correct"]))
                where = os.path.relpath(ref["folder"], os.path.dirname(root))
                parts.append(f"{row.label}, seed {seed} ({100 * rec['test_accuracy']:.2f} %) vs seed {seed} "
                             f"({100 * ref['test_accuracy']:.2f} %, {where}): {a_only} / {b_only}, p = {p:.2g}")
        if parts:
            lines.append(f"- McNemar's exact test against {other}'s {label!r} on the test digits (digits only this "
                         f"experiment's row gets right / only {other}'s, two-sided p): " + "; ".join(parts) + ".")
    return lines


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
    """Write :func:`render_table` to ``OUT/table.md`` atomically and return its path.

    The table is rendered before the file is touched: a failure leaves the
    previous ``table.md`` (or none), never an empty one.
    """
    out = os.path.join(DEFAULT_ROOT, name) if out is None else out
    text = render_table(name, out)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "table.md")
    write_text(path, text)
    return path
