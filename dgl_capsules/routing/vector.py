"""Vector routing (Heinsen 2022, "An Algorithm for Routing Vectors in Sequences")."""
from numbers import Real
from typing import NamedTuple, Optional

import dgl
import torch
import torch.nn.functional as F
from dgl import ops
from dgl.ops import edge_softmax

from .._checks import check_float_tensor, check_n_iters, check_node_tensor, check_tensor
from ._common import RoutingResult, check_graph, coupling_override, empty_result, overridden, uniform_coupling
from .registry import register_routing

__all__ = ["vector_routing", "sequence_lengths", "BLOCK_MIN_EDGES"]

#: The LayerNorm (no affine) of the outputs, as torch.nn.LayerNorm's default.
LN_EPS = 1e-5


class VectorState(NamedTuple):
    """Everything a vector routing call computed (for layers that report more than a RoutingResult)."""

    poses: torch.Tensor  # (N_dst, *, D_out)
    coupling: torch.Tensor  # (|E|, *) R of the last iteration
    logits: Optional[torch.Tensor]  # (|E|, *) S of the last E-step, None if n_iters == 1
    predicted: Optional[torch.Tensor]  # (N_dst, *, D_in) G's prediction of the last E-step
    trace: Optional[list]


def vector_routing(g, x, a, beta_use, beta_ign, w_f1, w_f2, b_f2, w_g1, w_g2, b_g2, w_s=1.0, b_s=0.0,
                   n_iters=2, normalize=True, return_trace=False):
    r"""Route child vectors to parent vectors by "bang per bit" (Heinsen 2022, Algorithm 1).

    Every child :math:`i` is a vector :math:`x_i` with a score logit
    :math:`a_i`; every parent :math:`j` is a vector :math:`x^{out}_j`. Votes
    are factorised: with :math:`\tilde x_i = x_i / \sqrt{n_i}`,

    .. math::

        V_{ij} = (\tilde x_i \odot w^{F1}_j)\, W^{F2} + b^{F2}_j,

    and they are never formed. Starting from :math:`R_{ij} = 1 / |\mathcal{N}(i)|`,
    each of the ``n_iters`` iterations runs a D-step and an M-step,

    .. math::

        D^{use}_{ij} = f(a_i) R_{ij}, \quad D^{ign}_{ij} = f(a_i) - D^{use}_{ij}, \quad
        \phi_{ij} = \beta^{use}_{ij} D^{use}_{ij} - \beta^{ign}_{ij} D^{ign}_{ij},

        x^{out}_j = \sum_{i \in \mathcal{N}(j)} \phi_{ij} V_{ij}
                  = \Big(\big(\textstyle\sum_i \phi_{ij} \tilde x_i\big) \odot w^{F1}_j\Big) W^{F2}
                    + \big(\textstyle\sum_i \phi_{ij}\big)\, b^{F2}_j,

    each but the first preceded by an E-step in which the parents predict
    their children and each child's shares follow how well they do,

    .. math::

        P_j = \big(\mathrm{N}(x^{out}_j) W^{G1}\big) \odot w^{G2}_j + b^{G2}_j, \quad
        S_{ij} = \log f\big((x_i \cdot P_j)\, w^{S}_{ij} + b^{S}_{ij}\big), \quad
        R_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)} S_{ij},

    with :math:`f` the logistic sigmoid and :math:`\mathrm{N}` a LayerNorm
    without affine parameters (the identity for :math:`D_{out} = 1`). With
    ``normalize`` the result is :math:`\mathrm{N}(x^{out}_j)`.

    Every per-edge quantity is a scalar (:math:`S, R, D^{use}, D^{ign}, \phi`):
    the M-step is one sparse product ``u_mul_e`` + sum of :math:`[\tilde x_i, 1]`
    with :math:`\phi` and the E-step one ``u_dot_v``, so memory grows linearly
    with the number of edges. On a complete graph (any edge order), and on
    every part of a :func:`dgl.batch` of complete graphs in
    :func:`~dgl_capsules.capsule_graph`'s order (a ragged batch of sequences,
    parts of at least :data:`BLOCK_MIN_EDGES` edges on average), the same
    equations run as matrix products over ``(*, N_src, N_dst)`` arrays of those
    scalars, views of the edge tensors; tests check that the paths agree.

    **Scaling.** :math:`n_i` is the number of children of the graph that holds
    child :math:`i`: ``N_src`` for one graph, and each part's own count in a
    :func:`dgl.batch` of graphs, so a ragged batch of sequences routes every
    sequence exactly as it would be routed alone, unpadded.

    Parameters
    ----------
    g : dgl.DGLGraph
        Unibipartite capsule graph, e.g. :func:`~dgl_capsules.capsule_graph`.
    x : torch.Tensor
        Child vectors :math:`x_i`, ``(N_src, *, D_in)``; decides the dtype.
    a : torch.Tensor
        Child score logits :math:`a_i`, ``(N_src, *)``.
    beta_use, beta_ign : float or torch.Tensor
        :math:`\beta^{use}, \beta^{ign}`: scalars, one per edge ``(|E|,)``, or
        one per edge and sample ``(|E|, *)``.
    w_f1 : torch.Tensor
        :math:`w^{F1}_j`, ``(N_dst, D_in)``.
    w_f2 : torch.Tensor
        :math:`W^{F2}`, ``(D_in, D_out)``, shared by all parents.
    b_f2 : torch.Tensor
        :math:`b^{F2}_j`, ``(N_dst, D_out)``.
    w_g1 : torch.Tensor
        :math:`W^{G1}`, ``(D_out, D_in)``, shared by all parents.
    w_g2, b_g2 : torch.Tensor
        :math:`w^{G2}_j, b^{G2}_j`, ``(N_dst, D_in)``.
    w_s, b_s : float or torch.Tensor
        :math:`w^S_{ij}, b^S_{ij}`: scalars or one per edge ``(|E|,)``.
    n_iters : int
        Iterations ``>= 1`` (2 in the paper: one data-dependent E-step).
    normalize : bool
        LayerNorm the result.
    return_trace : bool
        Also return :math:`R` of every iteration.

    Returns
    -------
    RoutingResult
        ``poses`` :math:`x^{out}_j` ``(N_dst, *, D_out)``, ``coupling``
        :math:`R_{ij}` ``(|E|, *)`` of the last iteration and, on request,
        ``trace``, the ``n_iters`` couplings in order (the first uniform).

    Raises
    ------
    TypeError
        If ``x`` is not a float32 / float64 tensor, another tensor is not
        floating point, or a scalar input is neither a number nor a tensor.
    ValueError
        If a shape is wrong, ``n_iters < 1`` or ``normalize`` is not a bool.
    dgl.DGLError
        If ``g`` is not a unibipartite graph or a parent has no children.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(100, 10)
    >>> d_in, d_out, b = 32, 16, 4
    >>> x, a = torch.randn(100, b, d_in), torch.randn(100, b)
    >>> w_f1, w_f2, b_f2 = torch.randn(10, d_in), torch.randn(d_in, d_out), torch.zeros(10, d_out)
    >>> w_g1, w_g2, b_g2 = torch.randn(d_out, d_in), torch.randn(10, d_in), torch.zeros(10, d_in)
    >>> r = dc.routing.vector_routing(g, x, a, 1.0, 1.0, w_f1, w_f2, b_f2, w_g1, w_g2, b_g2)
    >>> r.poses.shape, r.coupling.shape
    (torch.Size([10, 4, 16]), torch.Size([1000, 4]))
    """
    s = vector_routing_state(g, x, a, beta_use, beta_ign, w_f1, w_f2, b_f2, w_g1, w_g2, b_g2, w_s, b_s,
                             n_iters=n_iters, normalize=normalize, return_trace=return_trace)
    return RoutingResult(poses=s.poses, coupling=s.coupling, trace=s.trace)


def vector_routing_state(g, x, a, beta_use, beta_ign, w_f1, w_f2, b_f2, w_g1, w_g2, b_g2, w_s=1.0, b_s=0.0,
                         n_iters=2, normalize=True, return_trace=False):
    """:func:`vector_routing`, returning a :class:`VectorState` (also the last E-step's logits and predictions)."""
    layout, parts = _structure(g)
    x = check_float_tensor("x", x, "(N_src, *, D_in)")
    if x.dim() < 2 or x.shape[0] != g.num_src_nodes() or x.shape[-1] == 0:
        raise ValueError(f"x must have shape (N_src, *, D_in) with N_src = {g.num_src_nodes()} children of the "
                         f"graph and D_in >= 1; got {tuple(x.shape)}")
    batch, d_in, n_dst = tuple(x.shape[1:-1]), x.shape[-1], g.num_dst_nodes()
    a = check_node_tensor("a", a, g.num_src_nodes(), batch, "(N_src, *)", dtype=x.dtype)
    w_f2 = _matrix("w_f2", w_f2, (d_in, None), "(D_in, D_out)", x)
    d_out = w_f2.shape[1]
    p = dict(w_f1=_matrix("w_f1", w_f1, (n_dst, d_in), "(N_dst, D_in)", x), w_f2=w_f2,
             b_f2=_matrix("b_f2", b_f2, (n_dst, d_out), "(N_dst, D_out)", x),
             w_g1=_matrix("w_g1", w_g1, (d_out, d_in), "(D_out, D_in)", x),
             w_g2=_matrix("w_g2", w_g2, (n_dst, d_in), "(N_dst, D_in)", x),
             b_g2=_matrix("b_g2", b_g2, (n_dst, d_in), "(N_dst, D_in)", x))
    edge = {name: _edge_scalars(name, value, g, batch, x, per_sample=name.startswith("beta"))
            for name, value in dict(beta_use=beta_use, beta_ign=beta_ign, w_s=w_s, b_s=b_s).items()}
    n_iters = check_n_iters(n_iters)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True or False; got {normalize!r}")
    if x.numel() == 0:  # a batch of no samples
        r = empty_result(x, n_iters, return_trace, poses=(n_dst,) + batch + (d_out,), coupling=(g.num_edges(),) + batch)
        return VectorState(r.poses, r.coupling, None, None, r.trace)
    x_scaled = x * sequence_lengths(g).to(x).rsqrt().view((-1,) + (1,) * (x.dim() - 1))  # (N_src, *, D_in)
    args = (x, x_scaled, torch.sigmoid(a), p, edge, n_iters, normalize, return_trace)
    if layout is not None and not overridden():  # first couplings given (first_coupling): message passing
        return _route_complete(layout, *args)
    if parts is not None and not overridden():
        return _route_parts(parts, *args)
    return _route_message_passing(g, *args)


def _structure(g):
    """``(complete layout, complete parts)`` of ``g``, at most one not ``None``; raises as ``check_graph``.

    A complete graph, or a batch of them, has no parent without children: only other graphs need the
    in-degree check (which builds the graph's CSC format on a fresh :func:`dgl.batch`).
    """
    if isinstance(g, dgl.DGLGraph) and g.is_unibipartite and len(g.canonical_etypes) == 1:
        layout = complete_layout(g)
        parts = None if layout is not None else complete_parts(g)
        if layout is not None or parts is not None:
            return layout, parts
    check_graph(g, "vector_routing")
    return None, None


def sequence_lengths(g):
    """``(N_src,)``: the number of children of the graph holding each child (each part of a :func:`dgl.batch`).

    Examples
    --------
    >>> import dgl, dgl_capsules as dc
    >>> g = dgl.batch([dc.capsule_graph(2, 3), dc.capsule_graph(3, 3)])
    >>> sequence_lengths(g).tolist()
    [2, 2, 3, 3, 3]
    """
    counts = g.batch_num_nodes(g.srctypes[0]).long()  # (parts,)
    return torch.repeat_interleave(counts, counts)


def _matrix(name, value, shape, layout, like):
    """A floating tensor of ``shape`` (``None`` = any size >= 1), cast to ``like``'s dtype."""
    value = check_float_tensor(name, value, layout, dtype=like.dtype).to(like.device)
    ok = value.dim() == len(shape) and all(n is None or n == m for n, m in zip(shape, value.shape))
    if not ok or value.numel() == 0:
        want = "(" + ", ".join("D_out" if n is None else str(n) for n in shape) + ")"
        raise ValueError(f"{name} must have shape {layout} = {want}; got {tuple(value.shape)}")
    return value


def _edge_scalars(name, value, g, batch, like, per_sample):
    """A number or a tensor of shape (), ``(|E|,)`` or (if ``per_sample``) ``(|E|, *)``, broadcastable over ``*``."""
    n_edges = g.num_edges()
    layout = (f"(), (|E|,) = ({n_edges},) or (|E|, *) = {(n_edges,) + batch}" if per_sample
              else f"() or (|E|,) = ({n_edges},)")
    if isinstance(value, Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    if not isinstance(value, torch.Tensor):
        if type(value).__module__ == "numpy":
            check_tensor(name, value, layout)  # tells how to convert
        raise TypeError(f"{name} must be a number or a floating-point tensor of shape {layout}; got "
                        f"{type(value).__name__}")
    value = check_float_tensor(name, value, layout, dtype=like.dtype).to(like.device)
    if value.dim() == 0:
        return value
    if value.dim() == 1 and value.shape[0] == n_edges:
        return value.view((n_edges,) + (1,) * len(batch))
    if per_sample and tuple(value.shape) == (n_edges,) + batch:
        return value
    raise ValueError(f"{name} must have shape {layout}; got {tuple(value.shape)}")


def _norm(y):
    """LayerNorm over the last dim without affine parameters; the identity for vectors of size 1."""
    return y if y.shape[-1] == 1 else F.layer_norm(y, y.shape[-1:], eps=LN_EPS)


def _outputs(sums, p):
    """Parent vectors from ``sums = [sum_i phi x~_i, sum_i phi]`` ``(N_dst, *, D_in + 1)``: ``(N_dst, *, D_out)``."""
    lead = (sums.shape[0],) + (1,) * (sums.dim() - 2)
    z, s = sums[..., :-1], sums[..., -1:]
    return (z * p["w_f1"].view(lead + (-1,))) @ p["w_f2"] + s * p["b_f2"].view(lead + (-1,))


def _predictions(x_out, p):
    """G: every parent's prediction of its children, ``(N_dst, *, D_in)``."""
    lead = (x_out.shape[0],) + (1,) * (x_out.dim() - 2)
    return (_norm(x_out) @ p["w_g1"]) * p["w_g2"].view(lead + (-1,)) + p["b_g2"].view(lead + (-1,))


def _route_message_passing(g, x, x_scaled, f_a, p, edge, n_iters, normalize, return_trace):
    """Algorithm 1 as DGL message passing, every per-edge quantity a scalar ``(|E|, *)``."""
    trace = [] if return_trace else None
    batch = x.shape[1:-1]
    logits = predicted = None
    with g.local_scope():
        x1 = torch.cat([x_scaled, x_scaled.new_ones(x_scaled.shape[:-1] + (1,))], -1)  # (N_src, *, D_in + 1)
        f_a = ops.copy_u(g, f_a)  # (E, *): f(a_i) on every edge of child i
        for it in range(n_iters):
            if it == 0:
                coupling = coupling_override(g, batch, x)  # (E, *): see first_coupling
                coupling = uniform_coupling(g, batch, x) if coupling is None else coupling
            else:
                predicted = _predictions(x_out, p)  # (N_dst, *, D_in)
                dots = ops.u_dot_v(g, x, predicted).squeeze(-1)  # (E, *)
                logits = F.logsigmoid(dots * edge["w_s"] + edge["b_s"])  # (E, *)
                # NOTE: the softmax over the outputs j of each input i is edge_softmax normalised by source.
                coupling = edge_softmax(g, logits, norm_by="src")  # (E, *)
            if trace is not None:
                trace.append(coupling)
            d_use = f_a * coupling  # (E, *)
            phi = edge["beta_use"] * d_use - edge["beta_ign"] * (f_a - d_use)  # (E, *)
            x_out = _outputs(ops.u_mul_e_sum(g, x1, phi.unsqueeze(-1)), p)  # (N_dst, *, D_out)
    poses = _norm(x_out) if normalize else x_out
    return VectorState(poses, coupling, logits, predicted, trace)


class CompleteLayout(NamedTuple):
    """Where the pairs of a complete graph live in its edge order.

    ``rows`` is ``None`` when edge ``i * N_dst + j`` is the pair ``(i, j)`` (the
    order of :func:`~dgl_capsules.capsule_graph`): then an edge tensor is a view
    of an ``(N_src, N_dst)`` array. Otherwise ``rows[i * N_dst + j]`` is the
    edge id (int64) of the pair.
    """

    n_src: int
    n_dst: int
    rows: Optional[torch.Tensor]


_CHUNK = 1 << 24  # edges compared at a time, to keep the check's temporaries small


def complete_layout(g):
    """:class:`CompleteLayout` if every child of ``g`` has exactly one edge to every parent, else ``None``.

    Computed once per graph structure: the answer is remembered on it, so every view of a cached
    :func:`~dgl_capsules.capsule_graph` shares it.
    """
    index = g._graph
    memo = getattr(index, "_dgl_capsules_complete_layout", None)
    if memo is not None:
        return memo[0]
    layout = _complete_layout(g)
    try:
        index._dgl_capsules_complete_layout = (layout,)  # the structure is immutable: a mutated graph has a new one
    except AttributeError:  # a DGL whose graph index takes no attributes: computed on every call
        pass
    return layout


def _complete_layout(g):
    n_src, n_dst, n_edges = g.num_src_nodes(), g.num_dst_nodes(), g.num_edges()
    if n_edges != n_src * n_dst or n_edges == 0:
        return None
    src, dst = g.edges()
    if _in_order(src, dst, 0, 0, n_dst):
        return CompleteLayout(n_src, n_dst, None)
    position = src.long() * n_dst + dst.long()  # (E,)
    rows = torch.full_like(position, -1).scatter_(0, position, torch.arange(n_edges, device=position.device))
    if bool((rows < 0).any()):  # a repeated pair leaves another one out
        return None
    return CompleteLayout(n_src, n_dst, rows)


def _in_order(src, dst, src_offset, dst_offset, n_dst):
    """Whether edge ``k`` of ``src, dst`` (ids minus the offsets) is the pair ``(k // n_dst, k % n_dst)``."""
    n = len(src)
    dtype = src.dtype if n * n_dst < 2 ** 31 and src.dtype == dst.dtype else torch.int64  # no overflow
    for k in range(0, n, _CHUNK):
        end = min(k + _CHUNK, n)
        position = (src[k:end].to(dtype) - src_offset) * n_dst + (dst[k:end].to(dtype) - dst_offset)
        if not torch.equal(position, torch.arange(k, end, dtype=dtype, device=src.device)):
            return False
    return True


#: A dgl.batch of complete graphs is routed part by part with matrix products when its parts have at least
#: this many edges on average (fewer: one message-passing call for all of them is faster).
BLOCK_MIN_EDGES = 1024


def complete_parts(g):
    """``[(src offset, N_src, dst offset, N_dst, edge offset), ...]`` if ``g`` is a :func:`dgl.batch` of complete
    graphs, each in :func:`~dgl_capsules.capsule_graph`'s edge order, with at least :data:`BLOCK_MIN_EDGES` edges
    per part on average; else ``None``."""
    if g.batch_size < 2:
        return None
    n_src = g.batch_num_nodes(g.srctypes[0]).tolist()
    n_dst = g.batch_num_nodes(g.dsttypes[0]).tolist()
    n_edges = g.batch_num_edges().tolist()
    if any(e != i * j for e, i, j in zip(n_edges, n_src, n_dst)) or sum(n_edges) < BLOCK_MIN_EDGES * len(n_edges):
        return None
    src, dst = g.edges()
    parts, so, do, eo = [], 0, 0, 0
    for i, j, e in zip(n_src, n_dst, n_edges):
        if not _in_order(src[eo:eo + e], dst[eo:eo + e], so, do, j):
            return None
        parts.append((so, i, do, j, eo))
        so, do, eo = so + i, do + j, eo + e
    return parts


def _route_parts(parts, x, x_scaled, f_a, p, edge, n_iters, normalize, return_trace):
    """Every part of a batch of complete graphs by :func:`_route_complete`; the results concatenated."""
    per_parent = ("w_f1", "b_f2", "w_g2", "b_g2")
    states = []
    for so, n_src, do, n_dst, eo in parts:
        pp = {k: v[do:do + n_dst] if k in per_parent else v for k, v in p.items()}
        ee = {k: v if v.dim() == 0 else v[eo:eo + n_src * n_dst] for k, v in edge.items()}
        rows = slice(so, so + n_src)
        states.append(_route_complete(CompleteLayout(n_src, n_dst, None), x[rows], x_scaled[rows], f_a[rows], pp, ee,
                                      n_iters, normalize, return_trace))

    def cat(get):
        xs = [get(s) for s in states]
        return None if xs[0] is None else torch.cat(xs)

    trace = None if not return_trace else [cat(lambda s, t=t: s.trace[t]) for t in range(n_iters)]
    return VectorState(cat(lambda s: s.poses), cat(lambda s: s.coupling), cat(lambda s: s.logits),
                       cat(lambda s: s.predicted), trace)


def _bmm(a, b):
    """``torch.bmm``, as one matrix product for a batch of one (CPU ``bmm`` is several times slower there)."""
    # NOTE: squeeze, not [0]: the backward of an index fills a zero tensor first.
    return torch.mm(a.squeeze(0), b.squeeze(0)).unsqueeze(0) if a.shape[0] == 1 else torch.bmm(a, b)


def _weighted_sums(phi, xs):
    """``phi^T xs`` per sample: ``(S, I, J), (S, I, D) -> (S, J, D)``, with the gradient of ``phi`` row-major.

    The elementwise backward of ``phi``'s terms is several times slower on a column-major gradient. ``mm``
    keeps the layout of a transposed operand in its gradient; ``bmm`` does not, so a batch of several
    samples computes ``(xs^T phi)^T`` instead.
    """
    if phi.shape[0] == 1:
        return torch.mm(phi.squeeze(0).T, xs.squeeze(0)).unsqueeze(0)
    return torch.bmm(xs.transpose(1, 2), phi).transpose(1, 2)


def _to_dense(layout, v):
    """A per-edge scalar ``()``, ``(E, 1...)`` or ``(E, *)`` as ``()`` or ``(1 | S, I, J)`` (a view if it can)."""
    if v.dim() == 0:
        return v
    v = v.reshape(v.shape[0], -1)  # (E, 1 | S)
    if layout.rows is not None:
        v = v.index_select(0, layout.rows)
    if v.shape[1] == 1:  # plain strides: elementwise kernels and their backward run fastest on them
        return v.view(1, layout.n_src, layout.n_dst)
    return v.view(layout.n_src, layout.n_dst, -1).permute(2, 0, 1)


def _to_edges(layout, c, batch):
    """``(S, I, J)`` -> an edge tensor ``(E, *batch)`` in the graph's order."""
    e = c.permute(1, 2, 0).reshape(layout.n_src * layout.n_dst, -1)  # (I * J, S), a view when S = 1
    if layout.rows is not None:
        e = torch.empty_like(e).index_copy_(0, layout.rows, e)
    return e.reshape((-1,) + tuple(batch))


def _route_complete(layout, x, x_scaled, f_a, p, edge, n_iters, normalize, return_trace):
    """Algorithm 1 on a complete graph as batched matrix products over ``(S, N_src, N_dst)`` scalars.

    ``S`` is the flattened batch. In the order of :func:`~dgl_capsules.capsule_graph` the per-edge inputs
    and the couplings are views of these arrays; in any other order they are gathered once.
    """
    n_src, n_dst = layout.n_src, layout.n_dst
    batch, d_in = x.shape[1:-1], x.shape[-1]
    xs = x.reshape(n_src, -1, d_in).transpose(0, 1)  # (S, I, D_in)
    xs_scaled = x_scaled.reshape(n_src, -1, d_in).transpose(0, 1)  # (S, I, D_in)
    f_a = f_a.reshape(n_src, -1).T.contiguous().unsqueeze(-1)  # (S, I, 1)
    dense = {k: _to_dense(layout, v) for k, v in edge.items()}  # () or (1 | S, I, J)
    trace = [] if return_trace else None
    logits = predicted = None
    for it in range(n_iters):
        if it == 0:
            coupling = xs.new_full((1, 1, n_dst), 1.0 / n_dst)  # uniform, broadcast (made per edge if returned)
        else:
            predicted = _predictions(x_out, p)  # (J, *, D_in)
            p_s = predicted.reshape(n_dst, -1, d_in).permute(1, 2, 0)  # (S, D_in, J)
            logits = F.logsigmoid(_bmm(xs, p_s) * dense["w_s"] + dense["b_s"])  # (S, I, J)
            # NOTE: the softmax over the outputs j of each input i is over the last dim of (S, I, J).
            coupling = torch.softmax(logits, dim=-1)  # (S, I, J)
        if trace is not None:
            trace.append(coupling)
        d_use = f_a * coupling  # (S, I, J)
        phi = dense["beta_use"] * d_use - dense["beta_ign"] * (f_a - d_use)  # (S, I, J)
        sums = torch.cat([_weighted_sums(phi, xs_scaled), phi.sum(1).unsqueeze(-1)], -1)  # (S, J, D_in + 1)
        x_out = _outputs(sums.transpose(0, 1).reshape((n_dst,) + tuple(batch) + (d_in + 1,)), p)  # (J, *, D_out)
    s = xs.shape[0]
    edges = [_to_edges(layout, c.expand(s, n_src, n_dst), batch) for c in (trace if trace is not None else [coupling])]
    poses = _norm(x_out) if normalize else x_out
    return VectorState(poses, edges[-1], None if logits is None else _to_edges(layout, logits, batch),
                       predicted, edges if trace is not None else None)


register_routing(
    "vector", vector_routing, label="vector routing (Heinsen 2022)", citation="Heinsen 2022",
    normalise="parents", outputs=("poses", "coupling"),
    # The children say how present they are by f(a_i) = sigmoid(a_i) of logits a_i; the parents have no
    # activations, so their strength is their pose length.
    strength="logit",
    inputs=("child", "child", "edge_value", "edge_value", "parent_value", "const", "parent_value", "const",
            "parent_value", "parent_value", "edge_value", "edge_value"),
    reference="dgl_capsules.testing:reference_vector", example="dgl_capsules.testing:example_vector",
    defaults=dict(n_iters=2),
)
