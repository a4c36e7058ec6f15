"""Dynamic routing between capsules (Sabour, Frosst & Hinton 2017)."""
import dgl.function as fn
import torch
from dgl.ops import edge_softmax

from .._checks import check_edge_tensor, check_float_tensor, check_n_iters
from ..functional import _squash_parts, squash
from ._common import RoutingResult, check_graph, coupling_override, empty_result, overridden
from .registry import register_routing

__all__ = ["dynamic_routing", "dynamic_routing_table"]

# The complete-graph kernel routes about this many bytes of votes at a time:
# a block stays in cache for all the iterations and few ops are launched
# (8 MiB was best of 1-8 MiB in bench/bench_dynamic.py on a 2-core Xeon).
_BLOCK_BYTES = 1 << 23


def dynamic_routing(g, votes, n_iters=3, return_trace=False):
    r"""Route votes from children to parents by agreement (Sabour et al. 2017, Procedure 1).

    Every sample starts from logits :math:`b_{ij} = 0` and repeats ``n_iters``
    times:

    .. math::

        c_{ij} = \frac{\exp b_{ij}}{\sum_{k \in \mathcal{N}(i)} \exp b_{ik}}, \qquad
        s_j = \sum_{i \in \mathcal{N}(j)} c_{ij}\, \hat u_{j|i}, \qquad
        v_j = \operatorname{squash}(s_j), \qquad
        b_{ij} \leftarrow b_{ij} + \hat u_{j|i} \cdot v_j,

    where :math:`\mathcal{N}(i)` are the parents of child *i* and
    :math:`\mathcal{N}(j)` the children of parent *j*. The logit update after
    the last iteration is skipped: it cannot change the result.

    The batch lives in the feature dimensions: one graph serves the whole
    mini-batch, and the routing state of each sample is separate. A ragged
    batch made with :func:`dgl.batch` works the same way with votes of shape
    ``(|E_total|, D)``.

    The votes decide the dtype (float32 or float64). A graph with int32 ids
    (``g.int()``) gives the same result as with int64 ids, and a batch with
    no samples (a ``*`` dim of size 0) gives empty outputs of the right shape.

    On a complete bipartite graph (every child votes once for every parent,
    as in :func:`~dgl_capsules.capsule_graph`, in any edge order) the same
    equations run as batched matrix products over a block of samples at a
    time (:func:`dynamic_routing_table`), with a hand-written backward pass
    that keeps every iteration's couplings (``(|E|, *)`` each, a 1/D of the
    votes) instead of autograd's graph of the iterations; every other graph
    routes by message passing.
    Tests check that both give the same poses, couplings and gradients.

    Parameters
    ----------
    g : dgl.DGLGraph
        Unibipartite capsule graph, e.g. :func:`~dgl_capsules.capsule_graph`.
    votes : torch.Tensor
        Prediction vectors :math:`\hat u_{j|i}` on the edges, ``(|E|, *, D)``.
    n_iters : int
        Routing iterations ``r >= 1``.
    return_trace : bool
        Also return the coupling of every iteration.

    Returns
    -------
    RoutingResult
        ``poses`` :math:`v_j` ``(N_dst, *, D)``, ``coupling`` :math:`c_{ij}`
        ``(|E|, *)`` of the last iteration and, on request, ``trace``, a list
        of ``n_iters`` couplings.

    Raises
    ------
    TypeError
        If ``votes`` is not a float32 or float64 tensor.
    ValueError
        If ``votes`` does not have ``|E|`` rows and a vector dimension
        ``D >= 1``, or ``n_iters < 1``.
    dgl.DGLError
        If ``g`` is not a unibipartite graph or a parent has no children.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(1152, 10)
    >>> votes = torch.randn(g.num_edges(), 4, 16)
    >>> r = dc.routing.dynamic_routing(g, votes, n_iters=3)
    >>> r.poses.shape, r.coupling.shape
    (torch.Size([10, 4, 16]), torch.Size([11520, 4]))
    """
    check_graph(g, "dynamic_routing")
    votes = check_edge_tensor("votes", votes, g, 2, "(|E|, *, D)")
    if votes.shape[-1] == 0:
        raise ValueError(f"votes must have shape (|E|, *, D) with D >= 1; got {tuple(votes.shape)}")
    n_iters = check_n_iters(n_iters)
    if votes.numel() == 0:  # a batch of no samples
        batch = votes.shape[1:-1]
        return empty_result(votes, n_iters, return_trace, poses=(g.num_dst_nodes(),) + batch + votes.shape[-1:],
                            coupling=votes.shape[:-1])
    pairs = None if overridden() else complete_pairs(g)
    if pairs is not None:
        return _route_complete(pairs, votes, n_iters, return_trace)
    return _route_message_passing(g, votes, n_iters, return_trace)


def _route_message_passing(g, votes, n_iters, return_trace):
    """Procedure 1 as DGL message passing; works on any capsule graph."""
    trace = [] if return_trace else None
    with g.local_scope():
        g.edata["u"] = votes  # (E, *, D)
        logits = votes.new_zeros(votes.shape[:-1])  # (E, *)
        first = coupling_override(g, votes.shape[1:-1], votes)  # (E, *) or None: see first_coupling
        for it in range(n_iters):
            # NOTE: Sabour's softmax over the parents j of each child i is
            # edge_softmax normalised by source.
            coupling = first if it == 0 and first is not None else edge_softmax(g, logits, norm_by="src")  # (E, *)
            if trace is not None:
                trace.append(coupling)
            g.edata["m"] = coupling.unsqueeze(-1) * votes  # (E, *, D)
            g.update_all(fn.copy_e("m", "m"), fn.sum("m", "s"))
            poses = squash(g.dstdata["s"])  # (N_dst, *, D)
            if it + 1 < n_iters:
                g.dstdata["v"] = poses
                g.apply_edges(fn.e_dot_v("u", "v", "agree"))
                logits = logits + g.edata["agree"].squeeze(-1)  # (E, *)
    return RoutingResult(poses=poses, coupling=coupling, trace=trace)


# ---------------------------------------------------------------------------
# Complete bipartite graphs: the same equations as batched matrix products.
# ---------------------------------------------------------------------------


class CompletePairs:
    """Where each (parent j, child i) pair of a complete graph lives in its edge order.

    ``order[j * I + i]`` is the id (int64) of the edge ``i -> j``; ``position[e]`` is the
    pair index ``j * I + i`` of edge ``e`` (the inverse permutation).
    """

    def __init__(self, n_src, n_dst, order, position):
        self.n_src, self.n_dst = n_src, n_dst
        self.order, self.position = order, position
        # capsule_graph's own order, edge i * J + j: the table is a strided view, no index needed
        self.canonical = bool((order.view(n_dst, n_src).t().reshape(-1) == torch.arange(len(order))).all())

    def table(self, x):
        """An edge tensor ``(|E|, B, *)`` as the table ``(B, J, I, *)`` (a view in the canonical order)."""
        rest = tuple(range(3, x.dim() + 1))
        if self.canonical:
            return x.view((self.n_src, self.n_dst) + x.shape[1:]).permute(2, 1, 0, *rest)
        by_pair = x.index_select(0, self.order)  # (J * I, B, *)
        return by_pair.view((self.n_dst, self.n_src) + x.shape[1:]).permute(2, 0, 1, *rest)

    def edges(self, t):
        """The inverse of :meth:`table`: a table ``(B, J, I, *)`` as an edge tensor ``(|E|, B, *)``."""
        rest = tuple(range(3, t.dim()))
        shape = (self.n_src * self.n_dst, t.shape[0]) + t.shape[3:]
        if self.canonical:
            return t.permute(2, 1, 0, *rest).reshape(shape)
        by_pair = t.permute(1, 2, 0, *rest).reshape(shape)  # (J * I, B, *)
        return by_pair.index_select(0, self.position)


def complete_pairs(g):
    """:class:`CompletePairs` if every child of ``g`` has exactly one edge to every parent, else ``None``."""
    n_src, n_dst, n_edges = g.num_src_nodes(), g.num_dst_nodes(), g.num_edges()
    if n_edges != n_src * n_dst or n_edges == 0:
        return None
    src, dst = g.edges()
    position = dst.long() * n_src + src.long()  # (E,) pair index, parent-major (int64 for int32 graphs too)
    order = torch.full_like(position, -1).scatter_(0, position, torch.arange(n_edges, device=position.device))
    if bool((order < 0).any()):  # a repeated pair leaves another one out
        return None
    return CompletePairs(n_src, n_dst, order, position)


def dynamic_routing_table(g, table, n_iters=3, return_trace=False):
    r""":func:`dynamic_routing` on a complete capsule graph with the votes given as a table.

    The votes :math:`\hat u_{j|i}` of every sample, parent and child, laid
    out ``(B, J, I, D)`` (any strides: a permuted view of how a layer
    computes them is fine), instead of in the edge order of ``g``; the result
    is the one :func:`dynamic_routing` gives for those votes in the edge
    order of ``g`` (couplings and trace in that order). A layer whose votes
    come out of one batched product per child (:class:`~dgl_capsules.nn.DynamicCaps`)
    routes them without gathering them edge by edge.

    Parameters
    ----------
    g : dgl.DGLGraph
        A complete capsule graph (every child votes once for every parent, in
        any edge order), such as :func:`~dgl_capsules.capsule_graph`.
    table : torch.Tensor
        ``(B, J, I, D)``: ``table[b, j, i]`` is the vote of child ``i`` for
        parent ``j`` in sample ``b``; float32 or float64.
    n_iters, return_trace
        As :func:`dynamic_routing`.

    Returns
    -------
    RoutingResult
        ``poses`` ``(J, B, D)``, ``coupling`` ``(|E|, B)`` and the trace, as
        :func:`dynamic_routing`.

    Raises
    ------
    TypeError
        If ``table`` is not a float32 / float64 tensor.
    ValueError
        If ``g`` is not complete, or ``table`` not ``(B, J, I, D)`` for its ``J`` parents and ``I`` children.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(1152, 10)
    >>> r = dynamic_routing_table(g, torch.randn(4, 10, 1152, 16))
    >>> r.poses.shape, r.coupling.shape
    (torch.Size([10, 4, 16]), torch.Size([11520, 4]))
    """
    check_graph(g, "dynamic_routing_table")
    n_iters = check_n_iters(n_iters)
    pairs = complete_pairs(g)
    if pairs is None:
        raise ValueError(f"g must be a complete capsule graph (every child votes once for every parent, as "
                         f"capsule_graph(n_in, n_out) builds); got {g.num_src_nodes()} children, "
                         f"{g.num_dst_nodes()} parents and {g.num_edges()} edges")
    layout = f"(B, J, I, D) = (B, {pairs.n_dst}, {pairs.n_src}, D)"
    table = check_float_tensor("table", table, layout)
    if table.dim() != 4 or table.shape[1:3] != (pairs.n_dst, pairs.n_src) or table.shape[-1] == 0:
        raise ValueError(f"table must have shape {layout} with D >= 1; got {tuple(table.shape)}")
    if table.numel() == 0 or overridden():  # a batch of no samples, or first couplings given (first_coupling)
        return dynamic_routing(g, pairs.edges(table), n_iters, return_trace)
    return _route_table(pairs, table, n_iters, return_trace, table.shape[:1])


def _route_complete(pairs, votes, n_iters, return_trace):
    batch_shape, d = votes.shape[1:-1], votes.shape[-1]
    flat = votes.reshape(votes.shape[0], -1, d)  # (E, B, D)
    return _route_table(pairs, pairs.table(flat), n_iters, return_trace, batch_shape)


def _route_table(pairs, table, n_iters, return_trace, batch_shape):
    """Route the table ``(B, J, I, D)``; outputs in the edge order of ``pairs`` with the batch dims ``batch_shape``."""
    n_out = n_iters if return_trace else 1
    poses, *couplings = _CompleteRouting.apply(table, n_iters, n_out)  # (B, J, D), (B, J, I) each
    poses = poses.transpose(0, 1).reshape((pairs.n_dst,) + tuple(batch_shape) + poses.shape[-1:])  # (N_dst, *, D)
    couplings = [pairs.edges(c).reshape((-1,) + tuple(batch_shape)) for c in couplings]  # (E, *) each
    return RoutingResult(poses=poses, coupling=couplings[-1], trace=couplings if return_trace else None)


def _block_size(x):
    """Samples per block of the table ``x`` (B, J, I, D): about ``_BLOCK_BYTES`` of votes."""
    per_sample = x[0].numel() * x.element_size()
    return max(1, min(x.shape[0], _BLOCK_BYTES // max(1, per_sample)))


def _forward_block(x, n_iters):
    """Procedure 1 on one block ``x`` (nb, J, I, D); returns the per-iteration c, s, v."""
    nb, n_dst, n_src, d = x.shape
    k = nb * n_dst
    xk = x.view(k, n_src, d)  # one (I, D) vote matrix per (sample, parent)
    logits = x.new_zeros(nb, n_dst, n_src)
    cs, ss, vs = [], [], []
    for it in range(n_iters):
        # NOTE: softmax over the parents of each child: dim 1 of (nb, J, I).
        c = torch.softmax(logits, dim=1)  # (nb, J, I)
        s = torch.bmm(c.view(k, 1, n_src), xk).view(nb, n_dst, d)  # (nb, J, D)
        v = squash(s)
        cs.append(c), ss.append(s), vs.append(v)
        if it + 1 < n_iters:
            agree = torch.bmm(v.view(k, 1, d), xk.transpose(1, 2))  # (k, 1, I)
            logits = logits + agree.view(nb, n_dst, n_src)
    return cs, ss, vs


def _squash_backward(s, grad_v):
    """Vector-Jacobian product of :func:`~dgl_capsules.functional.squash` (same eps, same overflow guard).

    With ``n = sqrt(|s|^2 + eps)``, ``h = n / (1 + n^2)`` and ``u = s / n``,
    ``v = s h`` has ``grad_s = h (grad_v + u (grad_v . u) (1 - n^2) / (1 + n^2))``,
    written with the scaled parts of ``squash`` so that no factor overflows.
    """
    t, q, c = _squash_parts(s, -1, torch.finfo(s.dtype).tiny)
    m = torch.sqrt(q)  # n / a
    h = m / (q + c) / s.detach().abs().amax(-1, keepdim=True).clamp_min(1)  # n / (1 + n^2)
    u = t / m
    r = (c - q) / (c + q)  # (1 - n^2) / (1 + n^2)
    return h * (grad_v + u * ((grad_v * u).sum(-1, keepdim=True) * r))


def _backward_block(x, cs, ss, grad_v, grad_cs, out):
    """Write into ``out`` the gradient of the block's outputs w.r.t. its votes ``x`` (nb, J, I, D).

    ``cs`` and ``ss`` are the forward pass's couplings and sums of every iteration. Walks the
    iterations backwards; the gradient of ``x`` is a sum of rank-one terms (``c_t (x) grad s_t``
    and ``grad b_{t+1} (x) v_t``), written once as one batched matrix product.
    """
    nb, n_dst, n_src, d = x.shape
    k = nb * n_dst
    xk = x.view(k, n_src, d)
    n_iters = len(cs)
    grad_b = None  # gradient w.r.t. the logits of the iteration after ``it``
    left, right = [], []
    for it in reversed(range(n_iters)):
        g_v = grad_v if it == n_iters - 1 else None
        if grad_b is not None:  # b_{it+1} = b_it + x . v_it
            back = torch.bmm(grad_b.view(k, 1, n_src), xk).view(nb, n_dst, d)
            g_v = back if g_v is None else g_v + back
            left.append(grad_b), right.append(squash(ss[it]))
        g_c = grad_cs[it]
        if g_v is not None:
            g_s = _squash_backward(ss[it], g_v)  # (nb, J, D)
            left.append(cs[it]), right.append(g_s)
            from_s = torch.bmm(g_s.view(k, 1, d), xk.transpose(1, 2)).view(nb, n_dst, n_src)
            g_c = from_s if g_c is None else g_c + from_s
        if g_c is None:
            continue
        c = cs[it]
        g_logits = c * (g_c - (c * g_c).sum(1, keepdim=True))  # softmax backward over parents
        grad_b = g_logits if grad_b is None else grad_b + g_logits
    if not left:
        out.zero_()
        return
    # NOTE: the terms stacked along a new first dim and viewed (k, I, M) / (k, M, D) with strides are
    # what bmm takes without a copy; stacking along the last dim costs more than the product.
    lhs = torch.stack(left).view(len(left), k, n_src).permute(1, 2, 0)  # (k, I, M)
    rhs = torch.stack(right).view(len(right), k, d).transpose(0, 1)  # (k, M, D)
    out.view(k, n_src, d).baddbmm_(lhs, rhs, beta=0)  # beta = 0: out's old values are ignored


class _CompleteRouting(torch.autograd.Function):
    """Dynamic routing of a vote table ``(B, J, I, D)``, block by block; returns poses and couplings.

    Outputs: poses ``(B, J, D)`` and the couplings ``(B, J, I)`` of the last ``n_out``
    iterations. Keeps the table (contiguous) and every iteration's couplings and sums for the
    backward pass.
    """

    @staticmethod
    def forward(ctx, table, n_iters, n_out):
        x = table.contiguous()  # (B, J, I, D); blocks of samples are slices of it
        n_batch, n_dst, n_src, d = x.shape
        poses = x.new_empty(n_batch, n_dst, d)
        cs = x.new_empty(n_iters, n_batch, n_dst, n_src)
        ss = x.new_empty(n_iters, n_batch, n_dst, d)
        step = _block_size(x)
        for b0 in range(0, n_batch, step):
            b1 = min(b0 + step, n_batch)
            c_blk, s_blk, v_blk = _forward_block(x[b0:b1], n_iters)
            poses[b0:b1] = v_blk[-1]
            cs[:, b0:b1] = torch.stack(c_blk)
            ss[:, b0:b1] = torch.stack(s_blk)
        ctx.save_for_backward(x, cs, ss)
        ctx.set_materialize_grads(False)
        return (poses,) + tuple(cs[n_iters - n_out:].clone().unbind(0))

    @staticmethod
    def backward(ctx, grad_poses, *grad_couplings):
        x, cs, ss = ctx.saved_tensors
        n_iters, n_batch = cs.shape[0], x.shape[0]
        grad = torch.empty_like(x)  # (B, J, I, D)
        grad_cs = [None] * (n_iters - len(grad_couplings)) + list(grad_couplings)
        step = _block_size(x)
        for b0 in range(0, n_batch, step):
            b1 = min(b0 + step, n_batch)
            g_v = None if grad_poses is None else grad_poses[b0:b1]
            g_cs = [None if gc is None else gc[b0:b1] for gc in grad_cs]
            _backward_block(x[b0:b1], cs[:, b0:b1], ss[:, b0:b1], g_v, g_cs, grad[b0:b1])
        return grad, None, None


register_routing(
    "dynamic", dynamic_routing, label="dynamic routing", citation="Sabour, Frosst & Hinton 2017",
    normalise="parents", outputs=("poses", "coupling"), strength="length", inputs=("edge",),
    reference="dgl_capsules.testing:reference_dynamic", example="dgl_capsules.testing:example_dynamic",
    defaults=dict(n_iters=3),
)
