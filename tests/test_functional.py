import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.functional import coupling_entropy, margin_loss, squash
from helpers import permuted


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
