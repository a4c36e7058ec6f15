import dgl
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.routing import em_routing
from dgl_capsules.routing import em as em_module
from dgl_capsules.testing import check_routing_contract, dense_em_routing, dense_mask, edge_to_dense, permuted


@pytest.fixture(params=["blocks", "dgl"])
def path(request, monkeypatch):
    """Both implementations: dense blocks for graphs whose parents all have the same number of
    children (every graph below), DGL's sparse kernels for any graph (forced here)."""
    if request.param == "dgl":
        monkeypatch.setattr(em_module, "_regular_layout", lambda g: None)
    return request.param


def graphs():
    return {
        "complete": dc.capsule_graph(7, 4),
        "conv": dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2),
        "conv_stride2": dc.conv_capsule_graph((7, 6), kernel=3, stride=2, in_types=2, out_types=3),
    }


def inputs(g, batch=3, dtype=torch.float64, requires_grad=False):
    votes = torch.randn(g.num_edges(), batch, 16, dtype=dtype)
    a_in = torch.rand(g.num_src_nodes(), batch, dtype=dtype)
    beta_u = 0.3 * torch.randn(g.num_dst_nodes(), dtype=dtype)
    beta_a = 0.3 * torch.randn(g.num_dst_nodes(), dtype=dtype)
    out = [votes, a_in, beta_u, beta_a]
    return [x.requires_grad_(requires_grad) for x in out]


# Large enough to make the activations, and through them the E-step, matter.
LAMBDAS = [0.05, 0.1, 0.2, 0.4]


def route_both(g, votes, a_in, beta_u, beta_a, n_iters, lambdas=LAMBDAS):
    """Graph path and dense path on the same inputs; dense results back in graph layout."""
    r = em_routing(g, votes, a_in, beta_u, beta_a, n_iters=n_iters,
                   inverse_temperatures=lambdas, return_trace=True)
    V = edge_to_dense(g, votes).permute(2, 0, 1, 3)  # (B, I, J, H)
    mu, sigma2, act, Rs = dense_em_routing(V, a_in.T, dense_mask(g), beta_u, beta_a, lambdas[:n_iters])
    src, dst = g.edges()
    Rs = [R[:, src, dst].T for R in Rs]  # (E, B)
    return r, (mu.transpose(0, 1), sigma2.transpose(0, 1), act.T, Rs)


@pytest.mark.parametrize("n_iters", [1, 2, 3, 4])
def test_equals_dense_procedure_1(n_iters, path):
    check_routing_contract("em", n_iters=n_iters, inverse_temperatures=LAMBDAS, graphs=graphs(), checks=["reference"])
    g = graphs()["conv"]  # with these inverse temperatures the routing moves away from the uniform start
    r = em_routing(g, *inputs(g), n_iters=n_iters, inverse_temperatures=LAMBDAS, return_trace=True)
    assert n_iters == 1 or (r.coupling - r.trace[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["complete", "conv"])
def test_gradients_equal_dense(name, path):
    g = graphs()[name]
    args = inputs(g, batch=2, requires_grad=True)
    r, (mu, sigma2, act, Rs) = route_both(g, *args, 3)
    weights = [torch.randn_like(x) for x in (mu, sigma2, act, Rs[-1])]

    def loss(outs):
        return sum((w * o).sum() for w, o in zip(weights, outs))

    grads_graph = torch.autograd.grad(loss((r.poses, r.sigma2, r.activations, r.coupling)), args)
    grads_dense = torch.autograd.grad(loss((mu, sigma2, act, Rs[-1])), args)
    for mine, theirs in zip(grads_graph, grads_dense):
        torch.testing.assert_close(mine, theirs, rtol=1e-8, atol=1e-10)


def test_gradcheck_tiny(path):
    g = dc.conv_capsule_graph((3, 3), kernel=2, stride=1, in_types=1, out_types=1)
    votes = (0.5 * torch.randn(g.num_edges(), 1, 3, dtype=torch.float64)).requires_grad_(True)
    a_in = (0.1 + 0.8 * torch.rand(g.num_src_nodes(), 1, dtype=torch.float64)).requires_grad_(True)
    beta_u = torch.randn(g.num_dst_nodes(), dtype=torch.float64, requires_grad=True)
    beta_a = torch.randn(g.num_dst_nodes(), dtype=torch.float64, requires_grad=True)

    def f(votes, a_in, beta_u, beta_a):
        r = em_routing(g, votes, a_in, beta_u, beta_a, n_iters=3, inverse_temperatures=LAMBDAS)
        return r.poses, r.sigma2, r.activations, r.coupling

    assert torch.autograd.gradcheck(f, (votes, a_in, beta_u, beta_a), fast_mode=True)


@pytest.mark.parametrize("n_iters", [1, 2, 3])
def test_gradcheck_trace_inverse_temperatures_and_batch_dims(n_iters, path):
    # The hand-written backward: every output (the trace included) and every input
    # (inverse temperatures included), two batch dims, a complete graph.
    g = dc.capsule_graph(3, 2)
    votes = (0.5 * torch.randn(g.num_edges(), 2, 1, 3, dtype=torch.float64)).requires_grad_(True)
    a_in = (0.1 + 0.8 * torch.rand(g.num_src_nodes(), 2, 1, dtype=torch.float64)).requires_grad_(True)
    beta_u = torch.randn((), dtype=torch.float64, requires_grad=True)
    beta_a = torch.randn(g.num_dst_nodes(), dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(LAMBDAS[:n_iters], dtype=torch.float64, requires_grad=True)

    def f(votes, a_in, beta_u, beta_a, lam):
        r = em_routing(g, votes, a_in, beta_u, beta_a, n_iters=n_iters, inverse_temperatures=lam,
                       return_trace=True)
        return (r.poses, r.sigma2, r.activations, *r.trace[1:])

    assert torch.autograd.gradcheck(f, (votes, a_in, beta_u, beta_a, lam))


def test_routing_contract_with_large_inverse_temperatures(path):
    # (their gradients on both paths: test_gradcheck_trace_inverse_temperatures_and_batch_dims)
    check_routing_contract("em", inverse_temperatures=LAMBDAS, gradcheck=False)


def test_a_child_with_zero_activation_does_not_move_any_parent(path):
    g = graphs()["conv"]
    votes, a_in, beta_u, beta_a = inputs(g)
    child = (2 * 5 + 2) * 2  # centre (2, 2) of the 5x5 grid, type 0: feeds 9 positions x 2 types
    a_in[child] = 0.0
    src, _ = g.edges()
    mine = src == child
    assert int(mine.sum()) == 18
    other = votes.clone()
    other[mine] = 100 * torch.randn_like(other[mine])
    r1 = em_routing(g, votes, a_in, beta_u, beta_a, n_iters=3, inverse_temperatures=LAMBDAS)
    r2 = em_routing(g, other, a_in, beta_u, beta_a, n_iters=3, inverse_temperatures=LAMBDAS)
    torch.testing.assert_close(r1.poses, r2.poses, rtol=0, atol=1e-12)
    torch.testing.assert_close(r1.sigma2, r2.sigma2, rtol=0, atol=1e-12)
    torch.testing.assert_close(r1.activations, r2.activations, rtol=0, atol=1e-12)
    other.requires_grad_(True)
    r3 = em_routing(g, other, a_in, beta_u, beta_a, n_iters=3, inverse_temperatures=LAMBDAS)
    (grad,) = torch.autograd.grad(r3.poses.sum() + r3.activations.sum(), other)
    assert torch.equal(grad[mine], torch.zeros_like(grad[mine]))
    assert grad[~mine].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["complete", "conv"])
def test_zero_variance_votes_stay_finite(name, dtype, path):
    g = graphs()[name]
    votes = torch.randn(1, 2, 16).to(dtype).expand(g.num_edges(), 2, 16).clone().requires_grad_(True)
    a_in = torch.rand(g.num_src_nodes(), 2).to(dtype).requires_grad_(True)
    beta_u = torch.zeros(g.num_dst_nodes(), dtype=dtype, requires_grad=True)
    beta_a = torch.zeros(g.num_dst_nodes(), dtype=dtype, requires_grad=True)
    r = em_routing(g, votes, a_in, beta_u, beta_a, n_iters=3, inverse_temperatures=LAMBDAS)
    for x in (r.poses, r.sigma2, r.activations, r.coupling):
        assert x.dtype == dtype and torch.isfinite(x).all()
    # every parent's variance is just eps, up to the rounding of mu in this dtype
    rounding = 4 * torch.finfo(dtype).eps * float(votes.detach().abs().max())
    assert float(r.sigma2.float().max()) <= 1e-6 * 1.01 + rounding**2
    loss = r.poses.sum() + r.sigma2.log().sum() + r.activations.sum() + r.coupling.square().sum()
    grads = torch.autograd.grad(loss, (votes, a_in, beta_u, beta_a))
    for x in grads:
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_votes_raise_the_libraries_dtype_error(dtype):
    g = graphs()["complete"]
    votes, a_in, beta_u, beta_a = inputs(g, dtype=torch.float32)
    with pytest.raises(TypeError, match=rf"votes must be float32 or float64 \(.*\); got {dtype}$"):
        em_routing(g, votes.to(dtype), a_in, beta_u, beta_a)


def test_mixed_float32_and_float64_are_cast_to_the_votes_dtype():
    g = graphs()["conv"]
    votes, a_in, beta_u, beta_a = inputs(g)  # float64
    ref = em_routing(g, votes.float(), a_in.float(), beta_u.float(), beta_a.float(), inverse_temperatures=LAMBDAS)
    mixed = em_routing(g, votes.float(), a_in, beta_u, beta_a.float(),
                       inverse_temperatures=torch.tensor(LAMBDAS, dtype=torch.float64))
    for x, y in zip((ref.poses, ref.sigma2, ref.activations, ref.coupling),
                    (mixed.poses, mixed.sigma2, mixed.activations, mixed.coupling)):
        assert y.dtype == torch.float32
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    r64 = em_routing(g, votes, a_in.float(), beta_u.float(), beta_a, inverse_temperatures=LAMBDAS)
    assert r64.poses.dtype == r64.activations.dtype == torch.float64


def test_an_empty_batch_with_two_batch_dims(path):
    g = graphs()["conv_stride2"]
    two = em_routing(g, torch.randn(g.num_edges(), 3, 0, 16), torch.rand(g.num_src_nodes(), 3, 0), 0.0, 0.0)
    n = g.num_dst_nodes()
    assert two.poses.shape == (n, 3, 0, 16) and two.activations.shape == (n, 3, 0)


@pytest.mark.parametrize("mean", [1e3, 1e4])
def test_votes_of_large_mean_and_tiny_spread_keep_float32_close_to_float64(mean, path):
    # E[V^2] - E[V]^2 would cancel catastrophically here in float32; the spread is 1e-3 of a unit.
    g = graphs()["conv_stride2"]
    gen = torch.Generator().manual_seed(3)
    votes = (mean + 1e-2 * torch.randn(g.num_edges(), 2, 16, generator=gen, dtype=torch.float64)).float()
    a_in = torch.rand(g.num_src_nodes(), 2, generator=gen)
    beta_u, beta_a = torch.zeros(g.num_dst_nodes()), torch.zeros(g.num_dst_nodes())
    r32 = em_routing(g, votes, a_in, beta_u, beta_a, n_iters=3, inverse_temperatures=LAMBDAS, eps=1e-9)
    r64 = em_routing(g, votes.double(), a_in.double(), beta_u.double(), beta_a.double(), n_iters=3,
                     inverse_temperatures=LAMBDAS, eps=1e-9)
    spread = r64.sigma2 - 1e-9
    assert float(spread.min()) > 1e-8 and float(spread.mean()) > 1e-5  # the votes really spread out
    torch.testing.assert_close(r32.sigma2.double(), r64.sigma2, rtol=1e-3, atol=0)
    torch.testing.assert_close(r32.coupling.double(), r64.coupling, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(r32.activations.double(), r64.activations, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r32.poses.double(), r64.poses, rtol=1e-6, atol=0)


def test_float32_is_within_float32_tolerance_of_float64(path):
    for name, g in graphs().items():
        args = inputs(g, batch=4)
        r64 = em_routing(g, *args, n_iters=3, inverse_temperatures=LAMBDAS)
        r32 = em_routing(g, *[x.float() for x in args], n_iters=3, inverse_temperatures=LAMBDAS)
        for x, y in ((r32.poses, r64.poses), (r32.sigma2, r64.sigma2), (r32.activations, r64.activations),
                     (r32.coupling, r64.coupling)):
            torch.testing.assert_close(x.double(), y, rtol=1.3e-6 * 20, atol=1e-5 * 4)


def test_extra_batch_dims_equal_one_flat_batch_dim(path):
    g = graphs()["conv"]
    votes, a_in, beta_u, beta_a = inputs(g, batch=6, dtype=torch.float32)
    two = em_routing(g, votes.view(-1, 2, 3, 16), a_in.view(-1, 2, 3), beta_u, beta_a,
                     inverse_temperatures=LAMBDAS)
    flat = em_routing(g, votes, a_in, beta_u, beta_a, inverse_temperatures=LAMBDAS)
    assert two.poses.shape == (g.num_dst_nodes(), 2, 3, 16) and two.activations.shape[1:] == (2, 3)
    torch.testing.assert_close(two.poses.reshape(flat.poses.shape), flat.poses)
    torch.testing.assert_close(two.activations.reshape(flat.activations.shape), flat.activations)


def test_bad_inputs_name_the_argument():
    g = dc.capsule_graph(4, 3)
    votes, a_in = torch.randn(12, 2, 16), torch.rand(4, 2)
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, P\) with \|E\| = 12 edges of the graph; got \(11, 2, 16\)"):
        em_routing(g, votes[:11], a_in, 0.0, 0.0)
    with pytest.raises(TypeError, match="votes must be a floating-point tensor"):
        em_routing(g, votes.long(), a_in, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"a_in must have shape \(N_src, \*\) = \(4, 2\); got \(5, 2\)"):
        em_routing(g, votes, torch.rand(5, 2), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"a_in must have shape \(N_src, \*\) = \(4, 2\); got \(4, 3\)"):
        em_routing(g, votes, torch.rand(4, 3), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"a_in must have shape \(N_src, \*\) = \(4, 2\); got \(4,\)"):
        em_routing(g, votes, torch.rand(4), 0.0, 0.0)
    with pytest.raises(TypeError, match="a_in must be a torch.Tensor"):
        em_routing(g, votes, [0.5] * 4, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"a_in must hold activations in \[0, 1\]; got values in \[-0.5, "):
        em_routing(g, votes, a_in - 0.5 - a_in, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"beta_u must be a scalar or have shape \(N_dst,\) = \(3,\); got \(4,\)"):
        em_routing(g, votes, a_in, torch.zeros(4), 0.0)
    with pytest.raises(ValueError, match=r"beta_a must be a scalar or have shape \(N_dst,\) = \(3,\); got \(3, 1\)"):
        em_routing(g, votes, a_in, 0.0, torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"inverse_temperatures must be a sequence with at least n_iters = 3 values \(one per iteration\); got shape \(2,\)"):
        em_routing(g, votes, a_in, 0.0, 0.0, inverse_temperatures=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"inverse_temperatures must be a sequence .* got shape \(\)"):
        em_routing(g, votes, a_in, 0.0, 0.0, n_iters=1, inverse_temperatures=0.1)
    for n in (0, -2, 2.5):
        with pytest.raises(ValueError, match=f"n_iters must be an integer >= 1; got {n}"):
            em_routing(g, votes, a_in, 0.0, 0.0, n_iters=n)
    for eps in (0, -1e-6, "1e-6"):
        with pytest.raises(ValueError, match="eps must be a positive number; got"):
            em_routing(g, votes, a_in, 0.0, 0.0, eps=eps)
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, \*, P\) .*flatten 4x4 pose matrices to P = 16\); got \(12, 2, 4, 4\)"):
        em_routing(g, votes.view(12, 2, 4, 4), a_in, 0.0, 0.0)
    for name in ("beta_u", "beta_a"):
        for bad in (None, "0", True):
            kw = dict(beta_u=0.0, beta_a=0.0)
            kw[name] = bad
            with pytest.raises(TypeError, match=f"{name} must be a float or a tensor of shape \\(\\) or \\(N_dst,\\) = \\(3,\\); got"):
                em_routing(g, votes, a_in, **kw)
        kw = dict(beta_u=0.0, beta_a=0.0)
        kw[name] = torch.zeros(3, dtype=torch.long)
        with pytest.raises(TypeError, match=f"{name} must be a float or a floating-point tensor; got dtype torch.int64"):
            em_routing(g, votes, a_in, **kw)
    for lam in ([0.1, -0.2, 0.3], [0.1, float("nan"), 0.3], [float("inf")] * 3):
        with pytest.raises(ValueError, match=r"inverse_temperatures must be finite and >= 0; got \["):
            em_routing(g, votes, a_in, 0.0, 0.0, inverse_temperatures=lam)
    with pytest.raises(TypeError, match="inverse_temperatures must be a sequence of numbers"):
        em_routing(g, votes, a_in, 0.0, 0.0, inverse_temperatures=["a", "b", "c"])
    lonely = dgl.heterograph(
        {("child", "vote", "parent"): (torch.tensor([0, 1]), torch.tensor([0, 0]))},
        num_nodes_dict={"child": 2, "parent": 2},
    )
    with pytest.raises(dgl.DGLError, match=r"1 parent capsule\(s\) of g have no children"):
        em_routing(lonely, torch.randn(2, 16), torch.rand(2), 0.0, 0.0)


def test_more_inverse_temperatures_than_iterations_uses_the_first():
    g = graphs()["complete"]
    args = inputs(g)
    a = em_routing(g, *args, n_iters=2, inverse_temperatures=torch.tensor([0.1, 0.3, 9.0], dtype=torch.float64))
    b = em_routing(g, *args, n_iters=2, inverse_temperatures=[0.1, 0.3])
    torch.testing.assert_close(a.activations, b.activations, rtol=0, atol=0)


def test_the_dense_block_path_is_taken_exactly_when_every_parent_has_as_many_children():
    conv = dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=2, out_types=2)
    assert em_module._regular_layout(conv) == (18, None)  # grouped by parent: no reordering
    d, perm = em_module._regular_layout(dc.capsule_graph(7, 4))
    assert d == 7 and sorted(perm.tolist()) == list(range(28))
    h, _ = permuted(conv)
    d, perm = em_module._regular_layout(h)
    assert d == 18 and torch.equal(h.edges()[1][perm], torch.arange(conv.num_dst_nodes()).repeat_interleave(18))
    ragged = dgl.batch([dc.conv_capsule_graph((3, 3), 3, 1, 2, 2), dc.conv_capsule_graph((4, 4), 2, 1, 2, 2)])
    assert em_module._regular_layout(ragged) is None  # 18 and 8 children per parent: DGL's kernels


def test_convcaps_votes_reach_the_routing_batch_first_without_a_copy():
    layer = dc.nn.ConvCaps(in_types=2, out_types=3, kernel=3, stride=2)
    poses = torch.randn(4, 7, 7, 2, 4, 4)
    g = layer.graph((7, 7))
    votes = layer.votes(g, poses)
    assert votes.shape == (g.num_edges(), 4, 16) and votes.transpose(0, 1).is_contiguous()
    src, dst = g.edges()  # the vote of every edge, from its child's pose and the matrix of its offset
    w = layer.weight.view(9, 2, 3, 4, 4)
    y, x, a = src // (7 * 2), src // 2 % 7, src % 2
    e = 37
    want = poses[:, y[e], x[e], a[e]] @ w[g.edata["offset"][e], a[e], dst[e] % 3]
    torch.testing.assert_close(votes[e], want.reshape(4, 16))
