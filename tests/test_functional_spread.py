import math

import pytest
import torch

from dgl_capsules.functional import spread_loss, spread_margin


def test_spread_loss_by_hand():
    a = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.6, 0.7]])
    # sample 0, target 0: a_t - a_i = 0.4, 0.8 -> max(0, 0.5 - 0.4)^2 = 0.01, 0
    # sample 1, target 1: a_t - a_i = 0.4, -0.1 -> 0.01 + 0.6^2 = 0.37
    loss = spread_loss(a, torch.tensor([0, 1]), margin=0.5)
    torch.testing.assert_close(loss, torch.tensor((0.01 + 0.37) / 2))
    assert spread_loss(a, torch.tensor([0, 2]), margin=0.0).item() == 0.0
    # the target class never counts, even with a huge margin
    one = spread_loss(torch.tensor([[0.3]]), torch.tensor([0]), margin=10.0)
    assert one.item() == 0.0


def test_spread_loss_gradient_pushes_target_up_and_others_down():
    a = torch.tensor([[0.5, 0.5, 0.1]], requires_grad=True)
    spread_loss(a, torch.tensor([1]), margin=0.2).backward()
    assert a.grad[0, 1] < 0 and a.grad[0, 0] > 0 and a.grad[0, 2] == 0


def test_spread_margin_schedule():
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert spread_margin(0) == pytest.approx(0.2 + 0.79 * sig(-4))
    assert spread_margin(200000) == pytest.approx(0.2 + 0.79 * 0.5)
    assert spread_margin(100, step_scale=50) == pytest.approx(0.2 + 0.79 * sig(-2))
    assert spread_margin(10**9) == pytest.approx(0.2 + 0.79 * sig(10))
    assert spread_margin(14 * 50000) == spread_margin(10**9)
    steps = [0, 10, 1000, 50000, 300000, 700000]
    ms = [spread_margin(s) for s in steps]
    assert all(b > a for a, b in zip(ms, ms[1:]))


def test_spread_bad_inputs():
    with pytest.raises(ValueError, match=r"a must have shape \(B, K\); got \(3,\)"):
        spread_loss(torch.rand(3), torch.tensor([0]), 0.2)
    with pytest.raises(ValueError, match=r"target must have shape \(B,\) = \(2,\) of class indices or "
                                         r"\(B, K\) = \(2, 3\) of 0/1 multi-hot labels; got \(2, 4\)"):
        spread_loss(torch.rand(2, 3), torch.zeros(2, 4), 0.2)
    with pytest.raises(ValueError, match=r"margin must be a scalar; got shape \(2,\)"):
        spread_loss(torch.rand(2, 3), torch.tensor([0, 1]), torch.tensor([0.2, 0.3]))
    with pytest.raises(ValueError, match="step must be >= 0; got -1"):
        spread_margin(-1)
    with pytest.raises(ValueError, match="step_scale must be positive; got 0"):
        spread_margin(5, step_scale=0)


def test_spread_loss_multi_hot_compares_every_target_with_every_other_class():
    a = torch.tensor([[0.9, 0.2, 0.6, 0.5], [0.1, 0.7, 0.3, 0.8]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.float64)
    m = 0.4
    by_hand = [
        # sample 0: targets 0 (0.9) and 2 (0.6) against 1 (0.2) and 3 (0.5)
        max(0, m - 0.7) ** 2 + max(0, m - 0.4) ** 2 + max(0, m - 0.4) ** 2 + max(0, m - 0.1) ** 2,
        # sample 1: targets 1 (0.7) and 3 (0.8) against 0 (0.1) and 2 (0.3)
        max(0, m - 0.6) ** 2 + max(0, m - 0.4) ** 2 + max(0, m - 0.7) ** 2 + max(0, m - 0.5) ** 2,
    ]
    loss = spread_loss(a, y, margin=m)
    assert loss.item() == pytest.approx(sum(by_hand) / 2)
    one_hot = torch.nn.functional.one_hot(torch.tensor([2, 3]), 4)
    assert spread_loss(a, one_hot, m).item() == pytest.approx(spread_loss(a, torch.tensor([2, 3]), m).item())
    loss.backward()
    assert a.grad[0, 3] > 0 and a.grad[0, 2] < 0  # non-target pushed down, target pushed up
