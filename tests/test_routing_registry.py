"""The registry of routing families, and the whole routing contract for every registered family."""
import pytest

import dgl_capsules as dc
from dgl_capsules.routing import get_routing, list_routings, register_routing, unregister_routing
from dgl_capsules import testing
from dgl_capsules.testing import check_routing_contract


@pytest.mark.parametrize("name", list_routings())
def test_every_registered_routing_passes_the_whole_contract(name):
    check_routing_contract(name)


def test_the_library_registers_its_families_where_they_are_defined():
    assert {"dynamic", "em", "heinsen"} <= set(list_routings())
    spec = get_routing("em")
    assert spec.fn is dc.routing.em_routing and spec.label == "EM routing"
    assert spec.get_reference() is testing.reference_em and spec.get_example() is testing.example_em
    assert get_routing("heinsen").strength == "logit" and get_routing("dynamic").strength == "length"


def fake(g, votes, n_iters=1, return_trace=False):
    return dc.routing.dynamic_routing(g, votes, n_iters=n_iters, return_trace=return_trace)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(name=""), ValueError, r"name must be a non-empty string; got ''"),
    (dict(name="dynamic"), ValueError, r"name: a routing 'dynamic' is already registered \(dynamic routing\)"),
    (dict(fn=3), TypeError, r"fn must be a routing function; got int"),
    (dict(label=""), ValueError, r"label must be a non-empty string; got ''"),
    (dict(normalise="rows"), ValueError, r"normalise must be one of \('parents', 'children', 'none'\); got 'rows'"),
    (dict(strength="size"), ValueError, r"strength must be one of \('length', 'activation', 'logit'\); got 'size'"),
    (dict(outputs=("poses",)), ValueError, r"outputs must name RoutingResult fields .* coupling among them"),
    (dict(outputs=("poses", "coupling", "mass")), ValueError, r"outputs must name RoutingResult fields"),
    (dict(inputs=("child",)), ValueError, r"inputs must start with 'edge' \(the votes\)"),
    (dict(inputs=("edge", "node")), ValueError, r"inputs must start with 'edge' .* got \('edge', 'node'\)"),
    (dict(vote_dims=3), ValueError, r"vote_dims must be 1 \(vector votes\) or 2 \(matrix votes\); got 3"),
    (dict(defaults=dict(n_iter=2)), ValueError, r"defaults: fake takes no keyword n_iter"),
])
def test_bad_registrations_name_the_argument(kwargs, error, match):
    args = {**dict(name="fake", fn=fake, label="fake routing"), **kwargs}
    with pytest.raises(error, match=match):
        register_routing(args.pop("name"), args.pop("fn"), **args)
    assert "fake" not in list_routings()


def test_register_get_and_unregister():
    assert register_routing("fake", fake, label="fake routing", defaults=dict(n_iters=2)) is fake
    try:
        spec = get_routing("fake")
        assert (spec.name, spec.normalise, spec.outputs, spec.inputs, spec.defaults) == (
            "fake", "parents", ("poses", "coupling"), ("edge",), {"n_iters": 2})
        assert spec.get_reference() is None and spec.get_example() is None
        assert "fake" in list_routings()
    finally:
        unregister_routing("fake")
    assert "fake" not in list_routings()
    with pytest.raises(ValueError, match=r"routing: unknown routing 'fake'; expected one of .*dynamic"):
        get_routing("fake")
    with pytest.raises(ValueError, match=r"routing: unknown routing 'fake'"):
        unregister_routing("fake")
