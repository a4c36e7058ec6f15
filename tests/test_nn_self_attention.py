"""SelfAttentionCaps against the published FCCaps tensor operations, written densely here."""
import math

import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.nn import SelfAttentionCaps
from dgl_capsules.nn.self_attention import keras_truncated_normal_


def published_fccaps(x, W, b, uniform=False, eps=1e-20):
    """FCCaps as the published code computes it, batch first: u (B, I, Din), W (J, I, Din, D), b (J, I)."""
    u = torch.einsum("bik,jikd->bjid", x, W)  # (B, J, I, D)
    if uniform:
        c = torch.full(u.shape[:3], 1 / W.shape[0], dtype=x.dtype)
    else:
        c = torch.einsum("bjid,bjmd->bji", u, u) / math.sqrt(W.shape[-1])  # row sums of U U^T per parent
        c = torch.softmax(c, dim=1)  # over the parents
    c = c + b  # after the softmax
    s = torch.einsum("bjid,bji->bjd", u, c)
    n = s.norm(dim=-1, keepdim=True)
    return (1 - 1 / (torch.exp(n) + eps)) * s / (n + eps), c - b


@pytest.mark.parametrize("uniform", [False, True])
def test_equals_the_published_tensor_operations(uniform):
    layer = SelfAttentionCaps(in_caps=16, out_caps=10, in_dim=8, out_dim=16, uniform=uniform).double()
    with torch.no_grad():
        layer.bias.normal_(std=0.1)
    x = torch.randn(5, 16, 8, dtype=torch.float64)
    v, r = layer(x, return_routing=True)
    want, c = published_fccaps(x, layer.weight, layer.bias, uniform)
    torch.testing.assert_close(v, want, rtol=1e-10, atol=1e-12)
    src, dst = layer.graph().edges()
    torch.testing.assert_close(r.coupling, c[:, dst, src].t(), rtol=1e-10, atol=1e-12)


def test_gradients_equal_the_published_tensor_operations():
    layer = SelfAttentionCaps(in_caps=7, out_caps=4, in_dim=3, out_dim=5).double()
    with torch.no_grad():
        layer.bias.normal_(std=0.1)
    x = torch.randn(6, 7, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(6, 4, 5, dtype=torch.float64)
    wrt = (x, layer.weight, layer.bias)
    got = torch.autograd.grad((layer(x) * target).sum(), wrt)
    want = torch.autograd.grad((published_fccaps(x, layer.weight, layer.bias)[0] * target).sum(), wrt)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_gradcheck():
    layer = SelfAttentionCaps(in_caps=3, out_caps=2, in_dim=2, out_dim=3).double()
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = (0.1 * torch.randn(2, 3, dtype=torch.float64)).requires_grad_(True)

    def f(x, w, b):
        return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_the_published_initialisation():
    torch.manual_seed(0)
    layer = SelfAttentionCaps(in_caps=16, out_caps=10, in_dim=8, out_dim=16)
    std = math.sqrt(2 / (10 * 16 * 8))  # Keras he_normal with the fans of a 4-d weight
    assert layer.weight.std().item() == pytest.approx(std, rel=0.03)
    assert layer.weight.abs().max().item() <= 2 * std / 0.87962566103423978
    assert (layer.bias == 0).all()
    assert [(n, tuple(p.shape)) for n, p in layer.named_parameters()] == [("weight", (10, 16, 8, 16)),
                                                                         ("bias", (10, 16))]


def test_uniform_keeps_the_parameters_and_couples_one_over_the_parents():
    routed = SelfAttentionCaps(16, 10, 8, 16)
    off = SelfAttentionCaps(16, 10, 8, 16, uniform=True)
    off.load_state_dict(routed.state_dict())  # strict: the same parameters
    x = torch.randn(3, 16, 8)
    _, r = off(x, return_routing=True)
    torch.testing.assert_close(r.coupling, torch.full((160, 3), 0.1))
    assert not torch.allclose(off(x), routed(x))
    assert "uniform=True" in repr(off)


def test_returns_routing_and_trace_and_keeps_no_state():
    layer = SelfAttentionCaps(in_caps=10, out_caps=4, in_dim=3, out_dim=6)
    x = torch.randn(5, 10, 3)
    v, r = layer(x, return_trace=True)
    assert v.shape == (5, 4, 6) and r.coupling.shape == (40, 5) and len(r.trace) == 1
    assert torch.equal(layer(x), v)
    assert len(dc.capsule_graph(10, 4).edata) == 0
    assert repr(layer) == "SelfAttentionCaps(in_caps=10, out_caps=4, in_dim=3, out_dim=6, uniform=False)"


def test_one_sample_alone_equals_it_inside_a_batch():
    layer = SelfAttentionCaps(16, 10, 8, 16).double()
    x = torch.randn(6, 16, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x[2:3]), layer(x)[2:3], rtol=1e-12, atol=1e-14)


def test_empty_batch_gives_an_empty_output():
    layer = SelfAttentionCaps(16, 10, 8, 16)
    x = torch.randn(0, 16, 8, requires_grad=True)
    v, r = layer(x, return_routing=True)
    assert v.shape == (0, 10, 16) and r.coupling.shape == (160, 0)
    v.sum().backward()
    assert x.grad.shape == x.shape and layer.weight.grad.shape == layer.weight.shape


def test_rejects_bad_input():
    layer = SelfAttentionCaps(in_caps=10, out_caps=4, in_dim=3, out_dim=6)
    with pytest.raises(ValueError, match=r"x must have shape \(B, in_caps, in_dim\) = \(B, 10, 3\); got \(5, 10, 4\)"):
        layer(torch.randn(5, 10, 4))
    with pytest.raises(TypeError, match=r"x must have the layer's dtype torch.float32"):
        layer(torch.randn(5, 10, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="got a DGLGraph: SelfAttentionCaps builds its own graph"):
        layer(layer.graph())
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor"):
        layer(torch.ones(5, 10, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="in_caps must be a positive integer; got 0"):
        SelfAttentionCaps(0, 4, 3, 6)
    with pytest.raises(TypeError, match="uniform must be True or False; got 'yes'"):
        SelfAttentionCaps(10, 4, 3, 6, uniform="yes")
    with pytest.raises(ValueError, match="eps must be a positive number; got 0"):
        SelfAttentionCaps(10, 4, 3, 6, eps=0)


def test_keras_truncated_normal_has_the_asked_for_deviation():
    torch.manual_seed(0)
    w = keras_truncated_normal_(torch.empty(200_000), fan=128, scale=2.0)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.01)
    assert w.abs().max().item() <= 2 * math.sqrt(2 / 128) / 0.87962566103423978
