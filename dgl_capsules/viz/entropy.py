"""Coupling entropy against the routing iteration."""
import numpy as np
import torch

from ..functional import coupling_entropy
from ._trace import check_sample, check_trace

__all__ = ["coupling_entropy", "entropy_curve", "plot_entropy"]

_UNIFORM_GID = "dgl_capsules.uniform_entropy"


def entropy_curve(g, trace, sample=None):
    r"""Mean and standard deviation of the per-child coupling entropy at every iteration.

    The entropy :math:`H_i = -\sum_j c_{ij} \log c_{ij}` of every child with
    at least one parent is computed by :func:`coupling_entropy` and then
    aggregated over the children and, with ``sample=None``, over every sample
    of the batch dimensions as well.

    Parameters
    ----------
    g : dgl.DGLGraph
        The capsule graph the trace was recorded on.
    trace : list of torch.Tensor or RoutingResult
        Couplings of every iteration, each ``(|E|, *)``.
    sample : int, optional
        One sample of the flattened batch dimensions; ``None`` pools them all.

    Returns
    -------
    mean, std : numpy.ndarray
        ``(n_iters,)`` each, in nats.

    Raises
    ------
    ValueError
        If the trace is missing, empty, or not recorded on ``g``, or ``sample``
        is out of range.

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
    mean, std = [], []
    for c in trace:
        h = coupling_entropy(g, c)[has_parents]  # (N_children, *)
        h = h.reshape(h.shape[0], -1).double()  # (N_children, S)
        if sample is not None:
            h = h[:, sample]
        mean.append(h.mean().item())
        std.append(h.std(unbiased=False).item())
    return np.array(mean), np.array(std)


def plot_entropy(g, trace, ax=None, sample=None, label=None, uniform=True, **errorbar_kw):
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
    mean, std = entropy_curve(g, trace, sample=sample)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    iters = np.arange(1, len(mean) + 1)
    kw = dict(marker="o", capsize=4, linewidth=2, markersize=5)
    kw.update(errorbar_kw)
    ax.errorbar(iters, mean, yerr=std, label=label or "mean ± std over children", **kw)

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
    if drawn:
        n_max = max(n_max, int(round(ax.get_xlim()[1] - 0.5)))
        top = max(top, ax.get_ylim()[1] / 1.35)
    if n_max <= 12:
        ax.set_xticks(np.arange(1, n_max + 1))
    ax.set_xlim(0.5, n_max + 0.5)
    ax.set_ylim(0.0, 1.35 * top if top > 0 else 1.0)  # room for the legend above the curves
    ax.set_xlabel("routing iteration")
    ax.set_ylabel("coupling entropy per child (nats)")
    ax.set_title("Routing convergence: coupling entropy")
    ax.grid(True, alpha=0.3)
    n_entries = len(ax.get_legend_handles_labels()[1])
    ax.legend(loc="upper right", fontsize="small", ncols=1 if n_entries <= 2 else 2)
    return ax
