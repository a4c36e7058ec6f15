"""The routing contract: named checks that every routing function of the library passes.

Each check is a function ``check(subject) -> measurement`` that returns what it
measured: a :class:`~dgl_capsules.contract.Deviation` (the largest deviation of
some outputs from what they should be) or a list of the problems it found
(empty when there are none). :func:`measure_routing_contract` runs them all and
returns the measurements; :func:`check_routing_contract` is the assertion, a
thin wrapper that raises at the first check that does not pass.
"""
import dgl
import torch

from ..graph import capsule_graph
from ..routing.registry import KINDS, NORMALISATIONS, get_routing
from ._measure import FIELDS as _FIELDS, ContractError, deviation, describe, passed, unnamed_errors, worst
from ._measure import on_edges as _on_edges, result_tensors as _outputs
from .graphs import default_graphs, permuted, ragged_parts

__all__ = ["RoutingSubject", "routing_subject", "ROUTING_CHECKS", "measure_routing_contract",
           "check_routing_contract"]

class RoutingSubject:
    """A routing function under test and everything the checks need to call it.

    Build it with :func:`routing_subject`. ``route(g, *inputs)`` returns a
    :class:`~dgl_capsules.routing.RoutingResult`; ``make_inputs(g, batch,
    generator)`` makes float64 inputs; ``kinds`` says what each input is (one
    of :data:`~dgl_capsules.routing.registry.KINDS`); ``normalise`` which
    couplings sum to 1; ``reference`` (or ``None``) is a dense formulation
    with the signature of ``route``; ``outputs`` (or ``None``) the result
    fields the routing fills.
    """

    def __init__(self, name, route, make_inputs, kinds, normalise="parents", reference=None, outputs=None,
                 graphs=None, batch=3, rtol=1e-10, atol=1e-12, n_tiny=(3, 2), seed=0):
        kinds = tuple(kinds)
        if not kinds or kinds[0] != "edge" or any(k not in KINDS for k in kinds):
            raise ValueError(f"kinds must start with 'edge' (the votes) and use only {KINDS}; got {kinds}")
        if normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}; got {normalise!r}")
        self.name, self.route, self.make_inputs, self.kinds = name, route, make_inputs, kinds
        self.normalise, self.reference, self.outputs = normalise, reference, outputs
        self.graphs = default_graphs() if graphs is None else dict(graphs)
        self.batch, self.rtol, self.atol, self.n_tiny = batch, rtol, atol, n_tiny
        self.generator = torch.Generator().manual_seed(seed)
        self.registered = False
        self._cases = {}

    def inputs(self, g, batch):
        """Fresh inputs for ``g`` (``ValueError`` if ``kinds`` does not name each of them)."""
        inputs = tuple(self.make_inputs(g, batch, self.generator))
        if len(inputs) != len(self.kinds):
            raise ValueError(f"kinds must name each of the {len(inputs)} inputs; got {len(self.kinds)} kinds")
        return inputs

    def call(self, g, inputs, what, fn=None):
        """``route(g, *inputs)`` as a dict of outputs; any error is a broken contract naming ``what``."""
        try:
            r = (fn or self.route)(g, *inputs)
        except Exception as e:  # noqa: BLE001 - any error is a broken contract here
            first = str(e).splitlines()[0] if str(e) else ""
            raise ContractError(f"routing contract: {what}: raised {type(e).__name__}: {first}") from e
        if not hasattr(r, "coupling") or not hasattr(r, "poses"):
            raise ContractError(f"routing contract: {what}: must return a RoutingResult; got {type(r).__name__}")
        return _outputs(r)

    def case(self, name):
        """``(g, inputs, features before the first call, outputs)`` of graph ``name``, computed once."""
        if name not in self._cases:
            g = self.graphs[name]
            inputs = self.inputs(g, self.batch)
            feats = {k: v.clone() for k, v in g.edata.items()}
            self._cases[name] = (g, inputs, feats, self.call(g, inputs, f"plain call (graph {name!r})"))
        return self._cases[name]

    def map_inputs(self, inputs, **fns):
        """Apply ``fns[kind]`` to every input of that kind (scalars and ``const`` inputs pass unchanged)."""
        out = []
        for x, kind in zip(inputs, self.kinds):
            f = fns.get(kind)
            per_item = kind in ("edge_value", "parent_value")
            keep = f is None or not isinstance(x, torch.Tensor) or (per_item and x.dim() == 0)
            out.append(x if keep else f(x))
        return tuple(out)

    def compare(self, got, want, where, rtol=None, atol=None):
        """Deviations of every output of ``want`` (a dict) from ``got``; a missing output is infinitely off."""
        rtol = self.rtol if rtol is None else rtol
        atol = self.atol if atol is None else atol
        out = []
        for k, w in want.items():
            g = got.get(k)
            if g is None:
                g = w.new_full((0,), float("nan"))  # a shape mismatch: infinitely off
            out.append(deviation(g, w, f"{where}: {k}", rtol, atol))
        return out


def routing_subject(route, make_inputs=None, kinds=None, *, normalise=None, reference=None, outputs=None,
                    graphs=None, batch=3, rtol=1e-10, atol=1e-12, n_tiny=(3, 2), **settings):
    """The :class:`RoutingSubject` of a registered routing (by name) or of any routing function.

    Parameters
    ----------
    route : str or callable
        A name of :func:`~dgl_capsules.routing.list_routings` (the function,
        input kinds, example inputs, dense reference, normalisation, result
        fields and default settings come from its registration), or
        ``route(g, *inputs) -> RoutingResult``.
    make_inputs, kinds, normalise, reference, outputs
        For a function that is not registered: see :class:`RoutingSubject`
        (``make_inputs`` and ``kinds`` are required, ``normalise`` defaults to
        ``"parents"``).
    graphs : dict of str to dgl.DGLGraph, optional
        The graphs to check on (default: a complete, a convolutional and a
        random capsule graph).
    batch : int
        Samples per call.
    rtol, atol : float
        Tolerances of the float64 comparisons.
    n_tiny : (int, int)
        Children and parents of the complete graph of the gradient check.
    **settings
        For a registered routing: keyword arguments of its function and
        reference, over its registered defaults (``n_iters=1``,
        ``p_model="skm"``).

    Raises
    ------
    ValueError
        For an unknown routing name, a function without ``make_inputs`` or
        ``kinds``, settings given with a function, or a registration without
        example inputs.
    """
    common = dict(graphs=graphs, batch=batch, rtol=rtol, atol=atol, n_tiny=n_tiny)
    if not isinstance(route, str):
        if make_inputs is None or kinds is None:
            raise ValueError("make_inputs and kinds must be given with a routing function (or pass a registry name)")
        if settings:
            raise ValueError(f"settings {sorted(settings)} are for a registry name; put them into route")
        name = getattr(route, "__name__", "route")
        return RoutingSubject(name, route, make_inputs, kinds, normalise or "parents", reference, outputs, **common)
    spec = get_routing(route)
    example = spec.get_example()
    if example is None:
        raise ValueError(f"routing {route!r} registers no example inputs (register_routing(..., example=...))")
    kw = {**spec.defaults, **settings}
    ref = spec.get_reference()

    def call(g, *inputs):
        return spec.fn(g, *inputs, **kw, return_trace=True)

    def dense(g, *inputs):
        return ref(g, *inputs, **kw, return_trace=True)

    subject = RoutingSubject(route, call, example, spec.inputs, spec.normalise, dense if ref else None,
                             spec.outputs, **common)
    subject.registered = True  # then the reference check runs, and fails without a reference
    return subject


# ---------------------------------------------------------------------------
# The checks: each returns a Deviation or a list of problems.
# ---------------------------------------------------------------------------


def result_fields(s):
    """Shapes of every output, the fields the routing promises, and ``trace[-1]`` being the coupling."""
    problems = []
    for name in s.graphs:
        g, inputs, _, out = s.case(name)
        where = f"(graph {name!r})"
        n_batch = inputs[0].shape[1]
        for k, v in out.items():
            rows = g.num_edges() if _on_edges(k) else g.num_dst_nodes()
            if v.dim() < 2 or v.shape[0] != rows or v.shape[1] != n_batch:
                problems.append(f"{where}: {k} has shape {tuple(v.shape)}, expected ({rows}, {n_batch}, ...)")
        if s.outputs is not None:
            filled = {k for k in _FIELDS if k in out}
            if filled != set(s.outputs):
                problems.append(f"{where}: the result fills {sorted(filled)}, the routing promises "
                                f"{sorted(s.outputs)}")
        traces = [k for k in out if k.startswith("trace")]
        if traces and not torch.equal(out[traces[-1]], out["coupling"]):
            problems.append(f"{where}: the last traced coupling is not the coupling")
    return problems


def reference(s):
    """The largest deviation from the dense reference (every output it gives, traces included)."""
    if s.reference is None:
        raise ContractError(f"routing contract: equals its dense reference: routing {s.name!r} has no dense "
                            "reference (register_routing(..., reference=...))")
    devs = []
    for name in s.graphs:
        g, inputs, _, out = s.case(name)
        want = s.call(g, inputs, f"dense reference (graph {name!r})", fn=s.reference)
        devs += s.compare(out, want, f"(graph {name!r})")
    return worst(devs)


def graph_untouched(s):
    """Features the routing left on, or changed in, its graphs."""
    problems = []
    for name in s.graphs:
        g, _, feats, _ = s.case(name)
        if set(g.edata.keys()) != set(feats) or len(g.srcdata) or len(g.dstdata):
            problems.append(f"(graph {name!r}): features left on the graph: edata {sorted(g.edata.keys())}, "
                            f"srcdata {sorted(g.srcdata.keys())}, dstdata {sorted(g.dstdata.keys())}")
        problems += [f"(graph {name!r}): edge feature {k!r} changed" for k, v in feats.items()
                     if k in g.edata and not torch.equal(g.edata[k], v)]
    return problems


def _rerouted(s, what, change):
    """The largest deviation, over every graph, of routing again what ``change(g, inputs, outputs)`` returns:
    ``(graph, inputs, the outputs it should give)``."""
    devs = []
    for name in s.graphs:
        g, inputs, _, base = s.case(name)
        h, changed, want = change(g, inputs, base)
        devs += s.compare(s.call(h, changed, f"{what} (graph {name!r})"), want, f"(graph {name!r})")
    return worst(devs)


def edge_permutation(s):
    """Relabelling the edges permutes the couplings and changes nothing else: the largest deviation."""
    def change(g, inputs, base):
        h, perm = permuted(g)
        take = (lambda x: x[perm])  # noqa: E731
        want = {k: v[perm] if _on_edges(k) else v for k, v in base.items()}
        return h, s.map_inputs(inputs, edge=take, edge_value=take), want

    return _rerouted(s, "edge permutation", change)


def _samples(s, what, pick):
    """Routing the samples ``pick()`` of the batch gives those samples of every output: the largest deviation."""
    def change(g, inputs, base):
        index = pick()
        take = (lambda x: x[:, index])  # noqa: E731
        return g, s.map_inputs(inputs, edge=take, child=take), {k: v[:, index] for k, v in base.items()}

    return _rerouted(s, what, change)


def batch_order(s):
    """Shuffling the samples shuffles every output: the largest deviation."""
    return _samples(s, "batch order", lambda: torch.randperm(s.batch, generator=s.generator))


def one_sample(s):
    """One sample routed alone equals itself inside the batch: the largest deviation."""
    return _samples(s, "one sample alone", lambda: slice(1, 2))


def normalisation(s):
    """How far the couplings' sums (per child over its parents, or per parent over its children) are from 1."""
    devs = []
    for name in s.graphs:
        g, _, _, base = s.case(name)
        src, dst = (x.long() for x in g.edges())
        index, n, has = (src, g.num_src_nodes(), g.out_degrees() > 0) if s.normalise == "parents" \
            else (dst, g.num_dst_nodes(), g.in_degrees() > 0)
        for k, v in base.items():
            if _on_edges(k):
                sums = v.new_zeros((n,) + v.shape[1:]).index_add(0, index, v)[has]
                devs.append(deviation(sums, torch.ones_like(sums), f"(graph {name!r}): {k}", rtol=0, atol=1e-9))
    return worst(devs)


def int32(s):
    """An int32 graph gives the int64 graph's results: the largest deviation."""
    return _rerouted(s, "int32 graph", lambda g, inputs, base: (g.int(), inputs, base))


def empty_batch(s):
    """Outputs of a batch of no samples whose shapes are wrong, or that autograd does not reach."""
    problems = []
    for name in s.graphs:
        g, inputs, _, base = s.case(name)
        take = (lambda x: x[:, :0].detach().clone().requires_grad_(True))  # noqa: E731
        empty = s.map_inputs(inputs, edge=take, child=take)
        got = s.call(g, empty, f"empty batch (graph {name!r})")
        for k, v in base.items():
            want = v.shape[:1] + (0,) + v.shape[2:]
            if k not in got or tuple(got[k].shape) != tuple(want):
                shape = tuple(got[k].shape) if k in got else None
                problems.append(f"(graph {name!r}): {k} has shape {shape}, expected {tuple(want)}")
        total = sum(v.sum() for v in got.values())
        if not total.requires_grad:
            problems.append(f"(graph {name!r}): the outputs are not connected to the votes in autograd")
            continue
        total.backward()
        if empty[0].grad is None or empty[0].grad.shape != empty[0].shape:
            problems.append(f"(graph {name!r}): the votes get no gradient of their shape")
    return problems


def ragged(s):
    """A :func:`dgl.batch` of graphs routed at once equals its parts routed alone: the largest deviation."""
    parts = ragged_parts()
    part_inputs = [s.inputs(p, s.batch) for p in parts]
    together = []
    for k, kind in enumerate(s.kinds):
        xs = [inp[k] for inp in part_inputs]
        if kind == "const" or not isinstance(xs[0], torch.Tensor) or xs[0].dim() == 0:
            together.append(xs[0])  # one value for all parts
            part_inputs = [inp[:k] + (xs[0],) + inp[k + 1:] for inp in part_inputs]
        else:
            together.append(torch.cat(xs, 0))
    got = s.call(dgl.batch(parts), tuple(together), "ragged batch")
    n_e = [p.num_edges() for p in parts]
    n_j = [p.num_dst_nodes() for p in parts]
    pieces = {k: torch.split(v, n_e if _on_edges(k) else n_j) for k, v in got.items()}
    devs = []
    for i, (p, inp) in enumerate(zip(parts, part_inputs)):
        alone = s.call(p, inp, f"ragged batch (part {i} alone)")
        devs += s.compare({k: v[i] for k, v in pieces.items()}, alone, f"(part {i})")
    return worst(devs)


def gradcheck(s):
    """:func:`torch.autograd.gradcheck` of every output w.r.t. every floating input on a tiny graph: its failure."""
    g = capsule_graph(*s.n_tiny)
    inputs = s.inputs(g, 2)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and torch.is_floating_point(x)]
    leaves = [inputs[i].detach().clone().requires_grad_(True) for i in wrt]

    def f(*xs):
        full = list(inputs)
        for i, x in zip(wrt, xs):
            full[i] = x
        return tuple(s.call(g, tuple(full), "gradcheck").values())

    try:
        torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)
    except RuntimeError as e:  # gradcheck's GradcheckError is a RuntimeError
        return [str(e).splitlines()[0]]
    return []


def named_errors(s):
    """Bad votes that do not get an error of the right type naming ``votes``."""
    g = next(iter(s.graphs.values()))
    inputs = s.inputs(g, s.batch)
    votes, rest = inputs[0], tuple(inputs[1:])
    bad = [
        ("votes with one row too few", ValueError, (votes[1:],) + rest),
        ("float16 votes", TypeError, (votes.half(),) + rest),
        ("integer votes", TypeError, (votes.long(),) + rest),
        ("numpy votes", TypeError, (votes.numpy(),) + rest),
    ]
    return unnamed_errors(lambda *args: s.route(g, *args), bad, "votes")


#: The checks in the order they run: name -> (title, function). ``reference`` runs when the subject has
#: a dense reference or is registered; ``normalisation`` unless its normalisation is ``"none"``.
ROUTING_CHECKS = {
    "result_fields": ("result fields", result_fields),
    "reference": ("equals its dense reference", reference),
    "graph_untouched": ("graph untouched", graph_untouched),
    "edge_permutation": ("edge permutation", edge_permutation),
    "batch_order": ("batch order", batch_order),
    "one_sample": ("one sample alone", one_sample),
    "normalisation": ("couplings sum to 1", normalisation),
    "int32": ("int32 graph", int32),
    "empty_batch": ("empty batch", empty_batch),
    "ragged": ("ragged batch equals its parts alone", ragged),
    "gradcheck": ("gradcheck", gradcheck),
    "named_errors": ("named errors", named_errors),
}


def _applicable(s, checks, gradcheck):
    if checks is not None:
        unknown = sorted(set(checks) - set(ROUTING_CHECKS))
        if unknown:
            raise ValueError(f"checks must name checks of {list(ROUTING_CHECKS)}; got {unknown}")
    for name, (title, fn) in ROUTING_CHECKS.items():
        if (checks is not None and name not in checks) or (name == "gradcheck" and not gradcheck):
            continue
        if name == "reference" and s.reference is None and not s.registered:
            continue
        if name == "normalisation":
            if s.normalise == "none":
                continue
            title = f"couplings sum to 1 per {'child' if s.normalise == 'parents' else 'parent'}"
        yield name, title, fn


def _subject(route, make_inputs, kinds, options):
    if isinstance(route, RoutingSubject):
        return route
    return routing_subject(route, make_inputs, kinds, **options)


def measure_routing_contract(route, make_inputs=None, kinds=None, *, checks=None, gradcheck=True, **options):
    """Run the checks of the routing contract and return what each measured.

    Parameters are those of :func:`check_routing_contract`.

    Returns
    -------
    dict
        Check name -> :class:`~dgl_capsules.contract.Deviation` or list of
        problems, in the order of :data:`ROUTING_CHECKS` (checks that do not
        apply are left out: ``reference`` for an unregistered function without
        one, ``normalisation`` for ``normalise="none"``, ``gradcheck`` when off,
        and those not in ``checks``).

    Raises
    ------
    ContractError
        If a call raises (it cannot be measured), naming the check and graph.

    Examples
    --------
    >>> from dgl_capsules.testing import measure_routing_contract
    >>> m = measure_routing_contract("dynamic", checks=["edge_permutation", "named_errors"])
    >>> m["edge_permutation"].in_tolerances <= 1, m["named_errors"]
    (True, [])
    """
    s = _subject(route, make_inputs, kinds, options)
    return {name: fn(s) for name, _, fn in _applicable(s, checks, gradcheck)}


def check_routing_contract(route, make_inputs=None, kinds=None, *, checks=None, gradcheck=True, **options):
    """Assert the routing contract: raise ``AssertionError`` naming the first check that does not pass.

    The checks (:data:`ROUTING_CHECKS`), on a complete, a convolutional and a
    random capsule graph: the result has the promised fields and shapes; it
    equals the family's dense float64 reference; the graph is left as it was
    found; relabelling the edges permutes the couplings and changes nothing
    else; shuffling the samples shuffles the outputs and one sample alone
    equals itself in the batch; the couplings sum to 1 as the family's
    ``normalise`` says (every traced iteration too); an int32 graph gives the
    int64 results; a batch of no samples gives empty outputs that autograd
    reaches; a :func:`dgl.batch` of graphs equals its parts routed alone;
    :func:`torch.autograd.gradcheck` passes on a tiny graph; bad votes get an
    error naming ``votes``.

    Parameters
    ----------
    route : str or callable
        A registered routing's name, or ``route(g, *inputs) -> RoutingResult``
        (then ``make_inputs`` and ``kinds`` are required); see
        :func:`routing_subject` for the other options.
    make_inputs, kinds
        For a function that is not registered.
    checks : sequence of str, optional
        Run only these checks (names of :data:`ROUTING_CHECKS`); all by default.
    gradcheck : bool
        Also run the gradient check.
    **options
        ``normalise``, ``reference``, ``outputs``, ``graphs``, ``batch``,
        ``rtol``, ``atol``, ``n_tiny`` and, for a registry name, settings of
        the routing (``n_iters=1``).

    Raises
    ------
    AssertionError
        Naming the check and where, e.g. ``"routing contract: edge permutation
        (graph 'conv'): coupling: off by 0.02 (2e+08 times the tolerance)"``.
    ValueError
        If the arguments do not describe a routing (see :func:`routing_subject`)
        or ``checks`` names an unknown check.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> from dgl_capsules.testing import check_routing_contract
    >>> check_routing_contract("dynamic", checks=["reference", "batch_order"])
    >>> def make_inputs(g, batch, generator):
    ...     return (torch.randn(g.num_edges(), batch, 4, generator=generator, dtype=torch.float64),)
    >>> route = lambda g, v: dc.routing.dynamic_routing(g, v, n_iters=2)  # noqa: E731
    >>> check_routing_contract(route, make_inputs, ("edge",), checks=["edge_permutation", "ragged"])
    """
    s = _subject(route, make_inputs, kinds, options)
    for _, title, fn in _applicable(s, checks, gradcheck):
        measured = fn(s)
        if not passed(measured):
            text = describe(measured)
            raise ContractError(f"routing contract: {title}{' ' if text.startswith('(') else ': '}{text}")

