"""The analysis end to end for every registered routing family, on a tiny model trained a few steps.

Under a test-time swap to uniform couplings every family must measure normalised entropy 1 and static index 0;
with one-hot couplings, entropy 0 (hand-computed values, whatever the family computes after the couplings).
"""
import json

import pytest
import torch

from dgl_capsules.analysis import analyze, routing_swap, swapped_routing
from dgl_capsules.data import ImageDataset
from dgl_capsules.models import RoutedLayer, get_model
from dgl_capsules.nn import EfficientVectorRouting, RoutedCaps
from dgl_capsules.routing import first_coupling, get_routing, list_routings

MODELS = {"dynamic": "capsnet", "em": "matrixcaps", "heinsen": "heinsen", "self-attention": "efficient-capsnet"}


class TinyRouted(torch.nn.Module):
    """Images -> 16 capsules of 4 pixels -> one RoutedCaps layer of ``family`` -> 3 classes (any family)."""

    def __init__(self, family):
        super().__init__()
        self.caps = RoutedCaps(16, 3, 4, 4, routing=family)
        self.has_a = "child" in get_routing(family).inputs

    def _children(self, x):
        u = torch.nn.functional.adaptive_avg_pool2d(x, 8).reshape(x.shape[0], 16, 4)  # (B, 16, 4)
        return u, (torch.sigmoid(u.sum(-1)) if self.has_a else None)

    def forward(self, x, y=None):
        out = self.caps(*self._children(x))
        return out if isinstance(out, torch.Tensor) else out[0]

    def loss(self, out, y, step=None):
        return torch.nn.functional.cross_entropy(self.scores(out), y)

    def scores(self, out):
        return out.norm(dim=-1)

    def routing(self, x):
        u, a = self._children(x)
        r = self.caps(u, a, return_trace=True)[-1]
        g = self.caps.graph()
        votes = self.caps.votes(g, u)  # (E, B, 4)
        votes = votes.unsqueeze(-2) if self.caps.spec.vote_dims == 2 else votes  # as the layer routes them
        return [RoutedLayer.of("caps", g, r, self.caps.routing, votes=votes, a_in=None if a is None else a.T)]


class TinyVector(TinyRouted):
    """Images -> 16 vectors of 4 pixels -> EfficientVectorRouting to 3 vectors (the family routes child vectors)."""

    def __init__(self, family="vector"):
        torch.nn.Module.__init__(self)
        self.caps = EfficientVectorRouting(16, 3, 4, 4)

    def forward(self, x, y=None):
        return self.caps(self._children(x)[0])

    def _children(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 8).reshape(x.shape[0], 16, 4), None

    def routing(self, x):
        u = self._children(x)[0]
        _, r = self.caps(u, return_trace=True)
        return [RoutedLayer.of("caps", self.caps.graph(16), r, self.caps.routing)]


def _trained(family, data, generic=False):
    generic_model = TinyVector if get_routing(family).inputs[0] == "child" else TinyRouted
    net = get_model(MODELS[family], "tiny") if family in MODELS and not generic else generic_model(family)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    losses = []
    for step in range(3):
        x, y = data.images[:8], data.labels[:8]
        loss = net.loss(net(x, y), y, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    return net.eval()


def _one_hot(g, batch, like):
    src, dst = g.edges()
    first = torch.zeros(g.num_src_nodes(), dtype=torch.long).fill_(g.num_edges())
    first = first.scatter_reduce(0, src.long(), torch.arange(g.num_edges()), "amin")  # each child's first edge
    hot = (torch.arange(g.num_edges()) == first[src.long()]).to(like)  # (E,)
    return hot.view(-1, *[1] * len(batch)).expand(-1, *batch)


def _data(n_classes):
    return ImageDataset(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)),
                        torch.arange(8) % n_classes, n_classes=n_classes)


@pytest.mark.parametrize("family", list_routings())
def test_analysis_runs_end_to_end_and_measures_uniform_and_one_hot_routing_by_hand(family):
    data = _data(10 if family in MODELS else 3)  # a registered model of the family, else a generic layer
    _check(_trained(family, data), data, family)


@pytest.mark.parametrize("family", [f for f in list_routings() if f in MODELS and f != "self-attention"])
def test_the_generic_routed_layer_of_every_family_analyses_alike(family):
    data = _data(3)  # the fallback model of families without a registered model, checked on those with one
    _check(_trained(family, data, generic=True), data, family)


def _check(net, data, family):
    out = analyze(net, data, batch_size=3, progress=False)
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert {layer["routing"] for layer in out["layers"]} == {family}
    for layer in out["layers"]:
        for it in layer["iterations"]:
            assert 0.0 <= it["entropy"]["mean"] <= 1.0 + 1e-9 and it["static_index"] >= 0.0
    with swapped_routing(net, "uniform"):
        uniform = analyze(net, data, batch_size=3, progress=False)
        with first_coupling(_one_hot):
            hot = analyze(net, data, batch_size=3, progress=False)
    for u, h in zip(uniform["layers"], hot["layers"]):
        (it_u,), (it_h,) = u["iterations"], h["iterations"]
        assert it_u["entropy"]["mean"] == pytest.approx(1.0, abs=1e-6)
        assert it_u["static_index"] == pytest.approx(0.0, abs=1e-7)
        assert it_h["entropy"]["mean"] == pytest.approx(0.0, abs=1e-6) and it_h["entropy"]["quantiles"]["0.95"] <= 0.02
        assert it_h["static_index"] == pytest.approx(0.0, abs=1e-7)
    swap = routing_swap(net, data, iterations=(1, 2), batch_size=4, progress=False)
    assert 0.0 <= swap["uniform"]["accuracy"] <= 1.0 and 0.0 <= swap["random"]["accuracy"] <= 1.0
