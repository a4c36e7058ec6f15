"""The routing-necessity table: does each shipped trained network need its routing?

For every shipped weights entry with routing (``dc.models.list_weights()``), on its data set's test split:
accuracy with its routing, with uniform and with random couplings swapped in at test time
(McNemar's exact test against its own routing), the accuracy of the same network *trained* with
uniform couplings where its experiment has that row (mean over the committed seeds), and what
its routing does (normalised coupling entropy of the last iteration, static-routing index, the
share of dead child capsules). One JSON per entry in ``results/routing-necessity/``; the table is
rendered from those JSONs (``python tools/readme_tables.py`` puts it in the README).

    python tools/routing_necessity.py                 # measure every entry without a JSON, then print the table
    python tools/routing_necessity.py --max-samples 1000 --overwrite
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "routing-necessity"
# The row of the same experiment that trains the same network with uniform couplings.
UNIFORM_ROWS = {
    ("sabour-table1", "3 iterations + reconstruction"): "uniform coupling + reconstruction",
    ("efficient-capsnet", "Efficient-CapsNet"): "Efficient-CapsNet, uniform couplings",
}
DEAD = "0.05"  # the strength below which a capsule counts as dead in the table


def _trained_uniform(entry, results):
    """Mean test accuracy and seed count of the experiment's uniform-couplings row, or None."""
    from dgl_capsules.reproduce import experiment, load_results

    exp = entry.experiment
    label = UNIFORM_ROWS.get((exp["name"], exp["row"]))
    if label is None:
        return None
    row = experiment(exp["name"]).row(label)
    source = row.same_as or row.label
    recs = load_results(exp["name"], os.path.join(results, exp["name"])).get(source, {})
    if not recs:
        return None
    accs = [r["test_accuracy"] for r in recs.values()]
    return dict(row=label, accuracy=sum(accs) / len(accs), seeds=sorted(recs))


def measure(entry, results, max_samples=None):
    """The record of one shipped weights entry."""
    from dgl_capsules.analysis import analyze, routing_swap
    from dgl_capsules.data import get_dataset
    from dgl_capsules.models import get_model

    model = get_model(entry.model, entry.preset, weights=entry.name)
    test = get_dataset(entry.data, entry.shape.get("image_size")).test
    report = analyze(model, test, max_samples=max_samples, progress=False)
    swap = routing_swap(model, test, iterations=(), max_samples=max_samples, progress=False)
    layers = []
    for layer in report["layers"]:
        last = layer["iterations"][-1]
        layers.append(dict(name=layer["name"], routing=layer["routing"], entropy=last["entropy"]["mean"],
                           weighted_entropy=last["entropy"]["weighted_mean"], static_index=last["static_index"],
                           dead=(layer["dead"]["children"] or {}).get("shares", {}).get(DEAD)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return dict(model=entry.model, preset=entry.preset, weights=entry.name, data=entry.data,
                samples=report["samples"], layers=layers,
                trained=swap["trained"]["accuracy"],
                uniform=dict(accuracy=swap["uniform"]["accuracy"], **swap["uniform"]["mcnemar"]),
                random=dict(accuracy=swap["random"]["accuracy"], **swap["random"]["mcnemar"]),
                trained_uniform=_trained_uniform(entry, results), commit=commit,
                command="python tools/routing_necessity.py"
                        + (f" --max-samples {max_samples}" if max_samples else ""))


def _p(p):
    return f"p = {p:.2g}" if p > 0 else "p < 1e-300"


def render(results="results"):
    """The markdown table of every record in ``results/routing-necessity``."""
    folder = os.path.join(results, FOLDER)
    recs = [json.load(open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))
            if f.endswith(".json")] if os.path.isdir(folder) else []
    cols = ["shipped network", "routing", "test digits", "with its routing", "uniform couplings at test time",
            "random couplings at test time", "trained with uniform couplings", "normalised entropy (weighted)",
            "static index", f"dead children (strength < {DEAD})"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in recs:
        tu = r["trained_uniform"]
        for i, layer in enumerate(r["layers"]):
            head = [f"{r['model']} {r['preset']} `{r['weights']}`", layer["name"] + f" ({layer['routing']})"]
            if i == 0:
                head += [f"{r['samples']:,}", f"{100 * r['trained']:.2f} %",
                         f"{100 * r['uniform']['accuracy']:.2f} % ({_p(r['uniform']['p'])})",
                         f"{100 * r['random']['accuracy']:.2f} % ({_p(r['random']['p'])})",
                         "none" if tu is None else
                         f"{100 * tu['accuracy']:.2f} % ({len(tu['seeds'])} seed{'s' * (len(tu['seeds']) > 1)})"]
            else:
                head += [""] * 5
            dead = "" if layer["dead"] is None else f"{100 * layer['dead']:.1f} %"
            lines.append("| " + " | ".join(head + [
                f"{layer['entropy']:.4f} ({layer['weighted_entropy']:.4f})", f"{layer['static_index']:.4f}",
                dead]) + " |")
    if not recs:
        return "No shipped network measured yet (`python tools/routing_necessity.py`).\n"
    lines += ["", "Normalised entropy: 1 = uniform couplings, 0 = one parent per child (last routing iteration; "
              "in brackets weighted by the child's strength). Static index: the standard deviation of a coupling "
              "over the test digits, averaged over edges (0 = the same routing for every digit). p: McNemar's exact "
              "test against the network's own routing on the same digits. Trained with uniform couplings: the "
              "experiment's row of the same network trained that way (mean over its committed seeds). Commands: "
              + ", ".join(sorted({f"`{r['command']}` (commit {r['commit']})" for r in recs})) + "."]
    return "\n".join(lines) + "\n"


def measure_shipped(description, folder_name, wanted, measure, argv=None):
    """Write ``measure(entry, args)`` (``args``: the parsed arguments) as
    ``RESULTS/FOLDER_NAME/MODEL-PRESET-NAME.json`` for every shipped weights entry that ``wanted(entry)`` accepts
    and that has no JSON yet (every one with ``--overwrite``); the parsed arguments are returned."""
    sys.path.insert(0, str(ROOT))
    from dgl_capsules.files import write_text
    from dgl_capsules.models import list_weights

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--max-samples", type=int, default=None, help="test digits (default: the whole test split)")
    p.add_argument("--overwrite", action="store_true", help="measure entries that already have a JSON again")
    args = p.parse_args(argv)
    folder = os.path.join(args.results, folder_name)
    os.makedirs(folder, exist_ok=True)
    for entry in list_weights():
        path = os.path.join(folder, f"{entry.model}-{entry.preset}-{entry.name}.json")
        if not wanted(entry) or (os.path.exists(path) and not args.overwrite):
            continue
        print(f"measuring {entry.model} {entry.preset} {entry.name!r} ...", flush=True)
        write_text(path, json.dumps(measure(entry, args), indent=1) + "\n")
    return args


def main(argv=None):
    # a network without routing has nothing to swap
    args = measure_shipped(__doc__.splitlines()[0], FOLDER, lambda e: bool(e.routing.get("family")),
                           lambda e, a: measure(e, a.results, a.max_samples), argv)
    print(render(args.results))


if __name__ == "__main__":
    main()
