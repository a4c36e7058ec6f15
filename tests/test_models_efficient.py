"""Efficient-CapsNet: the published network's parameters, order, initialisation, loss and routing settings."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgl_capsules.functional import efficient_squash
from dgl_capsules.models import EfficientCapsNet, RoutedLayer, get_model, model_presets
from dgl_capsules.models.efficient import n_parameters_without_decoder
from dgl_capsules.nn import SelfAttentionCaps


def test_parameter_count_is_the_papers_161824_layer_by_layer():
    """Trainable weights only, decoder excluded; batch norm's running mean and variance are buffers, not counted.

    Published network (Keras summary, channels last, "valid" convolutions on 28x28):
    conv 5x5 1->32 (832) + BN (64), conv 3x3 32->64 (18,496) + BN (128), conv 3x3 64->64 (36,928) + BN (128),
    conv 3x3/2 64->128 (73,856) + BN (256), depthwise 9x9 on 128 channels (10,496), FCCaps W 10x16x8x16 (20,480)
    and b 10x16 (160): 161,824. Keras shows 162,400 "total" because it adds the 576 running statistics.
    """
    net = get_model("efficient-capsnet", "mnist")
    per_layer = [(name, sum(p.numel() for p in m.parameters(recurse=False)))
                 for name, m in net.named_modules() if list(m.parameters(recurse=False))
                 and not name.startswith("decoder")]
    assert per_layer == [
        ("features.0", 832), ("features.2", 64), ("features.3", 18_496), ("features.5", 128),
        ("features.6", 36_928), ("features.8", 128), ("features.9", 73_856), ("features.11", 256),
        ("primary", 10_496), ("digits", 20_480 + 160),
    ]
    assert sum(n for _, n in per_layer) == n_parameters_without_decoder(net) == 161_824
    running = sum(b.numel() for name, b in net.named_buffers() if "running" in name)
    assert running == 576  # 2 x (32 + 64 + 64 + 128): 161,824 + 576 = 162,400
    decoder = sum(p.numel() for p in net.decoder.parameters())
    assert decoder == 82_432 + 525_312 + 803_600 == 1_411_344


def test_the_published_layer_order_and_shapes():
    net = get_model("efficient-capsnet", "mnist")
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d"] * 4  # convolution, ReLU, then batch norm
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [(5, 1, 0), (3, 1, 0), (3, 1, 0),
                                                                             (3, 2, 0)]
    x = torch.rand(2, 1, 28, 28)
    sides = []
    h = x
    for m in net.features:
        h = m(h)
        if isinstance(m, nn.Conv2d):
            sides.append(h.shape[-1])
    assert sides == [24, 22, 20, 9]
    assert net.primary.groups == 128 and net.primary.kernel_size == (9, 9)
    assert net.primary_caps(x).shape == (2, 16, 8)
    assert isinstance(net.digits, SelfAttentionCaps) and (net.digits.in_caps, net.digits.out_caps) == (16, 10)
    assert [m.out_features for m in net.decoder if isinstance(m, nn.Linear)] == [512, 1024, 784]
    assert isinstance(net.decoder[-1], nn.Sigmoid)


def test_batch_norm_follows_keras_defaults_and_the_published_init():
    torch.manual_seed(0)
    net = get_model("efficient-capsnet", "mnist")
    for bn in (m for m in net.features if isinstance(m, nn.BatchNorm2d)):
        assert (bn.eps, bn.momentum) == (1e-3, 0.01)  # Keras momentum 0.99 keeps 99 %: PyTorch's 0.01
    conv = net.features[9]  # 3x3, 64 -> 128: he_normal, std sqrt(2 / 576)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.05)
    assert all((m.bias == 0).all() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    bound = math.sqrt(6 / (81 + 81 * 128))  # glorot_uniform of the (9, 9, 1, 128) depthwise kernel
    assert net.primary.weight.abs().max().item() <= bound and net.primary.weight.std().item() == pytest.approx(
        bound / math.sqrt(3), rel=0.05)
    out = net.decoder[4]  # glorot_normal, std sqrt(2 / (1024 + 784))
    assert out.weight.std().item() == pytest.approx(math.sqrt(2 / (1024 + 784)), rel=0.05)


def test_primary_capsule_n_takes_channels_8n_to_8n_plus_7_then_the_squash():
    """The primary capsules are the depthwise 9x9 convolution of the published network (computed as the dot
    product it is), cut into capsules of 8 channels and squashed; float64 against ``F.conv2d``."""
    net = get_model("efficient-capsnet", "mnist").double().eval()
    with torch.no_grad():
        net.primary.bias.normal_()  # zero at initialisation: give it a part in the comparison
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    u = net.primary_caps(x)
    raw = F.conv2d(net.features(x), net.primary.weight, net.primary.bias, groups=128)  # (B, 128, 1, 1)
    assert raw.shape == (3, 128, 1, 1)
    for n in (0, 5, 15):
        torch.testing.assert_close(u[:, n], efficient_squash(raw.flatten(1)[:, 8 * n:8 * n + 8]), rtol=1e-12,
                                   atol=1e-12)


def test_the_objective_is_the_published_one():
    """margin loss summed over classes + 0.392 x Keras's mean squared error over the 784 pixels, batch means."""
    net = get_model("efficient-capsnet", "mnist").double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([3, 1, 4, 1])
    out = net(x, y)
    lengths = torch.sqrt((out.poses ** 2).sum(-1) + 1e-7)  # Keras's Length layer
    t = nn.functional.one_hot(y, 10).double()
    margin = (t * torch.relu(0.9 - lengths) ** 2 + 0.5 * (1 - t) * torch.relu(lengths - 0.1) ** 2).sum(1).mean()
    mse = ((out.reconstruction - x) ** 2).mean()
    torch.testing.assert_close(net.loss(out, y), margin + 0.392 * mse, rtol=1e-12, atol=0)
    torch.testing.assert_close(net.scores(out), lengths)


def test_the_decoder_reads_the_true_capsule_in_training_and_the_longest_otherwise():
    net = get_model("efficient-capsnet", "tiny").double().eval()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    seen = []
    net.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    y = torch.tensor([0, 5, 9])
    out = net(x, y)
    masked = seen[-1].view(3, 10, 4)
    assert all(masked[b].abs().sum(-1).nonzero().flatten().tolist() == [y[b].item()] for b in range(3))
    torch.testing.assert_close(masked[torch.arange(3), y], out.poses[torch.arange(3), y])
    out = net(x)
    longest = out.lengths.argmax(1)
    torch.testing.assert_close(seen[-1].view(3, 10, 4)[torch.arange(3), longest], out.poses[torch.arange(3), longest])


def test_uniform_routing_has_the_same_parameters_and_uniform_couplings():
    routed = get_model("efficient-capsnet", "tiny")
    off = get_model("efficient-capsnet", "tiny", routing="uniform")
    off.load_state_dict(routed.state_dict())  # strict: the same parameters and buffers
    x = torch.rand(2, 1, 28, 28)
    (layer,) = off.routing(x)
    torch.testing.assert_close(layer.result.coupling, torch.full((4 * 10, 2), 0.1))
    (layer,) = routed.routing(x)
    assert not torch.allclose(layer.result.coupling, torch.full((40, 2), 0.1))
    assert "routing='uniform'" in repr(off)


def test_routing_returns_the_class_layer_with_its_lengths():
    net = get_model("efficient-capsnet", "mnist").eval()
    x = torch.rand(3, 1, 28, 28)
    (layer,) = net.routing(x)
    assert isinstance(layer, RoutedLayer) and layer.name == "digitcaps"
    assert layer.graph.num_edges() == 160 and layer.result.coupling.shape == (160, 3) and len(layer.result.trace) == 1
    torch.testing.assert_close(layer.parent_strength, net.scores(net(x)).t())


def test_presets_other_sizes_and_no_decoder():
    assert model_presets("efficient-capsnet") == ["mnist", "tiny"]
    net = get_model("efficient-capsnet", "tiny", image_size=20, n_classes=4, in_channels=2)
    out = net(torch.rand(2, 2, 20, 20), torch.tensor([1, 3]))
    assert out.poses.shape == (2, 4, 4) and out.reconstruction.shape == (2, 2, 20, 20)
    assert net.primary.kernel_size == (EfficientCapsNet.feature_side(20),) * 2 == (5, 5)
    bare = get_model("efficient-capsnet", "tiny", decoder=None)
    out = bare(torch.rand(2, 1, 28, 28))
    assert bare.decoder is None and out.reconstruction is None and bare.loss(out, torch.tensor([0, 1])).dim() == 0


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    net = get_model("efficient-capsnet", "tiny")
    y = torch.arange(16) % 10
    x = 0.05 * torch.rand(16, 1, 28, 28)
    for i in range(16):
        x[i, 0, 2 * y[i] + 3:2 * y[i] + 6, 4:24] = 1.0
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    losses = []
    for _ in range(20):
        loss = net.loss(net(x, y), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"routing must be one of \('self-attention', 'uniform'\); got 'dynamic'"):
        get_model("efficient-capsnet", "tiny", routing="dynamic")
    with pytest.raises(ValueError, match=r"conv_channels must be 4 positive integers; got \(8, 8\)"):
        get_model("efficient-capsnet", "tiny", conv_channels=(8, 8))
    with pytest.raises(ValueError, match="conv_channels\\[-1\\] = 18 must be a multiple of primary_dim = 4"):
        get_model("efficient-capsnet", "tiny", conv_channels=(4, 8, 8, 18))
    with pytest.raises(ValueError, match="image_size=10 is too small: the four convolutions need at least 11x11"):
        get_model("efficient-capsnet", "tiny", image_size=10)
    with pytest.raises(ValueError, match="recon_weight must be a number >= 0; got -1"):
        get_model("efficient-capsnet", "tiny", recon_weight=-1)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 1, 28, 28\); got \(2, 1, 20, 20\)"):
        get_model("efficient-capsnet", "tiny")(torch.rand(2, 1, 20, 20))
