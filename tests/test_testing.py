"""dgl_capsules.testing: the routing contract accepts the library's routings and catches broken ones."""
import dgl
import pytest
import torch

import dgl_capsules as dc
from helpers import DoubleGradient
from dgl_capsules.routing import dynamic_routing
from dgl_capsules.contract import passed
from dgl_capsules.testing import (
    ROUTING_CHECKS,
    ContractError,
    Deviation,
    check_routing_contract,
    dense_dynamic_routing,
    dense_mask,
    dense_to_edge,
    edge_to_dense,
    measure_routing_contract,
    permuted,
    reference_dynamic,
    routing_subject,
)


def make_votes(g, batch, generator):
    return (torch.randn(g.num_edges(), batch, 4, generator=generator, dtype=torch.float64),)


def good(g, votes):
    return dynamic_routing(g, votes, n_iters=2, return_trace=True)


def ignores_edge_order(g, votes):
    r = good(g, votes)
    return r._replace(poses=r.poses + 1e-3 * votes[: g.num_dst_nodes()])  # reads "the first J edges"


def unnormalised(g, votes):
    r = good(g, votes)
    return r._replace(coupling=r.coupling * 1.01, trace=[c * 1.01 for c in r.trace])


def leaves_features(g, votes):
    g.edata["u"] = votes
    return good(g, votes)


def mixes_samples(g, votes):
    r = good(g, votes)
    return r._replace(poses=r.poses - 0.5 * r.poses.mean(1, keepdim=True))


def int64_only(g, votes):
    src, _ = g.edges()
    torch.zeros(g.num_src_nodes()).scatter_(0, src, 1.0)  # scatter needs int64 indices
    return good(g, votes)


def no_empty_batch(g, votes):
    """Routes sample by sample: torch.stack of no samples raises."""
    rs = [good(g, votes[:, b]) for b in range(votes.shape[1])]
    return dc.RoutingResult(poses=torch.stack([r.poses for r in rs], 1),
                            coupling=torch.stack([r.coupling for r in rs], 1))


def wrong_gradient(g, votes):
    return good(g, DoubleGradient.apply(votes))


def unchecked(g, votes):
    return good(g, torch.as_tensor(votes).double())


def ragged_differs(g, votes):
    r = good(g, votes)
    return r._replace(poses=r.poses * (1 + 1e-3 * (g.batch_size > 1)))


@pytest.mark.parametrize(
    "route, match",
    [
        (ignores_edge_order, r"edge permutation \(graph '\w+'\): poses: off by [0-9.e-]+ \([0-9.e+]+ times the tol"),
        (unnormalised, r"couplings sum to 1 per child \(graph '\w+'\): coupling"),
        (leaves_features, r"graph untouched \(graph 'complete'\): features left on the graph: edata \['u'\]"),
        (mixes_samples, r"one sample alone \(graph '\w+'\): poses"),
        (int64_only, r"int32 graph \(graph 'complete'\): raised RuntimeError"),
        (no_empty_batch, r"empty batch \(graph 'complete'\): raised RuntimeError"),
        (ragged_differs, r"ragged batch equals its parts alone \(part \d\): poses"),
        (wrong_gradient, r"gradcheck: Jacobian mismatch"),
        (unchecked, r"named errors: float16 votes raised nothing, expected TypeError"),
    ],
)
def test_catches_a_broken_routing(route, match):
    with pytest.raises(AssertionError, match=match):
        check_routing_contract(route, make_votes, ("edge",))


def test_catches_an_unnamed_error():
    def names_nothing(g, votes):
        if isinstance(votes, torch.Tensor) and votes.dtype == torch.float16:
            raise TypeError("bad dtype")
        return good(g, votes)

    with pytest.raises(AssertionError, match=r"named errors: float16 votes raised TypeError without naming votes"):
        check_routing_contract(names_nothing, make_votes, ("edge",), gradcheck=False)


def test_kinds_must_fit():
    with pytest.raises(ValueError, match=r"kinds must start with 'edge'"):
        check_routing_contract(good, make_votes, ("child",))
    with pytest.raises(ValueError, match=r"kinds must name each of the 1 inputs; got 2 kinds"):
        check_routing_contract(good, make_votes, ("edge", "child"))


def test_dense_helpers_round_trip():
    g = dc.conv_capsule_graph((4, 4), 2, 2, 1, 2)
    x = torch.randn(g.num_edges(), 3)
    assert torch.equal(dense_to_edge(g, edge_to_dense(g, x)), x)
    assert int(dense_mask(g).sum()) == g.num_edges()
    h, perm = permuted(g)
    assert torch.equal(h.edata["offset"], g.edata["offset"][perm])
    assert torch.equal(torch.stack(h.edges()), torch.stack(g.edges())[:, perm])


def test_dense_dynamic_reference_without_a_mask_equals_the_all_true_mask():
    u = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    v1, c1 = dense_dynamic_routing(u, None, 3)
    v2, c2 = dense_dynamic_routing(u, torch.ones(5, 3, dtype=torch.bool), 3)
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(c1, c2, rtol=1e-12, atol=1e-14)
    assert isinstance(dgl.batch([dc.capsule_graph(2, 2)]), dgl.DGLGraph)


def test_every_check_returns_what_it_measured():
    m = measure_routing_contract(good, make_votes, ("edge",), reference=lambda g, v: reference_dynamic(g, v, 2, True))
    assert list(m) == list(ROUTING_CHECKS)
    deviations = [k for k, v in m.items() if isinstance(v, Deviation)]
    assert deviations == ["reference", "edge_permutation", "batch_order", "one_sample", "normalisation", "int32",
                          "ragged"]
    assert all(passed(v) for v in m.values())
    assert 0 < m["reference"].largest < 1e-12 and m["reference"].in_tolerances < 1
    broken = measure_routing_contract(unnormalised, make_votes, ("edge",), checks=["normalisation"])
    assert list(broken) == ["normalisation"] and not passed(broken["normalisation"])
    assert broken["normalisation"].largest == pytest.approx(0.01, rel=1e-6)
    assert broken["normalisation"].in_tolerances == pytest.approx(1e7, rel=1e-6)  # atol 1e-9


def test_a_routing_that_differs_from_its_reference_is_caught():
    def off_reference(g, v):
        r = reference_dynamic(g, v, 2, True)
        return r._replace(poses=r.poses * (1 + 1e-6))

    with pytest.raises(AssertionError, match=r"equals its dense reference \(graph '\w+'\): poses: off by"):
        check_routing_contract(good, make_votes, ("edge",), reference=off_reference)


def test_the_normalisation_follows_normalise():
    def over_children(g, votes):
        r = good(g, votes)
        return r._replace(coupling=dgl.ops.edge_softmax(g, votes.sum(-1), norm_by="dst"), trace=None)

    check_routing_contract(over_children, make_votes, ("edge",), normalise="children", gradcheck=False)
    with pytest.raises(AssertionError, match=r"couplings sum to 1 per child"):
        check_routing_contract(over_children, make_votes, ("edge",), gradcheck=False)
    m = measure_routing_contract(over_children, make_votes, ("edge",), normalise="none", gradcheck=False)
    assert "normalisation" not in m and "gradcheck" not in m


def test_promised_fields_and_shapes_are_checked():
    with pytest.raises(AssertionError, match=r"result fields \(graph 'complete'\): the result fills \['coupling', "
                                             r"'poses'\], the routing promises \['activations', 'coupling', 'poses'\]"):
        check_routing_contract(good, make_votes, ("edge",), outputs=("poses", "activations", "coupling"))

    def flat_coupling(g, votes):
        r = good(g, votes)
        return r._replace(coupling=r.coupling.flatten(), trace=None)

    with pytest.raises(AssertionError, match=r"result fields \(graph 'complete'\): coupling has shape \(36,\), "
                                             r"expected \(12, 3, \.\.\.\)"):
        check_routing_contract(flat_coupling, make_votes, ("edge",))


def test_a_registered_routing_without_reference_or_example_is_refused():
    from dgl_capsules.routing import register_routing, unregister_routing

    register_routing("no_reference", dynamic_routing, label="dynamic routing again",
                     example="dgl_capsules.testing:example_dynamic")
    register_routing("no_example", dynamic_routing, label="dynamic routing once more")
    try:
        with pytest.raises(ContractError, match=r"equals its dense reference: routing 'no_reference' has no dense "
                                                r"reference \(register_routing\(\.\.\., reference=\.\.\.\)\)"):
            check_routing_contract("no_reference")
        with pytest.raises(ValueError, match=r"routing 'no_example' registers no example inputs"):
            check_routing_contract("no_example")
    finally:
        unregister_routing("no_reference")
        unregister_routing("no_example")


def test_subject_arguments_are_checked():
    with pytest.raises(ValueError, match="make_inputs and kinds must be given with a routing function"):
        check_routing_contract(good)
    with pytest.raises(ValueError, match=r"settings \['n_iters'\] are for a registry name"):
        routing_subject(good, make_votes, ("edge",), n_iters=2)
    with pytest.raises(ValueError, match=r"routing: unknown routing 'dinamic'"):
        check_routing_contract("dinamic")
    with pytest.raises(ValueError, match=r"normalise must be one of \('parents', 'children', 'none'\); got 'rows'"):
        check_routing_contract(good, make_votes, ("edge",), normalise="rows")
    with pytest.raises(ValueError, match=r"checks must name checks of \[.*\]; got \['speed'\]"):
        check_routing_contract("dynamic", checks=["speed"])


def test_settings_reach_the_routing_and_its_reference():
    s = routing_subject("dynamic", n_iters=1)
    _, _, _, out = s.case("complete")
    assert sorted(out) == ["coupling", "poses", "trace[0]"]
