"""The viewpoint splits of Hinton et al. 2018 (section 5.1): train on a few viewpoints, test on the others.

Shared by the rendered set (:func:`~dgl_capsules.data.viewpoints`) and the
real smallNORB (:func:`~dgl_capsules.data.SmallNORB` with ``split=``); it
needs no renderer.
"""
from typing import NamedTuple

import numpy as np
import torch

from .datasets import ImageDataset, Splits
from .mnist import stratified_split

__all__ = ["FAMILIAR_AZIMUTHS", "ViewpointIndices", "ViewpointSplits", "viewpoint_split", "viewpoint_splits"]

#: Training azimuths (degrees) of the azimuth split of Hinton et al. 2018.
FAMILIAR_AZIMUTHS = (300, 320, 340, 0, 20, 40)


class ViewpointIndices(NamedTuple):
    """Sorted index arrays of the four parts of a viewpoint split (see :func:`viewpoint_split`)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    novel: np.ndarray


class ViewpointSplits(Splits):
    """:class:`~dgl_capsules.data.Splits` (train, val, familiar test) plus the novel-viewpoint test set.

    It is a ``Splits``: it unpacks into exactly ``(train, val, test)`` and
    works wherever ``Splits`` is expected; ``test`` is the familiar-viewpoint
    test set. The extra attributes are ``novel`` (an
    :class:`~dgl_capsules.data.ImageDataset`), ``metadata`` (for each of
    ``"train"``, ``"val"``, ``"test"``, ``"novel"`` a dict of ``(n,)`` arrays
    such as ``"azimuth"``) and ``class_names``.
    """

    def __new__(cls, train, val, test, novel=None, metadata=None, class_names=None):
        self = super().__new__(cls, train, val, test)
        self.novel, self.metadata, self.class_names = novel, metadata or {}, class_names
        return self

    def __reduce__(self):
        return (type(self), (*self, self.novel, self.metadata, self.class_names))

    def _replace(self, **kw):
        fields = dict(zip(self._fields, self), novel=self.novel, metadata=self.metadata,
                      class_names=self.class_names)
        fields.update(kw)
        return type(self)(**fields)

    def __repr__(self):
        sizes = ", ".join(f"{k}={len(d)}" for k, d in zip(("train", "val", "test", "novel"), (*self, self.novel)))
        return f"ViewpointSplits({sizes})"


def _familiar_mask(metadata, split):
    if split == "azimuth":
        return np.isin(metadata["azimuth"] % 360, FAMILIAR_AZIMUTHS)
    lowest = np.unique(metadata["elevation"])[:3]
    return np.isin(metadata["elevation"], lowest)


def viewpoint_split(labels, metadata, split="azimuth", test_mask=None, val_fraction=0.1, seed=0):
    """Indices of the train, validation, familiar-test and novel-test images (Hinton et al. 2018, sec. 5.1).

    Familiar viewpoints are, for ``split="azimuth"``, the azimuths 300, 320,
    340, 0, 20 and 40 degrees; for ``split="elevation"``, the 3 lowest
    elevations in ``metadata``. Images outside ``test_mask`` at familiar
    viewpoints are for training (a class-stratified, seeded ``val_fraction``
    of them for validation); images in ``test_mask`` are the familiar test set
    at familiar viewpoints and the novel test set at all others. So train and
    familiar test share viewpoints and differ in what ``test_mask`` holds out
    (the lightings or instances), and familiar and novel test differ only in
    the viewpoint.

    Parameters
    ----------
    labels : array_like
        ``(N,)`` integer class labels.
    metadata : dict of str to array_like
        ``(N,)`` ``"azimuth"`` (degrees, for ``split="azimuth"``) or
        ``"elevation"`` (any increasing unit, for ``split="elevation"``).
    split : {"azimuth", "elevation"}
        Which viewpoint axis is held out.
    test_mask : array_like of bool, optional
        ``(N,)``: the images that may be tested on (held-out lightings,
        instances, or smallNORB's testing file). Default: none, so there is
        no test set, only train / val (and no novel set).
    val_fraction : float
        Share of the training images kept for validation, in [0, 1).
    seed : int
        Seed of the validation draw.

    Returns
    -------
    ViewpointIndices
        Sorted int64 index arrays ``train``, ``val``, ``test`` (familiar), ``novel``.

    Raises
    ------
    ValueError
        If ``split`` is unknown, ``metadata`` lacks the key or an array has
        another length, ``val_fraction`` is outside [0, 1), or a part that
        needs images (train, familiar or novel viewpoints) gets none.

    Examples
    --------
    >>> import numpy as np
    >>> az = np.tile(np.arange(0, 360, 20), 4)  # 18 azimuths x 4 lightings
    >>> light = np.repeat(np.arange(4), 18)
    >>> idx = viewpoint_split(np.zeros(72, int), {"azimuth": az}, test_mask=light == 3, val_fraction=0.0)
    >>> [len(i) for i in idx]  # 6 familiar azimuths x 3 lightings, 6 x 1, 12 x 1
    [18, 0, 6, 12]
    """
    if split not in ("azimuth", "elevation"):
        raise ValueError(f"split must be 'azimuth' or 'elevation'; got {split!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,); got {labels.shape}")
    n = len(labels)
    if not isinstance(metadata, dict) or split not in metadata:
        keys = sorted(metadata) if isinstance(metadata, dict) else type(metadata).__name__
        raise ValueError(f"metadata must be a dict with an {split!r} array for split={split!r}; got {keys}")
    meta = {split: np.asarray(metadata[split]).astype(np.int64)}
    if meta[split].shape != (n,):
        raise ValueError(f"metadata[{split!r}] must have shape ({n},) like labels; got {meta[split].shape}")
    test_mask = np.zeros(n, bool) if test_mask is None else np.asarray(test_mask)
    if test_mask.shape != (n,) or test_mask.dtype != bool:
        raise ValueError(f"test_mask must be a bool array of shape ({n},); got {test_mask.dtype} {test_mask.shape}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    familiar = _familiar_mask(meta, split)
    if split == "elevation" and len(np.unique(meta[split])) < 4:
        raise ValueError(f"metadata['elevation'] must hold at least 4 elevations (3 familiar, 1 or more novel); "
                         f"got {sorted(np.unique(meta[split]).tolist())}")
    pool = np.flatnonzero(familiar & ~test_mask)
    if len(pool) == 0:
        raise ValueError(f"no training images: none at the familiar {split}s outside test_mask")
    test = np.flatnonzero(familiar & test_mask)
    novel = np.flatnonzero(~familiar & test_mask)
    if test_mask.any() and (len(test) == 0 or len(novel) == 0):
        raise ValueError(f"test_mask holds no images at the {'familiar' if len(test) == 0 else 'novel'} {split}s")
    n_val = int(round(val_fraction * len(pool)))
    train_part, val_part = stratified_split(labels[pool], [len(pool) - n_val, n_val], seed=seed)
    return ViewpointIndices(pool[train_part], pool[val_part], test, novel)


def viewpoint_splits(images, labels, metadata, split="azimuth", test_mask=None, val_fraction=0.1, seed=0,
                     n_classes=None, class_names=None):
    """:func:`viewpoint_split` applied to images: a :class:`ViewpointSplits` of :class:`ImageDataset`.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray
        ``(N, C, H, W)`` float in [0, 1].
    labels, metadata, split, test_mask, val_fraction, seed
        As in :func:`viewpoint_split`.
    n_classes : int, optional
        Default ``labels.max() + 1``.
    class_names : sequence of str, optional
        Kept on the result.

    Returns
    -------
    ViewpointSplits
    """
    idx = viewpoint_split(labels, metadata, split, test_mask, val_fraction, seed)
    images, labels = torch.as_tensor(images), torch.as_tensor(np.asarray(labels)).long()
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    sets, meta = [], {}
    for name, i in zip(ViewpointIndices._fields, idx):
        sets.append(ImageDataset(images[i], labels[i], n_classes))
        meta[name] = {k: np.asarray(v)[i] for k, v in metadata.items()}
    train, val, test, novel = sets
    return ViewpointSplits(train, val, test, novel, meta, tuple(class_names) if class_names else None)
