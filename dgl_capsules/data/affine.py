"""Transformed MNIST sets: affNIST-style affine digits, MultiMNIST-style overlaid pairs, shift augmentation."""
import math

import torch
import torch.nn.functional as F

from .._checks import check_images
from .canvas import pad_to
from .datasets import ImageDataset, Splits
from .registry import get_dataset, register_dataset, register_test_set

__all__ = ["pad_to", "random_shift", "affine_transform", "random_affine", "affine_mnist", "multi_mnist", "MultiPairs",
           "multi_splits"]


def _check_images(images):
    check_images("images", images, batch="N")


def random_shift(images, max_shift, generator=None):
    """Shift every image by its own random integer offset in ``[-max_shift, max_shift]`` per axis.

    Pixels moved out of the frame are lost, the uncovered border is black
    (zero). This is the paper's training augmentation ("shifted by up to 2
    pixels in each direction with zero padding").

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(3, 1, 8, 8); x[:, :, 4, 4] = 1
    >>> y = random_shift(x, 2, torch.Generator().manual_seed(0))
    >>> y.shape, y.sum().item()
    (torch.Size([3, 1, 8, 8]), 3.0)
    """
    _check_images(images)
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    m = int(max_shift)
    padded = F.pad(images, (m, m, m, m))
    dy = torch.randint(0, 2 * m + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * m + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (N, H) rows of the padded image to read
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (N, W)
    idx = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_affine(images, generator=None, rotation=0.0, shear=0.0, scale=(1.0, 1.0), translation=0.0):
    r"""Move every image by its own random affine map, keeping its size.

    Per image: rotation angle uniform in ``±rotation`` degrees, horizontal
    shear uniform in ``±shear``, scale uniform in ``scale`` and translation
    uniform in ``±translation`` pixels per axis. The map
    :math:`p \mapsto R\,S_h\,s\,p + t` is applied about the image centre with
    bilinear resampling and a black border; the result is clamped to [0, 1].
    Used for :func:`affine_mnist` and as a training augmentation
    (``dgl-capsules train --rotate --scale``).

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(3, 1, 28, 28)
    >>> random_affine(x, torch.Generator().manual_seed(0), rotation=15, scale=(0.9, 1.1)).shape
    torch.Size([3, 1, 28, 28])
    >>> torch.allclose(random_affine(x), x, atol=1e-5)  # the identity map (bilinear rounding)
    True
    """
    _check_images(images)
    n, _, h, w = images.shape

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    angle = uniform(-rotation, rotation) * math.pi / 180
    sh = uniform(-shear, shear)
    s = uniform(*scale)
    t = uniform(-translation, translation), uniform(-translation, translation)
    return _warp(images, angle, sh, s, torch.stack(t, -1))


def _warp(images, angle, sh, s, t):
    r"""Images moved by :math:`p \mapsto R(angle)\,S_h(sh)\,s\,p + t` about their centre; one map per image
    (``angle`` radians, ``sh``, ``s`` ``(N,)`` and ``t`` ``(N, 2)`` pixels, all float64)."""
    n, _, h, w = images.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (N, 2, 2)
    shear_m = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    shear_m[:, 0, 1] = sh
    a = rot @ shear_m * s[:, None, None]  # (N, 2, 2) forward map in (x, y) normalised coordinates
    shift = t * 2 / torch.tensor([w, h], dtype=torch.float64)  # (N, 2) pixels -> normalised
    # NOTE: affine_grid asks, for every output pixel, where to read in the input: the inverse map.
    inv = torch.linalg.inv(a)
    theta = torch.cat([inv, -(inv @ shift[:, :, None])], -1).to(images.dtype)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0, 1)


def affine_transform(images, rotation=0.0, shear=0.0, scale=1.0, translation=(0.0, 0.0)):
    r"""Move every image by the same affine map, keeping its size (the map of :func:`random_affine`, fixed).

    :math:`p \mapsto R\,S_h\,s\,p + t` about the image centre: ``rotation``
    degrees (clockwise on screen: the rows grow downwards), horizontal ``shear``, ``scale``
    and ``translation`` ``(dx, dy)`` pixels, bilinear resampling, black
    border, clamped to [0, 1].

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1
    >>> affine_transform(x, translation=(2, 0))[0, 0, 4].nonzero().flatten().tolist()
    [6]
    >>> torch.allclose(affine_transform(x, rotation=360), x, atol=1e-5)
    True
    """
    _check_images(images)
    n = images.shape[0]

    def each(v):
        return torch.full((n,), float(v), dtype=torch.float64)

    t = torch.tensor([[float(translation[0]), float(translation[1])]], dtype=torch.float64).expand(n, 2)
    return _warp(images, each(rotation) * math.pi / 180, each(shear), each(scale), t)


def affine_mnist(dataset, size=40, seed=0, rotation=20.0, shear=0.2, scale=(0.8, 1.2), translation=4.0):
    r"""An affNIST-style set: every digit padded to ``size × size`` and moved by its own random affine map.

    For each image independently: rotation angle uniform in
    ``±rotation`` degrees, horizontal shear uniform in ``±shear``, scale
    uniform in ``scale`` and translation uniform in ``±translation`` pixels
    per axis. The map :math:`p \mapsto R\,S_h\,s\,p + t` is applied about the
    canvas centre with bilinear resampling. Deterministic for a given seed.

    Parameters
    ----------
    dataset : ImageDataset
        Usually a test split (e.g. ``mnist5k().test``).
    size : int
        Canvas side (40 as in affNIST).
    seed : int
        Seed of the random maps.

    Returns
    -------
    ImageDataset
        Same labels, images ``(N, C, size, size)``.

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.rand(4, 1, 28, 28), torch.arange(4))
    >>> affine_mnist(ds).images.shape
    torch.Size([4, 1, 40, 40])
    """
    x = pad_to(dataset.images, size)
    out = random_affine(x, torch.Generator().manual_seed(seed), rotation=rotation, shear=shear, scale=scale,
                        translation=translation)
    return ImageDataset(out, dataset.labels.clone(), dataset.n_classes)


def multi_mnist(dataset, n=None, size=36, max_shift=4, seed=0):
    """MultiMNIST-style pairs: two digits of different classes, each shifted by up to ``max_shift`` px, overlaid.

    Each pair takes a random digit and a random partner of another class from
    ``dataset``, centres both on a ``size × size`` canvas, shifts each by
    its own integer offset in ``±max_shift`` per axis and overlays them
    (pixel-wise sum clipped to 1). Labels are two-hot ``(n, K)``.

    Parameters
    ----------
    dataset : ImageDataset
        Source digits with integer labels.
    n : int, optional
        Number of pairs (default ``len(dataset)``).

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> pairs = multi_mnist(ds, n=5)
    >>> pairs.images.shape, pairs.labels.sum(1).tolist()
    (torch.Size([5, 1, 36, 36]), [2.0, 2.0, 2.0, 2.0, 2.0])
    """
    labels = dataset.labels
    if labels.dim() != 1:
        raise ValueError(f"dataset labels must be class indices (N,); got {tuple(labels.shape)}")
    if len(torch.unique(labels)) < 2:
        raise ValueError("multi_mnist needs digits of at least two classes")
    n = len(dataset) if n is None else int(n)
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(0, len(dataset), (n,), generator=g)
    second = torch.randint(0, len(dataset), (n,), generator=g)
    clash = labels[first] == labels[second]
    while clash.any():  # redraw partners of the same class
        second[clash] = torch.randint(0, len(dataset), (int(clash.sum()),), generator=g)
        clash = labels[first] == labels[second]
    canvas = pad_to(dataset.images, size)
    a = random_shift(canvas[first], max_shift, g)
    b = random_shift(canvas[second], max_shift, g)
    k = dataset.n_classes
    y = F.one_hot(labels[first], k) + F.one_hot(labels[second], k)
    return ImageDataset((a + b).clamp(max=1), y.float(), k)


MULTI_PAIRS_PER_DIGIT = 10


class MultiPairs(ImageDataset):
    """MultiMNIST pairs of ``digits`` that are drawn anew for every epoch.

    ``set_epoch(e)`` replaces the images and labels by
    ``multi_mnist(digits, n, size, seed=seed + 7919 * e)``; the trainer calls
    it at the start of every epoch, so a run sees ``n`` fresh pairs each
    epoch, the same ones on every rank and after ``--resume``. Epoch 0 is the
    state after construction.

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> pairs = MultiPairs(ds, n=4)
    >>> first = pairs.images.clone()
    >>> pairs.set_epoch(1)
    >>> bool(torch.equal(pairs.images, first)), len(pairs)
    (False, 4)
    """

    def __init__(self, digits, n, size=36, max_shift=4, seed=0):
        self.digits, self.n, self.size, self.max_shift, self.seed = digits, int(n), size, max_shift, seed
        self.set_epoch(0)

    def set_epoch(self, epoch):
        """Draw the pairs of ``epoch``."""
        pairs = multi_mnist(self.digits, self.n, self.size, self.max_shift, seed=self.seed + 7919 * int(epoch))
        super().__init__(pairs.images, pairs.labels, pairs.n_classes)
        self.epoch = int(epoch)


def multi_splits(splits, pairs_per_digit=MULTI_PAIRS_PER_DIGIT, size=36, seed=0):
    """MultiMNIST-style train / val / test splits made from the digits of ``splits``, split by split.

    Pairs never mix digits of two splits. The test pairs are
    ``multi_mnist(splits.test, size=size, seed=seed)``, the same set that
    ``dgl-capsules evaluate --on multi`` scores; validation has one pair per
    digit (seed ``seed + 1``). Training is a :class:`MultiPairs` of
    ``pairs_per_digit`` pairs per training digit (seed ``seed + 2``), drawn
    anew every epoch.

    Examples
    --------
    >>> import torch
    >>> from dgl_capsules.data import Splits
    >>> ds = ImageDataset(torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> s = multi_splits(Splits(ds, ds, ds), pairs_per_digit=3)
    >>> [len(part) for part in s], tuple(s.train.labels.shape)
    ([18, 6, 6], (18, 3))
    """
    if not isinstance(pairs_per_digit, int) or pairs_per_digit < 1:
        raise ValueError(f"pairs_per_digit must be a positive integer; got {pairs_per_digit!r}")
    return Splits(
        MultiPairs(splits.train, pairs_per_digit * len(splits.train), size=size, seed=seed + 2),
        multi_mnist(splits.val, size=size, seed=seed + 1),
        multi_mnist(splits.test, size=size, seed=seed),
    )


MULTI_MIN_SIZE = 36
MULTI_MAX_TRAIN_PAIRS = 60_000


def _load_multi(path, image_size=None):
    """``multi:SPEC``: :func:`multi_splits` of the digits of ``get_dataset(SPEC)``, drawn at ``image_size``.

    Up to :data:`MULTI_PAIRS_PER_DIGIT` training pairs per digit, and at most
    :data:`MULTI_MAX_TRAIN_PAIRS` per epoch (the full MNIST gets one pair per
    digit, 55,000 fresh pairs every epoch, 0.3 GB instead of 2.9 GB).
    """
    base = get_dataset(path)
    if base.train.labels.dim() != 1:
        raise ValueError(f"{path!r} already holds pairs")
    size = MULTI_MIN_SIZE if image_size is None else image_size
    if size < MULTI_MIN_SIZE:
        raise ValueError(f"image_size must be at least {MULTI_MIN_SIZE} for MultiMNIST pairs; got {size}")
    per_digit = max(1, min(MULTI_PAIRS_PER_DIGIT, MULTI_MAX_TRAIN_PAIRS // len(base.train)))
    return multi_splits(base, pairs_per_digit=per_digit, size=size)  # drawn at the final size


register_dataset("multi", _load_multi, path="required", metavar="SPEC",
                 help="MultiMNIST-style 36x36 pairs of the digits of SPEC (e.g. multi:mnist5k), two-hot labels; "
                      "new training pairs every epoch")


def _pairs(splits):
    return splits.test.labels.dim() == 2


def _affine_test_set(splits, seed):
    if _pairs(splits):
        raise ValueError("on: 'affine': the model was trained on MultiMNIST pairs; use test or multi")
    return affine_mnist(splits.test, size=40, seed=seed)


def _multi_test_set(splits, seed):
    return splits.test if _pairs(splits) else multi_mnist(splits.test, size=36, seed=seed)


register_test_set("affine", _affine_test_set,
                  help="40x40 affNIST-style: every test digit padded and moved by its own random affine map")
register_test_set("multi", _multi_test_set,
                  help="36x36 MultiMNIST-style pairs of test digits (a model trained on pairs: its own test pairs)")
