"""Animated bipartite drawing of a capsule layer whose edges follow the couplings."""
from numbers import Integral

import numpy as np
import torch

from ._trace import check_sample, check_trace, n_samples, pick

__all__ = ["animate_bipartite"]

_MAX_LABELS = 40  # more nodes than this in a column are drawn without text labels


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
):
    r"""Animate a capsule layer as a bipartite graph whose edges follow the couplings.

    Children (or groups of children) form the left column and parents the
    right one (:func:`networkx.bipartite_layout`). Every edge :math:`i \to j`
    is drawn with a width and an opacity that grow with :math:`c_{ij}` and in
    the colour of its parent, so each frame shows which parents the children
    have chosen after that routing iteration. All edges are one
    :class:`~matplotlib.collections.LineCollection` created once; a frame
    only updates its widths and colours, so a 1152 → 10 layer (11520 edges)
    animates in seconds.

    Parent node sizes follow ``parent_strength`` (capsule lengths or
    activations) when it is given, and otherwise the coupling mass
    :math:`\sum_i c_{ij}` each parent receives in the frame.

    Large layers stay readable with ``top_k`` (only the children whose final
    coupling is most decided: the largest :math:`\max_j c_{ij}` at the last
    iteration) or ``group_by`` (one node per capsule type or grid position,
    whose edge to parent *j* carries the mean coupling of its children to
    *j*, so each group's edges still sum to 1 on a complete graph).

    Parameters
    ----------
    g : dgl.DGLGraph
        The capsule graph the trace was recorded on.
    trace : list of torch.Tensor or RoutingResult
        Couplings of every iteration, each ``(|E|,)`` or ``(|E|, B, ...)``.
    sample : int or None
        Which sample of the flattened batch dimensions to draw; ``None``
        averages the couplings (and ``parent_strength``) over all samples.
    parent_strength : torch.Tensor or array-like, optional
        ``(N_dst,)`` or ``(N_dst, B, ...)`` non-negative strengths of the
        parents, e.g. the lengths of dynamic routing's poses or EM
        activations (for Heinsen logits pass ``torch.sigmoid(a_out)``).
    top_k : int, optional
        Draw only the ``top_k`` most decided children (or groups).
    group_by : {"type", "position"} or torch.Tensor, optional
        Aggregate children by capsule type or grid position, or by the integer
        labels of a ``(N_src,)`` tensor. Child id ``(y * W + x) * A + a``
        has type ``a`` and position ``y * W + x``.
    child_types : int, optional
        ``A``, the capsule types per grid position, for ``group_by`` on a
        graph without a ``"child_type"`` edge feature (e.g. 32 for CapsNet's
        1152 primary capsules on :func:`~dgl_capsules.capsule_graph`).
    parent_labels : list of str, optional
        Names of the parents (e.g. class names); parent ids by default.
    sort_children : bool
        Order the left column by each row's final favourite parent, so the
        bundles of a converged routing do not cross; otherwise by id.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new pyplot figure by default. Never shown or closed
        here.
    interval : int
        Milliseconds between frames when played.
    max_width : float
        Line width in points of the edge with the largest coupling in the
        trace (width and opacity are proportional to the coupling divided by
        that largest coupling, usually close to 1).
    title : str
        Title; ``": iteration t / T"`` is appended on each frame.

    Returns
    -------
    matplotlib.animation.FuncAnimation
        One frame per recorded iteration.

    Raises
    ------
    ValueError
        If the trace is missing, empty or not recorded on ``g``; if
        ``sample``, ``top_k``, ``group_by``, ``child_types``,
        ``parent_strength`` or ``parent_labels`` do not fit the graph and
        trace.

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

    trace = check_trace(g, trace, "animate_bipartite")
    sample = check_sample(sample, trace[0].shape)
    n_src, n_dst = g.num_src_nodes(), g.num_dst_nodes()
    strength = _parent_strength(parent_strength, n_dst, trace[0].shape, sample)  # (N_dst,) or None
    if parent_labels is None:
        parent_labels = [str(j) for j in range(n_dst)]
    elif len(parent_labels) != n_dst:
        raise ValueError(
            f"parent_labels must name the N_dst = {n_dst} parents; got {len(parent_labels)} labels"
        )
    src, dst = (t.cpu().numpy() for t in g.edges())
    frames = np.stack([pick(c, sample) for c in trace])  # (T, E)

    # Rows of the left column: children, or groups of children.
    row_of, row_names, kind = _rows(g, group_by, child_types)  # (N_src,), n_rows names
    if kind == "child":
        e_row, e_dst, w = src, dst, frames  # (E,), (E,), (T, E)
    else:
        has_parents = g.out_degrees().cpu().numpy() > 0
        size = np.bincount(row_of[has_parents], minlength=len(row_names))  # children per row
        key = row_of[src].astype(np.int64) * n_dst + dst
        pairs, inv = np.unique(key, return_inverse=True)
        e_row, e_dst = pairs // n_dst, pairs % n_dst  # (E',)
        w = np.stack([np.bincount(inv, weights=f, minlength=len(pairs)) for f in frames])
        w = w / size[e_row]  # (T, E') mean coupling of a row's children to each parent

    # Which rows to draw, ranked by how decided their final coupling is.
    final = w[-1]
    order = np.lexsort((-final, e_row))  # by row, then strongest parent first
    first = np.ones(len(order), dtype=bool)
    first[1:] = e_row[order][1:] != e_row[order][:-1]
    rows = e_row[order][first]  # rows with at least one parent, ascending
    best = final[order][first]  # their largest final coupling
    favourite = e_dst[order][first]  # the parent that holds it
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None; got {top_k!r}")
        keep = np.argsort(-best, kind="stable")[:top_k]
        keep.sort()
        rows, best, favourite = rows[keep], best[keep], favourite[keep]
    if sort_children:
        rank = np.lexsort((rows, favourite))
        rows, favourite = rows[rank], favourite[rank]
    slot = np.full(len(row_names), -1)
    slot[rows] = np.arange(len(rows))
    shown = slot[e_row] >= 0
    e_row, e_dst, w = e_row[shown], e_dst[shown], w[:, shown]

    # networkx bipartite layout: left column top to bottom in `rows` order, parents by id.
    n_left = len(rows)
    nxg = nx.Graph()
    nxg.add_nodes_from(range(n_left + n_dst))
    pos = nx.bipartite_layout(nxg, nodes=range(n_left), align="vertical")
    left_xy = _column(pos, range(n_left))  # (n_left, 2)
    right_xy = _column(pos, range(n_left, n_left + n_dst))  # (N_dst, 2)
    segments = np.stack([left_xy[slot[e_row]], right_xy[e_dst]], axis=1)  # (E', 2, 2)

    if n_dst <= 10:
        palette = mpl.colormaps["tab10"](np.arange(n_dst))
    elif n_dst <= 20:
        palette = mpl.colormaps["tab20"](np.arange(n_dst))
    else:
        palette = mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n_dst))
    base = palette[e_dst].copy()  # (E', 4)
    # Faint floor so that the graph's connectivity stays visible; thinner with more edges.
    floor = float(np.clip(2.0 / max(len(e_row), 1) ** 0.5, 0.01, 0.15))

    # Scaled by the largest coupling of the whole trace (the same in every frame), so that the
    # small mean couplings of groups on a convolutional layer stay visible.
    cmax = float(np.clip(w.max(), 1e-12, 1.0)) if w.size else 1.0

    def edge_style(t):
        c = np.clip(w[t] / cmax, 0.0, 1.0)
        rgba = base.copy()
        rgba[:, 3] = floor + (1.0 - floor) * c
        return rgba, 0.2 + max_width * c

    # Parent marker areas (points^2) from 1/10 to all of the room a parent has in its column.
    big = float(np.clip((300.0 / n_dst) ** 2, 16.0, 600.0))
    if strength is None:
        mass = np.stack([np.bincount(e_dst, weights=wt, minlength=n_dst) for wt in w])  # (T, N_dst)
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
        ax = fig.add_axes((0.02, 0.05, 0.96, 0.88))
    fig = ax.figure
    rgba, widths = edge_style(0)
    lines = LineCollection(segments, colors=rgba, linewidths=widths, zorder=1, capstyle="round")
    ax.add_collection(lines)
    left_pos = dict(zip(range(n_left), left_xy))
    right_pos = dict(zip(range(n_left, n_left + n_dst), right_xy))
    child_size = float(np.clip(4000.0 / max(n_left, 1), 2, 80))
    nx.draw_networkx_nodes(nxg, left_pos, nodelist=list(left_pos), node_size=child_size,
                           node_color="0.35", linewidths=0, ax=ax)
    parents = nx.draw_networkx_nodes(nxg, right_pos, nodelist=list(right_pos), node_size=size_of(0),
                                     node_color=palette, edgecolors="0.15",
                                     linewidths=0.8 if n_dst <= _MAX_LABELS else 0.2, ax=ax)
    parents.set_zorder(3)

    dx = 0.04 * (right_xy[0, 0] - left_xy[0, 0])
    if n_dst <= _MAX_LABELS:
        for j, (x, y) in enumerate(right_xy):
            text = parent_labels[j] if strength is None else f"{parent_labels[j]}  ({strength[j]:.2f})"
            ax.text(x + 2 * dx, y, text, va="center", ha="left", fontsize="small")
    if n_left <= _MAX_LABELS:
        for k, (x, y) in enumerate(left_xy):
            ax.text(x - dx, y, row_names[rows[k]], va="center", ha="right", fontsize="x-small")
    top = max(left_xy[:, 1].max(), right_xy[:, 1].max())
    head = {"child": "children", "type": "capsule types", "position": "positions", "group": "groups"}[kind]
    left_head = f"{n_left} {head}" if kind != "child" else f"{n_left} children"
    if top_k is not None and n_left < len(row_names):
        left_head = f"top {n_left} of {len(row_names)} {head}"
    if kind != "child":
        left_head += f"\n(of {n_src} children)"
    ax.text(left_xy[0, 0], top + 0.06, left_head, ha="center", va="bottom", fontweight="bold")
    ax.text(right_xy[0, 0], top + 0.06, f"{n_dst} parents", ha="center", va="bottom", fontweight="bold")
    ax.set_xlim(left_xy[0, 0] - (0.35 if n_left <= _MAX_LABELS else 0.1), right_xy[0, 0] + 0.4)
    ax.set_ylim(-top - 0.03, top + 0.16)
    ax.set_axis_off()
    widest = "" if cmax > 0.995 else f", widest {cmax:.2g}"
    ax.text(0.5, 0.0, f"edge width and opacity ∝ coupling $c_{{ij}}$ (colour: its parent{widest}); "
            f"parent size ∝ {size_what}", transform=ax.transAxes, ha="center", va="top",
            fontsize="small", color="0.3")

    def draw(t):
        rgba, widths = edge_style(t)
        lines.set_color(rgba)
        lines.set_linewidth(widths)
        parents.set_sizes(np.broadcast_to(size_of(t), (n_dst,)))
        ax.set_title(f"{title}: iteration {t + 1} / {len(w)}")
        return [lines, parents]

    draw(0)
    return FuncAnimation(fig, draw, frames=len(w), interval=interval, repeat=True)


def _column(pos, nodes):
    """Positions of ``nodes`` as one column, first node at the top (whatever order networkx used)."""
    xy = np.array([pos[k] for k in nodes], dtype=float).reshape(-1, 2)
    xy[:, 1] = np.sort(xy[:, 1])[::-1]
    return xy


def _parent_strength(value, n_dst, trace_shape, sample):
    """``(N_dst,)`` or ``(N_dst, *batch)`` strengths -> numpy ``(N_dst,)`` for ``sample``, or None."""
    if value is None:
        return None
    t = torch.as_tensor(value).detach().cpu().double()
    n_trace = n_samples(trace_shape)
    n_here = n_samples(t.shape) if t.dim() else 0
    if t.dim() == 0 or t.shape[0] != n_dst or n_here not in (1, n_trace):
        raise ValueError(
            f"parent_strength must have shape (N_dst,) = ({n_dst},) or (N_dst, *batch) with the "
            f"trace's batch dimensions {tuple(trace_shape[1:])}; got {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(
            "parent_strength must be finite and non-negative (capsule lengths or activations; "
            "for Heinsen routing's logits pass torch.sigmoid(a_out))"
        )
    return pick(t, None if n_here == 1 else sample)


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
