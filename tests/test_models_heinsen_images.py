import pytest
import torch

from dgl_capsules.models import get_model, list_models, model_presets
from dgl_capsules.models.heinsen_images import PRESETS, HeinsenImageNet


def tiny(**kw):
    return HeinsenImageNet(in_channels=2, image_size=16, n_classes=3, **dict(PRESETS["tiny"], **kw))


def test_registered_with_presets():
    assert "heinsen" in list_models() and model_presets("heinsen") == ["small", "tiny"]
    net = get_model("heinsen", "tiny", in_channels=2, image_size=32, n_classes=10)
    assert isinstance(net, HeinsenImageNet) and net.grid == 4 and net.n_primary == 4 * 4 * 2
    assert get_model("heinsen", "small", in_channels=2, image_size=32).n_primary == 4 * 4 * 8


def test_shapes():
    net = tiny()
    x = torch.rand(5, 2, 16, 16)
    a, mu = net.primary_caps(x)
    assert net.grid == 2 and a.shape == (5, 8) and mu.shape == (5, 8, 4, 4)
    out = net(x)
    assert net.scores(out).shape == (5, 3) and out.poses.shape == (5, 3, 4, 4) and out.sigma2.shape == (5, 3, 4, 4)
    assert (out.sigma2 > 0).all()
    assert net.loss(out, torch.tensor([0, 1, 2, 0, 1])).shape == ()
    assert net.loss(out, torch.eye(3)[[0, 1, 2, 0, 1]]).shape == ()
    assert net(torch.rand(0, 2, 16, 16)).logits.shape == (0, 3)


def test_image_size_odd_rounds_up():
    net = HeinsenImageNet(in_channels=1, image_size=28, n_classes=10, **PRESETS["tiny"])  # 28 -> 14 -> 7 -> 4
    assert net.grid == 4 and net(torch.rand(2, 1, 28, 28)).logits.shape == (2, 10)


def test_coordinate_addition():
    """Two positions with the same features get poses that differ by exactly their coordinates."""
    net = tiny().eval()
    a, mu = net.primary_caps(torch.zeros(1, 2, 16, 16))  # a constant image: equal features everywhere
    mu = mu.view(2, 2, 2, 4, 4)  # (h, w, T, p, p)
    diff = mu[1, 0] - mu[0, 1]  # (y, x) = (0.75, 0.25) minus (0.25, 0.75)
    want = torch.zeros(2, 4, 4)
    want[:, 0, 0], want[:, 0, 1] = 0.5, -0.5
    torch.testing.assert_close(diff, want)


def test_loss_is_cross_entropy():
    net = tiny()
    out = net(torch.rand(4, 2, 16, 16))
    y = torch.tensor([2, 0, 1, 1])
    want = -torch.log_softmax(out.logits, 1)[torch.arange(4), y].mean()
    torch.testing.assert_close(net.loss(out, y), want)


def test_loss_falls():
    torch.manual_seed(0)
    net = tiny()
    x = torch.rand(12, 2, 16, 16)
    y = torch.arange(12) % 3
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for step in range(15):
        loss = net.loss(net(x), y, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_routing_matches_forward():
    net = tiny().eval()
    x = torch.rand(3, 2, 16, 16)
    routed = net.routing(x)
    assert [r.name for r in routed] == ["hidden", "classes"] and {r.routing for r in routed} == {"heinsen"}
    a, _ = net.primary_caps(x)
    torch.testing.assert_close(routed[0].child_strength, torch.sigmoid(a).T, rtol=0, atol=0)
    torch.testing.assert_close(routed[1].child_strength, routed[0].parent_strength, rtol=0, atol=0)
    hidden, classes = routed
    assert hidden.graph.num_src_nodes() == 8 and hidden.graph.num_dst_nodes() == 8
    assert classes.graph.num_edges() == 8 * 3 and classes.parent_strength.shape == (3, 3)
    assert len(classes.result.trace) == net.routings[1].n_iters
    out = net(x)
    torch.testing.assert_close(classes.result.activations.T, out.logits)
    torch.testing.assert_close(classes.result.poses.movedim(0, 1), out.poses)
    # couplings of every child sum to 1 over its parents
    src = hidden.graph.edges()[0]
    sums = torch.zeros(8, 3).index_add_(0, src, hidden.result.coupling)
    torch.testing.assert_close(sums, torch.ones(8, 3))


def test_errors():
    with pytest.raises(ValueError, match="pose must be >= 2"):
        tiny(pose=1)
    with pytest.raises(ValueError, match="hidden_caps"):
        tiny(hidden_caps=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 2, 16, 16\); got \(1, 1, 16, 16\)"):
        tiny()(torch.rand(1, 1, 16, 16))
