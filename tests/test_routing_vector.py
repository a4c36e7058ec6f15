"""Vector routing (Heinsen 2022) on capsule graphs: the contract, the dense reference, both paths, errors, pictures."""
import dgl
import numpy as np
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.routing import vector_routing
from dgl_capsules.routing import vector as vector_module
from dgl_capsules.testing import example_vector, random_bipartite, reference_vector


def graphs():
    return {
        "complete": dc.capsule_graph(6, 4),
        "conv": dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2),
        "conv_stride2": dc.conv_capsule_graph((7, 6), kernel=3, stride=2, in_types=1, out_types=3),
        "random": random_bipartite(9, 5, p=0.4, seed=3),
        "ragged": dgl.batch([dc.capsule_graph(3, 2), random_bipartite(5, 3, p=0.5, seed=1), dc.capsule_graph(8, 2)]),
    }


def inputs(g, batch=3, seed=0):
    return example_vector(g, batch, torch.Generator().manual_seed(seed))


def close(got, want, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(graphs()))
@pytest.mark.parametrize("n_iters", [1, 2, 4])
@pytest.mark.parametrize("normalize", [True, False])
def test_equals_dense_reference(name, n_iters, normalize):
    g = graphs()[name]
    x = inputs(g)
    r = vector_routing(g, *x, n_iters=n_iters, normalize=normalize, return_trace=True)
    want = reference_vector(g, *x, n_iters=n_iters, normalize=normalize, return_trace=True)
    close(r.poses, want.poses)
    close(r.coupling, want.coupling)
    assert len(r.trace) == n_iters
    for got, ref in zip(r.trace, want.trace):
        close(got, ref)


@pytest.mark.parametrize("name", ["complete", "conv"])
def test_per_sample_betas_scalar_parameters_and_size_one_outputs(name):
    """Betas per edge and sample (|E|, *), scalar w_s / b_s, D_out = 1 (no LayerNorm) and two batch dims."""
    g = graphs()[name]
    gen = torch.Generator().manual_seed(5)
    kw = dict(generator=gen, dtype=torch.float64)
    n_e, n_j = g.num_edges(), g.num_dst_nodes()
    x, a = torch.randn(g.num_src_nodes(), 2, 3, 4, **kw), torch.randn(g.num_src_nodes(), 2, 3, **kw)
    bu, bi = torch.randn(n_e, 2, 3, **kw), torch.randn(n_e, 2, 3, **kw)
    params = (torch.randn(n_j, 4, **kw), torch.randn(4, 1, **kw), torch.randn(n_j, 1, **kw), torch.randn(1, 4, **kw),
              torch.randn(n_j, 4, **kw), torch.randn(n_j, 4, **kw))
    r = vector_routing(g, x, a, bu, bi, *params, 0.7, -0.2, n_iters=3)
    want = reference_vector(g, x, a, bu, bi, *params, 0.7, -0.2, n_iters=3)
    assert r.poses.shape == (n_j, 2, 3, 1)
    close(r.poses, want.poses)
    close(r.coupling, want.coupling)


@pytest.mark.parametrize("name", ["complete", "conv", "ragged_complete"])
def test_scalar_betas_and_similarity_parameters(name, monkeypatch):
    monkeypatch.setattr(vector_module, "BLOCK_MIN_EDGES", 0)
    g = dict(graphs(), ragged_complete=dgl.batch([dc.capsule_graph(4, 3), dc.capsule_graph(2, 3)]))[name]
    x = inputs(g)
    scalars = x[:2] + (1.5, -0.5) + x[4:10] + (0.8, -1.0)
    for n_iters in (1, 2, 3):
        r = vector_routing(g, *scalars, n_iters=n_iters, return_trace=True)
        want = reference_vector(g, *scalars, n_iters=n_iters, return_trace=True)
        close(r.poses, want.poses)
        for got, ref in zip(r.trace, want.trace):
            close(got, ref)


def test_complete_graph_path_equals_message_passing_with_gradients():
    """The batched-matrix path of complete graphs gives the message-passing path's values and gradients."""
    g, _ = dc.testing.permuted(dc.capsule_graph(6, 4), seed=2)  # complete, in a shuffled edge order
    x = [t.requires_grad_(True) for t in inputs(g)]
    assert vector_module.complete_layout(g).rows is not None
    assert vector_module.complete_layout(dc.capsule_graph(6, 4)).rows is None  # views in the library's order
    assert vector_module.complete_layout(graphs()["conv"]) is None
    assert vector_module.complete_layout(dgl.batch([dc.capsule_graph(3, 2), dc.capsule_graph(2, 2)])) is None
    h = dc.capsule_graph(5, 3)
    layout = vector_module.complete_layout(h)
    assert vector_module.complete_layout(dc.capsule_graph(5, 3)) is layout  # remembered on the shared structure
    assert vector_module.complete_layout(dgl.add_edges(h, [0], [0])) is None  # a changed graph is checked anew
    repeated = dgl.heterograph({("child", "vote", "parent"): ([0, 0, 1, 1], [0, 0, 1, 1])},
                               num_nodes_dict={"child": 2, "parent": 2})
    assert vector_module.complete_layout(repeated) is None
    fast = vector_module.vector_routing_state(g, *x, n_iters=3, return_trace=True)
    plain = vector_module.vector_routing_state(g.int(), *x, n_iters=3, return_trace=True)  # int32 ids
    slow = _message_passing(g, x, n_iters=3)
    for got, want in [(fast.poses, slow.poses), (fast.coupling, slow.coupling), (fast.logits, slow.logits),
                      (fast.predicted, slow.predicted), (plain.poses, slow.poses)] + list(zip(fast.trace, slow.trace)):
        close(got, want)
    weights = [torch.randn_like(t) for t in (slow.poses, slow.coupling)]
    loss = [(weights[0] * s.poses).sum() + (weights[1] * s.coupling).sum() for s in (fast, slow)]
    for gf, gs in zip(torch.autograd.grad(loss[0], x), torch.autograd.grad(loss[1], x)):
        close(gf, gs)


def _message_passing(g, x, n_iters):
    """The message-passing path on any graph, called directly (the entry point picks the matrix path)."""
    x_nodes, a, bu, bi, w_f1, w_f2, b_f2, w_g1, w_g2, b_g2, w_s, b_s = x
    lengths = vector_module.sequence_lengths(g).double().rsqrt()[:, None, None]
    edge = {k: v.view(-1, 1) for k, v in dict(beta_use=bu, beta_ign=bi, w_s=w_s, b_s=b_s).items()}
    p = dict(w_f1=w_f1, w_f2=w_f2, b_f2=b_f2, w_g1=w_g1, w_g2=w_g2, b_g2=b_g2)
    return vector_module._route_message_passing(g, x_nodes, x_nodes * lengths, torch.sigmoid(a), p, edge, n_iters,
                                                True, True)


def test_ragged_batch_scales_every_sequence_by_its_own_length():
    """Sequences of 2, 7 and 30 children in one dgl.batch route as they do alone (the scale is 1/sqrt(n_k))."""
    parts = [dc.capsule_graph(n, 3) for n in (2, 7, 30)]
    part_inputs = [inputs(p, batch=1, seed=k) for k, p in enumerate(parts)]
    shared = part_inputs[0][5], part_inputs[0][7]  # w_f2, w_g1 are shared by all parents
    part_inputs = [x[:5] + (shared[0],) + x[6:7] + (shared[1],) + x[8:] for x in part_inputs]
    together = tuple(shared[0] if k == 5 else shared[1] if k == 7 else torch.cat([x[k] for x in part_inputs])
                     for k in range(12))
    g = dgl.batch(parts)
    assert vector_module.sequence_lengths(g).tolist() == [2] * 2 + [7] * 7 + [30] * 30
    r = vector_routing(g, *together)
    for got, p, x in zip(torch.split(r.poses, 3), parts, part_inputs):
        close(got, vector_routing(p, *x).poses)


@pytest.mark.parametrize("name", ["conv", "ragged"])
def test_gradcheck_message_passing(name):
    g = {"conv": dc.conv_capsule_graph((3, 3), 2, 1, 1, 2),
         "ragged": dgl.batch([dc.capsule_graph(2, 2), random_bipartite(3, 2, p=0.6, seed=2)])}[name]
    x = [t.requires_grad_(True) for t in inputs(g, batch=2)]
    # NOTE: fast_mode checks a random projection of the Jacobian: the full one takes minutes through DGL.
    assert torch.autograd.gradcheck(lambda *t: tuple(vector_routing(g, *t, n_iters=3))[:3:2], x, eps=1e-6,
                                    atol=1e-6, rtol=1e-4, fast_mode=True)


def test_float32_matches_float64():
    g = graphs()["random"]
    x = inputs(g)
    r64 = vector_routing(g, *x)
    r32 = vector_routing(g, *(t.float() for t in x))
    assert r32.poses.dtype == torch.float32
    torch.testing.assert_close(r32.poses.double(), r64.poses, rtol=1e-4, atol=1e-4)


def test_graph_is_left_without_features():
    g = graphs()["conv"]
    before = sorted(g.edata.keys())
    vector_routing(g, *inputs(g), return_trace=True)
    assert sorted(g.edata.keys()) == before and len(g.srcdata) == 0 and len(g.dstdata) == 0


def _bad(g, values, **change):
    """The example inputs of g with some replaced by name."""
    names = ["x", "a", "beta_use", "beta_ign", "w_f1", "w_f2", "b_f2", "w_g1", "w_g2", "b_g2", "w_s", "b_s"]
    args = dict(zip(names, values))
    kwargs = {k: v for k, v in change.items() if k not in names}
    args.update({k: v for k, v in change.items() if k in names})
    return lambda: vector_routing(g, *[args[k] for k in names], **kwargs)


@pytest.mark.parametrize("change, exc, match", [
    (dict(x=np.zeros((6, 3, 3))), TypeError, r"^x must be a torch.Tensor .*torch.from_numpy"),
    (dict(x=torch.zeros(6, 3, 3, dtype=torch.float16)), TypeError, r"^x must be float32 or float64"),
    (dict(x=torch.zeros(6, 3, 3, dtype=torch.int64)), TypeError, r"^x must be a floating-point tensor"),
    (dict(x=torch.zeros(5, 3, 3, dtype=torch.float64)), ValueError, r"^x must have shape \(N_src, \*, D_in\) with N_src = 6"),
    (dict(x=torch.zeros(6, 3, 0, dtype=torch.float64)), ValueError, r"^x must have shape .* D_in >= 1"),
    (dict(x=torch.zeros(6, dtype=torch.float64)), ValueError, r"^x must have shape"),
    (dict(a=torch.zeros(6, 2, dtype=torch.float64)), ValueError, r"^a must have shape \(N_src, \*\) = \(6, 3\)"),
    (dict(a=torch.zeros(6, 3, dtype=torch.int64)), TypeError, r"^a must be a floating-point tensor"),
    (dict(beta_use=torch.zeros(23, dtype=torch.float64)), ValueError, r"^beta_use must have shape \(\), \(\|E\|,\) = \(24,\) or \(\|E\|, \*\)"),
    (dict(beta_ign=np.zeros(24)), TypeError, r"^beta_ign must be a torch.Tensor .*torch.from_numpy"),
    (dict(beta_ign="1"), TypeError, r"^beta_ign must be a number or a floating-point tensor"),
    (dict(beta_use=True), TypeError, r"^beta_use must be a number or a floating-point tensor"),
    (dict(w_s=torch.zeros(24, 3, dtype=torch.float64)), ValueError, r"^w_s must have shape \(\) or \(\|E\|,\) = \(24,\); got \(24, 3\)"),
    (dict(b_s=torch.zeros(24, dtype=torch.int32)), TypeError, r"^b_s must be a floating-point tensor"),
    (dict(w_f1=torch.zeros(4, 2, dtype=torch.float64)), ValueError, r"^w_f1 must have shape \(N_dst, D_in\) = \(4, 3\)"),
    (dict(w_f2=torch.zeros(2, 3, dtype=torch.float64)), ValueError, r"^w_f2 must have shape \(D_in, D_out\) = \(3, D_out\)"),
    (dict(w_f2=torch.zeros(3, 0, dtype=torch.float64)), ValueError, r"^w_f2 must have shape"),
    (dict(b_f2=torch.zeros(4, 2, dtype=torch.float64)), ValueError, r"^b_f2 must have shape \(N_dst, D_out\) = \(4, 3\)"),
    (dict(w_g1=torch.zeros(3, 2, dtype=torch.float64)), ValueError, r"^w_g1 must have shape \(D_out, D_in\) = \(3, 3\)"),
    (dict(w_g2=torch.zeros(3, 3, dtype=torch.float64)), ValueError, r"^w_g2 must have shape \(N_dst, D_in\) = \(4, 3\)"),
    (dict(b_g2=[0.0]), TypeError, r"^b_g2 must be a torch.Tensor"),
    (dict(n_iters=0), ValueError, r"^n_iters must be an integer >= 1"),
    (dict(normalize=1), ValueError, r"^normalize must be True or False"),
])
def test_bad_inputs_are_named(change, exc, match):
    g = dc.capsule_graph(6, 4)
    with pytest.raises(exc, match=match):
        _bad(g, inputs(g), **change)()


def test_bad_graphs_are_named():
    g = dc.capsule_graph(6, 4)
    x = inputs(g)
    with pytest.raises(TypeError, match="vector_routing: g must be a dgl.DGLGraph"):
        vector_routing(None, *x)
    lonely = dgl.heterograph({("child", "vote", "parent"): ([0, 1], [0, 0])}, num_nodes_dict={"child": 6, "parent": 4})
    with pytest.raises(dgl.DGLError, match="vector_routing: 3 parent capsule"):
        vector_routing(lonely, *inputs(lonely))


def test_batch_of_complete_graphs_routes_part_by_part(monkeypatch):
    """A dgl.batch of complete graphs (a ragged batch of sequences) takes the per-part matrix path: same results
    and gradients as message passing and as the dense reference."""
    g = dgl.batch([dc.capsule_graph(3, 2), dc.capsule_graph(5, 3), dc.capsule_graph(2, 4)])
    x = [t.requires_grad_(True) for t in inputs(g)]
    monkeypatch.setattr(vector_module, "BLOCK_MIN_EDGES", 0)
    assert [p[1:4:2] for p in vector_module.complete_parts(g)] == [(3, 2), (5, 3), (2, 4)]
    blocks = vector_module.vector_routing_state(g, *x, n_iters=3, return_trace=True)
    monkeypatch.setattr(vector_module, "BLOCK_MIN_EDGES", 10 ** 9)
    assert vector_module.complete_parts(g) is None
    slow = vector_module.vector_routing_state(g, *x, n_iters=3, return_trace=True)
    want = reference_vector(g, *x, n_iters=3, return_trace=True)
    close(blocks.poses, want.poses)
    for got, ref, mp in zip(blocks.trace, want.trace, slow.trace):
        close(got, ref)
        close(got, mp)
    close(blocks.logits, slow.logits)
    close(blocks.predicted, slow.predicted)
    w = torch.randn_like(want.poses)
    for gb, gs in zip(torch.autograd.grad((w * blocks.poses).sum() + blocks.coupling.sum(), x),
                      torch.autograd.grad((w * slow.poses).sum() + slow.coupling.sum(), x)):
        close(gb, gs)


def test_batches_that_are_not_complete_graphs_in_order_pass_by_messages(monkeypatch):
    monkeypatch.setattr(vector_module, "BLOCK_MIN_EDGES", 0)
    shuffled, _ = dc.testing.permuted(dc.capsule_graph(3, 2), seed=1)
    for parts in ([dc.capsule_graph(3, 2), shuffled], [dc.capsule_graph(3, 2), random_bipartite(4, 2, p=0.5, seed=0)]):
        g = dgl.batch(parts)
        assert vector_module.complete_parts(g) is None
        close(vector_routing(g, *inputs(g)).poses, reference_vector(g, *inputs(g)).poses)
    assert vector_module.complete_parts(dc.capsule_graph(3, 2)) is None  # one graph: the complete path
