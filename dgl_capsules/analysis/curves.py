"""Robustness curves: accuracy as a function of one transformation's size, for any set of trained models.

One affine test set gives one number; a curve per transformation (rotation,
shear, scale, translation) and per model shows where capsules win or lose
against a CNN. The transformations are those of
:func:`~dgl_capsules.data.affine.random_affine`, each applied alone at a fixed
size to every image (:func:`~dgl_capsules.data.affine.affine_transform`).

Examples
--------
>>> import torch, dgl_capsules as dc
>>> from dgl_capsules.data import ImageDataset
>>> data = ImageDataset(torch.rand(6, 1, 28, 28), torch.arange(6) % 3)
>>> nets = {"capsnet": dc.models.get_model("capsnet", "tiny"), "cnn": dc.models.get_model("cnn", "tiny")}
>>> out = robustness(nets, data, "rotation", [0, 30, 60], progress=False)
>>> out["transform"], out["unit"], out["values"], sorted(out["models"]), len(out["models"]["cnn"])
('rotation', 'degrees', [0.0, 30.0, 60.0], ['capsnet', 'cnn'], 3)
"""
import math

import torch
from tqdm.auto import tqdm

from ..data.affine import affine_transform, pad_to
from ..evaluation import correct
from ._inputs import check_positive_int, check_samples

__all__ = ["TRANSFORMS", "DEFAULT_VALUES", "transform_images", "robustness"]

#: The transformations and the unit of their size.
TRANSFORMS = {"rotation": "degrees", "shear": "horizontal shear factor", "scale": "factor",
              "translation": "pixels to the right"}

#: Sizes of each transformation that :func:`robustness` uses by default (the identity first).
DEFAULT_VALUES = {
    "rotation": [0, 10, 20, 30, 45, 60, 90],
    "shear": [0, 0.1, 0.2, 0.3, 0.4, 0.5],
    "scale": [1.0, 0.7, 0.8, 0.9, 1.1, 1.2, 1.3],
    "translation": [0, 1, 2, 3, 4, 6, 8],
}


def transform_images(images, transform, value):
    """``images`` ``(N, C, H, W)`` moved by one transformation of size ``value`` (see :data:`TRANSFORMS`).

    Raises
    ------
    ValueError
        If ``transform`` is unknown, ``value`` is not a finite number, or a scale is not positive.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"values must be finite numbers; got {value!r}")
    if transform == "scale" and value <= 0:
        raise ValueError(f"values: a scale must be > 0; got {value!r}")
    if transform == "translation":
        return affine_transform(images, translation=(value, 0.0))
    return affine_transform(images, **{transform: value})


def _at_size(x, model):
    size = getattr(model, "image_size", None)
    if size is None or x.shape[-1] == size:
        return x
    if x.shape[-1] > size:
        raise ValueError(f"data: the images are {x.shape[-1]}x{x.shape[-1]} but the model "
                         f"{type(model).__name__} takes {size}x{size}")
    return pad_to(x, size)


@torch.no_grad()
def robustness(models, data, transform, values=None, *, batch_size=256, max_samples=None, progress=True):
    """Accuracy of every model on ``data`` moved by ``transform`` of each size in ``values``.

    Every image gets the same transformation of each size on its own canvas
    (black border), then is centred on a model's larger canvas if the model
    takes larger images (e.g. a model trained on 40x40 affine digits). Models
    run in eval mode and are left as they were.

    Parameters
    ----------
    models : dict
        ``{name: model}``: trained image models (``model(x)`` and ``model.scores(out)``).
    data : ImageDataset
        Usually a test split.
    transform : str
        One of :data:`TRANSFORMS`: ``"rotation"`` (degrees), ``"shear"``, ``"scale"`` or ``"translation"``
        (pixels to the right).
    values : sequence of float, optional
        The sizes (default :data:`DEFAULT_VALUES`).
    batch_size : int
    max_samples : int, optional
        Use only the first ``max_samples`` samples.
    progress : bool

    Returns
    -------
    dict
        ``transform``, ``unit``, ``values``, ``samples`` and ``models`` (``{name: [accuracy per value]}``),
        JSON-ready; :func:`~dgl_capsules.analysis.plot_robustness` draws it.

    Raises
    ------
    ValueError
        If ``models`` is empty or not a dict, ``data`` is not an image data set, ``transform`` is unknown, a value
        is not a finite number (or a scale not positive), ``batch_size`` or ``max_samples`` is out of range, or a
        model takes images smaller than the data's.
    """
    if not isinstance(models, dict) or not models:
        raise ValueError(f"models must be a non-empty dict of name -> model; got {type(models).__name__}")
    n = check_samples(data, max_samples)
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
    values = list(DEFAULT_VALUES[transform] if values is None else values)
    if not values:
        raise ValueError("values must hold at least one size")
    check_positive_int("batch_size", batch_size)
    images, labels = data.images[:n], data.labels[:n]
    moved = [transform_images(images[:1], transform, v) for v in values]  # every value checked before the work
    del moved
    curves = {name: [] for name in models}
    modes = {name: m.training for name, m in models.items()}
    try:
        for m in models.values():
            m.eval()
        for v in tqdm(values, desc=transform, leave=False, disable=not progress):
            right = dict.fromkeys(models, 0)
            for i in range(0, n, batch_size):
                x = transform_images(images[i:i + batch_size], transform, v)
                for name, m in models.items():
                    right[name] += int(correct(m.scores(m(_at_size(x, m))), labels[i:i + batch_size]).sum())
            for name in models:
                curves[name].append(right[name] / n)
    finally:
        for name, m in models.items():
            m.train(modes[name])
    return dict(transform=transform, unit=TRANSFORMS[transform], values=[float(v) for v in values], samples=n,
                models=curves)
