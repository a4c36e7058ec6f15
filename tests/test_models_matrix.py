import pytest
import torch

from dgl_capsules.functional import spread_loss, spread_margin
from dgl_capsules.models import MatrixCapsNet, MatrixCapsOutput
from dgl_capsules.nn import ClassCaps, ConvCaps


def test_presets_build_the_papers_architecture():
    paper = MatrixCapsNet.from_preset("paper")
    assert paper.conv.out_channels == 32 and paper.primary.out_types == 32
    assert repr(paper.caps1) == "ConvCaps(in_types=32, out_types=32, kernel=3, stride=2)"
    assert repr(paper.caps2) == "ConvCaps(in_types=32, out_types=32, kernel=3, stride=1)"
    assert paper.classes.n_classes == 10 and paper.classes.coord_add
    small = MatrixCapsNet.from_preset("small", in_channels=3, image_size=32, n_classes=5)
    assert small.caps1.in_types == 8 and small.caps2.out_types == 8 and small.classes.n_classes == 5
    assert small.conv.in_channels == 3
    # a second convolution before the capsules: 5x5 stem at stride 1, 3x3 primary capsules at stride 2
    assert small.conv.stride == (1, 1) and small.conv.out_channels == 64
    assert (small.primary.kernel_size, small.primary.stride) == (3, 2)
    assert (paper.conv.stride, paper.primary.kernel_size, paper.primary.stride) == ((2, 2), 1, 1)
    assert MatrixCapsNet.from_preset("tiny", caps2_types=6).caps2.out_types == 6
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in paper.parameters())
    with pytest.raises(ValueError, match="preset: unknown matrixcaps preset 'huge'; expected one of paper, small, tiny"):
        MatrixCapsNet.from_preset("huge")
    with pytest.raises(ValueError, match="image_size must be at least 17 for MatrixCapsNet; got 16"):
        MatrixCapsNet(image_size=16)


def test_protocol_forward_scores_loss_and_routing():
    net = MatrixCapsNet.from_preset("tiny", image_size=28)
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 4, 9])
    out = net(x)
    assert isinstance(out, MatrixCapsOutput)
    assert out.poses.shape == (3, 10, 4, 4) and out.activations.shape == (3, 10)
    assert torch.equal(net.scores(out), out.activations)
    assert ((out.activations > 0) & (out.activations < 1)).all()
    loss = net.loss(out, y, step=1000)
    expected = spread_loss(out.activations, y, spread_margin(1000, net.step_scale))
    assert loss.dim() == 0 and torch.equal(loss, expected)
    assert not torch.equal(net.loss(out, y, step=0), net.loss(out, y, step=10**6))
    assert torch.equal(net(x, y).activations, out.activations)  # y is not used

    routed = net.routing(x)
    assert [lay.name for lay in routed] == ["convcaps1", "convcaps2", "classcaps"]
    assert {lay.routing for lay in routed} == {"em"}
    grids = [(12, 12), (5, 5), (3, 3)]
    for routed_layer, hw, layer in zip(routed, grids, (net.caps1, net.caps2, net.classes)):
        g, r, strength = routed_layer.graph, routed_layer.result, routed_layer.parent_strength
        assert r.coupling.shape == (g.num_edges(), 3) and r.poses.shape == (g.num_dst_nodes(), 3, 16)
        assert len(r.trace) == layer.n_iters and strength.shape == (g.num_dst_nodes(), 3)
        assert g.num_src_nodes() == hw[0] * hw[1] * layer.in_types
        assert routed_layer.child_strength.shape == (g.num_src_nodes(), 3) and routed_layer.child_types == layer.in_types
    for below, above in zip(routed, routed[1:]):  # a layer's children are the parents of the layer below
        torch.testing.assert_close(above.child_strength, below.parent_strength, rtol=0, atol=0)
    assert [lay.parent_types for lay in routed] == [net.caps1.out_types, net.caps2.out_types, None]
    torch.testing.assert_close(routed[-1].parent_strength.T, out.activations)


def test_training_a_few_steps_lowers_the_loss():
    net = MatrixCapsNet.from_preset("tiny", image_size=20, n_classes=4)
    x = torch.rand(8, 1, 20, 20)
    y = torch.arange(8) % 4
    x = x + y[:, None, None, None] / 4  # make the classes separable
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny kernels: OpenMP barriers would cost more than they save
    try:
        for _ in range(10):
            loss = net.loss(net(x), y, step=0)  # a fixed margin, so the loss values are comparable
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2, losses


def test_bad_images_name_the_argument():
    net = MatrixCapsNet.from_preset("tiny")
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 1, 28, 28\); got \(2, 1, 32, 32\)"):
        net(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x must have shape .* got \(1, 28, 28\)"):
        net.routing(torch.rand(1, 28, 28))


def test_model_layers_are_the_library_layers():
    net = MatrixCapsNet.from_preset("tiny")
    assert isinstance(net.caps1, ConvCaps) and isinstance(net.classes, ClassCaps)
    assert "in_channels=1, image_size=28, n_classes=10" in repr(net)


def test_stem_stride_and_primary_kernel_set_the_grids():
    # 28 -> conv 5x5 stride 1: 24 -> primary 3x3 stride 2: 11 -> ConvCaps1: 5 -> ConvCaps2: 3
    net = MatrixCapsNet.from_preset("tiny", stem_stride=1, primary_kernel=3, primary_stride=2)
    assert net.conv.stride == (1, 1) and net.primary.kernel_size == 3 and net.primary.stride == 2
    x = torch.rand(2, 1, 28, 28)
    routed = net.routing(x)
    assert [lay.graph.num_src_nodes() // layer.in_types for lay, layer in
            zip(routed, (net.caps1, net.caps2, net.classes))] == [11 * 11, 5 * 5, 3 * 3]
    assert net(x).activations.shape == (2, 10)
    # the smallest image leaves ConvCaps2 a 3x3 grid: 19 -> 15 -> 7 -> 3 here (17 with the paper's stem)
    MatrixCapsNet.from_preset("tiny", image_size=19, stem_stride=1, primary_kernel=3, primary_stride=2)
    with pytest.raises(ValueError, match="image_size must be at least 19 for MatrixCapsNet; got 18"):
        MatrixCapsNet.from_preset("tiny", image_size=18, stem_stride=1, primary_kernel=3, primary_stride=2)
    for name in ("stem_stride", "primary_kernel", "primary_stride"):
        with pytest.raises(ValueError, match=name):
            MatrixCapsNet.from_preset("tiny", **{name: 0})


def test_optional_decoder_reconstructs_from_one_class_capsule():
    torch.manual_seed(0)
    net = MatrixCapsNet.from_preset("tiny", decoder=(32,), recon_weight=0.01)
    assert MatrixCapsNet.from_preset("tiny").decoder is None  # the paper's network has none
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 4, 9])
    out = net(x, y)
    assert out.reconstruction.shape == (3, 1, 28, 28) and torch.equal(out.inputs, x)
    assert ((out.reconstruction > 0) & (out.reconstruction < 1)).all()
    # the decoder sees the true class's 16 pose entries only
    masked = torch.zeros(3, 10, 16)
    masked[torch.arange(3), y] = out.poses.flatten(2)[torch.arange(3), y]
    torch.testing.assert_close(out.reconstruction, net.decoder(masked.flatten(1)).view(3, 1, 28, 28))
    # without labels: the most active class; reconstruct() picks any class
    free = net(x)
    top = free.activations.argmax(1)
    torch.testing.assert_close(free.reconstruction, net.reconstruct(free, top))
    torch.testing.assert_close(net.reconstruct(out, y), out.reconstruction)
    expected = spread_loss(out.activations, y, spread_margin(0, net.step_scale)) + 0.01 * (
        (out.reconstruction - x) ** 2).sum((1, 2, 3)).mean()
    torch.testing.assert_close(net.loss(out, y, step=0), expected)
    with pytest.raises(ValueError, match=r"reconstruct needs a MatrixCapsNet built with decoder widths"):
        MatrixCapsNet.from_preset("tiny").reconstruct(out)
    with pytest.raises(ValueError, match="recon_weight must be >= 0; got -1"):
        MatrixCapsNet.from_preset("tiny", decoder=(8,), recon_weight=-1)
