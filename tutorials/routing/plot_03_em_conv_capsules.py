"""
EM routing on convolutional capsules
====================================

In a convolutional capsule layer a child capsule lies in the receptive field
of several parent positions: one in a corner of the grid, up to
``kernel**2`` in the middle. EM routing (Hinton et al. 2018) gives each child
a responsibility :math:`R_{ij}` for each of its parents, and the
responsibilities of one child must sum to 1 over *all* of them (Gritzman
2019). Implementations that cut the grid into patches and normalise inside
each patch get this wrong: a centre child then spends nine times the vote of
a corner child.

**What you will learn**

* how :func:`dgl_capsules.routing.em_routing` runs on a
  :func:`dgl_capsules.conv_capsule_graph`, where the normalisation over all
  overlapping parents is just ``edge_softmax(norm_by="src")``;
* what the responsibilities of a corner child and of a centre child look like;
* how much vote mass each child spends with the exact normalisation and with
  a per-patch one.

**Run time:** a few seconds on a laptop CPU.
"""

# %%
# A small grid
# ------------
#
# A ``5 x 5`` grid of children with one capsule type, a ``3 x 3`` kernel with
# stride 1, and 2 parent types per output position: a ``3 x 3`` grid of
# parent positions, 18 parents. Child ids are ``(y * 5 + x)``, parent ids
# ``(y' * 3 + x') * 2 + c``.

import matplotlib.pyplot as plt
import torch

import dgl_capsules as dc

H, K, C = 5, 3, 2
g = dc.conv_capsule_graph(in_hw=(H, H), kernel=K, stride=1, in_types=1, out_types=C)
src, dst = g.edges()
print(g)
print("parents per child:\n", g.out_degrees().view(H, H))

# %%
# Votes and routing
# -----------------
#
# Each child votes with a 4x4 pose matrix (16 numbers) for each of its
# parents. We make parent type 0 at the grid centre the one whose votes agree
# (a small spread around a common pose) and give every other parent scattered
# votes, then run three EM iterations.

gen = torch.Generator().manual_seed(0)
P = 16
centre_parent = (1 * 3 + 1) * C + 0
agree = (dst == centre_parent)
votes = torch.where(agree[:, None], 1.0 + 0.05 * torch.randn(g.num_edges(), P, generator=gen),
                    torch.randn(g.num_edges(), P, generator=gen))  # (E, 16)
a_in = torch.full((H * H,), 0.9)  # child activations
r = dc.routing.em_routing(g, votes, a_in, beta_u=0.0, beta_a=0.0, n_iters=3,
                          inverse_temperatures=[1.0] * 3)
print("parent activations:", tuple(r.activations.shape), "poses:", tuple(r.poses.shape))

mass = torch.zeros(H * H).index_add_(0, src, r.coupling)
print("sum of R over each child's parents:\n", mass.view(H, H).round(decimals=4))

# %%
# A corner child versus a centre child
# ------------------------------------
#
# The corner child (0, 0) lies in one receptive field only, so it has the two
# parent types at output position (0, 0) to choose from. The centre child
# (2, 2) lies in all nine receptive fields: 18 parents. Both distribute
# exactly one unit of responsibility.


def edges_of(child):
    e = (src == child).nonzero().squeeze(1)
    labels = []
    for j in dst[e].tolist():
        pos, c = divmod(j, C)
        labels.append(f"({pos // 3},{pos % 3}) c{c}")
    return e, labels


fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained",
                         gridspec_kw={"width_ratios": [1, 5]})
for ax, (name, child) in zip(axes, [("corner child (0, 0)", 0), ("centre child (2, 2)", 12)]):
    e, labels = edges_of(child)
    ax.bar(range(len(e)), r.coupling[e], color=["tab:red" if d == centre_parent else "tab:blue"
                                               for d in dst[e].tolist()])
    ax.set_xticks(range(len(e)), labels, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title(f"{name}: {len(e)} parents, sum R = {r.coupling[e].sum():.2f}", fontsize=9)
axes[0].set_ylabel("responsibility $R_{ij}$")
_ = fig.suptitle("Responsibilities after 3 EM iterations (red: the agreeing parent)")

# %%
# The centre child sends most of its vote to the agreeing parent in red; the
# corner child is not in that parent's receptive field and splits its unit
# between the two parents it has.
#
# Exact versus per-patch normalisation
# ------------------------------------
#
# A per-patch implementation normalises each child's responsibilities over
# the parent types *at one output position*, separately for each receptive
# field it lies in: every (child, receptive field) pair spends one unit. A
# child then spends one unit per receptive field, so a centre child carries 9
# times the weight of a corner child in the M-step. We count that on the same
# graph by grouping the edges by (child, parent position) instead of by child.

patch = src * 9 + dst // C  # one group per (child, parent position)
n_patch = torch.zeros(H * H * 9).index_add_(0, patch, torch.ones(g.num_edges()))
per_patch = 1.0 / n_patch[patch]  # uniform inside each patch: sums to 1 per patch
mass_patch = torch.zeros(H * H).index_add_(0, src, per_patch)
print("vote mass per child, per patch:\n", mass_patch.view(H, H))

fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
for ax, m, title in [(axes[0], mass, "exact (dgl_capsules)"), (axes[1], mass_patch, "per patch")]:
    im = ax.imshow(m.view(H, H), vmin=0, vmax=9, cmap="magma")
    for y in range(H):
        for x in range(H):
            v = m[y * H + x].item()
            ax.text(x, y, f"{v:.0f}", ha="center", va="center",
                    color="white" if v < 5 else "black")
    ax.set_title(f"vote mass per child: {title}")
    ax.set_xticks([])
    ax.set_yticks([])
_ = fig.colorbar(im, ax=axes, shrink=0.8)

# %%
# The layer :class:`dgl_capsules.nn.ConvCaps` learns the transformation
# matrices that produce these votes and routes them exactly this way; the
# model :class:`dgl_capsules.models.MatrixCapsNet` stacks such layers.
