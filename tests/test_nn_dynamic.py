import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.nn import DynamicCaps
from dgl_capsules.testing import dense_dynamic_routing


def test_dynamic_caps_equals_dense_formula():
    layer = DynamicCaps(in_caps=6, out_caps=3, in_dim=4, out_dim=5, n_iters=3).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    u_hat = torch.einsum("ijkd,bik->bijd", layer.weight, x)  # (B, I, J, D)
    v, _ = dense_dynamic_routing(u_hat, torch.ones(6, 3, dtype=torch.bool), 3)
    torch.testing.assert_close(layer(x), v, rtol=1e-10, atol=1e-12)


def test_dynamic_caps_returns_routing_and_keeps_no_state():
    layer = DynamicCaps(in_caps=10, out_caps=4, in_dim=3, out_dim=6)
    x = torch.randn(5, 10, 3)
    v, r = layer(x, return_routing=True, return_trace=True)
    assert v.shape == (5, 4, 6) and r.coupling.shape == (40, 5) and len(r.trace) == 3
    assert torch.equal(layer(x), v)
    assert len(dc.capsule_graph(10, 4).edata) == 0
    assert "in_caps=10, out_caps=4, in_dim=3, out_dim=6, n_iters=3" in repr(layer)
    assert [n for n, _ in layer.named_parameters()] == ["weight"]


def test_dynamic_caps_rejects_bad_input():
    layer = DynamicCaps(in_caps=10, out_caps=4, in_dim=3, out_dim=6)
    with pytest.raises(ValueError, match=r"x must have shape \(B, in_caps, in_dim\) = \(B, 10, 3\); got \(5, 10, 4\)"):
        layer(torch.randn(5, 10, 4))
    with pytest.raises(ValueError, match="in_caps must be a positive integer; got 0"):
        DynamicCaps(0, 4, 3, 6)
    with pytest.raises(ValueError, match="n_iters must be an integer >= 1; got 0"):
        DynamicCaps(10, 4, 3, 6, n_iters=0)


def test_dynamic_caps_gradients_equal_dense_formula():
    layer = DynamicCaps(in_caps=9, out_caps=4, in_dim=3, out_dim=5, n_iters=3).double()
    x = torch.randn(7, 9, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(7, 4, 5, dtype=torch.float64)
    (gx, gw) = torch.autograd.grad((layer(x) * target).sum(), (x, layer.weight))
    u_hat = torch.einsum("ijkd,bik->bijd", layer.weight, x)
    v, _ = dense_dynamic_routing(u_hat, torch.ones(9, 4, dtype=torch.bool), 3)
    (dx, dw) = torch.autograd.grad((v * target).sum(), (x, layer.weight))
    torch.testing.assert_close(gx, dx, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(gw, dw, rtol=1e-9, atol=1e-11)


# The layer's graph and its errors (the layer contract checks the rest).


def test_graph_is_the_routed_graph():
    layer = DynamicCaps(in_caps=10, out_caps=4, in_dim=3, out_dim=6)
    g = layer.graph()
    assert (g.num_src_nodes(), g.num_dst_nodes(), g.num_edges()) == (10, 4, 40)
    assert layer.graph(device="cpu").device == torch.device("cpu")
    x = torch.randn(3, 10, 3)
    _, r = layer(x, return_routing=True)
    # the couplings follow the edge order of layer.graph(): routing its votes gives them again
    again = dc.routing.dynamic_routing(g, layer.votes(g, x), n_iters=layer.n_iters)
    torch.testing.assert_close(again.coupling, r.coupling, rtol=0, atol=0)
    g.edata["x"] = torch.zeros(40)  # a handle of the caller's own
    assert len(layer.graph().edata) == 0


def test_bad_input_gets_one_line_naming_x():
    layer = DynamicCaps(in_caps=10, out_caps=4, in_dim=3, out_dim=6)
    x = torch.randn(5, 10, 3)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor of shape \(B, in_caps, in_dim\) = \(B, 10, 3\); "
                                        r"got a DGLGraph: DynamicCaps builds its own graph"):
        layer(dc.capsule_graph(10, 4), x)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor .*got numpy.ndarray \(convert it with torch.from_numpy\)"):
        layer(x.numpy())
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor .*got dtype torch.int64"):
        layer(torch.ones(5, 10, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x must be float32 or float64 .*got torch.float16"):
        layer(x.half())
    with pytest.raises(TypeError, match=r"x must have the layer's dtype torch.float32 .*got torch.float64"):
        layer(x.double())
    assert layer.double()(x.double()).dtype == torch.float64


def test_votes_on_an_int32_graph_equal_int64():
    layer = DynamicCaps(in_caps=10, out_caps=4, in_dim=3, out_dim=6)
    x = torch.randn(3, 10, 3)
    g = layer.graph()
    torch.testing.assert_close(layer.votes(g.int(), x), layer.votes(g, x), rtol=0, atol=0)
    a = dc.routing.dynamic_routing(g.int(), layer.votes(g.int(), x))
    torch.testing.assert_close(a.poses.transpose(0, 1), layer(x), rtol=0, atol=0)
