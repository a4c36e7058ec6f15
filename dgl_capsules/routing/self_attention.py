"""Self-attention routing of Efficient-CapsNet (Mazzia, Salvetti & Chiaberge 2021)."""
import math

import dgl.function as fn
from dgl.ops import edge_softmax

from .._checks import check_edge_tensor, check_eps
from ..functional import efficient_squash
from ._common import RoutingResult, check_graph, coupling_override, empty_result, per_item, uniform_coupling
from .registry import register_routing

__all__ = ["self_attention_routing"]


def self_attention_routing(g, votes, bias=0.0, uniform=False, eps=1e-20, return_trace=False):
    r"""Route votes in one pass by their agreement with all the votes for the same parent (Efficient-CapsNet).

    For every sample, each parent :math:`j` first sums the votes of its
    children, and each vote is scored against that sum:

    .. math::

        a_{ij} = \frac{\hat u_{j|i} \cdot \sum_{k \in \mathcal{N}(j)} \hat u_{j|k}}{\sqrt{D}}, \qquad
        c_{ij} = \frac{\exp a_{ij}}{\sum_{l \in \mathcal{N}(i)} \exp a_{il}}, \qquad
        s_j = \sum_{i \in \mathcal{N}(j)} (c_{ij} + b_{ij})\, \hat u_{j|i}, \qquad
        v_j = \operatorname{squash_E}(s_j),

    where :math:`\mathcal{N}(i)` are the parents of child *i*,
    :math:`\mathcal{N}(j)` the children of parent *j*, :math:`D` the vote
    dimension, :math:`b_{ij}` a learned bias (the paper's "log priors", added
    after the softmax and shared by the batch) and
    :math:`\operatorname{squash_E}` the squash of Efficient-CapsNet,
    :func:`~dgl_capsules.functional.efficient_squash`. There are no
    iterations.

    NOTE: the paper writes the logits as the row sums of a self-attention
    matrix :math:`\hat U_j \hat U_j^\top / \sqrt{D}` per parent; a row sum of
    :math:`\hat U_j \hat U_j^\top` is one vote dotted with the sum of all
    votes, which is what runs here (one sum per parent, one dot per edge),
    and the softmax over the parents of a child is ``edge_softmax``
    normalised by source.

    The batch lives in the feature dimensions: one graph serves the whole
    mini-batch. Any capsule graph works: complete, convolutional, or a ragged
    :func:`dgl.batch` with votes ``(|E_total|, D)``.

    Parameters
    ----------
    g : dgl.DGLGraph
        Unibipartite capsule graph, e.g. :func:`~dgl_capsules.capsule_graph`.
    votes : torch.Tensor
        Prediction vectors :math:`\hat u_{j|i}`, ``(|E|, *, D)``; float32 or
        float64 (they decide the dtype).
    bias : float or torch.Tensor
        :math:`b_{ij}`: a scalar or one value per edge ``(|E|,)``.
    uniform : bool
        Route with :math:`c_{ij} = 1 / |\mathcal{N}(i)|` instead of the
        attention softmax (the same network with its routing switched off);
        the bias is still added.
    eps : float
        :math:`\epsilon` of the squash.
    return_trace : bool
        Also return the list of couplings of every pass (one).

    Returns
    -------
    RoutingResult
        ``poses`` :math:`v_j` ``(N_dst, *, D)``; ``coupling`` the softmax
        :math:`c_{ij}` ``(|E|, *)`` (each child's sum to 1 over its parents;
        the bias is not in it) and, on request, ``trace = [coupling]``.

    Raises
    ------
    TypeError
        If ``votes`` is not a float32 or float64 tensor, or ``bias`` neither a
        number nor a floating tensor.
    ValueError
        If ``votes`` does not have ``|E|`` rows and a vector dimension
        ``D >= 1``, ``bias`` is neither a scalar nor ``(|E|,)``, or ``eps`` is
        not positive.
    dgl.DGLError
        If ``g`` is not a unibipartite graph or a parent has no children.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(16, 10)
    >>> votes = torch.randn(g.num_edges(), 4, 16)
    >>> r = dc.routing.self_attention_routing(g, votes, bias=torch.zeros(g.num_edges()))
    >>> r.poses.shape, r.coupling.shape
    (torch.Size([10, 4, 16]), torch.Size([160, 4]))
    """
    check_graph(g, "self_attention_routing")
    votes = check_edge_tensor("votes", votes, g, 2, "(|E|, *, D)")
    d = votes.shape[-1]
    if d == 0:
        raise ValueError(f"votes must have shape (|E|, *, D) with D >= 1; got {tuple(votes.shape)}")
    bias = per_item("bias", bias, g.num_edges(), "|E|", votes)
    eps = check_eps(eps)
    batch_shape = votes.shape[1:-1]
    if votes.numel() == 0:  # a batch of no samples
        return empty_result(votes, 1, return_trace, poses=(g.num_dst_nodes(),) + batch_shape + (d,),
                            coupling=votes.shape[:-1])
    with g.local_scope():
        g.edata["u"] = votes  # (E, *, D)
        if uniform:
            coupling = coupling_override(g, batch_shape, votes)  # (E, *): see first_coupling
            coupling = uniform_coupling(g, batch_shape, votes) if coupling is None else coupling
        else:
            g.update_all(fn.copy_e("u", "m"), fn.sum("m", "total"))  # (N_dst, *, D): all votes per parent
            g.apply_edges(fn.e_dot_v("u", "total", "agree"))  # (E, *, 1)
            # NOTE: the paper's softmax over the parents of each child is edge_softmax normalised by source.
            coupling = edge_softmax(g, g.edata["agree"].squeeze(-1) / math.sqrt(d), norm_by="src")  # (E, *)
        weight = coupling + bias.view(bias.shape + (1,) * len(batch_shape))  # (E, *)
        g.edata["m"] = weight.unsqueeze(-1) * votes  # (E, *, D)
        g.update_all(fn.copy_e("m", "m"), fn.sum("m", "s"))
        poses = efficient_squash(g.dstdata["s"], eps=eps)  # (N_dst, *, D)
    return RoutingResult(poses=poses, coupling=coupling, trace=[coupling] if return_trace else None)


register_routing(
    "self-attention", self_attention_routing, label="self-attention routing (Efficient-CapsNet)",
    citation="Mazzia, Salvetti & Chiaberge 2021", normalise="parents", outputs=("poses", "coupling"),
    strength="length", inputs=("edge", "edge_value"), iterative=False,
    reference="dgl_capsules.testing:reference_self_attention", example="dgl_capsules.testing:example_self_attention",
)
