"""smallNORB (LeCun et al. 2004) from its binary matrix files."""
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

from .mnist import ImageDataset, Splits

__all__ = ["SmallNORB", "read_norb_matrix"]

# Magic numbers of the binary matrix format (little-endian int32).
_NORB_DTYPES = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.dtype("<i4"), 0x1E3D4C51: np.dtype("<f4"),
                0x1E3D4C53: np.dtype("<f8"), 0x1E3D4C56: np.dtype("<i2")}

_FILES = {
    "train": "smallnorb-5x46789x9x18x6x2x96x96-training-{}.mat",
    "test": "smallnorb-5x01235x9x18x6x2x96x96-testing-{}.mat",
}


def read_norb_matrix(path):
    """Read one smallNORB binary matrix file (raw or ``.gz``) into a numpy array.

    The header is little-endian int32: a magic number naming the element type
    (``0x1E3D4C55`` uint8, ``0x1E3D4C54`` int32, ...), the number of
    dimensions ``ndim`` and ``max(ndim, 3)`` sizes (unused ones are 1); the
    data follow in C order.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path} is not a smallNORB matrix file (only {len(data)} bytes)")
    magic, ndim = struct.unpack("<ii", data[:8])
    if magic not in _NORB_DTYPES or not 0 < ndim < 16:
        raise ValueError(f"{path} is not a smallNORB matrix file (magic {magic:#x}, ndim {ndim})")
    n_sizes = max(ndim, 3)
    shape = struct.unpack(f"<{n_sizes}i", data[8:8 + 4 * n_sizes])[:ndim]
    dtype = np.dtype(_NORB_DTYPES[magic])
    count = int(np.prod(shape))
    body = data[8 + 4 * n_sizes:]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path} is truncated: header says {shape}, file has {len(body)} data bytes")
    return np.frombuffer(body, dtype=dtype, count=count).reshape(shape)


def _find(root, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no {name} or {name}.gz in {root}")


def SmallNORB(root, image_size=48, val_fraction=0.1, seed=0):
    """smallNORB from the ``-dat.mat`` / ``-cat.mat`` files in ``root``, split into train / val / test.

    Uses the left-camera image of every stereo pair, resized from 96×96 to
    ``image_size`` (48 as in Hinton et al. 2018) and scaled to [0, 1]; labels
    are the 5 categories. The validation split is a seeded random
    ``val_fraction`` of the training file; the test split is the testing file.

    Returns
    -------
    Splits

    Raises
    ------
    FileNotFoundError
        If ``root`` or a file is missing.
    ValueError
        If a file is not in the binary matrix format or images and labels disagree.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"smallNORB root {root!r} is not a directory")
    sets = {}
    for split, pattern in _FILES.items():
        dat = read_norb_matrix(_find(root, pattern.format("dat")))
        cat = read_norb_matrix(_find(root, pattern.format("cat")))
        if dat.ndim != 4 or dat.shape[1] != 2 or cat.ndim != 1 or len(cat) != len(dat):
            raise ValueError(
                f"smallNORB {split} files disagree: dat {dat.shape} (want (N, 2, H, W)), cat {cat.shape}"
            )
        x = torch.from_numpy(dat[:, :1].astype(np.float32) / 255.0)  # (N, 1, 96, 96) left camera
        if x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        sets[split] = (x, torch.from_numpy(cat.astype(np.int64)))
    x, y = sets["train"]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(val_fraction * len(x))))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Splits(ImageDataset(x[train], y[train], 5), ImageDataset(x[val], y[val], 5),
                  ImageDataset(*sets["test"], 5))
