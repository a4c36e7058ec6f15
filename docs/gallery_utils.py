"""Helpers that sphinx-gallery calls while it executes the tutorials (see ``conf.py``)."""
import random

SEED = 0


def reset_seeds(gallery_conf, fname):
    """Seed Python, NumPy, PyTorch and DGL before every tutorial, so each one runs alone the same way.

    Also makes Pillow matplotlib's animation writer.

    Listed in ``sphinx_gallery_conf["reset_modules"]`` as ``"gallery_utils.reset_seeds"``.
    """
    random.seed(SEED)
    try:
        import matplotlib

        # sphinx-gallery saves each animation's thumbnail GIF with the default
        # writer (ffmpeg, absent here); say Pillow so it does not warn each time.
        matplotlib.rcParams["animation.writer"] = "pillow"
    except ImportError:  # pragma: no cover
        pass
    try:
        import numpy as np

        np.random.seed(SEED)
    except ImportError:  # pragma: no cover - numpy comes with torch
        pass
    try:
        import torch

        torch.manual_seed(SEED)
    except ImportError:  # pragma: no cover
        pass
    try:
        import dgl

        dgl.seed(SEED)
    except ImportError:  # pragma: no cover
        pass
