"""Draw the README's picture: one capsule layer as a bipartite graph, routed by dynamic routing.

A planted-cluster problem (:func:`dgl_capsules.data.planted_clusters`: 24
children whose votes agree in groups, 4 parents) routed for five iterations:
the couplings after the first iteration (uniform) and after the last, drawn by
:func:`dgl_capsules.viz.animate_bipartite` on one fixed scale, and the mean
coupling entropy per iteration (:func:`dgl_capsules.viz.plot_entropy`).

    python tools/readme_figure.py            # writes docs/_static/readme_routing.png
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "docs" / "_static" / "readme_routing.png"


def draw(path=DEFAULT, dpi=80):
    """Write the picture to ``path`` and return it."""
    from matplotlib.figure import Figure

    import dgl_capsules as dc

    p = dc.data.planted_clusters(n_in=24, n_out=4, dim=8, noise=0.3, seed=0)
    r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=5, return_trace=True)
    fig = Figure(figsize=(13, 4.6), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=(1, 1, 1.1))
    keep = []  # the animations draw their first frame now; keep them alive until the file is written
    for ax, t in ((axes[0], 0), (axes[1], len(r.trace) - 1)):
        keep.append(dc.viz.animate_bipartite(p.graph, [r.trace[t]], ax=ax, title="24 children -> 4 parents",
                                             frame_labels=[f"iteration {t + 1} of {len(r.trace)}"]))
    dc.viz.plot_entropy(p.graph, r.trace, ax=axes[2])
    axes[2].set_title("coupling entropy per iteration", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT), help="where to write the PNG")
    args = ap.parse_args(argv)
    print(draw(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
