"""Ragged Heinsen routing on a dgl.batch of capsule graphs vs padding + masking with a dense formulation.

A batch of sequences of different lengths is routed to a fixed number of
parts (as the first routing of an SST-style classifier). Two ways:

- ragged: :meth:`dgl_capsules.nn.HeinsenRouting.forward_ragged`, one call on
  a :func:`dgl.batch` of per-sequence capsule graphs, no padding;
- padded: every sequence padded to the longest, pad tokens masked with score
  logit -inf (so f(a) = 0 and they take no part), routed by a dense einsum
  formulation of the same algorithm over the padded ``(B, L, J, C, H)`` votes.

Length spread 1x: every sequence has the mean length; 10x: lengths uniform
in [L/10, L]. Times are the minimum over repeats, in one process, forward and
forward + backward. ``python bench/bench_heinsen_ragged.py [--quick]``.
"""
import argparse
import time

import torch

from dgl_capsules.nn import HeinsenRouting
from dgl_capsules.testing import dense_heinsen_routing


def dense_padded(layer, a, mu):
    """The layer's routing, densely, on padded inputs ``a`` (B, L) and ``mu`` (B, L, C, D).

    The votes as the layer makes them, then :func:`dgl_capsules.testing.dense_heinsen_routing`.
    """
    V = torch.einsum("bicd,jdh->bijch", mu, layer.W[0]) + layer.B[0]  # (B, L, J, C, H)
    beta_use, beta_ign = layer.beta_use[0], layer.beta_ign[0]  # (J,)
    a_out, mu_out, sig2, _ = dense_heinsen_routing(V, a, beta_use, beta_ign, None, layer.n_iters, eps=layer.eps)
    return a_out, mu_out, sig2


def ragged(layer, a_list, mu_list):
    a_out, mu_out, sig2 = layer.forward_ragged(a_list, mu_list)
    return torch.stack(a_out), torch.stack(mu_out), torch.stack(sig2)


def padded(layer, a_list, mu_list):
    lengths = [len(a) for a in a_list]
    longest = max(lengths)
    a = torch.full((len(a_list), longest), -float("inf"))
    mu = mu_list[0].new_zeros((len(a_list), longest) + mu_list[0].shape[1:])
    for k, (x, y) in enumerate(zip(a_list, mu_list)):
        a[k, : len(x)] = x
        mu[k, : len(x)] = y
    return dense_padded(layer, a, mu)


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make_batch(batch, lengths, d_inp, seed, requires_grad):
    gen = torch.Generator().manual_seed(seed)
    a = [torch.randn(n, generator=gen).requires_grad_(requires_grad) for n in lengths]
    mu = [torch.randn(n, 1, d_inp, generator=gen).requires_grad_(requires_grad) for n in lengths]
    return a, mu


def run(quick=False, batch=32, max_len=300, d_inp=64, d_out=16, n_parts=32, threads=1):
    """Time both paths for length spreads 1x and 10x; returns one dict per (spread, pass)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick, batch, max_len, d_inp, d_out, n_parts)
    finally:
        torch.set_num_threads(saved)


def _run(quick, batch, max_len, d_inp, d_out, n_parts):
    torch.manual_seed(0)
    if quick:
        batch, max_len, repeats = 8, 100, 3
    else:
        repeats = 15
    layer = HeinsenRouting(d_cov=1, d_inp=d_inp, d_out=d_out, n_out=n_parts)
    with torch.no_grad():  # non-zero betas and biases: nothing is trivially zero
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(1)
    spreads = {
        "1x": [(max_len + max_len // 10) // 2] * batch,
        "10x": torch.randint(max_len // 10, max_len + 1, (batch,), generator=gen).tolist(),
    }
    rows = []
    for spread, lengths in spreads.items():
        a, mu = make_batch(batch, lengths, d_inp, 2, requires_grad=True)
        with torch.no_grad():  # both paths compute the same thing
            x, y = ragged(layer, a, mu), padded(layer, a, mu)
            for u, v in zip(x, y):
                torch.testing.assert_close(u, v, rtol=1e-3, atol=1e-4)
        for name, fn in [("ragged graph", ragged), ("padded dense", padded)]:
            def fwd():
                with torch.no_grad():
                    fn(layer, a, mu)

            def fwd_bwd():
                out = fn(layer, a, mu)
                sum(o.sum() for o in out).backward()

            fwd()  # warm up caches and allocator
            fwd_bwd()
            rows.append(dict(spread=spread, path=name, batch=batch, tokens=sum(lengths), padded_tokens=batch * max(lengths),
                             fwd_ms=1e3 * best_of(fwd, repeats), fwd_bwd_ms=1e3 * best_of(fwd_bwd, repeats)))
    for row in rows:
        ref = next(r for r in rows if r["spread"] == row["spread"] and r["path"] == "padded dense")
        row["fwd_vs_padded"] = row["fwd_ms"] / ref["fwd_ms"]
        row["fwd_bwd_vs_padded"] = row["fwd_bwd_ms"] / ref["fwd_bwd_ms"]
    return rows


def table(rows):
    head = f"{'spread':>6} {'path':>13} {'tokens':>7} {'padded':>7} {'fwd ms':>8} {'ratio':>6} {'fwd+bwd ms':>11} {'ratio':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['spread']:>6} {r['path']:>13} {r['tokens']:>7} {r['padded_tokens']:>7} {r['fwd_ms']:>8.1f} "
            f"{r['fwd_vs_padded']:>6.2f} {r['fwd_bwd_ms']:>11.1f} {r['fwd_bwd_vs_padded']:>6.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print("Heinsen routing, batch of sequences -> 32 parts (d_cov=1, d_inp=64, d_out=16, 3 iterations); "
          "ratio = time / padded dense time, min of repeats")
    print(table(run(quick=args.quick, threads=args.threads)))
