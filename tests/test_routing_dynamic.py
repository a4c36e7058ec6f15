import dgl
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.routing import dynamic_routing
from dgl_capsules.routing.dynamic import _route_message_passing
from dgl_capsules.testing import check_routing_contract, dense_dynamic_routing, dense_mask, edge_to_dense, permuted


def graphs():
    return {
        "complete": dc.capsule_graph(6, 4),
        "conv": dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2),
        "conv_stride2": dc.conv_capsule_graph((7, 6), kernel=3, stride=2, in_types=1, out_types=3),
    }


def route_both(g, votes, n_iters):
    """Graph path and dense path on the same float64 votes (E, B, D); returns both (v, c) in graph layout."""
    r = dynamic_routing(g, votes, n_iters=n_iters)
    u = edge_to_dense(g, votes).permute(2, 0, 1, 3)  # (B, I, J, D)
    v, c = dense_dynamic_routing(u, dense_mask(g), n_iters)
    src, dst = g.edges()
    return r, v.transpose(0, 1), c[:, src, dst].transpose(0, 1)


@pytest.mark.parametrize("n_iters", [1, 2, 3, 4, 5])
def test_equals_dense_procedure_1(n_iters):
    check_routing_contract("dynamic", n_iters=n_iters, graphs=graphs(), checks=["reference"])


@pytest.mark.parametrize("name", ["complete", "conv"])
def test_gradients_equal_dense(name):
    g = graphs()[name]
    votes = torch.randn(g.num_edges(), 2, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(g.num_dst_nodes(), 2, 4, dtype=torch.float64)
    r, v, c = route_both(g, votes, 3)
    (grad_graph,) = torch.autograd.grad((r.poses * weight).sum() + r.coupling.sum(), votes)
    (grad_dense,) = torch.autograd.grad((v * weight).sum() + c.sum(), votes)
    torch.testing.assert_close(grad_graph, grad_dense, rtol=1e-9, atol=1e-11)


def test_extra_batch_dims_and_repeat_calls_are_identical():
    g = dc.capsule_graph(8, 3)
    votes = torch.randn(g.num_edges(), 2, 3, 4)
    a = dynamic_routing(g, votes, n_iters=3)
    b = dynamic_routing(g, votes, n_iters=3)
    assert a.poses.shape == (3, 2, 3, 4) and a.coupling.shape == (24, 2, 3)
    assert torch.equal(a.poses, b.poses) and torch.equal(a.coupling, b.coupling)
    flat = dynamic_routing(g, votes.reshape(24, 6, 4), n_iters=3)
    torch.testing.assert_close(flat.poses.reshape(3, 2, 3, 4), a.poses)


def test_returns_a_trace_only_on_request():
    g = dc.capsule_graph(10, 4)
    r = dynamic_routing(g, torch.randn(40, 2, 3), n_iters=4, return_trace=True)
    assert len(r.trace) == 4 and torch.equal(r.trace[-1], r.coupling)
    assert dynamic_routing(g, torch.randn(40, 3), n_iters=2).trace is None


def test_agreeing_children_settle_on_their_parent():
    p = dc.data.planted_clusters(n_in=40, n_out=4, dim=8, batch=3)
    r = dynamic_routing(p.graph, p.votes, n_iters=6, return_trace=True)
    entropy = [dc.functional.coupling_entropy(p.graph, c).mean().item() for c in r.trace]
    assert all(b < a for a, b in zip(entropy, entropy[1:]))
    src, dst = p.graph.edges()
    assert r.coupling[p.assignment[src] == dst].mean() > 0.6


def test_bad_inputs_name_the_argument():
    g = dc.capsule_graph(4, 3)
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, D\) with \|E\| = 12 edges of the graph; got \(11, 16\)"):
        dynamic_routing(g, torch.randn(11, 16))
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, D\).*got \(12,\)"):
        dynamic_routing(g, torch.randn(12))
    with pytest.raises(TypeError, match=r"votes must be a floating-point tensor of shape \(\|E\|, \*, D\); got dtype torch.int64"):
        dynamic_routing(g, torch.ones(12, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="votes must be a torch.Tensor"):
        dynamic_routing(g, [[0.0] * 4] * 12)
    for n in (0, -1, 1.5):
        with pytest.raises(ValueError, match=f"n_iters must be an integer >= 1; got {n}"):
            dynamic_routing(g, torch.randn(12, 4), n_iters=n)


def test_bad_graphs_raise_dgl_errors():
    homogeneous = dgl.graph((torch.tensor([0, 1]), torch.tensor([1, 2])))
    with pytest.raises(dgl.DGLError, match="must be a bipartite capsule graph"):
        dynamic_routing(homogeneous, torch.randn(2, 4))
    lonely = dgl.heterograph(
        {("child", "vote", "parent"): (torch.tensor([0, 1]), torch.tensor([0, 0]))},
        num_nodes_dict={"child": 2, "parent": 3},
    )
    with pytest.raises(dgl.DGLError, match="2 parent capsule\\(s\\) of g have no children"):
        dynamic_routing(lonely, torch.randn(2, 4))
    with pytest.raises(TypeError, match="g must be a dgl.DGLGraph; got str"):
        dynamic_routing("graph", torch.randn(2, 4))


def test_shared_input_checks_name_the_argument():
    from dgl_capsules._checks import check_node_tensor
    from dgl_capsules.routing._common import per_item, uniform_coupling

    like = torch.zeros(1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"a_in must have shape \(N_src, \*\) = \(4, 2\); got \(4, 3\)"):
        check_node_tensor("a_in", torch.rand(4, 3), 4, (2,), "(N_src, *)")
    with pytest.raises(TypeError, match=r"a_in must be a floating-point tensor of shape \(N_src, \*\); got dtype torch.int64"):
        check_node_tensor("a_in", torch.ones(4, 2, dtype=torch.long), 4, (2,), "(N_src, *)")
    with pytest.raises(ValueError, match=r"beta_u must be a scalar or have shape \(N_dst,\) = \(3,\); got \(4,\)"):
        per_item("beta_u", torch.zeros(4), 3, "N_dst", like)
    assert per_item("beta_u", 0.5, 3, "N_dst", like).dtype == torch.float64
    g = dc.conv_capsule_graph((4, 4), 3, 1, 1, 1)
    r = uniform_coupling(g, (2,), like)
    src, _ = g.edges()
    sums = torch.zeros(16, 2, dtype=torch.float64).index_add(0, src, r)
    torch.testing.assert_close(sums, torch.ones(16, 2, dtype=torch.float64))


# The complete-graph fast path (batched matrix products, hand-written backward)
# must equal the message-passing path: values, couplings, traces, gradients.


def complete_graphs():
    g = dc.capsule_graph(7, 4)
    src, dst = g.edges()
    parent_major = torch.argsort(dst * 7 + src)  # edge j * I + i
    h = dgl.heterograph({("child", "vote", "parent"): (src[parent_major], dst[parent_major])},
                        num_nodes_dict={"child": 7, "parent": 4})
    shuffled, perm = permuted(g, seed=3)
    return {"canonical": (g, None), "parent_major": (h, parent_major), "shuffled": (shuffled, perm)}


@pytest.mark.parametrize("name", ["canonical", "parent_major", "shuffled"])
@pytest.mark.parametrize("n_iters", [1, 2, 3, 5])
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_complete_fast_path_equals_message_passing(name, n_iters, batch):
    from dgl_capsules.routing.dynamic import _route_message_passing, complete_pairs

    g, _ = complete_graphs()[name]
    assert complete_pairs(g) is not None
    votes = torch.randn((g.num_edges(),) + batch + (5,), dtype=torch.float64, requires_grad=True)
    fast = dynamic_routing(g, votes, n_iters=n_iters, return_trace=True)
    slow = _route_message_passing(g, votes, n_iters, True)
    torch.testing.assert_close(fast.poses, slow.poses, rtol=1e-10, atol=1e-12)
    for a, b in zip(fast.trace, slow.trace):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.equal(fast.trace[-1], fast.coupling)
    weight = torch.randn_like(slow.poses)
    coupling_weights = [torch.randn_like(c) for c in slow.trace]

    def loss(r):
        return (r.poses * weight).sum() + sum((c * w).sum() for c, w in zip(r.trace, coupling_weights))

    (grad_fast,) = torch.autograd.grad(loss(fast), votes, allow_unused=True)
    (grad_slow,) = torch.autograd.grad(loss(slow), votes, allow_unused=True)
    torch.testing.assert_close(grad_fast, grad_slow, rtol=1e-9, atol=1e-11)


def test_complete_fast_path_gradients_of_couplings_alone_and_blocks():
    from dgl_capsules.routing import dynamic as dyn

    g = dc.capsule_graph(5, 3)
    votes = torch.randn(g.num_edges(), 9, 4, dtype=torch.float64, requires_grad=True)
    slow = dyn._route_message_passing(g, votes, 3, False)
    (grad_slow,) = torch.autograd.grad(slow.coupling.pow(2).sum(), votes)
    block_bytes = dyn._BLOCK_BYTES
    try:  # several blocks of samples, the last one short
        dyn._BLOCK_BYTES = 2 * 5 * 3 * 4 * 8
        fast = dynamic_routing(g, votes, n_iters=3)
        (grad_fast,) = torch.autograd.grad(fast.coupling.pow(2).sum(), votes)
    finally:
        dyn._BLOCK_BYTES = block_bytes
    torch.testing.assert_close(fast.poses, slow.poses, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_fast, grad_slow, rtol=1e-9, atol=1e-11)


def test_complete_fast_path_gradcheck_and_float32():
    g = complete_graphs()["shuffled"][0]
    votes = torch.randn(g.num_edges(), 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: tuple(dynamic_routing(g, x, n_iters=3, return_trace=True).trace) + (dynamic_routing(g, x).poses,),
        (votes,),
    )
    from dgl_capsules.routing.dynamic import _route_message_passing

    x = torch.randn(g.num_edges(), 6, 16)
    torch.testing.assert_close(dynamic_routing(g, x).poses, _route_message_passing(g, x, 3, False).poses)


def test_only_complete_graphs_take_the_fast_path():
    from dgl_capsules.routing.dynamic import complete_pairs

    assert complete_pairs(graphs()["conv"]) is None
    assert complete_pairs(dgl.batch([dc.capsule_graph(3, 2), dc.capsule_graph(2, 2)])) is None
    repeated = dgl.heterograph({("child", "vote", "parent"): (torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 0]))})
    assert complete_pairs(repeated) is None
    pairs = complete_pairs(dc.capsule_graph(4, 3))
    assert pairs.canonical and pairs.n_src == 4 and pairs.n_dst == 3


# int32 graphs, empty batches, dtypes, repr (the routing contract checks the rest).


def int_graphs():
    g = dc.capsule_graph(20, 4)
    return {
        "complete": g,
        "complete_shuffled": permuted(g)[0],  # the fast path with an index
        "conv": dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2),
        "ragged": dgl.batch([dc.capsule_graph(3, 4), dc.capsule_graph(5, 4), dc.capsule_graph(1, 2)]),
    }


@pytest.mark.parametrize("name", ["complete", "complete_shuffled", "conv", "ragged"])
def test_int32_graphs_give_the_int64_results(name):
    g = int_graphs()[name]
    votes = torch.randn(g.num_edges(), 3, 8, dtype=torch.float64, requires_grad=True)
    a = dynamic_routing(g, votes, return_trace=True)
    b = dynamic_routing(g.int(), votes, return_trace=True)
    assert g.int().idtype == torch.int32
    for x, y in zip([a.poses, a.coupling, *a.trace], [b.poses, b.coupling, *b.trace]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    (ga,) = torch.autograd.grad(a.poses.sum(), votes)
    (gb,) = torch.autograd.grad(b.poses.sum(), votes)
    torch.testing.assert_close(ga, gb, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["complete", "conv", "ragged"])
def test_empty_batch_with_two_batch_dims(name):
    g = int_graphs()[name]
    two = dynamic_routing(g, torch.randn(g.num_edges(), 2, 0, 8))
    assert two.poses.shape == (g.num_dst_nodes(), 2, 0, 8) and two.coupling.shape == (g.num_edges(), 2, 0)


def test_votes_must_be_float32_or_float64():
    g = dc.capsule_graph(4, 3)
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(TypeError, match=rf"votes must be float32 or float64 .*; got {dtype}"):
            dynamic_routing(g, torch.randn(12, 2, 4).to(dtype))
    with pytest.raises(TypeError, match=r"votes must be a torch.Tensor .*got numpy.ndarray"):
        dynamic_routing(g, torch.randn(12, 2, 4).numpy())
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, D\) with D >= 1; got \(12, 2, 0\)"):
        dynamic_routing(g, torch.randn(12, 2, 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_votes_route_to_unit_poses_with_finite_gradients(dtype):
    big = 1e20 if dtype == torch.float32 else 1e200
    for g in (dc.capsule_graph(6, 3), dc.conv_capsule_graph((3, 3), 2, 1, 1, 1)):  # fast path and message passing
        votes = (big * torch.randn(g.num_edges(), 2, 4, dtype=dtype)).requires_grad_(True)
        one = dynamic_routing(g, votes, n_iters=1)  # uniform couplings: every s_j is huge
        torch.testing.assert_close(one.poses.norm(dim=-1), torch.ones(g.num_dst_nodes(), 2, dtype=dtype))
        r = dynamic_routing(g, votes)  # (later iterations may give a parent no share: v_j = 0)
        assert torch.isfinite(r.poses).all() and torch.isfinite(r.coupling).all()
        assert (r.poses.norm(dim=-1) < 1 + 1e-6).all()
        (grad,) = torch.autograd.grad(r.poses.sum() + r.coupling.sum() + one.poses.sum(), votes)
        assert torch.isfinite(grad).all()


def test_fast_path_gradients_of_huge_votes_equal_message_passing():
    g = dc.capsule_graph(6, 3)
    votes = (1e170 * torch.randn(g.num_edges(), 2, 4, dtype=torch.float64)).requires_grad_(True)
    weight = torch.randn(3, 2, 4, dtype=torch.float64)
    fast = dynamic_routing(g, votes, n_iters=1)
    slow = _route_message_passing(g, votes, 1, False)
    torch.testing.assert_close(fast.poses, slow.poses, rtol=1e-10, atol=0)
    (grad_fast,) = torch.autograd.grad((fast.poses * weight).sum(), votes)
    (grad_slow,) = torch.autograd.grad((slow.poses * weight).sum(), votes)
    assert grad_fast.abs().max() > 0
    torch.testing.assert_close(grad_fast, grad_slow, rtol=1e-8, atol=1e-8 * float(grad_slow.abs().max()))


def test_routing_result_repr_shows_shapes_not_values():
    r = dynamic_routing(dc.capsule_graph(1152, 10), torch.randn(11520, 4, 16), return_trace=True)
    text = repr(r)
    assert len(text) < 300, text
    assert text == ("RoutingResult(poses=Tensor(10, 4, 16) float32, activations=None, coupling=Tensor(11520, 4) "
                    "float32, sigma2=None, trace=[3 x Tensor(11520, 4) float32])")
