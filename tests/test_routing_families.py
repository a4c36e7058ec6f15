"""What the newer routing families share: their registration, the routing contract, and pictures drawn from them."""
import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dgl_capsules import testing, viz  # noqa: E402
from dgl_capsules.nn.inverted import window_capsule_graph  # noqa: E402
from dgl_capsules.routing import get_routing, inverted_routing, vector_routing  # noqa: E402

FAMILIES = {
    # name: (function, label, strength, inputs, name of the first input)
    "vector": (vector_routing, "vector routing (Heinsen 2022)", "activation",
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
    assert (spec.normalise, spec.outputs, spec.defaults) == ("parents", ("poses", "coupling"), {"n_iters": 2})
    reference, example = REFERENCES[name]
    assert spec.get_reference() is getattr(testing, reference) and spec.get_example() is getattr(testing, example)
    assert len(label) <= 40  # fits a picture's legend


@pytest.mark.parametrize("name", list(FAMILIES))
def test_routing_contract(name):
    spec = get_routing(name)
    testing.check_routing_contract(lambda g, *x: spec.fn(g, *x, return_trace=True, **spec.defaults),
                                   spec.get_example(), spec.inputs, first=FAMILIES[name][-1])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_reference_is_the_contracts_reference(name):
    """The registered reference gives what the function gives on the registered example (a ragged batch here)."""
    spec = get_routing(name)
    g = testing.random_bipartite(6, 3, p=0.6, seed=4)
    inputs = spec.get_example()(g, 2, torch.Generator().manual_seed(0))
    got = spec.fn(g, *inputs, return_trace=True, **spec.defaults)
    want = spec.get_reference()(g, *inputs, return_trace=True, **spec.defaults)
    torch.testing.assert_close(got.poses, want.poses, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.trace, want.trace, rtol=1e-10, atol=1e-12)


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
