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
