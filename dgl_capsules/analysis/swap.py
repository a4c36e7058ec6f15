"""Test-time routing swap: how much does a trained network need its routing?

:func:`swapped_routing` changes the routing of every routed layer of a model
for the duration of a ``with`` block, through the layers' routing settings
and the routing registry only (no model-specific code): uniform couplings,
random couplings, or another number of iterations. :func:`routing_swap`
scores the model under each swap.

A routed layer is any submodule whose ``routing`` attribute names a
registered family (:func:`~dgl_capsules.routing.list_routings`); its routing
settings are its ``routing_kwargs`` dict, or else its attributes named as the
family function's keywords (``n_iters``, ``uniform``, ...).

Examples
--------
>>> import torch, dgl_capsules as dc
>>> net = dc.models.get_model("capsnet", "tiny").eval()
>>> x = torch.rand(2, 1, 28, 28)
>>> with swapped_routing(net, "uniform") as layers:
...     (layer,) = net.routing(x)
>>> layers, layer.result.coupling.unique().tolist()
(['digits'], [0.10000000149011612])
>>> net.digits.n_iters
3
"""
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from ..evaluation import correct, mcnemar, pack_correct
from ..routing import first_coupling, get_routing, list_routings
from ..routing.registry import takes_keyword
from ._inputs import check_positive_int, check_samples

__all__ = ["MODES", "SwappedLayers", "routed_modules", "swap_plans", "swapped_routing", "random_coupling",
           "routing_swap"]

#: The swaps: ``"uniform"`` couplings (every child's equal over its parents), ``"random"`` couplings (drawn
#: uniformly from the simplex of every child's parents, anew for every input) and ``"iterations"`` (the
#: routing run ``n_iters`` times).
MODES = ("uniform", "random", "iterations")


def routed_modules(model):
    """``(name, module, spec)`` for every submodule of ``model`` whose ``routing`` attribute names a registered
    family (:class:`~dgl_capsules.routing.RoutingSpec`), in module order.

    Examples
    --------
    >>> import dgl_capsules as dc
    >>> [(n, s.name) for n, _, s in routed_modules(dc.models.get_model("matrixcaps", "tiny"))]
    [('caps1', 'em'), ('caps2', 'em'), ('classes', 'em')]
    """
    families = set(list_routings())
    return [(name, m, get_routing(m.routing)) for name, m in model.named_modules()
            if isinstance(getattr(m, "routing", None), str) and m.routing in families]


def _settings(module):
    kwargs = getattr(module, "routing_kwargs", None)
    return kwargs if isinstance(kwargs, dict) else None


def _get(module, key):
    kwargs = _settings(module)
    if kwargs is not None and key in kwargs:
        return kwargs[key]
    return getattr(module, key, None)


def _has(module, key):
    kwargs = _settings(module)
    return (kwargs is not None and key in kwargs) or key in vars(module) or hasattr(type(module), key)


def _set(module, key, value):
    kwargs = _settings(module)
    if kwargs is not None and key in kwargs:
        kwargs[key] = value
    else:
        setattr(module, key, value)


def _plan(name, module, spec, mode, n_iters):
    """The settings ``{key: value}`` that make ``module`` route as ``mode`` asks."""
    fn = spec.fn
    if mode == "iterations":
        if not spec.iterative or not _has(module, "n_iters"):
            raise ValueError(f"mode: layer {name!r} routes by {spec.name!r}, which has no iterations to change")
        plan = {"n_iters": n_iters}
        trained = _get(module, "n_iters")
        for key in vars(module).keys() | set(_settings(module) or ()):
            value = _get(module, key)
            # per-iteration schedules (EM's inverse temperatures) continue at their last value
            if (key != "n_iters" and takes_keyword(fn, key) and isinstance(value, (list, tuple))
                    and len(value) == trained and n_iters > trained):
                plan[key] = type(value)(list(value) + [value[-1]] * (n_iters - trained))
        return plan
    if mode == "random" and spec.normalise != "parents":
        raise ValueError(f"mode: random couplings are drawn over each child's parents; layer {name!r} routes by "
                         f"{spec.name!r}, normalised over {spec.normalise}")
    if takes_keyword(fn, "uniform") and _has(module, "uniform"):
        return {"uniform": True}  # a switch of the family's own: one pass with uniform couplings
    if spec.iterative and _has(module, "n_iters"):
        return {"n_iters": 1}  # every family's first pass routes with uniform couplings
    raise ValueError(f"mode: layer {name!r} routes by {spec.name!r}, which has neither a uniform switch nor "
                     "iterations; it cannot route with given couplings")


def random_coupling(generator):
    """A :func:`~dgl_capsules.routing.first_coupling` maker of random couplings: for every child and input,
    a point drawn uniformly from the simplex over its parents (normalised exponential draws).

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(3, 4)
    >>> c = random_coupling(torch.Generator().manual_seed(0))(g, (5,), torch.zeros(()))
    >>> c.shape, torch.zeros(3, 5).index_add_(0, g.edges()[0], c).allclose(torch.ones(3, 5))
    (torch.Size([12, 5]), True)
    """
    def make(g, batch_shape, like):
        src = g.edges()[0].long().to(like.device)
        e = torch.empty((g.num_edges(),) + tuple(batch_shape), dtype=torch.float64).exponential_(
            generator=generator).to(like.device)  # (E, *)
        total = e.new_zeros((g.num_src_nodes(),) + e.shape[1:]).index_add_(0, src, e)  # (N_src, *)
        return (e / total[src]).to(like.dtype)
    return make


class SwappedLayers(list):
    """The names of the layers :func:`swapped_routing` swapped; ``first_couplings`` counts the couplings drawn
    by ``"random"`` (one per routed layer per forward pass when every family honours them)."""

    first_couplings = 0


def swap_plans(model, mode, n_iters=None):
    """``(name, module, settings)`` for every routed layer: what :func:`swapped_routing` sets (see there).

    Raises
    ------
    ValueError
        As :func:`swapped_routing`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if mode == "iterations":
        if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
            raise ValueError(f"n_iters must be an integer >= 1 for mode 'iterations'; got {n_iters!r}")
    elif n_iters is not None:
        raise ValueError(f"n_iters is only for mode 'iterations'; got n_iters={n_iters!r} with mode {mode!r}")
    layers = routed_modules(model)
    if not layers:
        raise ValueError(f"model: {type(model).__name__} has no routed layers (submodules whose routing names a "
                         f"registered family of {', '.join(list_routings())})")
    return [(name, m, _plan(name, m, spec, mode, n_iters)) for name, m, spec in layers]


@contextmanager
def swapped_routing(model, mode, n_iters=None, seed=0):
    """Route every routed layer of ``model`` differently inside a ``with`` block; everything is restored after.

    - ``"uniform"``: every child's couplings are equal over its parents
      (:math:`1 / |\\mathcal{N}(i)|`): the family's own ``uniform`` switch
      where it has one (self-attention, whose learned bias is still added
      after the couplings), else one iteration (the first pass of every
      family routes with uniform couplings);
    - ``"random"``: the same single pass, starting from random couplings
      (:func:`random_coupling`, seeded by ``seed``) through
      :func:`~dgl_capsules.routing.first_coupling`;
    - ``"iterations"``: ``n_iters`` iterations of each layer's own routing;
      per-iteration schedules (EM's inverse temperatures) continue at their
      last value beyond the trained count.

    Only routing settings change (no parameter, buffer or graph), so the
    model is exactly as it was after the block.

    Parameters
    ----------
    model : torch.nn.Module
    mode : str
        One of :data:`MODES`.
    n_iters : int, optional
        The iterations of ``"iterations"`` (and only for it).
    seed : int
        Seed of the random couplings.

    Yields
    ------
    SwappedLayers
        The names of the swapped layers (a list; its ``first_couplings`` counts the random couplings drawn).

    Raises
    ------
    ValueError
        If ``mode`` is unknown, ``n_iters`` is missing, given to another mode or below 1, the model has no routed
        layer, or a layer's family cannot be swapped that way (a family without iterations has no iteration
        count; random couplings need couplings normalised over parents).
    """
    plans = swap_plans(model, mode, n_iters)
    saved = [(m, {k: _get(m, k) for k in plan}) for _, m, plan in plans]
    names = SwappedLayers(name for name, _, _ in plans)
    try:
        for _, m, plan in plans:
            for k, v in plan.items():
                _set(m, k, v)
        if mode == "random":
            make = random_coupling(torch.Generator().manual_seed(seed))

            def counted(g, batch_shape, like):
                names.first_couplings += 1
                return make(g, batch_shape, like)

            with first_coupling(counted):
                yield names
        else:
            yield names
    finally:
        for m, values in saved:
            for k, v in values.items():
                _set(m, k, v)


def _subset(data, max_samples):
    n = check_samples(data, max_samples)
    return data.images[:n], data.labels[:n]


@torch.no_grad()
def _right(model, images, labels, batch_size, desc, progress):
    """Per-sample correctness ``(N,)`` and the number of batches."""
    out, starts = [], range(0, len(images), batch_size)
    for i in tqdm(starts, desc=desc, leave=False, disable=not progress):
        x, y = images[i:i + batch_size], labels[i:i + batch_size]
        out.append(correct(model.scores(model(x)), y))
    return torch.cat(out), len(starts)


def _trained_iterations(model):
    return {name: _get(m, "n_iters") for name, m, spec in routed_modules(model)
            if spec.iterative and _has(m, "n_iters")}


def routing_swap(model, data, *, iterations=None, batch_size=256, max_samples=None, seed=0, progress=True):
    """Accuracy of ``model`` on ``data`` with its own routing and with each swap of :func:`swapped_routing`.

    Every row holds ``accuracy``, the per-sample correctness packed by
    :func:`~dgl_capsules.evaluation.pack_correct` (``correct``) and, for the
    swaps, McNemar's test against the trained routing
    (:func:`~dgl_capsules.evaluation.mcnemar`: ``b`` samples right only with
    the trained routing, ``c`` only with the swap, ``p``). A swap a layer's
    family does not allow (iterations of a family without them) is a row
    ``{"unavailable": reason}``.

    Parameters
    ----------
    model : torch.nn.Module
        A model with routed layers (see :func:`routed_modules`); run in eval mode.
    data : ImageDataset
    iterations : sequence of int, optional
        The iteration counts to try; by default 1 to two more than the most any layer was trained with.
    batch_size : int
    max_samples : int, optional
        Score only the first ``max_samples`` samples.
    seed : int
        Seed of the random couplings.
    progress : bool

    Returns
    -------
    dict
        ``samples``, ``trained_iterations`` (layer -> count), ``trained``, ``uniform``, ``random`` (rows) and
        ``iterations`` (count as a string -> row).

    Raises
    ------
    ValueError
        For bad ``data``, ``max_samples``, ``batch_size`` or ``iterations``, a model without routed layers, or a
        routing family that ignores the random couplings of :func:`~dgl_capsules.routing.first_coupling`.
    """
    images, labels = _subset(data, max_samples)
    check_positive_int("batch_size", batch_size)
    swap_plans(model, "uniform")  # a model without routed layers fails here
    trained_iters = _trained_iterations(model)
    if iterations is None:
        iterations = range(1, max(trained_iters.values(), default=0) + 3) if trained_iters else ()
    iterations = [int(k) for k in iterations]
    if any(k < 1 for k in iterations):
        raise ValueError(f"iterations must be integers >= 1; got {iterations}")
    was_training = model.training
    model.eval()
    try:
        base, _ = _right(model, images, labels, batch_size, "trained", progress)
        rows = dict(samples=len(images), trained_iterations=trained_iters, trained=_row(base))
        swaps = [("uniform", None), ("random", None)] + [("iterations", k) for k in iterations]
        for mode, k in swaps:
            row = _swap_row(model, mode, k, seed, images, labels, batch_size, progress, base)
            if mode == "iterations":
                rows.setdefault("iterations", {})[str(k)] = row
            else:
                rows[mode] = row
        rows.setdefault("iterations", {})
    finally:
        model.train(was_training)
    return rows


def _row(right, base=None):
    row = dict(accuracy=float(right.double().mean()), correct=pack_correct(right))
    if base is not None:
        b, c, p = mcnemar(base, right)
        row["mcnemar"] = dict(b=b, c=c, p=p)
    return row


def _swap_row(model, mode, n_iters, seed, images, labels, batch_size, progress, base):
    try:
        swap_plans(model, mode, n_iters)
    except ValueError as e:
        return dict(unavailable=str(e))
    with swapped_routing(model, mode, n_iters, seed=seed) as swapped:
        right, n_batches = _right(model, images, labels, batch_size, mode, progress)
    if mode == "random" and swapped.first_couplings < n_batches * len(swapped):
        families = sorted({spec.name for _, _, spec in routed_modules(model)})
        raise ValueError(f"model: a routing family of {families} ignores the couplings of "
                         "dgl_capsules.routing.first_coupling, so random couplings cannot be swapped in")
    return _row(right, base)
