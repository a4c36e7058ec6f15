"""Heinsen routing (Heinsen 2019, "An Algorithm for Routing Capsules in All Domains")."""
from dgl import ops
import torch
import torch.nn.functional as F
from dgl.ops import edge_softmax

from .._checks import check_edge_tensor, check_eps, check_float_tensor, check_n_iters, check_node_tensor
from ._common import RoutingResult, check_graph, coupling_override, empty_result, per_item, uniform_coupling
from .registry import register_routing

__all__ = ["heinsen_routing", "P_MODELS"]

#: The values of ``p_model`` of :func:`heinsen_routing`: how the E-step scores a vote at a parent.
P_MODELS = ("gaussian", "skm")


def check_p_model(p_model):
    if p_model not in P_MODELS:
        raise ValueError(f"p_model must be one of {P_MODELS}; got {p_model!r}")
    return p_model


def _check_votes_have_matrices(votes, a_in, n_src):
    """Votes must be ``(|E|, *, C, H)``: tell a missing matrix axis from a bad ``a_in``."""
    if votes.dim() < 3 or (a_in.dim() >= 1 and a_in.shape[0] == n_src and votes.dim() == a_in.dim() + 1
                           and tuple(votes.shape[1:a_in.dim()]) == tuple(a_in.shape[1:])):
        raise ValueError(
            f"votes must have shape (|E|, *, C, H), a C x H matrix per edge after the batch dims * of "
            f"a_in {tuple(a_in.shape[1:])}; got {tuple(votes.shape)} (for vector votes use C = 1)"
        )
    if any(n == 0 for n in votes.shape[-2:]):
        raise ValueError(f"votes must have shape (|E|, *, C, H) with C, H >= 1; got {tuple(votes.shape)}")


def heinsen_routing(g, votes, a_in, beta_use, beta_ign, n_iters=3, eps=1e-5, p_model="gaussian",
                    return_trace=False):
    r"""Route capsule votes by expectation-maximisation with "use" and "ignore" shares (Heinsen 2019).

    Every child :math:`i` has a score logit :math:`a_i` and casts a vote
    :math:`V_{ij}` (a :math:`C \times H` matrix) for each of its parents
    :math:`j \in \mathcal{N}(i)`. With :math:`f` the logistic sigmoid, the
    routing starts from :math:`R_{ij} = 1 / |\mathcal{N}(i)|` and repeats
    ``n_iters`` times a D-step and an M-step,

    .. math::

        D^{use}_{ij} = f(a_i) R_{ij}, \qquad D^{ign}_{ij} = f(a_i) - D^{use}_{ij},

        a^{out}_j = \sum_{i \in \mathcal{N}(j)} \beta^{use}_{ij} D^{use}_{ij}
                  - \sum_{i \in \mathcal{N}(j)} \beta^{ign}_{ij} D^{ign}_{ij},

        \mu_j = \frac{\sum_i D^{use}_{ij} V_{ij}}{\sum_i D^{use}_{ij} + \epsilon}, \qquad
        \sigma^2_j = \frac{\sum_i D^{use}_{ij} (V_{ij} - \mu_j)^2}{\sum_i D^{use}_{ij} + \epsilon}
                   + \epsilon,

    each but the first preceded by an E-step that recomputes the shares,

    .. math::

        R_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
                 \bigl(\log f(a^{out}_j) + \log p_{ij}\bigr),

    with, for ``p_model="gaussian"``,
    :math:`\log p_{ij} = -\sum_{ch} \frac{(V_{ij} - \mu_j)^2}{2 \sigma^2_j}
    - \sum_{ch} \log \sqrt{\sigma^2_j}`, or for ``p_model="skm"`` (soft
    k-means) :math:`\log p_{ij} = \operatorname{log\,softmax}_{j \in
    \mathcal{N}(i)} \bigl(-\sum_{ch} (V_{ij} - \mu_j)^2\bigr)`. Squares and
    sums over :math:`ch` are elementwise over the :math:`C \times H` entries.

    The votes decide the dtype (float32 or float64): ``a_in`` and tensor
    betas are cast to it. A graph with int32 ids gives the same result as
    with int64 ids, and a batch with no samples gives empty outputs.

    The mini-batch lives in the feature dimensions ``*``: one graph serves
    every sample and each sample keeps its own routing state. A ragged batch
    (say sequences of different lengths) is a :func:`dgl.batch` of capsule
    graphs with the votes of all its edges concatenated.

    Parameters
    ----------
    g : dgl.DGLGraph
        Unibipartite capsule graph, e.g. :func:`~dgl_capsules.capsule_graph`.
    votes : torch.Tensor
        Votes :math:`V_{ij}` on the edges, ``(|E|, *, C, H)``.
    a_in : torch.Tensor
        Child score logits :math:`a_i`, ``(N_src, *)``.
    beta_use, beta_ign : float or torch.Tensor
        :math:`\beta^{use}` and :math:`\beta^{ign}`: scalars, or one value per
        edge ``(|E|,)``.
    n_iters : int
        Routing iterations ``>= 1``.
    eps : float
        :math:`\epsilon > 0` for numerical stability.
    p_model : {"gaussian", "skm"}
        How the E-step scores a vote at a parent.
    return_trace : bool
        Also return :math:`R` of every iteration.

    Returns
    -------
    RoutingResult
        ``activations`` :math:`a^{out}_j` (logits) ``(N_dst, *)``, ``poses``
        :math:`\mu_j` and ``sigma2`` :math:`\sigma^2_j` ``(N_dst, *, C, H)``,
        ``coupling`` :math:`R_{ij}` ``(|E|, *)`` used by the last M-step and,
        on request, ``trace``, the ``n_iters`` couplings in order.

    Raises
    ------
    TypeError
        If ``votes`` is not a float32 / float64 tensor, ``a_in`` not a
        floating-point tensor, or a beta neither a number nor a floating-point
        tensor.
    ValueError
        If a tensor has the wrong shape, a beta is neither a scalar nor
        ``(|E|,)``, ``n_iters < 1``, ``eps <= 0`` or ``p_model`` is unknown.
    dgl.DGLError
        If ``g`` is not a unibipartite graph or a parent has no children.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(100, 10)
    >>> votes = torch.randn(g.num_edges(), 8, 4, 4)  # batch of 8, 4 x 4 poses
    >>> r = dc.routing.heinsen_routing(g, votes, torch.randn(100, 8), 0.0, 0.0)
    >>> r.activations.shape, r.poses.shape, r.sigma2.shape, r.coupling.shape
    (torch.Size([10, 8]), torch.Size([10, 8, 4, 4]), torch.Size([10, 8, 4, 4]), torch.Size([1000, 8]))
    """
    check_graph(g, "heinsen_routing")
    votes = check_edge_tensor("votes", votes, g, 2, "(|E|, *, C, H)")
    a_in = check_float_tensor("a_in", a_in, "(N_src, *)", dtype=votes.dtype)
    _check_votes_have_matrices(votes, a_in, g.num_src_nodes())
    batch = tuple(votes.shape[1:-2])
    a_in = check_node_tensor("a_in", a_in, g.num_src_nodes(), batch, "(N_src, *)", dtype=votes.dtype)
    n_edges = g.num_edges()
    beta_use = per_item("beta_use", beta_use, n_edges, "|E|", votes)
    beta_ign = per_item("beta_ign", beta_ign, n_edges, "|E|", votes)
    n_iters = check_n_iters(n_iters)
    eps = check_eps(eps)
    gaussian = check_p_model(p_model) == "gaussian"
    if votes.numel() == 0:  # a batch of no samples
        n_dst = g.num_dst_nodes()
        return empty_result(votes, n_iters, return_trace, activations=(n_dst,) + batch,
                            poses=(n_dst,) + votes.shape[1:], sigma2=(n_dst,) + votes.shape[1:],
                            coupling=(n_edges,) + batch)

    lead = (-1,) + (1,) * len(batch)
    beta_use = beta_use.view(lead) if beta_use.dim() else beta_use  # (E, 1...) or ()
    beta_ign = beta_ign.view(lead) if beta_ign.dim() else beta_ign

    trace = [] if return_trace else None
    # NOTE: the functional forms of DGL's built-ins (dgl.ops.copy_e_sum is
    # update_all(copy_e, sum); e_sub_v, e_dot_v, copy_u are apply_edges) run the
    # same kernels without writing features onto the shared graph.
    fa_e = ops.copy_u(g, torch.sigmoid(a_in))  # (E, *): f(a_i) on every edge of child i
    for it in range(n_iters):
        # E-step.
        if it == 0:
            coupling = coupling_override(g, batch, votes)  # (E, *): see first_coupling
            coupling = uniform_coupling(g, batch, votes) if coupling is None else coupling
        else:
            if gaussian:
                # NOTE: sum_ch log sqrt(sigma2) is 0.5 * sum_ch log(sigma2).
                w = (-0.5 / sigma2).flatten(-2)  # (N_dst, *, C*H)
                bias = F.logsigmoid(a_out) - 0.5 * sigma2.log().sum((-2, -1))  # (N_dst, *)
                logits = ops.e_dot_v(g, d2.flatten(-2), w).squeeze(-1)  # (E, *)
            else:
                # NOTE: the log-softmax normaliser of soft k-means is the same for
                # all parents of child i, so it cancels in the softmax over those
                # parents: R = softmax_j(log f(a_j) - sum_ch d2_ij).
                bias = F.logsigmoid(a_out)  # (N_dst, *)
                logits = -d2.sum((-2, -1))  # (E, *)
            logits = ops.e_add_v(g, logits, bias)  # (E, *)
            # NOTE: the softmax over the parents j of child i is edge_softmax
            # normalised by source.
            coupling = edge_softmax(g, logits, norm_by="src")  # (E, *)
        if trace is not None:
            trace.append(coupling)

        # D-step.
        d_use = fa_e * coupling  # (E, *)
        d_ign = fa_e - d_use  # (E, *)

        # M-step.
        sums = ops.copy_e_sum(g, torch.stack([beta_use * d_use - beta_ign * d_ign, d_use], -1))  # (N_dst, *, 2)
        a_out, sum_d = sums.unbind(-1)  # (N_dst, *)
        over = (1.0 / (sum_d + eps))[..., None, None]  # (N_dst, *, 1, 1)
        d_use = d_use[..., None, None]  # (E, *, 1, 1)
        poses = ops.copy_e_sum(g, d_use * votes) * over  # (N_dst, *, C, H)
        d2 = ops.e_sub_v(g, votes, poses).square()  # (E, *, C, H)
        sigma2 = ops.copy_e_sum(g, d_use * d2) * over + eps  # (N_dst, *, C, H)
    return RoutingResult(poses=poses, activations=a_out, coupling=coupling, sigma2=sigma2, trace=trace)


register_routing(
    "heinsen", heinsen_routing, label="Heinsen routing", citation="Heinsen 2019",
    normalise="parents", outputs=("poses", "activations", "sigma2", "coupling"), strength="logit",
    inputs=("edge", "child", "edge_value", "edge_value"),
    reference="dgl_capsules.testing:reference_heinsen", example="dgl_capsules.testing:example_heinsen",
    defaults=dict(n_iters=3), vote_dims=2,
)
