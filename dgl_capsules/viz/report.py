"""All three routing pictures of one routing call, written to a directory."""
import os

from ._trace import check_trace
from .bipartite import AXES_RECT, animate_bipartite
from .entropy import plot_entropy
from .histogram import animate_histogram
from .save import save_animation

__all__ = ["routing_report"]


def routing_report(g, result, out_dir, parent_strength=None, sample=0, fps=2, dpi=100):
    """Write the entropy plot and both animations of a routing result into ``out_dir``.

    Files: ``entropy.png`` (:func:`plot_entropy`), ``histogram.gif``
    (:func:`animate_histogram`) and ``bipartite.gif``
    (:func:`animate_bipartite`, every child of layers up to 2304 children,
    else the 256 most decided ones). All three show sample ``sample``. The
    figures are made without pyplot, so nothing is shown and nothing stays
    open; no backend is needed.

    Parameters
    ----------
    g : dgl.DGLGraph
        The capsule graph routed on.
    result : RoutingResult
        From a routing call with ``return_trace=True``.
    out_dir : str or os.PathLike
        Created if missing.
    parent_strength : torch.Tensor, optional
        ``(N_dst,)`` or ``(N_dst, B)`` capsule lengths or activations; parent
        node sizes of the bipartite animation follow it.
    sample : int
        Which sample of a batched routing to draw.
    fps, dpi : float
        Frame rate and resolution of the written files.

    Returns
    -------
    dict
        ``{"entropy": path, "histogram": path, "bipartite": path}`` (str).

    Raises
    ------
    ValueError
        If ``result.trace`` is None (call the routing with
        ``return_trace=True``), or the trace does not belong to ``g``.

    Examples
    --------
    >>> import tempfile, dgl_capsules as dc
    >>> p = dc.data.planted_clusters(n_in=12, n_out=3)
    >>> r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=2, return_trace=True)
    >>> paths = routing_report(p.graph, r, tempfile.mkdtemp(), dpi=40)
    >>> sorted(paths)
    ['bipartite', 'entropy', 'histogram']
    """
    from matplotlib.figure import Figure

    if getattr(result, "trace", None) is None:
        raise ValueError(
            "result.trace is None: call the routing with return_trace=True to record the "
            "coupling of every iteration"
        )
    trace = check_trace(g, result.trace, "routing_report")
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "entropy": os.path.join(out_dir, "entropy.png"),
        "histogram": os.path.join(out_dir, "histogram.gif"),
        "bipartite": os.path.join(out_dir, "bipartite.gif"),
    }

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    plot_entropy(g, trace, ax=fig.add_subplot(), sample=sample)
    fig.savefig(paths["entropy"], dpi=dpi)

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ani = animate_histogram(trace, g=g, sample=sample, ax=fig.add_subplot())
    save_animation(ani, paths["histogram"], fps=fps, dpi=dpi)

    fig = Figure(figsize=(7.5, 6.5))
    top_k = 256 if g.num_src_nodes() > 2304 else None  # every child of a CapsNet layer
    ani = animate_bipartite(g, trace, sample=sample, parent_strength=parent_strength, top_k=top_k,
                            ax=fig.add_axes(AXES_RECT))
    save_animation(ani, paths["bipartite"], fps=fps, dpi=dpi)
    return paths
