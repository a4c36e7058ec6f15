"""Inverted dot-product attention routing (Tsai, Srivastava, Goh & Salakhutdinov, ICLR 2020)."""
import math

import torch.nn.functional as F
from dgl import ops
from dgl.ops import edge_softmax

from .._checks import check_edge_tensor, check_eps, check_float_tensor, check_n_iters
from ._common import RoutingResult, check_graph, coupling_override, empty_result, uniform_coupling
from .registry import register_routing

__all__ = ["inverted_routing"]


def inverted_routing(g, votes, weight=None, bias=None, n_iters=2, normalize=True, eps=1e-5, return_trace=False):
    r"""Route votes by inverted dot-product attention (Tsai et al. 2020, Procedure 1).

    The parents' poses start from uniform routing, then the parents compete
    for each child by the agreement of their pose with its vote:

    .. math::

        r_{ij} = \frac{1}{|\mathcal{N}(i)|} \text{ (first iteration)}, \qquad
        r_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)} \frac{p_j \cdot v_{ij}}{\sqrt{D}}
        \text{ (later ones)},

        p_j = \operatorname{LayerNorm}\Big(\sum_{i \in \mathcal{N}(j)} r_{ij}\, v_{ij}\Big),

    where :math:`\mathcal{N}(i)` are the parents of child :math:`i` and the
    agreement uses the poses :math:`p_j` of the previous iteration. There is
    no division by :math:`\sum_i r_{ij}`: the LayerNorm (over the :math:`D`
    entries of a pose, with the optional affine ``weight`` and ``bias``)
    fixes the scale. ``n_iters = 2`` (one agreement update) is the paper's
    setting.

    The paper writes the agreement as :math:`p_j^\top v_{ij}`; its published
    code scales it by :math:`1 / \sqrt{D}`, as here.

    On a convolutional capsule graph every child's softmax runs over all its
    parents, in every window that holds it (the exact normalisation). The
    paper's convolutional layer normalises each child separately in each
    kernel window; that is this routing on a graph with one child node per
    (window, child) pair (:class:`~dgl_capsules.nn.InvertedConvCaps` offers
    both).

    Parameters
    ----------
    g : dgl.DGLGraph
        Unibipartite capsule graph.
    votes : torch.Tensor
        Votes :math:`v_{ij}` on the edges, ``(|E|, *, D)``; decides the dtype.
    weight, bias : torch.Tensor, optional
        The LayerNorm's affine parameters ``(D,)`` (none by default).
    n_iters : int
        Iterations ``>= 1``; the first routes uniformly.
    normalize : bool
        Apply the LayerNorm (the published code skips it for ``D = 1``).
    eps : float
        The LayerNorm's :math:`\epsilon`.
    return_trace : bool
        Also return the coupling of every iteration.

    Returns
    -------
    RoutingResult
        ``poses`` :math:`p_j` ``(N_dst, *, D)``, ``coupling`` :math:`r_{ij}`
        ``(|E|, *)`` of the last iteration and, on request, ``trace``, the
        ``n_iters`` couplings (the first uniform).

    Raises
    ------
    TypeError
        If ``votes`` is not a float32 / float64 tensor or ``weight`` / ``bias``
        not a floating-point tensor.
    ValueError
        If a shape is wrong, ``n_iters < 1``, ``eps <= 0``, ``normalize`` is
        not a bool, or ``weight`` / ``bias`` come with ``normalize=False``.
    dgl.DGLError
        If ``g`` is not a unibipartite graph or a parent has no children.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(800, 10)
    >>> votes = torch.randn(g.num_edges(), 4, 16)
    >>> r = dc.routing.inverted_routing(g, votes, n_iters=2, return_trace=True)
    >>> r.poses.shape, r.coupling.shape, len(r.trace)
    (torch.Size([10, 4, 16]), torch.Size([8000, 4]), 2)
    """
    check_graph(g, "inverted_routing")
    votes = check_edge_tensor("votes", votes, g, 2, "(|E|, *, D)")
    d = votes.shape[-1]
    if d == 0:
        raise ValueError(f"votes must have shape (|E|, *, D) with D >= 1; got {tuple(votes.shape)}")
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True or False; got {normalize!r}")
    weight = _affine("weight", weight, d, votes, normalize)
    bias = _affine("bias", bias, d, votes, normalize)
    n_iters = check_n_iters(n_iters)
    eps = check_eps(eps)
    batch = tuple(votes.shape[1:-1])
    if votes.numel() == 0:  # a batch of no samples
        return empty_result(votes, n_iters, return_trace, poses=(g.num_dst_nodes(),) + batch + (d,),
                            coupling=votes.shape[:-1])

    trace = [] if return_trace else None
    scale = 1.0 / math.sqrt(d)
    with g.local_scope():
        for it in range(n_iters):
            if it == 0:
                coupling = coupling_override(g, batch, votes)  # (E, *): see first_coupling
                coupling = uniform_coupling(g, batch, votes) if coupling is None else coupling
            else:
                agreement = ops.e_dot_v(g, votes, poses).squeeze(-1) * scale  # (E, *)
                # NOTE: the parents j of child i compete for it: edge_softmax normalised by source.
                coupling = edge_softmax(g, agreement, norm_by="src")  # (E, *)
            if trace is not None:
                trace.append(coupling)
            poses = ops.copy_e_sum(g, coupling.unsqueeze(-1) * votes)  # (N_dst, *, D)
            if normalize:
                poses = F.layer_norm(poses, (d,), weight, bias, eps)
    return RoutingResult(poses=poses, coupling=coupling, trace=trace)


def _affine(name, value, d, votes, normalize):
    """The LayerNorm's ``weight`` / ``bias``: ``None`` or a floating tensor ``(D,)`` cast to the votes' dtype."""
    if value is None:
        return None
    if not normalize:
        raise ValueError(f"{name} is a LayerNorm parameter; it cannot be given with normalize=False")
    value = check_float_tensor(name, value, f"(D,) = ({d},)", dtype=votes.dtype).to(votes.device)
    if tuple(value.shape) != (d,):
        raise ValueError(f"{name} must have shape (D,) = ({d},), one value per pose entry; got {tuple(value.shape)}")
    return value


register_routing(
    "inverted-dot-product", inverted_routing, label="inverted dot-product attention routing",
    citation="Tsai, Srivastava, Goh & Salakhutdinov 2020", normalise="parents", outputs=("poses", "coupling"),
    # NOTE: the family has no activations; a capsule's presence is read from its pose, as for dynamic routing.
    strength="length", inputs=("edge", "const", "const"),
    reference="dgl_capsules.testing:reference_inverted", example="dgl_capsules.testing:example_inverted",
    defaults=dict(n_iters=2),
)
