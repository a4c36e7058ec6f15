"""EM routing between matrix capsules (Hinton, Sabour & Frosst 2018)."""
import math

import dgl.function as fn
import torch
import torch.nn.functional as F
from dgl.ops import edge_softmax

from ._common import (
    RoutingResult,
    check_edge_tensor,
    check_eps,
    check_graph,
    check_n_iters,
    check_node_tensor,
    per_item,
    uniform_coupling,
)

__all__ = ["em_routing", "default_inverse_temperatures"]

_LOG_2PI = math.log(2 * math.pi)


def default_inverse_temperatures(n_iters):
    r"""The schedule :math:`\lambda_t = 0.01\,(1 - 0.95^t)`, :math:`t = 1, \dots, T`.

    Examples
    --------
    >>> [round(x, 6) for x in default_inverse_temperatures(2)]
    [0.0005, 0.000975]
    """
    return [0.01 * (1 - 0.95 ** t) for t in range(1, n_iters + 1)]


def _check_inverse_temperatures(value, n_iters, like):
    if value is None:
        value = default_inverse_temperatures(n_iters)
    lam = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if lam.dim() != 1 or lam.shape[0] < n_iters:
        raise ValueError(
            f"inverse_temperatures must be a sequence with at least n_iters = {n_iters} values "
            f"(one per iteration); got shape {tuple(lam.shape)}"
        )
    return lam


def _check_dtype(votes):
    # DGL 2.1's CPU kernels (edge_softmax, SpMM) have no float16 instantiation.
    if votes.dtype == torch.float16 and votes.device.type == "cpu":
        raise TypeError(
            "votes of dtype torch.float16 are not supported on CPU (DGL's CPU kernels lack "
            "float16); use torch.bfloat16, torch.float32 or torch.float64"
        )


def em_routing(
    g, votes, a_in, beta_u, beta_a, n_iters=3, inverse_temperatures=None, eps=1e-6,
    return_trace=False,
):
    r"""Route matrix-capsule votes by expectation-maximisation (Hinton et al. 2018, Procedure 1).

    Each parent *j* fits a Gaussian with diagonal covariance to the votes
    :math:`V_{ij}` of its children, weighted by the responsibilities
    :math:`R_{ij}` and the child activations :math:`a_i`. Starting from
    :math:`R_{ij} = 1 / |\mathcal{N}(i)|`, every iteration
    :math:`t = 1, \dots, T` runs an M-step

    .. math::

        R'_{ij} = R_{ij}\, a_i, \qquad
        \mu_{jh} = \frac{\sum_i R'_{ij} V_{ijh}}{\sum_i R'_{ij}}, \qquad
        \sigma^2_{jh} = \frac{\sum_i R'_{ij} (V_{ijh} - \mu_{jh})^2}{\sum_i R'_{ij}} + \epsilon,

        \mathrm{cost}_{jh} = \Big(\beta_{u,j} + \tfrac12 \log \sigma^2_{jh}\Big) \sum_i R'_{ij},
        \qquad
        a_j = \operatorname{sigmoid}\Big(\lambda_t \big(\beta_{a,j} - \textstyle\sum_h \mathrm{cost}_{jh}\big)\Big),

    and, except after the last M-step, an E-step

    .. math::

        \log p_{ij} = -\sum_h \frac{(V_{ijh} - \mu_{jh})^2}{2 \sigma^2_{jh}}
                      - \frac12 \sum_h \log\big(2 \pi \sigma^2_{jh}\big), \qquad
        R_{ij} = \frac{\exp(\log a_j + \log p_{ij})}
                      {\sum_{k \in \mathcal{N}(i)} \exp(\log a_k + \log p_{ik})},

    where :math:`\mathcal{N}(i)` are *all* the parents of child *i*: in a
    convolutional layer that is every position and type whose receptive field
    holds the child, so overlapping fields share the child's vote mass exactly
    (Gritzman 2019).

    Everything is computed in variance and log space (no square roots of
    variances, :math:`\log a_j` as a log-sigmoid, a max-shifted softmax), so
    identical votes (zero variance) give finite values and gradients.
    Gradients flow through all iterations.

    The batch lives in the feature dimensions: one graph serves the whole
    mini-batch. A ragged batch made with :func:`dgl.batch` works the same way.

    Parameters
    ----------
    g : dgl.DGLGraph
        Unibipartite capsule graph, e.g. :func:`~dgl_capsules.conv_capsule_graph`.
    votes : torch.Tensor
        Votes :math:`V_{ij}` on the edges, ``(|E|, *, P)`` (``P = 16`` for
        flattened 4x4 pose matrices). float64, float32 or bfloat16.
    a_in : torch.Tensor
        Child activations :math:`a_i \in [0, 1]`, ``(N_src, *)``.
    beta_u, beta_a : float or torch.Tensor
        :math:`\beta_u` and :math:`\beta_a`, scalars or one per parent ``(N_dst,)``.
    n_iters : int
        Iterations ``T >= 1`` (M-steps).
    inverse_temperatures : sequence of float or torch.Tensor, optional
        :math:`\lambda_1, \dots, \lambda_T` (extra values are ignored); by
        default :math:`\lambda_t = 0.01 (1 - 0.95^t)`.
    eps : float
        :math:`\epsilon > 0` added to every variance.
    return_trace : bool
        Also return the responsibilities used by every M-step.

    Returns
    -------
    RoutingResult
        ``poses`` :math:`\mu` ``(N_dst, *, P)``, ``sigma2`` :math:`\sigma^2`
        ``(N_dst, *, P)``, ``activations`` :math:`a_j` ``(N_dst, *)``,
        ``coupling`` :math:`R_{ij}` ``(|E|, *)`` used by the last M-step and, on
        request, ``trace``, the ``n_iters`` responsibilities of every M-step.

    Raises
    ------
    TypeError
        If ``votes`` or ``a_in`` is not a floating-point tensor, or ``votes``
        is float16 on CPU.
    ValueError
        If a shape is wrong (``votes`` rows, ``a_in`` node count or batch
        dims, the length of ``beta_u`` / ``beta_a``), ``a_in`` leaves
        ``[0, 1]``, there are fewer than ``n_iters`` inverse temperatures,
        ``n_iters < 1`` or ``eps <= 0``.
    dgl.DGLError
        If ``g`` is not a unibipartite graph or a parent has no children.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.conv_capsule_graph(in_hw=(6, 6), kernel=3, stride=2, in_types=4, out_types=5)
    >>> votes = torch.randn(g.num_edges(), 2, 16)
    >>> a_in = torch.rand(g.num_src_nodes(), 2)
    >>> r = dc.routing.em_routing(g, votes, a_in, beta_u=0.0, beta_a=0.0)
    >>> r.poses.shape, r.sigma2.shape, r.activations.shape, r.coupling.shape
    (torch.Size([20, 2, 16]), torch.Size([20, 2, 16]), torch.Size([20, 2]), torch.Size([720, 2]))
    """
    check_graph(g, "em_routing")
    check_edge_tensor("votes", votes, g, 2, "(|E|, *, P)")
    _check_dtype(votes)
    batch = tuple(votes.shape[1:-1])
    check_node_tensor("a_in", a_in, g.num_src_nodes(), batch, "(N_src, *)")
    if a_in.numel() and not bool(((a_in >= 0) & (a_in <= 1)).all()):
        raise ValueError(
            f"a_in must hold activations in [0, 1]; got values in "
            f"[{float(a_in.min())}, {float(a_in.max())}]"
        )
    n_iters = check_n_iters(n_iters)
    eps = check_eps(eps)
    lam = _check_inverse_temperatures(inverse_temperatures, n_iters, votes)
    n_dst, n_pose = g.num_dst_nodes(), votes.shape[-1]
    node_shape = (-1,) + (1,) * len(batch)
    beta_u = per_item("beta_u", beta_u, n_dst, "N_dst", votes).reshape(node_shape)  # (N_dst|1, 1..)
    beta_a = per_item("beta_a", beta_a, n_dst, "N_dst", votes).reshape(node_shape)
    a_in = a_in.to(votes.dtype)
    tiny = torch.finfo(votes.dtype).tiny

    trace = [] if return_trace else None
    coupling = uniform_coupling(g, batch, votes)  # (E, *)
    with g.local_scope():
        g.srcdata["a"] = a_in.unsqueeze(-1)  # (N_src, *, 1)
        g.edata["V"] = votes  # (E, *, P)
        for t in range(n_iters):
            if trace is not None:
                trace.append(coupling)
            # ---- M-step
            g.edata["R"] = coupling.unsqueeze(-1)  # (E, *, 1)
            g.apply_edges(fn.u_mul_e("a", "R", "Ra"))
            ra = g.edata["Ra"]  # (E, *, 1)
            # NOTE: one gather carries both sums, [R' V, R'] -> [sum R' V, sum R'].
            g.edata["m"] = torch.cat([ra * votes, ra], dim=-1)  # (E, *, P + 1)
            g.update_all(fn.copy_e("m", "m"), fn.sum("m", "s"))
            s = g.dstdata["s"]  # (N_dst, *, P + 1)
            # NOTE: a parent whose children all have a_i = 0 would divide 0 by 0;
            # clamping the mass at the smallest normal number leaves every other case as in the paper.
            mass = s[..., n_pose:].clamp_min(tiny)  # (N_dst, *, 1)
            mu = s[..., :n_pose] / mass  # (N_dst, *, P)
            g.dstdata["mu"] = mu
            g.apply_edges(fn.e_sub_v("V", "mu", "d"))
            sq = g.edata["d"].square()  # (E, *, P)
            g.edata["m"] = ra * sq
            g.update_all(fn.copy_e("m", "m"), fn.sum("m", "ss"))
            sigma2 = g.dstdata["ss"] / mass + eps  # (N_dst, *, P)
            log_sigma2 = sigma2.log()
            mass = mass.squeeze(-1)  # (N_dst, *)
            cost = mass * (n_pose * beta_u + 0.5 * log_sigma2.sum(-1))  # (N_dst, *) = sum_h cost_jh
            logit = lam[t] * (beta_a - cost)  # (N_dst, *)
            activations = torch.sigmoid(logit)
            if t + 1 == n_iters:
                break
            # ---- E-step
            # NOTE: log a_j + log p_ij = node term_j - 1/2 sum_h (V - mu)^2 / sigma^2, the
            # sum over h fused into one e_dot_v with -1/(2 sigma^2).
            node = F.logsigmoid(logit) - 0.5 * (log_sigma2 + _LOG_2PI).sum(-1)  # (N_dst, *)
            g.edata["sq"] = sq
            g.dstdata["w"] = -0.5 / sigma2  # (N_dst, *, P)
            g.dstdata["node"] = node.unsqueeze(-1)
            g.apply_edges(fn.e_dot_v("sq", "w", "q"))  # (E, *, 1)
            g.apply_edges(fn.e_add_v("q", "node", "logp"))
            # NOTE: the paper's softmax over the parents j of each child i is
            # edge_softmax normalised by source.
            coupling = edge_softmax(g, g.edata["logp"].squeeze(-1), norm_by="src")  # (E, *)
    return RoutingResult(
        poses=mu, activations=activations, coupling=coupling, sigma2=sigma2, trace=trace
    )
