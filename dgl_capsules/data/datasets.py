"""The containers every image data set returns: :class:`ImageDataset` and :class:`Splits`."""
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

__all__ = ["ImageDataset", "Splits"]


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
