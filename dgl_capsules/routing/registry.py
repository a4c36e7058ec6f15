"""Routing algorithms by name: what pictures, analysis, docs and tests know of each family.

Every routing family registers itself where it is defined, next to its
function::

    register_routing("dynamic", dynamic_routing, label="dynamic routing", ...)

and everything outside :mod:`dgl_capsules.routing` and :mod:`dgl_capsules.nn`
learns a family's label, which axis its couplings are normalised over, which
fields its :class:`~dgl_capsules.routing.RoutingResult` fills and how to test
it from :func:`get_routing`, never from the class of a layer.

Examples
--------
>>> from dgl_capsules.routing import get_routing, list_routings
>>> "dynamic" in list_routings()
True
>>> spec = get_routing("dynamic")
>>> spec.label, spec.normalise, spec.outputs
('dynamic routing', 'parents', ('poses', 'coupling'))
"""
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from ._common import mean_vote_length

__all__ = ["RoutingSpec", "register_routing", "unregister_routing", "get_routing", "list_routings",
           "NORMALISATIONS", "STRENGTHS", "KINDS"]

#: ``"parents"``: the couplings of every child sum to 1 over its parents; ``"children"``: those of every
#: parent sum to 1 over its children; ``"none"``: no normalisation is promised.
NORMALISATIONS = ("parents", "children", "none")

#: How a family's capsules say how present they are: ``"length"`` (the length of the pose, as in dynamic
#: routing; a child's strength is the mean length of its votes), ``"activation"`` (activations that are
#: probabilities, as in EM routing) or ``"logit"`` (activations that are logits, as in Heinsen routing:
#: the strength is their sigmoid).
STRENGTHS = ("length", "activation", "logit")

#: What each input of a routing function is: ``"edge"`` ``(|E|, B, ...)`` (the votes first), ``"child"``
#: ``(N_src, B, ...)``, ``"edge_value"`` ``(|E|,)`` or a scalar, ``"parent_value"`` ``(N_dst,)`` or a scalar,
#: ``"const"`` anything passed through unchanged.
KINDS = ("edge", "child", "edge_value", "parent_value", "const")

_OUTPUTS = ("poses", "activations", "sigma2", "coupling")


def _resolve(ref):
    """A callable, or ``"package.module:attribute"`` imported on first use (references live in testing.py)."""
    if ref is None or callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class RoutingSpec:
    """One registered routing family.

    Attributes
    ----------
    name : str
        The registry name (``"dynamic"``).
    fn : callable
        ``fn(g, votes, *inputs, n_iters=..., return_trace=False, ...) -> RoutingResult``.
    label : str
        Human label for pictures and tables (``"dynamic routing"``).
    citation : str
        Where the algorithm is published (``"Sabour, Frosst & Hinton 2017"``).
    normalise : str
        One of :data:`NORMALISATIONS`: which couplings sum to 1.
    outputs : tuple of str
        The :class:`~dgl_capsules.routing.RoutingResult` fields the family fills
        (``coupling`` always).
    strength : str
        One of :data:`STRENGTHS`: how its capsules' presence is read
        (:meth:`parent_strength`, :meth:`child_strength`).
    inputs : tuple of str
        What ``fn`` takes after the graph, in order, each one of
        :data:`KINDS` (``("edge",)`` for votes only;
        ``("edge", "child", "edge_value", "edge_value")`` for Heinsen 2019).
    iterative : bool
        Whether ``fn`` takes ``n_iters``.
    reference : callable or str or None
        Dense float64 reference ``reference(g, *inputs, n_iters=...) -> RoutingResult``
        with the same inputs as ``fn``, written from the paper's equations without
        DGL (usually ``"dgl_capsules.testing:..."``, imported on first use).
    example : callable or str or None
        ``example(g, batch, generator) -> tuple`` of float64 inputs for ``fn`` on
        ``g`` (the routing contract's ``make_inputs``).
    defaults : dict
        Keyword arguments the contract and generic layers pass to ``fn``.
    vote_dims : int
        Trailing dims of a vote: 1 for vectors ``(|E|, *, D)``, 2 for
        matrices ``(|E|, *, C, H)``.
    """

    name: str
    fn: Callable
    label: str
    citation: str = ""
    normalise: str = "parents"
    outputs: Tuple[str, ...] = ("poses", "coupling")
    strength: str = "length"
    inputs: Tuple[str, ...] = ("edge",)
    iterative: bool = True
    reference: Optional[Union[Callable, str]] = None
    example: Optional[Union[Callable, str]] = None
    defaults: dict = field(default_factory=dict)
    vote_dims: int = 1

    def get_reference(self):
        """The dense reference as a callable (``None`` if the family has none)."""
        return _resolve(self.reference)

    def get_example(self):
        """The contract's input maker as a callable (``None`` if the family has none)."""
        return _resolve(self.example)

    @property
    def strength_name(self):
        """What a strength is, in words: ``"vote length"`` or ``"activation"``."""
        return "vote length" if self.strength == "length" else "activation"

    def parent_strength(self, result):
        """How present every parent is, ``(N_dst, *)`` in [0, 1]: pose lengths or (sigmoid of) activations."""
        if self.strength == "length":
            return result.poses.flatten(-self.vote_dims).norm(dim=-1)
        return torch.sigmoid(result.activations) if self.strength == "logit" else result.activations

    def child_strength(self, g, votes=None, a_in=None):
        """What every child carries, ``(N_src, *)``: the mean length of its votes (``votes`` ``(|E|, *, ...)``)
        for ``"length"`` families, else its activation ``a_in`` ``(N_src, *)`` (the sigmoid of a logit)."""
        if self.strength == "length":
            return mean_vote_length(g, votes, self.vote_dims)
        return torch.sigmoid(a_in) if self.strength == "logit" else a_in


_ROUTINGS: Dict[str, RoutingSpec] = {}


def register_routing(name, fn, *, label, citation="", normalise="parents", outputs=("poses", "coupling"),
                     strength="length", inputs=("edge",), iterative=True, reference=None, example=None,
                     defaults=None, vote_dims=1):
    """Register routing function ``fn`` under ``name``; returns ``fn`` (so it also works as a call after a def).

    Parameters are the fields of :class:`RoutingSpec`.

    Raises
    ------
    ValueError
        If ``name`` is taken or empty, ``normalise``, ``outputs``, ``strength`` or
        ``inputs`` name something unknown, ``vote_dims`` is not 1 or 2, or
        ``defaults`` names a keyword that ``fn`` does not take.
    TypeError
        If ``fn`` is not callable.

    Examples
    --------
    >>> import dgl_capsules as dc
    >>> def half(g, votes, n_iters=1, return_trace=False):
    ...     r = dc.routing.dynamic_routing(g, votes, n_iters=1, return_trace=return_trace)
    ...     return r
    >>> _ = register_routing("half", half, label="one pass of uniform couplings")
    >>> get_routing("half").label
    'one pass of uniform couplings'
    >>> unregister_routing("half")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    if name in _ROUTINGS:
        raise ValueError(f"name: a routing {name!r} is already registered ({_ROUTINGS[name].label})")
    if not callable(fn):
        raise TypeError(f"fn must be a routing function; got {type(fn).__name__}")
    if not isinstance(label, str) or not label:
        raise ValueError(f"label must be a non-empty string; got {label!r}")
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}; got {normalise!r}")
    if strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {STRENGTHS}; got {strength!r}")
    outputs = tuple(outputs)
    unknown = [o for o in outputs if o not in _OUTPUTS]
    if unknown or "coupling" not in outputs:
        raise ValueError(f"outputs must name RoutingResult fields {_OUTPUTS}, coupling among them; got {outputs}")
    inputs = tuple(inputs)
    if not inputs or inputs[0] != "edge" or any(k not in KINDS for k in inputs):
        raise ValueError(f"inputs must start with 'edge' (the votes) and use only {KINDS}; got {inputs}")
    if vote_dims not in (1, 2) or isinstance(vote_dims, bool):
        raise ValueError(f"vote_dims must be 1 (vector votes) or 2 (matrix votes); got {vote_dims!r}")
    defaults = dict(defaults or {})
    unknown = [k for k in defaults if not takes_keyword(fn, k)]
    if unknown:
        raise ValueError(f"defaults: {getattr(fn, '__name__', 'fn')} takes no keyword {', '.join(unknown)}")
    _ROUTINGS[name] = RoutingSpec(
        name=name, fn=fn, label=label, citation=citation, normalise=normalise, outputs=outputs, strength=strength,
        inputs=inputs, iterative=bool(iterative), reference=reference, example=example, defaults=defaults,
        vote_dims=vote_dims,
    )
    return fn


def takes_keyword(fn, name):
    """Whether ``fn`` accepts the keyword argument ``name`` (by name, or through ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return True
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def unregister_routing(name):
    """Remove ``name`` from the registry (for tests and notebooks that register toy routings)."""
    get_routing(name)
    del _ROUTINGS[name]


def get_routing(name):
    """The :class:`RoutingSpec` registered as ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :func:`list_routings`.
    """
    if not isinstance(name, str) or name not in _ROUTINGS:
        raise ValueError(f"routing: unknown routing {name!r}; expected one of {', '.join(list_routings())}")
    return _ROUTINGS[name]


def list_routings():
    """Names of the registered routing families, sorted.

    >>> list_routings()[:3]
    ['dynamic', 'em', 'heinsen']
    """
    return sorted(_ROUTINGS)
