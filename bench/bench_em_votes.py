"""Votes of the matrix-capsule layers: one 4x4 product per edge and sample vs the layers' batched product.

The votes of a routed layer are ``V_ij = M_i W_e`` for every edge ``e = (i, j)``
and every sample. The per-edge path is the direct way to fill the edge layout:
gather each edge's child pose ``M_i`` and matrix ``W_e``, then one batched
``matmul`` of ``|E| * B`` 4x4 by 4x4 products (what ``ConvCaps.votes`` and
``ClassCaps.votes`` did before). The layers now compute all votes of a
convolutional layer with one matrix product per (kernel offset, child type),
``(Ho*Wo*B*4, 4) @ (4, C*4)`` (per child type for class capsules), and pick
each edge's vote by its features.

The layers are the routed layers of ``MatrixCapsNet.from_preset("small")`` on
28x28 images (child grids 11x11, 5x5, 3x3), batch 32, float32. Times are the
minimum over repeats, in the same run; "fwd+bwd" also back-propagates a
weighted sum of the votes to the poses and the matrices. Both paths are
checked equal before timing. The last row times a whole training step of the
net (forward, spread loss, backward) with either way of computing the votes.

Run ``python bench/bench_em_votes.py [--quick]``; ``run(quick)`` returns the
rows for ``bench/run_all.py``.
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

from bench_em_conv import _time  # noqa: E402
from dgl_capsules.graph import conv_output_size  # noqa: E402
from dgl_capsules.models import MatrixCapsNet  # noqa: E402
from dgl_capsules.nn import ConvCaps  # noqa: E402

BATCH = 32


def per_edge_votes(layer, g, poses):
    """One 4x4 product per edge and sample, in the edge order of ``g``: ``(|E|, B, 16)``."""
    b, h, w = poses.shape[:3]
    src, dst = g.edges()
    m = poses.reshape(b, -1, 4, 4).transpose(0, 1)[src]  # (E, B, 4, 4)
    if isinstance(layer, ConvCaps):
        wt = layer.weight[g.edata["w_index"]]  # (E, 4, 4)
    else:
        wt = layer.weight.view(layer.in_types, layer.n_classes, 4, 4)[src % layer.in_types, dst]
    v = torch.matmul(m, wt.unsqueeze(1))  # (E, B, 4, 4)
    if not isinstance(layer, ConvCaps) and layer.coord_add:
        cell = src // layer.in_types
        offset = v.new_zeros(len(src), 1, 4, 4)
        offset[:, 0, 0, 3] = ((cell % w).to(v.dtype) + 0.5) / w
        offset[:, 0, 1, 3] = ((cell // w).to(v.dtype) + 0.5) / h
        v = v + offset
    return v.reshape(len(src), b, 16)


def _case(name, layer, grid, repeats):
    g = layer.graph(grid)
    poses = torch.randn(BATCH, *grid, layer.in_types, 4, 4)
    weight = torch.randn(g.num_edges(), BATCH, 16)
    torch.testing.assert_close(layer.votes(g, poses), per_edge_votes(layer, g, poses), rtol=1e-5, atol=1e-5)

    def timed(votes, backward):
        p = poses.requires_grad_(backward)
        v = votes(layer, g, p)
        if backward:
            (v * weight).sum().backward()

    def batched(layer, g, p):
        return layer.votes(g, p)

    row = {"layer": name, "child grid": f"{grid[0]}x{grid[1]}", "edges": g.num_edges(), "batch": BATCH}
    for label, backward in (("fwd", False), ("fwd+bwd", True)):
        slow = _time(lambda: timed(per_edge_votes, backward), repeats)
        fast = _time(lambda: timed(batched, backward), repeats)
        row[f"per-edge {label} ms"] = slow
        row[f"batched {label} ms"] = fast
        row[f"{label} speedup"] = slow / fast
    return row


def _step_case(net, repeats):
    """A whole training step of the net (forward, spread loss, backward) with either votes."""
    x, y = torch.rand(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))

    def step():
        net.zero_grad()
        net.loss(net(x), y, step=0).backward()

    row = {"layer": "whole training step", "child grid": "28x28 image", "edges": 14400 + 5184 + 720,
           "batch": BATCH}
    layers = (net.caps1, net.caps2, net.classes)
    for layer in layers:  # the per-edge path, bound to each layer instance
        layer.votes = (lambda lay: (lambda g, p: per_edge_votes(lay, g, p)))(layer)
    try:
        slow = _time(step, repeats)
    finally:
        for layer in layers:
            del layer.votes
    fast = _time(step, repeats)
    row["per-edge fwd+bwd ms"], row["batched fwd+bwd ms"], row["fwd+bwd speedup"] = slow, fast, slow / fast
    return row


def run(quick=False, threads=1):
    """One row per routed layer of the ``small`` MatrixCapsNet; ``threads`` as in bench_em_conv."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net = MatrixCapsNet.from_preset("small")
        repeats = 2 if quick else 5
        stem = conv_output_size((28, 28), 5, net.stem_stride)
        grid1 = conv_output_size(stem, net.primary.kernel_size, net.primary.stride)  # child grid of ConvCaps1
        grid2 = conv_output_size(grid1, net.caps1.kernel, net.caps1.stride)
        grid3 = conv_output_size(grid2, net.caps2.kernel, net.caps2.stride)
        layers = (("convcaps1", net.caps1, grid1), ("convcaps2", net.caps2, grid2),
                  ("classcaps", net.classes, grid3))
        return [_case(name, layer, grid, repeats) for name, layer, grid in layers] + [_step_case(net, repeats)]
    finally:
        torch.set_num_threads(before)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads (default 1)")
    args = p.parse_args(argv)
    rows = run(args.quick, args.threads)
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.1f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys))


if __name__ == "__main__":
    main()
