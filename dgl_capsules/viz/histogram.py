"""Animated histogram of the couplings, one frame per routing iteration."""
from numbers import Integral

import numpy as np

from ._trace import as_trace, check_sample, check_trace, n_samples, pool

__all__ = ["animate_histogram"]


def animate_histogram(
    trace,
    g=None,
    sample=0,
    bins=40,
    log=True,
    ax=None,
    interval=800,
    color="tab:blue",
    title="Coupling distribution",
):
    r"""Animate the distribution of the couplings :math:`c_{ij}` over the routing iterations.

    Each frame is a seaborn :func:`~seaborn.histplot` of one iteration's
    couplings with the same bins on ``[0, 1]`` and the same y range, so frames
    compare directly: routing starts with every coupling at ``1/#parents``
    and moves them towards 0 (parents a child left) and 1 (the parent it
    chose).

    Parameters
    ----------
    trace : list of torch.Tensor or RoutingResult
        Couplings of every iteration, each ``(|E|,)`` or ``(|E|, B, ...)``.
    g : dgl.DGLGraph, optional
        The graph the trace was recorded on: checks the trace against it and
        marks the uniform coupling ``1/#parents``.
    sample : int or None
        Which sample of the flattened batch dimensions to show; ``None``
        pools the couplings of all samples.
    bins : int
        Number of equal bins on ``[0, 1]``.
    log : bool
        Logarithmic count axis (the first frame's spike at ``1/#parents``
        otherwise flattens every later frame).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new pyplot figure by default. The animation clears
        and redraws this Axes on every frame. The figure is never shown or
        closed here.
    interval : int
        Milliseconds between frames when played.
    color : str
        Colour of the bars.
    title : str
        Title; ``": iteration t / T"`` is appended on each frame.

    Returns
    -------
    matplotlib.animation.FuncAnimation
        One frame per recorded iteration. Keep a reference to it (and save it
        with :func:`save_animation`).

    Raises
    ------
    ValueError
        If the trace is missing or empty, does not match ``g``, ``sample`` is
        out of range or ``bins`` is not a positive integer.

    Examples
    --------
    >>> import dgl_capsules as dc
    >>> p = dc.data.planted_clusters(n_in=12, n_out=3, batch=2)
    >>> r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=3, return_trace=True)
    >>> ani = animate_histogram(r.trace, g=p.graph, sample=1)
    >>> type(ani).__name__
    'FuncAnimation'
    >>> import os, tempfile
    >>> path = dc.viz.save_animation(ani, os.path.join(tempfile.mkdtemp(), "hist.gif"), dpi=30)
    """
    import seaborn as sns
    from matplotlib.animation import FuncAnimation

    trace = as_trace(trace) if g is None else check_trace(g, trace, "animate_histogram")
    sample = check_sample(sample, trace[0].shape)
    if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    values = [pool(c, sample) for c in trace]  # n_iters x (|E| * samples,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    peak = max(np.histogram(np.clip(v, 0, 1), bins=edges)[0].max() for v in values)
    ylim = (0.7, 2.0 * peak) if log else (0, 1.08 * peak)
    uniform = None
    if g is not None:
        deg = g.out_degrees()
        deg = deg[deg > 0]
        if len(deg) and bool((deg == deg[0]).all()):
            uniform = 1.0 / int(deg[0])

    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    fig = ax.figure
    n_edges = trace[0].shape[0]
    if n_samples(trace[0].shape) == 1:
        who = ""
    else:
        who = ", all samples" if sample is None else f", sample {sample}"

    def draw(t):
        ax.clear()
        sns.histplot(
            x=np.clip(values[t], 0, 1), bins=edges, ax=ax, color=color, edgecolor="white",
            linewidth=0.5, alpha=0.85, label=f"{n_edges} edges{who}",
        )
        if log:  # bars start at 0: clip it to the axis bottom instead of dropping the bar
            ax.set_yscale("log", nonpositive="clip")
        if uniform is not None:
            ax.axvline(uniform, color="0.3", linestyle="--", linewidth=1,
                       label=f"uniform 1/#parents = {uniform:.3g}")
        ax.set_xlim(0, 1)
        ax.set_ylim(*ylim)
        ax.set_xlabel(r"coupling $c_{ij}$")
        ax.set_ylabel("number of edges" + (" (log scale)" if log else ""))
        ax.set_title(f"{title}: iteration {t + 1} / {len(values)}")
        ax.legend(loc="upper right", fontsize="small")
        return list(ax.patches)

    draw(0)
    return FuncAnimation(fig, draw, frames=len(values), interval=interval, repeat=True)
