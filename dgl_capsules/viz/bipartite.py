"""Animated bipartite drawing of a capsule layer whose edges follow the couplings."""
from dataclasses import dataclass, replace
from numbers import Integral
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from ._nodes import cols as _cols, node_values as _node_values, rows as _rows
from ._trace import check_sample, check_trace, pick

__all__ = ["animate_bipartite", "BipartiteOptions", "edge_scale"]

_MAX_LABELS = 40  # more nodes than this in a column are drawn without text labels
MIN_WIDTH = 0.3  # points: the width of an edge at the uniform coupling (and below)
MIN_ALPHA = 0.12  # its opacity
AXES_RECT = (0.02, 0.12, 0.96, 0.77)  # of a 7.5 x 6.5 in figure: room for the headers, title and legend


def edge_scale(coupling, uniform, max_width=3.0):
    r"""Width and opacity of an edge: the fixed scale of every bipartite picture.

    The position of the coupling between the uniform coupling
    :math:`u = 1/|\mathcal{N}(i)|` and 1,

    .. math:: s = \operatorname{clip}\Big(\frac{c - u}{1 - u}, 0, 1\Big),

    sets the width ``MIN_WIDTH + (max_width - MIN_WIDTH) * s`` (points) and
    the opacity ``MIN_ALPHA + (1 - MIN_ALPHA) * s``: an evenly split child
    draws thin, faint edges, a decided child draws its chosen edge at
    ``max_width``, whatever the frame, layer or picture. A child with a single
    parent (:math:`u = 1`) counts as decided.

    Parameters
    ----------
    coupling, uniform : array-like
        Couplings and the uniform coupling of their edges, same shape.
    max_width : float
        Width in points at coupling 1.

    Returns
    -------
    widths, alphas : numpy.ndarray
        Same shape as ``coupling``.

    Examples
    --------
    >>> w, a = edge_scale([0.1, 0.55, 1.0], [0.1, 0.1, 0.1])
    >>> w.round(2).tolist(), a.round(2).tolist()
    ([0.3, 1.65, 3.0], [0.12, 0.56, 1.0])
    """
    c = np.asarray(coupling, dtype=float)
    u = np.broadcast_to(np.asarray(uniform, dtype=float), c.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(u < 1.0 - 1e-9, (c - u) / (1.0 - u), 1.0)
    s = np.clip(np.nan_to_num(s, nan=0.0), 0.0, 1.0)
    return MIN_WIDTH + (max_width - MIN_WIDTH) * s, MIN_ALPHA + (1.0 - MIN_ALPHA) * s


@dataclass(frozen=True)
class BipartiteOptions:
    """How :func:`animate_bipartite` draws a layer: which children and parents, and the style.

    Attributes
    ----------
    top_k : int, optional
        Draw only ``top_k`` children (or groups): those with the largest
        ``child_weights`` if given, else the most decided ones.
    group_by : {"type", "position"} or torch.Tensor, optional
        Aggregate children by capsule type or grid position, or by the integer
        labels of a ``(N_src,)`` tensor. Child id ``(y * W + x) * A + a``
        has type ``a`` and position ``y * W + x``.
    child_types : int, optional
        ``A``, the capsule types per grid position, for ``group_by`` on a
        graph without a ``"child_type"`` edge feature (e.g. 32 for CapsNet's
        1152 primary capsules on :func:`~dgl_capsules.capsule_graph`).
    group_parents : {"type"}, optional
        One right-hand node per parent type of a convolutional layer: the
        coupling a child gives a type is its summed coupling to the parents of
        that type.
    parent_types : int, optional
        ``C``, the parent types per grid position (parent id
        ``(y' * W_o + x') * C + c`` has type ``c``), for ``group_parents`` on
        a graph whose edges do not carry ``"parent_type"``; with many parents
        it also colours the parents by type.
    parent_labels : list of str, optional
        Names of the parents (e.g. class names); parent ids by default. With
        ``group_parents="type"``, names of the parent types.
    sort_children : bool
        Order the left column by each row's final favourite parent, so the
        bundles of a converged routing do not cross; otherwise by id.
    weights_label : str
        What ``child_weights`` are, for the header ("vote length").
    max_width : float
        Line width in points of an edge with coupling 1.
    interval : int
        Milliseconds between frames when played.
    """

    top_k: Optional[int] = None
    group_by: Any = None
    child_types: Optional[int] = None
    group_parents: Optional[str] = None
    parent_types: Optional[int] = None
    parent_labels: Optional[Sequence[str]] = None
    sort_children: bool = True
    weights_label: str = "weight"
    max_width: float = 3.0
    interval: int = 800


def animate_bipartite(g, trace, sample=0, parent_strength=None, child_weights=None, *, ax=None, title="Routing",
                      frame_labels=None, options=None, **option_kwargs):
    r"""Animate a capsule layer as a bipartite graph whose edges follow the couplings.

    Children (or groups of children) form the left column and parents (or
    parent types) the right one (:func:`networkx.bipartite_layout`). Every
    edge :math:`i \to j` is drawn in the colour of its parent with a width and
    an opacity that are a fixed function of :math:`c_{ij}`
    (:func:`edge_scale`): thin and faint at the uniform coupling
    :math:`1/|\mathcal{N}(i)|`, widest at coupling 1, the same in every frame
    and every picture, so uniform routing looks uniform and a decided child
    looks decided. The legend states the scale. All edges are one
    :class:`~matplotlib.collections.LineCollection` created once; a frame
    only updates its widths and colours, so a 1152 → 10 layer (11520 edges)
    animates in seconds.

    Parent node sizes follow ``parent_strength`` (capsule lengths or
    activations) when it is given, and otherwise the coupling mass
    :math:`\sum_i c_{ij}` each parent receives in the frame.

    Large layers stay readable with the :class:`BipartiteOptions` ``top_k``
    (the children that carry most, by ``child_weights`` such as vote lengths
    or activations, or without weights the most decided ones: the largest
    :math:`\max_j c_{ij}` at the last frame), ``group_by`` (one node per
    capsule type or grid position) and ``group_parents="type"`` (one node
    per parent type of a convolutional layer). A drawn edge between groups
    carries the mean, over the children of the row that reach the parent
    group, of their summed coupling to the group's parents; its uniform level
    is computed the same way, so the scale stays absolute. The header says
    how the children were chosen.

    Parameters
    ----------
    g : dgl.DGLGraph
        The capsule graph the trace was recorded on.
    trace : list of torch.Tensor or RoutingResult
        Couplings of every frame (routing iteration), each ``(|E|,)`` or
        ``(|E|, B, ...)``.
    sample : int or None
        Which sample of the flattened batch dimensions to draw; ``None``
        averages the couplings (and ``parent_strength``, ``child_weights``)
        over all samples.
    parent_strength : torch.Tensor or array-like, optional
        ``(N_dst,)`` or ``(N_dst, B, ...)`` non-negative strengths of the
        parents, e.g. the lengths of dynamic routing's poses or EM
        activations (for Heinsen logits pass ``torch.sigmoid(a_out)``).
    child_weights : torch.Tensor or array-like, optional
        ``(N_src,)`` or ``(N_src, B, ...)`` non-negative amounts the children
        carry (vote lengths, activations); ``top_k`` keeps the largest.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new pyplot figure by default. Never shown or closed
        here.
    title : str
        Title; ``": iteration t / T"`` (or the frame's label) is appended on
        each frame.
    frame_labels : list of str, optional
        One label per frame for the title (e.g. ``"epoch 3"``); by default
        ``"iteration t / T"``.
    options : BipartiteOptions, optional
        Which children and parents to draw and how.
    **option_kwargs
        Fields of :class:`BipartiteOptions` (``top_k=32``, ``group_by="type"``,
        ...), over ``options``.

    Returns
    -------
    matplotlib.animation.FuncAnimation
        One frame per recorded iteration.

    Raises
    ------
    ValueError
        If the trace is missing, empty or not recorded on ``g``; if
        ``sample``, ``parent_strength``, ``child_weights``, ``frame_labels``
        or an option (``top_k``, ``group_by``, ``child_types``,
        ``group_parents``, ``parent_types``, ``parent_labels``) do not fit
        the graph and trace.
    TypeError
        For a keyword that is not an option.

    Examples
    --------
    >>> import dgl_capsules as dc
    >>> p = dc.data.planted_clusters(n_in=12, n_out=3)
    >>> r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=3, return_trace=True)
    >>> ani = animate_bipartite(p.graph, r.trace, parent_strength=r.poses.norm(dim=-1))
    >>> type(ani).__name__
    'FuncAnimation'
    >>> import os, tempfile
    >>> path = dc.viz.save_animation(ani, os.path.join(tempfile.mkdtemp(), "graph.gif"), dpi=30)
    """
    from matplotlib.animation import FuncAnimation

    opts = replace(options or BipartiteOptions(), **option_kwargs)
    trace = check_trace(g, trace, "animate_bipartite")
    sample = check_sample(sample, trace[0].shape)
    n_src, n_dst = g.num_src_nodes(), g.num_dst_nodes()
    strength = _node_values(parent_strength, "parent_strength", "N_dst", n_dst, trace[0].shape, sample)
    weights = _node_values(child_weights, "child_weights", "N_src", n_src, trace[0].shape, sample)
    if frame_labels is not None:
        frame_labels = [str(s) for s in frame_labels]
        if len(frame_labels) != len(trace):
            raise ValueError(
                f"frame_labels must have one label per frame ({len(trace)}); got {len(frame_labels)}"
            )
    src, dst = (t.cpu().numpy() for t in g.edges())
    frames = np.stack([pick(c, sample) for c in trace])  # (T, E)
    deg = np.bincount(src, minlength=n_src)  # parents of every child
    cols = _Columns.of(g, opts, strength)
    row_of, row_names, kind = _rows(g, opts.group_by, opts.child_types)  # (N_src,), n_rows names
    e_row, e_col, w, u = _edge_weights(src, dst, row_of, cols, kind, frames, deg)
    rows, row_weight = _choose_rows(e_row, e_col, w, row_of, len(row_names), weights, opts)
    slot = np.full(len(row_names), -1)
    slot[rows] = np.arange(len(rows))
    shown = slot[e_row] >= 0
    edges = _Edges(slot[e_row[shown]], e_col[shown], w[:, shown], u[shown], cols.palette[e_col[shown]].copy())
    ax, lines, parents, size_of, head_lines = _draw(
        ax, edges, cols, rows, row_names, row_weight, kind, weights is not None, opts, n_src, deg)
    frame_text = frame_labels or [f"iteration {t + 1} / {len(w)}" for t in range(len(w))]
    title_size = _fit_into_figure(ax, [f"{title}: {f}" for f in frame_text], pad=6 + 12 * head_lines)

    def draw(t):
        rgba, widths = edges.style(t, opts.max_width)
        lines.set_color(rgba)
        lines.set_linewidth(widths)
        parents.set_sizes(np.broadcast_to(size_of(t), (cols.n,)))
        ax.set_title(f"{title}: {frame_text[t]}", pad=6 + 12 * head_lines, fontsize=title_size)
        return [lines, parents]

    draw(0)
    return FuncAnimation(ax.figure, draw, frames=len(w), interval=opts.interval, repeat=True)


class _Columns(NamedTuple):
    """The right column: parents or parent types, their names, colours and strengths."""

    col_of: np.ndarray  # (N_dst,) the column of every parent
    labels: list
    kind: str  # "parent" or "type"
    palette: np.ndarray  # (n, 4) one colour per column
    strength: Optional[np.ndarray]  # (n,) or None
    n_dst: int

    @property
    def n(self):
        return len(self.labels)

    @classmethod
    def of(cls, g, opts, strength):
        col_of, col_names, kind, ptype = _cols(g, opts.group_parents, opts.parent_types)
        n = len(col_names)
        labels = col_names if opts.parent_labels is None else list(opts.parent_labels)
        if len(labels) != n:
            what = "parent types" if kind == "type" else "parents"
            raise ValueError(f"parent_labels must name the {n} {what} (N_dst = {g.num_dst_nodes()}); "
                             f"got {len(labels)} labels")
        if kind == "type" and strength is not None:  # mean strength per type
            strength = np.bincount(col_of, weights=strength, minlength=n) / np.maximum(
                np.bincount(col_of, minlength=n), 1)
        return cls(col_of, labels, kind, _palette(n, ptype), strength, g.num_dst_nodes())


class _Edges(NamedTuple):
    """The drawn edges: row slot, column, weight of every frame ``(T, E')``, uniform level and colour ``(E', 4)``."""

    slot: np.ndarray
    col: np.ndarray
    w: np.ndarray
    u: np.ndarray
    colours: np.ndarray

    def style(self, t, max_width):
        """Colours (the column's, opacity by :func:`edge_scale`) and widths of frame ``t``."""
        widths, alphas = edge_scale(self.w[t], self.u, max_width)
        rgba = self.colours.copy()
        rgba[:, 3] = alphas
        return rgba, widths


def _palette(n_right, ptype):
    """One colour per column: tab10 / tab20 for few, one per parent type for many typed parents, else turbo."""
    import matplotlib as mpl

    if n_right <= 10:
        return mpl.colormaps["tab10"](np.arange(n_right))
    if n_right <= 20:
        return mpl.colormaps["tab20"](np.arange(n_right))
    if ptype is not None:
        n_pt = int(ptype.max()) + 1
        cmap = mpl.colormaps["tab10" if n_pt <= 10 else "tab20" if n_pt <= 20 else "turbo"]
        return cmap(ptype if n_pt <= 20 else ptype / max(n_pt - 1, 1))  # one colour per parent type
    return mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n_right))


def _edge_weights(src, dst, row_of, cols, kind, frames, deg):
    """Drawn edges (row, column): the mean over the row's children that reach the column of their summed
    coupling to it ``w`` ``(T, E')``, and of their summed uniform coupling (1 / #parents) ``u`` ``(E',)``."""
    n_right = cols.n
    key = row_of[src].astype(np.int64) * n_right + cols.col_of[dst]  # (E,)
    pairs, inv = np.unique(key, return_inverse=True)
    inv = inv.reshape(-1)
    e_row, e_col = pairs // n_right, pairs % n_right  # (E',)
    if len(pairs) == len(key) and kind == "child":
        count = np.ones(len(pairs))
    else:
        child_pairs = np.unique(src.astype(np.int64) * n_right + cols.col_of[dst])
        count = np.bincount(np.searchsorted(pairs, row_of[child_pairs // n_right] * n_right
                                            + child_pairs % n_right), minlength=len(pairs))
    w = np.stack([np.bincount(inv, weights=f, minlength=len(pairs)) for f in frames]) / count  # (T, E')
    u = np.bincount(inv, weights=1.0 / deg[src], minlength=len(pairs)) / count  # (E',)
    return e_row, e_col, w, u


def _choose_rows(e_row, e_col, w, row_of, n_rows, weights, opts):
    """The rows to draw, top to bottom, and the mean weight of every row's children (or None)."""
    final = w[-1]
    order = np.lexsort((-final, e_row))  # by row, then strongest parent first
    first = np.ones(len(order), dtype=bool)
    first[1:] = e_row[order][1:] != e_row[order][:-1]
    rows = e_row[order][first]  # rows with at least one parent, ascending
    best = final[order][first]  # their largest final coupling
    favourite = e_col[order][first]  # the parent that holds it
    row_weight = None
    if weights is not None:
        row_weight = np.bincount(row_of, weights=weights, minlength=n_rows) \
            / np.maximum(np.bincount(row_of, minlength=n_rows), 1)  # mean weight of a row's children
    if opts.top_k is not None:
        top_k = opts.top_k
        if isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None; got {top_k!r}")
        rank_by = best if weights is None else row_weight[rows]
        keep = np.argsort(-rank_by, kind="stable")[:top_k]
        keep.sort()
        rows, favourite = rows[keep], favourite[keep]
    if opts.sort_children:
        rows = rows[np.lexsort((rows, favourite))]
    return rows, row_weight


def _draw(ax, edges, cols, rows, row_names, row_weight, kind, has_weights, opts, n_src, deg):
    """Nodes, edges, labels, headers and legend of the first frame.

    Returns ``(ax, edge collection, parent markers, parent marker areas of frame t, header lines)``."""
    import networkx as nx
    from matplotlib.collections import LineCollection

    n_left, n_right = len(rows), cols.n
    nxg = nx.Graph()
    nxg.add_nodes_from(range(n_left + n_right))
    pos = nx.bipartite_layout(nxg, nodes=range(n_left), align="vertical")
    left_xy = _column(pos, range(n_left))  # (n_left, 2), top to bottom in `rows` order
    right_xy = _column(pos, range(n_left, n_left + n_right))  # (n_right, 2), by id
    size_of, size_what = _parent_sizes(cols, edges)
    if ax is None:
        import matplotlib.pyplot as plt

        # No layout engine: it would cost an extra render of all edges on every saved frame.
        ax = plt.figure(figsize=(7.5, 6.5)).add_axes(AXES_RECT)
    segments = np.stack([left_xy[edges.slot], right_xy[edges.col]], axis=1)  # (E', 2, 2)
    rgba, widths = edges.style(0, opts.max_width)
    lines = LineCollection(segments, colors=rgba, linewidths=widths, zorder=1, capstyle="round")
    ax.add_collection(lines)
    child_size = float(np.clip(4000.0 / max(n_left, 1), 2, 80))
    nx.draw_networkx_nodes(nxg, dict(zip(range(n_left), left_xy)), nodelist=list(range(n_left)),
                           node_size=child_size, node_color="0.35", linewidths=0, ax=ax)
    right = list(range(n_left, n_left + n_right))
    parents = nx.draw_networkx_nodes(nxg, dict(zip(right, right_xy)), nodelist=right, node_size=size_of(0),
                                     node_color=cols.palette, edgecolors="0.15",
                                     linewidths=0.8 if n_right <= _MAX_LABELS else 0.2, ax=ax)
    parents.set_zorder(3)
    child_labels = _draw_labels(ax, left_xy, right_xy, [row_names[r] for r in rows],
                                None if row_weight is None else row_weight[rows], cols)
    head_lines = _draw_headers(ax, n_left, len(row_names), kind, cols, n_src,
                               opts.weights_label if has_weights else None, child_labels)
    _draw_legend(ax, deg, opts.max_width, cols.kind, kind, size_what)
    return ax, lines, parents, size_of, head_lines


def _parent_sizes(cols, edges):
    """Parent marker areas (points^2) of frame ``t``, from 1/10 to all of the room a parent has in its column,
    and what they show."""
    big = float(np.clip((300.0 / cols.n) ** 2, 16.0, 600.0))
    if cols.strength is None:
        mass = np.stack([np.bincount(edges.col, weights=wt, minlength=cols.n) for wt in edges.w])  # (T, n)
        scale = mass.max() or 1.0
        return (lambda t: big * (0.1 + 0.9 * mass[t] / scale)), "the coupling it receives"
    scale = cols.strength.max() or 1.0
    return (lambda t: big * (0.1 + 0.9 * cols.strength / scale)), "parent strength"


def _draw_labels(ax, left_xy, right_xy, names, weights, cols):
    """Text labels of both columns where they fit, and the axes limits; returns whether children are labelled."""
    # Data coordinates: columns at x = -1 and x = 1 (networkx); room for labels on either side.
    x_left, x_right = left_xy[0, 0], right_xy[0, 0]
    span = x_right - x_left
    dx = 0.04 * span
    child_labels = len(left_xy) <= _MAX_LABELS
    parent_text = cols.n <= _MAX_LABELS
    if parent_text:
        for j, (x, y) in enumerate(right_xy):
            text = cols.labels[j] if cols.strength is None else f"{cols.labels[j]}  ({_fmt(cols.strength[j])})"
            ax.text(x + 2 * dx, y, text, va="center", ha="left", fontsize="small")
    if child_labels:
        for k, (x, y) in enumerate(left_xy):
            name = names[k] if weights is None else f"{names[k]} ({_fmt(weights[k])})"
            ax.text(x - dx, y, name, va="center", ha="right", fontsize="x-small")
    top = max(left_xy[:, 1].max(), right_xy[:, 1].max())
    ax.set_xlim(x_left - (0.3 if child_labels else 0.05) * span, x_right + (0.3 if parent_text else 0.05) * span)
    ax.set_ylim(-top - 0.03, top + 0.03)
    ax.set_axis_off()
    return child_labels


def _draw_headers(ax, n_left, n_rows, kind, cols, n_src, weights_label, child_labels):
    """Column headers in axes coordinates, left- and right-aligned, so they never leave the figure; returns
    their number of lines."""
    head = {"child": "children", "type": "capsule types", "position": "positions", "group": "groups"}[kind]
    left_head = f"{n_left} {head}"
    if n_left < n_rows:
        by = f"largest {weights_label}" if weights_label is not None else "most decided"
        left_head = f"top {n_left} of {n_rows} {head}, by {by}"
    elif weights_label is not None and child_labels:
        left_head += f" ({weights_label})"
    if kind != "child":
        left_head += f"\n(of {n_src} children)"
    right_head = f"{cols.n_dst} parents" if cols.kind == "parent" else \
        f"{cols.n} parent types\n(of {cols.n_dst} parents)"
    ax.text(0.0, 1.01, left_head, transform=ax.transAxes, ha="left", va="bottom", fontweight="bold",
            fontsize="small")
    ax.text(1.0, 1.01, right_head, transform=ax.transAxes, ha="right", va="bottom", fontweight="bold",
            fontsize="small")
    return 2 if "\n" in left_head + right_head else 1


def _draw_legend(ax, deg, max_width, col_kind, kind, size_what):
    """The scale, stated with sample lines at the uniform coupling, halfway and 1."""
    from matplotlib.lines import Line2D

    u_all = 1.0 / deg[deg > 0]
    if len(u_all) and np.allclose(u_all, u_all[0]):
        uniform_text = f"uniform 1/{int(round(1 / u_all[0]))}"
        u0 = float(u_all[0])
    else:
        uniform_text, u0 = "uniform 1/#parents", 0.0
    handles = []
    mid = f"{0.5 * (1 + u0):.2g}" if u0 else "halfway"
    for c, text in ((u0, uniform_text), (0.5 * (1 + u0), mid), (1.0, "1 (decided)")):
        wd, al = edge_scale(c, u0, max_width)
        handles.append(Line2D([], [], color="0.2", alpha=float(al), linewidth=float(wd), label=text))
    what = "coupling" if col_kind == "parent" else "coupling to a parent type"
    if kind != "child":
        what = f"mean {what} of a group's children"
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.005), ncols=3, fontsize="x-small",
              frameon=False, title=f"edge width and opacity: {what}, one fixed scale for every picture\n"
              f"parent size ∝ {size_what}", title_fontsize="x-small", handlelength=2.5)


def _fit_into_figure(ax, titles, pad, margin=3.0):
    """Widen the x limits until the labels (data coordinates) lie inside the figure; return a title
    font size at which the longest of ``titles`` fits its width."""
    fig = ax.figure
    renderer = fig._get_renderer()
    fig_w = fig.bbox.width
    labels = [t for t in ax.texts if t.get_transform() is ax.transData]
    for _ in range(5):
        if not labels:
            break
        boxes = [t.get_window_extent(renderer) for t in labels]
        left = max(0.0, margin - min(b.x0 for b in boxes))
        right = max(0.0, max(b.x1 for b in boxes) - (fig_w - margin))
        if left == 0 and right == 0:
            break
        x_min, x_max = ax.get_xlim()
        per_px = (x_max - x_min) / ax.bbox.width
        ax.set_xlim(x_min - 1.15 * left * per_px, x_max + 1.15 * right * per_px)
    longest = max(titles, key=len)
    for size in (12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0):
        probe = ax.set_title(longest, pad=pad, fontsize=size)
        if probe.get_window_extent(renderer).width <= fig_w - 2 * margin:
            break
    return size


def _fmt(v):
    """A strength or weight in few characters: 0.93, 0.0071."""
    return f"{v:.2f}" if v >= 0.01 or v == 0 else f"{v:.2g}"


def _column(pos, nodes):
    """Positions of ``nodes`` as one column, first node at the top (whatever order networkx used)."""
    xy = np.array([pos[k] for k in nodes], dtype=float).reshape(-1, 2)
    xy[:, 1] = np.sort(xy[:, 1])[::-1]
    return xy
