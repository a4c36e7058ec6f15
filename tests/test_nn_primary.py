import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.functional import squash
from dgl_capsules.nn import PrimaryCaps


def test_primary_caps_groups_channels_by_type_with_a_hand_set_kernel():
    caps = PrimaryCaps(in_channels=1, out_types=2, out_dim=3, kernel_size=1, stride=1)
    with torch.no_grad():
        caps.conv.weight.copy_(torch.arange(1.0, 7.0).view(6, 1, 1, 1))  # channel ch = (ch + 1) * pixel
        caps.conv.bias.zero_()
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    out = caps(image)
    assert out.shape == (1, 2 * 2 * 2, 3)
    for y in range(2):
        for x in range(2):
            for k in range(2):
                pixel = image[0, 0, y, x]
                raw = torch.tensor([(k * 3 + d + 1) * pixel for d in range(3)])
                n = raw.norm()
                expected = n**2 / (1 + n**2) * raw / n
                torch.testing.assert_close(out[0, (y * 2 + x) * 2 + k], expected)


def test_primary_caps_feeds_a_conv_capsule_graph_with_matching_ids():
    caps = PrimaryCaps(in_channels=3, out_types=4, out_dim=2, kernel_size=3, stride=2)
    x = torch.randn(2, 3, 11, 9)
    hw = caps.out_hw((11, 9))
    assert hw == (5, 4)
    u = caps(x)
    g = dc.conv_capsule_graph(hw, kernel=2, stride=1, in_types=4, out_types=1)
    assert u.shape[1] == g.num_src_nodes()
    conv = caps.conv(x)  # (B, 4 * 2, 5, 4)
    torch.testing.assert_close(u[1, (3 * 4 + 2) * 4 + 1], squash(conv[1, 2:4, 3, 2]))


def test_primary_caps_rejects_bad_input():
    caps = PrimaryCaps(in_channels=3, out_types=4, out_dim=2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, in_channels=3, H, W\); got \(2, 1, 28, 28\)"):
        caps(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="out_dim must be a positive integer; got 0"):
        PrimaryCaps(3, 4, 0)


def test_bad_input_types_name_x():
    caps = PrimaryCaps(3, 2, 4, kernel_size=3, stride=1)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor of shape \(B, in_channels=3, H, W\); got numpy.ndarray"):
        caps(torch.zeros(1, 3, 5, 5).numpy())
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor .*got dtype torch.uint8"):
        caps(torch.zeros(1, 3, 5, 5, dtype=torch.uint8))
    assert caps(torch.zeros(0, 3, 5, 5)).shape == (0, 9 * 2, 4)
