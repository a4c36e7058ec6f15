"""Writers of small data files in the formats the loaders read (IDX for MNIST, binary matrix for smallNORB)."""
import gzip
import os
import struct

import numpy as np


def write_idx(path, array):
    """Write ``array`` (uint8) as an IDX file; gzip it when ``path`` ends with .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def write_mnist(root, n_train=60, n_test=20, side=28, gz=False, seed=0):
    """A fake MNIST in ``root``: images whose pixel (0, 0) encodes the label; returns the arrays."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = {}
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        x[:, 0, 0] = y * 20
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{suffix}"), x)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{suffix}"), y)
        out[prefix] = (x, y)
    return out


def write_norb_matrix(path, array, magic):
    """Write ``array`` in the smallNORB binary matrix format (little-endian header, >= 3 size slots)."""
    sizes = list(array.shape) + [1] * max(0, 3 - array.ndim)
    data = struct.pack("<ii", magic, array.ndim) + struct.pack(f"<{len(sizes)}i", *sizes) + array.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def write_smallnorb(root, n_train=20, n_test=10, side=8, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = {}
    for split, n, stem in (("train", n_train, "smallnorb-5x46789x9x18x6x2x96x96-training"),
                           ("test", n_test, "smallnorb-5x01235x9x18x6x2x96x96-testing")):
        x = rng.integers(0, 256, size=(n, 2, side, side), dtype=np.uint8)
        y = (np.arange(n) % 5).astype("<i4")
        write_norb_matrix(os.path.join(root, stem + "-dat.mat"), x, 0x1E3D4C55)
        write_norb_matrix(os.path.join(root, stem + "-cat.mat"), y, 0x1E3D4C54)
        out[split] = (x, y)
    return out
