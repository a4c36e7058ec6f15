import pytest
import torch

from dgl_capsules.models import CapsNet, CapsNetOutput


def tiny(**kw):
    return CapsNet.from_preset("tiny", **kw)


def test_shapes_and_scores_are_capsule_lengths():
    net = tiny()
    out = net(torch.rand(3, 1, 28, 28), y=torch.tensor([1, 2, 3]))
    assert out.poses.shape == (3, 10, 4)
    assert out.reconstruction.shape == (3, 1, 28, 28)
    assert torch.equal(net.scores(out), out.poses.norm(dim=-1))
    assert (net.scores(out) < 1).all()
    assert ((out.reconstruction > 0) & (out.reconstruction < 1)).all()


def test_paper_preset_has_the_papers_parameter_counts():
    # Sabour et al. 2017: 8.2M parameters, 6.8M without the reconstruction subnetwork.
    net = CapsNet.from_preset("paper")
    total = sum(p.numel() for p in net.parameters())
    decoder = sum(p.numel() for p in net.decoder.parameters())
    assert net.n_primary == 1152
    assert round(total / 1e6, 1) == 8.2
    assert round((total - decoder) / 1e6, 1) == 6.8


def test_loss_equals_hand_computation():
    net = tiny(recon_weight=0.5)
    lengths = torch.tensor([[0.95, 0.3] + [0.0] * 8, [0.5, 0.05] + [0.2] * 8])
    x = torch.zeros(2, 1, 28, 28)
    rec = torch.zeros(2, 1, 28, 28)
    rec[0, 0, 0, :3] = torch.tensor([0.1, 0.2, 0.3])  # squared error 0.14
    rec[1, 0, 5, 5] = 1.0  # squared error 1
    out = CapsNetOutput(torch.zeros(2, 10, 4), lengths, rec, x)
    y = torch.tensor([0, 1])
    # sample 0: true class 0 at 0.95 >= 0.9 -> 0; class 1: 0.5 * (0.3 - 0.1)^2 = 0.02
    # sample 1: true class 1 at 0.05: (0.9 - 0.05)^2 = 0.7225; class 0: 0.5 * 0.4^2 = 0.08;
    #           eight classes at 0.2: 8 * 0.5 * 0.1^2 = 0.04
    margin = (0.02 + 0.7225 + 0.08 + 0.04) / 2
    recon = 0.5 * (0.14 + 1.0) / 2
    assert net.loss(out, y, step=0).item() == pytest.approx(margin + recon, rel=1e-5)


def test_decoder_sees_only_the_true_capsule_when_training_and_the_longest_otherwise():
    net = tiny()
    v = torch.randn(2, 10, 4) * 0.3
    lengths = v.norm(dim=-1)
    y = torch.tensor([4, 7])
    other = v.clone()
    other[:, [0, 1, 2]] += 1.0  # change capsules that are neither 4 nor 7
    assert torch.equal(net._decode(v, lengths, y), net._decode(other, lengths, y))
    assert not torch.equal(net._decode(v, lengths, y), net._decode(v, lengths, torch.tensor([5, 7])))
    longest = lengths.argmax(1)
    out = CapsNetOutput(v, lengths, None, None)
    assert torch.equal(net.reconstruct(out), net._decode(v, lengths, longest))


def test_routing_returns_the_class_layer_with_a_trace():
    net = tiny()
    x = torch.rand(2, 1, 28, 28)
    [layer] = net.routing(x)
    name, g, r, strength = layer.name, layer.graph, layer.result, layer.parent_strength
    assert name == "digitcaps" and layer.routing == "dynamic" and layer.child_types == net.primary.out_types
    assert layer.child_strength.shape == (net.n_primary, 2) and layer.parent_types is None
    assert len(r.trace) == net.digits.n_iters
    assert g.num_src_nodes() == net.n_primary and g.num_dst_nodes() == 10
    src, _ = g.edges()
    sums = torch.zeros(net.n_primary, 2).index_add(0, src, r.trace[-1])
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert torch.allclose(strength, net.scores(net(x)).T, atol=1e-6)
    assert len(g.edata) == 0


def test_a_few_steps_lower_the_loss():
    net = tiny()
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for step in range(15):
        loss = net.loss(net(x, y), y, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_without_decoder_the_loss_is_the_margin_loss():
    net = tiny(decoder=())
    out = net(torch.rand(2, 1, 28, 28))
    assert out.reconstruction is None and net.decoder is None
    from dgl_capsules.functional import margin_loss

    y = torch.tensor([0, 1])
    assert torch.equal(net.loss(out, y), margin_loss(out.lengths, y))


def test_other_image_sizes_and_channels():
    net = CapsNet.from_preset("tiny", in_channels=2, image_size=40, n_classes=5)
    out = net(torch.rand(1, 2, 40, 40))
    assert out.poses.shape == (1, 5, 4) and out.reconstruction.shape == (1, 2, 40, 40)
    assert net.n_primary == 12 * 12 * 2


def test_repr_names_the_sizes():
    text = repr(tiny())
    assert "CapsNet(" in text and "primary_caps=72" in text and "DynamicCaps(in_caps=72" in text


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 1, 28, 28\); got \(2, 1, 27, 28\)"):
        tiny()(torch.rand(2, 1, 27, 28))


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset: unknown capsnet preset 'huge'; expected one of paper, small, tiny"):
        CapsNet.from_preset("huge")
    with pytest.raises(ValueError, match="image_size=12 is too small"):
        tiny(image_size=12)
    with pytest.raises(ValueError, match="recon_weight must be >= 0"):
        tiny(recon_weight=-1)


def test_integer_or_numpy_images_are_refused_with_the_argument_named():
    with pytest.raises(TypeError, match="x must be a floating-point tensor of shape \\(B, C, H, W\\); got dtype torch.int64"):
        tiny()(torch.zeros(2, 1, 28, 28, dtype=torch.long))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        tiny()(torch.zeros(2, 1, 28, 28).numpy())
