"""RoutedCaps: one fully connected capsule layer for every registered routing family."""
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.nn import DynamicCaps, RoutedCaps
from dgl_capsules.routing import register_routing, unregister_routing


def test_dynamic_routed_caps_is_dynamic_caps():
    torch.manual_seed(3)
    a = DynamicCaps(6, 3, 4, 5, n_iters=2)
    torch.manual_seed(3)
    b = RoutedCaps(6, 3, 4, 5, routing="dynamic", n_iters=2)
    assert torch.equal(a.weight, b.weight)  # the same initialisation from the same seed
    x = torch.randn(2, 6, 4)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert a.n_iters == 2 and repr(a) == "DynamicCaps(in_caps=6, out_caps=3, in_dim=4, out_dim=5, n_iters=2)"


@pytest.mark.parametrize("name, values", [("em", ["beta_u", "beta_a"]), ("heinsen", ["beta_use", "beta_ign"])])
def test_other_families_route_the_same_votes_with_learned_values(name, values):
    layer = RoutedCaps(5, 3, 2, 4, routing=name, n_iters=2).double()
    assert [n for n, _ in layer.named_parameters()] == ["weight"] + values
    with torch.no_grad():
        for v in values:
            getattr(layer, v).normal_()
    x, a = torch.randn(2, 5, 2, dtype=torch.float64), torch.rand(2, 5, dtype=torch.float64)
    poses, acts, r = layer(x, a, return_routing=True)
    g = layer.graph()
    src, dst = g.edges()
    votes = layer.votes(g, x)
    if name == "em":
        want = dc.routing.em_routing(g, votes, a.T, layer.beta_u, layer.beta_a, n_iters=2)
    else:
        want = dc.routing.heinsen_routing(g, votes.unsqueeze(-2), a.T, layer.beta_use[src, dst],
                                          layer.beta_ign[src, dst], n_iters=2)
    torch.testing.assert_close(r.coupling, want.coupling, rtol=0, atol=0)
    torch.testing.assert_close(poses, want.poses.transpose(0, 1).reshape(2, 3, 4), rtol=0, atol=0)
    torch.testing.assert_close(acts, want.activations.T, rtol=0, atol=0)


def test_bad_arguments_and_inputs_are_named():
    with pytest.raises(ValueError, match=r"routing: unknown routing 'dinamic'"):
        RoutedCaps(3, 2, 2, 2, routing="dinamic")
    with pytest.raises(ValueError, match=r"routing_kwargs: the 'dynamic' routing function takes no keyword p_model"):
        RoutedCaps(3, 2, 2, 2, routing="dynamic", p_model="skm")
    with pytest.raises(ValueError, match="in_caps must be a positive integer; got 0"):
        RoutedCaps(0, 2, 2, 2)

    def with_const(g, votes, scale, n_iters=1, return_trace=False):
        return dc.routing.dynamic_routing(g, votes * scale, n_iters=n_iters, return_trace=return_trace)

    register_routing("scaled", with_const, label="scaled dynamic routing", inputs=("edge", "const"))
    try:
        with pytest.raises(ValueError, match=r"routing: RoutedCaps makes the inputs \('edge', 'child', "
                                             r"'edge_value', 'parent_value'\) of a routing; 'scaled' takes "
                                             r"\('edge', 'const'\)"):
            RoutedCaps(3, 2, 2, 2, routing="scaled")
    finally:
        unregister_routing("scaled")
    x = torch.randn(4, 3, 2)
    with pytest.raises(ValueError, match=r"a: the 'dynamic' routing takes no child activations; got Tensor"):
        RoutedCaps(3, 2, 2, 2)(x, torch.rand(4, 3))
    em = RoutedCaps(3, 2, 2, 2, routing="em")
    with pytest.raises(TypeError, match=r"a must be a torch.Tensor of shape \(B, in_caps\) = \(4, 3\); got NoneType"):
        em(x)
    with pytest.raises(ValueError, match=r"a must have shape \(B, in_caps\) = \(4, 3\); got \(4, 2\)"):
        em(x, torch.rand(4, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(B, in_caps, in_dim\) = \(B, 3, 2\); got \(4, 3\)"):
        em(x[..., 0], torch.rand(4, 3))
