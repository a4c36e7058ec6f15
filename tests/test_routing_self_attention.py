"""Self-attention routing (Efficient-CapsNet) on capsule graphs against its dense float64 reference."""
import math

import dgl
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.routing import get_routing, list_routings, self_attention_routing
from dgl_capsules.testing import (
    check_routing_contract, example_self_attention, random_bipartite, reference_self_attention,
)


def graphs():
    return {
        "complete": dc.capsule_graph(6, 4),
        "paper": dc.capsule_graph(16, 10),
        "conv": dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2),
        "conv_stride2": dc.conv_capsule_graph((7, 6), kernel=3, stride=2, in_types=1, out_types=3),
        "random": random_bipartite(9, 5, p=0.4, seed=2),
        "ragged": dgl.batch([dc.capsule_graph(3, 2), random_bipartite(6, 3, seed=1), dc.capsule_graph(2, 5)]),
    }


def inputs(g, batch=(3,), d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    votes = torch.randn((g.num_edges(),) + batch + (d,), generator=gen, dtype=torch.float64)
    return votes, 0.2 * torch.randn(g.num_edges(), generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", list(graphs()))
@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("batch", [(3,), (2, 3), ()])
def test_equals_the_dense_reference(name, uniform, batch):
    g = graphs()[name]
    votes, bias = inputs(g, batch)
    for b in (bias, 0.0, -0.05):
        r = self_attention_routing(g, votes, b, uniform=uniform, return_trace=True)
        want = reference_self_attention(g, votes, b, uniform=uniform, return_trace=True)
        torch.testing.assert_close(r.poses, want.poses, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(r.coupling, want.coupling, rtol=1e-10, atol=1e-12)
        assert len(r.trace) == 1 and r.trace[0] is r.coupling


@pytest.mark.parametrize("name", ["complete", "conv", "ragged"])
def test_gradients_of_votes_and_bias_equal_the_reference(name):
    g = graphs()[name]
    votes, bias = inputs(g)
    votes.requires_grad_(True), bias.requires_grad_(True)
    w = torch.randn(g.num_dst_nodes(), 3, 5, dtype=torch.float64)
    wc = torch.randn(g.num_edges(), 3, dtype=torch.float64)
    r = self_attention_routing(g, votes, bias)
    want = reference_self_attention(g, votes, bias)
    got = torch.autograd.grad((r.poses * w).sum() + (r.coupling * wc).sum(), (votes, bias))
    ref = torch.autograd.grad((want.poses * w).sum() + (want.coupling * wc).sum(), (votes, bias))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_gradcheck_votes_and_bias():
    g = dc.capsule_graph(3, 2)
    votes, bias = inputs(g, (2,), 3)
    votes.requires_grad_(True), bias.requires_grad_(True)

    def f(v, b):
        r = self_attention_routing(g, v, b)
        return r.poses, r.coupling

    assert torch.autograd.gradcheck(f, (votes, bias))


@pytest.mark.parametrize("uniform", [False, True])
def test_routing_contract(uniform):
    def route(g, votes, bias):
        return self_attention_routing(g, votes, bias, uniform=uniform, return_trace=True)

    check_routing_contract(route, example_self_attention, ("edge", "edge_value"))


def test_hand_computed_two_children_two_parents():
    # child 0 votes e1 for parent 0 and 0 for parent 1; child 1 votes e1 for parent 0 and 2 e2 for parent 1
    g = dgl.heterograph({("child", "vote", "parent"): (torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]))})
    e1, e2 = torch.eye(4, dtype=torch.float64)[:2]
    votes = torch.stack([e1, 0 * e1, e1, 2 * e2])  # (E, D = 4): the sums are 2 e1 and 2 e2; sqrt(D) = 2
    r = self_attention_routing(g, votes)
    e = math.e
    # logits: child 0 -> (1, 0), child 1 -> (1, 2)
    want_c = torch.tensor([e / (e + 1), 1 / (e + 1), 1 / (1 + e), e / (1 + e)], dtype=torch.float64)
    torch.testing.assert_close(r.coupling, want_c, rtol=1e-12, atol=0)
    # s_0 = (e/(e+1) + 1/(1+e)) e1 = e1; s_1 = 2e/(1+e) e2; length 1 - exp(-|s|)
    n1 = 2 * e / (1 + e)
    want_v = torch.stack([(1 - math.exp(-1)) * e1, (1 - math.exp(-n1)) * e2])
    torch.testing.assert_close(r.poses, want_v, rtol=1e-12, atol=1e-15)
    # the bias is added after the softmax: 0.5 more of child 1's vote e1 for parent 0
    r = self_attention_routing(g, votes, torch.tensor([0.0, 0.0, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(r.coupling, want_c, rtol=1e-12, atol=0)
    torch.testing.assert_close(r.poses[0], (1 - math.exp(-1.5)) * e1, rtol=1e-12, atol=1e-15)


def test_uniform_couplings_are_one_over_the_parents_of_each_child():
    g = graphs()["conv"]
    votes, bias = inputs(g)
    r = self_attention_routing(g, votes, bias, uniform=True)
    src, _ = g.edges()
    want = (1.0 / g.out_degrees().double())[src][:, None].expand(-1, 3)
    torch.testing.assert_close(r.coupling, want, rtol=0, atol=0)


def test_float32_is_close_to_the_float64_reference():
    g = graphs()["paper"]
    votes, bias = inputs(g, (8,), 16)
    r = self_attention_routing(g, votes.float(), bias.float())
    want = reference_self_attention(g, votes, bias)
    assert r.poses.dtype == torch.float32
    torch.testing.assert_close(r.poses.double(), want.poses, rtol=1e-4, atol=1e-5)


def test_registered_with_its_reference_and_example():
    assert "self-attention" in list_routings()
    spec = get_routing("self-attention")
    assert spec.fn is self_attention_routing and spec.label == "self-attention routing (Efficient-CapsNet)"
    assert (spec.normalise, spec.outputs, spec.strength, spec.inputs, spec.iterative) == (
        "parents", ("poses", "coupling"), "length", ("edge", "edge_value"), False)
    assert spec.get_reference() is reference_self_attention and spec.get_example() is example_self_attention
    g = dc.capsule_graph(4, 3)
    args = spec.get_example()(g, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(spec.fn(g, *args).poses, spec.get_reference()(g, *args).poses)


def test_empty_batch_gives_empty_outputs_connected_to_the_votes():
    g = graphs()["conv"]
    votes = torch.randn(g.num_edges(), 0, 4, requires_grad=True)
    r = self_attention_routing(g, votes, 0.1, return_trace=True)
    assert r.poses.shape == (g.num_dst_nodes(), 0, 4) and r.coupling.shape == (g.num_edges(), 0)
    assert len(r.trace) == 1
    r.poses.sum().backward()
    assert votes.grad.shape == votes.shape


def test_bad_inputs_name_the_argument():
    g = dc.capsule_graph(4, 3)
    v = torch.randn(12, 2, 4)
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, D\) with \|E\| = 12 edges of the graph; "
                                         r"got \(11, 16\)"):
        self_attention_routing(g, torch.randn(11, 16))
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, D\) with D >= 1; got \(12, 2, 0\)"):
        self_attention_routing(g, torch.randn(12, 2, 0))
    with pytest.raises(TypeError, match=r"votes must be float32 or float64"):
        self_attention_routing(g, v.half())
    with pytest.raises(ValueError, match=r"bias must be a scalar or have shape \(\|E\|,\) = \(12,\); got \(12, 2\)"):
        self_attention_routing(g, v, torch.zeros(12, 2))
    with pytest.raises(TypeError, match=r"bias must be a number or a floating-point tensor"):
        self_attention_routing(g, v, "0.1")
    with pytest.raises(ValueError, match="eps must be a positive number; got 0"):
        self_attention_routing(g, v, eps=0)
    lonely = dgl.heterograph({("child", "vote", "parent"): (torch.tensor([0]), torch.tensor([0]))},
                             num_nodes_dict={"child": 1, "parent": 2})
    with pytest.raises(dgl.DGLError, match=r"1 parent capsule\(s\) of g have no children"):
        self_attention_routing(lonely, torch.randn(1, 4))
    with pytest.raises(TypeError, match="g must be a dgl.DGLGraph; got str"):
        self_attention_routing("g", v)
