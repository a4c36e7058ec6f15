import math

import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.functional import coupling_entropy, margin_loss, squash
from dgl_capsules.testing import permuted


def test_squash_matches_the_paper_and_stays_below_one():
    s = torch.randn(100, 7, dtype=torch.float64) * torch.logspace(-3, 3, 100, dtype=torch.float64)[:, None]
    n = s.norm(dim=-1, keepdim=True)
    expected = n**2 / (1 + n**2) * s / n
    torch.testing.assert_close(squash(s), expected, rtol=1e-12, atol=1e-15)
    assert (squash(s).norm(dim=-1) < 1).all()
    assert squash(torch.tensor([3.0, 4.0])).norm().item() == pytest.approx(25 / 26)


def test_squash_at_zero_is_finite_with_finite_gradient():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        s = torch.zeros(2, 5, dtype=dtype, requires_grad=True)
        v = squash(s)
        v.sum().backward()
        assert torch.isfinite(v).all() and (v == 0).all()
        assert torch.isfinite(s.grad).all()


def test_squash_gradcheck():
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(squash, (s,))


def test_margin_loss_against_hand_computation():
    lengths = torch.tensor([[0.95, 0.3, 0.05], [0.5, 0.05, 0.2]])
    target = torch.tensor([0, 0])
    # sample 1: present 0; absent 0.5 * 0.2**2 = 0.02 (third class below m-)
    # sample 2: present (0.9 - 0.5)**2 = 0.16; absent 0.5 * 0.1**2 = 0.005
    expected = (0.02 + 0.165) / 2
    assert margin_loss(lengths, target).item() == pytest.approx(expected)
    hot = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert margin_loss(lengths, hot).item() == pytest.approx(expected)
    two = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # sample 1: (0.9 - 0.3)**2 = 0.36; sample 2: 0.5 * (0.4**2 + 0.1**2) = 0.085
    assert margin_loss(lengths, two).item() == pytest.approx((0.36 + 0.085) / 2)


def test_margin_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"lengths must have shape \(B, K\); got \(3,\)"):
        margin_loss(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target must have shape \(B,\) = \(2,\) or \(B, K\); got \(3,\)"):
        margin_loss(torch.rand(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target must have shape \(B,\) or \(B, K\) = \(2, 4\); got \(2, 3\)"):
        margin_loss(torch.rand(2, 4), torch.zeros(2, 3))


@pytest.mark.parametrize(
    "g",
    [dc.capsule_graph(5, 7), dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=3)],
    ids=["complete", "conv"],
)
def test_uniform_coupling_has_entropy_log_parents(g):
    h, perm = permuted(g)
    deg = h.out_degrees().to(torch.float64)
    src, _ = h.edges()
    uniform = (1 / deg[src]).unsqueeze(1).expand(-1, 3)
    entropy = coupling_entropy(h, uniform)
    assert entropy.shape == (h.num_src_nodes(), 3)
    torch.testing.assert_close(entropy, deg.log().unsqueeze(1).expand(-1, 3))


def test_one_hot_coupling_has_zero_entropy():
    g = dc.capsule_graph(4, 3)
    src, dst = g.edges()
    c = (dst == src % 3).double()
    assert torch.equal(coupling_entropy(g, c), torch.zeros(4, dtype=torch.float64))


def test_coupling_entropy_rejects_a_coupling_from_another_graph():
    with pytest.raises(ValueError, match=r"coupling must have shape \(\|E\|, \*\) with \|E\| = 12 .*got \(10, 2\)"):
        coupling_entropy(dc.capsule_graph(4, 3), torch.rand(10, 2))


# Reliability (issue 15): huge vectors, exact zeros in couplings, weighted entropy.


def squash_formula(s):
    """The paper's squash for very long float64 vectors, in Python floats (math.hypot does not overflow)."""
    out = []
    for row in s.tolist():
        n = math.hypot(*row)
        out.append([x / n * (1 / (1 + (1 / n) ** 2)) for x in row])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("dtype, big", [(torch.float32, 1e20), (torch.float32, 3e38), (torch.float64, 1e200)])
def test_squash_of_huge_vectors_is_the_unit_vector_with_finite_gradient(dtype, big):
    s = (torch.tensor([[3.0, 4.0, 0.0], [1.0, -2.0, 2.0], [1.0, 0.0, 0.0]], dtype=torch.float64) * (big / 4))
    s = s.to(dtype).requires_grad_(True)
    v = squash(s)
    torch.testing.assert_close(v.double(), squash_formula(s.detach().double()), rtol=1e-6, atol=0)
    g = torch.randn(3, 3, dtype=dtype)
    (grad,) = torch.autograd.grad(v, s, g)
    assert torch.isfinite(grad).all()
    # d squash / ds ~ (I - u u^T) / |s| for long s: the gradient is tiny and orthogonal to s
    n = big * (s.detach().double() / big).norm(dim=-1, keepdim=True)
    u = s.detach().double() / n
    expect = (g.double() - u * (g.double() * u).sum(-1, keepdim=True)) / n
    if 1 / big > torch.finfo(dtype).tiny * 1e3:  # (else the gradient is subnormal: only finite)
        torch.testing.assert_close(grad.double(), expect, rtol=1e-4, atol=1e-6 / big)


def test_squash_still_matches_the_paper_between():
    s = torch.randn(50, 4, dtype=torch.float64) * torch.logspace(-100, 100, 50, dtype=torch.float64)[:, None]
    n = s.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(squash(s), n**2 / (1 + n**2) * s / n, rtol=1e-12, atol=0)


def test_coupling_entropy_has_finite_gradients_at_exact_zeros():
    g = dc.capsule_graph(3, 4)
    c = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25] * 4], dtype=torch.float64)
    c = c.reshape(-1, 1).requires_grad_(True)  # edges of capsule_graph(3, 4) are i * 4 + j
    h = coupling_entropy(g, c)
    torch.testing.assert_close(h[:, 0], torch.tensor([0.0, math.log(2), math.log(4)], dtype=torch.float64))
    (grad,) = torch.autograd.grad(h.sum(), c)
    assert torch.isfinite(grad).all()
    nonzero = c.detach() > 0
    torch.testing.assert_close(grad[nonzero], -(c.detach()[nonzero].log() + 1))


def test_coupling_entropy_trains_on_routing_with_exact_zeros():
    g = dc.capsule_graph(8, 3)
    votes = (30 * torch.randn(g.num_edges(), 2, 4)).requires_grad_(True)
    r = dc.routing.dynamic_routing(g, votes)
    assert (r.coupling == 0).any()  # long votes: some couplings are exactly 0
    (grad,) = torch.autograd.grad(coupling_entropy(g, r.coupling).mean(), votes)
    assert torch.isfinite(grad).all()


def test_coupling_entropy_weighted_mean():
    g = dc.conv_capsule_graph((4, 4), 2, 2, 1, 2)
    c = torch.rand(g.num_edges(), 3, dtype=torch.float64)
    h = coupling_entropy(g, c)  # (N_src, 3)
    w = torch.rand(g.num_src_nodes(), 3, dtype=torch.float64)
    w[0] = 0
    torch.testing.assert_close(coupling_entropy(g, c, weights=w), (w * h).sum(0) / w.sum(0))
    got = coupling_entropy(g, c.float(), weights=w)  # weights cast to the coupling's dtype
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert torch.equal(coupling_entropy(g, c, weights=torch.zeros_like(w)), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"weights must have shape \(N_src, \*\) = \(16, 3\); got \(16,\)"):
        coupling_entropy(g, c, weights=w[:, 0])
    with pytest.raises(ValueError, match=r"weights must be >= 0"):
        coupling_entropy(g, c, weights=-w)
    with pytest.raises(TypeError, match=r"weights must be a floating-point tensor .*got dtype torch.int64"):
        coupling_entropy(g, c, weights=torch.ones(16, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"coupling must be a torch.Tensor .*got numpy.ndarray"):
        coupling_entropy(g, c.numpy())


def test_coupling_entropy_on_int32_graphs():
    g = dc.conv_capsule_graph((4, 4), 2, 1, 1, 2)
    c = torch.rand(g.num_edges(), 2)
    torch.testing.assert_close(coupling_entropy(g.int(), c), coupling_entropy(g, c), rtol=0, atol=0)


def test_losses_name_an_argument_of_the_wrong_type():
    with pytest.raises(TypeError, match=r"lengths must be a torch.Tensor of shape \(B, K\); got numpy.ndarray"):
        margin_loss(torch.rand(2, 4).numpy(), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"lengths must be a floating-point tensor .*got dtype torch.int64"):
        margin_loss(torch.ones(2, 4, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"target must be a torch.Tensor of shape \(B,\) or \(B, K\); got list"):
        margin_loss(torch.rand(2, 4), [0, 1])
    with pytest.raises(TypeError, match=r"a must be a torch.Tensor of shape \(B, K\); got numpy.ndarray"):
        dc.functional.spread_loss(torch.rand(2, 3).numpy(), torch.tensor([0, 1]), 0.2)
    with pytest.raises(TypeError, match=r"target must be a torch.Tensor"):
        dc.functional.spread_loss(torch.rand(2, 3), [0, 1], 0.2)
