"""EM routing of a convolutional capsule layer: sparse graph vs dense child x parent arrays with a mask.

A ConvCaps layer (3x3 kernel, stride 2, 8 child and 8 parent types) on
input grids from 6x6 to 20x20. The graph path is
:func:`dgl_capsules.routing.em_routing` on
:func:`dgl_capsules.conv_capsule_graph`: its cost follows the number of
edges, ``Ho * Wo * 9 * A * C``. The dense path is the same Procedure 1 over
every (child, parent) pair, ``(B, H*W*A, Ho*Wo*C, 16)`` arrays with a mask
for the pairs outside the receptive fields (how one routes exactly without
a graph): its cost follows children x parents, which grows with the square
of the grid area. Votes and activations are the inputs (made outside the
timing); three EM iterations; the batch is in the feature dimensions.

Times are the minimum over repeats, in the same run; "fwd+bwd" also
back-propagates a weighted sum of the parent poses and activations to the
votes and activations.

Run ``python bench/bench_em_conv.py [--quick]``; ``run(quick)`` returns the
rows for ``bench/run_all.py``.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dgl_capsules as dc  # noqa: E402
from dgl_capsules.routing.em import default_inverse_temperatures  # noqa: E402

KERNEL, STRIDE, IN_TYPES, OUT_TYPES, BATCH, N_ITERS = 3, 2, 8, 8, 4, 3


def dense_masked_em(V, a, mask, beta_u, beta_a, lambdas, eps=1e-6):
    """Procedure 1 over all pairs: V (B, I, J, P), a (B, I), mask (I, J) -> mu (B, J, P), act (B, J)."""
    m = mask.to(V.dtype)
    R = (m / m.sum(1, keepdim=True).clamp_min(1)).expand(V.shape[0], -1, -1)  # (B, I, J)
    log_2pi = math.log(2 * math.pi)
    for t, lam in enumerate(lambdas):
        Rp = R * a[:, :, None]  # (B, I, J)
        S = Rp.sum(1).clamp_min(torch.finfo(V.dtype).tiny)  # (B, J)
        mu = torch.einsum("bij,bijp->bjp", Rp, V) / S[..., None]  # (B, J, P)
        sq = (V - mu[:, None]).square()  # (B, I, J, P)
        sigma2 = torch.einsum("bij,bijp->bjp", Rp, sq) / S[..., None] + eps
        log_sigma2 = sigma2.log()
        logit = lam * (beta_a - S * (V.shape[-1] * beta_u + 0.5 * log_sigma2.sum(-1)))  # (B, J)
        act = torch.sigmoid(logit)
        if t + 1 == len(lambdas):
            break
        node = torch.nn.functional.logsigmoid(logit) - 0.5 * (log_sigma2 + log_2pi).sum(-1)  # (B, J)
        logp = torch.einsum("bijp,bjp->bij", sq, -0.5 / sigma2) + node[:, None]  # (B, I, J)
        R = torch.softmax(logp.masked_fill(~mask, float("-inf")), dim=2).nan_to_num(0.0)
    return mu, act


def _time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _case(side, repeats, dense_too=True):
    g = dc.conv_capsule_graph((side, side), KERNEL, STRIDE, IN_TYPES, OUT_TYPES)
    n_i, n_j, n_e = g.num_src_nodes(), g.num_dst_nodes(), g.num_edges()
    votes = torch.randn(n_e, BATCH, 16)
    a_in = torch.rand(n_i, BATCH)
    beta_u, beta_a = torch.zeros(n_j), torch.zeros(n_j)
    lambdas = default_inverse_temperatures(N_ITERS)
    w_mu, w_a = torch.randn(n_j, BATCH, 16), torch.randn(n_j, BATCH)

    def graph(backward):
        v, a = votes.requires_grad_(backward), a_in.requires_grad_(backward)
        r = dc.routing.em_routing(g, v, a, beta_u, beta_a, n_iters=N_ITERS, inverse_temperatures=lambdas)
        if backward:
            ((r.poses * w_mu).sum() + (r.activations * w_a).sum()).backward()

    row = {"grid": f"{side}x{side}", "edges": n_e, "children_x_parents": n_i * n_j,
           "graph_fwd_ms": _time(lambda: graph(False), repeats),
           "graph_fwd_bwd_ms": _time(lambda: graph(True), repeats)}
    if dense_too:
        src, dst = g.edges()
        mask = torch.zeros(n_i, n_j, dtype=torch.bool)
        mask[src, dst] = True
        V = torch.zeros(BATCH, n_i, n_j, 16)
        V[:, src, dst] = votes.detach().transpose(0, 1)
        a_dense = a_in.detach().T.contiguous()
        dw_mu, dw_a = w_mu.transpose(0, 1), w_a.T

        def dense(backward):
            v, a = V.requires_grad_(backward), a_dense.requires_grad_(backward)
            mu, act = dense_masked_em(v, a, mask, beta_u, beta_a, lambdas)
            if backward:
                ((mu * dw_mu).sum() + (act * dw_a).sum()).backward()

        # Same maths: check before timing.
        r = dc.routing.em_routing(g, votes.detach(), a_in.detach(), beta_u, beta_a, n_iters=N_ITERS,
                                  inverse_temperatures=lambdas)
        mu, _ = dense_masked_em(V.detach(), a_dense, mask, beta_u, beta_a, lambdas)
        torch.testing.assert_close(r.poses, mu.transpose(0, 1), rtol=1e-3, atol=1e-4)
        row["dense_fwd_ms"] = _time(lambda: dense(False), repeats)
        row["dense_fwd_bwd_ms"] = _time(lambda: dense(True), repeats)
        row["speedup_fwd"] = row["dense_fwd_ms"] / row["graph_fwd_ms"]
        row["speedup_fwd_bwd"] = row["dense_fwd_bwd_ms"] / row["graph_fwd_bwd_ms"]
    return row


def run(quick=False, threads=1):
    """Rows of the table, one per grid; ``quick`` runs fewer grids and repeats.

    ``threads`` sets torch's (and with it DGL's) OpenMP threads for the run and
    restores them after. One thread by default: on a loaded machine a thread
    that is not scheduled stalls every OpenMP barrier, which swamps the
    measurement of the kernels themselves.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(before)


def _run(quick):
    sides = (6, 10, 14) if quick else (6, 8, 10, 12, 14, 16, 20)
    repeats = 2 if quick else 5
    return [_case(s, repeats) for s in sides]


def format_table(rows):
    head = (f"{'grid':>6} {'edges':>8} {'child x par':>12} {'graph fwd':>10} {'dense fwd':>10} {'ratio':>6}"
            f" {'graph f+b':>10} {'dense f+b':>10} {'ratio':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['grid']:>6} {r['edges']:>8} {r['children_x_parents']:>12} {r['graph_fwd_ms']:>8.1f}ms"
            f" {r['dense_fwd_ms']:>8.1f}ms {r['speedup_fwd']:>5.1f}x {r['graph_fwd_bwd_ms']:>8.1f}ms"
            f" {r['dense_fwd_bwd_ms']:>8.1f}ms {r['speedup_fwd_bwd']:>5.1f}x"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer grids and repeats")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads (default 1)")
    args = p.parse_args(argv)
    print(f"EM routing, ConvCaps {KERNEL}x{KERNEL} stride {STRIDE}, {IN_TYPES} -> {OUT_TYPES} types, "
          f"batch {BATCH}, {N_ITERS} iterations, float32, {args.threads} thread(s)")
    print(format_table(run(args.quick, args.threads)))


if __name__ == "__main__":
    main()
