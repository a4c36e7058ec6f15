import pytest
import torch

from dgl_capsules.models import BaselineCNN, CapsNet


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_logits_shape_and_no_routing():
    net = BaselineCNN(width=0.1)
    out = net(torch.rand(3, 1, 28, 28))
    assert net.scores(out).shape == (3, 10)
    assert net.routing(torch.rand(1, 1, 28, 28)) == []


def test_paper_widths():
    net = BaselineCNN()
    convs = [m.out_channels for m in net.features if isinstance(m, torch.nn.Conv2d)]
    fcs = [m.out_features for m in net.classifier if isinstance(m, torch.nn.Linear)]
    assert convs == [256, 256, 128] and fcs == [328, 192, 10]


def test_matching_reaches_a_capsnets_parameter_count():
    target = n_params(CapsNet.from_preset("small"))
    net = BaselineCNN.matching(target)
    assert abs(n_params(net) - target) / target < 0.01
    assert n_params(BaselineCNN(width=net.width * 0.9)) < n_params(net)


def test_loss_is_cross_entropy_by_hand():
    net = BaselineCNN(width=0.05)
    logits = torch.tensor([[2.0, 0.0] + [-30.0] * 8])
    expected = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 1))
    assert net.loss(logits, torch.tensor([0])).item() == pytest.approx(expected.item(), abs=1e-6)


def test_multi_hot_loss_is_binary_cross_entropy():
    net = BaselineCNN(width=0.05)
    logits = torch.zeros(1, 10)
    y = torch.zeros(1, 10)
    y[0, [2, 5]] = 1
    assert net.loss(logits, y).item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    net = BaselineCNN(width=0.05, dropout=0.5)
    seen = []
    net.classifier[-1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(4, 1, 28, 28)
    net.eval()
    assert torch.equal(net(x), net(x))
    plain = seen[-1]
    net.train()
    net(x)
    dropped = seen[-1]
    # before the last layer, training zeroes each feature with p = 0.5 and doubles the others
    kept = dropped != 0
    assert torch.allclose(dropped[kept], 2 * plain[kept])
    live = plain != 0
    assert 0.3 < (~kept[live]).float().mean() < 0.7
    assert not torch.equal(net(x), net(x))  # new masks every call


def test_few_steps_lower_the_loss():
    net = BaselineCNN(width=0.05, dropout=0.0)
    y = torch.arange(16) % 10
    x = torch.zeros(16, 1, 28, 28)
    for i in range(16):
        x[i, 0, 2 * y[i]:2 * y[i] + 3, :] = 1.0  # the class is where the bright band is
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = net.loss(net(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.75 * first


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="width must be > 0"):
        BaselineCNN(width=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        BaselineCNN(dropout=1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 1, 28, 28\); got \(2, 3, 28, 28\)"):
        BaselineCNN(width=0.05)(torch.rand(2, 3, 28, 28))


def test_repr():
    assert "width=0.050, dropout=0.5" in repr(BaselineCNN(width=0.05))
