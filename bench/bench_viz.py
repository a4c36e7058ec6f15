"""Time to render and save the bipartite routing animation of a 1152 -> 10 capsule layer.

CapsNet's primary-to-digit layer: 1152 children, 10 parents, 11520 edges, all
drawn (no top-k, no grouping). Dynamic routing runs on a planted-cluster
problem and records its trace; the benchmark times building the animation
(layout, one LineCollection) and saving it as a GIF through Pillow, one frame
per routing iteration, at the default 7.5 x 6.5 in, 100 dpi (750 x 650 px).

Run ``python bench/bench_viz.py [--quick]``; ``run(quick)`` returns the rows
for ``bench/run_all.py``.
"""
import argparse
import os
import sys
import tempfile
import time

import matplotlib

if "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")  # a benchmark renders to files only

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dgl_capsules as dc  # noqa: E402


def _one(n_iters, out_dir, dpi=100):
    import matplotlib.pyplot as plt

    p = dc.data.planted_clusters(n_in=1152, n_out=10, dim=16, batch=1, noise=0.3, seed=0)
    r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=n_iters, return_trace=True)
    strength = r.poses.norm(dim=-1)  # (10, 1) capsule lengths
    t0, c0 = time.perf_counter(), time.process_time()
    ani = dc.viz.animate_bipartite(p.graph, r.trace, parent_strength=strength)
    t1 = time.perf_counter()
    path = dc.viz.save_animation(ani, os.path.join(out_dir, f"bipartite_{n_iters}.gif"), dpi=dpi)
    t2, c2 = time.perf_counter(), time.process_time()
    plt.close(ani._fig)
    return {
        "bench": "viz.bipartite_gif",
        "layer": "1152->10",
        "edges": p.graph.num_edges(),
        "frames": n_iters,
        "dpi": dpi,
        "build_s": round(t1 - t0, 3),
        "save_s": round(t2 - t1, 3),
        "total_s": round(t2 - t0, 3),
        "cpu_s": round(c2 - c0, 3),
        "s_per_frame": round((t2 - t0) / n_iters, 3),
        "gif_kb": round(os.path.getsize(path) / 1024, 1),
    }


def run(quick=False):
    """Rows of timings; ``quick`` renders 3 frames only, otherwise 3 and 5."""
    with tempfile.TemporaryDirectory() as out_dir:
        return [_one(n, out_dir) for n in ((3,) if quick else (3, 5))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(quick=args.quick):
        print(", ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
