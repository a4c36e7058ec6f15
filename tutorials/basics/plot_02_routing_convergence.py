"""
Watching routing converge
=========================

Routing is iterative: every child starts spread evenly over its parents and,
iteration by iteration, moves its vote to the parents it agrees with. The
:mod:`dgl_capsules.viz` module turns the *trace* that every routing function
records (``return_trace=True``) into pictures of that process.

**What you will learn**

* how to record a routing trace and read the per-child coupling entropy
  (:func:`dgl_capsules.viz.plot_entropy`);
* how the whole distribution of couplings moves from ``1/#parents`` to 0 and
  1 (:func:`dgl_capsules.viz.animate_histogram`);
* how to watch the children pick their parents on the graph itself
  (:func:`dgl_capsules.viz.animate_bipartite`), for a small layer and for
  CapsNet's 1152 -> 10 layer;
* how dynamic and EM routing compare on the same votes.

The animations are embedded in this page: press play, or drag the slider.

**Run time:** about 10 seconds on a laptop CPU.
"""

# %%
# A routing problem with a known answer
# -------------------------------------
#
# :func:`dgl_capsules.data.planted_clusters` makes votes in which each child's
# vote for its own parent agrees with the other children of that parent,
# while its votes for the other parents point in random directions. We route
# 48 children to 4 parents for a batch of 8 samples, for 6 iterations, and
# keep the trace.

import math

import matplotlib.pyplot as plt
import torch

import dgl_capsules as dc
from dgl_capsules import viz

problem = dc.data.planted_clusters(n_in=48, n_out=4, dim=16, batch=8, noise=0.3, seed=1)
g, votes = problem.graph, problem.votes
r = dc.routing.dynamic_routing(g, votes, n_iters=6, return_trace=True)
print("iterations recorded:", len(r.trace), "couplings of shape", tuple(r.trace[0].shape))

# %%
# Coupling entropy
# ----------------
#
# The entropy of child *i*'s couplings, :math:`H_i = -\sum_j c_{ij} \log c_{ij}`,
# is :math:`\log 4 \approx 1.39` nats while it is spread evenly over the four
# parents and 0 once it sends everything to one parent. Its mean and standard
# deviation over all children and samples summarise each iteration. Noisier
# votes agree less, so routing decides more slowly:

fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
for noise in (0.1, 0.3, 1.0):
    p = dc.data.planted_clusters(n_in=48, n_out=4, dim=16, batch=8, noise=noise, seed=1)
    rn = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=6, return_trace=True)
    viz.plot_entropy(p.graph, rn.trace, ax=ax, label=f"noise {noise}", capsize=3)
ax.set_title("Dynamic routing, 48 -> 4 capsules")
ax.set_ylim(bottom=0)

mean, std = viz.entropy_curve(g, r.trace)
print("mean entropy per iteration (nats):", [round(float(h), 3) for h in mean])
print(f"uniform: log 4 = {math.log(4):.3f}")

# %%
# The distribution of couplings
# -----------------------------
#
# The entropy is a summary; the histogram shows every coupling. In the first
# iteration all of them equal 1/4. Then they split: the couplings to the
# planted parents climb towards 1 and the others fall towards 0.

ani_hist = viz.animate_histogram(r.trace, g=g, sample=0, interval=700)

# %%
# Children choosing parents
# -------------------------
#
# The same trace drawn on the graph: every edge's width and opacity follow its
# coupling on one fixed scale (thin and faint at the uniform coupling
# :math:`1/4`, widest at coupling 1; the legend states it), in the colour of
# its parent, and a parent's size follows the length of its output capsule. With the children sorted by the parent they
# end up with, the four bundles untangle as routing proceeds.

lengths = r.poses.norm(dim=-1)  # (N_parent, B): the parents' "probabilities"
ani_graph = viz.animate_bipartite(g, r.trace, sample=0, parent_strength=lengths,
                                  interval=700, title="Dynamic routing, 48 -> 4")

# %%
# How often are the children right? The planted parent of child ``i`` is
# ``problem.assignment[i]``; we read each child's favourite parent off the
# final coupling.

src, dst = g.edges()
table = torch.zeros(48, 4, 8)
table[src, dst] = r.coupling  # (children, parents, batch)
chosen = table.argmax(1)  # (children, batch)
accuracy = (chosen == problem.assignment[:, None]).float().mean()
print(f"children on their planted parent after 6 iterations: {accuracy:.0%}")

# %%
# A CapsNet-sized layer
# ---------------------
#
# CapsNet routes 1152 primary capsules (32 types on a ``6 x 6`` grid) to 10
# class capsules: 11,520 edges, too many to read one by one. ``top_k`` draws
# only the most decided children (the largest final coupling), or with
# ``child_weights`` (vote lengths, activations) the children that carry most
# (tutorial 5 does that for a real digit). ``group_by="type"`` with
# ``child_types=32`` instead merges the children into one node per capsule
# type, whose edge to parent *j* carries the mean coupling of its members.

big = dc.data.planted_clusters(n_in=1152, n_out=10, dim=16, batch=1, noise=0.5, seed=0)
rb = dc.routing.dynamic_routing(big.graph, big.votes, n_iters=5, return_trace=True)
ani_big = viz.animate_bipartite(big.graph, rb.trace, top_k=60, interval=700,
                                parent_strength=rb.poses.norm(dim=-1),
                                title="1152 -> 10, the 60 most decided children")

# %%
# Dynamic versus EM routing
# -------------------------
#
# :func:`dgl_capsules.routing.em_routing` (Hinton et al. 2018) routes the same
# votes by fitting a Gaussian per parent. Its trace holds the responsibilities
# :math:`R_{ij}` used by each M-step, which the same tools plot. Here every
# child is fully active (:math:`a_i = 1`) and the inverse temperature is
# raised so that the parents' activations matter within a few iterations.

a_in = torch.ones(g.num_src_nodes(), 8)
em = dc.routing.em_routing(g, votes, a_in, beta_u=0.0, beta_a=0.0, n_iters=6,
                           inverse_temperatures=[1.0] * 6, return_trace=True)

fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
viz.plot_entropy(g, r.trace, ax=ax, label="dynamic routing", capsize=3)
viz.plot_entropy(g, em.trace, ax=ax, label="EM routing", capsize=3)
ax.set_title("Same votes, two algorithms")
_ = ax.set_ylim(bottom=0)

# %%
# To write the same pictures to files (an entropy PNG and both animations as
# GIFs) for a model's own layers, use :func:`dgl_capsules.viz.routing_report`
# or the command line: ``dgl-capsules visualize``.
