"""The three routing pictures of one routing call, each written to a file, and all three to a directory."""
import os

from ._trace import check_trace
from .bipartite import AXES_RECT, animate_bipartite
from .entropy import plot_entropy
from .histogram import animate_histogram
from .save import save_animation

__all__ = ["routing_report", "draw_entropy", "draw_histogram", "draw_bipartite", "picture_options"]

MAX_CHILDREN = 48  # more children than this are drawn as the top_k that carry most
MAX_PARENTS = 40  # more parents than this are grouped by type where the layer knows its types


def draw_entropy(path, g, trace, sample=0, weights=None, weights_label=None, label=None, title=None,
                 figsize=(5.5, 3.8), dpi=100):
    """Write :func:`plot_entropy` of ``trace`` (and its curve weighted by ``weights``) as a PNG; returns ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    plot_entropy(g, trace, ax=ax, sample=sample, label=label)
    if weights is not None:
        plot_entropy(g, trace, ax=ax, sample=sample, weights=weights, label=f"weighted by {weights_label}",
                     color="tab:red", linestyle="--")
    if title is not None:
        ax.set_title(title, fontsize="medium")
    fig.savefig(path, dpi=dpi)
    return path


def draw_histogram(path, g, trace, sample=0, title=None, figsize=(5.5, 3.8), fps=2, dpi=100):
    """Write :func:`animate_histogram` of ``trace`` (a GIF, or what :func:`save_animation` writes); returns its path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    kw = {} if title is None else dict(title=title)
    ani = animate_histogram(trace, g=g, sample=sample, ax=fig.add_subplot(), **kw)
    return save_animation(ani, path, fps=fps, dpi=dpi)


def draw_bipartite(path, g, trace, sample=0, parent_strength=None, child_weights=None, title=None, fps=2, dpi=100,
                   **options):
    """Write :func:`animate_bipartite` of ``trace`` with its ``options``; returns the path written."""
    from matplotlib.figure import Figure

    # No layout engine: it would cost an extra render of all edges on every saved frame.
    fig = Figure(figsize=(7.5, 6.5))
    kw = {} if title is None else dict(title=title)
    ani = animate_bipartite(g, trace, sample=sample, parent_strength=parent_strength, child_weights=child_weights,
                            ax=fig.add_axes(AXES_RECT), **kw, **options)
    return save_animation(ani, path, fps=fps, dpi=dpi)


def picture_options(g, child_weights=None, weights_label=None, parent_types=None):
    """How to draw a routed layer's bipartite picture readably: options of :func:`animate_bipartite`.

    Parents grouped by type when there are more than ``MAX_PARENTS`` and the
    layer knows its ``parent_types``; the ``top_k`` children that carry most
    (by ``child_weights``, else the most decided ones) when there are more
    than ``MAX_CHILDREN``.
    """
    kw = {}
    if parent_types and g.num_dst_nodes() > MAX_PARENTS:
        kw.update(group_parents="type", parent_types=parent_types)
    if g.num_src_nodes() > MAX_CHILDREN:
        kw["top_k"] = 24 if kw else 32
    if child_weights is not None:
        kw.update(child_weights=child_weights, weights_label=weights_label)
    return kw


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
    if getattr(result, "trace", None) is None:
        raise ValueError(
            "result.trace is None: call the routing with return_trace=True to record the "
            "coupling of every iteration"
        )
    trace = check_trace(g, result.trace, "routing_report")
    os.makedirs(out_dir, exist_ok=True)
    top_k = 256 if g.num_src_nodes() > 2304 else None  # every child of a CapsNet layer
    return {
        "entropy": draw_entropy(os.path.join(out_dir, "entropy.png"), g, trace, sample=sample, dpi=dpi),
        "histogram": draw_histogram(os.path.join(out_dir, "histogram.gif"), g, trace, sample=sample, fps=fps,
                                    dpi=dpi),
        "bipartite": draw_bipartite(os.path.join(out_dir, "bipartite.gif"), g, trace, sample=sample,
                                    parent_strength=parent_strength, top_k=top_k, fps=fps, dpi=dpi),
    }
