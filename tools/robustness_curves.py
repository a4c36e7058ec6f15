"""Robustness curves of the shipped networks: test accuracy against the size of each transformation alone.

For every shipped weights entry trained on MNIST (``dc.models.list_weights()``, the CNN among them), the first
``--max-samples`` digits of its test split are rotated, sheared, scaled and shifted by every size of
:data:`dgl_capsules.analysis.DEFAULT_VALUES` (:func:`dgl_capsules.analysis.robustness`) and scored. One JSON per
entry in ``results/robustness/`` and one picture of every entry's curves on the same axes
(``results/robustness/robustness.png``); the table is rendered from the JSONs (``python tools/readme_tables.py``
puts it in the README).

    python tools/robustness_curves.py                      # measure every entry without a JSON, redraw, print
    python tools/robustness_curves.py --max-samples 2000 --overwrite
"""
import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "robustness"
PICTURE = "robustness.png"
DATA = "mnist"
# The sizes shown in the table (the picture shows every size measured): (transform, size, column heading).
COLUMNS = [("rotation", 0.0, "unmoved"), ("rotation", 20.0, "rotation 20°"), ("rotation", 45.0, "rotation 45°"),
           ("shear", 0.5, "shear 0.5"), ("scale", 0.7, "scale 0.7"), ("scale", 1.3, "scale 1.3"),
           ("translation", 4.0, "shift 4 px"), ("translation", 6.0, "shift 6 px"), ("translation", 8.0, "shift 8 px")]


def label(rec):
    """A network's name on the curves and in the table."""
    return f"{rec['model']} {rec['preset']}"


def measure(entry, max_samples=None):
    """The record of one shipped weights entry: its accuracy at every size of every transformation."""
    import torch

    from dgl_capsules.analysis import TRANSFORMS, robustness
    from dgl_capsules.data import get_dataset
    from dgl_capsules.models import get_model

    model = get_model(entry.model, entry.preset, weights=entry.name)
    test = get_dataset(entry.data, entry.shape.get("image_size")).test
    start = time.time()
    curves = {}
    for t in TRANSFORMS:
        out = robustness({"model": model}, test, t, max_samples=max_samples, progress=True)
        curves[t] = dict(unit=out["unit"], values=out["values"], accuracy=out["models"]["model"])
        samples = out["samples"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return dict(model=entry.model, preset=entry.preset, weights=entry.name, data=entry.data,
                routing=entry.routing.get("family"), samples=samples, curves=curves,
                seconds=round(time.time() - start, 1), threads=torch.get_num_threads(), commit=commit,
                command="python tools/robustness_curves.py"
                        + (f" --max-samples {max_samples}" if max_samples else ""))


def load(results="results"):
    """Every record in ``results/robustness``, sorted by file name."""
    folder = os.path.join(results, FOLDER)
    return [json.load(open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))
            if f.endswith(".json")] if os.path.isdir(folder) else []


def draw(recs, path):
    """Every record's curves on the same axes, one panel per transformation (the records must share the digits)."""
    from dgl_capsules.analysis import plot_robustness

    if len({r["samples"] for r in recs}) > 1:
        raise ValueError("records: every network must be scored on the same test digits; got samples "
                         + ", ".join(f"{label(r)} {r['samples']}" for r in recs))
    panels = {}
    for r in recs:
        for t, c in r["curves"].items():
            panel = panels.setdefault(t, dict(transform=t, unit=c["unit"], values=c["values"], models={}))
            if panel["values"] != c["values"]:
                raise ValueError(f"records: {label(r)} measured {t} at {c['values']}, others at {panel['values']}")
            panel["models"][label(r)] = c["accuracy"]
    return plot_robustness(panels, path)


def render(results="results"):
    """The markdown table of every record in ``results/robustness`` and the picture's link."""
    recs = load(results)
    if not recs:
        return "No shipped network measured yet (`python tools/robustness_curves.py`).\n"
    lines = ["| shipped network | routing | test digits | " + " | ".join(c[2] for c in COLUMNS) + " |",
             "|" + " --- |" * (3 + len(COLUMNS))]
    for r in recs:
        cells = []
        for t, size, _ in COLUMNS:
            c = r["curves"].get(t, {})
            hit = [a for v, a in zip(c.get("values", []), c.get("accuracy", [])) if v == size]
            cells.append(f"{100 * hit[0]:.1f} %" if hit else "-")
        lines.append(f"| {label(r)} `{r['weights']}` | {r['routing'] or 'none'} | {r['samples']:,} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"![accuracy against each transformation](results/{FOLDER}/{PICTURE})", "",
              f"Each transformation alone, applied to the first {min(r['samples'] for r in recs):,} test digits "
              "for every network (an accuracy's standard error on that many digits is at most "
              f"{50 / min(r['samples'] for r in recs) ** 0.5:.1f} points; rotation in degrees "
              "about the centre, horizontal shear factor, scale factor about the centre, shift to the right in "
              "pixels). Commands: "
              + ", ".join(sorted({f"`{r['command']}` (commit {r['commit']})" for r in recs})) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    from routing_necessity import measure_shipped

    args = measure_shipped(__doc__.splitlines()[0], FOLDER, lambda e: e.data == DATA,
                           lambda e, a: measure(e, a.max_samples), argv)
    recs = load(args.results)
    if recs:
        draw(recs, os.path.join(args.results, FOLDER, PICTURE))
    print(render(args.results))


if __name__ == "__main__":
    main()
