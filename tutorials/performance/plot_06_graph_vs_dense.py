"""
Graph versus dense: what the graph costs and what it buys
=========================================================

Routing over a DGL graph stores one vote per *edge*. A dense implementation
stores one vote per *(child, parent) pair* in a ``(n_in, n_out, B, D)``
tensor and routes with ``softmax`` and ``einsum``. For a fully connected
layer both store the same numbers; for convolutional capsules and for batches
of sequences of different lengths the dense tensor is mostly zeros or padding.

**What you will learn**

* how fast graph routing is next to a dense ``einsum`` implementation for a
  fully connected layer (CapsNet's class capsules);
* how the two scale on convolutional capsule grids, where every child has at
  most ``kernel**2`` parent positions;
* what ragged batches (:func:`dgl.batch`) save over padding.

Timings are the best of three runs on the machine that built this page (the
numbers printed below are real, and that machine may have been busy); expect
the same shape, not the same numbers, on yours.

**Run time:** a few seconds on a 2-core CPU.
"""

# %%
# Two implementations of dynamic routing
# --------------------------------------
#
# The graph one is the library's :func:`dgl_capsules.routing.dynamic_routing`.
# The dense one is the paper's procedure on a dense tensor. Where a child is
# not connected to a parent, its logit is :math:`-\infty`, so the softmax
# gives that pair a coupling of exactly 0.

import time

import dgl
import matplotlib.pyplot as plt
import torch

import dgl_capsules as dc


def dense_routing(votes, mask=None, n_iters=3):
    """Dynamic routing on dense votes ``(n_in, n_out, B, D)``; ``mask`` marks real pairs."""
    b = votes.new_zeros(votes.shape[:-1])  # (n_in, n_out, B)
    if mask is not None:
        # a child outside every receptive field has no parent (and votes 0):
        # leave its row unmasked, or its softmax would be 0/0 = NaN
        mask = mask | ~mask.any(1, keepdim=True)
        b = b.masked_fill(~mask[:, :, None], float("-inf"))
    for it in range(n_iters):
        c = torch.softmax(b, dim=1)  # over the parents of each child
        s = torch.einsum("ijb,ijbd->jbd", c, votes)  # (n_out, B, D)
        v = dc.functional.squash(s)
        if it + 1 < n_iters:
            b = b + torch.einsum("ijbd,jbd->ijb", votes, v)
    return v


def to_dense(g, votes):
    """Scatter edge votes ``(|E|, B, D)`` into ``(n_in, n_out, B, D)`` plus the pair mask."""
    src, dst = g.edges()
    n_in, n_out = g.num_src_nodes(), g.num_dst_nodes()
    dense = votes.new_zeros((n_in, n_out) + tuple(votes.shape[1:]))
    dense[src, dst] = votes
    mask = torch.zeros(n_in, n_out, dtype=torch.bool)
    mask[src, dst] = True
    return dense, mask


def ms(fn, repeats=3):
    """Best wall time of ``fn()`` over ``repeats`` runs in milliseconds, after a warm-up.

    The minimum, as :mod:`timeit` recommends: other work on the machine can only
    make a run slower, never faster."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


print("torch threads:", torch.get_num_threads())

# %%
# A fully connected layer
# -----------------------
#
# CapsNet's class-capsule layer: 1152 primary capsules vote for 10 class
# capsules with 16-D votes, here for a batch of 8 images. The graph has
# 11,520 edges and the dense tensor 11,520 pairs: the same numbers in a
# different layout. Both routes agree.

B, D = 8, 16
g = dc.capsule_graph(1152, 10)
votes = torch.randn(g.num_edges(), B, D)
dense, _ = to_dense(g, votes)
print("graph == dense:", torch.allclose(
    dc.routing.dynamic_routing(g, votes).poses, dense_routing(dense), atol=1e-5))

t_graph = ms(lambda: dc.routing.dynamic_routing(g, votes))
t_dense = ms(lambda: dense_routing(dense))
print(f"complete 1152 -> 10, batch {B}: graph {t_graph:.1f} ms, dense {t_dense:.1f} ms")
timings = {"complete\n1152 -> 10": (t_graph, t_dense)}

# %%
# On a complete layer the dense ``einsum`` is a fair competitor: it reads
# contiguous memory and needs no index arrays. The graph pays a little for its
# generality, which starts to pay back as soon as the layer is not complete.
#
# Convolutional capsules
# ----------------------
#
# In a convolutional capsule layer a child at grid position ``(y, x)`` only
# votes for the parent positions whose ``3 x 3`` receptive field contains it.
# With ``A = 8`` child types and ``C = 8`` parent types on an ``H x H`` grid
# (stride 2), the graph has ``Ho**2 * 9 * A * C`` edges, while the dense tensor
# has ``H**2 * A * Ho**2 * C`` pairs: the ratio grows with the grid.

sizes, edges, pairs = [], [], []
for hw in range(7, 34, 2):
    cg = dc.conv_capsule_graph(in_hw=(hw, hw), kernel=3, stride=2, in_types=8, out_types=8)
    sizes.append(hw)
    edges.append(cg.num_edges())
    pairs.append(cg.num_src_nodes() * cg.num_dst_nodes())

fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
ax.semilogy(sizes, pairs, "o-", label="dense pairs  (n_in x n_out)")
ax.semilogy(sizes, edges, "s-", label="graph edges")
ax.set_xlabel("child grid side H (3x3 kernel, stride 2, 8 -> 8 types)")
ax.set_ylabel("votes stored per sample")
ax.set_title("Convolutional capsules: dense storage grows with the grid squared")
ax.legend()
ax.grid(True, which="both", alpha=0.3)

print(f"{'H':>3} {'edges':>8} {'dense pairs':>12} {'ratio':>6}")
for hw, e, p in zip(sizes[::4], edges[::4], pairs[::4]):
    print(f"{hw:3d} {e:8d} {p:12d} {p / e:6.1f}")

# %%
# Now the time. The dense version must route every pair, connected or not,
# so its cost follows the pair count; the graph's follows the edge count. We
# time two small grids with a batch of 4 (the dense tensor of a ``33 x 33``
# grid would already need about 1.6 GB for four samples of 16-D votes).

B = 4
for hw in (7, 11):
    cg = dc.conv_capsule_graph(in_hw=(hw, hw), kernel=3, stride=2, in_types=8, out_types=8)
    cvotes = torch.randn(cg.num_edges(), B, D)
    cdense, cmask = to_dense(cg, cvotes)
    same = torch.allclose(dc.routing.dynamic_routing(cg, cvotes).poses,
                          dense_routing(cdense, cmask), atol=1e-5)
    t_graph = ms(lambda: dc.routing.dynamic_routing(cg, cvotes))
    t_dense = ms(lambda: dense_routing(cdense, cmask))
    n_pairs = cdense.shape[0] * cdense.shape[1]
    print(f"conv {hw}x{hw}: {cg.num_edges()} edges, {n_pairs} pairs, equal: {same}; "
          f"graph {t_graph:.1f} ms, dense {t_dense:.1f} ms")
    timings[f"conv {hw}x{hw}\n8 -> 8 types"] = (t_graph, t_dense)

# %%
# Ragged batches
# --------------
#
# A batch of 32 sequences of very different lengths, most short and a few
# long as in real text (log-normal, 4 to 400 tokens), each token a capsule
# voting for 10 output capsules. The graph route joins one complete
# graph per sequence with :func:`dgl.batch` and routes ``(|E_total|, D)`` votes
# with no padding. The dense route pads every sequence to the longest one; the
# padded children vote zero, so they change nothing but cost as much as real
# ones.

gen = torch.Generator().manual_seed(0)
lengths = (torch.randn(32, generator=gen) * 0.8 + 3.3).exp().round().clamp(4, 400)
lengths = lengths.long().tolist()
print("shortest, median, longest:", min(lengths), sorted(lengths)[16], max(lengths))
n_out = 10
t0 = time.perf_counter()
bg = dgl.batch([dc.capsule_graph(n, n_out) for n in lengths])
t_batch = 1e3 * (time.perf_counter() - t0)
rvotes = torch.randn(bg.num_edges(), D)

# the same votes, padded: sample k's children go to rows 0..len_k-1 of column k
longest = max(lengths)
padded = torch.zeros(longest, n_out, len(lengths), D)
src, dst = bg.edges()
sample = torch.repeat_interleave(torch.arange(len(lengths)), bg.batch_num_nodes("child"))
first_child = torch.cumsum(torch.tensor([0] + lengths[:-1]), 0)
row = src - first_child[sample[src]]
padded[row, dst % n_out, sample[src]] = rvotes

v_graph = dc.routing.dynamic_routing(bg, rvotes).poses.view(len(lengths), n_out, D)
v_dense = dense_routing(padded).permute(1, 0, 2)  # (B, n_out, D)
print("graph == padded dense:", torch.allclose(v_graph, v_dense, atol=1e-5))
print(f"votes stored: graph {bg.num_edges()}, padded {padded[..., 0].numel()} "
      f"({1 - bg.num_edges() / padded[..., 0].numel():.0%} padding)")
print(f"dgl.batch of {len(lengths)} cached graphs: {t_batch:.1f} ms (once per batch)")

t_graph = ms(lambda: dc.routing.dynamic_routing(bg, rvotes))
t_dense = ms(lambda: dense_routing(padded))
print(f"ragged: graph {t_graph:.1f} ms, padded dense {t_dense:.1f} ms")
timings["ragged\n32 sequences"] = (t_graph, t_dense)

# %%
# Side by side
# ------------

fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
names = list(timings)
x = torch.arange(len(names)).float()
ax.bar(x - 0.2, [timings[n][0] for n in names], 0.4, label="graph (dgl_capsules)")
ax.bar(x + 0.2, [timings[n][1] for n in names], 0.4, label="dense einsum")
ax.set_xticks(x.tolist(), names)
ax.set_yscale("log")
ax.set_ylabel("ms per routing call (best of 3)")
ax.set_title("Dynamic routing, 3 iterations, forward pass on the CPU")
ax.legend()

for name, (tg, td) in timings.items():
    print(f"{name.replace(chr(10), ' '):32s} dense / graph = {td / tg:5.2f}")

# %%
# What the graph buys
# -------------------
#
# * **One code path for any connectivity.** The same three DGL calls route a
#   complete layer, a convolutional grid and a ragged batch; the dense code
#   needs a mask for the grid and padding for the sequences.
# * **Memory and time that follow the edges.** A convolutional layer stores
#   ``kernel**2 * A * C`` votes per parent position, not one per pair of
#   capsules, so the grid can grow; the dense tensor grows with its square.
# * **No padding.** A ragged batch costs the tokens it has.
#
# For a small complete layer the dense layout can be as fast or faster, and
# the library is free to use it there: ``DESIGN.md`` allows a dense fast path
# wherever tests prove it equal to the message-passing one and a benchmark
# shows it faster. The scripts in ``bench/`` measure larger sizes and the
# backward pass.
