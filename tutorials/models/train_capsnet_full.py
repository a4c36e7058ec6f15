"""
Training a CapsNet to full accuracy (script, not run on the site)
=================================================================

The executed tutorial trains for seconds; this script is the full run. It
uses :func:`dgl_capsules.train.train` with a :class:`~dgl_capsules.train.TrainConfig`,
the loop behind ``dgl-capsules train``:
Adam with an exponential learning-rate decay, model selection on the
validation split, a test evaluation at the end, checkpoints that can be
resumed, and a run directory with the metrics and routing pictures.

Run it from the repository root (it takes several minutes on 2 CPU cores)::

    .venv/bin/python tutorials/models/train_capsnet_full.py

or the same from the command line::

    dgl-capsules train --model capsnet --preset small --epochs 15 --lr-decay 0.85 --out runs/capsnet_full
"""

# %%
# The run
# -------

import os

from dgl_capsules.train import TrainConfig, train

if __name__ == "__main__":
    config = TrainConfig(
        model="capsnet",
        preset="small",  # the narrow CapsNet of `make demo`; "paper" is Sabour et al.'s
        data="mnist5k",  # the 5,000 bundled MNIST digits
        epochs=15,
        batch_size=64,
        lr=1e-3,
        lr_decay=0.85,
        shift=2,  # random shifts of up to 2 pixels, as in the paper
        seed=0,
    )
    out = "runs/capsnet_full"
    # continue an interrupted run (a finished one is re-tested); a new directory starts fresh
    result = train(config, out, resume=os.path.exists(os.path.join(out, "checkpoint.pt")))
    print(result["test_accuracy"])
