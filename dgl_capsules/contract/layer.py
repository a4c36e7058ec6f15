"""The layer contract: named checks that every capsule layer of the library passes.

As for the routing contract, each check ``check(subject) -> measurement``
returns a :class:`~dgl_capsules.contract.Deviation` or a list of problems;
:func:`measure_layer_contract` runs them all and :func:`check_layer_contract`
raises at the first one that does not pass.

A layer's inputs and outputs are batch first (dim 0); the
:class:`~dgl_capsules.routing.RoutingResult` it returns with
``return_routing=True`` (appended after its outputs) has the batch in dim 1,
as every routing function's result.
"""
import copy
import inspect
from contextlib import contextmanager

import torch

from ._measure import ContractError, deviation, describe, passed, unnamed_errors, worst
from ._measure import on_edges as _on_edges, result_tensors as _result_tensors
from .graphs import permuted

__all__ = ["LayerSubject", "LAYER_CHECKS", "measure_layer_contract", "check_layer_contract"]

_ROUTING_FLAGS = ("return_routing", "return_trace")


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


class LayerSubject:
    """A capsule layer under test: a float64 copy of it, its inputs and what its ``forward`` takes.

    ``make_input(batch, generator)`` returns the tuple of float64 inputs of a
    batch (batch first). The layer is *routed* when its ``forward`` takes
    ``return_routing``, and has a graph when it has a ``graph(...)`` method
    (the graph its ``forward`` routes on).
    """

    def __init__(self, layer, make_input, batch=3, rtol=1e-10, atol=1e-12, seed=0):
        if not isinstance(layer, torch.nn.Module):
            raise TypeError(f"layer must be a torch.nn.Module; got {type(layer).__name__}")
        self.name = type(layer).__name__
        self.layer = copy.deepcopy(layer).double()
        self.make_input, self.batch, self.rtol, self.atol = make_input, batch, rtol, atol
        params = inspect.signature(self.layer.forward).parameters
        self.routed = all(f in params for f in _ROUTING_FLAGS)
        self.has_graph = callable(getattr(self.layer, "graph", None))
        self.input_names = [k for k, p in params.items()
                            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and k not in _ROUTING_FLAGS]
        self.generator = torch.Generator().manual_seed(seed)
        self._base = None

    def inputs(self, batch):
        return tuple(self.make_input(batch, self.generator))

    def call(self, inputs, what, layer=None, **flags):
        """``(outputs, result or None)`` of ``layer(*inputs, **flags)``; an error is a broken contract."""
        try:
            out = _as_tuple((layer or self.layer)(*inputs, **flags))
        except Exception as e:  # noqa: BLE001 - any error is a broken contract here
            first = str(e).splitlines()[0] if str(e) else ""
            raise ContractError(f"layer contract ({self.name}): {what}: raised {type(e).__name__}: {first}") from e
        if not any(flags.values()):
            return out, None
        r = out[-1]
        if not hasattr(r, "coupling") or not hasattr(r, "poses"):
            raise ContractError(f"layer contract ({self.name}): {what}: return_routing must append a "
                                f"RoutingResult to the outputs; got {type(r).__name__}")
        return out[:-1], r

    def base(self):
        """``(inputs, outputs, result tensors)`` of a batch, with the trace when the layer is routed."""
        if self._base is None:
            inputs = self.inputs(self.batch)
            flags = dict(return_trace=True) if self.routed else {}
            out, r = self.call(inputs, "plain call", **flags)
            self._base = (inputs, out, {} if r is None else _result_tensors(r))
        return self._base

    def run(self, inputs, what):
        """Outputs and result tensors (batch in dim 1) of one call, traced when routed."""
        out, r = self.call(inputs, what, **(dict(return_trace=True) if self.routed else {}))
        return out, {} if r is None else _result_tensors(r)

    def compare(self, got, want, where):
        """Deviations of every tensor of ``want`` (a dict) from ``got``; a missing one is infinitely off."""
        missing = torch.full((0,), float("nan"))
        return [deviation(got.get(k, missing), w, f"{where}{k}", self.rtol, self.atol) for k, w in want.items()]

    @contextmanager
    def graphs(self, permute=False):
        """Record (and with ``permute`` shuffle the edge ids of) every graph the layer asks ``graph()`` for."""
        seen, original = [], self.layer.graph

        def graph(*args, **kwargs):
            g, perm = original(*args, **kwargs), None
            if permute:
                g, perm = permuted(g)
            seen.append((g, perm, set(g.edata.keys())))
            return g

        self.layer.graph = graph
        try:
            yield seen
        finally:
            del self.layer.graph


def _outputs_dict(out):
    return {f"output {i}": o for i, o in enumerate(out) if isinstance(o, torch.Tensor)}


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


def batch_independence(s):
    """Shuffling the samples shuffles the outputs, and one sample alone equals itself in the batch."""
    inputs, out, res = s.base()
    order = torch.randperm(s.batch, generator=s.generator)
    devs = []
    for what, pick in (("batch order", order), ("one sample alone", torch.tensor([1]))):
        got, got_res = s.run(tuple(x[pick] for x in inputs), what)
        devs += s.compare(_outputs_dict(got), {k: v[pick] for k, v in _outputs_dict(out).items()}, f"{what}: ")
        devs += s.compare(got_res, {k: v[:, pick] for k, v in res.items()}, f"{what}: routing ")
    return worst(devs)


def edge_order(s):
    """On its graph with shuffled edge ids the layer gives the same outputs and permuted couplings."""
    inputs, out, res = s.base()
    with s.graphs(permute=True) as seen:
        got, got_res = s.run(inputs, "shuffled edge ids")
    if len(seen) != 1:
        raise ContractError(f"layer contract ({s.name}): edge order: forward asked graph() for {len(seen)} "
                            "graphs, expected 1")
    perm = seen[0][1]
    want = {k: v[perm] if _on_edges(k) else v for k, v in res.items()}
    return worst(s.compare(_outputs_dict(got), _outputs_dict(out), "") + s.compare(got_res, want, "routing "))


def graph_untouched(s):
    """Features the layer left on the graph it routed on."""
    inputs, _, _ = s.base()
    with s.graphs() as seen:
        s.run(inputs, "graph untouched")
    return [f"features left on its graph: edata {sorted(g.edata.keys())}, srcdata {sorted(g.srcdata.keys())}, "
            f"dstdata {sorted(g.dstdata.keys())}" for g, _, keys in seen
            if set(g.edata.keys()) != keys or len(g.srcdata) or len(g.dstdata)]


def routing_result(s):
    """What is wrong with the RoutingResult that ``return_routing`` / ``return_trace`` append."""
    inputs = s.inputs(s.batch)
    plain, _ = s.call(inputs, "plain call")
    problems = []
    for flag in _ROUTING_FLAGS:
        with s.graphs() as seen:
            out, r = s.call(inputs, flag, **{flag: True})
        if len(out) != len(plain) or not all(torch.equal(a, b) for a, b in zip(_outputs_dict(out).values(),
                                                                                _outputs_dict(plain).values())):
            problems.append(f"{flag}=True changes the outputs before the RoutingResult")
        g = seen[-1][0] if seen else None
        n_edges = g.num_edges() if g is not None else r.coupling.shape[0]
        if tuple(r.coupling.shape[:2]) != (n_edges, s.batch):
            problems.append(f"{flag}: coupling has shape {tuple(r.coupling.shape)}, expected ({n_edges}, {s.batch})")
        for v, k in ((getattr(r, k), k) for k in ("poses", "activations", "sigma2")):
            rows = None if v is None else v.shape[0] if g is None else g.num_dst_nodes()
            if v is not None and tuple(v.shape[:2]) != (rows, s.batch):
                problems.append(f"{flag}: {k} has shape {tuple(v.shape)}, expected ({rows}, {s.batch}, ...)")
        if flag == "return_routing" and r.trace is not None:
            problems.append("return_routing=True records a trace; only return_trace=True should")
        if flag == "return_trace" and (not r.trace or not torch.equal(r.trace[-1], r.coupling)
                                       or any(c.shape != r.coupling.shape for c in r.trace)):
            problems.append("return_trace=True must give a trace of couplings shaped as the coupling, the last "
                            "one the coupling")
    return problems


def empty_batch(s):
    """Outputs of a batch of no samples whose shapes are wrong, or that give the inputs no gradient of their shape."""
    _, out, res = s.base()
    inputs = tuple(x.detach().clone().requires_grad_(x.is_floating_point()) for x in s.inputs(0))
    got, got_res = s.run(inputs, "empty batch")
    problems = [f"output {i} has shape {tuple(g.shape)}, expected {(0,) + tuple(w.shape[1:])}"
                for i, (g, w) in enumerate(zip(got, out)) if tuple(g.shape) != (0,) + tuple(w.shape[1:])]
    problems += [f"routing {k} has shape {tuple(got_res[k].shape)}, expected {tuple(w.shape[:1]) + (0,)}..."
                 for k, w in res.items() if k in got_res and tuple(got_res[k].shape[:2]) != (w.shape[0], 0)]
    total = sum(o.sum() for o in got if isinstance(o, torch.Tensor))
    if not total.requires_grad:
        return problems + ["the outputs are not connected to the inputs in autograd"]
    total.backward()
    reached = [(name, x) for name, x in zip(s.input_names, inputs) if x.grad is not None]
    if not reached:
        problems.append("no input gets a gradient")
    return problems + [f"{name} gets a gradient of shape {tuple(x.grad.shape)}" for name, x in reached
                       if x.grad.shape != x.shape]


def dtype_rule(s):
    """Outputs whose dtype is not the layer's and its inputs', and half inputs that are not refused by name."""
    problems = []
    for dtype in (torch.float32, torch.float64):
        layer = copy.deepcopy(s.layer).to(dtype)
        inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in s.inputs(2))
        out, r = s.call(inputs, f"{dtype} inputs", layer=layer, **(dict(return_routing=True) if s.routed else {}))
        tensors = list(_outputs_dict(out).values()) + ([] if r is None else list(_result_tensors(r).values()))
        problems += [f"{dtype} layer and inputs give a {t.dtype} output" for t in tensors
                     if t.is_floating_point() and t.dtype != dtype]
    half = tuple(x.half() if x.is_floating_point() else x for x in s.inputs(2))
    try:
        s.layer(*half)
    except TypeError as e:
        if not any(name in str(e) for name in s.input_names):
            problems.append(f"float16 inputs raised TypeError naming none of {s.input_names}: {e}")
    except Exception as e:  # noqa: BLE001
        problems.append(f"float16 inputs raised {type(e).__name__}, expected a TypeError naming the input")
    else:
        problems.append("float16 inputs raised nothing, expected a TypeError naming the input")
    return problems


def gradcheck(s):
    """:func:`torch.autograd.gradcheck` (fast mode: random projections of the Jacobian) of the outputs and
    couplings w.r.t. inputs and parameters, on a batch of 2: its failure."""
    inputs = [x.detach().clone().requires_grad_(True) for x in s.inputs(2)]
    names = [k for k, p in s.layer.named_parameters() if p.requires_grad]
    params = [p.detach().clone().requires_grad_(True) for k, p in s.layer.named_parameters() if p.requires_grad]
    flags = dict(return_routing=True) if s.routed else {}

    def f(*xs):
        x, p = xs[:len(inputs)], xs[len(inputs):]
        out = _as_tuple(torch.func.functional_call(s.layer, dict(zip(names, p)), tuple(x), flags))
        if not flags:
            return out
        return tuple(o for o in out[:-1] if isinstance(o, torch.Tensor)) + (out[-1].coupling,)

    try:
        torch.autograd.gradcheck(f, tuple(inputs + params), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    except RuntimeError as e:  # gradcheck's GradcheckError is a RuntimeError
        return [str(e).splitlines()[0]]
    return []


def bad_input(s):
    """Bad first inputs (numpy, integer, a dimension short) that do not get an error naming the argument."""
    inputs = s.inputs(s.batch)
    first, rest, name = inputs[0], inputs[1:], s.input_names[0]
    bad = [
        (f"numpy {name}", TypeError, (first.numpy(),) + rest),
        (f"integer {name}", TypeError, (first.long(),) + rest),
        (f"{name} without its last dimension", ValueError, (first[..., 0],) + rest),
    ]
    return unnamed_errors(s.layer, bad, name)


#: The checks in the order they run: name -> (title, function, applies(subject)).
LAYER_CHECKS = {
    "batch_independence": ("batch independence", batch_independence, lambda s: True),
    "edge_order": ("edge order", edge_order, lambda s: s.routed and s.has_graph),
    "graph_untouched": ("graph untouched", graph_untouched, lambda s: s.routed and s.has_graph),
    "routing_result": ("return_routing", routing_result, lambda s: s.routed),
    "empty_batch": ("empty batch", empty_batch, lambda s: True),
    "dtype": ("dtype rule", dtype_rule, lambda s: True),
    "gradcheck": ("gradcheck", gradcheck, lambda s: True),
    "bad_input": ("bad input named", bad_input, lambda s: True),
}


def _checks(s, gradcheck):
    for name, (title, fn, applies) in LAYER_CHECKS.items():
        if applies(s) and (gradcheck or name != "gradcheck"):
            yield name, title, fn


def measure_layer_contract(layer, make_input, *, gradcheck=True, **options):
    """Run every check of the layer contract that applies to ``layer`` and return what each measured.

    Parameters are those of :func:`check_layer_contract`.

    Returns
    -------
    dict
        Check name -> :class:`~dgl_capsules.contract.Deviation` or list of
        problems, in the order of :data:`LAYER_CHECKS`. ``edge_order`` and
        ``graph_untouched`` apply to layers with a ``graph()`` method,
        ``routing_result`` to layers whose ``forward`` takes ``return_routing``;
        the others to every layer.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> from dgl_capsules.testing import measure_layer_contract
    >>> layer = dc.nn.DynamicCaps(in_caps=3, out_caps=2, in_dim=2, out_dim=3)
    >>> m = measure_layer_contract(layer, lambda b, gen: (torch.randn(b, 3, 2, generator=gen, dtype=torch.float64),))
    >>> list(m)[:3], m["bad_input"]
    (['batch_independence', 'edge_order', 'graph_untouched'], [])
    """
    s = LayerSubject(layer, make_input, **options)
    return {name: fn(s) for name, _, fn in _checks(s, gradcheck)}


def check_layer_contract(layer, make_input, *, gradcheck=True, batch=3, rtol=1e-10, atol=1e-12):
    """Assert the layer contract: raise ``AssertionError`` naming the first check that does not pass.

    The checks (:data:`LAYER_CHECKS`), on a float64 copy of ``layer``: one
    sample alone equals itself inside a shuffled batch; on its graph with
    shuffled edge ids the layer gives the same outputs and permuted couplings,
    and leaves no features on the graph; ``return_routing=True`` appends a
    :class:`~dgl_capsules.routing.RoutingResult` with couplings ``(|E|, B)``
    on that graph and ``return_trace=True`` one with the trace, both without
    changing the outputs; a batch of no samples gives empty outputs that
    autograd reaches; float32 and float64 layers and inputs give outputs of
    their dtype and float16 inputs a ``TypeError`` naming the input;
    :func:`torch.autograd.gradcheck` passes w.r.t. inputs and parameters; a
    numpy, an integer or a too-short first input gets an error naming it.

    Parameters
    ----------
    layer : torch.nn.Module
        A tiny capsule layer (the gradient check perturbs every input and
        parameter entry).
    make_input : callable
        ``make_input(batch, generator) -> tuple`` of float64 inputs of
        ``layer``'s ``forward`` for ``batch`` samples, batch first.
    gradcheck : bool
        Also run the gradient check.
    batch : int
        Samples per call.
    rtol, atol : float
        Tolerances of the float64 comparisons.

    Raises
    ------
    AssertionError
        Naming the layer, the check and what was wrong, e.g. ``"layer
        contract (ConvCaps): edge order: output 0: off by 0.3 (...)"``.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> from dgl_capsules.testing import check_layer_contract
    >>> layer = dc.nn.ConvCaps(in_types=1, out_types=2, kernel=2, stride=1)
    >>> def make_input(batch, gen):
    ...     kw = dict(generator=gen, dtype=torch.float64)
    ...     return torch.randn(batch, 3, 3, 1, 4, 4, **kw), torch.rand(batch, 3, 3, 1, **kw)
    >>> check_layer_contract(layer, make_input, gradcheck=False)
    """
    s = LayerSubject(layer, make_input, batch=batch, rtol=rtol, atol=atol)
    for _, title, fn in _checks(s, gradcheck):
        measured = fn(s)
        if not passed(measured):
            raise ContractError(f"layer contract ({s.name}): {title}: {describe(measured)}")
