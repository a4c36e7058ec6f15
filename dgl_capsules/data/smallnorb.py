"""smallNORB (LeCun et al. 2004) from its binary matrix files, with the viewpoint of every image."""
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import ImageDataset, Splits
from .fileio import read_bytes
from .registry import register_dataset
from .viewsplit import viewpoint_splits

__all__ = ["SmallNORB", "read_norb_matrix", "smallnorb_metadata"]

# Magic numbers of the binary matrix format (little-endian int32).
_NORB_DTYPES = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.dtype("<i4"), 0x1E3D4C51: np.dtype("<f4"),
                0x1E3D4C53: np.dtype("<f8"), 0x1E3D4C56: np.dtype("<i2")}

_FILES = {
    "train": "smallnorb-5x46789x9x18x6x2x96x96-training-{}.mat",
    "test": "smallnorb-5x01235x9x18x6x2x96x96-testing-{}.mat",
}


def read_norb_matrix(path):
    """Read one smallNORB binary matrix file (raw or gzip-compressed) into a numpy array.

    The header is little-endian int32: a magic number naming the element type
    (``0x1E3D4C55`` uint8, ``0x1E3D4C54`` int32, ...), the number of
    dimensions ``ndim`` and ``max(ndim, 3)`` sizes (unused ones are 1); the
    data follow in C order. Gzip data are recognised by their content.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file and what was expected, if the magic number is not
        one of the format's, the file is cut short or its gzip data are damaged.
    """
    data = read_bytes(path, "a smallNORB binary matrix file")
    if len(data) < 8:
        raise ValueError(f"{path} is not a smallNORB matrix file: {len(data)} bytes, fewer than the 8 of a "
                         f"magic number and a dimension count")
    magic, ndim = struct.unpack("<ii", data[:8])
    if magic not in _NORB_DTYPES or not 0 < ndim < 16:
        raise ValueError(f"{path} is not a smallNORB matrix file (magic {magic:#x}, ndim {ndim}); expected a magic "
                         f"number among {', '.join(f'{m:#x}' for m in _NORB_DTYPES)} and 1 to 15 dimensions")
    n_sizes = max(ndim, 3)
    if len(data) < 8 + 4 * n_sizes:
        raise ValueError(f"{path} is cut short inside its header: {ndim} dimensions need {8 + 4 * n_sizes} "
                         f"header bytes; the file has {len(data)}")
    shape = struct.unpack(f"<{n_sizes}i", data[8:8 + 4 * n_sizes])[:ndim]
    dtype = np.dtype(_NORB_DTYPES[magic])
    count = int(np.prod(shape))
    body = data[8 + 4 * n_sizes:]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path} is cut short: its header says {shape} values of {dtype} "
                         f"({count * dtype.itemsize} data bytes); the file has {len(body)} data bytes")
    return np.frombuffer(body, dtype=dtype, count=count).reshape(shape)


def smallnorb_metadata(info):
    """The viewpoint of every image from a smallNORB ``-info.mat`` matrix, in the units of :func:`viewpoint_split`.

    smallNORB's info rows are ``(instance 0..9, elevation 0..8, azimuth
    0, 2, ..., 34, lighting 0..5)``; elevation ``e`` is ``30 + 5 e`` degrees
    and azimuth ``a`` is ``10 a`` degrees.

    Parameters
    ----------
    info : array_like
        ``(N, 4)`` integers.

    Returns
    -------
    dict of str to numpy.ndarray
        ``(N,)`` int64 ``"azimuth"`` and ``"elevation"`` (degrees), ``"lighting"``, ``"instance"``.

    Raises
    ------
    ValueError
        If ``info`` is not ``(N, 4)`` or a column is outside its range.

    Examples
    --------
    >>> m = smallnorb_metadata([[4, 0, 34, 5], [0, 8, 0, 0]])
    >>> m["azimuth"].tolist(), m["elevation"].tolist()
    ([340, 0], [30, 70])
    """
    info = np.asarray(info)
    if info.ndim != 2 or info.shape[1] != 4 or not np.issubdtype(info.dtype, np.integer):
        raise ValueError(f"info must be an integer array of shape (N, 4) (instance, elevation, azimuth, lighting); "
                         f"got {info.dtype} {info.shape}")
    info = info.astype(np.int64)
    instance, elevation, azimuth, lighting = info.T
    for name, col, ok in (("instance", instance, (instance >= 0) & (instance <= 9)),
                          ("elevation", elevation, (elevation >= 0) & (elevation <= 8)),
                          ("azimuth", azimuth, (azimuth >= 0) & (azimuth <= 34) & (azimuth % 2 == 0)),
                          ("lighting", lighting, (lighting >= 0) & (lighting <= 5))):
        if not ok.all():
            expected = {"azimuth": "0, 2, ..., 34", "elevation": "0..8", "lighting": "0..5", "instance": "0..9"}
            raise ValueError(f"info {name} column must be in {expected[name]}; got {int(col[~ok][0])}")
    return {"azimuth": azimuth * 10, "elevation": 30 + 5 * elevation, "lighting": lighting, "instance": instance}


def _find(root, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no {name} or {name}.gz in {root}")


def SmallNORB(root, image_size=48, val_fraction=0.1, seed=0, split=None, stereo=False):
    """smallNORB from the ``-dat.mat`` / ``-cat.mat`` files in ``root``, split into train / val / test.

    Uses the left-camera image of every stereo pair (both with ``stereo``),
    resized from 96×96 to ``image_size`` (48 as in Hinton et al. 2018) and
    scaled to [0, 1]; labels are the 5 categories. Without ``split``, the
    validation split is a seeded random ``val_fraction`` of the training file
    and the test split is the testing file.

    With ``split="azimuth"`` or ``"elevation"`` the ``-info.mat`` files are
    read too (:func:`smallnorb_metadata`) and the viewpoint splits of Hinton
    et al. 2018 are made by :func:`~dgl_capsules.data.viewpoint_split`:
    training file at the familiar viewpoints (azimuths 300..40, or the 3
    lowest elevations) for train / val, testing file (other instances) at
    the familiar viewpoints for ``test`` and at the others for ``novel``.

    Parameters
    ----------
    root : str
        Folder with the files (raw or ``.gz``).
    image_size : int
        Side of the returned images.
    val_fraction : float
        Share of the training images kept for validation.
    seed : int
        Seed of the validation draw.
    split : {None, "azimuth", "elevation"}
        Viewpoint split, or none.
    stereo : bool
        Keep both cameras: images ``(2, S, S)`` instead of ``(1, S, S)``.

    Returns
    -------
    Splits or ViewpointSplits
        ``ViewpointSplits`` (with ``.novel`` and ``.metadata``) when ``split`` is given.

    Raises
    ------
    FileNotFoundError
        If ``root`` or a file is missing.
    ValueError
        If a file is not in the binary matrix format or images and labels disagree.
    """
    if split not in (None, "azimuth", "elevation"):
        raise ValueError(f"split must be None, 'azimuth' or 'elevation'; got {split!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"smallNORB root {root!r} is not a directory")
    sets, metas = {}, {}
    for part, pattern in _FILES.items():
        dat = read_norb_matrix(_find(root, pattern.format("dat")))
        cat = read_norb_matrix(_find(root, pattern.format("cat")))
        if dat.ndim != 4 or dat.shape[1] != 2 or cat.ndim != 1 or len(cat) != len(dat):
            raise ValueError(
                f"smallNORB {part} files disagree: dat {dat.shape} (want (N, 2, H, W)), cat {cat.shape}"
            )
        if split is not None:
            info = read_norb_matrix(_find(root, pattern.format("info")))
            if info.shape[:1] != cat.shape:
                raise ValueError(f"smallNORB {part} info {info.shape} must have one row per image ({len(cat)})")
            metas[part] = smallnorb_metadata(info)
        x = torch.from_numpy(dat[:, :2 if stereo else 1].astype(np.float32) / 255.0)  # (N, 1 or 2, 96, 96)
        if x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        sets[part] = (x, torch.from_numpy(cat.astype(np.int64)))
    if split is not None:
        x = torch.cat([sets["train"][0], sets["test"][0]])
        y = torch.cat([sets["train"][1], sets["test"][1]])
        meta = {k: np.concatenate([metas["train"][k], metas["test"][k]]) for k in metas["train"]}
        test_mask = np.arange(len(y)) >= len(sets["train"][1])  # the testing file: other instances
        return viewpoint_splits(x, y, meta, split, test_mask, val_fraction, seed, n_classes=5)
    x, y = sets["train"]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(val_fraction * len(x))))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Splits(ImageDataset(x[train], y[train], 5), ImageDataset(x[val], y[val], 5),
                  ImageDataset(*sets["test"], 5))


def _load_smallnorb(path):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a directory")
    return SmallNORB(path)


def _viewpoint_loader(split):
    def load(path, image_size=None):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path!r} is not a directory")
        return SmallNORB(path, image_size=32 if image_size is None else image_size, split=split, stereo=True)

    return load


register_dataset("smallnorb", _load_smallnorb, path="required",
                 help="smallNORB (5 categories, 48x48 left-camera images) from its -dat.mat / -cat.mat files in PATH")
for _split in ("azimuth", "elevation"):
    register_dataset(f"smallnorb-{_split}", _viewpoint_loader(_split), path="required",
                     help=f"smallNORB's {_split} split (Hinton et al. 2018): 2x32x32 stereo pairs from the -dat / -cat "
                          f"/ -info.mat files in PATH; .novel the unseen {_split}s")
