"""Tests for dgl_capsules.viz: entropy, histogram and bipartite animations, saving, the report."""
import gc
import math

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, whatever the environment says

import dgl  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from PIL import Image  # noqa: E402

import dgl_capsules as dc  # noqa: E402
from dgl_capsules import viz  # noqa: E402
from dgl_capsules.data import planted_clusters  # noqa: E402

from helpers import permuted  # noqa: E402

# Animations built only to inspect their artists are never rendered; matplotlib warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Animation was deleted without rendering:UserWarning")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")
    gc.collect()  # collect unrendered animations here, where their warning is filtered


def uniform(g, batch=()):
    """``1 / #parents`` on every edge, ``(|E|, *batch)``."""
    src, _ = g.edges()
    c = 1.0 / g.out_degrees()[src].double()  # (E,)
    return c.view((-1,) + (1,) * len(batch)).expand((-1,) + tuple(batch)).clone()


def small_trace(n_iters=3, batch=2, n_in=12, n_out=3):
    p = planted_clusters(n_in=n_in, n_out=n_out, dim=8, batch=batch)
    r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=n_iters, return_trace=True)
    return p.graph, r


GRAPHS = {
    "complete": lambda: dc.capsule_graph(7, 5),
    # 7x7 grid, kernel 3, stride 2: children have 1, 2 or 4 parent positions (x 3 types).
    "conv": lambda: dc.conv_capsule_graph(in_hw=(7, 7), kernel=3, stride=2, in_types=2, out_types=3),
    "conv_permuted": lambda: permuted(dc.conv_capsule_graph((7, 7), 3, 2, 2, 3))[0],
}


# --------------------------------------------------------------------------- entropy


def test_coupling_entropy_is_the_functional_one():
    assert viz.coupling_entropy is dc.functional.coupling_entropy


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_uniform_coupling_entropy_is_log_parents(name):
    g = GRAPHS[name]()
    c = uniform(g, batch=(3,))  # (E, 3)
    h = viz.coupling_entropy(g, c)  # (N_src, 3)
    expected = g.out_degrees().double().log()
    if name.startswith("conv"):
        assert len(expected.unique()) > 1  # the check covers different numbers of parents
    torch.testing.assert_close(h, expected.unsqueeze(1).expand(-1, 3))

    mean, std = viz.entropy_curve(g, [c])
    assert mean[0] == pytest.approx(expected.mean().item())
    assert std[0] == pytest.approx(expected.std(unbiased=False).item())


def test_plot_entropy_marks_the_uniform_level_and_plots_the_curve():
    g, r = small_trace(n_iters=4)
    ax = viz.plot_entropy(g, r.trace, label="dynamic")
    mean, _ = viz.entropy_curve(g, r.trace)
    levels = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(levels) == 1 and levels[0].get_ydata()[0] == pytest.approx(math.log(3))
    (curve,) = [bars for bars in ax.containers if bars.get_label() == "dynamic"]
    np.testing.assert_allclose(curve.lines[0].get_ydata(), mean)
    np.testing.assert_array_equal(curve.lines[0].get_xdata(), [1, 2, 3, 4])
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()

    # A second curve on the same Axes: one more errorbar, still one uniform line.
    same = viz.plot_entropy(g, r.trace[:2], ax=ax, label="two iterations")
    assert same is ax
    assert len([line for line in ax.get_lines() if line.get_linestyle() == "--"]) == 1
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"dynamic", "two iterations"}


def test_entropy_curve_of_one_sample_and_of_all():
    g, r = small_trace(n_iters=3, batch=4)
    for it, c in enumerate(r.trace):
        h = viz.coupling_entropy(g, c)  # (N_src, 4)
        mean, _ = viz.entropy_curve(g, r.trace, sample=2)
        assert mean[it] == pytest.approx(h[:, 2].mean().item())
        mean, std = viz.entropy_curve(g, r.trace)
        assert mean[it] == pytest.approx(h.mean().item())
        assert std[it] == pytest.approx(h.double().std(unbiased=False).item())


def _route(name, p):
    n_src = p.graph.num_src_nodes()
    batch = p.votes.shape[1]
    if name == "dynamic":
        return dc.routing.dynamic_routing(p.graph, p.votes, n_iters=4, return_trace=True)
    if name == "em":
        a_in = torch.full((n_src, batch), 0.9)
        return dc.routing.em_routing(p.graph, p.votes, a_in, 1.0, 1.0, n_iters=4, return_trace=True)
    votes = p.votes.view(p.votes.shape[0], batch, 4, 4)  # (E, B, C, H) pose matrices
    a_in = torch.zeros(n_src, batch)  # logits
    return dc.routing.heinsen_routing(p.graph, votes, a_in, 1.0, 1.0, n_iters=4, return_trace=True)


@pytest.mark.parametrize("name", ["dynamic", "em", "heinsen"])
def test_entropy_falls_on_planted_clusters(name):
    p = planted_clusters(n_in=48, n_out=4, dim=16, batch=3, noise=0.1, seed=0)
    r = _route(name, p)
    assert len(r.trace) == 4
    mean, _ = viz.entropy_curve(p.graph, r.trace)
    assert mean[0] == pytest.approx(math.log(4))  # every algorithm starts from the uniform coupling
    assert np.all(np.diff(mean) < 0), mean
    assert mean[-1] < 0.5 * math.log(4), mean
    ax = viz.plot_entropy(p.graph, r, label=name)  # a RoutingResult works as well as its trace
    assert ax.get_legend() is not None


# --------------------------------------------------------------------------- animations


@pytest.mark.parametrize("n_iters", [2, 4])
def test_animations_have_one_frame_per_iteration(n_iters):
    g, r = small_trace(n_iters=n_iters)
    for ani in (viz.animate_histogram(r.trace, g=g), viz.animate_bipartite(g, r.trace)):
        assert isinstance(ani, FuncAnimation)
        assert len(list(ani.new_frame_seq())) == n_iters


@pytest.mark.parametrize("n_iters", [2, 3])
def test_saved_gif_decodes_with_one_frame_per_iteration(tmp_path, n_iters):
    g, r = small_trace(n_iters=n_iters)
    for name, ani in [("hist", viz.animate_histogram(r.trace, g=g, bins=10)),
                      ("graph", viz.animate_bipartite(g, r.trace))]:
        path = viz.save_animation(ani, tmp_path / f"{name}.gif", dpi=30)
        assert path == str(tmp_path / f"{name}.gif")
        assert "draw_idle" not in vars(ani._fig.canvas)  # the canvas is left as it was
        with Image.open(path) as im:
            assert im.format == "GIF"
            assert im.n_frames == n_iters
            for k in range(n_iters):
                im.seek(k)
                im.convert("RGB")  # every frame decodes


def test_saved_html_embeds_every_frame(tmp_path):
    g, r = small_trace(n_iters=3)
    path = viz.save_animation(viz.animate_histogram(r.trace), tmp_path / "hist.html", dpi=30)
    text = open(path).read()
    assert "<script" in text
    assert text.count("data:image/png;base64") == 3


def test_histogram_keeps_bins_and_axes_fixed(tmp_path):
    g, r = small_trace(n_iters=3)
    ax = plt.figure().add_subplot()
    ani = viz.animate_histogram(r.trace, g=g, bins=20, ax=ax)
    ylim, n_bars = ax.get_ylim(), len(ax.patches)
    assert n_bars == 20 and ax.get_xlim() == (0.0, 1.0)
    assert ax.get_title().endswith("iteration 1 / 3")
    viz.save_animation(ani, tmp_path / "h.gif", dpi=20)  # leaves the last frame drawn
    assert ax.get_title().endswith("iteration 3 / 3")
    assert len(ax.patches) == n_bars and ax.get_ylim() == ylim and ax.get_xlim() == (0.0, 1.0)
    heights = sum(bar.get_height() for bar in ax.patches)
    assert heights == g.num_edges()  # one sample's couplings, all in [0, 1]


def test_bipartite_1152_to_10_draws_all_edges_as_one_artist():
    p = planted_clusters(n_in=1152, n_out=10, dim=8, batch=2)
    r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=2, return_trace=True)
    ax = plt.figure(figsize=(4, 3)).add_subplot()
    viz.animate_bipartite(p.graph, r.trace, sample=1, ax=ax)
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines) == 1
    assert len(lines[0].get_segments()) == 11520
    assert len(ax.collections) == 3  # the edges, the children, the parents


def test_bipartite_updates_the_same_edges_to_follow_the_coupling(tmp_path):
    g, r = small_trace(n_iters=3, batch=2)
    ax = plt.figure(figsize=(3, 3)).add_subplot()
    ani = viz.animate_bipartite(g, r.trace, sample=1, sort_children=False, ax=ax)
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    first = np.array(lines.get_linewidths())
    assert np.allclose(first, first[0])  # the first iteration's coupling is uniform
    viz.save_animation(ani, tmp_path / "b.gif", dpi=20)
    assert [c for c in ax.collections if isinstance(c, LineCollection)] == [lines]
    widths = np.array(lines.get_linewidths())
    last = r.trace[-1][:, 1].numpy()  # edges are drawn in the graph's edge order
    assert not np.allclose(widths, first)
    assert np.all(np.diff(widths[np.argsort(last, kind="stable")]) >= 0)
    alphas = lines.get_colors()[:, 3]
    assert np.all(np.diff(alphas[np.argsort(last, kind="stable")]) >= 0)


def test_bipartite_top_k_and_groups_keep_large_layers_small():
    p = planted_clusters(n_in=1152, n_out=10, dim=8)
    r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=3, return_trace=True)

    def edges(trace=r.trace, **kw):
        ax = plt.figure(figsize=(3, 3)).add_subplot()
        viz.animate_bipartite(p.graph, trace, ax=ax, **kw)
        (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        return lines

    assert len(edges(top_k=30).get_segments()) == 300
    assert len(edges(group_by="type", child_types=32).get_segments()) == 32 * 10
    assert len(edges(group_by="position", child_types=32).get_segments()) == 36 * 10
    # One group of all children: its edges carry the mean coupling to each parent. The trace
    # is reversed so that the first frame, drawn at creation, is the last iteration.
    one = edges(trace=r.trace[::-1], group_by=torch.zeros(1152, dtype=torch.long), max_width=2.0)
    assert len(one.get_segments()) == 10
    _, dst = p.graph.edges()
    mean = torch.zeros(10).index_add(0, dst, r.trace[-1][:, 0]) / 1152  # (N_dst,)
    assert mean.sum().item() == pytest.approx(1.0)
    # The absolute scale: the same function of the (mean) coupling as for single edges.
    expected, _ = viz.edge_scale(mean.double().numpy(), np.full(10, 0.1), max_width=2.0)
    np.testing.assert_allclose(np.array(one.get_linewidths()), expected, rtol=1e-5)


def test_bipartite_groups_by_type_on_a_conv_graph():
    g = dc.conv_capsule_graph(in_hw=(6, 6), kernel=3, stride=1, in_types=4, out_types=2)
    c = uniform(g).float()
    ax = plt.figure(figsize=(3, 3)).add_subplot()
    viz.animate_bipartite(g, [c, c], group_by="type", ax=ax)  # types from the edge features
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines.get_segments()) == 4 * g.num_dst_nodes()


def test_bipartite_parent_size_follows_parent_strength():
    g, r = small_trace(n_iters=2, batch=2, n_in=12, n_out=4)
    strength = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.9, 0.4], [0.3, 0.3]])  # (N_dst, B)
    ax = plt.figure(figsize=(3, 3)).add_subplot()
    viz.animate_bipartite(g, r.trace, sample=0, parent_strength=strength, ax=ax)
    (parents,) = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets()) == 4]
    sizes = parents.get_sizes()
    assert list(np.argsort(sizes)) == list(np.argsort(strength[:, 0].numpy()))
    labels = {t.get_text() for t in ax.texts}
    assert "2  (0.90)" in labels


def test_library_never_shows_nor_closes_its_figures(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("library code called plt.show or plt.close")

    monkeypatch.setattr(plt, "show", fail)
    monkeypatch.setattr(plt, "close", fail)
    g, r = small_trace(n_iters=2)
    before = set(plt.get_fignums())
    ax = viz.plot_entropy(g, r.trace)
    hist = viz.animate_histogram(r.trace)
    graph = viz.animate_bipartite(g, r.trace)
    assert isinstance(hist, FuncAnimation) and isinstance(graph, FuncAnimation)
    assert ax.figure.number in plt.get_fignums()
    assert len(set(plt.get_fignums()) - before) == 3
    monkeypatch.undo()


# --------------------------------------------------------------------------- report


def test_routing_report_writes_three_pictures(tmp_path):
    g, r = small_trace(n_iters=3, batch=2, n_in=12, n_out=4)
    strength = r.poses.norm(dim=-1)  # (N_dst, B)
    before = plt.get_fignums()
    out = tmp_path / "new" / "dir"
    paths = dc.viz.routing_report(g, r, out, parent_strength=strength, sample=1, dpi=30)
    assert set(paths) == {"entropy", "histogram", "bipartite"}
    assert paths["entropy"].endswith("entropy.png")
    assert paths["histogram"].endswith("histogram.gif") and paths["bipartite"].endswith("bipartite.gif")
    with Image.open(paths["entropy"]) as im:
        assert im.format == "PNG"
    for key in ("histogram", "bipartite"):
        with Image.open(paths[key]) as im:
            assert im.format == "GIF" and im.n_frames == 3
    assert plt.get_fignums() == before  # no pyplot figure left behind


# --------------------------------------------------------------------------- bad input


def test_missing_trace_says_how_to_record_it(tmp_path):
    p = planted_clusters(n_in=12, n_out=3)
    r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=2)
    with pytest.raises(ValueError, match="return_trace=True"):
        dc.viz.routing_report(p.graph, r, tmp_path)
    with pytest.raises(ValueError, match="return_trace=True"):
        viz.plot_entropy(p.graph, r.trace)
    with pytest.raises(ValueError, match="return_trace=True"):
        viz.animate_histogram(r)
    with pytest.raises(ValueError, match="trace is empty"):
        viz.animate_bipartite(p.graph, [])
    with pytest.raises(ValueError, match="list of per-iteration couplings"):
        viz.plot_entropy(p.graph, r.coupling)


def test_trace_from_another_graph_is_refused():
    g, r = small_trace(n_iters=2)  # 12 -> 3, 36 edges
    with pytest.raises(ValueError, match="another graph"):
        viz.plot_entropy(dc.capsule_graph(10, 3), r.trace)
    with pytest.raises(ValueError, match="another graph"):
        viz.animate_bipartite(dc.capsule_graph(1152, 10), r.trace)
    # Same number of edges (36), other structure: the couplings no longer sum to 1 per child.
    with pytest.raises(ValueError, match="do not sum to 1.*another graph"):
        viz.animate_histogram(r.trace, g=dc.capsule_graph(9, 4))
    with pytest.raises(ValueError, match="same shape"):
        viz.entropy_curve(g, [r.trace[0], r.trace[1][:, :1]])
    with pytest.raises(TypeError, match="dgl.DGLGraph"):
        viz.plot_entropy("graph", r.trace)
    not_bipartite = dgl.graph(([0, 1], [1, 2]))
    with pytest.raises(dgl.DGLError, match="bipartite"):
        viz.plot_entropy(not_bipartite, [torch.ones(2)])


def test_save_animation_refuses_unknown_formats_and_missing_ffmpeg(tmp_path, monkeypatch):
    g, r = small_trace(n_iters=2)
    ani = viz.animate_histogram(r.trace)
    with pytest.raises(ValueError, match=r"must end in one of \.gif, \.html, \.mp4.*\.avi"):
        viz.save_animation(ani, tmp_path / "hist.avi")
    with pytest.raises(ValueError, match="must end in one of"):
        viz.save_animation(ani, tmp_path / "hist")
    with pytest.raises(TypeError, match="matplotlib.animation.Animation"):
        viz.save_animation(plt.figure(), tmp_path / "hist.gif")
    from matplotlib import animation

    monkeypatch.setattr(animation.FFMpegWriter, "isAvailable", classmethod(lambda cls: False))
    with pytest.raises(RuntimeError, match="needs ffmpeg.*\\.gif"):
        viz.save_animation(ani, tmp_path / "hist.mp4")
    assert not (tmp_path / "hist.mp4").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sample": 2}, r"sample must be an integer or None in \[0, 2\)"),
        ({"sample": "0"}, "sample must be"),
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"group_by": "colour"}, "group_by must be 'type', 'position'"),
        ({"group_by": "type"}, "child_types=A"),
        ({"group_by": "type", "child_types": 5}, "child_types must be a positive integer dividing"),
        ({"group_by": torch.zeros(5, dtype=torch.long)}, r"shape \(N_src,\) = \(12,\)"),
        ({"parent_strength": torch.ones(2)}, r"parent_strength must have shape \(N_dst,\) = \(3,\)"),
        ({"parent_strength": torch.ones(3, 5)}, "parent_strength must have shape"),
        ({"parent_strength": -torch.ones(3)}, "non-negative"),
        ({"parent_labels": ["a", "b"]}, r"parent_labels must name the 3 parents \(N_dst = 3\)"),
    ],
)
def test_bipartite_bad_arguments(kwargs, match):
    g, r = small_trace(n_iters=2, batch=2)
    with pytest.raises(ValueError, match=match):
        viz.animate_bipartite(g, r.trace, **kwargs)


def test_histogram_bad_arguments():
    g, r = small_trace(n_iters=2, batch=2)
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        viz.animate_histogram(r.trace, bins=0)
    with pytest.raises(ValueError, match="sample must be"):
        viz.animate_histogram(r.trace, sample=-3)


# --------------------------------------------------------------------------- absolute scale


def _drawn(ax):
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    return np.array(lines.get_linewidths()), lines.get_colors()[:, 3]


@pytest.mark.parametrize("name", ["complete", "conv"])
def test_uniform_couplings_draw_one_equal_thin_width(name):
    g = GRAPHS[name]()
    c = uniform(g, batch=(2,)).float()  # (E, 2); on "conv" children have 2, 4, 6 or 12 parents
    ax = plt.figure(figsize=(4, 4)).add_subplot()
    viz.animate_bipartite(g, [c, c], sort_children=False, ax=ax)
    widths, alphas = _drawn(ax)
    assert len(widths) == g.num_edges()
    np.testing.assert_allclose(widths, viz.bipartite.MIN_WIDTH, rtol=1e-6)  # float32 couplings
    np.testing.assert_allclose(alphas, viz.bipartite.MIN_ALPHA, rtol=1e-6)
    assert viz.bipartite.MIN_WIDTH <= 0.15 * 3.0  # thin next to the widest, 3 points


def test_a_decided_child_draws_its_winning_edge_widest_in_every_picture():
    g = dc.capsule_graph(6, 4)
    src, dst = g.edges()
    c = uniform(g).float()  # (E,)
    c[src == 0] = (dst[src == 0] == 2).float()  # child 0 chose parent 2; the others are undecided
    half = uniform(g).float()
    half[src == 1] = torch.tensor([0.5, 0.5, 0.0, 0.0])[dst[src == 1]]
    for trace in ([c], [half, c], [c, half]):  # whatever else the trace holds, the scale is the same
        ax = plt.figure(figsize=(4, 4)).add_subplot()
        viz.animate_bipartite(g, trace, sort_children=False, ax=ax, max_width=3.0)
        widths, alphas = _drawn(ax)  # the first frame, drawn in the graph's edge order
        first = trace[0]
        win = ((src == 0) & (dst == 2)).numpy()
        if first is c:
            assert widths[win] == pytest.approx(3.0) and alphas[win] == pytest.approx(1.0)
            assert np.allclose(widths[~win], viz.bipartite.MIN_WIDTH, rtol=1e-6)
        else:  # child 1's two parents at 0.5: a third of the way from 1/4 to 1
            mid = ((src == 1) & (dst < 2)).numpy()
            expected = viz.bipartite.MIN_WIDTH + (3.0 - viz.bipartite.MIN_WIDTH) / 3
            np.testing.assert_allclose(widths[mid], expected, rtol=1e-6)
            assert np.allclose(widths[~mid], viz.bipartite.MIN_WIDTH, rtol=1e-6)


def test_edge_scale_is_fixed_and_clipped():
    w, a = viz.edge_scale([0.0, 0.25, 1.0, 0.7], [0.25, 0.25, 0.25, 1.0], max_width=2.0)
    np.testing.assert_allclose(w, [viz.bipartite.MIN_WIDTH, viz.bipartite.MIN_WIDTH, 2.0, 2.0])
    np.testing.assert_allclose(a, [viz.bipartite.MIN_ALPHA, viz.bipartite.MIN_ALPHA, 1.0, 1.0])


def test_legend_states_the_scale():
    g, r = small_trace(n_iters=2, n_in=12, n_out=4)
    ax = plt.figure(figsize=(5, 5)).add_subplot()
    viz.animate_bipartite(g, r.trace, ax=ax)
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["uniform 1/4", "0.62", "1 (decided)"]
    widths = [h.get_linewidth() for h in legend.legend_handles]
    assert widths[0] == pytest.approx(viz.bipartite.MIN_WIDTH) and widths[2] == pytest.approx(3.0)
    assert "one fixed scale for every picture" in legend.get_title().get_text()


def _outside(fig):
    """Texts whose bounding box leaves the figure (in pixels, 1 px tolerance)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    bad = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip():
            continue
        b = t.get_window_extent(renderer)
        if b.x0 < box.x0 - 1 or b.x1 > box.x1 + 1 or b.y0 < box.y0 - 1 or b.y1 > box.y1 + 1:
            bad.append((t.get_text()[:40], tuple(np.round(b.extents))))
    return bad


@pytest.fixture(scope="module")
def capsnet_sized():
    p = planted_clusters(n_in=1152, n_out=10, dim=8, batch=1, seed=0)
    r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=2, return_trace=True)
    return p, r


@pytest.mark.parametrize("top_k", [10, 50, 1000, None])
@pytest.mark.parametrize("group_by", [None, "type", "position"])
def test_no_text_outside_the_figure(capsnet_sized, top_k, group_by):
    p, r = capsnet_sized
    names = [f"class name {k}" for k in range(10)]
    ani = viz.animate_bipartite(p.graph, r.trace, top_k=top_k, group_by=group_by, child_types=32,
                                parent_labels=names, parent_strength=r.poses.norm(dim=-1),
                                child_weights=torch.rand(1152), weights_label="vote length",
                                title="A long title that names the model, the layer and the prediction")
    assert _outside(ani._fig) == []


@pytest.mark.parametrize("kw", [dict(group_parents="type"), dict(group_by="type"), dict(group_by="position"),
                                dict(group_by="position", group_parents="type"), dict(top_k=50)])
def test_no_text_outside_the_figure_on_a_conv_layer(kw):
    g = dc.conv_capsule_graph(in_hw=(11, 11), kernel=3, stride=2, in_types=4, out_types=4)  # 484 -> 100
    c = uniform(g).float()
    ani = viz.animate_bipartite(g, [c, c], parent_types=4, **kw)  # the default figure
    assert _outside(ani._fig) == []
    fig = plt.figure(figsize=(7.5, 6.5))  # the layout of routing_report and visualize_model
    viz.animate_bipartite(g, [c, c], parent_types=4, ax=fig.add_axes(viz.bipartite.AXES_RECT), **kw)
    assert _outside(fig) == []


def test_entropy_legends_stay_inside_narrow_panels():
    # Three layers side by side, each with a mean and a weighted curve (tutorial 7's figure): the legend
    # of three entries must stay inside its panel and the figure.
    g = dc.conv_capsule_graph(in_hw=(6, 6), kernel=3, stride=2, in_types=4, out_types=5)
    c = uniform(g).float()
    w = torch.rand(g.num_src_nodes())
    fig, axes = plt.subplots(1, 3, figsize=(12.6, 3.6), layout="constrained", squeeze=False)
    for ax in axes[0]:
        viz.plot_entropy(g, [c, c], ax=ax, label="mean over children")
        viz.plot_entropy(g, [c, c], ax=ax, weights=w, label="weighted by activation")
    assert _outside(fig) == []
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes[0]:
        legend, frame = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert frame.x0 - 1 <= legend.x0 and legend.x1 <= frame.x1 + 1
    plt.close(fig)


def test_parents_grouped_by_type_carry_the_summed_coupling():
    g = dc.conv_capsule_graph(in_hw=(5, 5), kernel=3, stride=1, in_types=2, out_types=3)  # 50 -> 27
    src, dst = g.edges()
    c = uniform(g).float()
    # child 12 (the centre position, type 0) puts everything on the parents of type 1
    sel = src == 12
    c[sel] = (dst[sel] % 3 == 1).float() / (dst[sel] % 3 == 1).sum()
    ax = plt.figure(figsize=(4, 4)).add_subplot()
    viz.animate_bipartite(g, [c], group_parents="type", parent_types=3, sort_children=False, ax=ax)
    widths, _ = _drawn(ax)
    assert len(widths) == 50 * 3  # every child reaches every parent type
    # rows in child order, then columns (types): child 12's edge to type 1 is decided
    assert widths[12 * 3 + 1] == pytest.approx(3.0)
    np.testing.assert_allclose(np.delete(widths, 12 * 3 + 1), viz.bipartite.MIN_WIDTH, rtol=1e-6)
    texts = {t.get_text() for t in ax.texts}
    assert "3 parent types\n(of 27 parents)" in texts


def test_top_k_by_child_weights_and_the_header_says_so():
    g, r = small_trace(n_iters=2, batch=1, n_in=12, n_out=3)
    weights = torch.zeros(12)
    weights[[3, 7, 9]] = torch.tensor([1.0, 3.0, 2.0])
    ax = plt.figure(figsize=(4, 4)).add_subplot()
    viz.animate_bipartite(g, r.trace, top_k=3, child_weights=weights, weights_label="vote length", ax=ax)
    texts = {t.get_text() for t in ax.texts}
    assert "top 3 of 12 children, by largest vote length" in texts
    assert {"3 (1.00)", "7 (3.00)", "9 (2.00)"} <= texts
    ax = plt.figure(figsize=(4, 4)).add_subplot()
    viz.animate_bipartite(g, r.trace, top_k=3, ax=ax)
    assert "top 3 of 12 children, by most decided" in {t.get_text() for t in ax.texts}


def test_parents_are_labelled_by_class_name_and_frames_by_their_label():
    g, r = small_trace(n_iters=2, batch=1, n_in=12, n_out=3)
    ax = plt.figure(figsize=(4, 4)).add_subplot()
    viz.animate_bipartite(g, r.trace, parent_labels=["cat", "dog", "eel"], ax=ax,
                          frame_labels=["epoch 0", "epoch 5"], title="Net")
    assert {"cat", "dog", "eel"} <= {t.get_text() for t in ax.texts}
    assert ax.get_title() == "Net: epoch 0"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"child_weights": torch.ones(5)}, r"child_weights must have shape \(N_src,\) = \(12,\)"),
        ({"child_weights": -torch.ones(12)}, "child_weights must be finite and non-negative"),
        ({"group_parents": "position"}, "group_parents must be 'type' or None"),
        ({"group_parents": "type"}, "parent_types=C"),
        ({"parent_types": 2}, "parent_types must be a positive integer dividing N_dst = 3"),
        ({"frame_labels": ["a"]}, r"frame_labels must have one label per frame \(2\)"),
    ],
)
def test_bipartite_bad_new_arguments(kwargs, match):
    g, r = small_trace(n_iters=2, batch=2)
    with pytest.raises(ValueError, match=match):
        viz.animate_bipartite(g, r.trace, **kwargs)


# --------------------------------------------------------------------------- weighted entropy


def test_weighted_entropy_by_hand():
    g = dc.capsule_graph(3, 2)
    src, dst = g.edges()
    table = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]], dtype=torch.float64)  # (children, parents)
    c = table[src, dst]  # (E,)
    h = [math.log(2), 0.0, -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))]
    w = torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64)
    mean, std = viz.entropy_curve(g, [c], weights=w)
    expected = (1 * h[0] + 3 * h[1]) / 4
    assert mean[0] == pytest.approx(expected)
    assert std[0] == pytest.approx(math.sqrt((1 * (h[0] - expected) ** 2 + 3 * (h[1] - expected) ** 2) / 4))
    mean_1, _ = viz.entropy_curve(g, [c], weights=torch.ones(3, dtype=torch.float64))
    assert mean_1[0] == pytest.approx(sum(h) / 3)
    # batched: every sample's weights are normalised, then the samples averaged
    cb = torch.stack([c, c.flip(0) * 0 + table[src, dst]], 1)  # (E, 2), both samples alike
    wb = torch.stack([w, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)], 1)  # (N_src, 2)
    mean_b, _ = viz.entropy_curve(g, [cb], weights=wb)
    assert mean_b[0] == pytest.approx((expected + h[2]) / 2)
    assert viz.entropy_curve(g, [cb], weights=wb, sample=1)[0][0] == pytest.approx(h[2])


def test_weighted_entropy_curve_is_the_functional_weighted_mean():
    g, r = small_trace(n_iters=3, batch=4)
    w = torch.rand(12, 4)
    mean, _ = viz.entropy_curve(g, r.trace, weights=w)
    for it, c in enumerate(r.trace):
        per_sample = dc.functional.coupling_entropy(g, c, weights=w)  # (4,)
        assert mean[it] == pytest.approx(per_sample.mean().item(), rel=1e-5)
        one, _ = viz.entropy_curve(g, r.trace, weights=w, sample=2)
        assert one[it] == pytest.approx(per_sample[2].item(), rel=1e-5)


def test_plot_entropy_with_weights_draws_the_weighted_curve():
    g, r = small_trace(n_iters=3, batch=2)
    w = torch.rand(12, 2)
    ax = viz.plot_entropy(g, r.trace, label="mean")
    viz.plot_entropy(g, r.trace, ax=ax, weights=w, label="weighted by vote length")
    (curve,) = [bars for bars in ax.containers if bars.get_label() == "weighted by vote length"]
    np.testing.assert_allclose(curve.lines[0].get_ydata(), viz.entropy_curve(g, r.trace, weights=w)[0])


@pytest.mark.parametrize(
    "weights, error, match",
    [
        (torch.ones(5), ValueError, r"weights must have shape \(N_src,\) = \(12,\)"),
        (torch.ones(12, 3), ValueError, "weights must have shape"),
        (-torch.ones(12), ValueError, "non-negative"),
        (torch.zeros(12), ValueError, "must not all be 0"),
        (torch.ones(12, dtype=torch.long), TypeError, "weights must be a floating-point tensor"),
        ([1.0] * 12, TypeError, "weights must be a floating-point tensor"),
    ],
)
def test_weighted_entropy_bad_weights(weights, error, match):
    g, r = small_trace(n_iters=2, batch=2)
    with pytest.raises(error, match=match):
        viz.entropy_curve(g, r.trace, weights=weights)


# --------------------------------------------------------------------------- offline HTML


def test_saved_html_is_self_contained(tmp_path):
    import re

    g, r = small_trace(n_iters=3)
    path = viz.save_animation(viz.animate_bipartite(g, r.trace), tmp_path / "graph.html", dpi=30)
    text = open(path, encoding="utf-8").read()
    assert re.findall(r"https?://", text) == []  # matplotlib's player links a CDN icon font
    assert 'class="fa' not in text
    assert text.count('class="anim-icon"') == 9  # every button shows a glyph of its own
    assert "&#9654;" in text and text.count("data:image/png;base64") == 3
