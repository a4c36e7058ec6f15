"""Checking routing traces and picking one sample out of them (shared by the plots)."""
from numbers import Integral

import numpy as np
import torch

from ..routing._common import RoutingResult, check_graph

__all__ = []

_HOW = "call the routing with return_trace=True"


def as_trace(trace):
    """A routing trace as a non-empty list of tensors; accepts a RoutingResult too."""
    if isinstance(trace, RoutingResult):  # a NamedTuple, so before the tuple check below
        trace = trace.trace
    if trace is None:
        raise ValueError(f"trace is None: {_HOW} to record the coupling of every iteration")
    if isinstance(trace, torch.Tensor) or not isinstance(trace, (list, tuple)):
        raise ValueError(
            "trace must be a list of per-iteration couplings, each of shape (|E|, *) "
            f"({_HOW}); got {type(trace).__name__}"
        )
    if len(trace) == 0:
        raise ValueError(f"trace is empty: it needs at least one iteration ({_HOW})")
    first = trace[0]
    for k, c in enumerate(trace):
        if not isinstance(c, torch.Tensor) or not torch.is_floating_point(c) or c.dim() < 1:
            what = f"{c.dtype} tensor" if isinstance(c, torch.Tensor) else type(c).__name__
            raise ValueError(f"trace[{k}] must be a floating-point tensor of shape (|E|, *); got {what}")
        if c.shape != first.shape:
            raise ValueError(
                f"every iteration of the trace must have the same shape; trace[{k}] has "
                f"{tuple(c.shape)} but trace[0] has {tuple(first.shape)}"
            )
    return [c.detach() for c in trace]


def check_trace(g, trace, who, atol=1e-2):
    """Check that ``trace`` was recorded on ``g``: ``|E|`` rows, each child's coupling summing to 1.

    Returns the trace as a list of detached tensors ``(|E|, *)``.
    """
    check_graph(g, who)
    trace = as_trace(trace)
    n_edges = g.num_edges()
    if trace[0].shape[0] != n_edges:
        raise ValueError(
            f"{who}: trace[0] has shape {tuple(trace[0].shape)} but g has |E| = {n_edges} edges; "
            "the trace must be recorded on this graph (is it from another graph?)"
        )
    src, _ = g.edges()
    has_parents = g.out_degrees() > 0  # (N_src,)
    for k, c in enumerate(trace):
        sums = torch.zeros((g.num_src_nodes(),) + tuple(c.shape[1:]), dtype=torch.float64)
        sums.index_add_(0, src, c.cpu().double())  # (N_src, *)
        dev = (sums[has_parents] - 1).abs().max().item() if bool(has_parents.any()) else 0.0
        if not dev <= atol:  # also catches NaN
            raise ValueError(
                f"{who}: the couplings of trace[{k}] do not sum to 1 over each child's parents in g "
                f"(largest deviation {dev:.3g}); the trace must hold couplings (not logits) "
                "recorded on this graph (is it from another graph?)"
            )
    return trace


def n_samples(shape):
    """Number of samples in an edge/node tensor shape ``(n, *batch)``: the product of ``batch``."""
    return int(np.prod(shape[1:], dtype=np.int64))


def check_sample(sample, shape, allow_none=True):
    """Validate ``sample`` against the flattened batch dimensions of ``shape``."""
    if sample is None and allow_none:
        return None
    n = n_samples(shape)
    if isinstance(sample, bool) or not isinstance(sample, Integral) or not -n <= sample < n:
        choices = "an integer or None" if allow_none else "an integer"
        raise ValueError(
            f"sample must be {choices} in [0, {n}) for couplings of shape {tuple(shape)} "
            f"({n} sample(s) in the flattened batch dimensions); got {sample!r}"
        )
    return int(sample) % n


def pick(x, sample):
    """``(n, *batch)`` -> numpy ``(n,)`` for one sample of the flattened batch, or the mean if ``None``."""
    x = x.detach().cpu().double().reshape(x.shape[0], -1)  # (n, S)
    x = x.mean(1) if sample is None else x[:, sample]  # (n,)
    return x.numpy()


def pool(x, sample):
    """``(n, *batch)`` -> numpy 1-D: one sample's values, or every sample's if ``None``."""
    x = x.detach().cpu().double().reshape(x.shape[0], -1)  # (n, S)
    return (x.reshape(-1) if sample is None else x[:, sample]).numpy()
