"""dgl_capsules.testing: the layer contract accepts the library's layers and catches broken ones."""
import pytest
import torch

import dgl_capsules as dc
from helpers import DoubleGradient
from dgl_capsules.nn import DynamicCaps, RoutedCaps
from dgl_capsules.testing import Deviation, check_layer_contract, measure_layer_contract


def make_input(batch, gen):
    return (torch.randn(batch, 3, 2, generator=gen, dtype=torch.float64),)


class MixesSamples(DynamicCaps):
    def forward(self, x, return_routing=False, return_trace=False):
        return super().forward(x - 0.1 * x.mean(0, keepdim=True), return_routing, return_trace)


# RoutedCaps (dynamic routing by default) routes the votes of votes(g, x); DynamicCaps routes its vote table.
class ReadsEdgeIds(RoutedCaps):
    def votes(self, g, x):  # assumes edge i * J + j, whatever the graph says
        return torch.einsum("bid,ijde->ijbe", x, self.weight).flatten(0, 1)


class LeavesFeatures(RoutedCaps):
    def votes(self, g, x):
        g.edata["u"] = torch.zeros(g.num_edges())
        return super().votes(g, x)


class TracesAlways(DynamicCaps):
    def forward(self, x, return_routing=False, return_trace=False):
        return super().forward(x, return_routing, return_trace=return_routing or return_trace)


class NoEmptyBatch(DynamicCaps):
    def forward(self, x, return_routing=False, return_trace=False):
        if x.shape[0] == 0:
            raise RuntimeError("no samples")
        return super().forward(x, return_routing, return_trace)


class TakesHalf(DynamicCaps):
    def forward(self, x, return_routing=False, return_trace=False):
        return super().forward(x.to(self.weight.dtype), return_routing, return_trace)


class NamesNothing(DynamicCaps):
    def forward(self, x, return_routing=False, return_trace=False):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 3:
            raise TypeError("bad input")
        return super().forward(x, return_routing, return_trace)


class WrongGradient(DynamicCaps):
    def forward(self, x, return_routing=False, return_trace=False):
        return super().forward(DoubleGradient.apply(x), return_routing, return_trace)


@pytest.mark.parametrize("cls, match", [
    (MixesSamples, r"batch independence: one sample alone: output 0: off by"),
    (ReadsEdgeIds, r"edge order: output 0: off by"),
    (LeavesFeatures, r"graph untouched: features left on its graph: edata \['u'\]"),
    (TracesAlways, r"return_routing: return_routing=True records a trace"),
    (NoEmptyBatch, r"empty batch: raised RuntimeError: no samples"),
    (TakesHalf, r"dtype rule: float16 inputs raised nothing, expected a TypeError naming the input"),
    (NamesNothing, r"bad input named: .*raised TypeError without naming x"),
    (WrongGradient, r"gradcheck: Jacobian mismatch"),
])
def test_catches_a_broken_layer(cls, match):
    with pytest.raises(AssertionError, match=rf"layer contract \({cls.__name__}\): {match}"):
        check_layer_contract(cls(3, 2, 2, 3, n_iters=2), make_input)


def test_measures_what_it_checks():
    m = measure_layer_contract(DynamicCaps(3, 2, 2, 3), make_input)
    assert isinstance(m["batch_independence"], Deviation) and m["batch_independence"].in_tolerances <= 1
    assert all(m[k] == [] for k in ("graph_untouched", "routing_result", "empty_batch", "dtype", "gradcheck",
                                    "bad_input"))
    broken = measure_layer_contract(ReadsEdgeIds(3, 2, 2, 3), make_input, gradcheck=False)
    assert broken["edge_order"].in_tolerances > 1 and "gradcheck" not in broken


def test_a_layer_must_be_a_module():
    with pytest.raises(TypeError, match="layer must be a torch.nn.Module; got function"):
        check_layer_contract(dc.routing.dynamic_routing, make_input)
