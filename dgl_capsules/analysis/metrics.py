"""What routing does, measured on couplings: entropy, how static it is, dead capsules, agreement, credit.

Every function here takes a capsule graph and edge tensors ``(|E|, B)`` of
one routed layer (the batch ``B`` of inputs flattened into one dimension) and
works for any routing family and any connectivity: the couplings are read
through ``g.edges()``, so neither edge order nor equal out-degrees are assumed.

Examples
--------
>>> import torch, dgl_capsules as dc
>>> g = dc.capsule_graph(6, 4)
>>> uniform = torch.full((g.num_edges(), 5), 0.25)
>>> normalised_entropy(g, uniform).mean().item(), static_index(g, uniform)
(1.0, 0.0)
"""
import math

import torch

from .._checks import check_edge_tensor, check_float_tensor, check_node_tensor
from ..functional import coupling_entropy

__all__ = ["normalised_entropy", "weighted_mean", "static_index", "routing_dynamics", "dead_share", "agreement",
           "chain_credit"]


def _edges(g, coupling, name="coupling"):
    coupling = check_edge_tensor(name, coupling, g, 2, "(|E|, B)")
    if coupling.dim() != 2:
        raise ValueError(f"{name} must have shape (|E|, B) = ({g.num_edges()}, B); got {tuple(coupling.shape)}")
    return coupling


def normalised_entropy(g, coupling):
    r"""Each child's coupling entropy divided by its largest possible value, per input.

    .. math:: \tilde H_i = \frac{-\sum_{j \in \mathcal{N}(i)} c_{ij} \log c_{ij}}{\log |\mathcal{N}(i)|}

    1 for uniform couplings, 0 for a one-hot coupling; the division makes
    children with different numbers of parents (convolutional or ragged
    graphs) comparable. Children with fewer than two parents have no choice to
    make and get NaN.

    Parameters
    ----------
    g : dgl.DGLGraph
        The layer's capsule graph.
    coupling : torch.Tensor
        ``(|E|, B)`` couplings, each child's summing to 1 over its parents.

    Returns
    -------
    torch.Tensor
        ``(N_src, B)`` in [0, 1], NaN for children with fewer than two parents.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(2, 3)
    >>> c = torch.tensor([[1.0], [0.0], [0.0], [1 / 3], [1 / 3], [1 / 3]])  # child 0 one-hot, child 1 uniform
    >>> normalised_entropy(g, c).squeeze(1).tolist()
    [0.0, 1.0]
    """
    coupling = _edges(g, coupling)
    h = coupling_entropy(g, coupling)  # (N_src, B)
    deg = g.out_degrees().to(h)
    scale = torch.where(deg > 1, torch.log(deg.clamp_min(2)), torch.full_like(deg, math.nan))
    return h / scale[:, None]


def weighted_mean(values, weights=None):
    r"""Mean of ``values`` ``(N, B)`` over finite entries, each entry weighted by ``weights`` ``(N, B)`` (default 1).

    .. math:: \bar v = \frac{\sum w\, v}{\sum w}

    Raises
    ------
    ValueError
        If the weights are negative or do not fit, or no finite value has weight.
    """
    values = check_float_tensor("values", values, "(N, B)")
    w = torch.ones_like(values) if weights is None else check_float_tensor("weights", weights, "(N, B)").to(values)
    if w.shape != values.shape:
        raise ValueError(f"weights must have the shape of values {tuple(values.shape)}; got {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError("weights must be >= 0")
    keep = torch.isfinite(values)
    total = (w * keep).sum()
    if total <= 0:
        raise ValueError("values: no finite value with a positive weight to average")
    return float((torch.where(keep, values, torch.zeros_like(values)) * w).sum() / total)


def static_index(g, coupling):
    r"""How much the couplings vary across inputs: the mean over edges of their standard deviation over the batch.

    .. math:: S = \frac{1}{|E|} \sum_{(i, j) \in E} \operatorname{std}_b\, c_{ij}^{(b)}

    0 when every input is routed the same way (uniform couplings, or a routing
    that ignores its input); it grows as routing adapts to each input. The
    standard deviation is the population one (divided by ``B``).

    Returns
    -------
    float
    """
    coupling = _edges(g, coupling)
    if coupling.shape[1] < 2:
        raise ValueError(f"coupling needs at least 2 inputs to vary over; got B = {coupling.shape[1]}")
    return float(coupling.double().std(dim=1, unbiased=False).mean())


def quantise(coupling, bins):
    """The bin of every coupling among ``bins`` equal bins of [0, 1] (int64, the shape of ``coupling``)."""
    # NOTE: uniform couplings 1 / n sit on bin edges (1/10 * 10 bins = 1): float rounding would spread them over
    # two bins and count a static routing as dynamic; values within 1e-6 of an edge go to the bin above it.
    return (coupling.double().clamp(0, 1) * bins + 1e-6).long().clamp_max(bins - 1)


def routing_dynamics(g, coupling, labels, bins=10):
    r"""Routing-dynamics entropy and distinct parse trees per class (Renzulli et al. 2022, REM).

    Each coupling is quantised into ``bins`` equal bins of [0, 1] (a value
    within :math:`10^{-6}` below a bin edge counts in the bin above). For every
    class and edge, the entropy (in nats) of the quantised value's distribution
    over that class's inputs measures how much the edge's routing changes from
    input to input; it is averaged over edges and then over classes. A parse
    tree is the whole vector of quantised couplings of one input; the number of
    distinct ones per class counts how many routings the layer uses for a class
    (1: fully static).

    Parameters
    ----------
    g : dgl.DGLGraph
    coupling : torch.Tensor
        ``(|E|, B)``.
    labels : torch.Tensor
        ``(B,)`` class of every input.
    bins : int
        Quantisation bins.

    Returns
    -------
    dict
        ``entropy`` (float, nats, mean over classes), ``parse_trees`` (dict class -> count), ``inputs`` (dict
        class -> count).

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(2, 2)
    >>> c = torch.full((4, 6), 0.5)
    >>> out = routing_dynamics(g, c, torch.tensor([0, 0, 0, 1, 1, 1]))
    >>> out["entropy"], out["parse_trees"]
    (0.0, {0: 1, 1: 1})
    """
    coupling = _edges(g, coupling)
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != coupling.shape[1]:
        raise ValueError(f"labels must have shape (B,) = ({coupling.shape[1]},); got {tuple(labels.shape)}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    q = quantise(coupling, bins)  # (E, B)
    entropies, trees, counts = [], {}, {}
    for k in labels.unique().tolist():
        qk = q[:, labels == k]  # (E, n_k)
        n_k = qk.shape[1]
        hist = torch.zeros(qk.shape[0], bins, dtype=torch.float64).scatter_add_(
            1, qk, torch.ones_like(qk, dtype=torch.float64)) / n_k  # (E, bins)
        h = -(hist * torch.log(hist.clamp_min(1e-300))).sum(1)  # (E,)
        entropies.append(float(h.mean()))
        trees[int(k)] = int(torch.unique(qk.t(), dim=0).shape[0])
        counts[int(k)] = n_k
    return dict(entropy=sum(entropies) / len(entropies), parse_trees=trees, inputs=counts)


def dead_share(strength, thresholds=(0.01, 0.05, 0.1)):
    r"""The share of capsules whose strength stays below each threshold on every input.

    Parameters
    ----------
    strength : torch.Tensor
        ``(N, B)``: vector lengths or activations (in [0, 1]) of ``N`` capsules on ``B`` inputs.
    thresholds : sequence of float

    Returns
    -------
    dict
        ``{threshold: share in [0, 1]}``.

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([[0.0, 0.02], [0.5, 0.0], [0.001, 0.003]])
    >>> dead_share(s, (0.01, 0.05))
    {0.01: 0.3333333333333333, 0.05: 0.6666666666666666}
    """
    strength = check_float_tensor("strength", strength, "(N, B)")
    if strength.dim() != 2 or strength.shape[0] == 0:
        raise ValueError(f"strength must have shape (N, B) with N >= 1; got {tuple(strength.shape)}")
    top = strength.amax(dim=1)  # (N,) the strongest the capsule ever is
    return {float(t): float((top < t).double().mean()) for t in thresholds}


def agreement(g, coupling, votes, poses):
    r"""Coupling-weighted cosine between each parent's votes and its pose, per parent and input.

    .. math:: A_j = \frac{\sum_{i \in \mathcal{N}(j)} c_{ij} \cos(\hat u_{j|i}, v_j)}{\sum_{i \in \mathcal{N}(j)} c_{ij}}

    1 when every vote a parent receives points its way; near 0 for votes in
    unrelated directions. Matrix votes and poses are flattened to vectors.

    Parameters
    ----------
    g : dgl.DGLGraph
    coupling : torch.Tensor
        ``(|E|, B)``.
    votes : torch.Tensor
        ``(|E|, B, *pose)``.
    poses : torch.Tensor
        ``(N_dst, B, *pose)``.

    Returns
    -------
    torch.Tensor
        ``(N_dst, B)``; NaN where a parent's couplings sum to 0.
    """
    coupling = _edges(g, coupling)
    votes = check_edge_tensor("votes", votes, g, 3, "(|E|, B, *pose)")
    poses = check_node_tensor("poses", poses, g.num_dst_nodes(), votes.shape[1:], "(N_dst, B, *pose) of the votes")
    if votes.shape[1] != coupling.shape[1]:
        raise ValueError(f"votes must have the coupling's B = {coupling.shape[1]} inputs; got {tuple(votes.shape)}")
    src, dst = g.edges()
    u = votes.reshape(votes.shape[0], votes.shape[1], -1)  # (E, B, P)
    v = poses.reshape(poses.shape[0], poses.shape[1], -1)[dst.long()]  # (E, B, P)
    cos = torch.nn.functional.cosine_similarity(u, v, dim=-1, eps=1e-12)  # (E, B)
    num = coupling.new_zeros(g.num_dst_nodes(), coupling.shape[1]).index_add_(0, dst.long(), coupling.to(cos) * cos)
    den = coupling.new_zeros(g.num_dst_nodes(), coupling.shape[1]).index_add_(0, dst.long(), coupling.to(cos))
    return num / den


def chain_credit(layers):
    r"""Couplings chained across routed layers: how much each first-layer child routes to each last-layer parent.

    For layers :math:`(g_1, c^{(1)}), \dots, (g_L, c^{(L)})` where the parents
    of layer :math:`l` are the children of layer :math:`l + 1`, the credit is the
    product of their coupling matrices,

    .. math:: K = C^{(1)} C^{(2)} \cdots C^{(L)}, \qquad C^{(l)}_{ij} = c^{(l)}_{ij},

    per input. With couplings normalised over parents, each row of :math:`K`
    sums to 1 (for children with a path to the last layer): the share of a
    primary capsule's routing that ends at each class.

    Parameters
    ----------
    layers : sequence of (dgl.DGLGraph, torch.Tensor)
        ``(g, coupling (|E|, B))`` per layer, in order.

    Returns
    -------
    torch.Tensor
        ``(B, N_src of the first layer, N_dst of the last)``.

    Raises
    ------
    ValueError
        If a layer's children are not the previous layer's parents, or the batches differ.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g1, g2 = dc.capsule_graph(4, 2), dc.capsule_graph(2, 3)
    >>> k = chain_credit([(g1, torch.full((8, 1), 0.5)), (g2, torch.full((6, 1), 1 / 3))])
    >>> k.shape, round(k.sum(-1).min().item(), 6)
    (torch.Size([1, 4, 3]), 1.0)
    """
    layers = list(layers)
    if not layers:
        raise ValueError("layers must hold at least one (graph, coupling) pair")
    credit, batch = None, None
    for k, (g, c) in enumerate(layers):
        c = _edges(g, c, f"layers[{k}] coupling")
        if batch is not None and c.shape[1] != batch:
            raise ValueError(f"layers[{k}]: coupling has B = {c.shape[1]} inputs; the layers before have {batch}")
        batch = c.shape[1]
        src, dst = g.edges()
        dense = c.new_zeros(batch, g.num_src_nodes(), g.num_dst_nodes())
        dense[:, src.long(), dst.long()] = c.t()  # (B, N_src, N_dst)
        if credit is not None and credit.shape[-1] != g.num_src_nodes():
            raise ValueError(f"layers[{k}]: the graph has {g.num_src_nodes()} children; the previous layer has "
                             f"{credit.shape[-1]} parents")
        credit = dense if credit is None else torch.bmm(credit, dense)
    return credit
