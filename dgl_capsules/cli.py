"""The ``dgl-capsules`` command (also ``python -m dgl_capsules``).

``demo`` trains the small CapsNet on the bundled MNIST digits and draws its
routing; ``train`` / ``evaluate`` / ``visualize`` are the pieces it is made
of; ``route-demo`` routes a generated planted-cluster problem in seconds.
Data-parallel training: ``torchrun --nproc_per_node=N -m dgl_capsules train ...``.
"""
import argparse
import json
import math
import os
import sys

__all__ = ["main", "build_parser"]


def _route_demo(args):
    """Route a planted-cluster problem and print the coupling entropy per iteration."""
    from .data import planted_clusters
    from .functional import coupling_entropy
    from .routing import dynamic_routing

    p = planted_clusters(n_in=args.children, n_out=args.parents, dim=16, batch=args.batch, seed=args.seed)
    r = dynamic_routing(p.graph, p.votes, n_iters=args.iters, return_trace=True)
    src, dst = p.graph.edges()
    print(
        f"dynamic routing of {args.children} children to {args.parents} parents "
        f"(16-D votes, batch {args.batch}), planted clusters"
    )
    print(f"uniform coupling entropy log({args.parents}) = {math.log(args.parents):.4f} nats")
    print("iteration  mean entropy  children on their planted parent")
    for it, c in enumerate(r.trace, 1):
        h = coupling_entropy(p.graph, c).mean().item()
        own = c[p.assignment[src] == dst]  # (n_in, B)
        print(f"{it:9d}  {h:12.4f}  {own.mean().item():8.1%} of their vote mass")
    return 0


def _train(args):
    from .train import parse_overrides, train

    train(model=args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          seed=args.seed, out=args.out, resume=args.resume, preset=args.preset, width=args.width,
          shift=args.shift, lr_decay=args.lr_decay, image_size=args.image_size, progress=not args.quiet,
          overrides=parse_overrides(args.set), rotate=args.rotate, scale=args.scale, ema=args.ema)
    return 0


def _evaluate(args):
    from .train import UsageError, eval_set, evaluate, load_data, load_model

    model, ckpt = load_model(args.checkpoint)
    data = args.data or ckpt.get("data", "mnist5k")
    splits = load_data(data)
    size = model.image_size if hasattr(model, "image_size") else None
    results = {}
    for name in args.on:
        ds = eval_set(name, splits, seed=args.seed)
        if size is not None and ds.images.shape[-1] != size:
            from .data import ImageDataset, pad_to

            if ds.images.shape[-1] > size:
                raise UsageError(
                    f"--on {name}: images are {ds.images.shape[-1]}x{ds.images.shape[-1]} but the model takes "
                    f"{size}x{size}; train it with --image-size {ds.images.shape[-1]}"
                )
            ds = ImageDataset(pad_to(ds.images, size), ds.labels, ds.n_classes)
        results[name] = evaluate(model, ds)
        print(f"{name:8s} accuracy {results[name]:.4f} on {len(ds)} images of {data}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(checkpoint=args.checkpoint, data=data, accuracy=results), f, indent=2)
    return 0


def visualize(checkpoint, index=0, out="runs/visualize", data=None):
    """Route test digit ``index`` through a trained model; write the routing pictures of every routed layer.

    Returns ``{layer name: {"entropy": path, "histogram": path, "bipartite": path}}``.
    """
    import torch

    from .train import UsageError, load_data, load_model
    from .viz import routing_report

    model, ckpt = load_model(checkpoint)
    splits = load_data(data or ckpt.get("data", "mnist5k"), ckpt.get("image_size"))
    if not 0 <= index < len(splits.test):
        raise UsageError(f"--index must be in [0, {len(splits.test)}); got {index}")
    x, y = splits.test[index]
    with torch.no_grad():
        layers = model.routing(x.unsqueeze(0))
    if not layers:
        raise UsageError(f"{checkpoint}: this model has no routed capsule layers to visualize")
    paths = {}
    for name, g, result, strength in layers:
        paths[name] = routing_report(g, result, os.path.join(out, name), parent_strength=strength, sample=0)
    with open(os.path.join(out, "digit.json"), "w") as f:
        json.dump(dict(index=index, label=int(y) if y.dim() == 0 else y.tolist(), layers=paths), f, indent=2)
    return paths


def _visualize(args):
    paths = visualize(args.checkpoint, args.index, args.out, args.data)
    for name, files in paths.items():
        for kind, path in files.items():
            print(f"{name:10s} {kind:9s} {path}")
    return 0


def reconstruction_grid(model, dataset, path, n=16):
    """Save a PNG: ``n`` evenly spaced test digits (upper rows) above their reconstructions (lower rows)."""
    import torch
    from matplotlib.figure import Figure

    n = min(n, len(dataset))
    idx = torch.linspace(0, len(dataset) - 1, n).round().long()  # spread over the class-sorted split
    x = dataset.images[idx]
    with torch.no_grad():
        out = model(x)
        rec, pred = model.reconstruct(out), model.scores(out).argmax(1)
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * 1.1, rows * 2.3), layout="constrained")
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        for k, (img, title) in enumerate(((x, "digit {}"), (rec, "pred {}"))):
            ax = axes[2 * r + k, c]
            ax.set_axis_off()
            if i < n:
                ax.imshow(img[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                label = int(dataset.labels[idx[i]]) if k == 0 else int(pred[i])
                ax.set_title(title.format(label), fontsize=8)
    fig.suptitle("test digits (upper) and CapsNet reconstructions (lower)", fontsize=9)
    fig.savefig(path, dpi=100)
    return path


def _demo(args):
    from .train import load_model, train

    print("dgl-capsules demo: a small CapsNet learns the 5,000 bundled MNIST digits "
          "(train 3,500 / val 500 / test 1,000)")
    metrics = train(model="capsnet", data="mnist5k", epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, lr_decay=args.lr_decay, shift=args.shift, seed=args.seed, out=args.out,
                    resume=args.resume, preset="small", progress=not args.quiet)
    model, _ = load_model(os.path.join(args.out, "model.pt"))
    from .data import mnist5k

    grid = reconstruction_grid(model, mnist5k().test, os.path.join(args.out, "reconstructions.png"))
    print(f"reconstructions  {grid}")
    try:
        paths = visualize(os.path.join(args.out, "model.pt"), args.index, os.path.join(args.out, "routing"))
    except ImportError as e:  # the visualisation package is optional at this point
        print(f"routing pictures skipped: {e}")
    else:
        for name, files in paths.items():
            for kind, path in files.items():
                print(f"{name:10s} {kind:9s} {path}")
    print(f"test accuracy {metrics['test_accuracy']:.2%} after {metrics['epochs']} epochs, "
          f"{metrics['seconds']:.0f}s of training")
    return 0


def build_parser():
    from .train import MODELS

    parser = argparse.ArgumentParser(prog="dgl-capsules", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train the small CapsNet on mnist5k and draw its routing (make demo)")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--lr", type=float, default=2e-3)
    demo.add_argument("--lr-decay", type=float, default=0.9)
    demo.add_argument("--shift", type=int, default=2, help="random shifts of up to this many pixels")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--index", type=int, default=0, help="test digit whose routing is drawn")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--resume", action="store_true")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    rd = sub.add_parser("route-demo", help="route a generated planted-cluster problem (seconds)")
    rd.add_argument("--children", type=int, default=1152)
    rd.add_argument("--parents", type=int, default=10)
    rd.add_argument("--batch", type=int, default=8)
    rd.add_argument("--iters", type=int, default=5)
    rd.add_argument("--seed", type=int, default=0)
    rd.set_defaults(func=_route_demo)

    tr = sub.add_parser("train", help="train a model; writes OUT/checkpoint.pt, model.pt, metrics.json")
    tr.add_argument("--model", default="capsnet", help=f"one of {', '.join(MODELS)}")
    tr.add_argument("--data", default="mnist5k",
                    help="mnist5k, mnist:PATH (IDX files), smallnorb:PATH or multi:SPEC (MultiMNIST pairs)")
    tr.add_argument("--preset", default="small", help="model size: small, paper or tiny")
    tr.add_argument("--width", type=float, default=None, help="CNN width multiplier (default: match CapsNet)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="replace one setting of the preset, e.g. --set stem_stride=1 (repeatable)")
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--lr-decay", type=float, default=1.0, help="learning rate factor per epoch")
    tr.add_argument("--shift", type=int, default=0, help="random shifts of up to this many pixels")
    tr.add_argument("--rotate", type=float, default=0.0, help="random rotations of up to this many degrees")
    tr.add_argument("--scale", type=float, default=0.0, help="random scalings in [1 - SCALE, 1 + SCALE]")
    tr.add_argument("--ema", type=float, default=0.0,
                    help="validate and keep a moving average of the weights with this decay per step (e.g. 0.995)")
    tr.add_argument("--image-size", type=int, default=None, help="pad images to this side (e.g. 40)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default="runs/train")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="accuracy of a trained model on clean, affine or MultiMNIST test sets")
    ev.add_argument("--checkpoint", required=True, help="OUT/model.pt or OUT/checkpoint.pt of a run")
    ev.add_argument("--data", default=None, help="data spec (default: the one it was trained on)")
    ev.add_argument("--on", nargs="+", default=["test"], help="test, affine (40x40 affNIST-style), multi")
    ev.add_argument("--seed", type=int, default=0, help="seed of the generated affine / multi sets")
    ev.add_argument("--json", default=None, help="also write the accuracies to this file")
    ev.set_defaults(func=_evaluate)

    vi = sub.add_parser("visualize", help="routing pictures of one test digit through a trained model")
    vi.add_argument("--checkpoint", required=True)
    vi.add_argument("--index", type=int, default=0)
    vi.add_argument("--out", default="runs/visualize")
    vi.add_argument("--data", default=None)
    vi.set_defaults(func=_visualize)
    return parser


def main(argv=None):
    """Run the command; a bad value (unknown name, missing file) prints one line and returns 2."""
    from .train import UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, FileNotFoundError) as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
