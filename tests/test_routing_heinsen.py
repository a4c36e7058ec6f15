import dgl
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.routing import heinsen_routing
from dgl_capsules.testing import (
    check_routing_contract,
    dense_heinsen_routing,
    dense_mask,
    edge_to_dense,
)


def graphs():
    return {
        "complete": dc.capsule_graph(7, 4),
        "conv": dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2),
        "conv_stride2": dc.conv_capsule_graph((7, 6), kernel=3, stride=2, in_types=1, out_types=3),
        "random_mask": random_bipartite(9, 5, p=0.4, seed=3),
    }


def random_bipartite(n_in, n_out, p, seed):
    """A random child -> parent mask where every parent has a child (some children have no parent)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_in, n_out, generator=gen) < p
    mask[torch.randint(n_in, (n_out,), generator=gen), torch.arange(n_out)] = True
    mask[0] = False  # a child with no parent contributes nothing
    mask[0, 0] = False
    if not mask[:, 0].any():
        mask[1, 0] = True
    src, dst = mask.nonzero(as_tuple=True)
    return dgl.heterograph({("child", "vote", "parent"): (src, dst)}, num_nodes_dict={"child": n_in, "parent": n_out})


def route_both(g, votes, a, beta_use, beta_ign, n_iters, p_model):
    """Graph path and dense path on the same float64 inputs; dense outputs in graph layout."""
    r = heinsen_routing(g, votes, a, beta_use, beta_ign, n_iters=n_iters, p_model=p_model)
    V = edge_to_dense(g, votes).movedim(2, 0)  # (B, I, J, C, H)
    bu = edge_to_dense(g, beta_use) if beta_use.dim() else beta_use
    bi = edge_to_dense(g, beta_ign) if beta_ign.dim() else beta_ign
    a_out, mu, sig2, R = dense_heinsen_routing(V, a.T, bu, bi, dense_mask(g), n_iters, p_model=p_model)
    src, dst = g.edges()
    return r, (a_out.T, mu.movedim(0, 1), sig2.movedim(0, 1), R[:, src, dst].T)


def inputs(g, batch=3, c=2, h=3, per_edge_beta=True, requires_grad=False):
    kw = dict(dtype=torch.float64, requires_grad=requires_grad)
    votes = torch.randn(g.num_edges(), batch, c, h, **kw)
    a = torch.randn(g.num_src_nodes(), batch, **kw)
    shape = (g.num_edges(),) if per_edge_beta else ()
    return votes, a, torch.randn(shape, **kw), torch.randn(shape, **kw)


@pytest.mark.parametrize("p_model", ["gaussian", "skm"])
@pytest.mark.parametrize("n_iters", [1, 2, 3, 5])
def test_equals_dense_algorithm(p_model, n_iters):
    check_routing_contract("heinsen", p_model=p_model, n_iters=n_iters, graphs=graphs(), checks=["reference"])


@pytest.mark.parametrize("p_model", ["gaussian", "skm"])
@pytest.mark.parametrize("name", ["complete", "random_mask"])
def test_gradients_equal_dense(p_model, name):
    g = graphs()[name]
    votes, a, bu, bi = inputs(g, requires_grad=True)
    r, dense = route_both(g, votes, a, bu, bi, 3, p_model)
    weights = [torch.randn_like(x) for x in dense]

    def loss(outs):
        return sum((w * o).sum() for w, o in zip(weights, outs))

    got = torch.autograd.grad(loss((r.activations, r.poses, r.sigma2, r.coupling)), (votes, a, bu, bi))
    want = torch.autograd.grad(loss(dense), (votes, a, bu, bi))
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)


def test_relabelling_children_permutes_nothing_at_the_parents():
    g = dc.capsule_graph(10, 3)
    votes, a, _, _ = inputs(g)
    order = torch.randperm(10)
    src, dst = g.edges()
    # The vote of new child k for parent j is the old vote of child order[k] for j.
    dense = edge_to_dense(g, votes)[order]
    x = heinsen_routing(g, votes, a, 0.3, -0.2)
    y = heinsen_routing(g, dense[src, dst], a[order], 0.3, -0.2)
    torch.testing.assert_close(x.activations, y.activations, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.poses, y.poses, rtol=1e-12, atol=1e-12)


def test_extra_batch_dims_route_every_sample_alone():
    g = dc.capsule_graph(12, 4)
    votes = torch.randn(g.num_edges(), 2, 3, 4, 4)
    a = torch.randn(12, 2, 3)
    r = heinsen_routing(g, votes, a, 1.0, 1.0)
    assert r.activations.shape == (4, 2, 3) and r.poses.shape == (4, 2, 3, 4, 4) and r.coupling.shape == (48, 2, 3)
    alone = heinsen_routing(g, votes[:, 1, 2], a[:, 1, 2], 1.0, 1.0)
    torch.testing.assert_close(r.poses[:, 1, 2], alone.poses)
    torch.testing.assert_close(r.activations[:, 1, 2], alone.activations)
    torch.testing.assert_close(r.coupling[:, 1, 2], alone.coupling)


def test_scores_and_betas_do_what_the_paper_says():
    g = dc.capsule_graph(6, 2)
    votes = torch.randn(12, 1, 2, dtype=torch.float64)
    # With beta_use = 1 and beta_ign = 0, a_out_j = sum_i f(a_i) R_ij, so the outputs sum to sum_i f(a_i).
    a = torch.randn(6, dtype=torch.float64)
    r = heinsen_routing(g, votes, a, 1.0, 0.0)
    torch.testing.assert_close(r.activations.sum(), torch.sigmoid(a).sum())
    # A child with score -> -inf has f = 0: it changes nothing at the parents.
    a2 = torch.cat([a, torch.tensor([-float("inf")], dtype=torch.float64)])
    g2 = dc.capsule_graph(7, 2)
    v2 = torch.cat([edge_to_dense(g, votes), 100 * torch.randn(1, 2, 1, 2, dtype=torch.float64)])
    src, dst = g2.edges()
    r2 = heinsen_routing(g2, v2[src, dst], a2, 1.0, 0.0)
    torch.testing.assert_close(r2.poses, r.poses)
    torch.testing.assert_close(r2.sigma2, r.sigma2)


def test_bad_inputs_name_the_argument():
    g = dc.capsule_graph(4, 3)
    v = torch.randn(12, 2, 4, 4)
    a = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, C, H\) with \|E\| = 12 edges of the graph; got \(11, 2, 4, 4\)"):
        heinsen_routing(g, v[:11], a, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, C, H\).*got \(12, 4\)"):
        heinsen_routing(g, torch.randn(12, 4), a, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"a_in must have shape \(N_src, \*\) = \(4, 2\); got \(4, 3\)"):
        heinsen_routing(g, v, torch.randn(4, 3), 0.0, 0.0)
    with pytest.raises(TypeError, match=r"a_in must be a floating-point tensor of shape \(N_src, \*\); got dtype torch.int64"):
        heinsen_routing(g, v, torch.ones(4, 2, dtype=torch.long), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"beta_use must be a scalar or have shape \(\|E\|,\) = \(12,\); got \(3,\)"):
        heinsen_routing(g, v, a, torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match=r"beta_ign must be a scalar or have shape \(\|E\|,\) = \(12,\); got \(12, 2\)"):
        heinsen_routing(g, v, a, 0.0, torch.zeros(12, 2))
    with pytest.raises(ValueError, match=r"p_model must be one of \('gaussian', 'skm'\); got 'kmeans'"):
        heinsen_routing(g, v, a, 0.0, 0.0, p_model="kmeans")
    for eps in (0, -1e-5, "1e-5"):
        with pytest.raises(ValueError, match="eps must be a positive number"):
            heinsen_routing(g, v, a, 0.0, 0.0, eps=eps)
    with pytest.raises(ValueError, match="n_iters must be an integer >= 1; got 0"):
        heinsen_routing(g, v, a, 0.0, 0.0, n_iters=0)
    lonely = dgl.heterograph({("child", "vote", "parent"): (torch.tensor([0]), torch.tensor([0]))},
                             num_nodes_dict={"child": 1, "parent": 2})
    with pytest.raises(dgl.DGLError, match=r"1 parent capsule\(s\) of g have no children"):
        heinsen_routing(lonely, torch.randn(1, 1, 1), torch.randn(1), 0.0, 0.0)


# Dtypes and messages (the routing contract checks the rest).


def test_routing_contract_with_soft_k_means():
    check_routing_contract("heinsen", p_model="skm")


def test_mixed_dtypes_follow_the_votes():
    g = graphs()["conv"]
    votes, a, bu, bi = inputs(g)
    want = heinsen_routing(g, votes.float(), a.float(), bu.float(), bi.float())
    got = heinsen_routing(g, votes.float(), a, bu, bi)  # a_in and betas float64: cast to float32
    for x, y in zip((got.activations, got.poses, got.sigma2, got.coupling),
                    (want.activations, want.poses, want.sigma2, want.coupling)):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    r64 = heinsen_routing(g, votes, a.float(), 0.5, bi.float())
    assert r64.poses.dtype == torch.float64 and r64.activations.dtype == torch.float64


def test_half_precision_votes_are_refused():
    g = graphs()["complete"]
    votes, a, bu, bi = inputs(g)
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(TypeError, match=rf"votes must be float32 or float64 .*; got {dtype}"):
            heinsen_routing(g, votes.to(dtype), a.to(dtype), 0.0, 0.0)


def test_messages_name_the_argument_at_fault():
    g = dc.capsule_graph(4, 3)
    v = torch.randn(12, 2, 4, 4)
    a = torch.randn(4, 2)
    # votes without the C axis: the votes are wrong, not a_in
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, C, H\), a C x H matrix per edge after "
                                         r"the batch dims \* of a_in \(2,\); got \(12, 2, 4\)"):
        heinsen_routing(g, torch.randn(12, 2, 4), a, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, C, H\) with C, H >= 1"):
        heinsen_routing(g, torch.randn(12, 2, 4, 0), a, 0.0, 0.0)
    for bad, shown in [(None, "None"), ("0", "'0'"), (True, "True"), (torch.zeros(12).numpy(), "ndarray")]:
        with pytest.raises(TypeError, match=rf"beta_use must be a number or a floating-point tensor of shape \(\) or "
                                            rf"\(\|E\|,\) = \(12,\); got {shown}"):
            heinsen_routing(g, v, a, bad, 0.0)
        with pytest.raises(TypeError, match=r"beta_ign must be a number"):
            heinsen_routing(g, v, a, 0.0, bad)
    with pytest.raises(TypeError, match=r"beta_use must be a floating-point tensor .*got dtype torch.int64"):
        heinsen_routing(g, v, a, torch.zeros(12, dtype=torch.long), 0.0)
    with pytest.raises(TypeError, match=r"a_in must be a torch.Tensor .*got numpy.ndarray"):
        heinsen_routing(g, v, a.numpy(), 0.0, 0.0)
    r = heinsen_routing(g, v, a, [0.1] * 12, 0)  # a list of numbers and a Python int are fine
    assert r.poses.shape == (3, 2, 4, 4)
