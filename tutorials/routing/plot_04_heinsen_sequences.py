"""
Heinsen routing on sequences of different lengths
=================================================

Heinsen (2019) routes a *variable* number of input capsules, such as the
tokens of a sentence, to a fixed number of output capsules.
:class:`dgl_capsules.nn.HeinsenRouting` keeps the constructor, the forward
signature and the parameter names of the published ``Routing`` layer, so code
written for it runs unchanged; underneath, every input is a complete capsule
graph and a batch of inputs of different lengths is one :func:`dgl.batch`.

**What you will learn**

* the drop-in layer on one input, and on a ragged batch with
  ``forward_ragged`` (no padding, no masks);
* the generated motif task of :func:`dgl_capsules.data.motif_sequences`;
* training :class:`dgl_capsules.models.SequenceCapsClassifier` on it for a
  few epochs.

**Run time:** a few seconds on a 2-core CPU (up to a minute on a busy one; training is most of it).
"""

# %%
# The drop-in layer
# -----------------
#
# Input capsules come with score logits ``a_inp`` ``(n_inp,)`` and poses
# ``mu_inp`` ``(n_inp, d_cov, d_inp)``; outputs are logits, poses and
# variances of ``n_out`` capsules.

import time

import matplotlib.pyplot as plt
import torch

import dgl_capsules as dc
from dgl_capsules.models import SequenceCapsClassifier

layer = dc.nn.HeinsenRouting(d_cov=1, d_inp=16, d_out=8, n_out=5)
print(layer)
a_out, mu_out, sig2_out = layer(torch.randn(30), torch.randn(30, 1, 16))
print("one input of 30 capsules:", tuple(a_out.shape), tuple(mu_out.shape), tuple(sig2_out.shape))

# %%
# A ragged batch
# --------------
#
# Three inputs with 3, 30 and 12 capsules. ``forward_ragged`` routes them in
# one call over one batched graph and returns one output per input, equal to
# routing each alone.

lengths = [3, 30, 12]
a_list = [torch.randn(n) for n in lengths]
mu_list = [torch.randn(n, 1, 16) for n in lengths]
a_r, mu_r, _ = layer.forward_ragged(a_list, mu_list)
alone = [layer(a, mu)[0] for a, mu in zip(a_list, mu_list)]
print("shapes:", [tuple(a.shape) for a in a_r])
print("equal to one by one:", all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a_r, alone)))

# %%
# The motif task
# --------------
#
# Each sequence is a run of noisy word vectors, 8 to 48 tokens long. Two
# motifs, fixed runs of three words, are each planted with probability 1/2;
# the label says which are present (4 classes, chance 25%). Decoy words taken
# from the motifs appear everywhere, so a model must find the runs, not the
# words.

train = dc.data.motif_sequences(n=384, seed=0)
test = dc.data.motif_sequences(n=256, seed=1)
print("classes:", train.n_classes, " lengths:",
      min(len(s) for s in train.sequences), "to", max(len(s) for s in train.sequences))

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.hist([len(s) for s in train.sequences], bins=20)
ax.set_xlabel("sequence length (tokens)")
_ = ax.set_ylabel("sequences")

# %%
# Training
# --------
#
# :class:`~dgl_capsules.models.SequenceCapsClassifier` turns every token into
# an input capsule and routes twice (tokens to parts, parts to classes); the
# class logits are the output activations. Every mini-batch is ragged.

torch.manual_seed(0)
model = SequenceCapsClassifier(d_emb=16, n_classes=train.n_classes)
opt = torch.optim.Adam(model.parameters(), lr=3e-3)


def accuracy(data):
    model.eval()
    with torch.no_grad():
        scores = model(data.sequences).scores
    model.train()
    return (scores.argmax(1) == data.labels).float().mean().item()


history = [accuracy(test)]
t0 = time.perf_counter()
for epoch in range(6):
    perm = torch.randperm(len(train.sequences))
    for k in range(0, len(perm), 32):
        idx = perm[k:k + 32].tolist()
        out = model([train.sequences[i] for i in idx])
        loss = model.loss(out, train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    history.append(accuracy(test))
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {history[-1]:.1%}")
print(f"trained in {time.perf_counter() - t0:.1f} s")

fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
ax.plot(range(len(history)), history, "o-")
ax.axhline(1 / train.n_classes, ls="--", color="0.5", label="chance")
ax.set_xlabel("epoch")
ax.set_ylabel("test accuracy")
ax.set_ylim(0, 1)
ax.legend()
_ = ax.set_title("SequenceCapsClassifier on the motif task")
