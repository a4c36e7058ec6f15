"""Self-attention routing (Efficient-CapsNet) on the shared graph vs its dense formulation, side by side.

Case: Efficient-CapsNet's class capsules, 16 children -> 10 parents, 16-D
votes, one pass; batches 16 (its training batch), 64 and 256.

- ``routing``: :func:`dgl_capsules.routing.self_attention_routing` on
  ``capsule_graph(16, 10)`` with votes ``(|E|, B, 16)`` and a bias ``(|E|,)``
  against the published tensor operations written densely: votes
  ``(B, J, I, D)``, logits ``einsum('bjid,bjd->bji', u, u.sum(2)) / sqrt(D)``,
  softmax over the parents, ``s = einsum('bjid,bji->bjd', u, c + b)``.
- ``layer``: a whole :class:`dgl_capsules.nn.SelfAttentionCaps` (votes +
  routing) against the same layer written densely (``einsum('bik,jikd->bjid',
  x, W)`` then the dense routing), same weights.

Both use :func:`dgl_capsules.functional.efficient_squash`. Timing: both
formulations run in one process with the same torch threads, interleaved
(dense, graph, dense, graph, ...), and the minimum of the repeats is kept;
``fwd+bwd`` is forward, ``sum()`` and backward. Ratio = graph / dense (below 1
means the graph path is faster).

Run ``python bench/bench_self_attention.py [--quick]``; ``run(quick)`` returns
the rows for ``bench/run_all.py``.
"""
import argparse
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import dgl_capsules as dc  # noqa: E402
from bench_dynamic import _time  # noqa: E402  (one timed call: forward, and sum().backward() if asked)
from dgl_capsules.functional import efficient_squash  # noqa: E402

N_IN, N_OUT, IN_DIM, DIM = 16, 10, 8, 16


def dense_routing(u, b):
    """The published FCCaps routing: votes ``u`` (B, J, I, D), bias ``b`` (J, I) -> parents (B, J, D)."""
    logits = torch.einsum("bjid,bjd->bji", u, u.sum(2)) / math.sqrt(u.shape[-1])
    c = torch.softmax(logits, dim=1) + b  # over the parents, then the bias
    return efficient_squash(torch.einsum("bjid,bji->bjd", u, c))


def _routing_case(batch):
    """(graph fn, graph input, dense fn, dense input) for the routing-only case."""
    g = dc.capsule_graph(N_IN, N_OUT)
    src, dst = g.edges()
    gen = torch.Generator().manual_seed(0)
    u = 0.3 * torch.randn(batch, N_OUT, N_IN, DIM, generator=gen)  # (B, J, I, D)
    b = 0.1 * torch.randn(N_OUT, N_IN, generator=gen)
    votes = u[:, dst, src].transpose(0, 1).contiguous()  # (E, B, D), the graph's edge order
    bias = b[dst, src]

    def graph(x):
        return dc.routing.self_attention_routing(g, x, bias).poses

    return graph, votes, lambda x: dense_routing(x, b), u


def _layer_case(batch):
    layer = dc.nn.SelfAttentionCaps(N_IN, N_OUT, IN_DIM, DIM)
    with torch.no_grad():
        layer.bias.normal_(std=0.1)
    x = torch.randn(batch, N_IN, IN_DIM, generator=torch.Generator().manual_seed(0))

    def dense(x):
        return dense_routing(torch.einsum("bik,jikd->bjid", x, layer.weight), layer.bias)

    return layer, x, dense, x


CASES = {"routing": _routing_case, "layer": _layer_case}


def time_case(case, batch, repeats):
    """Min ms of graph and dense, fwd and fwd+bwd, interleaved in this process."""
    graph, x_graph, dense, x_dense = CASES[case](batch)
    want = dense(x_dense)
    got = graph(x_graph)
    got = got.transpose(0, 1) if case == "routing" else got  # (N_dst, B, D) -> (B, J, D)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # the two formulations agree
    best = {}
    for backward in (False, True):
        for _ in range(repeats):
            for name, fn, x in (("dense", dense, x_dense), ("graph", graph, x_graph)):
                key = (name, backward)
                best[key] = min(best.get(key, float("inf")), _time(fn, x, backward))
    return best


def run(quick=False):
    """Rows for the table: one per (case, batch); ``quick``: batch 64 only, fewer repeats."""
    batches = (64,) if quick else (16, 64, 256)
    rows = []
    for case in CASES:
        for batch in batches:
            t = time_case(case, batch, 20 if quick else 200)
            rows.append({
                "case": f"{case} {N_IN}->{N_OUT} D={DIM}",
                "batch": batch,
                "dense fwd ms": round(t["dense", False], 3),
                "graph fwd ms": round(t["graph", False], 3),
                "fwd ratio": round(t["graph", False] / t["dense", False], 2),
                "dense fwd+bwd ms": round(t["dense", True], 3),
                "graph fwd+bwd ms": round(t["graph", True], 3),
                "fwd+bwd ratio": round(t["graph", True] / t["dense", True], 2),
            })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row.get(k, "")) for k in keys))


if __name__ == "__main__":
    main()
