"""Inverted dot-product attention routing (Tsai et al. 2020): the contract, the dense reference, errors, pictures."""
import dgl
import numpy as np
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.nn.inverted import window_capsule_graph
from dgl_capsules.routing import inverted_routing
from dgl_capsules.testing import example_inverted, random_bipartite, reference_inverted


def graphs():
    return {
        "complete": dc.capsule_graph(6, 4),
        "conv": dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2),
        "window": window_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2),
        "conv_stride2": dc.conv_capsule_graph((7, 6), kernel=3, stride=2, in_types=1, out_types=3),
        "random": random_bipartite(9, 5, p=0.4, seed=3),
        "ragged": dgl.batch([dc.capsule_graph(3, 2), random_bipartite(5, 3, p=0.5, seed=1)]),
    }


def inputs(g, batch=3, seed=0):
    return example_inverted(g, batch, torch.Generator().manual_seed(seed))


def close(got, want, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(graphs()))
@pytest.mark.parametrize("n_iters", [1, 2, 4])
@pytest.mark.parametrize("affine", [True, False])
def test_equals_dense_reference(name, n_iters, affine):
    g = graphs()[name]
    votes, weight, bias = inputs(g)
    extra = (weight, bias) if affine else ()
    r = inverted_routing(g, votes, *extra, n_iters=n_iters, return_trace=True)
    want = reference_inverted(g, votes, *extra, n_iters=n_iters, return_trace=True)
    close(r.poses, want.poses)
    assert len(r.trace) == n_iters
    for got, ref in zip(r.trace, want.trace):
        close(got, ref)


def test_without_layer_norm_and_with_two_batch_dims():
    g = graphs()["conv"]
    votes = torch.randn(g.num_edges(), 2, 3, 5, dtype=torch.float64)
    r = inverted_routing(g, votes, normalize=False, n_iters=3, eps=1e-3)
    close(r.poses, reference_inverted(g, votes, normalize=False, n_iters=3).poses)
    assert r.poses.shape == (g.num_dst_nodes(), 2, 3, 5)


def test_first_iteration_is_uniform_and_agreement_then_decides():
    """Votes that agree with the parents' first poses win the children's couplings."""
    g = dc.capsule_graph(8, 2)
    src, dst = g.edges()
    direction = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]], dtype=torch.float64)
    votes = 3 * direction[dst][:, None] + 0.1 * torch.randn(g.num_edges(), 1, 4, dtype=torch.float64)
    votes[dst == 1] = 0.1 * torch.randn(int((dst == 1).sum()), 1, 4, dtype=torch.float64)  # parent 1: noise only
    r = inverted_routing(g, votes, n_iters=3, return_trace=True)
    close(r.trace[0], torch.full_like(r.trace[0], 0.5))
    assert bool((r.trace[-1][dst == 0] > 0.5).all())


@pytest.mark.parametrize("name", ["conv", "ragged"])
def test_gradcheck_message_passing(name):
    g = {"conv": dc.conv_capsule_graph((3, 3), 2, 1, 1, 2),
         "ragged": dgl.batch([dc.capsule_graph(2, 2), random_bipartite(3, 2, p=0.6, seed=2)])}[name]
    x = [t.requires_grad_(True) for t in inputs(g, batch=2)]
    assert torch.autograd.gradcheck(lambda *t: tuple(inverted_routing(g, *t, n_iters=3))[:3:2], x, eps=1e-6,
                                    atol=1e-6, rtol=1e-4)


def test_float32_matches_float64():
    g = graphs()["random"]
    votes, weight, bias = inputs(g)
    r64 = inverted_routing(g, votes, weight, bias)
    r32 = inverted_routing(g, votes.float(), weight, bias)  # the votes decide the dtype
    assert r32.poses.dtype == torch.float32
    torch.testing.assert_close(r32.poses.double(), r64.poses, rtol=1e-4, atol=1e-4)


def test_graph_is_left_without_features():
    g = graphs()["window"]
    before = sorted(g.edata.keys())
    inverted_routing(g, *inputs(g), return_trace=True)
    assert sorted(g.edata.keys()) == before and len(g.srcdata) == 0 and len(g.dstdata) == 0


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((np.zeros((24, 3, 4)),), {}, TypeError, r"^votes must be a torch.Tensor .*torch.from_numpy"),
    ((torch.zeros(24, 3, 4, dtype=torch.float16),), {}, TypeError, r"^votes must be float32 or float64"),
    ((torch.zeros(24, 3, 4, dtype=torch.int64),), {}, TypeError, r"^votes must be a floating-point tensor"),
    ((torch.zeros(23, 3, 4),), {}, ValueError, r"^votes must have shape \(\|E\|, \*, D\) with \|E\| = 24 edges"),
    ((torch.zeros(24),), {}, ValueError, r"^votes must have shape \(\|E\|, \*, D\) with \|E\| = 24 edges"),
    ((torch.zeros(24, 3, 0),), {}, ValueError, r"^votes must have shape \(\|E\|, \*, D\) with D >= 1"),
    ((torch.zeros(24, 3, 4), torch.ones(3)), {}, ValueError, r"^weight must have shape \(D,\) = \(4,\)"),
    ((torch.zeros(24, 3, 4), torch.ones(4, dtype=torch.int64)), {}, TypeError, r"^weight must be a floating-point"),
    ((torch.zeros(24, 3, 4), None, [0.0] * 4), {}, TypeError, r"^bias must be a torch.Tensor"),
    ((torch.zeros(24, 3, 4), torch.ones(4)), dict(normalize=False), ValueError,
     r"^weight is a LayerNorm parameter; it cannot be given with normalize=False"),
    ((torch.zeros(24, 3, 4),), dict(normalize="yes"), ValueError, r"^normalize must be True or False"),
    ((torch.zeros(24, 3, 4),), dict(n_iters=0), ValueError, r"^n_iters must be an integer >= 1"),
    ((torch.zeros(24, 3, 4),), dict(eps=0.0), ValueError, r"^eps must be a positive number"),
])
def test_bad_inputs_are_named(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        inverted_routing(dc.capsule_graph(6, 4), *args, **kwargs)


def test_bad_graphs_are_named():
    with pytest.raises(TypeError, match="inverted_routing: g must be a dgl.DGLGraph"):
        inverted_routing("graph", torch.zeros(3, 4))
    lonely = dgl.heterograph({("child", "vote", "parent"): ([0, 1], [0, 0])}, num_nodes_dict={"child": 2, "parent": 2})
    with pytest.raises(dgl.DGLError, match="inverted_routing: 1 parent capsule"):
        inverted_routing(lonely, torch.zeros(2, 4))
