"""The layer contract for every capsule layer of dgl_capsules.nn (and RoutedCaps with every registered routing)."""
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.nn import (
    ClassCaps, ConvCaps, DynamicCaps, HeinsenRouting, PrimaryCaps, PrimaryMatrixCaps, RoutedCaps, SelfAttentionCaps,
)
from dgl_capsules.routing import get_routing, list_routings
from dgl_capsules.testing import check_layer_contract, measure_layer_contract


def randn(*shape, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def caps(b, h, w, types, gen):
    return randn(b, h, w, types, 4, 4, gen=gen), torch.rand(b, h, w, types, generator=gen, dtype=torch.float64)


def routed_caps(name):
    """RoutedCaps with routing ``name``, and its inputs (child activations from the family's own example)."""
    spec = get_routing(name)
    layer = RoutedCaps(3, 2, 2, 3, routing=name)

    def make_input(b, gen):
        x = randn(b, 3, 2, gen=gen)
        if "child" not in spec.inputs:
            return (x,)
        return x, spec.get_example()(layer.graph(), b, gen)[1].T  # (B, in_caps), as the family reads them

    return layer, make_input


HEINSEN = {"fixed": dict(n_inp=3, n_out=2), "variable_inp": dict(n_out=2), "variable_out": dict(n_inp=3),
           "variable_both": dict(single_beta=True)}

LAYERS = {
    "PrimaryCaps": lambda: (PrimaryCaps(2, 2, 3, kernel_size=3, stride=2), lambda b, gen: (randn(b, 2, 5, 5, gen=gen),)),
    "PrimaryMatrixCaps": lambda: (PrimaryMatrixCaps(2, 2), lambda b, gen: (randn(b, 2, 3, 2, gen=gen),)),
    "DynamicCaps": lambda: (DynamicCaps(3, 2, 2, 3, n_iters=2), lambda b, gen: (randn(b, 3, 2, gen=gen),)),
    "ConvCaps": lambda: (ConvCaps(1, 2, kernel=2, stride=1, n_iters=2), lambda b, gen: caps(b, 3, 2, 1, gen)),
    "ClassCaps": lambda: (ClassCaps(1, 2, n_iters=2), lambda b, gen: caps(b, 2, 2, 1, gen)),
    "SelfAttentionCaps": lambda: (SelfAttentionCaps(3, 2, 2, 3), lambda b, gen: (randn(b, 3, 2, gen=gen),)),
    "SelfAttentionCaps-uniform": lambda: (SelfAttentionCaps(3, 2, 2, 3, uniform=True),
                                          lambda b, gen: (randn(b, 3, 2, gen=gen),)),
    **{f"HeinsenRouting-{k}": (lambda kw=kw: (
        HeinsenRouting(d_cov=1, d_inp=2, d_out=2, n_iters=2, **kw),
        lambda b, gen: (randn(b, 3, gen=gen), randn(b, 3, 1, 2, gen=gen)))) for k, kw in HEINSEN.items()},
    **{f"RoutedCaps-{name}": (lambda name=name: routed_caps(name)) for name in list_routings()},
}


@pytest.mark.parametrize("which", list(LAYERS))
def test_every_layer_passes_the_contract(which):
    layer, make_input = LAYERS[which]()
    check_layer_contract(layer, make_input)


def test_every_layer_of_nn_is_checked():
    checked = {type(LAYERS[k]()[0]).__name__ for k in LAYERS}
    assert checked == set(dc.nn.__all__)


def test_routed_layers_are_checked_on_their_graph_and_routing_result():
    layer, make_input = LAYERS["ConvCaps"]()
    m = measure_layer_contract(layer, make_input, gradcheck=False)
    assert list(m) == ["batch_independence", "edge_order", "graph_untouched", "routing_result", "empty_batch",
                       "dtype", "bad_input"]
    assert m["edge_order"].in_tolerances <= 1 and m["routing_result"] == []
    primary, make_input = LAYERS["PrimaryCaps"]()
    assert list(measure_layer_contract(primary, make_input, gradcheck=False)) == [
        "batch_independence", "empty_batch", "dtype", "bad_input"]
