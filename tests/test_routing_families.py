"""What the newer routing families share: their registration and pictures drawn from them (the routing contract
runs on them with every registered family, in test_routing_registry.py)."""
import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import dgl_capsules as dc  # noqa: E402
from dgl_capsules import testing, viz  # noqa: E402
from dgl_capsules.models import RoutedLayer  # noqa: E402
from dgl_capsules.nn.inverted import window_capsule_graph  # noqa: E402
from dgl_capsules.routing import get_routing, inverted_routing, vector_routing  # noqa: E402

FAMILIES = {
    # name: (function, label, strength, inputs, name of the first input)
    "vector": (vector_routing, "vector routing (Heinsen 2022)", "logit",
               ("child", "child", "edge_value", "edge_value", "parent_value", "const", "parent_value", "const",
                "parent_value", "parent_value", "edge_value", "edge_value"), "x"),
    "inverted-dot-product": (inverted_routing, "inverted dot-product attention routing", "length",
                             ("edge", "const", "const"), "votes"),
}
REFERENCES = {"vector": ("reference_vector", "example_vector"),
              "inverted-dot-product": ("reference_inverted", "example_inverted")}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_registered_with_everything_the_contract_needs(name):
    fn, label, strength, inputs, _ = FAMILIES[name]
    spec = get_routing(name)
    assert (spec.fn, spec.label, spec.strength, spec.inputs) == (fn, label, strength, inputs)
    assert (spec.normalise, spec.outputs, spec.defaults, spec.vote_dims) == (
        "parents", ("poses", "coupling"), {"n_iters": 2}, 1)
    reference, example = REFERENCES[name]
    assert spec.get_reference() is getattr(testing, reference) and spec.get_example() is getattr(testing, example)
    assert len(label) <= 40  # fits a picture's legend


def test_strengths_read_the_families_way():
    """Vector routing: children by the sigmoid of their logits, parents (no activations) by pose length;
    inverted dot-product routing: both by length (mean vote length of a child)."""
    g = testing.random_bipartite(6, 3, p=0.6, seed=4)
    gen = torch.Generator().manual_seed(0)
    vector, inverted = get_routing("vector"), get_routing("inverted-dot-product")
    x, a, *rest = vector.get_example()(g, 2, gen)
    r = vector.fn(g, x, a, *rest)
    torch.testing.assert_close(vector.child_strength(g, a_in=a), torch.sigmoid(a))
    torch.testing.assert_close(vector.parent_strength(r), r.poses.norm(dim=-1))
    votes, *rest = inverted.get_example()(g, 2, gen)
    r = inverted.fn(g, votes, *rest)
    src = g.edges()[0].long()
    mean_length = torch.zeros(6, 2, dtype=torch.float64).index_add(0, src, votes.norm(dim=-1))
    mean_length = mean_length / g.out_degrees().clamp(min=1)[:, None]
    torch.testing.assert_close(inverted.child_strength(g, votes=votes), mean_length)
    torch.testing.assert_close(inverted.parent_strength(r), r.poses.norm(dim=-1))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_pictures_draw_without_family_specific_code(name, tmp_path):
    spec = get_routing(name)
    g = window_capsule_graph((4, 4), kernel=2, stride=2, in_types=2, out_types=3)
    r = spec.fn(g, *spec.get_example()(g, 2, torch.Generator().manual_seed(0)), n_iters=3, return_trace=True)
    ax = viz.plot_entropy(g, r, label=spec.label)
    ax.figure.savefig(tmp_path / "entropy.png")
    hist = viz.save_animation(viz.animate_histogram(r, g=g), tmp_path / "hist.gif", dpi=30)
    graph = viz.save_animation(viz.animate_bipartite(g, r, sample=1), tmp_path / "graph.gif", dpi=30)
    plt.close("all")
    for path in (tmp_path / "entropy.png", hist, graph):
        assert (tmp_path / path).stat().st_size > 1000


class VectorNet(nn.Module):
    """Inputs of 12 numbers as 4 vectors of 3, routed to 3 class vectors by EfficientVectorRouting."""

    def __init__(self):
        super().__init__()
        self.head = dc.nn.EfficientVectorRouting(n_inp=4, n_out=3, d_inp=3, d_out=2, return_dict=True)

    def forward(self, x, y=None):
        return self.head(x.view(-1, 4, 3))["x_out"]

    def scores(self, out):
        return out.norm(dim=-1)

    def routing(self, x):
        out, r = self.head(x.view(-1, 4, 3), return_trace=True)
        return [RoutedLayer.of("head", self.head.graph(4), r, self.head.routing, a_in=out["a_inp"].T)]


class InvertedNet(nn.Module):
    """Inputs of 16 numbers as 4 capsules of 4 (2x2 poses), routed to 3 class capsules by InvertedCaps."""

    def __init__(self):
        super().__init__()
        self.head = dc.nn.InvertedCaps(4, 3, d_in=4, d_out=4)

    def forward(self, x, y=None):
        return self.head(x.view(-1, 4, 4))

    def scores(self, out):
        return out.norm(dim=-1)

    def routing(self, x):
        poses, g = x.view(-1, 4, 4), self.head.graph()
        _, r = self.head(poses, return_trace=True)
        return [RoutedLayer.of("head", g, r, self.head.routing, votes=self.head.votes(g, poses))]


@pytest.mark.parametrize("net, n_in, name", [(VectorNet, 12, "vector"), (InvertedNet, 16, "inverted-dot-product")])
def test_a_model_of_the_new_layers_is_drawn_from_the_registry(net, n_in, name, tmp_path):
    (layer,) = viz.model_routing(net(), torch.randn(2, n_in))
    spec = get_routing(name)
    assert layer.routing == name and layer.child_strength.shape == (layer.graph.num_src_nodes(), 2)
    torch.testing.assert_close(layer.parent_strength, layer.result.poses.norm(dim=-1))
    res = viz.visualize_model(net(), torch.randn(2, n_in), None, tmp_path, dpi=30)
    summary = res["summary"]["layers"]["head"]
    assert (summary["algorithm"], summary["label"]) == (name, spec.label)
    assert sorted(res["paths"]["head"]) == ["bipartite", "entropy", "histogram"]
