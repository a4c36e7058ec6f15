"""Named training augmentations: a recipe's whole augmentation as one registered function.

``TrainConfig(augment=NAME)`` applies the function registered as ``NAME`` to
every training batch, after the config's own ``shift`` / ``rotate`` /
``scale``, with the run's augmentation generator (so a seed decides it).

Examples
--------
>>> import torch
>>> @register_augmentation("flip-half")
... def flip_half(images, generator):
...     flip = torch.rand(images.shape[0], generator=generator) < 0.5
...     return torch.where(flip[:, None, None, None], images.flip(-1), images)
>>> "flip-half" in list_augmentations()
True
>>> get_augmentation("flip-half")(torch.rand(4, 1, 8, 8), torch.Generator().manual_seed(0)).shape
torch.Size([4, 1, 8, 8])
>>> unregister_augmentation("flip-half")
"""
import functools
import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F

from .._checks import check_images

__all__ = ["register_augmentation", "unregister_augmentation", "get_augmentation", "list_augmentations",
           "efficient_capsnet_augment"]

_AUGMENTATIONS: Dict[str, Callable] = {}


def register_augmentation(name):
    """Register ``fn(images (B, C, H, W) in [0, 1], generator) -> images`` under ``name``; use as a decorator.

    Raises
    ------
    ValueError
        If ``name`` is empty or taken.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")

    def decorate(fn):
        if name in _AUGMENTATIONS:
            raise ValueError(f"name: an augmentation {name!r} is already registered")
        _AUGMENTATIONS[name] = fn
        return fn

    return decorate


def unregister_augmentation(name):
    """Remove ``name`` (for tests and notebooks)."""
    get_augmentation(name)
    del _AUGMENTATIONS[name]


def get_augmentation(name):
    """The function registered as ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :func:`list_augmentations`.
    """
    if not isinstance(name, str) or name not in _AUGMENTATIONS:
        raise ValueError(f"augment: unknown augmentation {name!r}; expected one of "
                         f"{', '.join(list_augmentations()) or 'none registered'}")
    return _AUGMENTATIONS[name]


def list_augmentations():
    """Names of the registered augmentations, sorted."""
    return sorted(_AUGMENTATIONS)


# ---------------------------------------------------------------------------- Efficient-CapsNet's augmentation
#
# The MNIST pre-processing of Mazzia et al.'s published code (utils/pre_process_mnist.py), per training image and
# in this order: a rotation, a shift into the empty margin, a horizontal squish and an erased 4x4 patch. Every draw
# below has the distribution the published code gives it; the constants are its own for 28x28 images.

_SPREAD = 0.33  # the standard deviation of the published code's normal draws
_CAP = 0.9999  # ... which it caps at this magnitude


def _capped_normal(n, generator, dtype):
    return (torch.randn(n, generator=generator, dtype=torch.float64) * _SPREAD).clamp(-_CAP, _CAP).to(dtype)


def _draw(n, h, w, generator):
    """The random parameters of :func:`efficient_capsnet_augment` for ``n`` images of ``h x w`` (int64 tensors)."""
    f64 = torch.float64
    angle = torch.trunc(_capped_normal(n, generator, f64) * 30)  # whole degrees, truncated towards 0 as int() does
    rotate = _capped_normal(n, generator, f64) <= 0  # the published test keeps the image when its draw is > 0
    direction = torch.floor(torch.rand(2, n, generator=generator, dtype=f64) * 2).long()  # 0: left / up, 1: right
    amount = _capped_normal(2 * n, generator, f64).abs().view(2, n)  # (x, y) fractions of the margin
    squish = _capped_normal(2 * n, generator, f64).abs().view(2, n)
    width_mod = torch.floor(squish[0] * (w / 4) + 1).long()  # 1..7 columns for 28 px
    offset_mod = torch.floor(squish[1] * 2).long()  # 0 or 1
    corner = torch.floor(torch.rand(2, n, generator=generator, dtype=f64) * torch.tensor([[h - 9.0], [w - 9.0]]))
    return dict(angle=angle.long(), rotate=rotate, direction=direction, amount=amount, width_mod=width_mod,
                offset_mod=offset_mod, erase_row=corner[0].long() + 4, erase_col=corner[1].long() + 4)


def _rotate(images, degrees):
    """Rotate each image by ``degrees`` ``(N,)`` counter-clockwise about ``(W/2, H/2)``, bilinear, black border.

    NOTE: the pixel centres are at integer coordinates and the centre is (14, 14) for 28 px, as in OpenCV's
    ``getRotationMatrix2D`` + ``warpAffine`` that the published code calls.
    """
    n, _, h, w = images.shape
    theta = degrees.to(torch.float64) * (math.pi / 180)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    dx, dy = xs - w / 2, ys - h / 2  # (H, W) output pixel relative to the centre
    src_x = w / 2 + cos * dx - sin * dy  # (N, H, W): where each output pixel reads (the inverse rotation)
    src_y = h / 2 + sin * dx + cos * dy
    grid = torch.stack([2 * src_x / (w - 1) - 1, 2 * src_y / (h - 1) - 1], -1).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _margins(images):
    """Empty rows / columns on each side of every image: (left, right, top, bottom), each ``(N,)`` int64."""
    def sides(filled):  # (N, L) bool -> empty count before the first and after the last filled line
        length = filled.shape[1]
        any_ = filled.any(1)
        first = filled.long().argmax(1)
        last = length - 1 - filled.flip(1).long().argmax(1)
        return torch.where(any_, first, 0), torch.where(any_, length - 1 - last, 0)

    left, right = sides(images.sum((1, 2)) > 0)
    top, bottom = sides(images.sum((1, 3)) > 0)
    return left, right, top, bottom


def _roll(images, dx, dy):
    """Roll every image by ``dx`` columns right and ``dy`` rows down ``(N,)``, wrapping (as ``tf.roll`` does)."""
    n, c, h, w = images.shape
    rows = (torch.arange(h)[None, :] - dy[:, None]) % h  # (N, H) source row of each output row
    cols = (torch.arange(w)[None, :] - dx[:, None]) % w  # (N, W)
    out = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _shift_amounts(images, direction, amount):
    """The published shift: a fraction of the empty margin towards a random side, never out of the frame."""
    left, right, top, bottom = _margins(images)
    dx = torch.where(direction[1] == 0, torch.floor(-amount[0] * left), torch.floor(amount[0] * (1 + right)))
    dy = torch.where(direction[0] == 0, torch.floor(-amount[1] * top), torch.floor(amount[1] * (1 + bottom)))
    return dx.long(), dy.long()


def _lanczos3(x):
    x = x.abs()
    safe = x.clamp_min(1e-3)
    value = 3 * torch.sin(math.pi * safe) * torch.sin(math.pi * safe / 3) / (math.pi ** 2 * safe ** 2)
    return torch.where(x <= 1e-3, torch.ones_like(x), torch.where(x > 3, torch.zeros_like(x), value))


@functools.lru_cache(maxsize=None)
def _squish_matrices(w):
    """``(W // 4 + 2, 2, W, W)`` float64: column map of the squish by ``width_mod`` columns with ``offset_mod``.

    Resizing ``W`` columns to ``W - width_mod`` is TensorFlow's antialiased Lanczos-3 resampling (half-pixel
    centres, the kernel widened by ``W / (W - width_mod)``, source pixels limited to the image, weights of each output
    pixel normalised to sum 1); the result is placed ``width_mod // 2 + offset_mod`` columns from the left.
    """
    out = torch.zeros(w // 4 + 2, 2, w, w, dtype=torch.float64)
    src = torch.arange(w, dtype=torch.float64)
    for width_mod in range(1, w // 4 + 2):
        narrow = w - width_mod
        stretch = w / narrow  # inverse scale = kernel scale when shrinking
        sample = (torch.arange(narrow, dtype=torch.float64) + 0.5) * stretch  # (narrow,) in source pixels
        start = torch.ceil(sample - 3 * stretch - 0.5).clamp(0, w - 1)
        end = torch.floor(sample + 3 * stretch - 0.5).clamp(0, w - 1)
        inside = (src[None, :] >= start[:, None]) & (src[None, :] <= end[:, None])  # (narrow, W)
        weight = _lanczos3((src[None, :] + 0.5 - sample[:, None]) / stretch) * inside
        weight = weight / weight.sum(1, keepdim=True)  # (narrow, W)
        for offset_mod in (0, 1):
            place = width_mod // 2 + offset_mod
            out[width_mod, offset_mod, :, place:place + narrow] = weight.t()
    return out


def _squish(images, width_mod, offset_mod):
    """Squeeze every image horizontally by ``width_mod`` columns and place it ``width_mod // 2 + offset_mod`` in."""
    n, c, h, w = images.shape
    maps = _squish_matrices(w).to(images.dtype)[width_mod, offset_mod]  # (N, W, W): source column -> output column
    return torch.bmm(images.reshape(n, c * h, w), maps).view(n, c, h, w)


def _erase(images, row, col, size=4):
    """Zero a ``size x size`` patch of every image with its top-left corner at ``(row, col)`` ``(N,)``."""
    h, w = images.shape[-2:]
    rows = torch.arange(h)[None, :] - row[:, None]  # (N, H): row relative to the patch
    cols = torch.arange(w)[None, :] - col[:, None]
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]  # (N, H, W)
    return images * (~inside)[:, None].to(images.dtype)


@register_augmentation("efficient-capsnet")
def efficient_capsnet_augment(images, generator=None):
    r"""The training augmentation of Efficient-CapsNet's published MNIST code, on a batch: rotate, shift, squish, erase.

    Per image, in this order (:math:`r` are normal draws with standard
    deviation 0.33 capped at :math:`\pm 0.9999`, :math:`u` uniform in [0, 1)):

    1. **rotation**, on about half the images (those whose second draw
       :math:`r' \le 0`): by :math:`\operatorname{trunc}(30 r)` whole degrees
       (-29 to 29) counter-clockwise about :math:`(W/2, H/2)`, bilinear, black
       border;
    2. **shift** per axis: :math:`\lfloor -|r|\, m_{\text{left}} \rfloor` or
       :math:`\lfloor |r| (1 + m_{\text{right}}) \rfloor` pixels (a fair coin
       picks the side; :math:`m` are the empty rows and columns on that side),
       so the digit never leaves the frame;
    3. **squish**: the width shrinks by :math:`\lfloor 7 |r| \rfloor + 1` columns
       (1 to 7) with antialiased Lanczos-3 resampling and the image is placed
       :math:`\lfloor \text{width}/2 \rfloor + \lfloor 2|r'| \rfloor` columns
       from the left;
    4. **erasing**: a 4x4 patch is set to 0 at rows and columns
       :math:`\lfloor 19 u \rfloor + 4` (4 to 22) on every image.

    For other sizes the constants scale with the image: shrink by up to
    ``W / 4`` columns, patch corner in ``[4, H - 6]``. The Lanczos resampling
    rings at edges, so images in [0, 1] come out in [-0.28, 1.28] (about
    [-0.19, 1.21] for MNIST digits), as in the published code, which does not
    clip either.

    NOTE: registered as ``"efficient-capsnet"`` for ``TrainConfig(augment=...)``. Equal in distribution to the
    published per-image pipeline, not draw for draw (TensorFlow's and OpenCV's random streams and OpenCV's
    fixed-point bilinear weights are not reproduced); batched: no loop over images.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` floating-point images with black (0) background, ``H, W >= 10``.
    generator : torch.Generator, optional
        The source of every random draw (the same generator state gives the same output).

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)``, the dtype of ``images``.

    Raises
    ------
    TypeError
        If ``images`` is not a floating-point tensor.
    ValueError
        If it is not ``(N, C, H, W)`` with ``H, W >= 10``.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(16, 1, 28, 28); x[:, :, 8:20, 12:16] = 1
    >>> y = efficient_capsnet_augment(x, torch.Generator().manual_seed(0))
    >>> y.shape, y.dtype
    (torch.Size([16, 1, 28, 28]), torch.float32)
    """
    check_images("images", images, batch="N")
    n, _, h, w = images.shape
    if h < 10 or w < 10:
        raise ValueError(f"images must be at least 10x10 for the efficient-capsnet augmentation; got {h}x{w}")
    if n == 0:
        return images.clone()
    p = _draw(n, h, w, generator)
    out = torch.where(p["rotate"][:, None, None, None], _rotate(images, p["angle"]), images)
    out = _roll(out, *_shift_amounts(out, p["direction"], p["amount"]))
    out = _squish(out, p["width_mod"], p["offset_mod"])
    return _erase(out, p["erase_row"], p["erase_col"])
