"""Ship a trained run's model inside the package: half-precision file, manifest entry, golden logits.

    python tools/make_weights.py --experiment sabour-table1 --row 3-iterations-reconstruction --seed 0 --name mnist

reads ``results/EXPERIMENT/runs/ROW-seedK/model.pt`` (the validation-selected model of a ``reproduce`` run) and
``results/EXPERIMENT/ROW-seedK.json``, stores the model's tensors (floating-point ones as float16) in
``dgl_capsules/models/weights/MODEL-PRESET-NAME.pt``, scores the stored weights on the full test split (they must
score what the float32 model scores, within ``--tolerance`` digits), and writes the entry into ``manifest.json``
and the logits of 8 fixed test digits into ``tests/data/weights_golden.json``. With ``--results ROOT`` the run is
read from ``ROOT/EXPERIMENT`` (a re-run of a committed seed that saved its model); the entry's mean and std over
seeds always come from ``--experiment-results`` (default: the committed ``results/``).
"""
import argparse
import hashlib
import json
import math
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "data", "weights_golden.json")
GOLDEN_INDICES = list(range(8))  # the first 8 digits of the test split


def _json_update(path, key, value, as_list=False):
    data = ([] if as_list else {}) if not os.path.isfile(path) else json.load(open(path))
    if as_list:
        data = [e for e in data if (e["model"], e["preset"], e["name"]) != key] + [value]
        data.sort(key=lambda e: (e["model"], e["preset"], e["name"]))
    else:
        data[key] = value
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=not as_list)
        f.write("\n")
    os.replace(tmp, path)


def _routing(model, settings, shape):
    """``{"family": ..., **routing settings}`` from the model's routed layers (none: family None)."""
    x = torch.zeros(1, shape["in_channels"], shape["image_size"], shape["image_size"])
    with torch.no_grad():
        layers = model.routing(x)
    family = sorted({getattr(layer, "routing", None) for layer in layers} - {None})
    out = {"family": family[0] if len(family) == 1 else (family or None)}
    for key in ("n_iters", "routing"):
        if key in settings:
            out[key] = settings[key]
    return out


def main(argv=None):
    sys.path.insert(0, ROOT)
    from dgl_capsules.data import get_dataset
    from dgl_capsules.evaluation import evaluate
    from dgl_capsules.files import save_atomic
    from dgl_capsules.models import get_model, n_parameters
    from dgl_capsules.models.weights import weights_dir
    from dgl_capsules.reproduce import experiment, load_results
    from dgl_capsules.train import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True)
    p.add_argument("--row", required=True, help="row label or slug")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="mnist", help="the weights' name in get_model(..., weights=NAME)")
    p.add_argument("--results", default=os.path.join(ROOT, "results"), help="results root of the run to ship")
    p.add_argument("--experiment-results", default=os.path.join(ROOT, "results"),
                   help="results root whose runs give the experiment's mean and std (the committed results)")
    p.add_argument("--tolerance", type=int, default=0, help="test digits the float16 file may score differently")
    args = p.parse_args(argv)

    row = experiment(args.experiment).row(args.row)
    out = os.path.join(args.results, args.experiment)
    record = load_results(args.experiment, out)[row.label][args.seed]
    model, ckpt = load_model(os.path.join(out, "runs", f"{row.slug}-seed{args.seed}", "model.pt"))
    config, shape = ckpt["config"], ckpt["shape"]

    state = {k: v.half() if torch.is_floating_point(v) else v for k, v in model.state_dict().items()}
    fname = f"{config['model']}-{config['preset']}-{args.name}.pt"
    path = os.path.join(weights_dir(), fname)
    os.makedirs(weights_dir(), exist_ok=True)
    save_atomic(state, path)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()

    test = get_dataset(config["data"], config.get("image_size")).test
    full = evaluate(model, test, per_sample=True)
    shipped = get_model(config["model"], config["preset"], **config["settings"], **shape)
    shipped.load_state_dict({k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()})
    half = evaluate(shipped.eval(), test, per_sample=True)
    changed = int((full != half).sum())
    print(f"float32 model {full.float().mean().item():.4f}, float16 file {half.float().mean().item():.4f} "
          f"({changed} of {len(test)} test digits scored differently)")
    if changed > args.tolerance:
        raise SystemExit(f"the float16 file scores {changed} digits differently (> --tolerance {args.tolerance})")

    recs = load_results(args.experiment, os.path.join(args.experiment_results, args.experiment))[row.label]
    accs = [recs[s]["test_accuracy"] for s in sorted(recs)]
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else None
    # the re-run's folder by its own name (where this machine kept it says nothing to a reader)
    folder = os.path.basename(os.path.normpath(args.results))
    rerun = "" if args.results == os.path.join(ROOT, "results") else f" --out {folder}/{args.experiment}"
    command = (f"dgl-capsules reproduce {args.experiment} --rows {row.slug} --seeds {args.seed}{rerun}; "
               f"python tools/make_weights.py --experiment {args.experiment} --row {row.slug} --seed {args.seed} "
               f"--name {args.name}" + (f" --results {folder}" if rerun else ""))
    entry = dict(model=config["model"], preset=config["preset"], name=args.name, file=fname, sha256=sha,
                 settings=dict(config["settings"]), shape=dict(shape), data=config["data"],
                 parameters=n_parameters(shipped), accuracy=round(half.float().mean().item(), 6),
                 experiment=dict(name=args.experiment, row=row.label, seed=args.seed, mean=round(mean, 6),
                                 std=None if std is None else round(std, 6), seeds=sorted(recs)),
                 command=command, commit=record.get("commit") or "", routing=_routing(shipped, config["settings"], shape),
                 dtype="float16")
    _json_update(os.path.join(weights_dir(), "manifest.json"), (entry["model"], entry["preset"], entry["name"]),
                 entry, as_list=True)
    with torch.no_grad():
        logits = shipped.scores(shipped(test.images[GOLDEN_INDICES]))
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    _json_update(GOLDEN, f"{entry['model']}/{entry['preset']}/{entry['name']}",
                 dict(indices=GOLDEN_INDICES, scores=[[round(float(v), 6) for v in r] for r in logits]))
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, sha256 {sha[:16]}...), manifest and golden scores")


if __name__ == "__main__":
    main()
