"""Testing routing algorithms and capsule layers: dense references from the papers and two contracts.

The dense references restate each routing procedure with plain tensors, one
``(child, parent)`` cell per pair and a mask for the pairs that are not
connected, straight from the papers' equations. They are slow and use no DGL,
which is what makes them independent checks of the message-passing code; use
them in float64. ``reference_<name>(g, *inputs, ...)`` wraps the dense
reference of family ``<name>`` as a routing function (graph and edge tensors
in, :class:`~dgl_capsules.routing.RoutingResult` out) and
``example_<name>(g, batch, generator)`` makes float64 inputs for it: the
registry points every family at both (``register_routing(...,
reference="dgl_capsules.testing:reference_dynamic", ...)``).

:func:`check_routing_contract` checks the properties every routing function
of this library has (and that a new one should have) and
:func:`check_layer_contract` those of every capsule layer. Both are thin
assertions over named checks that return what they measured
(:func:`measure_routing_contract`, :func:`measure_layer_contract`).

Examples
--------
>>> from dgl_capsules.testing import check_routing_contract, measure_routing_contract
>>> check_routing_contract("dynamic", checks=["reference", "edge_permutation"])
>>> m = measure_routing_contract("em", checks=["reference"])
>>> m["reference"].in_tolerances <= 1
True
"""
import math

import torch

from .contract import (
    LAYER_CHECKS,
    ROUTING_CHECKS,
    ContractError,
    Deviation,
    LayerSubject,
    RoutingSubject,
    check_layer_contract,
    check_routing_contract,
    measure_layer_contract,
    measure_routing_contract,
    routing_subject,
)
from .contract.graphs import dense_mask, dense_to_edge, edge_to_dense, permuted, random_bipartite
from .routing import RoutingResult
from .routing.em import default_inverse_temperatures
from .routing.registry import KINDS

__all__ = [
    "dense_dynamic_routing",
    "dense_em_routing",
    "dense_heinsen_routing",
    "reference_dynamic",
    "reference_em",
    "reference_heinsen",
    "example_dynamic",
    "example_em",
    "example_heinsen",
    "reference_self_attention",
    "example_self_attention",
    "edge_to_dense",
    "dense_to_edge",
    "dense_mask",
    "permuted",
    "random_bipartite",
    "check_routing_contract",
    "measure_routing_contract",
    "routing_subject",
    "RoutingSubject",
    "ROUTING_CHECKS",
    "check_layer_contract",
    "measure_layer_contract",
    "LayerSubject",
    "LAYER_CHECKS",
    "ContractError",
    "Deviation",
    "KINDS",
]


# ---------------------------------------------------------------------------
# Dense references, from the papers' equations
# ---------------------------------------------------------------------------


def dense_dynamic_routing(u, mask=None, n_iters=3, return_trace=False):
    r"""Sabour et al. 2017, Procedure 1, written densely.

    .. math::

        c_{ij} = \operatorname{softmax}_j b_{ij}, \quad s_j = \sum_i c_{ij} \hat u_{j|i}, \quad
        v_j = \frac{\lVert s_j \rVert^2}{1 + \lVert s_j \rVert^2} \frac{s_j}{\lVert s_j \rVert}, \quad
        b_{ij} \mathrel{+}= \hat u_{j|i} \cdot v_j

    Parameters
    ----------
    u : torch.Tensor
        Prediction vectors :math:`\hat u_{j|i}`, ``(B, I, J, D)``.
    mask : torch.Tensor, optional
        ``(I, J)`` boolean, which child votes for which parent (all if ``None``).
    n_iters : int
        Iterations.
    return_trace : bool
        Return the couplings of every iteration (a list) instead of the last.

    Returns
    -------
    (torch.Tensor, torch.Tensor or list of torch.Tensor)
        ``v`` ``(B, J, D)`` and ``c`` ``(B, I, J)`` of the last iteration (every iteration's with
        ``return_trace``).
    """
    b = u.new_zeros(u.shape[:3])  # (B, I, J)
    trace = []
    for r in range(n_iters):
        if mask is None:
            c = torch.softmax(b, dim=2)
        else:
            c = torch.softmax(b.masked_fill(~mask, float("-inf")), dim=2).nan_to_num(0.0) * mask
        trace.append(c)
        s = torch.einsum("bij,bijd->bjd", c, u)
        norm = torch.linalg.vector_norm(s, dim=-1, keepdim=True)
        v = norm**2 / (1 + norm**2) * s / norm
        if r + 1 < n_iters:
            b = b + torch.einsum("bijd,bjd->bij", u, v)
    return v, trace if return_trace else c


def dense_em_routing(V, a, mask, beta_u, beta_a, lambdas, eps=1e-6):
    """Hinton et al. 2018, Procedure 1, written densely from the paper's equations.

    V: (B, I, J, H) votes (anything off the mask); a: (B, I) child activations; mask: (I, J) which
    child votes for which parent; beta_u, beta_a: (J,). Returns mu, sigma2 (B, J, H), activations
    (B, J) and the list of responsibilities R (B, I, J) used by each M-step.
    """
    m = mask.to(V.dtype)
    R = (m / m.sum(1, keepdim=True)).nan_to_num(0.0).expand(V.shape[0], -1, -1)  # 1 / #parents
    Rs = []
    for t, lam in enumerate(lambdas):
        Rs.append(R)
        # M-step
        Rp = R * a[:, :, None]
        S = Rp.sum(1)  # (B, J)
        mu = torch.einsum("bij,bijh->bjh", Rp, V) / S[..., None]
        dev2 = (V - mu[:, None]) ** 2
        sigma2 = torch.einsum("bij,bijh->bjh", Rp, dev2) / S[..., None] + eps
        cost = (beta_u[:, None] + 0.5 * torch.log(sigma2)) * S[..., None]  # (B, J, H)
        act = torch.sigmoid(lam * (beta_a - cost.sum(-1)))
        if t + 1 == len(lambdas):
            break
        # E-step
        logp = -(dev2 / (2 * sigma2[:, None])).sum(-1) - 0.5 * torch.log(2 * math.pi * sigma2).sum(-1)[:, None]
        logits = torch.log(act)[:, None] + logp
        R = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=2).nan_to_num(0.0)
    return mu, sigma2, act, Rs


def dense_heinsen_routing(V, a, beta_use, beta_ign, mask=None, n_iters=3, eps=1e-5, p_model="gaussian",
                          return_trace=False):
    """Heinsen 2019, Algorithm 1, written densely from the paper's equations.

    Parameters
    ----------
    V : torch.Tensor
        Votes ``(B, I, J, C, H)``.
    a : torch.Tensor
        Input score logits ``(B, I)`` (``-inf`` for padding: then ``f(a) = 0``).
    beta_use, beta_ign : torch.Tensor or float
        Scalars or anything broadcastable to ``(B, I, J)`` (``(I, J)``, ``(J,)``).
    mask : torch.Tensor, optional
        ``(I, J)`` boolean, which child votes for which parent (all if ``None``).
    n_iters, eps, p_model
        As :func:`~dgl_capsules.routing.heinsen_routing`.

    Returns
    -------
    tuple of torch.Tensor
        ``a_out`` ``(B, J)``, ``mu`` and ``sig2`` ``(B, J, C, H)`` and ``R``
        ``(B, I, J)`` of the last iteration (with ``return_trace``, the list of
        every iteration's ``R`` instead).
    """
    m = V.new_ones(V.shape[1:3]) if mask is None else mask.to(V.dtype)
    f_a = torch.sigmoid(a)[..., None]  # (B, I, 1)
    trace = []
    for it in range(n_iters):
        if it == 0:
            R = (m / m.sum(1, keepdim=True).clamp(min=1)).expand(V.shape[:3])
        else:
            sq = (V - mu[:, None]) ** 2  # (B, I, J, C, H)
            if p_model == "gaussian":
                log_p = -(sq / (2 * sig2[:, None])).sum((-2, -1)) - torch.log(torch.sqrt(sig2)).sum((-2, -1))[:, None]
            else:
                x = -sq.sum((-2, -1))
                if mask is not None:
                    x = x.masked_fill(~mask, float("-inf"))
                log_p = torch.log_softmax(x, dim=2)
            logits = torch.nn.functional.logsigmoid(a_out)[:, None] + log_p
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            R = torch.softmax(logits, dim=2).nan_to_num(0.0)
        trace.append(R)
        D_use = f_a * R * m
        D_ign = (f_a - D_use) * m
        a_out = (beta_use * D_use).sum(1) - (beta_ign * D_ign).sum(1)
        denom = D_use.sum(1) + eps  # (B, J)
        mu = torch.einsum("bij,bijch->bjch", D_use, V) / denom[..., None, None]
        sq = (V - mu[:, None]) ** 2
        sig2 = torch.einsum("bij,bijch->bjch", D_use, sq) / denom[..., None, None] + eps
    return a_out, mu, sig2, trace if return_trace else R


# ---------------------------------------------------------------------------
# The references as routing functions: edge tensors in, RoutingResult out
# ---------------------------------------------------------------------------


def _dense_batch(g, x, n_tail):
    """Edge tensor ``(|E|, *batch, *tail)`` -> ``(nb, N_src, N_dst, *tail)`` and the batch shape."""
    batch = tuple(x.shape[1:x.dim() - n_tail])
    flat = x.reshape((x.shape[0], -1) + tuple(x.shape[x.dim() - n_tail:]))  # (E, nb, *tail)
    return edge_to_dense(g, flat).movedim(2, 0), batch


def _child_batch(a):
    """``(N_src, *batch)`` -> ``(nb, N_src)``."""
    return a.reshape(a.shape[0], -1).T


def _to_edges(g, c, batch):
    """Dense couplings ``(nb, N_src, N_dst)`` -> ``(|E|, *batch)``."""
    return dense_to_edge(g, c.movedim(0, 2)).reshape((-1,) + batch)


def _to_nodes(x, batch):
    """``(nb, N_dst, *tail)`` -> ``(N_dst, *batch, *tail)``."""
    x = x.movedim(0, 1)
    return x.reshape((x.shape[0],) + batch + tuple(x.shape[2:]))


def _result(g, batch, trace, return_trace, **nodes):
    """A RoutingResult from dense node outputs and the dense couplings of every iteration."""
    edges = [_to_edges(g, c, batch) for c in trace]
    out = {k: None if v is None else _to_nodes(v, batch) for k, v in nodes.items()}
    return RoutingResult(coupling=edges[-1], trace=edges if return_trace else None, **out)


def reference_dynamic(g, votes, n_iters=3, return_trace=False):
    """:func:`dense_dynamic_routing` with the signature of :func:`~dgl_capsules.routing.dynamic_routing`.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(5, 3)
    >>> r = reference_dynamic(g, torch.randn(15, 2, 4, dtype=torch.float64), return_trace=True)
    >>> r.poses.shape, r.coupling.shape, len(r.trace)
    (torch.Size([3, 2, 4]), torch.Size([15, 2]), 3)
    """
    u, batch = _dense_batch(g, votes, 1)  # (nb, I, J, D)
    v, trace = dense_dynamic_routing(u, dense_mask(g), n_iters, return_trace=True)
    return _result(g, batch, trace, return_trace, poses=v)


def _per_node(value, n, like):
    """A scalar or ``(N_dst,)`` beta as ``(N_dst,)``."""
    t = torch.as_tensor(value, dtype=like.dtype)
    return t.expand(n) if t.dim() == 0 else t


def reference_em(g, votes, a_in, beta_u, beta_a, n_iters=3, inverse_temperatures=None, eps=1e-6,
                 return_trace=False):
    """:func:`dense_em_routing` with the signature of :func:`~dgl_capsules.routing.em_routing`.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(5, 3)
    >>> r = reference_em(g, torch.randn(15, 2, 4, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64), 0., 0.)
    >>> r.poses.shape, r.sigma2.shape, r.activations.shape, r.coupling.shape
    (torch.Size([3, 2, 4]), torch.Size([3, 2, 4]), torch.Size([3, 2]), torch.Size([15, 2]))
    """
    V, batch = _dense_batch(g, votes, 1)  # (nb, I, J, P)
    lam = default_inverse_temperatures(n_iters) if inverse_temperatures is None else inverse_temperatures
    lam = [float(x) for x in lam][:n_iters]
    n = g.num_dst_nodes()
    mu, sigma2, act, rs = dense_em_routing(V, _child_batch(a_in.to(votes.dtype)), dense_mask(g),
                                           _per_node(beta_u, n, votes), _per_node(beta_a, n, votes), lam, eps)
    return _result(g, batch, rs, return_trace, poses=mu, sigma2=sigma2, activations=act)


def _per_edge(g, value, like):
    value = torch.as_tensor(value, dtype=like.dtype)
    return value if value.dim() == 0 else edge_to_dense(g, value)  # () or (I, J)


def reference_heinsen(g, votes, a_in, beta_use, beta_ign, n_iters=3, eps=1e-5, p_model="gaussian",
                      return_trace=False):
    """:func:`dense_heinsen_routing` with the signature of :func:`~dgl_capsules.routing.heinsen_routing`.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(5, 3)
    >>> r = reference_heinsen(g, torch.randn(15, 2, 1, 4, dtype=torch.float64), torch.randn(5, 2), 0., 0.)
    >>> r.activations.shape, r.poses.shape, r.coupling.shape
    (torch.Size([3, 2]), torch.Size([3, 2, 1, 4]), torch.Size([15, 2]))
    """
    V, batch = _dense_batch(g, votes, 2)  # (nb, I, J, C, H)
    a = _child_batch(a_in.to(votes.dtype))
    args = (V, a, _per_edge(g, beta_use, votes), _per_edge(g, beta_ign, votes), dense_mask(g))
    a_out, mu, sig2, trace = dense_heinsen_routing(*args, n_iters, eps=eps, p_model=p_model, return_trace=True)
    return _result(g, batch, trace, return_trace, poses=mu, activations=a_out, sigma2=sig2)


# ---------------------------------------------------------------------------
# Example inputs of each family (the routing contract's make_inputs)
# ---------------------------------------------------------------------------


def example_dynamic(g, batch, generator):
    """Float64 votes ``(|E|, batch, 4)``."""
    return (torch.randn(g.num_edges(), batch, 4, generator=generator, dtype=torch.float64),)


def example_em(g, batch, generator):
    """Float64 votes ``(|E|, batch, 5)``, activations in [0, 1), ``beta_u`` per parent and a scalar ``beta_a``."""
    kw = dict(generator=generator, dtype=torch.float64)
    return (torch.randn(g.num_edges(), batch, 5, **kw), torch.rand(g.num_src_nodes(), batch, **kw),
            0.3 * torch.randn(g.num_dst_nodes(), **kw), torch.randn((), **kw))


def example_heinsen(g, batch, generator):
    """Float64 votes ``(|E|, batch, 2, 3)``, score logits, ``beta_use`` per edge and a scalar ``beta_ign``."""
    kw = dict(generator=generator, dtype=torch.float64)
    return (torch.randn(g.num_edges(), batch, 2, 3, **kw), torch.randn(g.num_src_nodes(), batch, **kw),
            torch.randn(g.num_edges(), **kw), torch.randn((), **kw))


# ---------------------------------------------------------------------------
# Self-attention routing (Efficient-CapsNet): dense reference and contract inputs
# ---------------------------------------------------------------------------

def reference_self_attention(g, votes, bias=0.0, uniform=False, eps=1e-20, return_trace=False):
    r"""Efficient-CapsNet's self-attention routing (Mazzia et al. 2021, eqs. 5-7), dense, in float64.

    One ``(child i, parent j)`` cell per pair, masked where ``g`` has no edge:

    .. math::

        A_{ij} = \frac{\hat u_{j|i} \cdot \sum_k \hat u_{j|k}}{\sqrt D}, \quad
        c_{ij} = \operatorname{softmax}_j A_{ij}, \quad
        s_j = \sum_i (c_{ij} + b_{ij})\, \hat u_{j|i}, \quad
        v_j = \Big(1 - \frac{1}{e^{\lVert s_j \rVert} + \epsilon}\Big) \frac{s_j}{\lVert s_j \rVert + \epsilon}

    (the squash exactly as the published code writes it). Only ``g.edges()``
    is read from the graph. Arguments as
    :func:`~dgl_capsules.routing.self_attention_routing`.

    Returns
    -------
    RoutingResult
        float64 ``poses`` ``(N_dst, *, D)``, ``coupling`` ``(|E|, *)`` and, with
        ``return_trace``, ``trace = [coupling]``.
    """
    from .routing import RoutingResult

    votes = votes.to(torch.float64)
    batch_shape, d = tuple(votes.shape[1:-1]), votes.shape[-1]
    flat = votes.reshape(votes.shape[0], -1, d)  # (E, B, D)
    u = edge_to_dense(g, flat)  # (I, J, B, D), zeros off the graph
    mask = dense_mask(g)  # (I, J)
    m = mask.to(torch.float64)
    if uniform:
        c = (m / m.sum(1, keepdim=True)).nan_to_num(0.0)[:, :, None].expand(u.shape[:3])  # (I, J, B)
    else:
        total = torch.einsum("ijbd->jbd", u)  # every vote for parent j (zeros off the graph add nothing)
        a = torch.einsum("ijbd,jbd->ijb", u, total) / math.sqrt(d)
        a = a.masked_fill(~mask[:, :, None], float("-inf"))
        c = torch.softmax(a, dim=1).nan_to_num(0.0) * m[:, :, None]  # softmax over the parents of each child
    b = torch.as_tensor(bias, dtype=torch.float64)
    b = b * m if b.dim() == 0 else edge_to_dense(g, b)  # (I, J)
    s = torch.einsum("ijb,ijbd->jbd", (c + b[:, :, None]) * m[:, :, None], u)  # (J, B, D)
    n = torch.linalg.vector_norm(s, dim=-1, keepdim=True)
    v = (1 - 1 / (torch.exp(n) + eps)) * (s / (n + eps))
    coupling = dense_to_edge(g, c).reshape((-1,) + batch_shape)  # (E, *)
    poses = v.reshape((g.num_dst_nodes(),) + batch_shape + (d,))
    return RoutingResult(poses=poses, coupling=coupling, trace=[coupling] if return_trace else None)


def example_self_attention(g, batch, generator):
    """Contract inputs for :func:`~dgl_capsules.routing.self_attention_routing`: float64 votes ``(|E|, batch, 4)``
    and a bias ``(|E|,)``."""
    kw = dict(generator=generator, dtype=torch.float64)
    return torch.randn(g.num_edges(), batch, 4, **kw), 0.3 * torch.randn(g.num_edges(), **kw)
