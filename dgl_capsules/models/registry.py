"""Models by name: a registry of image models and their presets, and the protocol they follow.

Every image model registers itself where it is defined, with its presets (named
settings) as data next to it::

    PRESETS = {"small": dict(conv_channels=64, ...), ...}

    @register_model("capsnet", presets=PRESETS)
    class CapsNet(nn.Module): ...

and :func:`get_model` builds one by name; the training loop, the command line
and the reproduction tables only know names. A model (a class or a factory
function) is registered once; its *settings* are the keyword parameters of its
constructor, so a preset can only name settings that exist.

Examples
--------
>>> from dgl_capsules.models import get_model, list_models, model_presets
>>> list_models()
['capsnet', 'cnn', 'efficient-capsnet', 'heinsen', 'matrixcaps']
>>> model_presets("capsnet")
['paper', 'small', 'tiny']
>>> get_model("capsnet", "tiny", n_iters=1).digits.n_iters
1
"""
import inspect
from typing import Callable, Dict, List, NamedTuple, Optional, Protocol, runtime_checkable

import torch

from ..routing.registry import get_routing

__all__ = [
    "ImageModel", "RoutedLayer", "register_model", "unregister_model", "get_model", "check_model", "list_models",
    "model_presets",
    "model_settings", "n_parameters",
]


class RoutedLayer(NamedTuple):
    """One routed capsule layer of a model, as :meth:`ImageModel.routing` returns it.

    Everything :mod:`dgl_capsules.viz` and analysis code need of a layer,
    whatever its routing family: they read the family's label, normalisation
    and result fields from the registry (:func:`~dgl_capsules.routing.get_routing`).

    Attributes
    ----------
    name : str
        The layer's name in the model (``"digitcaps"``, ``"convcaps1"``, ...).
    graph : dgl.DGLGraph
        Its capsule graph: children (source nodes) to parents (destination nodes).
    result : RoutingResult
        The routing of the batch on that graph, with its per-iteration ``trace``.
    parent_strength : torch.Tensor
        How present every parent capsule is, ``(N_dst, B)`` in [0, 1]: capsule
        lengths or activations, as the family reads them
        (:meth:`~dgl_capsules.routing.RoutingSpec.parent_strength`).
    routing : str
        The registry name of the routing family (``"dynamic"``, ``"em"``, ...).
    child_strength : torch.Tensor or None
        What every child carries, ``(N_src, B)``: its mean vote length or its
        activation (:meth:`~dgl_capsules.routing.RoutingSpec.child_strength`).
    child_types, parent_types : int or None
        Capsule types per grid position of the children and parents, where
        they sit on a convolutional grid (child id ``position * types + type``).
    votes : torch.Tensor or None
        The votes ``(|E|, B, ...)`` that were routed, where the model records
        them (what the agreement between votes and parent poses needs).
    """

    name: str
    graph: "dgl.DGLGraph"
    result: "dgl_capsules.routing.RoutingResult"
    parent_strength: torch.Tensor
    routing: str
    child_strength: Optional[torch.Tensor] = None
    child_types: Optional[int] = None
    parent_types: Optional[int] = None
    votes: Optional[torch.Tensor] = None

    @classmethod
    def of(cls, name, graph, result, routing, votes=None, a_in=None, child_types=None, parent_types=None):
        """The entry of a layer routed by family ``routing``, strengths read the family's way.

        ``votes`` ``(|E|, B, ...)`` give a length family's child strengths (mean
        vote lengths), ``a_in`` ``(N_src, B)`` an activation family's (its
        activations or logits); the parent strengths come from ``result``.
        The votes are kept in the entry when given.
        """
        spec = get_routing(routing)
        child = None if votes is None and a_in is None else spec.child_strength(graph, votes=votes, a_in=a_in)
        return cls(name, graph, result, spec.parent_strength(result), routing, child, child_types, parent_types,
                   votes)


@runtime_checkable
class ImageModel(Protocol):
    """What :mod:`dgl_capsules.train` and :mod:`dgl_capsules.viz` rely on in an image model.

    A model is a :class:`torch.nn.Module` with these methods; every model of
    :func:`list_models` follows it (the CNN baseline has no routed layers).

    - ``out = model(x, y=None)``: images ``x`` ``(B, C, H, W)`` in [0, 1];
      labels ``y`` ``(B,)`` or multi-hot ``(B, K)`` may steer a decoder while
      training. ``out`` is whatever the model's loss and scores read.
    - ``model.loss(out, y, step)``: a scalar tensor; ``step`` is the optimiser
      step (schedules such as the spread-loss margin read it).
    - ``model.scores(out)``: class scores ``(B, K)``; the highest is the prediction.
    - ``model.routing(x)``: a list of :class:`RoutedLayer`, one per routed layer.
    """

    def forward(self, x, y=None): ...

    def loss(self, out, y, step=None): ...

    def scores(self, out): ...

    def routing(self, x) -> List[RoutedLayer]: ...


class _Entry(NamedTuple):
    factory: Callable
    presets: Dict[str, dict]
    settings: List[str]


_MODELS: Dict[str, _Entry] = {}


def _settings_of(factory):
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _display(name, factory):
    return factory.__name__ if inspect.isclass(factory) else f"model {name!r}"


def register_model(name, presets=None):
    """Register a model class (or a factory function) under ``name``; use as a decorator.

    Parameters
    ----------
    name : str
        The name :func:`get_model` takes.
    presets : dict of str to dict, optional
        Named settings, e.g. ``{"small": dict(conv_channels=64)}``; each key of
        a preset must be a keyword parameter of the model.

    Returns
    -------
    callable
        A decorator that registers its argument and returns it unchanged.

    Raises
    ------
    ValueError
        If ``name`` is taken, or a preset names a setting the model does not have.

    Examples
    --------
    >>> from torch import nn
    >>> @register_model("toy-linear", presets={"wide": dict(width=64)})
    ... class ToyLinear(nn.Linear):
    ...     def __init__(self, in_channels=1, image_size=28, n_classes=10, width=8):
    ...         super().__init__(in_channels * image_size ** 2, n_classes)
    >>> get_model("toy-linear", "wide").weight.shape
    torch.Size([10, 784])
    >>> unregister_model("toy-linear")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    presets = dict(presets or {})

    def decorate(factory):
        if name in _MODELS:
            raise ValueError(f"name: a model {name!r} is already registered ({_MODELS[name].factory.__name__})")
        settings = _settings_of(factory)
        for preset, values in presets.items():
            unknown = sorted(set(values) - set(settings))
            if unknown:
                raise ValueError(
                    f"presets: preset {preset!r} of {_display(name, factory)} names unknown setting {unknown[0]!r}; "
                    f"settings are {', '.join(settings)}"
                )
        _MODELS[name] = _Entry(factory, presets, settings)
        return factory

    return decorate


def unregister_model(name):
    """Remove ``name`` from the registry (for tests and notebooks that register toy models)."""
    _entry(name)
    del _MODELS[name]


def _entry(name):
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"model: unknown model {name!r}; expected one of {', '.join(list_models())}")
    return _MODELS[name]


def list_models():
    """Names of the registered models, sorted.

    >>> list_models()
    ['capsnet', 'cnn', 'efficient-capsnet', 'heinsen', 'matrixcaps']
    """
    return sorted(_MODELS)


def model_presets(name):
    """Sorted preset names of model ``name`` (empty if it has none).

    >>> model_presets("matrixcaps")
    ['paper', 'small', 'tiny']
    """
    return sorted(_entry(name).presets)


def model_settings(name):
    """The keyword settings model ``name`` takes (its constructor's parameters, in order).

    >>> model_settings("cnn")[:6]
    ['in_channels', 'image_size', 'n_classes', 'width', 'dropout', 'match_capsnet']
    """
    return list(_entry(name).settings)


def get_model(name, preset=None, weights=None, **settings):
    """Build the model ``name`` with the settings of ``preset``, replaced by single ``settings``.

    Parameters
    ----------
    name : str
        One of :func:`list_models`.
    preset : str, optional
        One of :func:`model_presets` ``(name)``; without it, the model's defaults
        (with ``weights``: the preset the weights were trained with).
    weights : str, optional
        Load shipped trained weights (:func:`~dgl_capsules.models.list_weights`),
        e.g. ``"mnist"``: the model is built with the settings they were trained
        with, their file's SHA-256 is checked, and the model is returned in eval
        mode. Nothing is downloaded.
    **settings
        Keyword settings of the model (:func:`model_settings`), e.g. the
        input ``in_channels``, ``image_size`` and ``n_classes``, or single
        widths; they replace the preset's values (with ``weights``, only the
        values the weights were trained with are accepted).

    Returns
    -------
    torch.nn.Module
        A freshly initialised model, or the trained one with ``weights``.

    Raises
    ------
    ValueError
        For an unknown ``model`` name, ``preset``, setting or ``weights`` name (the
        message names which and lists the valid ones); the model's own
        ``ValueError`` / ``TypeError`` for a bad value; for weights whose file
        was altered.
    FileNotFoundError
        If a shipped weights file is missing.

    Examples
    --------
    >>> net = get_model("matrixcaps", "tiny", image_size=20, n_classes=4)
    >>> type(net).__name__, net.classes.n_classes
    ('MatrixCapsNet', 4)
    """
    from .weights import check_settings, entry_for, load_weights

    entry = entry_for(name, preset, weights)
    if entry is not None:
        check_settings(entry, settings)
        preset, settings = entry.preset, dict(entry.settings, **entry.shape)
    spec = check_model(name, preset, **settings)
    kwargs = dict(spec.presets.get(preset, {}), **settings)
    model = spec.factory(**kwargs)
    return model if entry is None else load_weights(model, entry).eval()


def check_model(name, preset=None, **settings):
    """Raise what :func:`get_model` raises for an unknown name, preset or setting, without building the model.

    For checking a configuration before any data is loaded; the values of
    the settings are checked by the model itself when it is built.

    >>> check_model("capsnet", "small", n_iters=1) is not None
    True
    """
    entry = _entry(name)
    if preset is not None and preset not in entry.presets:
        if not entry.presets:
            raise ValueError(f"preset: {name} has no presets; got {preset!r}")
        raise ValueError(
            f"preset: unknown {name} preset {preset!r}; expected one of {', '.join(sorted(entry.presets))}"
        )
    unknown = sorted(set(settings) - set(entry.settings))
    if unknown:
        raise ValueError(
            f"settings: {name} has no setting {unknown[0]!r}; settings are {', '.join(entry.settings)}"
        )
    return entry


def n_parameters(model):
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
