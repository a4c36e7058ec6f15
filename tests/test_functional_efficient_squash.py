"""The squash of Efficient-CapsNet: the published formula, its limits and its gradients."""
import pytest
import torch

from dgl_capsules.functional import efficient_squash


def published(s, eps=1e-20):
    """The formula of the published code, written as it is there (float64 keeps it accurate for |s| >= 1e-6)."""
    n = torch.linalg.vector_norm(s, dim=-1, keepdim=True)
    return (1 - 1 / (torch.exp(n) + eps)) * (s / (n + eps))


def test_equals_the_published_formula_over_many_lengths():
    s = torch.randn(200, 8, dtype=torch.float64) * torch.logspace(-5, 2, 200, dtype=torch.float64)[:, None]
    torch.testing.assert_close(efficient_squash(s), published(s), rtol=1e-9, atol=1e-15)
    n = s.norm(dim=-1)
    torch.testing.assert_close(efficient_squash(s).norm(dim=-1), -torch.expm1(-n), rtol=1e-9, atol=0)
    assert (efficient_squash(s).norm(dim=-1) <= 1).all()


def test_lengths_by_hand_and_a_larger_eps():
    v = efficient_squash(torch.tensor([3.0, 4.0], dtype=torch.float64))  # |s| = 5
    assert v.norm().item() == pytest.approx(1 - torch.exp(torch.tensor(-5.0, dtype=torch.float64)).item(), rel=1e-12)
    s = torch.tensor([[0.3, 0.4]], dtype=torch.float64)  # |s| = 0.5
    want = (1 - 1 / (torch.exp(torch.tensor(0.5, dtype=torch.float64)) + 0.1)) * s / (0.5 + 0.1)
    torch.testing.assert_close(efficient_squash(s, eps=0.1), want, rtol=1e-12, atol=0)


def test_short_vectors_keep_their_length_and_float32_loses_no_digits():
    s = torch.tensor([[1e-9, 0.0], [0.0, 3e-5]], dtype=torch.float32)
    # 1 - exp(-n) ~ n: the published form gives exactly 0 here in float32 (exp(1e-9) rounds to 1)
    torch.testing.assert_close(efficient_squash(s), s, rtol=1e-4, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_at_zero_the_value_is_zero_and_the_gradient_the_identity(dtype):
    s = torch.zeros(5, dtype=dtype, requires_grad=True)
    (jac,) = torch.autograd.functional.jacobian(efficient_squash, (s,))
    assert (efficient_squash(s) == 0).all()
    torch.testing.assert_close(jac, torch.eye(5, dtype=dtype), rtol=1e-6, atol=1e-6)


def test_gradcheck():
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(efficient_squash, (s,))
    s = (torch.randn(3, 4, dtype=torch.float64) * 1e-4).requires_grad_(True)
    assert torch.autograd.gradcheck(efficient_squash, (s,))
    s = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: efficient_squash(x, dim=1), (s,))


@pytest.mark.parametrize("big", [1e3, 1e30, 3e38])
def test_long_vectors_give_unit_vectors_with_finite_gradients(big):
    s = torch.tensor([[big, 0.0, 0.0], [0.0, -big, big]], dtype=torch.float32, requires_grad=True)
    v = efficient_squash(s)
    v.sum().backward()
    want = s.detach().double() / s.detach().double().norm(dim=-1, keepdim=True)
    torch.testing.assert_close(v.double(), want, rtol=1e-6, atol=0)
    assert torch.isfinite(s.grad).all()


def test_bad_inputs_name_the_argument():
    with pytest.raises(TypeError, match=r"s must be a floating-point tensor of shape \(\*, D\); got dtype torch.int64"):
        efficient_squash(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"s must be a torch.Tensor"):
        efficient_squash([1.0, 2.0])
    for eps in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eps must be a positive number"):
            efficient_squash(torch.ones(2, 3), eps=eps)
