"""Dynamic routing on the shared graph vs the dense einsum formulation, side by side.

Case: CapsNet's DigitCaps, 1152 children -> 10 parents, 16-D votes, 3
iterations, batches 8, 64 and 256.

- ``routing``: :func:`dgl_capsules.routing.dynamic_routing` on
  ``capsule_graph(1152, 10)`` with votes ``(|E|, B, 16)`` (batch in the feature
  dims) against Procedure 1 written densely from the paper, votes
  ``(B, I, J, D)`` and ``einsum('bij,bijd->bjd', c, u_hat)`` per iteration.
- ``layer``: a whole :class:`dgl_capsules.nn.DynamicCaps` (votes + routing)
  against the same layer written densely (``u_hat = einsum('ijkd,bik->bijd',
  W, u)`` then the dense routing), same weights.

Timing: both formulations run in one process with the same torch threads,
interleaved (dense, graph, dense, graph, ...), and the minimum of the repeats
is kept; ``fwd+bwd`` is forward, ``sum()`` and backward. Ratio = graph / dense
(below 1 means the graph path is faster).

Peak memory: each (case, batch, formulation) runs forward+backward once in a
fresh subprocess; the figure is the growth of the process's peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before the call)
over its resident set at that moment, inputs and
weights already allocated, so it counts everything torch allocates for the
step (activations, gradients, temporaries), not the inputs.

Run ``python bench/bench_dynamic.py [--quick]``; ``run(quick)`` returns the
rows for ``bench/run_all.py``.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dgl_capsules as dc  # noqa: E402
from dgl_capsules.testing import dense_dynamic_routing  # noqa: E402

N_IN, N_OUT, IN_DIM, DIM, N_ITERS = 1152, 10, 8, 16, 3


def dense_routing(u_hat, n_iters=N_ITERS):
    """Sabour et al. 2017, Procedure 1, dense (:func:`dgl_capsules.testing.dense_dynamic_routing`): (B, I, J, D) -> v."""
    return dense_dynamic_routing(u_hat, None, n_iters)[0]


def _routing_case(batch):
    """(graph fn, graph input, dense fn, dense input) for the routing-only case."""
    g = dc.capsule_graph(N_IN, N_OUT)
    src, dst = g.edges()
    gen = torch.Generator().manual_seed(0)
    u_hat = 0.05 * torch.randn(batch, N_IN, N_OUT, DIM, generator=gen)  # (B, I, J, D)
    votes = u_hat[:, src, dst].transpose(0, 1).contiguous()  # (E, B, D), the graph's edge order

    def graph(x):
        return dc.routing.dynamic_routing(g, x, n_iters=N_ITERS).poses

    return graph, votes, dense_routing, u_hat


def _layer_case(batch):
    layer = dc.nn.DynamicCaps(N_IN, N_OUT, IN_DIM, DIM, n_iters=N_ITERS)
    x = torch.randn(batch, N_IN, IN_DIM, generator=torch.Generator().manual_seed(0))

    def dense(x):
        u_hat = torch.einsum("ijkd,bik->bijd", layer.weight, x)  # (B, I, J, D)
        return dense_routing(u_hat)

    return layer, x, dense, x


CASES = {"routing": _routing_case, "layer": _layer_case}


def _time(fn, x, backward):
    x = x.detach().requires_grad_(backward)
    t0 = time.perf_counter()
    out = fn(x)
    if backward:
        out.sum().backward()
    return (time.perf_counter() - t0) * 1e3


def time_case(case, batch, repeats):
    """Min ms of graph and dense, fwd and fwd+bwd, interleaved in this process."""
    graph, x_graph, dense, x_dense = CASES[case](batch)
    best = {}
    for backward in (False, True):
        for _ in range(repeats):
            for name, fn, x in (("dense", dense, x_dense), ("graph", graph, x_graph)):
                key = (name, backward)
                best[key] = min(best.get(key, float("inf")), _time(fn, x, backward))
    return best


def _status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_child(case, batch, name):
    """In a subprocess: peak RSS growth (MB) of one forward+backward."""
    graph, x_graph, dense, x_dense = CASES[case](batch)
    fn, x = (graph, x_graph) if name == "graph" else (dense, x_dense)
    x = x.detach().requires_grad_(True)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident set
    rss_before = _status_kb("VmRSS")
    fn(x).sum().backward()
    return max(0.0, (_status_kb("VmHWM") - rss_before) / 1024)


def peak_mb(case, batch, name):
    cmd = [sys.executable, os.path.abspath(__file__), "--peak", case, str(batch), name]
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick=False):
    """Rows for the table: one per (case, batch).

    ``quick``: batch 64 only, fewer repeats, no memory subprocesses.
    """
    batches = (64,) if quick else (8, 64, 256)
    rows = []
    for case in CASES:
        for batch in batches:
            repeats = 3 if quick else (5 if batch >= 256 else 9)
            t = time_case(case, batch, repeats)
            row = {
                "case": f"{case} {N_IN}->{N_OUT} D={DIM} r={N_ITERS}",
                "batch": batch,
                "dense fwd ms": round(t["dense", False], 1),
                "graph fwd ms": round(t["graph", False], 1),
                "fwd ratio": round(t["graph", False] / t["dense", False], 2),
                "dense fwd+bwd ms": round(t["dense", True], 1),
                "graph fwd+bwd ms": round(t["graph", True], 1),
                "fwd+bwd ratio": round(t["graph", True] / t["dense", True], 2),
            }
            if not quick:
                row["dense peak MB"] = round(peak_mb(case, batch, "dense"))
                row["graph peak MB"] = round(peak_mb(case, batch, "graph"))
            rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peak", nargs=3, metavar=("CASE", "BATCH", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak:
        case, batch, name = args.peak
        print(json.dumps(_peak_child(case, int(batch), name)))
        return
    rows = run(quick=args.quick)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row.get(k, "")) for k in keys))


if __name__ == "__main__":
    main()
