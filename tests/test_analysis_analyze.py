"""analyze(): the metrics of every routed layer accumulated over a data set, checked against the metrics on one batch."""
import json
import math

import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.analysis import (
    analyze, chain_credit, dead_share, normalised_entropy, routing_dynamics, static_index, weighted_mean,
)
from dgl_capsules.analysis.summary import ENTROPY_BINS, _hist_quantile
from dgl_capsules.analysis.metrics import agreement
from dgl_capsules.data import ImageDataset
from dgl_capsules.models import RoutedLayer, get_model


def _data(n=12, size=28, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.rand(n, 1, size, size, generator=g), torch.arange(n) % classes, n_classes=classes)


def _nanmean(h):
    return float(h[torch.isfinite(h)].mean())


def test_analyze_in_batches_equals_the_metrics_on_all_inputs_at_once():
    net, data = get_model("capsnet", "tiny"), _data()
    out = analyze(net, data, batch_size=5, progress=False)
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    with torch.no_grad():
        (layer,) = net.eval().routing(data.images)
    g, labels = layer.graph, data.labels
    (got,) = out["layers"]
    assert (got["name"], got["routing"], got["children"], got["parents"]) == ("digitcaps", "dynamic", 72, 10)
    assert len(got["iterations"]) == 3
    for it, c in zip(got["iterations"], layer.result.trace):
        h = normalised_entropy(g, c)
        assert it["entropy"]["mean"] == pytest.approx(_nanmean(h), rel=1e-5)
        assert it["entropy"]["weighted_mean"] == pytest.approx(weighted_mean(h, layer.child_strength), rel=1e-5)
        assert sum(it["entropy"]["histogram"]) == it["entropy"]["values"] == 72 * 12
        assert it["static_index"] == pytest.approx(static_index(g, c), rel=1e-4, abs=1e-9)
        want = routing_dynamics(g, c, labels)
        assert it["dynamics"]["entropy"] == pytest.approx(want["entropy"])
        assert it["dynamics"]["parse_trees"] == {str(k): v for k, v in want["parse_trees"].items()}
    assert got["dead"]["children"]["shares"] == {str(t): v for t, v in
                                                 dead_share(layer.child_strength, (0.001, 0.01, 0.05, 0.1, 0.2)).items()}
    a = agreement(g, layer.result.coupling, layer.votes, layer.result.poses)
    assert got["agreement"]["mean"] == pytest.approx(_nanmean(a), rel=1e-5)
    k = chain_credit([(g, layer.result.coupling)]).mean(0)  # (72, 10)
    share = k / k.sum(0)
    spread = -(share * share.log()).sum(0) / math.log(72)
    assert out["credit"]["spread"] == pytest.approx(spread.tolist(), rel=1e-5)
    assert out["samples"] == 12 and 0.0 <= out["accuracy"] <= 1.0


def test_max_samples_and_a_chain_of_layers():
    net, data = get_model("matrixcaps", "tiny"), _data(n=10)
    out = analyze(net, data, batch_size=4, max_samples=6, progress=False)
    assert out["samples"] == 6
    assert [l["name"] for l in out["layers"]] == ["convcaps1", "convcaps2", "classcaps"]
    assert out["credit"]["layers"] == ["convcaps1", "convcaps2", "classcaps"]
    assert out["credit"]["children"] == out["layers"][0]["children"]
    with torch.no_grad():
        routed = net.eval().routing(data.images[:6])
    k = chain_credit([(l.graph, l.result.coupling) for l in routed]).mean(0)  # (N0, 10)
    want = k.view(-1, net.caps1.in_types, 10).sum(0) / k.shape[0]  # credit summed per child type
    assert torch.allclose(torch.tensor(out["credit"]["by_child_type"], dtype=torch.float64), want.double(), atol=1e-6)
    assert all(l["agreement"] is None for l in out["layers"])  # the EM model does not record its votes


def test_uniform_routing_gives_entropy_one_static_index_zero_and_uniform_credit():
    net = get_model("capsnet", "tiny", n_iters=1)  # one pass of dynamic routing: couplings 1 / 10
    out = analyze(net, _data(n=20, classes=10), batch_size=6, progress=False)
    (it,) = out["layers"][0]["iterations"]
    assert it["entropy"]["mean"] == pytest.approx(1.0) and it["entropy"]["quantiles"]["0.05"] >= 1 - 1 / ENTROPY_BINS
    assert it["static_index"] == pytest.approx(0.0, abs=1e-12)
    assert out["credit"]["own_class"] == pytest.approx(0.1)
    assert out["credit"]["spread"] == pytest.approx([1.0] * 10)


def test_histogram_quantiles_by_hand():
    hist = torch.zeros(10, dtype=torch.float64)
    hist[2] = 2.0
    hist[7] = 2.0  # two values in [0.2, 0.3), two in [0.7, 0.8)
    assert _hist_quantile(hist, 0.25) == pytest.approx(0.25)
    assert _hist_quantile(hist, 0.5) == pytest.approx(0.3)
    assert _hist_quantile(hist, 0.75) == pytest.approx(0.75)
    assert _hist_quantile(torch.zeros(10), 0.5) is None


class _Fake(torch.nn.Module):
    """A model whose routing returns what a test asks for."""

    def __init__(self, make):
        super().__init__()
        self.make, self.calls = make, 0

    def forward(self, x, y=None):
        return torch.zeros(x.shape[0], 3)

    def scores(self, out):
        return out

    def routing(self, x):
        self.calls += 1
        return self.make(x.shape[0], self.calls)


def _entry(n_src, b, iters=1):
    g = dc.capsule_graph(n_src, 2)
    c = torch.full((g.num_edges(), b), 0.5)
    r = dc.routing.RoutingResult(poses=torch.rand(2, b, 4), coupling=c, trace=[c] * iters)
    return RoutedLayer.of("caps", g, r, "dynamic")


def test_bad_input_fails_naming_the_argument():
    data = _data(n=4)
    with pytest.raises(ValueError, match="model: BaselineCNN has no routed capsule layers to analyse"):
        analyze(get_model("cnn", "tiny"), data, progress=False)
    net = get_model("capsnet", "tiny")
    with pytest.raises(ValueError, match="data must be an image data set with .images and .labels"):
        analyze(net, [1, 2], progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        analyze(net, data, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="bins must be a positive integer; got 1.5"):
        analyze(net, data, bins=1.5, progress=False)
    with pytest.raises(ValueError, match="max_samples must be None or an integer >= 2; got 1"):
        analyze(net, data, max_samples=1, progress=False)
    with pytest.raises(ValueError, match=r"data must hold at least 2 sample\(s\); got 1"):
        analyze(net, ImageDataset(torch.rand(1, 1, 28, 28), torch.tensor([0])), progress=False)
    with pytest.raises(ValueError, match=r"thresholds must be positive numbers; got \(0.0,\)"):
        analyze(net, data, thresholds=(0.0,), progress=False)
    with pytest.raises(ValueError, match="model: _Fake has no routed capsule layers"):
        analyze(_Fake(lambda b, k: []), data, progress=False)
    with pytest.raises(ValueError, match="model: layer 'caps' changed its graph between batches"):
        analyze(_Fake(lambda b, k: [_entry(3 + k, b)]), data, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="model: layer 'caps' routed 3 iterations in one batch and 2 in another"):
        analyze(_Fake(lambda b, k: [_entry(3, b, iters=1 + k)]), data, batch_size=2, progress=False)
