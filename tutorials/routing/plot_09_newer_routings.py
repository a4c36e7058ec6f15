"""
Newer routings: vector routing and inverted dot-product attention
=================================================================

Two routing families from 2020-2022 run on the same capsule graphs as the
older three:

* **inverted dot-product attention routing** (Tsai et al., ICLR 2020): the
  parents' poses start from uniform routing; then every child's couplings
  follow the agreement of its votes with the parents' poses, a softmax over
  its parents, and each pose is the LayerNorm of its weighted votes;
* **vector routing** (Heinsen 2022, "An Algorithm for Routing Vectors in
  Sequences"): votes are factorised and never formed, every per-edge
  quantity is a scalar (the shares :math:`R`, the data used and ignored, the
  credit :math:`\\phi`), and the parents win children by *predicting* them.
  :class:`dgl_capsules.nn.EfficientVectorRouting` is a drop-in for the
  published class.

**What you will learn**

* how to call both from :mod:`dgl_capsules.routing` and what they return;
* how their couplings' entropy falls over the iterations next to dynamic,
  EM and Heinsen (2019) routing, drawn by :mod:`dgl_capsules.viz` with no
  family-specific code;
* the two normalisations of the inverted routing's convolutional layer;
* the drop-in layer on a ragged batch of sequences, with its credit matrix.

**Run time:** a few seconds on a laptop CPU.
"""

# %%
# One routing problem for every family
# ------------------------------------
#
# :func:`dgl_capsules.data.planted_clusters` makes votes from 48 children to
# 4 parents in which each child agrees with the other children of its own
# parent. Dynamic, EM, Heinsen (2019) and inverted dot-product routing take
# these votes as they are.

import math

import matplotlib.pyplot as plt
import torch

import dgl_capsules as dc
from dgl_capsules import viz
from dgl_capsules.routing import get_routing

torch.manual_seed(0)
problem = dc.data.planted_clusters(n_in=48, n_out=4, dim=16, batch=8, noise=0.3, seed=1)
g, votes = problem.graph, problem.votes  # votes (|E|, 8, 16)
n_iters = 6
ones = torch.ones(g.num_src_nodes(), 8)
results = {
    "dynamic": dc.routing.dynamic_routing(g, votes, n_iters=n_iters, return_trace=True),
    "em": dc.routing.em_routing(g, votes, ones, 0.0, 0.0, n_iters=n_iters, inverse_temperatures=[1.0] * n_iters,
                                return_trace=True),
    "heinsen": dc.routing.heinsen_routing(g, votes[..., None, :], torch.zeros(48, 8), 0.0, 0.0, n_iters=n_iters,
                                          return_trace=True),
    "inverted-dot-product": dc.routing.inverted_routing(g, votes, n_iters=n_iters, return_trace=True),
}
r = results["inverted-dot-product"]
print("inverted dot-product routing:", r)

# %%
# Vector routing routes child *vectors*
# -------------------------------------
#
# Vector routing takes the children themselves, :math:`x_i`, with a score
# logit :math:`a_i`, and the parameters of the published class's four maps:
# the votes :math:`V_{ij} = (\tilde x_i \odot w^{F1}_j) W^{F2} + b^{F2}_j`
# (with :math:`\tilde x_i = x_i / \sqrt{n}`), the parents' predictions of
# their children :math:`P_j = (\mathrm{N}(x^{out}_j) W^{G1}) \odot w^{G2}_j +
# b^{G2}_j` and the similarity :math:`\log f((x_i \cdot P_j) w^S_{ij} +
# b^S_{ij})`. Here the children of parent ``j`` lie around a direction
# :math:`u_j`, and parent ``j`` starts out predicting :math:`u_j` (its
# :math:`b^{G2}_j`): the parents then share the children by how well they
# predict them. Since :math:`\log f` saturates at 0 for good predictions, it
# is the negative bias :math:`b^S = -4` that makes a poor prediction cost a
# share (in a trained layer :math:`w^S` and :math:`b^S` are learned).

n_in, n_out, d = 48, 4, 16
gen = torch.Generator().manual_seed(2)
u = torch.nn.functional.normalize(torch.randn(n_out, d, generator=gen), dim=-1)  # one direction per parent
group = torch.arange(n_in) % n_out
x = 2 * u[group][:, None] + 0.6 * torch.randn(n_in, 8, d, generator=gen)  # (children, batch, d)
a = torch.zeros(n_in, 8)  # every child half present: f(a) = 1/2
eye = torch.eye(d)
vector = dc.routing.vector_routing(
    g, x, a, 1.0, 0.0,  # beta_use = 1, beta_ign = 0: a parent gains what it uses
    torch.ones(n_out, d), eye, torch.zeros(n_out, d),  # F: V_ij = x~_i
    0.1 * eye, torch.ones(n_out, d), 2 * u,  # G: P_j = 0.1 N(x_out_j) + 2 u_j
    1.0, -4.0, n_iters=n_iters, return_trace=True)  # w_s, b_s
results["vector"] = vector
print("vector routing:", vector)

# %%
# Their couplings' entropy, side by side
# --------------------------------------
#
# :func:`dgl_capsules.viz.plot_entropy` reads any :class:`~dgl_capsules.routing.RoutingResult`;
# the labels come from the registry. Each family starts uniform
# (:math:`\log 4 \approx 1.39` nats) and decides at its own pace. Vector
# routing and inverted routing use their first iteration to form the parents
# (uniform shares) and decide in the second: the papers use 2 iterations.
# The vector routing curve comes from its own inputs, not the votes above.
#
# Inverted routing's agreement :math:`p_j \cdot v_{ij} / \sqrt{D}` compares
# votes with LayerNormed poses (of length :math:`\sqrt{D}`), so it grows with
# the length of the votes: these votes have length about 1 and only tilt the
# couplings; four times longer ones decide.

results["inverted, votes x 4"] = dc.routing.inverted_routing(g, 4 * votes, n_iters=n_iters, return_trace=True)
fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
for name, res in results.items():
    label = get_routing(name).label if name in dc.routing.list_routings() else name
    viz.plot_entropy(g, res, ax=ax, label=label, capsize=3)
    mean, _ = viz.entropy_curve(g, res)
    print(f"{label:<42}", " ".join(f"{h:.2f}" for h in mean))
ax.set_title("48 -> 4 capsules, six iterations")
_ = ax.set_ylim(bottom=0)

# %%
# Vector routing's children choosing parents
# ------------------------------------------
#
# The bipartite animation works on its trace as on any other; parents are
# sized by the coupling mass they receive.

ani = viz.animate_bipartite(g, vector, sample=0, interval=700, title="Vector routing, 48 -> 4")

# %%
# Two normalisations of a convolutional layer
# -------------------------------------------
#
# The paper's convolutional capsule layer normalises a child separately in
# every kernel window that holds it: each of its copies spreads over the
# parent types at one position. :class:`~dgl_capsules.nn.InvertedConvCaps`
# offers that (``normalise="window"``, routed on
# :func:`~dgl_capsules.nn.inverted.window_capsule_graph`) and the exact
# normalisation over all the child's parents in all windows
# (``normalise="overlap"``, on :func:`~dgl_capsules.conv_capsule_graph`,
# as EM routing's ``ConvCaps``). On the convolutional graph the per-window
# couplings of a child sum to the number of windows that hold it.

poses = torch.randn(2, 7, 7, 4, 16)
for normalise in ("window", "overlap"):
    layer = dc.nn.InvertedConvCaps(4, 8, kernel=3, stride=1, normalise=normalise)
    out, r = layer(poses, return_routing=True)
    conv = dc.conv_capsule_graph((7, 7), 3, 1, 4, 8)  # same edges, one node per child
    src = conv.edges()[0]
    per_child = torch.zeros(conv.num_src_nodes(), 2).index_add_(0, src, r.coupling)
    print(f"{normalise:>8}: output {tuple(out.shape)}, a child's couplings sum to "
          f"{per_child.min().item():.0f} .. {per_child.max().item():.0f}")

# %%
# The drop-in layer on a ragged batch
# -----------------------------------
#
# :class:`~dgl_capsules.nn.EfficientVectorRouting` keeps the published
# constructor, parameters and outputs. With ``mask=`` (or
# :meth:`~dgl_capsules.nn.EfficientVectorRouting.forward_ragged`) every
# sequence is routed on its real inputs alone and scaled by its own length;
# the published class scales by the padded length. With ``return_dict`` it
# also returns the credit assigned to every input by every output,
# :math:`\phi`.

layer = dc.nn.EfficientVectorRouting(n_inp=-1, n_out=5, d_inp=32, d_out=16, return_dict=True)
lengths = [7, 30, 12]
x_pad = torch.randn(3, 30, 32)
mask = torch.arange(30) < torch.tensor(lengths)[:, None]
out = layer(x_pad, mask=mask)
alone = layer(x_pad[0, :7])
print("phi:", tuple(out["phi"].shape), " x_out:", tuple(out["x_out"].shape))
print("sequence 0 in the batch equals it alone:", torch.allclose(out["x_out"][0], alone["x_out"], atol=1e-5))
unmasked = layer(x_pad)  # the published behaviour: padding is routed as data
print("without the mask it does not:", torch.allclose(unmasked["x_out"][0], alone["x_out"], atol=1e-5))
print(f"uniform entropy, log 5 = {math.log(5):.2f}")
