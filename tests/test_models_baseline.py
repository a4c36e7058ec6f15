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


# The CNN beside Efficient-CapsNet: the same parameter count without the decoder, the same decoder and loss.


def test_efficient_capsnet_preset_matches_its_parameter_count_within_one_percent():
    from dgl_capsules.models import get_model
    from dgl_capsules.models.efficient import n_parameters_without_decoder

    for preset, target_preset in (("efficient-capsnet", "mnist"), ("efficient-capsnet-tiny", "tiny")):
        caps = get_model("efficient-capsnet", target_preset)
        net = get_model("cnn", preset)
        target = n_parameters_without_decoder(caps)
        # counted: convolutions, the two hidden layers, the logits layer and the class-code layer; not the decoder
        body = sum(p.numel() for m in (net.features, net.classifier, net.code) for p in m.parameters())
        assert body == n_parameters_without_decoder(net)
        assert abs(body - target) / target < 0.01
        # the same decoder: the same layers and shapes as Efficient-CapsNet's
        assert [tuple(p.shape) for p in net.decoder.parameters()] == [tuple(p.shape) for p in caps.decoder.parameters()]
        assert net.recon_weight == caps.recon_weight == 0.0005
    assert n_parameters_without_decoder(get_model("efficient-capsnet", "mnist")) == 161_824


def test_decoder_reads_the_true_class_code_in_training_and_the_loss_adds_the_reconstruction():
    from dgl_capsules.models.baseline import CNNOutput

    torch.manual_seed(0)
    net = BaselineCNN(width=0.05, decoder=(16,), code_dim=3).eval()
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([1, 2, 3, 9])
    seen = []
    net.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    out = net(x, y)
    assert isinstance(out, CNNOutput) and out.codes.shape == (4, 10, 3) and out.reconstruction.shape == x.shape
    masked = seen[-1].view(4, 10, 3)
    torch.testing.assert_close(masked[torch.arange(4), y], out.codes[torch.arange(4), y])
    assert masked.abs().sum() == masked[torch.arange(4), y].abs().sum()
    out = net(x)  # no labels: the class with the highest logit
    best = out.logits.argmax(1)
    torch.testing.assert_close(seen[-1].view(4, 10, 3)[torch.arange(4), best], out.codes[torch.arange(4), best])
    ce = torch.nn.functional.cross_entropy(out.logits, y)
    sse = ((out.reconstruction - x) ** 2).flatten(1).sum(1).mean()
    torch.testing.assert_close(net.loss(out, y), ce + 0.0005 * sse)
    assert torch.equal(net.scores(out), out.logits)
    assert "fc=(16, 10), decoder=(16,), recon_weight=0.0005" in repr(net)


def test_without_a_decoder_the_cnn_is_unchanged():
    torch.manual_seed(0)
    a = BaselineCNN(width=0.1)
    assert a.decoder is None and a.code is None
    assert [n for n, _ in a.named_parameters()] == ["features.0.weight", "features.0.bias", "features.3.weight",
                                                    "features.3.bias", "features.6.weight", "features.6.bias",
                                                    "classifier.1.weight", "classifier.1.bias", "classifier.3.weight",
                                                    "classifier.3.bias", "classifier.6.weight", "classifier.6.bias"]
    assert isinstance(a(torch.rand(2, 1, 28, 28)), torch.Tensor)


def test_cnn_settings_are_checked():
    from dgl_capsules.models import get_model

    with pytest.raises(ValueError, match=r"fc must be None or two positive integers \(f1, f2\); got \(3,\)"):
        BaselineCNN(fc=(3,))
    with pytest.raises(ValueError, match="fc must be a positive integer; got 0"):
        BaselineCNN(fc=(3, 0))
    with pytest.raises(ValueError, match="recon_weight must be a number >= 0"):
        BaselineCNN(decoder=(8,), recon_weight=-0.1)
    with pytest.raises(ValueError, match="match_capsnet and match_efficient exclude each other"):
        get_model("cnn", "tiny", match_efficient="tiny")
    assert get_model("cnn", "efficient-capsnet-tiny", width=0.05).width == 0.05  # an explicit width wins
