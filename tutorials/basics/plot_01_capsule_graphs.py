"""
Capsule layers as graphs
========================

A capsule layer is a bipartite graph: child capsules on one side, parent
capsules on the other, and an edge wherever a child may vote for a parent.
Routing by agreement is then a few rounds of message passing over that graph.

**What you will learn**

* how :func:`dgl_capsules.capsule_graph` lays out a fully connected capsule
  layer, and how to read its edges;
* how one iteration of dynamic routing (Sabour et al. 2017) maps onto DGL's
  built-in operations: ``edge_softmax`` normalised by source,
  ``update_all(copy_e, sum)`` and ``apply_edges(e_dot_v)``;
* that the library's :func:`dgl_capsules.routing.dynamic_routing` gives the
  same answer as your hand-written loop and as the dense formula of the paper;
* why the same code serves convolutional and ragged layers.

**Run time:** about 2 seconds on a laptop CPU.
"""

# %%
# A complete capsule graph
# ------------------------
#
# Six children, three parents, every child connected to every parent. The
# graph has one node type per layer (``"child"`` and ``"parent"``) and one
# edge type ``("child", "vote", "parent")``.

import dgl
import dgl.function as fn
import matplotlib.pyplot as plt
import networkx as nx
import torch
from dgl.ops import edge_softmax

import dgl_capsules as dc

g = dc.capsule_graph(6, 3)
print(g)

# %%
# The edges are what matters: edge ``e`` goes from child ``src[e]`` to parent
# ``dst[e]``. Every per-edge tensor in this library (votes, couplings) is
# indexed in this order. Code never assumes a particular order: it reads it
# from ``g.edges()``.

src, dst = g.edges()
for e in range(5):
    print(f"edge {e}: child {src[e].item()} -> parent {dst[e].item()}")
print("...")
print("children per parent (in-degree):", g.in_degrees().tolist())
print("parents per child (out-degree): ", g.out_degrees().tolist())

# %%
# Drawn as a bipartite graph:

nxg = nx.Graph()
nxg.add_edges_from((f"u{i}", f"v{j}") for i, j in zip(src.tolist(), dst.tolist()))
pos = {f"u{i}": (0, -i) for i in range(6)}
pos.update({f"v{j}": (1, -1 - 1.5 * j) for j in range(3)})
fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
nx.draw_networkx(
    nxg, pos, ax=ax, node_size=500, edge_color="0.7", font_color="white",
    font_size=9, node_color=["tab:orange" if n[0] == "v" else "tab:blue" for n in nxg],
)
ax.set_title("capsule_graph(6, 3): children $u_i$, parents $v_j$")
ax.axis("off")

# %%
# Votes on the edges
# ------------------
#
# A child capsule :math:`u_i` predicts each parent's pose with its own
# transformation, :math:`\hat u_{j|i} = W_{ij} u_i`. Those predictions live on
# the edges. Here we skip the learned transformation and use a generated
# problem with a known answer instead: :func:`dgl_capsules.data.planted_clusters`
# gives each child one parent whose other children it agrees with, and makes
# its votes for the other parents random.
#
# The mini-batch sits in the feature dimensions after the edge dimension:
# votes have shape ``(|E|, batch, D)``, and one graph serves the whole batch.

problem = dc.data.planted_clusters(n_in=12, n_out=3, dim=8, batch=2, seed=0)
g, votes = problem.graph, problem.votes
src, dst = g.edges()
print("votes:", tuple(votes.shape), "= (|E|, batch, D)")
print("planted parent of each child:", problem.assignment.tolist())

# %%
# Routing step by step with DGL built-ins
# ---------------------------------------
#
# Dynamic routing keeps a logit :math:`b_{ij}` on every edge, starting at 0,
# and repeats:
#
# .. math::
#
#    c_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)} b_{ij}, \qquad
#    s_j = \sum_{i \in \mathcal{N}(j)} c_{ij} \hat u_{j|i}, \qquad
#    v_j = \operatorname{squash}(s_j), \qquad
#    b_{ij} \mathrel{+}= \hat u_{j|i} \cdot v_j .
#
# Each line is one DGL call. The softmax runs over the parents of each child,
# that is over the edges that share a *source* node: ``edge_softmax`` with
# ``norm_by="src"``. The weighted sum gathers edge messages at their
# destination: ``update_all(copy_e, sum)``. The agreement is a dot product of
# an edge feature with a destination-node feature: ``apply_edges(e_dot_v)``.


def route_by_hand(g, votes, n_iters=3):
    """Dynamic routing with DGL built-ins; returns poses and all couplings."""
    couplings = []
    with g.local_scope():  # leave nothing behind on the shared graph
        g.edata["u_hat"] = votes  # (E, B, D)
        b = votes.new_zeros(votes.shape[:-1])  # (E, B)
        for it in range(n_iters):
            # softmax over the edges leaving each child: its parents
            c = edge_softmax(g, b, norm_by="src")  # (E, B)
            couplings.append(c)
            g.edata["m"] = c.unsqueeze(-1) * votes  # (E, B, D)
            g.update_all(fn.copy_e("m", "m"), fn.sum("m", "s"))  # s_j: (N_parent, B, D)
            v = dc.functional.squash(g.dstdata["s"])  # (N_parent, B, D)
            if it + 1 < n_iters:
                g.dstdata["v"] = v
                g.apply_edges(fn.e_dot_v("u_hat", "v", "agree"))  # (E, B, 1)
                b = b + g.edata["agree"].squeeze(-1)
    return v, couplings


v_hand, c_hand = route_by_hand(g, votes, n_iters=5)
print("parent poses:", tuple(v_hand.shape), "= (N_parent, batch, D)")
lengths = v_hand[:, 0].norm(dim=-1)
print("parent lengths (sample 0):", [round(x, 3) for x in lengths.tolist()])

# %%
# The couplings of each child should move towards its planted parent. We turn
# the per-edge couplings into a children x parents table by indexing with
# ``src`` and ``dst`` (for a complete graph that table has no holes) and sort
# the children by their planted parent:

order = torch.argsort(problem.assignment, stable=True)  # rows grouped by planted parent
fig, axes = plt.subplots(1, 3, figsize=(8, 3.8), sharey=True, layout="constrained")
for ax, it in zip(axes, (1, 3, 5)):
    table = torch.zeros(12, 3)
    table[src, dst] = c_hand[it - 1][:, 0]  # (n_in, n_out) for sample 0
    im = ax.imshow(table[order], vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_title(f"iteration {it}")
    ax.set_xlabel("parent j")
    ax.set_xticks(range(3))
axes[0].set_yticks(range(12), [f"{i} (v{problem.assignment[i].item()})" for i in order])
axes[0].set_ylabel("child i (planted parent)")
fig.colorbar(im, ax=axes, label="coupling $c_{ij}$", shrink=0.85)
_ = fig.suptitle("Couplings of sample 0 move from 1/3 to the planted parents")

# %%
# The library function
# --------------------
#
# :func:`dgl_capsules.routing.dynamic_routing` runs the same loop (with input
# checks and an optional trace of every iteration). The results agree:

r = dc.routing.dynamic_routing(g, votes, n_iters=5, return_trace=True)
print("poses equal:   ", torch.allclose(r.poses, v_hand, atol=1e-6))
print("coupling equal:", torch.allclose(r.coupling, c_hand[-1], atol=1e-6))
print("trace length:  ", len(r.trace))

# %%
# The dense formula
# -----------------
#
# For a complete layer one can also store the votes as a dense
# ``(n_in, n_out, B, D)`` tensor and write the paper's procedure with
# ``softmax`` over the parent axis and ``einsum``. Scattering the edge votes
# into that tensor with ``src`` and ``dst`` makes the two comparable whatever
# the edge order:

dense_votes = votes.new_zeros(12, 3, 2, 8)
dense_votes[src, dst] = votes  # (n_in, n_out, B, D)

b = dense_votes.new_zeros(12, 3, 2)  # (n_in, n_out, B)
for it in range(5):
    c = torch.softmax(b, dim=1)  # over the parents j of each child
    s = torch.einsum("ijb,ijbd->jbd", c, dense_votes)  # (n_out, B, D)
    v_dense = dc.functional.squash(s)
    if it + 1 < 5:
        b = b + torch.einsum("ijbd,jbd->ijb", dense_votes, v_dense)

print("poses, graph == dense:   ", torch.allclose(r.poses, v_dense, atol=1e-6))
print("couplings, graph == dense:", torch.allclose(c[src, dst], r.coupling, atol=1e-6))

# %%
# The graph version is not only a re-phrasing. Nothing in it assumes that
# every child sees every parent, so the *same* code routes layers that the
# dense tensor cannot hold without wasting most of its entries.
#
# Convolutional capsules: a sparse graph
# --------------------------------------
#
# :func:`dgl_capsules.conv_capsule_graph` connects a child at grid position
# ``(y, x)`` only to the parents whose receptive field contains it. On a
# ``6 x 6`` grid with a ``3 x 3`` kernel and stride 1, a centre child belongs to
# nine receptive fields but a corner child to one. The softmax over "its
# parents" is therefore over a different number of edges for every child, which
# ``edge_softmax(norm_by="src")`` handles without any masking.

cg = dc.conv_capsule_graph(in_hw=(6, 6), kernel=3, stride=1, in_types=1, out_types=1)
print(cg)
parents_per_child = cg.out_degrees().view(6, 6)
print(parents_per_child)

fig, ax = plt.subplots(figsize=(4, 3.6), layout="constrained")
im = ax.imshow(parents_per_child, cmap="magma")
for y in range(6):
    for x in range(6):
        n = parents_per_child[y, x].item()
        ax.text(x, y, n, ha="center", va="center", color="white" if n < 6 else "black")
ax.set_title("parents of each child\n(6x6 grid, 3x3 kernel, stride 1)")
ax.set_xticks([])
ax.set_yticks([])
fig.colorbar(im, ax=ax)

cvotes = torch.randn(cg.num_edges(), 2, 4)
cr = dc.routing.dynamic_routing(cg, cvotes, n_iters=3)
total = torch.zeros(cg.num_src_nodes(), 2).index_add_(0, cg.edges()[0], cr.coupling)
print("every child's couplings sum to 1:", torch.allclose(total, torch.ones(36, 2)))

# %%
# Ragged batches: one graph per sample
# ------------------------------------
#
# When samples have different numbers of capsules (sequences of different
# lengths, say), build one graph per sample and join them with
# :func:`dgl.batch`. The result is again a bipartite graph, its votes are
# ``(|E_total|, D)`` with no batch dimension, and nothing is padded.

lengths = [3, 7, 5]
graphs = [dc.capsule_graph(n, 2) for n in lengths]
bg = dgl.batch(graphs)
print("children per sample:", bg.batch_num_nodes("child").tolist())
print("edges:", bg.num_edges(), "=", " + ".join(str(x.num_edges()) for x in graphs))
br = dc.routing.dynamic_routing(bg, torch.randn(bg.num_edges(), 4), n_iters=3)
print("parent poses:", tuple(br.poses.shape), "= (3 samples x 2 parents, D)")

# %%
# Next: :ref:`sphx_glr_auto_tutorials_basics_plot_02_routing_convergence.py`
# watches routing converge iteration by iteration, and
# :ref:`sphx_glr_auto_tutorials_performance_plot_06_graph_vs_dense.py` measures
# what the graph costs and buys.
