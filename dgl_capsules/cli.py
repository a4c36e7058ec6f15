"""The ``dgl-capsules`` command (also ``python -m dgl_capsules``)."""
import argparse
import math
import sys

__all__ = ["main"]


def _demo(args):
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


def build_parser():
    parser = argparse.ArgumentParser(prog="dgl-capsules", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the README's main job")
    demo.add_argument("--children", type=int, default=1152)
    demo.add_argument("--parents", type=int, default=10)
    demo.add_argument("--batch", type=int, default=8)
    demo.add_argument("--iters", type=int, default=5)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
