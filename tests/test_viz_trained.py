"""Tests for dgl_capsules.viz's pictures of trained models: model_routing, visualize_model,
record_routing, animate_over_training and reconstruction_grid."""
import json
import os

import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dgl_capsules import viz  # noqa: E402
from dgl_capsules.data import ImageDataset, motif_sequences  # noqa: E402
from dgl_capsules.models import CapsNet, MatrixCapsNet, SequenceCapsClassifier  # noqa: E402
from dgl_capsules.routing import get_routing  # noqa: E402


@pytest.fixture(autouse=True)
def no_figures_left():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before  # nothing here goes through pyplot


def images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10, n_classes=10)


@pytest.fixture(scope="module")
def seq_model():
    torch.manual_seed(0)
    data = motif_sequences(n=12, dim=16, min_len=8, max_len=20, seed=0)
    return SequenceCapsClassifier(d_emb=16, n_classes=data.n_classes, n_parts=6, n_iters=2), data


# --------------------------------------------------------------------------- model_routing


def test_capsnet_child_strengths_are_mean_vote_lengths():
    net = CapsNet.from_preset("tiny").eval()
    x = images(3).images
    (layer,) = viz.model_routing(net, x)
    assert layer.routing == "dynamic" and get_routing(layer.routing).strength_name == "vote length"
    # independent dense formulation: u_hat[b, i, j] = W[i, j]^T u[b, i]
    u = net.primary_caps(x)  # (B, N, d)
    u_hat = torch.einsum("bid,ijde->bije", u, net.digits.weight)  # (B, N, K, D)
    expected = u_hat.norm(dim=-1).mean(2).T  # (N, B)
    torch.testing.assert_close(layer.child_strength, expected.detach(), rtol=1e-5, atol=1e-7)
    assert layer.parent_strength.shape == (10, 3) and len(layer.result.trace) == net.digits.n_iters


def test_matrix_capsnet_child_strengths_are_activations_of_the_layer_below():
    net = MatrixCapsNet.from_preset("tiny").eval()
    x = images(2).images
    layers = viz.model_routing(net, x)
    assert [lay.name for lay in layers] == ["convcaps1", "convcaps2", "classcaps"]
    assert {lay.routing for lay in layers} == {"em"}
    _, acts = net.primary(torch.relu(net.conv(x)))  # (B, H, W, types)
    torch.testing.assert_close(layers[0].child_strength, acts.reshape(2, -1).T.detach())
    for below, above in zip(layers, layers[1:]):
        torch.testing.assert_close(above.child_strength, below.parent_strength, rtol=0, atol=0)
    assert (layers[0].child_types, layers[0].parent_types) == (net.caps1.in_types, net.caps1.out_types)


def test_sequence_routing_is_the_forward_computation(seq_model):
    model, data = seq_model
    seqs = data.sequences[:4]
    parts, classes = viz.model_routing(model, seqs)
    with torch.no_grad():
        scores = model(seqs).scores  # (B, K) logits
    torch.testing.assert_close(classes.parent_strength, torch.sigmoid(scores).T, rtol=1e-5, atol=1e-6)
    assert parts.graph.batch_size == 4 and parts.graph.num_src_nodes() == sum(len(s) for s in seqs)
    assert parts.child_strength.shape == (parts.graph.num_src_nodes(), 1)  # a batch axis of one
    assert classes.child_strength.shape == (model.n_parts, 4)
    assert {parts.routing, classes.routing} == {"heinsen"}


def test_heinsen_image_net_layers_are_heinsen_with_activations():
    from dgl_capsules.models import get_model

    net = get_model("heinsen", "tiny").eval()
    x = images(2).images
    layers = viz.model_routing(net, x)
    assert {lay.routing for lay in layers} == {"heinsen"}
    a, _ = net.primary_caps(x)
    torch.testing.assert_close(layers[0].child_strength, torch.sigmoid(a).T.detach())
    torch.testing.assert_close(layers[1].child_strength, layers[0].parent_strength, rtol=0, atol=0)


def test_model_without_routed_layers_is_refused():
    from dgl_capsules.models import BaselineCNN

    with pytest.raises(ValueError, match="model: BaselineCNN has no routed capsule layers"):
        viz.model_routing(BaselineCNN(width=0.1), images(2).images)


def test_a_layer_must_name_a_registered_routing():
    net = CapsNet.from_preset("tiny")
    (layer,) = net.routing(images(1).images)
    net.routing = lambda x: [layer._replace(routing="agreement")]
    with pytest.raises(ValueError, match=r"model: layer 'digitcaps' of CapsNet names the routing 'agreement'; "
                                         r"expected one of .*dynamic"):
        viz.model_routing(net, images(1).images)


# --------------------------------------------------------------------------- visualize_model


@pytest.mark.parametrize("which", ["capsnet", "matrix", "sequence"])
def test_visualize_model_writes_every_layer_and_the_summary(tmp_path, which, seq_model):
    if which == "sequence":
        model, data = seq_model
        x, y = data.sequences[:3], data.labels[:3]
        names = ["none", "A", "B", "A+B"]
    else:
        model = CapsNet.from_preset("tiny") if which == "capsnet" else MatrixCapsNet.from_preset("tiny")
        ds = images(2)
        x, y, names = ds.images, ds.labels, [f"digit {k}" for k in range(10)]
    res = viz.visualize_model(model, x, y, tmp_path, class_names=names, dpi=30)
    with open(res["summary_path"]) as f:
        summary = json.load(f)
    assert summary == json.loads(json.dumps(res["summary"]))
    layers = viz.model_routing(model, x)
    assert list(summary["layers"]) == [lay.name for lay in layers] == list(res["paths"])
    with torch.no_grad():
        predicted = model.scores(model(x)).argmax(1)
    assert summary["predicted"] == int(predicted[0]) and summary["true"] == int(y[0])
    assert summary["predicted_all"] == predicted.tolist() and summary["true_all"] == y.tolist()
    assert summary["class_names"] == names and summary["model"] == type(model).__name__
    for lay in layers:
        entry = summary["layers"][lay.name]
        g, trace = lay.graph, lay.result.trace
        assert entry["iterations"] == len(trace) == len(entry["mean_entropy"]) == len(entry["weighted_entropy"])
        deg = g.out_degrees().double()
        assert entry["uniform_entropy"] == pytest.approx(deg[deg > 0].log().mean().item())  # children with parents
        mean, _ = viz.entropy_curve(g, trace)
        weighted, _ = viz.entropy_curve(g, trace, weights=lay.child_strength)
        assert entry["mean_entropy"] == pytest.approx(mean.tolist(), abs=1e-5)
        assert entry["weighted_entropy"] == pytest.approx(weighted.tolist(), abs=1e-5)
        assert entry["predicted"] == summary["predicted"] and entry["true"] == summary["true"]
        spec = get_routing(lay.routing)
        assert entry["weights"] == spec.strength_name and (entry["algorithm"], entry["label"]) == (lay.routing,
                                                                                                    spec.label)
        for kind, path in res["paths"][lay.name].items():
            with Image.open(path) as im:
                assert im.format == ("PNG" if kind == "entropy" else "GIF")
                if kind != "entropy":
                    assert im.n_frames == len(trace)


def test_visualize_model_bad_arguments(tmp_path):
    net = CapsNet.from_preset("tiny")
    ds = images(2)
    with pytest.raises(ValueError, match=r"y must hold one class per input \(B = 2\); got 3"):
        viz.visualize_model(net, ds.images, torch.arange(3), tmp_path)
    with pytest.raises(ValueError, match="class_names must name the 10 classes; got 2"):
        viz.visualize_model(net, ds.images, ds.labels, tmp_path, class_names=["a", "b"])


def test_visualize_model_takes_one_image_and_an_int(tmp_path):
    net = CapsNet.from_preset("tiny")
    res = viz.visualize_model(net, images(1).images[0], 0, tmp_path, dpi=20)
    assert res["summary"]["samples"] == 1 and res["summary"]["true"] == 0


# --------------------------------------------------------------------------- over training


def test_record_routing_is_small_deterministic_and_restores_the_mode(tmp_path):
    net = MatrixCapsNet.from_preset("tiny").train()
    ds = images(30)
    a = viz.record_routing(net, ds, tmp_path / "a" / "epoch_000.pt", n=4)
    assert net.training
    b = viz.record_routing(net.eval(), ds, tmp_path / "b.pt", n=4)
    ra, rb = (torch.load(p, weights_only=False) for p in (a, b))
    assert ra["indices"] == rb["indices"] == [0, 10, 19, 29]
    assert ra["labels"].tolist() == (torch.tensor([0, 10, 19, 29]) % 10).tolist()
    for la, lb, lay in zip(ra["layers"], rb["layers"], viz.model_routing(net, ds.images[ra["indices"]])):
        assert la["trace"].dtype == torch.float16 and la["child_weights"].dtype == torch.float16
        assert la["trace"].shape == (len(lay.result.trace), lay.graph.num_edges(), 4)
        torch.testing.assert_close(la["trace"], lb["trace"])
        torch.testing.assert_close(la["trace"][-1].float(), lay.result.trace[-1].float(), atol=2e-3, rtol=1e-2)
    assert os.path.getsize(a) < 400_000
    assert not any(p.endswith(".tmp") for p in os.listdir(tmp_path / "a"))


def test_record_routing_bad_arguments(tmp_path):
    net = CapsNet.from_preset("tiny")
    with pytest.raises(ValueError, match="n must be a positive integer; got 0"):
        viz.record_routing(net, images(3), tmp_path / "x.pt", n=0)
    with pytest.raises(ValueError, match="dataset is empty"):
        viz.record_routing(net, ImageDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0), 10), tmp_path / "x.pt")


@pytest.mark.parametrize("which", ["capsnet", "matrix", "sequence"])
def test_animate_over_training_one_frame_per_epoch(tmp_path, which, seq_model):
    if which == "sequence":
        model, data = seq_model
    else:
        model = CapsNet.from_preset("tiny") if which == "capsnet" else MatrixCapsNet.from_preset("tiny")
        data = images(12)
    for epoch in range(3):
        viz.record_routing(model, data, tmp_path / "routing_trace" / f"epoch_{epoch:03d}.pt", n=3)
        with torch.no_grad():  # training moves the weights between epochs
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    first = torch.load(tmp_path / "routing_trace" / "epoch_000.pt", weights_only=False)
    n_items = len(data.sequences) if which == "sequence" else len(data)
    assert first["indices"] == [0, round((n_items - 1) / 2), n_items - 1]  # spread over all inputs
    out = viz.animate_over_training(tmp_path, tmp_path / "pictures", dpi=30)
    names = [lay["name"] for lay in torch.load(tmp_path / "routing_trace" / "epoch_002.pt",
                                                weights_only=False)["layers"]]
    assert set(out) == {"entropy"} | {f"bipartite_{n}" for n in names}
    with Image.open(out["entropy"]) as im:
        assert im.format == "PNG"
    for n in names:
        with Image.open(out[f"bipartite_{n}"]) as im:
            assert im.n_frames == 3


def test_animate_over_training_without_traces(tmp_path):
    with pytest.raises(ValueError, match="run_dir: no routing_trace/epoch_.*trace_routing"):
        viz.animate_over_training(tmp_path, tmp_path / "out")


# --------------------------------------------------------------------------- reconstructions


def test_reconstruction_grid_names_the_model(tmp_path):
    from dgl_capsules.viz.reconstruction import _reconstruction_figure

    fig = _reconstruction_figure(CapsNet.from_preset("tiny"), images(5), n=5)
    assert "CapsNet reconstructions" in fig._suptitle.get_text()
    matrix = MatrixCapsNet.from_preset("tiny", decoder=(32,))
    fig = _reconstruction_figure(matrix, images(3), n=3)
    assert "MatrixCapsNet reconstructions" in fig._suptitle.get_text()
    path = viz.reconstruction_grid(matrix, images(3), tmp_path / "r.png")
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_reconstruction_grid_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        viz.reconstruction_grid(CapsNet.from_preset("tiny"), images(2), tmp_path / "r.png", n=0)
    with pytest.raises(ValueError, match="decoder"):
        viz.reconstruction_grid(MatrixCapsNet.from_preset("tiny"), images(2), tmp_path / "r.png")
    with pytest.raises(ValueError, match="model: CapsNet cannot reconstruct|no decoder"):
        viz.reconstruction_grid(CapsNet.from_preset("tiny", decoder=()), images(2), tmp_path / "r.png")
