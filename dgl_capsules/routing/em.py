"""EM routing between matrix capsules (Hinton, Sabour & Frosst 2018)."""
import math
from numbers import Real
from typing import NamedTuple

import dgl
import torch
import torch.nn.functional as F
from dgl.ops import edge_softmax, gsddmm, gspmm

from .._checks import check_edge_tensor, check_eps, check_n_iters, check_node_tensor
from ._common import RoutingResult, check_graph, coupling_override, overridden, per_item, uniform_coupling
from .registry import register_routing

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


def check_inverse_temperatures(value, n_iters, like):
    r""":math:`\lambda_1, \dots` as a 1-d tensor of ``like``'s dtype and device: ``None`` (the default schedule)
    or at least ``n_iters`` finite numbers >= 0 (``TypeError`` / ``ValueError`` naming the argument)."""
    if value is None:
        value = default_inverse_temperatures(n_iters)
    if isinstance(value, torch.Tensor) and not torch.is_floating_point(value) and value.dtype != torch.bool:
        value = value.to(like.dtype)
    try:
        lam = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"inverse_temperatures must be a sequence of numbers (one per iteration); got {value!r}"
        ) from None
    if lam.dim() != 1 or lam.shape[0] < n_iters:
        raise ValueError(
            f"inverse_temperatures must be a sequence with at least n_iters = {n_iters} values "
            f"(one per iteration); got shape {tuple(lam.shape)}"
        )
    bad = ~(lam[:n_iters] >= 0)  # negative or NaN
    if bool(bad.any()) or not bool(torch.isfinite(lam[:n_iters]).all()):
        raise ValueError(
            f"inverse_temperatures must be finite and >= 0; got {lam[:n_iters].tolist()}"
        )
    return lam


def _check_a_in_against_votes(a_in, votes, g):
    """Name ``votes`` when they are unflattened pose matrices ``(|E|, *, 4, 4)`` for ``a_in`` ``(N_src, *)``."""
    if (
        isinstance(a_in, torch.Tensor)
        and votes.dim() >= 3
        and tuple(votes.shape[-2:]) == (4, 4)
        and a_in.dim() == votes.dim() - 2
        and tuple(a_in.shape) == (g.num_src_nodes(),) + tuple(votes.shape[1:-2])
    ):
        raise ValueError(
            f"votes must have shape (|E|, *, P) with the batch dims * of a_in "
            f"{tuple(a_in.shape[1:])} and one pose axis P (flatten 4x4 pose matrices to P = 16); "
            f"got {tuple(votes.shape)}"
        )


def _check_beta(name, value, n_dst, like):
    """``beta_u`` / ``beta_a``: a real number or a floating tensor of shape () or (N_dst,)."""
    if isinstance(value, torch.Tensor):
        if not torch.is_floating_point(value):
            raise TypeError(f"{name} must be a float or a floating-point tensor; got dtype {value.dtype}")
    elif isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a float or a tensor of shape () or (N_dst,) = ({n_dst},); "
            f"got {type(value).__name__} {value!r}"
        )
    return per_item(name, value, n_dst, "N_dst", like)


def _edge_graph(g, dst):
    """A bipartite graph with one source node per edge of ``g``, edge ``e`` to ``dst[e]``.

    An SpMM over it, ``u_mul_e`` with per-edge ``X`` as source data and per-edge weights, sums
    ``w_e X_e`` into the parents without materialising the product."""
    n_edges = g.num_edges()
    eids = torch.arange(n_edges, dtype=dst.dtype, device=dst.device)
    return dgl.heterograph(
        {("edge", "to", "parent"): (eids, dst)},
        num_nodes_dict={"edge": n_edges, "parent": g.num_dst_nodes()},
        idtype=g.idtype, device=g.device,
    )


def _empty_result(g, votes, a_in, beta_u, beta_a, n_iters, return_trace):
    """Empty outputs of the right shapes for a batch without samples (still connected to autograd)."""
    batch = tuple(votes.shape[1:-1])
    zero = votes.sum() * 0 + a_in.sum() * 0 + beta_u.sum() * 0 + beta_a.sum() * 0
    node = zero + votes.new_zeros((g.num_dst_nodes(),) + batch + votes.shape[-1:])
    coupling = zero + votes.new_zeros((g.num_edges(),) + batch)
    return RoutingResult(
        poses=node, activations=zero + votes.new_zeros((g.num_dst_nodes(),) + batch), coupling=coupling,
        sigma2=node.clone(), trace=[coupling] * n_iters if return_trace else None,
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

    Implementation: the votes of every parent are centred once, at the mean
    of the first M-step, into :math:`U_{ij} = V_{ij} - c_j`, and one edge
    tensor :math:`X_{ij} = [U_{ij}, U_{ij}^2]` serves every iteration: the
    M-step's sums are one sparse-dense product weighted by :math:`R'_{ij}`
    (the variance as :math:`E[U^2] - E[U]^2`, free of cancellation because
    :math:`U` is centred), the E-step's Gaussian log-likelihood is one dot
    product of :math:`X_{ij}` with a parent vector. The results do not depend on
    :math:`c_j`. The backward pass is written by hand: it recomputes the
    per-parent parts and reads :math:`X` once per sparse product instead of
    storing per-iteration edge tensors.

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
        flattened 4x4 pose matrices), float32 or float64; the other floating
        tensors are cast to its dtype.
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
        If ``votes`` is not float32 / float64, ``a_in`` is not a floating-point
        tensor, or ``beta_u`` / ``beta_a`` is neither a number nor a floating
        tensor.
    ValueError
        If a shape is wrong (``votes`` rows or unflattened 4x4 poses, ``a_in``
        node count or batch dims, the length of ``beta_u`` / ``beta_a``),
        ``a_in`` leaves ``[0, 1]``, there are fewer than ``n_iters`` inverse
        temperatures or one is negative or NaN, ``n_iters < 1`` or ``eps <= 0``.
    dgl.DGLError
        If ``g`` is not a unibipartite graph or a parent has no children.

    Notes
    -----
    A batch without samples returns empty outputs of the shapes above.

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
    check_edge_tensor("votes", votes, g, 2, "(|E|, *, P)")  # float32 or float64: decides the dtype
    batch = tuple(votes.shape[1:-1])
    _check_a_in_against_votes(a_in, votes, g)
    a_in = check_node_tensor("a_in", a_in, g.num_src_nodes(), batch, "(N_src, *)", dtype=votes.dtype)
    if a_in.numel() and not bool(((a_in >= 0) & (a_in <= 1)).all()):
        raise ValueError(
            f"a_in must hold activations in [0, 1]; got values in "
            f"[{float(a_in.min())}, {float(a_in.max())}]"
        )
    n_iters = check_n_iters(n_iters)
    eps = check_eps(eps)
    lam = check_inverse_temperatures(inverse_temperatures, n_iters, votes)
    n_dst, n_pose = g.num_dst_nodes(), votes.shape[-1]
    node_shape = (-1,) + (1,) * len(batch)
    beta_u = _check_beta("beta_u", beta_u, n_dst, votes).reshape(node_shape)  # (N_dst|1, 1..)
    beta_a = _check_beta("beta_a", beta_a, n_dst, votes).reshape(node_shape)
    if votes.numel() == 0:
        return _empty_result(g, votes, a_in, beta_u, beta_a, n_iters, return_trace)
    tiny = torch.finfo(votes.dtype).tiny

    regular = None if overridden() else _regular_layout(g)
    if regular is not None:
        return _em_regular(g, votes, a_in, beta_u, beta_a, lam, n_iters, eps, tiny, return_trace, *regular)
    src, dst = g.edges()
    ops = _GraphOps(g, _edge_graph(g, dst), src.long())
    a_edge = a_in[src.long()]  # (E, *): a_i on every edge of child i
    coupling = coupling_override(g, batch, votes)  # (E, *): see first_coupling
    coupling = uniform_coupling(g, batch, votes) if coupling is None else coupling
    with torch.no_grad():
        # NOTE: centring the votes of every parent at the mean of the first M-step (a constant: the
        # results do not depend on it) keeps E[U^2] - E[U]^2 free of cancellation for votes of
        # large mean and small spread; U = V - c.
        centre = ops.weighted_mean(votes.detach(), coupling * a_edge)  # (N_dst, *, P)
    consts = _Consts(ops, centre, coupling, n_iters, n_pose, eps, tiny)
    m, sigma2, activations, *later = _EMIterations.apply(votes, a_edge, beta_u, beta_a, lam, consts)
    trace = [coupling] + later  # the R of every M-step
    return RoutingResult(
        poses=centre + m, activations=activations, coupling=trace[-1], sigma2=sigma2,
        trace=trace if return_trace else None,
    )


def _regular_layout(g):
    """``(d, perm)`` when every parent of ``g`` has the same number ``d`` of children, else ``None``.

    ``perm`` orders the edges by parent (``None`` when they already are): then the
    edges of parent ``j`` are ``j * d, ..., j * d + d - 1`` and every sum over a
    parent's children is a dense product (:class:`_RegularOps`)."""
    src, dst = g.edges()
    n_dst, n_edges = g.num_dst_nodes(), g.num_edges()
    if n_dst == 0 or n_edges == 0 or n_edges % n_dst:
        return None
    d = n_edges // n_dst
    target = torch.arange(n_dst, dtype=dst.dtype, device=dst.device).repeat_interleave(d)
    if torch.equal(dst, target):
        return d, None
    perm = torch.argsort(dst, stable=True)
    return (d, perm) if torch.equal(dst[perm], target) else None


def _em_regular(g, votes, a_in, beta_u, beta_a, lam, n_iters, eps, tiny, return_trace, d, perm):
    """:func:`em_routing` on a graph whose parents all have ``d`` children (the dense fast path).

    The batch dims are flattened to one, ``nb``; edge tensors live as ``(nb, |E|, ...)``
    in the order of ``perm`` (by parent), so that the edge tensor ``X`` is
    ``(nb * N_dst, d, 2P)`` and every sparse product of :class:`_GraphOps` is a
    batched matrix product over it."""
    n_edges, n_pose = votes.shape[0], votes.shape[-1]
    batch = tuple(votes.shape[1:-1])
    nb = math.prod(batch)
    src = g.edges()[0].long()
    v = votes.reshape(n_edges, nb, n_pose)
    if perm is not None:
        src, v = src[perm], v.index_select(0, perm)
    v = v.transpose(0, 1).contiguous()  # (nb, E, P): free when the votes are a transposed view of this layout
    a_edge = a_in.reshape(-1, nb).T.contiguous().index_select(1, src)  # (nb, E)
    coupling = (1.0 / g.out_degrees().to(device=votes.device, dtype=votes.dtype))[src].unsqueeze(0)  # (1, E)
    ops = _RegularOps(g.num_src_nodes(), g.num_dst_nodes(), d, nb, src)
    with torch.no_grad():  # the centres, as in em_routing
        centre = ops.weighted_mean(v.detach(), coupling * a_edge)  # (N_dst, nb, P)
    consts = _Consts(ops, centre, coupling.expand(nb, -1), n_iters, n_pose, eps, tiny)
    m, sigma2, activations, *later = _EMIterations.apply(
        v, a_edge, beta_u.reshape(-1, 1), beta_a.reshape(-1, 1), lam, consts)
    inverse = None if perm is None else torch.argsort(perm)

    def edges_out(r):  # (nb, E) by parent -> (E, *) in the graph's edge order
        r = r.T
        return (r if inverse is None else r[inverse]).reshape((n_edges,) + batch)

    rs = [consts.coupling] + later  # the R of every M-step
    trace = [edges_out(r) for r in rs] if return_trace else None
    node = (-1,) + batch
    return RoutingResult(
        poses=(centre + m).reshape(node + (n_pose,)), activations=activations.reshape(node),
        coupling=trace[-1] if trace else edges_out(rs[-1]), sigma2=sigma2.reshape(node + (n_pose,)), trace=trace,
    )


class _Consts(NamedTuple):
    """What the iterations need besides the differentiable inputs."""

    ops: object  # _GraphOps or _RegularOps: the sparse products over the edges
    centre: torch.Tensor  # (N_dst, *, P), no gradient
    coupling: torch.Tensor  # the uniform start, an edge scalar of ops
    n_iters: int
    n_pose: int
    eps: float
    tiny: float


def _parent_step(s, mass, beta_u, beta_a, lam_t, c, last):
    """The per-parent part of one iteration, from the M-step's sums ``s = [sum R'U, sum R'U^2]``
    and ``mass = sum R'``.

    Returns ``m = mu - c``, ``sigma2``, the activations and, unless ``last``, the parent vector ``y``
    and constant ``k`` of the E-step: ``log a_j + log p_ij = X_ij . y_j + k_j``."""
    n_pose = c.n_pose
    # NOTE: a parent whose children all have a_i = 0 has no mass: it is empty, mu = c and
    # sigma^2 = eps, and the gradients into s are 0 there (a plain s / max(mass, tiny) would send
    # 1 / tiny into them, and inf * 0 = NaN into the votes); its cost, (beta_u + log sigma / 2)
    # times the mass, keeps its gradient in the mass. Dividing by the mass clamped at the smallest
    # normal number leaves every other case as in the paper.
    live = mass > 0  # (N_dst, *, 1)
    held = mass.clamp_min(c.tiny)  # (N_dst, *, 1)
    m = torch.where(live, s[..., :n_pose] / held, 0.0)  # (N_dst, *, P) = mu - c
    second = torch.where(live, s[..., n_pose:2 * n_pose] / held, 0.0)  # (N_dst, *, P) = E[U^2]
    sigma2 = (second - m.square()).clamp_min(0) + c.eps  # (N_dst, *, P)
    log_sigma2 = sigma2.log()
    cost = mass.squeeze(-1) * (n_pose * beta_u + 0.5 * log_sigma2.sum(-1))  # (N_dst, *) = sum_h cost_jh
    logit = lam_t * (beta_a - cost)  # (N_dst, *)
    activations = torch.sigmoid(logit)
    if last:
        return m, sigma2, activations, None, None
    # NOTE: log a_j + log p_ij = log a_j - 1/2 sum_h log(2 pi sigma^2) - 1/2 sum_h (U - m)^2 / sigma^2
    #     = X_ij . [m / sigma^2, -1 / (2 sigma^2)] + (log a_j - ... - 1/2 sum_h m^2 / sigma^2).
    w = sigma2.reciprocal()  # (N_dst, *, P)
    k = F.logsigmoid(logit) - 0.5 * (log_sigma2 + _LOG_2PI).sum(-1) - 0.5 * (m.square() * w).sum(-1)
    y = torch.cat([m * w, -0.5 * w], dim=-1)  # (N_dst, *, 2P)
    return m, sigma2, activations, y, k.unsqueeze(-1)


class _GraphOps:
    """The sparse products of the iterations as DGL kernels: edge tensors ``(E, *, ...)``.

    ``X`` is the pair ``(U, U^2)`` of ``(E, *, P)`` tensors; an edge scalar is ``(E, *)``;
    per-parent tensors are ``(N_dst, *, ...)``."""

    def __init__(self, g, ge, src):
        self.g, self.ge, self.src = g, ge, src  # ge: one source node per edge (see _edge_graph)

    def make_x(self, votes, centre):
        u = gsddmm(self.g, "sub", votes, centre, lhs_target="e", rhs_target="v")  # (E, *, P)
        return u, u.square()

    def weighted_mean(self, votes, w):
        """``sum_i w_ij V_ij / sum_i w_ij`` per parent, ``(N_dst, *, P)``, for an edge scalar ``w``."""
        s, mass = self.sums((votes,), w)
        return s / mass.clamp_min(torch.finfo(w.dtype).tiny)

    def sums(self, x, w):
        """``[sum_i w_ij U_ij, sum_i w_ij U_ij^2]`` ``(N_dst, *, 2P)`` and ``sum_i w_ij``
        ``(N_dst, *, 1)`` for an edge scalar ``w``."""
        w = w.unsqueeze(-1)
        s = torch.cat([gspmm(self.ge, "mul", "sum", half, w) for half in x], dim=-1)
        return s, gspmm(self.ge, "copy_rhs", "sum", None, w)

    def dot(self, x, y, k):
        """``X_ij . y_j + k_j``, an edge scalar, for ``y`` ``(N_dst, *, 2P)`` and ``k`` ``(N_dst, *, 1)``."""
        n_pose = x[0].shape[-1]
        out = gsddmm(self.g, "dot", x[0], y[..., :n_pose].contiguous(), lhs_target="e", rhs_target="v")
        out = out + gsddmm(self.g, "dot", x[1], y[..., n_pose:].contiguous(), lhs_target="e", rhs_target="v")
        return gsddmm(self.g, "add", out, k, lhs_target="e", rhs_target="v").squeeze(-1)

    def softmax(self, logp):
        # NOTE: the paper's softmax over the parents j of each child i is edge_softmax normalised by source.
        return edge_softmax(self.g, logp, norm_by="src")

    def per_child_sum(self, e):
        """``sum_{k in N(i)} e_ik`` on every edge ``ij``."""
        out = torch.zeros((self.g.num_src_nodes(),) + e.shape[1:], dtype=e.dtype, device=e.device)
        return out.index_add_(0, self.src, e)[self.src]

    def d_votes(self, x, alphas, parents):
        """``dU`` from ``dX_ij = sum_k alphas[k]_ij parents[k]_j``: one SDDMM per half of X."""
        n_pose = x[0].shape[-1]
        alpha = torch.stack(alphas, -1).unsqueeze(-2)  # (E, *, 1, K)
        parent = torch.stack(parents, -1)  # (N_dst, *, 2P, K)
        d_u, d_u2 = (
            gsddmm(self.g, "dot", alpha, half.contiguous(), lhs_target="e", rhs_target="v").squeeze(-1)
            for half in (parent[..., :n_pose, :], parent[..., n_pose:, :])
        )  # 2 x (E, *, P)
        return d_u.addcmul_(x[0], d_u2, value=2)


class _RegularOps:
    """The same products when every parent has ``d`` children and the edges are ordered by parent
    (see :func:`_regular_layout`): batched matrix products over ``X`` ``(nb, E, 2P)`` (a block
    of ``d`` rows per parent and sample), edge scalars ``(nb, E)``, per-parent tensors
    ``(N_dst, nb, ...)``."""

    def __init__(self, n_src, n_dst, d, nb, src):
        self.n_src, self.n_dst, self.d, self.nb, self.src = n_src, n_dst, d, nb, src

    def _blocks(self, x):  # (nb * N_dst, d, width)
        return x.view(self.nb * self.n_dst, self.d, x.shape[-1])

    def _node(self, y):  # (N_dst, nb, width) -> (nb * N_dst, 1, width)
        return y.transpose(0, 1).reshape(self.nb * self.n_dst, 1, y.shape[-1])

    def make_x(self, votes, centre):
        n_pose = votes.shape[-1]
        x = votes.new_empty(votes.shape[:-1] + (2 * n_pose,))  # (nb, E, 2P): [U, U^2] side by side
        u = x[..., :n_pose]
        torch.sub(votes.reshape(self.nb, self.n_dst, self.d, n_pose),
                  centre.transpose(0, 1).unsqueeze(2), out=u.view(self.nb, self.n_dst, self.d, n_pose))
        torch.mul(u, u, out=x[..., n_pose:])
        return x

    def weighted_mean(self, votes, w):
        s, mass = self.sums(votes, w)
        return s / mass.clamp_min(torch.finfo(w.dtype).tiny)

    def sums(self, x, w):
        s = torch.bmm(w.reshape(-1, 1, self.d), self._blocks(x)).view(self.nb, self.n_dst, -1)
        mass = w.reshape(self.nb, self.n_dst, self.d).sum(-1, keepdim=True)
        return s.transpose(0, 1), mass.transpose(0, 1)  # (N_dst, nb, .)

    def dot(self, x, y, k):
        # NOTE: y^T X^T rather than X y: the same product, about twice as fast in torch's bmm on the CPU
        out = torch.bmm(self._node(y), self._blocks(x).transpose(1, 2)).view(self.nb, self.n_dst, self.d)
        return (out + k.transpose(0, 1)).view(self.nb, -1)  # (nb, E)

    def softmax(self, logp):
        index = self.src.expand_as(logp)
        top = logp.new_full((self.nb, self.n_src), -math.inf).scatter_reduce_(1, index, logp, "amax")
        e = (logp - top.index_select(1, self.src)).exp_()
        total = logp.new_zeros((self.nb, self.n_src)).index_add_(1, self.src, e)
        return e.div_(total.index_select(1, self.src))

    def per_child_sum(self, e):
        return e.new_zeros((self.nb, self.n_src)).index_add_(1, self.src, e).index_select(1, self.src)

    def d_votes(self, x, alphas, parents):
        n_pose = x.shape[-1] // 2
        # NOTE: stacked along a new first dim and permuted, alpha is a strided bmm operand: no interleaving copy
        alpha = torch.stack(alphas).view(len(alphas), self.nb * self.n_dst, self.d).permute(1, 2, 0)  # (nb N_dst, d, K)
        parent = torch.stack(parents, -1).transpose(0, 1).reshape(self.nb * self.n_dst, 2 * n_pose, -1)
        d_x = torch.bmm(alpha, parent.transpose(1, 2)).view(x.shape)  # (nb, E, 2P)
        return torch.addcmul(d_x[..., :n_pose], x[..., :n_pose], d_x[..., n_pose:], value=2)  # (nb, E, P)


class _EMIterations(torch.autograd.Function):
    """All M- and E-steps; the backward recomputes the per-parent parts and touches the edge
    tensor X once per sparse product, then forms the votes' gradient in one pass.

    Forward: ``(votes, a_edge, beta_u, beta_a, lam, consts) -> (m, sigma2, activations, R_2, ..., R_T)``;
    the layouts of the edge tensors are those of ``consts.ops``.
    """

    @staticmethod
    def forward(ctx, votes, a_edge, beta_u, beta_a, lam, c):
        ops = c.ops
        # NOTE: the edge tensor X = (U, U^2) serves every iteration: products weighted by R'
        # give the M-step's sums [sum R' U, sum R' U^2], products with the parent vector y
        # give the E-step's log-likelihood (a quadratic form in U).
        x = ops.make_x(votes, c.centre)
        couplings, sums, masses = [c.coupling], [], []
        for t in range(c.n_iters):
            s, mass = ops.sums(x, couplings[-1] * a_edge)  # R'_ij = R_ij a_i
            sums.append(s)
            masses.append(mass)
            last = t + 1 == c.n_iters
            m, sigma2, act, y, k = _parent_step(s, mass, beta_u, beta_a, lam[t], c, last)
            if last:
                break
            couplings.append(ops.softmax(ops.dot(x, y, k)))
        xs = x if isinstance(x, tuple) else (x,)
        ctx.c, ctx.n_x = c, len(xs)
        ctx.save_for_backward(*xs, a_edge, beta_u, beta_a, lam, *couplings[1:], *sums, *masses)
        return (m, sigma2, act, *couplings[1:])

    @staticmethod
    def backward(ctx, g_m, g_sigma2, g_act, *g_couplings):
        c = ctx.c
        ops, n_iters = c.ops, c.n_iters
        saved = ctx.saved_tensors
        x = saved[: ctx.n_x] if ctx.n_x > 1 else saved[0]
        a_edge, beta_u, beta_a, lam, *rest = saved[ctx.n_x:]
        couplings = [c.coupling] + rest[: n_iters - 1]
        sums = rest[n_iters - 1: 2 * n_iters - 1]
        masses = rest[2 * n_iters - 1:]
        bu = beta_u.detach().requires_grad_(ctx.needs_input_grad[2])
        ba = beta_a.detach().requires_grad_(ctx.needs_input_grad[3])
        d_lam = torch.zeros_like(lam) if ctx.needs_input_grad[4] else None
        d_a_edge = torch.zeros_like(a_edge)
        alphas, parents = [], []  # dX_ij = sum_k alphas[k]_ij parents[k]_j
        g_y, g_k, d_logp = None, None, None
        for t in reversed(range(n_iters)):
            last = t + 1 == n_iters
            s = sums[t].detach().requires_grad_(True)
            mass = masses[t].detach().requires_grad_(True)
            lam_t = lam[t].detach().requires_grad_(d_lam is not None)
            with torch.enable_grad():
                m, sigma2, act, y, k = _parent_step(s, mass, bu, ba, lam_t, c, last)
                if last:
                    outs = [(o, go) for o, go in ((m, g_m), (sigma2, g_sigma2), (act, g_act)) if go is not None]
                else:
                    outs = [(y, g_y), (k, g_k)]
                    alphas.append(d_logp)  # logp_t = X . y_t + k_t
                    parents.append(y.detach())
                wrt = [s, mass] + [v for v in (bu, ba, lam_t) if v.requires_grad]
                grads = torch.autograd.grad([o for o, _ in outs], wrt, [go for _, go in outs],
                                            allow_unused=True) if outs else [None] * len(wrt)
            g_s = grads[0] if grads[0] is not None else torch.zeros_like(s)
            g_mass = grads[1] if grads[1] is not None else torch.zeros_like(mass)
            for v, gv in zip(wrt[2:], grads[2:]):
                if gv is None:
                    continue
                if v is lam_t:
                    d_lam[t] += gv
                else:
                    v.grad = gv if v.grad is None else v.grad + gv
            # s_t = sum_i R'_ij X_ij and mass_t = sum_i R'_ij with R'_ij = R_ij a_i
            r = couplings[t]
            d_ra = ops.dot(x, g_s, g_mass)  # edge scalar
            alphas.append(r * a_edge)
            parents.append(g_s)
            d_a_edge += d_ra * r
            if t == 0:
                break
            d_r = d_ra * a_edge
            if t - 1 < len(g_couplings) and g_couplings[t - 1] is not None:
                d_r = d_r + g_couplings[t - 1]
            # R_t = softmax of logp_{t-1} over the parents of each child
            rd = r * d_r
            d_logp = rd - r * ops.per_child_sum(rd)
            g_y, g_k = ops.sums(x, d_logp)
        d_votes = ops.d_votes(x, alphas, parents) if ctx.needs_input_grad[0] else None
        return (d_votes, d_a_edge if ctx.needs_input_grad[1] else None, bu.grad, ba.grad, d_lam, None)


register_routing(
    "em", em_routing, label="EM routing", citation="Hinton, Sabour & Frosst 2018",
    normalise="parents", outputs=("poses", "activations", "sigma2", "coupling"), strength="activation",
    inputs=("edge", "child", "parent_value", "parent_value"),
    reference="dgl_capsules.testing:reference_em", example="dgl_capsules.testing:example_em",
    defaults=dict(n_iters=3),
)
