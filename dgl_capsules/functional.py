"""Capsule non-linearity, losses and routing diagnostics."""
import math

import torch

from ._checks import check_eps, check_float_tensor, check_floating, check_tensor

__all__ = ["squash", "efficient_squash", "margin_loss", "coupling_entropy", "spread_loss", "spread_margin"]


def squash(s, dim=-1, eps=None):
    r"""Shrink vectors to a length in [0, 1) keeping their direction (Sabour et al. 2017, eq. 1).

    .. math::

        v = \frac{\lVert s \rVert^2}{1 + \lVert s \rVert^2} \frac{s}{\lVert s \rVert}
          = \frac{\lVert s \rVert}{1 + \lVert s \rVert^2}\, s

    NOTE: the second form, with :math:`\lVert s \rVert = \sqrt{\lVert s
    \rVert^2 + \epsilon}`, is equal to the paper's but has a finite value and
    gradient at :math:`s = 0`. It is computed after dividing ``s`` by its
    largest entry (when that is above 1), so that very long vectors (1e20 or
    3e38 in float32) give unit vectors and finite gradients instead of
    ``inf / inf``.

    Parameters
    ----------
    s : torch.Tensor
        Vectors along ``dim``.
    dim : int
        The vector dimension.
    eps : float, optional
        Added under the square root; defaults to the smallest normal number of
        the dtype, so the result equals the paper's formula to rounding.

    Returns
    -------
    torch.Tensor
        Same shape as ``s``, every vector of length < 1.

    Examples
    --------
    >>> import torch
    >>> v = squash(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    >>> [round(x, 4) for x in v.norm(dim=-1).tolist()]
    [0.9615, 0.0]
    """
    if eps is None:
        eps = torch.finfo(s.dtype).tiny
    t, q, c = _squash_parts(s, dim, eps)
    return t * (torch.sqrt(q) / (q + c))


def efficient_squash(s, dim=-1, eps=1e-20):
    r"""The squash of Efficient-CapsNet (Mazzia, Salvetti & Chiaberge 2021, eq. 8): lengths in [0, 1), directions kept.

    .. math::

        v = \Big(1 - \frac{1}{e^{\lVert s \rVert} + \epsilon}\Big)
            \frac{s}{\lVert s \rVert + \epsilon}

    Unlike Sabour et al.'s :func:`squash`, short vectors keep their length
    (:math:`\lVert v \rVert \approx \lVert s \rVert` near 0) and long ones
    approach length 1 exponentially fast.

    NOTE: computed as :math:`\frac{1 - e^{-n} + \epsilon e^{-n}}{1 + \epsilon
    e^{-n}} \frac{s}{n + \epsilon}` with :math:`n = \sqrt{\lVert s \rVert^2 +
    \text{tiny}}`, which equals the formula above (multiply by
    :math:`e^{-n}`) but never overflows, keeps the digits that ``1 - 1/e^n``
    loses for short vectors, and has a finite gradient at :math:`s = 0` (the
    identity, as the limit of the formula). Very long vectors are divided by
    their largest entry first, as in :func:`squash`.

    Parameters
    ----------
    s : torch.Tensor
        Vectors along ``dim``.
    dim : int
        The vector dimension.
    eps : float
        :math:`\epsilon`; the published code's is ``10e-21`` = 1e-20.

    Returns
    -------
    torch.Tensor
        Same shape as ``s``; every vector has length :math:`1 - e^{-\lVert s
        \rVert}` (up to :math:`\epsilon`), which rounds to 1 for the longest.

    Raises
    ------
    TypeError
        If ``s`` is not a floating-point tensor.
    ValueError
        If ``eps`` is not a positive number.

    Examples
    --------
    >>> import torch
    >>> v = efficient_squash(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    >>> [round(x, 4) for x in v.norm(dim=-1).tolist()]
    [0.9933, 0.0]
    """
    check_floating("s", s, "(*, D)")
    eps = check_eps(eps)
    # NOTE: s = a t with a = max(1, max_i |s_i|) held constant, as in squash: nothing below overflows.
    a = s.detach().abs().amax(dim, keepdim=True).clamp_min(1)
    t = s / a
    root = torch.sqrt((t * t).sum(dim, keepdim=True) + torch.finfo(s.dtype).tiny / (a * a))  # |s| / a
    n = root * a  # |s| (inf only beyond the dtype's range, where the gain is 1 and its gradient 0)
    decay = torch.exp(-n)
    gain = (-torch.expm1(-n) + eps * decay) / (1 + eps * decay)  # 1 - 1 / (exp(|s|) + eps)
    return gain * t / (root + eps / a)  # gain * s / (|s| + eps)


def _squash_parts(s, dim, eps):
    r"""``s = a t`` with ``a = max(1, max_i |s_i|)`` (a constant for autograd); ``q = (|s|^2 + eps) / a^2``, ``c = 1 / a^2``.

    With :math:`n^2 = \lVert s \rVert^2 + \epsilon = a^2 q`, squash
    :math:`s\, n / (1 + n^2)` is :math:`t \sqrt{q} / (q + c)`: nothing here
    overflows, even where :math:`n` itself would (3e38 in float32; then
    ``c`` is 0), and for ``a = 1`` it is the formula as written.
    """
    # NOTE: the scale is detached; value and gradient are those of the formula
    # with sqrt(|s|^2 + eps), only rounded differently.
    scale = s.detach().abs().amax(dim, keepdim=True).clamp_min(1)
    c = 1 / (scale * scale)
    t = s / scale
    q = (t * t).sum(dim, keepdim=True) + eps * c
    return t, q, c


def margin_loss(lengths, target, m_plus=0.9, m_minus=0.1, lam=0.5):
    r"""Margin loss of Sabour et al. 2017 (eq. 4), summed over classes, averaged over the batch.

    .. math::

        L_k = T_k \max(0, m^+ - \lVert v_k \rVert)^2
            + \lambda (1 - T_k) \max(0, \lVert v_k \rVert - m^-)^2

    Parameters
    ----------
    lengths : torch.Tensor
        Class capsule lengths ``(B, K)``.
    target : torch.Tensor
        Class indices ``(B,)``, or a 0/1 (multi-)hot matrix ``(B, K)`` for
        several digits per image.
    m_plus, m_minus, lam : float
        The margins and the down-weighting of absent classes.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Raises
    ------
    TypeError
        If ``lengths`` is not a floating-point tensor or ``target`` not a tensor.
    ValueError
        If their shapes do not fit.

    Examples
    --------
    >>> import torch
    >>> margin_loss(torch.tensor([[0.9, 0.1]]), torch.tensor([0]))
    tensor(0.)
    """
    check_floating("lengths", lengths, "(B, K)")
    check_tensor("target", target, "(B,) or (B, K)")
    if lengths.dim() != 2:
        raise ValueError(f"lengths must have shape (B, K); got {tuple(lengths.shape)}")
    if target.dim() == 1:
        if target.shape[0] != lengths.shape[0]:
            raise ValueError(
                f"target must have shape (B,) = ({lengths.shape[0]},) or (B, K); "
                f"got {tuple(target.shape)}"
            )
        t = torch.nn.functional.one_hot(target.long(), lengths.shape[1]).to(lengths.dtype)
    elif target.shape == lengths.shape:
        t = target.to(lengths.dtype)
    else:
        raise ValueError(
            f"target must have shape (B,) or (B, K) = {tuple(lengths.shape)}; "
            f"got {tuple(target.shape)}"
        )
    present = t * torch.relu(m_plus - lengths) ** 2
    absent = lam * (1 - t) * torch.relu(lengths - m_minus) ** 2
    return (present + absent).sum(1).mean()


def coupling_entropy(g, coupling, weights=None):
    r"""Entropy of each child's coupling over its parents, per sample; or their weighted mean.

    .. math:: H_i = -\sum_{j \in \mathcal{N}(i)} c_{ij} \log c_{ij}, \qquad
              \bar H = \frac{\sum_i w_i H_i}{\sum_i w_i}

    Edges are grouped by their source node as read from ``g.edges()``; the
    edge order does not matter. A uniform coupling gives :math:`\log
    |\mathcal{N}(i)|`; a child attached to one parent gives 0. Couplings of
    exactly 0 (dynamic routing produces them for long votes) contribute 0 and
    have a finite gradient (that of :math:`-c \log \max(c, \text{tiny})`), so
    the entropy can be used as a training regulariser.

    Parameters
    ----------
    g : dgl.DGLGraph
        The capsule graph the coupling was routed on.
    coupling : torch.Tensor
        ``(|E|, *)`` couplings (each child's sum to 1).
    weights : torch.Tensor, optional
        ``(N_src, *)`` non-negative weights of the children (say their
        activations), cast to the coupling's dtype. With them the result is
        the weighted mean over children (0 where all weights are 0).

    Returns
    -------
    torch.Tensor
        ``(N_src, *)`` entropies in nats, or ``(*)`` with ``weights``.

    Raises
    ------
    TypeError
        If ``coupling`` or ``weights`` is not a floating-point tensor.
    ValueError
        If their shapes do not fit ``g``, or a weight is negative or NaN.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> g = dc.capsule_graph(3, 4)
    >>> h = coupling_entropy(g, torch.full((12, 2), 0.25))
    >>> h.shape, torch.allclose(h, torch.tensor(4.0).log())
    (torch.Size([3, 2]), True)
    >>> coupling_entropy(g, torch.full((12, 2), 0.25), weights=torch.rand(3, 2)).shape
    torch.Size([2])
    """
    check_floating("coupling", coupling, "(|E|, *)")
    if coupling.dim() < 1 or coupling.shape[0] != g.num_edges():
        raise ValueError(
            f"coupling must have shape (|E|, *) with |E| = {g.num_edges()} edges of the graph; "
            f"got {tuple(coupling.shape)}"
        )
    src, _ = g.edges()
    tiny = torch.finfo(coupling.dtype).tiny
    h = -coupling * torch.log(coupling.clamp_min(tiny))  # (E, *); 0 where c = 0, with a finite gradient
    out = h.new_zeros((g.num_src_nodes(),) + tuple(h.shape[1:]))
    out = out.index_add(0, src.to(device=h.device, dtype=torch.long), h)  # (N_src, *)
    if weights is None:
        return out
    weights = check_float_tensor("weights", weights, "(N_src, *)", dtype=coupling.dtype)
    if tuple(weights.shape) != tuple(out.shape):
        raise ValueError(f"weights must have shape (N_src, *) = {tuple(out.shape)}; got {tuple(weights.shape)}")
    if not bool((weights >= 0).all()):
        raise ValueError("weights must be >= 0, one weight per child; got negative or NaN values")
    total = weights.sum(0)  # (*)
    return (weights * out).sum(0) / total.clamp_min(tiny)  # (*)


def spread_loss(a, target, margin):
    r"""Spread loss of Hinton et al. 2018 (eq. 3), summed over classes, averaged over the batch.

    .. math:: L = \sum_{i \ne t} \max\big(0,\; m - (a_t - a_i)\big)^2

    where :math:`a_t` is the activation of the target class. With margin
    :math:`m = 1` it equals the squared Hinge loss on activations in [0, 1];
    the paper grows :math:`m` from 0.2 to 0.9 during training, see
    :func:`spread_margin`.

    Parameters
    ----------
    a : torch.Tensor
        Class activations ``(B, K)``.
    target : torch.Tensor
        Class indices ``(B,)``, or a 0/1 (multi-)hot matrix ``(B, K)``: then
        every target class is compared with every non-target class,
        :math:`\sum_{t \in T} \sum_{i \notin T}` (MultiMNIST pairs).
    margin : float or torch.Tensor
        The margin :math:`m`, a scalar.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Raises
    ------
    TypeError
        If ``a`` is not a floating-point tensor or ``target`` not a tensor.
    ValueError
        If ``a`` is not ``(B, K)``, ``target`` neither ``(B,)`` nor ``(B, K)``, or ``margin`` not a scalar.

    Examples
    --------
    >>> import torch
    >>> spread_loss(torch.tensor([[0.9, 0.5, 0.1]]), torch.tensor([0]), margin=0.5)
    tensor(0.0100)
    """
    check_floating("a", a, "(B, K)")
    check_tensor("target", target, "(B,) or (B, K)")
    if a.dim() != 2:
        raise ValueError(f"a must have shape (B, K); got {tuple(a.shape)}")
    if tuple(target.shape) not in ((a.shape[0],), tuple(a.shape)):
        shape = tuple(target.shape)
        raise ValueError(
            f"target must have shape (B,) = ({a.shape[0]},) of class indices or (B, K) = {tuple(a.shape)} "
            f"of 0/1 multi-hot labels; got {shape}"
        )
    margin = torch.as_tensor(margin, dtype=a.dtype, device=a.device)
    if margin.dim() != 0:
        raise ValueError(f"margin must be a scalar; got shape {tuple(margin.shape)}")
    if target.dim() == 1:
        target = torch.nn.functional.one_hot(target.long(), a.shape[1])
    t = target.to(a.dtype)
    gap = a.unsqueeze(2) - a.unsqueeze(1)  # (B, K, K): a_t - a_i, t in dim 1, i in dim 2
    pair = t.unsqueeze(2) * (1 - t).unsqueeze(1)  # 1 where t is a target class and i is not
    return (torch.relu(margin - gap) ** 2 * pair).sum((1, 2)).mean()


def spread_margin(step, step_scale=50000.0):
    r"""The spread-loss margin schedule :math:`m = 0.2 + 0.79\,\operatorname{sigmoid}(\min(10, s / S - 4))`.

    Starts at about 0.21 at step :math:`s = 0`, is 0.595 at :math:`s = 4 S`
    and saturates at 0.99 from :math:`s = 14 S` on.

    Parameters
    ----------
    step : int or float
        Training step :math:`s \ge 0`.
    step_scale : float
        :math:`S`, 50000 in the schedule of the paper's implementations;
        smaller values for shorter runs.

    Returns
    -------
    float
        The margin.

    Raises
    ------
    ValueError
        If ``step < 0`` or ``step_scale <= 0``.

    Examples
    --------
    >>> round(spread_margin(0), 4), round(spread_margin(200000), 4), round(spread_margin(10**7), 4)
    (0.2142, 0.595, 0.99)
    """
    step, step_scale = float(step), float(step_scale)
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    if not step_scale > 0:
        raise ValueError(f"step_scale must be positive; got {step_scale}")
    x = min(10.0, step / step_scale - 4.0)
    return 0.2 + 0.79 / (1.0 + math.exp(-x))
