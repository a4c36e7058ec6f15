"""
A CapsNet on real MNIST digits
==============================

:func:`dgl_capsules.data.mnist5k` ships 5,000 real MNIST digits with the
library (train, validation and test splits, nothing downloaded).
:class:`dgl_capsules.models.CapsNet` is the network of Sabour et al. (2017):
a convolution, primary capsules, and ten class capsules routed by agreement
over a complete capsule graph, plus a decoder that reconstructs the digit
from its class capsule.

**What you will learn**

* how to train a CapsNet with a plain PyTorch loop using the model protocol
  (``out = model(x, y)``, ``model.loss(out, y)``, ``model.scores(out)``);
* how to read reconstructions from the class capsules;
* how to look at the routing of one real digit with ``model.routing(x)``.

To keep the page fast we train a narrow CapsNet for well under a minute, so
its accuracy stays far below the paper's (a CapsNet needs a few epochs
before its class capsules separate), and the reconstructions are rough. ``train_capsnet_full.py`` in this section (shown, not
run here) is the full-length run.

**Run time:** about 5 seconds on a 2-core CPU (up to a minute on a busy one).
"""

# %%
# Data and model
# --------------

import time

import matplotlib.pyplot as plt
import torch

import dgl_capsules as dc
from dgl_capsules import viz
from dgl_capsules.models import CapsNet

splits = dc.data.mnist5k()
print({name: len(part) for name, part in zip(splits._fields, splits)})

model = CapsNet.from_preset("small", conv_channels=32, primary_types=8)
print(model)
print("parameters:", sum(p.numel() for p in model.parameters()))

# %%
# A short training run
# --------------------
#
# One pass over 1,200 training digits in mini-batches of 32 with Adam. The
# margin loss and the (down-weighted) reconstruction error are both in
# ``model.loss``.

torch.manual_seed(0)
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
# the splits are stored class by class: draw a random subset
pick = torch.randperm(len(splits.train.labels))[:1200]
x_train, y_train = splits.train.images[pick], splits.train.labels[pick]
losses = []
t0 = time.perf_counter()
model.train()
for step, k in enumerate(range(0, len(x_train), 32)):
    x, y = x_train[k:k + 32], y_train[k:k + 32]
    out = model(x, y)
    loss = model.loss(out, y, step)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
print(f"{len(losses)} steps in {time.perf_counter() - t0:.1f} s; "
      f"loss {losses[0]:.3f} -> {sum(losses[-5:]) / 5:.3f}")

model.eval()
with torch.no_grad():
    pick = torch.randperm(len(splits.test.labels))[:500]
    x_test, y_test = splits.test.images[pick], splits.test.labels[pick]
    out = model(x_test)
    acc = (model.scores(out).argmax(1) == y_test).float().mean()
print(f"accuracy on 500 test digits: {acc:.1%} (chance: 10%)")

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.plot(losses)
ax.set_xlabel("step")
ax.set_ylabel("loss")
_ = ax.set_title("CapsNet training loss (margin + reconstruction)")

# %%
# Reconstructions
# ---------------
#
# The decoder sees only the longest class capsule (the prediction) with the
# others masked to zero. Its reconstruction of test digits, top row the input,
# bottom row the reconstruction:

with torch.no_grad():
    rec = model.reconstruct(out)[:8]
pred = model.scores(out).argmax(1)
fig, axes = plt.subplots(2, 8, figsize=(8, 2.4), layout="constrained")
for k in range(8):
    axes[0, k].imshow(x_test[k, 0], cmap="gray_r")
    axes[0, k].set_title(f"label {y_test[k].item()}", fontsize=8)
    axes[1, k].imshow(rec[k, 0], cmap="gray_r")
    axes[1, k].set_title(f"pred {pred[k].item()}", fontsize=8)
for a in axes.flat:
    a.axis("off")

# %%
# The routing of one real digit
# -----------------------------
#
# ``model.routing(x)`` returns, for every routed layer, its name, its capsule
# graph, the :class:`~dgl_capsules.routing.RoutingResult` with the trace of
# every iteration, the parents' strengths (class-capsule lengths), its routing
# family and what each child carries (here the mean length of its votes), so
# the picture can show the 32 primary capsules whose votes are longest. Edge width and opacity follow the
# coupling on one fixed scale: thin and faint at the uniform 1/10, widest at
# coupling 1, so a routing that stays near uniform looks near uniform.

digit = x_test[:1]
(layer,) = viz.model_routing(model, digit)
g, result, strength = layer.graph, layer.result, layer.parent_strength
print(layer.name, layer.routing, g, "\nclass lengths:", [round(v, 2) for v in strength[:, 0].tolist()])

fig, ax = plt.subplots(figsize=(2, 2), layout="constrained")
ax.imshow(digit[0, 0], cmap="gray_r")
ax.axis("off")

predicted = int(strength[:, 0].argmax())
ani_digit = viz.animate_bipartite(g, result.trace, sample=0, parent_strength=strength, top_k=32,
                                  child_weights=layer.child_strength, weights_label="vote length",
                                  parent_labels=[f"{k} ◀ predicted" if k == predicted else str(k)
                                                 for k in range(10)],
                                  interval=700, title=f"Routing of a test '{y_test[0].item()}'")

# %%
# Tutorial 7 (*What routing does in a trained network*) compares the coupling
# entropy of such trained layers with the uniform level for all three routing
# algorithms.
