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
from typing import Callable, Dict

__all__ = ["register_augmentation", "unregister_augmentation", "get_augmentation", "list_augmentations"]

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
