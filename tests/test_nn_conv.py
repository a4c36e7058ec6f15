import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgl_capsules.nn import ImageConv2d

CASES = [  # in, out, kernel, stride, padding, bias, image (H, W)
    (1, 8, 9, 1, 0, True, (28, 28)),  # CapsNet's first convolution
    (1, 6, 5, 1, 2, True, (12, 10)),  # the CNN's, "same" padding, a rectangular image
    (3, 4, (3, 5), (2, 1), (1, 2), False, (9, 11)),  # RGB, rectangular kernel, stride and padding, no bias
    (2, 5, 5, 2, 0, True, (13, 13)),  # stride 2 (MatrixCapsNet's paper stem)
]


def _pair(conv):
    """``conv`` and an ``nn.Conv2d`` with its weights."""
    ref = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None).double()
    ref.load_state_dict(conv.state_dict())
    return ref


@pytest.mark.parametrize("c_in, c_out, kernel, stride, padding, bias, hw", CASES)
def test_image_conv_equals_conv2d_with_its_gradients(c_in, c_out, kernel, stride, padding, bias, hw):
    conv = ImageConv2d(c_in, c_out, kernel, stride, padding, bias=bias).double()
    ref = _pair(conv)
    x = torch.randn(3, c_in, *hw, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = conv(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    for (name, p), p_ref in zip(conv.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-12, atol=1e-12, msg=name)


def test_image_conv_float32_agrees_with_conv2d_to_rounding():
    conv = ImageConv2d(1, 16, 9)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias), rtol=1e-5, atol=1e-5)


def test_image_conv_gradcheck():
    conv = ImageConv2d(2, 3, 3, stride=2, padding=1).double()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        return torch.func.functional_call(conv, {"weight": w, "bias": b}, (x,))

    inputs = (x, conv.weight.detach().requires_grad_(), conv.bias.detach().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("settings", [dict(in_channels=8), dict(groups=2, in_channels=2, out_channels=4),
                                      dict(dilation=2), dict(padding_mode="reflect", padding=1),
                                      dict(padding="same")])
def test_image_conv_runs_conv2d_itself_outside_its_case(settings):
    args = dict(in_channels=1, out_channels=4, kernel_size=3) | settings
    conv = ImageConv2d(**args)
    ref = nn.Conv2d(**args)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, args["in_channels"], 9, 9)
    torch.testing.assert_close(conv(x), ref(x))
    assert conv(x).is_contiguous()  # nn.Conv2d's own layout


def test_image_conv_is_a_conv2d_with_its_state_dict_and_empty_batches():
    conv = ImageConv2d(1, 4, 5)
    assert isinstance(conv, nn.Conv2d)
    assert list(conv.state_dict()) == list(nn.Conv2d(1, 4, 5).state_dict())
    assert conv(torch.zeros(0, 1, 8, 8)).shape == (0, 4, 4, 4)
    assert conv(torch.rand(1, 8, 8)).shape == (4, 4, 4)  # unbatched input: nn.Conv2d's kernel


def test_image_conv_refuses_what_conv2d_refuses():
    conv = ImageConv2d(1, 4, 5)
    with pytest.raises(RuntimeError, match="expected input"):
        conv(torch.rand(2, 3, 8, 8))
