"""Coupling entropy against the routing iteration."""
import numpy as np
import torch

from ..functional import coupling_entropy
from ._trace import check_sample, check_trace

__all__ = ["coupling_entropy", "entropy_curve", "plot_entropy"]  # child_weights is shared with the other plots

_UNIFORM_GID = "dgl_capsules.uniform_entropy"


def entropy_curve(g, trace, sample=None, weights=None):
    r"""Mean and standard deviation of the per-child coupling entropy at every iteration.

    The entropy :math:`H_i = -\sum_j c_{ij} \log c_{ij}` of every child with
    at least one parent is computed by :func:`coupling_entropy` and then
    aggregated over the children and, with ``sample=None``, over every sample
    of the batch dimensions as well (each sample counts equally).

    With ``weights`` :math:`w_i \ge 0` (what each child carries: its vote
    length or activation) the mean and standard deviation are weighted,
    :math:`\sum_i w_i H_i / \sum_i w_i` per sample: in a trained network
    most children carry little, and their routing matters little.

    Parameters
    ----------
    g : dgl.DGLGraph
        The capsule graph the trace was recorded on.
    trace : list of torch.Tensor or RoutingResult
        Couplings of every iteration, each ``(|E|, *)``.
    sample : int, optional
        One sample of the flattened batch dimensions; ``None`` pools them all.
    weights : torch.Tensor, optional
        ``(N_src,)`` or ``(N_src, *)`` non-negative weights of the children
        (the trace's batch dimensions, or none to weight every sample alike).

    Returns
    -------
    mean, std : numpy.ndarray
        ``(n_iters,)`` each, in nats.

    Raises
    ------
    ValueError
        If the trace is missing, empty, or not recorded on ``g``, ``sample``
        is out of range, or ``weights`` have the wrong shape, are negative,
        not finite, or sum to 0 over the children of a sample.
    TypeError
        If ``weights`` is not a floating-point tensor.

    Examples
    --------
    >>> import dgl_capsules as dc
    >>> p = dc.data.planted_clusters(n_in=12, n_out=3, batch=2)
    >>> r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=3, return_trace=True)
    >>> mean, std = entropy_curve(p.graph, r.trace)
    >>> mean.shape, std.shape
    ((3,), (3,))
    """
    trace = check_trace(g, trace, "entropy_curve")
    sample = check_sample(sample, trace[0].shape)
    has_parents = (g.out_degrees() > 0).to(trace[0].device)  # (N_src,)
    if weights is not None:
        w = child_weights(g, weights, trace[0].shape)  # (N_src, S or 1)
        w = w * has_parents.cpu()[:, None]  # a child without parents has no coupling to weigh
        w = w.expand(-1, int(np.prod(trace[0].shape[1:], dtype=np.int64)))  # (N_src, S)
    mean, std = [], []
    for c in trace:
        if weights is None:
            h = coupling_entropy(g, c)[has_parents]  # (N_children, *)
            h = h.reshape(h.shape[0], -1).double().cpu()  # (N_children, S)
            if sample is not None:
                h = h[:, sample]
            mean.append(h.mean().item())
            std.append(h.std(unbiased=False).item())
            continue
        h = coupling_entropy(g, c).reshape(g.num_src_nodes(), -1).double().cpu()  # (N_src, S)
        per_sample = coupling_entropy(g, c, weights=w.reshape((-1,) + tuple(c.shape[1:])).to(c))  # (*)
        m_s = per_sample.reshape(-1).double().cpu()  # (S,) weighted mean of each sample
        ws = w / w.sum(0)  # (N_src, S), each sample's weights sum to 1
        if sample is not None:
            h, ws, m_s = h[:, sample:sample + 1], ws[:, sample:sample + 1], m_s[sample:sample + 1]
        m = m_s.mean()  # every sample counts alike
        mean.append(m.item())
        std.append(((ws * (h - m) ** 2).sum() / h.shape[1]).sqrt().item())
    return np.array(mean), np.array(std)


def child_weights(g, weights, trace_shape):
    """Check child weights ``(N_src,)`` or ``(N_src, *batch)``; return them as float64 ``(N_src, S or 1)``."""
    n_src = g.num_src_nodes()
    if isinstance(weights, np.ndarray):
        weights = torch.from_numpy(weights)
    if not isinstance(weights, torch.Tensor) or not torch.is_floating_point(weights):
        what = f"{weights.dtype} tensor" if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise TypeError(f"weights must be a floating-point tensor of shape (N_src, *); got {what}")
    w = weights.detach().cpu().double()
    batch = tuple(trace_shape[1:])
    if w.dim() == 0 or w.shape[0] != n_src or (w.dim() > 1 and tuple(w.shape[1:]) != batch):
        raise ValueError(
            f"weights must have shape (N_src,) = ({n_src},) or (N_src, *batch) = {(n_src,) + batch} "
            f"(one weight per child); got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must be finite and non-negative (vote lengths or activations)")
    w = w.reshape(n_src, -1)  # (N_src, S or 1)
    has_parents = g.out_degrees().cpu() > 0
    if bool((w[has_parents].sum(0) <= 0).any()):
        raise ValueError("weights must not all be 0 over the children of a sample")
    return w


def plot_entropy(g, trace, ax=None, sample=None, label=None, uniform=True, weights=None, **errorbar_kw):
    r"""Plot the mean ± std of the per-child coupling entropy against the routing iteration.

    Routing starts every child spread evenly over its parents, at the entropy
    :math:`\log |\mathcal{N}(i)|` (drawn as a dashed line), and should end
    with each child settled on a few parents, near 0. The statistics pool all
    children that have parents and, with ``sample=None``, all samples of a
    batched trace (see :func:`entropy_curve`). Call it several times on one
    Axes with different ``label`` values to compare routing algorithms; the
    uniform level is drawn once.

    Parameters
    ----------
    g : dgl.DGLGraph
        The capsule graph the trace was recorded on.
    trace : list of torch.Tensor or RoutingResult
        Couplings of every iteration, each ``(|E|,)`` or ``(|E|, B, ...)``
        (``return_trace=True`` of any routing function).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new pyplot figure by default. It is never shown or
        closed here.
    sample : int, optional
        Plot one sample of the flattened batch dimensions instead of all.
    label : str, optional
        Legend entry of this curve (e.g. the routing algorithm).
    uniform : bool
        Mark the entropy of the uniform coupling, ``log(#parents)`` (the mean
        over children when their numbers of parents differ).
    weights : torch.Tensor, optional
        ``(N_src,)`` or ``(N_src, *)`` what each child carries (vote lengths,
        activations): plot the weighted mean ± std instead (see
        :func:`entropy_curve`); give it a ``label`` that says so.
    **errorbar_kw
        Passed on to :meth:`matplotlib.axes.Axes.errorbar`.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        If the trace is missing, empty, or not recorded on ``g``.

    Examples
    --------
    >>> import dgl_capsules as dc
    >>> p = dc.data.planted_clusters(n_in=12, n_out=3)
    >>> r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=3, return_trace=True)
    >>> ax = plot_entropy(p.graph, r.trace, label="dynamic")
    >>> ax.get_xlabel()
    'routing iteration'
    """
    mean, std = entropy_curve(g, trace, sample=sample, weights=weights)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    iters = np.arange(1, len(mean) + 1)
    kw = dict(marker="o", capsize=4, linewidth=2, markersize=5)
    kw.update(errorbar_kw)
    default = "mean ± std over children" if weights is None else "weighted mean ± std over children"
    ax.errorbar(iters, mean, yerr=std, label=label or default, **kw)

    deg = g.out_degrees()
    deg = deg[deg > 0].double()
    level = torch.log(deg).mean().item() if len(deg) else 0.0
    drawn = any(line.get_gid() == _UNIFORM_GID for line in ax.get_lines())
    if uniform and not drawn:
        if len(deg) and bool((deg == deg[0]).all()):
            text = f"uniform coupling: log {int(deg[0])} = {level:.2f}"
        else:
            text = f"uniform coupling: mean log #parents = {level:.2f}"
        ax.axhline(level, color="0.4", linestyle="--", linewidth=1, label=text, gid=_UNIFORM_GID)
    # Limits that also fit the curves drawn on this Axes by earlier calls.
    n_max = len(mean)
    top = max(level, float(np.max(mean + std)))
    n_entries = len(ax.get_legend_handles_labels()[1])
    headroom = 1.2 + 0.15 * n_entries  # one legend row per entry above the curves
    if drawn:
        n_max = max(n_max, int(round(ax.get_xlim()[1] - 0.5)))
        top = max(top, ax.get_ylim()[1] / (1.2 + 0.15 * (n_entries - 1)))
    if n_max <= 12:
        ax.set_xticks(np.arange(1, n_max + 1))
    ax.set_xlim(0.5, n_max + 0.5)
    ax.set_ylim(0.0, headroom * top if top > 0 else 1.0)  # room for the legend above the curves
    ax.set_xlabel("routing iteration")
    ax.set_ylabel("coupling entropy per child (nats)")
    ax.set_title("Routing convergence: coupling entropy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")  # one column: fits narrow panels
    return ax
