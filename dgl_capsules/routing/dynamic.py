"""Dynamic routing between capsules (Sabour, Frosst & Hinton 2017)."""
import dgl.function as fn
from dgl.ops import edge_softmax

from ..functional import squash
from ._common import RoutingResult, check_edge_tensor, check_graph, check_n_iters

__all__ = ["dynamic_routing"]


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
        If ``votes`` is not a floating-point tensor.
    ValueError
        If ``votes`` does not have ``|E|`` rows and a vector dimension, or
        ``n_iters < 1``.
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
    check_edge_tensor("votes", votes, g, 2, "(|E|, *, D)")
    n_iters = check_n_iters(n_iters)

    trace = [] if return_trace else None
    with g.local_scope():
        g.edata["u"] = votes  # (E, *, D)
        logits = votes.new_zeros(votes.shape[:-1])  # (E, *)
        for it in range(n_iters):
            # NOTE: Sabour's softmax over the parents j of each child i is
            # edge_softmax normalised by source.
            coupling = edge_softmax(g, logits, norm_by="src")  # (E, *)
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
