"""Images on a larger canvas: the one place that pads images, and the one message when they do not fit.

:func:`get_dataset` (``image_size=``), training on given splits, the derived
test sets and ``evaluate`` / ``visualize`` of a trained model all centre images
with :func:`fit_images`, which pads an :class:`~dgl_capsules.data.ImageDataset`
or every split of :class:`~dgl_capsules.data.Splits` with :func:`pad_to`.

Examples
--------
>>> import torch
>>> from dgl_capsules.data import ImageDataset
>>> ds = ImageDataset(torch.ones(2, 1, 28, 28), torch.tensor([0, 1]))
>>> fit_images(ds, 40).images.shape
torch.Size([2, 1, 40, 40])
>>> fit_images(ds, 20, source="'blank'")
Traceback (most recent call last):
...
ValueError: image_size: the images of 'blank' are 28x28, larger than the requested size (20x20)
"""
import torch.nn.functional as F

from .._checks import check_images
from .datasets import ImageDataset, Splits

__all__ = ["pad_to", "fit_images"]


def pad_to(images, size):
    """Centre images ``(N, C, H, W)`` on a black ``size × size`` canvas.

    Examples
    --------
    >>> import torch
    >>> pad_to(torch.ones(2, 1, 28, 28), 40).shape
    torch.Size([2, 1, 40, 40])
    """
    check_images("images", images, batch="N")
    h, w = images.shape[-2:]
    if size < max(h, w):
        raise ValueError(f"size must be >= the image side {max(h, w)}; got {size}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(images, (left, size - w - left, top, size - h - top))


def fit_images(data, image_size, name="image_size", source="the data", into="the requested size", hint=""):
    """``data`` with its images centred on a black canvas of side ``image_size``.

    Parameters
    ----------
    data : ImageDataset or Splits
        One data set, or train / val / test splits (a
        :class:`~dgl_capsules.data.ViewpointSplits` keeps its extra sets).
    image_size : int or None
        The side of the canvas; ``None``, or images that are already square
        of that side, return ``data`` itself.
    name : str
        The argument named when the images do not fit.
    source : str
        What the images are, in the user's words (``"'mnist5k'"``, ``"the
        affine test set"``).
    into : str
        What they must fit (``"the input of the model runs/a/model.pt"``).
    hint : str
        Appended to the message (``"; train it with image_size=40"``).

    Returns
    -------
    ImageDataset or Splits

    Raises
    ------
    ValueError
        ``"<name>: the images of <source> are HxW, larger than <into> (SxS)<hint>"``.
    """
    if isinstance(data, Splits):
        def fit(part):
            return fit_images(part, image_size, name, source, into, hint)

        out = data._replace(train=fit(data.train), val=fit(data.val), test=fit(data.test))
        if getattr(data, "novel", None) is not None:  # ViewpointSplits
            out = out._replace(novel=fit(data.novel))
        return out
    h, w = data.images.shape[-2:]
    if image_size is None or h == w == image_size:
        return data
    if max(h, w) > image_size:
        raise ValueError(f"{name}: the images of {source} are {h}x{w}, larger than {into} "
                         f"({image_size}x{image_size}){hint}")
    return ImageDataset(pad_to(data.images, image_size), data.labels, data.n_classes)
