"""
What routing does in a trained network
======================================

On generated problems (tutorial 2) routing is easy to watch: children that
agree settle on one parent within a few iterations. This tutorial asks what
the routing algorithms do inside networks that were *trained* on data: a
CapsNet (dynamic routing), a matrix-capsule network (EM routing) and an
Efficient-CapsNet (self-attention routing) with the weights that ship with
the package, trained to the end on the full MNIST (no training here), and a
Heinsen-routed sequence classifier trained for a
few seconds on generated motif sequences. To watch routing *change* during
training, a fresh CapsNet is trained briefly at the end, and the routing of
a fixed handful of inputs is recorded after every epoch.

**What you will learn**

* :func:`dgl_capsules.viz.model_routing`: every routed layer of a model with
  its trace, its routing family and what each child carries (vote length or
  activation);
* the coupling entropy per iteration, plain and *weighted* by what children
  carry (``plot_entropy(..., weights=...)``), against the uniform level
  :math:`\\log \\#\\text{parents}`;
* bipartite pictures on the fixed edge scale (thin and faint at the uniform
  coupling, widest at coupling 1) of the children that carry most;
* how routing changes over training (:func:`~dgl_capsules.viz.record_routing`
  and :func:`~dgl_capsules.viz.animate_over_training`, also
  ``dgl-capsules train --trace-routing N``).

The shipped CapsNet and MatrixCapsNet are the ``small`` presets, the
Efficient-CapsNet is the paper's network (their test accuracies are printed
below, from the weights' metadata); the sequence classifier and the
CapsNet of the last section are trained for seconds, far from what the
README reports. Nothing here is tuned to make the pictures move.

**Run time:** about a minute on a 2-core CPU.
"""

# %%
# Setup: a small training loop that records the routing
# ------------------------------------------------------
#
# ``fit`` trains with Adam and the model's own loss and, after the
# initialisation (epoch 0) and after every epoch, records the routing of
# eight fixed validation inputs with :func:`~dgl_capsules.viz.record_routing`
# (small files, float16 couplings) and keeps the routing of the same inputs in
# memory for the plots of this page.

import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import dgl_capsules as dc
from dgl_capsules import viz
from dgl_capsules.models import CapsNet, SequenceCapsClassifier

splits = dc.data.mnist5k()
run_root = tempfile.mkdtemp(prefix="routing-tutorial-")
DIGITS = [str(k) for k in range(10)]


def take(x, idx):
    """A batch of images (a tensor) or of sequences (a list)."""
    return x[idx] if isinstance(x, torch.Tensor) else [x[int(i)] for i in idx]


def accuracy(net, x, y, batch=100):
    idx = torch.linspace(0, len(y) - 1, min(200, len(y))).round().long()  # spread over a class-sorted split
    x, y = take(x, idx), y[idx]
    net.eval()
    with torch.no_grad():
        hits = sum((net.scores(net(take(x, torch.arange(i, min(i + batch, len(y)))))).argmax(1)
                    == y[i:i + batch]).sum().item() for i in range(0, len(y), batch))
    return hits / len(y)


def fit(net, train_x, train_y, val, epochs, batch_size, lr, name):
    """Train; return (run_dir, [model_routing of the fixed inputs after epoch 0, 1, ...])."""
    run_dir = os.path.join(run_root, name)
    val_x = val.images if hasattr(val, "images") else val.sequences
    fixed = torch.linspace(0, len(val.labels) - 1, 8).round().long()  # the inputs record_routing picks
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history, step, t0 = [], 0, time.perf_counter()
    for epoch in range(epochs + 1):
        if epoch:
            net.train()
            for idx in torch.randperm(len(train_y)).split(batch_size):
                xb, yb = take(train_x, idx), train_y[idx]
                loss = net.loss(net(xb, yb), yb, step)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
        net.eval()
        viz.record_routing(net, val, os.path.join(run_dir, "routing_trace", f"epoch_{epoch:03d}.pt"), n=8)
        history.append(viz.model_routing(net, take(val_x, fixed)))
    acc = accuracy(net, val_x, val.labels)
    print(f"{name}: {epochs} epochs on {len(train_y)} inputs in {time.perf_counter() - t0:.0f} s, "
          f"accuracy {acc:.1%} on {min(200, len(val.labels))} validation inputs")
    return run_dir, history


def entropy_table(layers):
    """Mean and weighted mean coupling entropy per iteration of every layer, against log #parents."""
    for layer in layers:
        g, trace = layer.graph, layer.result.trace
        mean, _ = viz.entropy_curve(g, trace)
        wmean, _ = viz.entropy_curve(g, trace, weights=layer.child_strength)
        deg = g.out_degrees()
        level = torch.log(deg[deg > 0].double()).mean().item()
        print(f"{layer.name:10s} {g.num_src_nodes():5d} -> {g.num_dst_nodes():3d}  uniform {level:.3f}  "
              f"mean {np.round(mean, 3).tolist()}  weighted by {dc.routing.get_routing(layer.routing).strength_name} "
              f"{np.round(wmean, 3).tolist()}")


def entropy_figure(layers, title):
    """One panel per layer: mean and weighted mean entropy per iteration, and the uniform level."""
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), layout="constrained",
                             squeeze=False)
    for ax, layer in zip(axes[0], layers):
        viz.plot_entropy(layer.graph, layer.result.trace, ax=ax, label="mean over children", capsize=3)
        strength = dc.routing.get_routing(layer.routing).strength_name
        viz.plot_entropy(layer.graph, layer.result.trace, ax=ax, weights=layer.child_strength, capsize=3,
                         label=f"weighted by {strength}", color="tab:red", linestyle="--")
        ax.set_title(f"{layer.name}: {layer.graph.num_src_nodes()} -> {layer.graph.num_dst_nodes()}",
                     fontsize="medium")
    fig.suptitle(title)
    return fig


# %%
# Dynamic routing in a trained CapsNet
# ------------------------------------
#
# ``get_model(name, weights="mnist")`` loads the shipped weights (checked
# against their SHA-256, loaded with ``weights_only=True``) into the ``small``
# CapsNet: primary capsules routed to 10 class capsules in 3 iterations (the
# sizes are in the table below).
# :func:`~dgl_capsules.viz.model_routing` routes eight test digits spread over
# MNIST's test set with the trace of every iteration.

test = dc.data.get_dataset("mnist").test
fixed = torch.linspace(0, len(test.labels) - 1, 8).round().long()
for name in ("capsnet", "matrixcaps"):
    w = dc.models.get_weights(name)
    print(f"{name} {w.preset} weights {w.name!r}: {100 * w.accuracy:.2f} % on the {len(test.labels):,} test digits "
          f"({w.experiment['name']}, seed {w.experiment['seed']})")
capsnet = dc.models.get_model("capsnet", weights="mnist")
caps_layers = viz.model_routing(capsnet, test.images[fixed])
entropy_table(caps_layers)
fig = entropy_figure(caps_layers, "trained CapsNet (dynamic routing), 8 test digits")

# %%
# The first iteration of dynamic routing is always uniform (all logits start
# at 0), so every curve starts at :math:`\log 10`. The weighted curve counts
# each primary capsule by the mean length of its votes: the children that
# actually move the class capsules.
#
# Below, the 32 children with the longest votes for the first of the fixed
# digits. Edge width and opacity follow the coupling on one fixed scale:
# thin and faint at the uniform :math:`1/10`, widest at 1. If the edges stay
# thin, routing did not single out a parent for these children, whatever the
# network predicts.

def digit_labels(net, image):
    """The ten class labels with the network's prediction for ``image`` marked."""
    with torch.no_grad():
        predicted = net.scores(net(image)).argmax(1).item()
    return [f"{d} ◀ predicted" if int(d) == predicted else d for d in DIGITS]


first = caps_layers[0]
ani_capsnet = viz.animate_bipartite(
    first.graph, first.result.trace, sample=0, parent_strength=first.parent_strength,
    top_k=32, child_weights=first.child_strength, weights_label="vote length",
    parent_labels=digit_labels(capsnet, test.images[fixed[:1]]),
    title=f"trained CapsNet digitcaps, digit {int(test.labels[fixed[0]])}",
)

# %%
# EM routing in a trained matrix-capsule network
# ----------------------------------------------
#
# The shipped ``small`` MatrixCapsNet: primary capsules routed to ConvCaps1,
# ConvCaps2 and ten class capsules, two EM iterations each (the sizes are in
# the table below). The child weights are the children's activations. EM's
# trace holds the responsibilities :math:`R_{ij}` each M-step used; the first
# one is uniform.

matrix = dc.models.get_model("matrixcaps", weights="mnist")
em_layers = viz.model_routing(matrix, test.images[fixed])
entropy_table(em_layers)
fig = entropy_figure(em_layers, "trained MatrixCapsNet (EM routing), 8 test digits")

# %%
# A convolutional layer with hundreds of parents is unreadable parent by
# parent; grouping the parents by type (``group_parents="type"``) draws, for
# each of the 24 most active children, its summed coupling to each parent
# type, on the same absolute scale (uniform: one over the number of types).

conv1 = em_layers[0]
ani_em = viz.animate_bipartite(
    conv1.graph, conv1.result.trace, sample=0, top_k=24, child_weights=conv1.child_strength,
    weights_label="activation", group_parents="type", parent_types=conv1.parent_types,
    parent_strength=conv1.parent_strength, title="trained MatrixCapsNet convcaps1",
)

# %%
# Self-attention routing in a trained Efficient-CapsNet
# -----------------------------------------------------
#
# The shipped Efficient-CapsNet routes its 16 primary capsules to the 10
# class capsules in one pass, without iterations: each vote is scored by its
# dot product with the sum of all votes for the same parent, a softmax over
# the parents of each child gives the couplings, and a learned bias is added
# after it. Its trace is that single set of couplings. The child weights are
# the mean vote lengths, as for the CapsNet.

w = dc.models.get_weights("efficient-capsnet")
print(f"efficient-capsnet {w.preset} weights {w.name!r}: {100 * w.accuracy:.2f} % on the test digits "
      f"({w.experiment['name']}, {w.experiment['row']}, seed {w.experiment['seed']})")
efficient = dc.models.get_model("efficient-capsnet", weights="mnist")
eff_layers = viz.model_routing(efficient, test.images[fixed])
entropy_table(eff_layers)
fig = entropy_figure(eff_layers, "trained Efficient-CapsNet (self-attention routing), 8 test digits")

# %%
# With a single pass there is nothing to animate over iterations; instead,
# one frame per fixed test digit: the couplings of all 16 primary capsules,
# on the same edge scale as the CapsNet picture above (thin and faint at the
# uniform 1/10), the children sized by their mean vote length over the eight
# digits. Unlike the CapsNet's, these couplings change from digit to digit.

eff = eff_layers[0]
with torch.no_grad():
    eff_predicted = efficient.scores(efficient(test.images[fixed])).argmax(1)
ani_efficient = viz.animate_bipartite(
    eff.graph, [eff.result.trace[-1][:, k] for k in range(len(fixed))], sample=0,
    child_weights=eff.child_strength.mean(1), weights_label="mean vote length", parent_labels=DIGITS,
    title="trained Efficient-CapsNet, one frame per test digit",
    frame_labels=[f"digit {int(test.labels[i])}, predicted {int(p)}" for i, p in zip(fixed, eff_predicted)],
)

# %%
# Heinsen routing in a sequence classifier
# ----------------------------------------
#
# :class:`~dgl_capsules.models.SequenceCapsClassifier` routes the tokens of
# each sequence to 16 part capsules and the parts to the classes. The task
# (:func:`~dgl_capsules.data.motif_sequences`) is to say which of two planted
# three-word motifs a sequence contains (4 classes). The child weights are
# the activations :math:`\sigma(a_i)` of the tokens and parts.

seq_train = dc.data.motif_sequences(n=384, dim=16, seed=0)
seq_val = dc.data.motif_sequences(n=128, dim=16, seed=1)
MOTIFS = ["neither", "motif A", "motif B", "A and B"]
torch.manual_seed(0)
seqnet = SequenceCapsClassifier(d_emb=16, n_classes=4, n_parts=16, n_iters=3)
seq_dir, seq_history = fit(seqnet, seq_train.sequences, seq_train.labels, seq_val, epochs=3,
                           batch_size=32, lr=3e-3, name="heinsen")
seq_layers = viz.model_routing(seqnet, seq_val.sequences[:32])
entropy_table(seq_layers)
fig = entropy_figure(seq_layers, "SequenceCapsClassifier (Heinsen routing), 32 validation sequences")

# %%
# The tokens of one sequence routed to the 16 parts; the parts routed to the
# four classes (the class capsules' activations size the parents).

parts, classes = viz.model_routing(seqnet, seq_val.sequences[:1])
ani_tokens = viz.animate_bipartite(
    parts.graph, parts.result.trace, child_weights=parts.child_strength, weights_label="activation",
    parent_strength=parts.parent_strength, title="Heinsen: tokens -> parts, one sequence",
)

# %%
# Routing over training
# ---------------------
#
# A fresh ``small`` CapsNet trained for two epochs on 1,200 of the bundled
# mnist5k digits; after the initialisation (epoch 0) and after every epoch,
# ``fit`` routed the same eight validation digits. The coupling entropy after
# the last iteration, per epoch, for the routed layers of this CapsNet and of
# the sequence classifier above:

torch.manual_seed(0)
fresh = CapsNet.from_preset("small")
train = splits.train
few = torch.linspace(0, len(train) - 1, 1200).round().long()  # the splits are sorted by class: spread out
caps_dir, caps_history = fit(fresh, train.images[few], train.labels[few], splits.val, epochs=2,
                             batch_size=32, lr=2e-3, name="capsnet")

histories = [("CapsNet", caps_history), ("Heinsen", seq_history)]
n_panels = sum(len(h[-1]) for _, h in histories)
fig, axes = plt.subplots(1, n_panels, figsize=(2.6 * n_panels, 3.2), layout="constrained", sharey=False)
k = 0
for net_name, history in histories:
    for j, layer in enumerate(history[-1]):
        mean = [viz.entropy_curve(h[j].graph, h[j].result.trace[-1:])[0][0] for h in history]
        weighted = [viz.entropy_curve(h[j].graph, h[j].result.trace[-1:], weights=h[j].child_strength)[0][0]
                    for h in history]
        deg = layer.graph.out_degrees()
        level = torch.log(deg[deg > 0].double()).mean().item()
        ax = axes[k]
        ax.plot(range(len(history)), mean, "o-", label=f"mean ({mean[-1]:.3f})")
        ax.plot(range(len(history)), weighted, "s--", color="tab:red", label=f"weighted ({weighted[-1]:.3f})")
        ax.axhline(level, color="0.4", linestyle=":", label=f"uniform ({level:.3f})")
        ax.set_ylim(0, 1.15 * level)
        ax.set_xticks(range(len(history)))
        ax.set_xlabel("epoch")
        ax.set_title(f"{net_name}\n{layer.name}", fontsize="small")
        k += 1
        ax.legend(fontsize="x-small", loc="lower left")
axes[0].set_ylabel("entropy after routing (nats)")

# %%
# The fresh CapsNet's class-capsule routing of the first fixed digit after
# each epoch (the last iteration's couplings; same children, same scale):

last = caps_history[-1][0]
caps_frames = [h[0].result.trace[-1][:, 0] for h in caps_history]
ani_epochs = viz.animate_bipartite(
    last.graph, caps_frames, sample=0, top_k=32, child_weights=last.child_strength[:, 0],
    weights_label="vote length", parent_labels=DIGITS, title="CapsNet digitcaps over training",
    frame_labels=[f"epoch {e}" for e in range(len(caps_frames))],
)

# %%
# The same pictures from the files ``record_routing`` wrote, as
# ``dgl-capsules visualize --over-training`` draws them for a run trained with
# ``--trace-routing``:

pictures = viz.animate_over_training(caps_dir, os.path.join(caps_dir, "pictures"), dpi=60)
for kind, path in sorted(pictures.items()):
    print(f"{kind:22s} {os.path.relpath(path, run_root)}")

# %%
# What the numbers say
# --------------------
#
# Read the tables printed above against the uniform level
# :math:`\log \#\text{parents}` (2.303 for ten classes). When the mean and
# weighted entropies after the last iteration sit just below that level,
# routing in that layer is nearly uniform: each child spreads its vote over
# all parents and the network's decision comes from the votes themselves
# (their lengths and directions), not from routing. A weighted entropy well
# below the mean says that the children that carry most are the decided ones.
# EM's first responsibilities are uniform by construction; how far its second
# M-step moves away from them shows how strongly the Gaussians of the parents
# pull their children. Efficient-CapsNet's single pass of self-attention
# routing ends well below the uniform level, unlike the CapsNet's three
# iterations: each of its 16 primary capsules leans towards some classes
# (normalised entropy 0.82 over the full test set, 1 being uniform: the
# README's necessity table), and which ones changes with the digit (tutorial
# 10 measures how much the network needs that).
# :func:`~dgl_capsules.viz.visualize_model` writes all of
# these pictures for every routed layer of a model, with a ``summary.json`` of
# the same numbers.
