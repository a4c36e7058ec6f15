"""Helpers of bench_epoch.py: floating-point work of a step and where a step's time goes.

- :func:`count_flops` runs a callable under :class:`torch.utils.flop_counter.FlopCounterMode`,
  which counts the matrix-multiply class of aten ops only (``mm``, ``addmm``, ``bmm``,
  ``baddbmm``, ``convolution`` and its backward, scaled-dot-product attention), forward and
  backward, wherever they run: in layers, in einsums (which dispatch to ``bmm``) and in the
  routing's batched products. It does not count elementwise work (squash, softmax, losses,
  activations, the optimiser, augmentation), reductions, copies, nor DGL's sparse kernels
  (``gspmm`` / ``gsddmm`` / ``edge_softmax`` run outside aten).
- :class:`RoutingProbe` wraps every registered routing function where the layers of a package
  call it: it marks each call with a profiler range ``routing`` and records the call's size, from
  which :func:`routing_flops` counts the routing's arithmetic from its equations (dynamic and EM
  routing; other families: ``None``).
- :func:`breakdown` reads a :mod:`torch.profiler` trace of a few training steps whose phases are
  marked with ``record_function`` ranges (``data``, ``augment``, ``forward``, ``loss``,
  ``backward``, ``optimiser``, ``bookkeeping``) and whose ``nn.Conv2d`` / ``nn.Linear`` modules
  and routing calls are marked by :func:`mark_modules` and :class:`RoutingProbe`. Backward work
  is attributed to the forward op that recorded it (the autograd sequence number that the
  profiler stores on both), so "conv bwd" is the backward of the ops run inside conv modules,
  whatever kernels they are.
"""
import inspect
import math
import sys

import torch
from torch.profiler import record_function

PHASES = ("data", "augment", "forward", "loss", "backward", "optimiser", "bookkeeping")
MODULE_KINDS = {"conv": torch.nn.Conv2d, "linear": torch.nn.Linear}


def count_flops(fn):
    """Floating-point operations that FlopCounterMode counts while ``fn()`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def routing_flops(family, n_edges, n_dst, batch, dim, n_iters):
    """Arithmetic of one forward routing call from the paper's equations (None for other families).

    Dynamic routing (Sabour et al. 2017, Procedure 1), per sample and iteration: the softmax over
    parents (5 per edge), ``s_j = sum_i c_ij u_j|i`` (2 E D), squash (about 4 per parent entry);
    between iterations the agreement ``u_j|i . v_j`` and the logit update (2 E D + E).
    EM routing (Hinton et al. 2018), with P pose entries: the centred votes and their squares
    (2 E P, once), per M-step the sums of R a U and R a U^2 and the mass (4 E P + 2 E) and the
    per-parent statistics (about 10 per parent entry), per E-step the log-likelihood as a
    quadratic form (4 E P + E) and the softmax over parents (5 per edge).
    """
    e, n, d, t = n_edges, n_dst, dim, n_iters
    if family == "dynamic":
        per_sample = t * (5 * e + 2 * e * d + 4 * n * d) + (t - 1) * (2 * e * d + e)
    elif family == "em":
        per_sample = 2 * e * d + t * (4 * e * d + 2 * e + 10 * n * d) + (t - 1) * (4 * e * d + 6 * e)
    else:
        return None
    return per_sample * batch


class RoutingProbe:
    """Wrap the registered routing functions where ``package``'s modules call them.

    Inside the context every call runs in a profiler range ``routing`` and appends
    ``(family, |E|, N_dst, batch, D, n_iters)`` to :attr:`calls`.
    """

    def __init__(self, package):
        self.package = package
        self.calls = []
        self._patched = []

    def _wrap(self, family, fn):
        signature = inspect.signature(fn)

        def wrapped(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            g, n_iters = bound.arguments["g"], int(bound.arguments.get("n_iters", 1))
            if "table" in bound.arguments:  # votes as a table (B, J, I, D)
                table = bound.arguments["table"]
                size = (table.shape[1] * table.shape[2], math.prod(table.shape[:1]), table.shape[-1])
            else:  # votes in edge order (|E|, *, D)
                votes = bound.arguments["votes"]
                size = (votes.shape[0], math.prod(votes.shape[1:-1]), votes.shape[-1])
            n_edges, batch, dim = (int(v) for v in size)
            self.calls.append((family, n_edges, int(g.num_dst_nodes()), batch, dim, n_iters))
            with record_function("routing"):
                return fn(*args, **kwargs)

        return wrapped

    def _functions(self):
        """``(family, function)`` for every registered routing function and every public function of
        its module that takes a graph ``g`` and votes (``votes`` or a ``table``)."""
        registry = sys.modules[f"{self.package.__name__}.routing"]
        for family in registry.list_routings():
            fn = registry.get_routing(family).fn
            yield family, fn
            module = sys.modules[fn.__module__]
            for name in getattr(module, "__all__", ()):
                other = getattr(module, name)
                if other is not fn and callable(other) and not isinstance(other, type):
                    params = inspect.signature(other).parameters
                    if "g" in params and ("votes" in params or "table" in params):
                        yield family, other

    def __enter__(self):
        prefix = f"{self.package.__name__}."
        for family, fn in list(self._functions()):
            wrapped = self._wrap(family, fn)
            for name, module in list(sys.modules.items()):
                if not name.startswith(prefix) or ".routing" in name or module is None:
                    continue
                for attr, value in list(vars(module).items()):
                    if value is fn:
                        setattr(module, attr, wrapped)
                        self._patched.append((module, attr, fn))
        return self

    def __exit__(self, *exc):
        for module, attr, fn in reversed(self._patched):
            setattr(module, attr, fn)
        self._patched.clear()
        return False

    def flops(self):
        """Sum of :func:`routing_flops` over the recorded calls; None if a family has no formula."""
        counts = [routing_flops(*call) for call in self.calls]
        return None if any(c is None for c in counts) else sum(counts)


def mark_modules(net):
    """Profiler ranges ``conv`` / ``linear`` around the forward of every Conv2d / Linear of ``net``;
    returns the hook handles (``.remove()`` them)."""
    handles = []
    for module in net.modules():
        kind = next((k for k, cls in MODULE_KINDS.items() if isinstance(module, cls)), None)
        if kind is None:
            continue

        def enter(mod, args, kind=kind):
            mod._bench_range = record_function(kind)
            mod._bench_range.__enter__()

        def leave(mod, args, out):
            mod._bench_range.__exit__(None, None, None)
            del mod._bench_range

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    return handles


def _ancestors(event):
    parent = event.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent


def breakdown(events, n_steps):
    """Milliseconds per step of every category, from the profiler ``events`` of ``n_steps`` steps.

    Categories: the phases of :data:`PHASES`, with ``forward`` split into ``conv fwd``,
    ``linear fwd``, ``routing fwd`` and ``other fwd`` and ``backward`` into the same four
    ``... bwd``; ``outside aten`` is the part of the marked phases not spent inside any aten op
    (Python, the autograd engine's bookkeeping, DGL calls, the profiler itself).
    """
    kinds = ("conv", "linear", "routing")
    seq_kind = {}
    phase_ms = dict.fromkeys(PHASES, 0.0)
    fwd_ms = dict.fromkeys(kinds, 0.0)
    for ev in events:
        if ev.name in PHASES:
            phase_ms[ev.name] += ev.cpu_time_total / 1e3
        elif ev.name in kinds:
            if not any(a.name in kinds for a in _ancestors(ev)):  # outermost range of that kind
                fwd_ms[ev.name] += ev.cpu_time_total / 1e3
        elif ev.sequence_nr >= 0 and not ev.name.startswith("autograd::engine"):
            inside = next((a.name for a in _ancestors(ev) if a.name in kinds), None)
            if inside is not None and any(a.name == "forward" for a in _ancestors(ev)):
                seq_kind.setdefault(ev.sequence_nr, inside)
    bwd_ms = dict.fromkeys(kinds, 0.0)
    aten_ms = 0.0
    for ev in events:
        if ev.name.startswith("autograd::engine::evaluate_function") and ev.sequence_nr in seq_kind:
            bwd_ms[seq_kind[ev.sequence_nr]] += ev.cpu_time_total / 1e3
        if ev.name.startswith("aten::") and not any(a.name.startswith("aten::") for a in _ancestors(ev)):
            if any(a.name in PHASES for a in _ancestors(ev)):
                aten_ms += ev.cpu_time_total / 1e3
    out = {p: phase_ms[p] for p in PHASES if p not in ("forward", "backward")}
    for k in kinds:
        out[f"{k} fwd"] = fwd_ms[k]
    out["other fwd"] = max(0.0, phase_ms["forward"] - sum(fwd_ms.values()))
    for k in kinds:
        out[f"{k} bwd"] = bwd_ms[k]
    out["other bwd"] = max(0.0, phase_ms["backward"] - sum(bwd_ms.values()))
    out["outside aten"] = max(0.0, sum(phase_ms.values()) - aten_ms)
    return {k: v / n_steps for k, v in out.items()}
