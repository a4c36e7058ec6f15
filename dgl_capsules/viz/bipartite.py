"""Animated bipartite drawing of a capsule layer whose edges follow the couplings."""
from numbers import Integral

import numpy as np
import torch

from ._trace import check_sample, check_trace, n_samples, pick

__all__ = ["animate_bipartite", "edge_scale"]

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


def animate_bipartite(
    g,
    trace,
    sample=0,
    parent_strength=None,
    top_k=None,
    group_by=None,
    child_types=None,
    parent_labels=None,
    sort_children=True,
    ax=None,
    interval=800,
    max_width=3.0,
    title="Routing",
    child_weights=None,
    weights_label="weight",
    group_parents=None,
    parent_types=None,
    frame_labels=None,
):
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

    Large layers stay readable with ``top_k`` (the children that carry most,
    by ``child_weights`` such as vote lengths or activations, or without
    weights the most decided ones: the largest :math:`\max_j c_{ij}` at the
    last frame), ``group_by`` (one node per capsule type or grid position)
    and ``group_parents="type"`` (one node per parent type of a convolutional
    layer). A drawn edge between groups carries the mean, over the children
    of the row that reach the parent group, of their summed coupling to the
    group's parents; its uniform level is computed the same way, so the scale
    stays absolute. The header says how the children were chosen.

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
    parent_labels : list of str, optional
        Names of the parents (e.g. class names); parent ids by default. With
        ``group_parents="type"``, names of the parent types.
    sort_children : bool
        Order the left column by each row's final favourite parent, so the
        bundles of a converged routing do not cross; otherwise by id.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new pyplot figure by default. Never shown or closed
        here.
    interval : int
        Milliseconds between frames when played.
    max_width : float
        Line width in points of an edge with coupling 1.
    title : str
        Title; ``": iteration t / T"`` (or the frame's label) is appended on
        each frame.
    child_weights : torch.Tensor or array-like, optional
        ``(N_src,)`` or ``(N_src, B, ...)`` non-negative amounts the children
        carry (vote lengths, activations); ``top_k`` keeps the largest.
    weights_label : str
        What ``child_weights`` are, for the header ("vote length").
    group_parents : {"type"}, optional
        One right-hand node per parent type of a convolutional layer: the
        coupling a child gives a type is its summed coupling to the parents of
        that type.
    parent_types : int, optional
        ``C``, the parent types per grid position (parent id
        ``(y' * W_o + x') * C + c`` has type ``c``), for ``group_parents`` on
        a graph whose edges do not carry ``"parent_type"``; with many parents
        it also colours the parents by type.
    frame_labels : list of str, optional
        One label per frame for the title (e.g. ``"epoch 3"``); by default
        ``"iteration t / T"``.

    Returns
    -------
    matplotlib.animation.FuncAnimation
        One frame per recorded iteration.

    Raises
    ------
    ValueError
        If the trace is missing, empty or not recorded on ``g``; if
        ``sample``, ``top_k``, ``group_by``, ``child_types``,
        ``parent_strength``, ``child_weights``, ``group_parents``, ``parent_types``,
        ``parent_labels`` or ``frame_labels`` do not fit the graph and trace.

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
    import matplotlib as mpl
    import networkx as nx
    from matplotlib.animation import FuncAnimation
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

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

    # Right column: parents, or parent types.
    col_of, col_names, col_kind, ptype = _cols(g, group_parents, parent_types)  # (N_dst,), names
    n_right = len(col_names)
    if parent_labels is None:
        parent_labels = col_names
    elif len(parent_labels) != n_right:
        what = "parent types" if col_kind == "type" else "parents"
        raise ValueError(f"parent_labels must name the {n_right} {what} (N_dst = {n_dst}); "
                         f"got {len(parent_labels)} labels")
    if col_kind == "type":
        strength = None if strength is None else np.bincount(col_of, weights=strength, minlength=n_right) \
            / np.maximum(np.bincount(col_of, minlength=n_right), 1)  # mean strength per type

    # Left column: children, or groups of children.
    row_of, row_names, kind = _rows(g, group_by, child_types)  # (N_src,), n_rows names
    n_rows = len(row_names)

    # Drawn edges (row, column): the mean over the row's children that reach the column of their
    # summed coupling to it, and of their summed uniform coupling (1 / #parents).
    key = row_of[src].astype(np.int64) * n_right + col_of[dst]  # (E,)
    pairs, inv = np.unique(key, return_inverse=True)
    inv = inv.reshape(-1)
    e_row, e_col = pairs // n_right, pairs % n_right  # (E',)
    if len(pairs) == len(key) and kind == "child":
        count = np.ones(len(pairs))
    else:
        child_pairs = np.unique(src.astype(np.int64) * n_right + col_of[dst])
        count = np.bincount(np.searchsorted(pairs, row_of[child_pairs // n_right] * n_right
                                            + child_pairs % n_right), minlength=len(pairs))
    w = np.stack([np.bincount(inv, weights=f, minlength=len(pairs)) for f in frames]) / count  # (T, E')
    u = np.bincount(inv, weights=1.0 / deg[src], minlength=len(pairs)) / count  # (E',)

    # Which rows to draw, and in which order.
    final = w[-1]
    order = np.lexsort((-final, e_row))  # by row, then strongest parent first
    first = np.ones(len(order), dtype=bool)
    first[1:] = e_row[order][1:] != e_row[order][:-1]
    rows = e_row[order][first]  # rows with at least one parent, ascending
    best = final[order][first]  # their largest final coupling
    favourite = e_col[order][first]  # the parent that holds it
    if weights is not None:
        row_weight = np.bincount(row_of, weights=weights, minlength=n_rows) \
            / np.maximum(np.bincount(row_of, minlength=n_rows), 1)  # mean weight of a row's children
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None; got {top_k!r}")
        rank_by = best if weights is None else row_weight[rows]
        keep = np.argsort(-rank_by, kind="stable")[:top_k]
        keep.sort()
        rows, best, favourite = rows[keep], best[keep], favourite[keep]
    if sort_children:
        rank = np.lexsort((rows, favourite))
        rows, favourite = rows[rank], favourite[rank]
    slot = np.full(n_rows, -1)
    slot[rows] = np.arange(len(rows))
    shown = slot[e_row] >= 0
    e_row, e_col, w, u = e_row[shown], e_col[shown], w[:, shown], u[shown]

    # networkx bipartite layout: left column top to bottom in `rows` order, right column by id.
    n_left = len(rows)
    nxg = nx.Graph()
    nxg.add_nodes_from(range(n_left + n_right))
    pos = nx.bipartite_layout(nxg, nodes=range(n_left), align="vertical")
    left_xy = _column(pos, range(n_left))  # (n_left, 2)
    right_xy = _column(pos, range(n_left, n_left + n_right))  # (n_right, 2)
    segments = np.stack([left_xy[slot[e_row]], right_xy[e_col]], axis=1)  # (E', 2, 2)

    if n_right <= 10:
        palette = mpl.colormaps["tab10"](np.arange(n_right))
    elif n_right <= 20:
        palette = mpl.colormaps["tab20"](np.arange(n_right))
    elif ptype is not None:
        n_pt = int(ptype.max()) + 1
        cmap = mpl.colormaps["tab10" if n_pt <= 10 else "tab20" if n_pt <= 20 else "turbo"]
        palette = cmap(ptype if n_pt <= 20 else ptype / max(n_pt - 1, 1))  # one colour per parent type
    else:
        palette = mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n_right))
    base = palette[e_col].copy()  # (E', 4)

    def edge_style(t):
        widths, alphas = edge_scale(w[t], u, max_width)
        rgba = base.copy()
        rgba[:, 3] = alphas
        return rgba, widths

    # Parent marker areas (points^2) from 1/10 to all of the room a parent has in its column.
    big = float(np.clip((300.0 / n_right) ** 2, 16.0, 600.0))
    if strength is None:
        mass = np.stack([np.bincount(e_col, weights=wt, minlength=n_right) for wt in w])  # (T, n_right)
        scale = mass.max() or 1.0
        size_of = lambda t: big * (0.1 + 0.9 * mass[t] / scale)  # noqa: E731
        size_what = "the coupling it receives"
    else:
        scale = strength.max() or 1.0
        size_of = lambda t: big * (0.1 + 0.9 * strength / scale)  # noqa: E731
        size_what = "parent strength"

    if ax is None:
        import matplotlib.pyplot as plt

        # No layout engine: it would cost an extra render of all edges on every saved frame.
        fig = plt.figure(figsize=(7.5, 6.5))
        ax = fig.add_axes(AXES_RECT)
    fig = ax.figure
    rgba, widths = edge_style(0)
    lines = LineCollection(segments, colors=rgba, linewidths=widths, zorder=1, capstyle="round")
    ax.add_collection(lines)
    left_pos = dict(zip(range(n_left), left_xy))
    right_pos = dict(zip(range(n_left, n_left + n_right), right_xy))
    child_size = float(np.clip(4000.0 / max(n_left, 1), 2, 80))
    nx.draw_networkx_nodes(nxg, left_pos, nodelist=list(left_pos), node_size=child_size,
                           node_color="0.35", linewidths=0, ax=ax)
    parents = nx.draw_networkx_nodes(nxg, right_pos, nodelist=list(right_pos), node_size=size_of(0),
                                     node_color=palette, edgecolors="0.15",
                                     linewidths=0.8 if n_right <= _MAX_LABELS else 0.2, ax=ax)
    parents.set_zorder(3)

    # Data coordinates: columns at x = -1 and x = 1 (networkx); room for labels on either side.
    x_left, x_right = left_xy[0, 0], right_xy[0, 0]
    span = x_right - x_left
    dx = 0.04 * span
    child_labels = n_left <= _MAX_LABELS
    parent_text = n_right <= _MAX_LABELS
    if parent_text:
        for j, (x, y) in enumerate(right_xy):
            text = parent_labels[j] if strength is None else f"{parent_labels[j]}  ({_fmt(strength[j])})"
            ax.text(x + 2 * dx, y, text, va="center", ha="left", fontsize="small")
    if child_labels:
        for k, (x, y) in enumerate(left_xy):
            name = row_names[rows[k]]
            if weights is not None:
                name = f"{name} ({_fmt(row_weight[rows[k]])})"
            ax.text(x - dx, y, name, va="center", ha="right", fontsize="x-small")
    top = max(left_xy[:, 1].max(), right_xy[:, 1].max())
    ax.set_xlim(x_left - (0.3 if child_labels else 0.05) * span, x_right + (0.3 if parent_text else 0.05) * span)
    ax.set_ylim(-top - 0.03, top + 0.03)
    ax.set_axis_off()

    # Headers in axes coordinates, left- and right-aligned, so they never leave the figure.
    head = {"child": "children", "type": "capsule types", "position": "positions", "group": "groups"}[kind]
    left_head = f"{n_left} {head}"
    if n_left < n_rows:
        by = f"largest {weights_label}" if weights is not None else "most decided"
        left_head = f"top {n_left} of {n_rows} {head}, by {by}"
    elif weights is not None and child_labels:
        left_head += f" ({weights_label})"
    if kind != "child":
        left_head += f"\n(of {n_src} children)"
    right_head = f"{n_dst} parents" if col_kind == "parent" else f"{n_right} parent types\n(of {n_dst} parents)"
    ax.text(0.0, 1.01, left_head, transform=ax.transAxes, ha="left", va="bottom", fontweight="bold",
            fontsize="small")
    ax.text(1.0, 1.01, right_head, transform=ax.transAxes, ha="right", va="bottom", fontweight="bold",
            fontsize="small")

    # The scale, stated with sample lines at the uniform coupling, halfway and 1.
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

    n_frames = len(w)
    head_lines = 2 if "\n" in left_head + right_head else 1
    frame_text = frame_labels or [f"iteration {t + 1} / {n_frames}" for t in range(n_frames)]
    title_size = _fit_into_figure(ax, [f"{title}: {f}" for f in frame_text], pad=6 + 12 * head_lines)

    def draw(t):
        rgba, widths = edge_style(t)
        lines.set_color(rgba)
        lines.set_linewidth(widths)
        parents.set_sizes(np.broadcast_to(size_of(t), (n_right,)))
        ax.set_title(f"{title}: {frame_text[t]}", pad=6 + 12 * head_lines, fontsize=title_size)
        return [lines, parents]

    draw(0)
    return FuncAnimation(fig, draw, frames=n_frames, interval=interval, repeat=True)


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


def _node_values(value, name, what, n, trace_shape, sample):
    """``(n,)`` or ``(n, *batch)`` non-negative values -> numpy ``(n,)`` for ``sample``, or None."""
    if value is None:
        return None
    t = torch.as_tensor(value).detach().cpu().double()
    n_trace = n_samples(trace_shape)
    n_here = n_samples(t.shape) if t.dim() else 0
    if t.dim() == 0 or t.shape[0] != n or n_here not in (1, n_trace):
        raise ValueError(
            f"{name} must have shape ({what},) = ({n},) or ({what}, *batch) with the "
            f"trace's batch dimensions {tuple(trace_shape[1:])}; got {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(
            f"{name} must be finite and non-negative (capsule lengths or activations; "
            "for Heinsen routing's logits pass torch.sigmoid(a_out))"
        )
    return pick(t, None if n_here == 1 else sample)


def _cols(g, group_parents, parent_types):
    """Column of every parent: ``(col_of (N_dst,), names, kind, parent type of every parent or None)``."""
    n_dst = g.num_dst_nodes()
    ids = np.arange(n_dst)
    types = None
    if parent_types is not None:
        if isinstance(parent_types, bool) or not isinstance(parent_types, Integral) or parent_types < 1 \
                or n_dst % parent_types:
            raise ValueError(
                f"parent_types must be a positive integer dividing N_dst = {n_dst}; got {parent_types!r}"
            )
        types = ids % int(parent_types)
    elif "parent_type" in g.edata:
        _, dst = g.edges()
        types = np.zeros(n_dst, dtype=np.int64)
        types[dst.cpu().numpy()] = g.edata["parent_type"].cpu().numpy()
    if group_parents is None:
        return ids, [str(j) for j in ids], "parent", types
    if group_parents != "type":
        raise ValueError(f"group_parents must be 'type' or None; got {group_parents!r}")
    if types is None:
        raise ValueError(
            "group_parents='type' needs the parent types per grid position: pass parent_types=C "
            "or use a graph whose edges carry 'parent_type'"
        )
    n_types = int(types.max()) + 1 if n_dst else 0
    return types, [f"type {c}" for c in range(n_types)], "type", None


def _rows(g, group_by, child_types):
    """Row of every child in the left column: ``(row_of (N_src,), names, kind)``."""
    n_src = g.num_src_nodes()
    ids = np.arange(n_src)
    if group_by is None:
        return ids, [str(i) for i in ids], "child"
    if isinstance(group_by, str):
        if group_by not in ("type", "position"):
            raise ValueError(f"group_by must be 'type', 'position', a (N_src,) tensor or None; got {group_by!r}")
        if child_types is not None:
            if isinstance(child_types, bool) or not isinstance(child_types, Integral) or child_types < 1 \
                    or n_src % child_types:
                raise ValueError(
                    f"child_types must be a positive integer dividing N_src = {n_src}; got {child_types!r}"
                )
            types = ids % child_types
            n_types = int(child_types)
        elif "child_type" in g.edata:
            src, _ = g.edges()
            types = np.zeros(n_src, dtype=np.int64)
            types[src.cpu().numpy()] = g.edata["child_type"].cpu().numpy()
            n_types = int(types.max()) + 1
        else:
            raise ValueError(
                f"group_by={group_by!r} needs the capsule types per grid position: pass child_types=A "
                "(32 for CapsNet's primary capsules) or use a graph from conv_capsule_graph"
            )
        if group_by == "type":
            return types, [f"type {a}" for a in range(n_types)], "type"
        n_pos = -(-n_src // n_types)
        return ids // n_types, [f"pos {p}" for p in range(n_pos)], "position"
    labels = torch.as_tensor(group_by)
    if labels.shape != (n_src,) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"group_by as a tensor must hold one integer label per child, shape (N_src,) = ({n_src},); "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    names, row_of = np.unique(labels.cpu().numpy(), return_inverse=True)
    return row_of.reshape(-1), [f"group {n}" for n in names], "group"
