"""InvertedCaps / InvertedConvCaps against a dense float64 re-statement of the paper's capsule layers."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import dgl_capsules as dc
from dgl_capsules.nn import InvertedCaps, InvertedConvCaps
from dgl_capsules.nn.inverted import window_capsule_graph
from dgl_capsules.testing import reference_inverted


def layer_norm(p, ln):
    if p.shape[-1] == 1:  # the published layers skip it for poses of size 1
        return p
    centred = p - p.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + ln.eps) * ln.weight + ln.bias


def route_dense(U, ln, n_iters, parents):
    """Procedure 1 on votes ``U`` whose parent axis is ``parents`` and whose last axis is the pose.

    The first pass routes uniformly; every later one by softmax over the parents of p_j . v_ij / sqrt(d).
    ``U`` is ``(B, P..., C..., d)``: the parent pose ``p`` has the shape of ``U`` without the child axes.
    """
    d = U.shape[-1]
    child_axes = [a for a in range(1, U.dim() - 1) if a not in parents]
    r = torch.full(U.shape[:-1], 1.0 / math.prod(U.shape[a] for a in parents), dtype=U.dtype)
    for t in range(n_iters):
        if t:
            p_b = p
            for a in child_axes:
                p_b = p_b.unsqueeze(a)
            logits = (U * p_b).sum(-1) / math.sqrt(d)
            r = torch.softmax(logits.flatten(parents[0], parents[-1]), parents[0]).view(logits.shape)
        p = layer_norm((r[..., None] * U).sum(child_axes), ln)
    return p


def published_fc(layer, poses):
    """The paper's fully connected capsule layer, densely: votes (B, n_in, n_out, d), routing over n_out."""
    b, w = poses.shape[0], layer.w
    if layer.pose == "matrix":
        s = layer.side
        U = torch.einsum("biax,ixdj->bijad", poses.view(b, layer.n_in, s, s), w).flatten(-2)
    else:
        U = torch.einsum("bia,iajd->bijd", poses, w)
    return route_dense(U, layer.nonlinear_act, layer.n_iters, parents=[2])  # (B, n_out, d)


def published_conv(layer, poses):
    """The paper's convolutional capsule layer, densely: every child of every window routed over the parent types
    at that window's position (votes ``(B, Ho, Wo, C, A, ky, kx, d)``)."""
    k, s = layer.kernel, layer.stride
    patches = poses.unfold(1, k, s).unfold(2, k, s)  # (B, Ho, Wo, A, d_in, ky, kx)
    if layer.pose == "matrix":
        side = layer.side
        U = torch.einsum("bhwnaxkl,klnxdc->bhwcnklad", patches.unflatten(4, (side, side)), layer.w).flatten(-2)
    else:
        U = torch.einsum("bhwnakl,klnacd->bhwcnkld", patches, layer.w)
    # parents: the position (h, w) is shared by a window, so the softmax is over c alone
    d = U.shape[-1]
    r = torch.full(U.shape[:-1], 1.0 / U.shape[3], dtype=U.dtype)
    for t in range(layer.n_iters):
        if t:
            r = torch.softmax((U * p[:, :, :, :, None, None, None]).sum(-1) / math.sqrt(d), dim=3)
        p = layer_norm((r[..., None] * U).sum((4, 5, 6)), layer.nonlinear_act)
    return p  # (B, Ho, Wo, C, d)


def randomised(layer):
    """Float64, with a LayerNorm that is not the identity's."""
    layer = layer.double()
    with torch.no_grad():
        layer.nonlinear_act.weight.add_(0.3 * torch.randn_like(layer.nonlinear_act.weight))
        layer.nonlinear_act.bias.add_(0.3 * torch.randn_like(layer.nonlinear_act.bias))
    return layer


def close(got, want, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("pose, d_in, d_out", [("matrix", 16, 16), ("vector", 8, 6), ("vector", 5, 1)])
@pytest.mark.parametrize("n_iters", [1, 2, 3])
def test_fc_equals_the_papers_layer(pose, d_in, d_out, n_iters):
    layer = randomised(InvertedCaps(12, 5, d_in, d_out, pose=pose, n_iters=n_iters))
    poses = torch.randn(3, 12, d_in, dtype=torch.float64)
    close(layer(poses), published_fc(layer, poses))


@pytest.mark.parametrize("pose, d_in, d_out", [("matrix", 4, 4), ("vector", 3, 5)])
@pytest.mark.parametrize("kernel, stride", [(3, 2), (2, 1), (2, 2)])
def test_conv_per_window_equals_the_papers_layer(pose, d_in, d_out, kernel, stride):
    layer = randomised(InvertedConvCaps(3, 2, kernel, stride, d_in, d_out, pose=pose, n_iters=3))
    poses = torch.randn(2, 6, 5, 3, d_in, dtype=torch.float64)
    close(layer(poses), published_conv(layer, poses))


def test_conv_exact_overlap_equals_the_reference_on_the_conv_graph():
    layer = randomised(InvertedConvCaps(2, 3, 2, 1, 4, 4, normalise="overlap", n_iters=3))
    poses = torch.randn(2, 4, 4, 2, 4, dtype=torch.float64)
    g = layer.graph((4, 4))
    assert g.num_src_nodes() == 4 * 4 * 2  # one node per child: its couplings span every window
    votes = layer.votes(g, poses)
    want = reference_inverted(g, votes, layer.nonlinear_act.weight, layer.nonlinear_act.bias, n_iters=3)
    out, r = layer(poses, return_routing=True)
    close(out, want.poses.transpose(0, 1).reshape(2, 3, 3, 3, 4))
    window = randomised(InvertedConvCaps(2, 3, 2, 1, 4, 4, normalise="window", n_iters=3))
    window.load_state_dict(layer.state_dict())
    assert not torch.allclose(window(poses), out)  # overlapping windows: the two normalisations differ


def test_normalisations_agree_without_overlap():
    layer = randomised(InvertedConvCaps(2, 3, 2, 2, 4, 4, normalise="overlap"))
    window = InvertedConvCaps(2, 3, 2, 2, 4, 4, normalise="window").double()
    window.load_state_dict(layer.state_dict())
    poses = torch.randn(2, 6, 4, 2, 4, dtype=torch.float64)
    close(window(poses), layer(poses))


def test_window_graph_has_one_node_per_window_child_with_the_conv_graphs_edges():
    conv = dc.conv_capsule_graph((5, 4), kernel=3, stride=1, in_types=2, out_types=3)
    g = window_capsule_graph((5, 4), kernel=3, stride=1, in_types=2, out_types=3)
    assert g.num_src_nodes() == 3 * 2 * 9 * 2 and g.num_dst_nodes() == conv.num_dst_nodes()
    assert torch.equal(g.edges()[1], conv.edges()[1])
    for k in conv.edata.keys():
        assert torch.equal(g.edata[k], conv.edata[k])
    src, dst = g.edges()
    assert bool((g.out_degrees() == 3).all())  # the 3 parent types at one position
    position = dst // 3
    assert bool((position == src // (9 * 2)).all())
    g.edata["x"] = torch.zeros(g.num_edges())  # a caller's feature stays on its handle
    assert "x" not in window_capsule_graph((5, 4), kernel=3, stride=1, in_types=2, out_types=3).edata


def test_published_state_dicts_load_strictly():
    class PublishedFC(nn.Module):  # names and shapes of the paper's CapsuleFC (matrix poses)
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(12, 4, 4, 5))
            self.nonlinear_act = nn.LayerNorm(16)

    class PublishedConv(nn.Module):  # CapsuleCONV: kernel 3, 32 -> 32 types, matrix poses
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 3, 32, 4, 4, 32))
            self.nonlinear_act = nn.LayerNorm(16)

    InvertedCaps(12, 5).load_state_dict(PublishedFC().state_dict(), strict=True)
    InvertedConvCaps(32, 32, 3, 2).load_state_dict(PublishedConv().state_dict(), strict=True)
    assert InvertedCaps(12, 5, 8, 6, pose="vector").w.shape == (12, 8, 5, 6)
    assert InvertedConvCaps(2, 3, 3, 1, 8, 6, pose="vector").w.shape == (3, 3, 2, 8, 3, 6)


def test_init_scale_is_the_published_one():
    torch.manual_seed(0)
    w = InvertedCaps(800, 10).w  # std sqrt(n_out / (sqrt(d) * n_in)) = sqrt(10 / 3200)
    assert abs(w.std().item() / math.sqrt(10 / 3200) - 1) < 0.02
    w = InvertedConvCaps(32, 32, 3, 2).w  # std sqrt(C / (sqrt(d) * A * k^2))
    assert abs(w.std().item() / math.sqrt(32 / (4 * 32 * 9)) - 1) < 0.02


def test_return_routing_trace_batch_independence_empty_batch_dtype_and_repr():
    layer = InvertedCaps(6, 3)
    poses = torch.randn(4, 6, 16)
    out, r = layer(poses, return_trace=True)
    assert out.shape == (4, 3, 16) and r.coupling.shape == (18, 4) and len(r.trace) == 2
    torch.testing.assert_close(layer(poses[1:2]), out[1:2], rtol=1e-5, atol=1e-6)
    assert layer(poses[:0]).shape == (0, 3, 16)
    assert layer(poses.double()).dtype == torch.float64
    conv = InvertedConvCaps(2, 3, 2, 1)
    out, r = conv(torch.randn(2, 3, 3, 2, 16), return_routing=True)
    g = conv.graph((3, 3))
    assert r.trace is None and r.coupling.shape == (g.num_edges(), 2) and len(g.edata) == 4
    assert conv(torch.randn(0, 3, 3, 2, 16)).shape == (0, 2, 2, 3, 16)
    assert "pose='matrix', n_iters=2, normalise='window'" in repr(conv)
    assert "n_in=6, n_out=3, d_in=16, d_out=16, pose='matrix', n_iters=2" in repr(layer)
    before = layer.w.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.w)


def test_gradients_flow_to_weights_and_layer_norm():
    layer = randomised(InvertedConvCaps(1, 2, 2, 1, 4, 4, n_iters=2))
    poses = torch.randn(2, 3, 3, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: layer(p), (poses,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    layer(poses).square().sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in layer.parameters())


@pytest.mark.parametrize("make, match", [
    (lambda: InvertedCaps(0, 3), r"^n_in must be a positive integer"),
    (lambda: InvertedCaps(4, 3, 16, 9), r"^pose='matrix' needs d_in = d_out = a square"),
    (lambda: InvertedCaps(4, 3, 15, 15), r"^pose='matrix' needs d_in = d_out = a square"),
    (lambda: InvertedCaps(4, 3, pose="quaternion"), r"^pose must be one of \('matrix', 'vector'\)"),
    (lambda: InvertedCaps(4, 3, n_iters=0), r"^n_iters must be an integer >= 1"),
    (lambda: InvertedCaps(4, 3, eps=-1.0), r"^eps must be a positive number"),
    (lambda: InvertedConvCaps(2, 3, 0, 1), r"^kernel must be a positive integer"),
    (lambda: InvertedConvCaps(2, 3, 2, 1, normalise="child"), r"^normalise must be one of \('window', 'overlap'\)"),
    (lambda: InvertedConvCaps(2, 3, 2, 1, d_in=0), r"^d_in must be a positive integer"),
])
def test_bad_constructor_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_forward_inputs_are_named():
    layer, conv = InvertedCaps(6, 3), InvertedConvCaps(2, 3, 3, 1)
    with pytest.raises(TypeError, match=r"^poses must be a torch.Tensor .*torch.from_numpy"):
        layer(np.zeros((2, 6, 16)))
    with pytest.raises(TypeError, match=r"^poses must be float32 or float64"):
        layer(torch.zeros(2, 6, 16, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"^poses must have shape \(B, n_in, d_in\) = \(B, 6, 16\); got \(2, 5, 16\)"):
        layer(torch.zeros(2, 5, 16))
    with pytest.raises(ValueError, match=r"^poses must have shape \(B, H, W, in_types, d_in\) = \(B, H, W, 2, 16\)"):
        conv(torch.zeros(2, 4, 4, 3, 16))
    with pytest.raises(ValueError, match=r"^poses must have a grid \(H, W\) of at least kernel = 3; got \(2, 4\)"):
        conv(torch.zeros(2, 2, 4, 2, 16))
