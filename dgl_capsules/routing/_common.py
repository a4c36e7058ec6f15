"""What every routing algorithm shares: its result type, input checks and the first pass's couplings."""
import contextvars
from contextlib import contextmanager
from numbers import Real
from typing import List, NamedTuple, Optional

import dgl
import torch

from .._checks import check_float_tensor

__all__ = ["RoutingResult", "first_coupling"]


class RoutingResult(NamedTuple):
    """Outputs of a routing call; fields an algorithm does not produce are ``None``.

    Attributes
    ----------
    poses : torch.Tensor
        Parent poses, ``(N_dst, *, D)`` (``v_j`` for dynamic routing, ``mu_j``
        for EM and Heinsen routing).
    activations : torch.Tensor or None
        Parent activations ``(N_dst, *)`` (EM: probabilities; Heinsen: logits).
    coupling : torch.Tensor
        Edge couplings ``(|E|, *)`` of the last iteration (``c_ij`` or ``R_ij``).
    sigma2 : torch.Tensor or None
        Parent variances, same shape as ``poses`` (EM and Heinsen).
    trace : list of torch.Tensor or None
        With ``return_trace=True``, the coupling of every iteration.
    """

    poses: torch.Tensor
    activations: Optional[torch.Tensor] = None
    coupling: Optional[torch.Tensor] = None
    sigma2: Optional[torch.Tensor] = None
    trace: Optional[List[torch.Tensor]] = None

    def __repr__(self):
        def show(x):
            if isinstance(x, torch.Tensor):
                return f"Tensor{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
            if isinstance(x, list):
                return f"[{len(x)} x {show(x[0])}]" if x else "[]"
            return repr(x)

        fields = ", ".join(f"{k}={show(getattr(self, k))}" for k in self._fields)
        return f"RoutingResult({fields})"


def check_graph(g, who):
    """Raise unless ``g`` is a unibipartite capsule graph whose parents all have children."""
    if not isinstance(g, dgl.DGLGraph):
        raise TypeError(f"{who}: g must be a dgl.DGLGraph; got {type(g).__name__}")
    if not g.is_unibipartite or len(g.canonical_etypes) != 1:
        raise dgl.DGLError(
            f"{who}: g must be a bipartite capsule graph with one edge type from child to "
            f"parent nodes (build it with dgl_capsules.capsule_graph or conv_capsule_graph, "
            f"or dgl.heterograph({{('child', 'vote', 'parent'): (u, v)}})); got node types "
            f"{g.ntypes} and edge types {g.canonical_etypes}"
        )
    if g.num_dst_nodes() and int(g.in_degrees().min()) == 0:
        lonely = int((g.in_degrees() == 0).sum())
        raise dgl.DGLError(
            f"{who}: {lonely} parent capsule(s) of g have no children; every parent needs at "
            "least one incoming edge (remove those parents or connect them)"
        )


def per_item(name, value, n, what, like):
    """A scalar or a length-``n`` vector (one value per ``what``) as a tensor broadcastable over items.

    ``value`` is a real number, a sequence of them or a floating tensor (cast
    to ``like``'s dtype). Returns a tensor of shape ``()`` or ``(n,)`` with the
    dtype and device of ``like``.
    """
    layout = f"() or ({what},) = ({n},)"
    if isinstance(value, torch.Tensor):
        t = check_float_tensor(name, value, layout, dtype=like.dtype).to(like.device)
    elif isinstance(value, Real) and not isinstance(value, bool):
        t = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, Real) and not isinstance(v, bool) for v in value):
        t = torch.tensor([float(v) for v in value], dtype=like.dtype, device=like.device)
    else:
        shown = repr(value) if value is None or isinstance(value, (str, bool)) else type(value).__name__
        raise TypeError(f"{name} must be a number or a floating-point tensor of shape {layout}; got {shown}")
    if t.dim() == 0 or (t.dim() == 1 and t.shape[0] == n):
        return t
    raise ValueError(f"{name} must be a scalar or have shape ({what},) = ({n},); got {tuple(t.shape)}")


def empty_result(votes, n_iters, return_trace, **shapes):
    """The :class:`RoutingResult` of a batch with no samples: zero-size tensors of the given shapes.

    Each output is connected to ``votes`` in autograd (its gradient is empty),
    as PyTorch's own layers do for an empty batch.
    """
    zero = votes.sum() * 0  # () with a grad_fn when votes requires grad
    out = {k: votes.new_zeros(shape) + zero for k, shape in shapes.items()}
    trace = [out["coupling"]] * n_iters if return_trace else None
    return RoutingResult(trace=trace, **out)


def uniform_coupling(g, batch_shape, like):
    """``R_ij = 1 / (number of parents of i)`` on every edge: ``(|E|, *batch_shape)``."""
    src, _ = g.edges()
    deg = g.out_degrees().to(device=like.device, dtype=like.dtype)
    r = 1.0 / deg[src.to(like.device)]  # (E,)
    return r.view((-1,) + (1,) * len(batch_shape)).expand((-1,) + tuple(batch_shape))


def mean_vote_length(g, votes, vote_dims=1):
    """The mean length of every child's votes, ``(N_src, *)``, from votes ``(|E|, *, ...)`` with
    ``vote_dims`` trailing vote dims (a matrix vote's length is its Frobenius norm); 0 for a child
    without parents."""
    src, _ = g.edges()
    lengths = votes.flatten(-vote_dims).norm(dim=-1)  # (E, *)
    total = lengths.new_zeros((g.num_src_nodes(),) + lengths.shape[1:]).index_add_(0, src.long(), lengths)
    deg = g.out_degrees().clamp_min(1).to(device=total.device, dtype=total.dtype)
    return total / deg.view((-1,) + (1,) * (total.dim() - 1))


_FIRST_COUPLING = contextvars.ContextVar("dgl_capsules_first_coupling", default=None)


@contextmanager
def first_coupling(make):
    r"""Inside this context, every routing starts from the couplings ``make(g, batch_shape, like)`` instead of
    uniform ones.

    Every registered family's first pass routes with uniform couplings
    :math:`1 / |\mathcal{N}(i)|` (dynamic routing's zero logits, EM's and
    Heinsen's first M-step, self-attention with ``uniform=True``); this
    replaces them, so that one pass (``n_iters=1``) routes with any given
    couplings, as a test-time swap of the routing does
    (:func:`~dgl_capsules.analysis.swapped_routing`). The families' fast
    paths step aside while it is active. Contexts nest; the innermost wins.

    Parameters
    ----------
    make : callable
        ``make(g, batch_shape, like)`` returns couplings ``(|E|, *batch_shape)``
        with the dtype and device of tensor ``like``, normalised as the family
        normalises them.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(3, 2)
    >>> one_hot = lambda g, batch, like: (g.edges()[1] == 0).to(like).view(-1, *[1] * len(batch)).expand(-1, *batch)
    >>> with first_coupling(one_hot):
    ...     r = dc.routing.dynamic_routing(g, torch.randn(6, 4, 8), n_iters=1)
    >>> r.coupling[:, 0].tolist()
    [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    """
    token = _FIRST_COUPLING.set(make)
    try:
        yield make
    finally:
        _FIRST_COUPLING.reset(token)


def coupling_override(g, batch_shape, like):
    """The couplings :func:`first_coupling` asks for, ``(|E|, *batch_shape)``, or ``None`` outside its context."""
    make = _FIRST_COUPLING.get()
    if make is None:
        return None
    return make(g, tuple(batch_shape), like).to(dtype=like.dtype, device=like.device)


def overridden():
    """Whether a :func:`first_coupling` context is active (the families' fast paths then step aside)."""
    return _FIRST_COUPLING.get() is not None
