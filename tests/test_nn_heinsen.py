import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.nn import HeinsenRouting
from dgl_capsules.testing import dense_heinsen_routing


def dense_layer(params, a_inp, mu_inp, n_out, n_iters=3, p_model="gaussian", eps=1e-5):
    """The layer written densely from the paper: V_ij = mu_i W_ij + B_ij (+ symmetry breaking), then Algorithm 1.

    params: dict with W, B, beta_use, beta_ign and, when n_out is not fixed, B_brk.
    """
    W, B = params["W"], params["B"]
    n = a_inp.shape[-1]
    W = W.expand(n, n_out, -1, -1)
    B = B.expand(n, n_out, -1, -1)
    if "B_brk" in params:
        B = B + params["B_brk"] * torch.linspace(-1, 1, n_out, dtype=B.dtype)[:, None, None]
    V = torch.einsum("...icd,ijdh->...ijch", mu_inp, W) + B  # (..., n, m, C, H)
    lead = a_inp.shape[:-1]
    bu = params["beta_use"].expand(n, n_out)
    bi = params["beta_ign"].expand(n, n_out)
    mask = torch.ones(n, n_out, dtype=torch.bool)
    a_out, mu, sig2, R = dense_heinsen_routing(V.reshape((-1,) + V.shape[-4:]), a_inp.reshape(-1, n), bu, bi,
                                               mask, n_iters, eps=eps, p_model=p_model)
    return (a_out.reshape(lead + a_out.shape[1:]), mu.reshape(lead + mu.shape[1:]),
            sig2.reshape(lead + sig2.shape[1:]), R.reshape(lead + R.shape[1:]))


def randomise(layer, seed=0):
    """Non-zero values for every parameter, so that each one matters in a comparison."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return layer


def params_of(layer):
    return {k: v for k, v in layer.named_parameters(remove_duplicate=False)}


CONFIGS = {
    "fixed_fixed": dict(n_inp=6, n_out=4),
    "variable_inp": dict(n_out=4),
    "variable_out": dict(n_inp=6),
    "variable_both": dict(),
}


@pytest.mark.parametrize("p_model", ["gaussian", "skm"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_equals_dense_layer_with_gradients(p_model, config, lead):
    layer = randomise(HeinsenRouting(d_cov=2, d_inp=3, d_out=4, p_model=p_model, **CONFIGS[config]).double())
    a = torch.randn(lead + (6,), dtype=torch.float64, requires_grad=True)
    mu = torch.randn(lead + (6, 2, 3), dtype=torch.float64, requires_grad=True)
    kwargs = {} if layer.n_out_is_fixed else {"n_out": 5}
    got = layer(a, mu, return_R=True, **kwargs)
    want = dense_layer(params_of(layer), a, mu, n_out=layer.n_out if layer.n_out_is_fixed else 5, p_model=p_model)
    m = want[0].shape[-1]
    assert [tuple(x.shape) for x in got] == [lead + (m,), lead + (m, 2, 4), lead + (m, 2, 4), lead + (6, m)]
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    weights = [torch.randn_like(x) for x in want]
    wrt = [a, mu] + list(layer.parameters())
    g1 = torch.autograd.grad(sum((w * x).sum() for w, x in zip(weights, got)), wrt)
    g2 = torch.autograd.grad(sum((w * x).sum() for w, x in zip(weights, want)), wrt)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)


def test_readme_snippets_run_as_written():
    from dgl_capsules.nn import HeinsenRouting as Routing

    part_scores = torch.randn(100); part_poses = torch.randn(100, 4, 4)  # noqa: E702
    detect_objs = Routing(d_cov=4, d_inp=4, d_out=4, n_inp=100, n_out=10)
    obj_scores, obj_poses, obj_poses_sig2 = detect_objs(part_scores, part_poses)
    assert obj_scores.shape == (10,) and obj_poses.shape == obj_poses_sig2.shape == (10, 4, 4)
    assert (obj_poses_sig2 > 0).all()

    n = 37
    tok_scores = torch.randn(n); tok_embs = torch.randn(n, 1024).unsqueeze(1)  # noqa: E702
    classify = Routing(d_cov=1, d_inp=1024, d_out=8, n_out=2)   # variable n_inp
    class_scores, class_embs, class_embs_sig2 = classify(tok_scores, tok_embs)
    assert class_scores.shape == (2,) and class_embs.shape == class_embs_sig2.shape == (2, 1, 8)
    # The same layer takes another number of tokens.
    assert classify(torch.randn(5), torch.randn(5, 1, 1024))[1].shape == (2, 1, 8)


def official_state_dict(d_cov, d_inp, d_out, n_inp, n_out, single_beta, seed=0):
    """A state_dict with the published layer's names, shapes and dtypes, built by hand."""
    gen = torch.Generator().manual_seed(seed)
    i, j = max(1, n_inp), max(1, n_out)
    sd = {
        "W": torch.randn(i, j, d_inp, d_out, generator=gen),
        "B": torch.randn(i, j, d_cov, d_out, generator=gen),
        "beta_use": torch.randn(i, j, generator=gen),
        "CONST_one": torch.tensor(1.0),
    }
    sd["beta_ign"] = sd["beta_use"] if single_beta else torch.randn(i, j, generator=gen)
    if n_out <= 0:
        sd["B_brk"] = torch.randn(1, d_cov, d_out, generator=gen)
    return sd


@pytest.mark.parametrize("single_beta", [False, True])
@pytest.mark.parametrize("n_inp,n_out", [(20, 10), (-1, 10), (20, -1), (-1, -1)])
def test_loads_an_official_state_dict_strictly(n_inp, n_out, single_beta):
    sd = official_state_dict(4, 4, 4, n_inp, n_out, single_beta)
    layer = HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_inp=n_inp, n_out=n_out, single_beta=single_beta)
    assert set(layer.state_dict()) == set(sd)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    layer.load_state_dict(sd, strict=True)
    for k, v in sd.items():
        assert torch.equal(layer.state_dict()[k], v)
    a, mu = torch.randn(2, 20), torch.randn(2, 20, 4, 4)
    kwargs = {} if n_out > 0 else {"n_out": 7}
    got = layer(a, mu, return_R=True, **kwargs)
    want = dense_layer(sd, a, mu, n_out=n_out if n_out > 0 else 7)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    # What we save, the published layout, loads back into a fresh layer.
    again = HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_inp=n_inp, n_out=n_out, single_beta=single_beta)
    again.load_state_dict(layer.state_dict(), strict=True)
    torch.testing.assert_close(again(a, mu, **kwargs)[0], got[0])


def test_strict_loading_needs_const_one_and_the_right_shapes():
    layer = HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_inp=20, n_out=10)
    sd = official_state_dict(4, 4, 4, 20, 10, False)
    del sd["CONST_one"]
    with pytest.raises(RuntimeError, match="Missing key.*CONST_one"):
        layer.load_state_dict(sd, strict=True)
    sd = official_state_dict(4, 4, 4, 20, -1, False)
    with pytest.raises(RuntimeError, match="Unexpected key.*B_brk"):
        layer.load_state_dict(sd, strict=True)


def test_single_beta_shares_one_parameter():
    layer = HeinsenRouting(d_cov=1, d_inp=3, d_out=2, n_out=3, single_beta=True)
    assert layer.beta_use is layer.beta_ign
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["W", "B", "beta_use"]
    with torch.no_grad():
        layer.beta_use.fill_(0.7)
    assert torch.equal(layer.beta_ign, torch.full((1, 3), 0.7))
    # Beta enters twice: a_out = beta * (sum D_use - sum D_ign); its gradient collects both.
    a_out = layer(torch.randn(5), torch.randn(5, 1, 3))[0]
    a_out.sum().backward()
    assert layer.beta_use.grad is not None and layer.beta_use.grad.shape == (1, 3)
    two = HeinsenRouting(d_cov=1, d_inp=3, d_out=2, n_out=3)
    assert two.beta_use is not two.beta_ign and len(list(two.parameters())) == 4


def test_reset_parameters_follows_the_published_init():
    layer = HeinsenRouting(d_cov=4, d_inp=8, d_out=16, n_inp=64, n_out=32)
    torch.testing.assert_close(layer.W.std(), torch.tensor(1 / 8), rtol=0.05, atol=0)
    assert layer.W.mean().abs() < 0.01
    assert not layer.B.any() and not layer.beta_use.any() and not layer.beta_ign.any()
    assert layer.CONST_one.item() == 1.0 and not hasattr(layer, "B_brk")
    var = HeinsenRouting(d_cov=4, d_inp=8, d_out=16)
    assert var.B_brk.shape == (1, 4, 16) and not var.B_brk.any()
    assert var.W.shape == (1, 1, 8, 16) and var.beta_use.shape == (1, 1)


def test_b_brk_breaks_symmetry_of_shared_outputs():
    layer = HeinsenRouting(d_cov=1, d_inp=4, d_out=4)
    a, mu = torch.randn(9), torch.randn(9, 1, 4)
    mu_out = layer(a, mu, n_out=3)[1]
    assert torch.allclose(mu_out[0], mu_out[2])  # B_brk = 0: every output is the same
    with torch.no_grad():
        layer.B_brk.fill_(1.0)
    mu_out = layer(a, mu, n_out=3)[1]
    assert not torch.allclose(mu_out[0], mu_out[2])
    assert layer(a, mu)[0].shape == (9,)  # n_out defaults to the number of inputs


def test_variable_n_inp_is_invariant_to_permuting_the_inputs():
    layer = randomise(HeinsenRouting(d_cov=2, d_inp=3, d_out=4, n_out=5).double())
    a = torch.randn(4, 11, dtype=torch.float64)
    mu = torch.randn(4, 11, 2, 3, dtype=torch.float64)
    order = torch.randperm(11)
    x = layer(a, mu, return_R=True)
    y = layer(a[:, order], mu[:, order], return_R=True)
    for u, v in zip(x[:3], y[:3]):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x[3][:, order], y[3], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_ragged_equals_each_input_alone(config):
    layer = randomise(HeinsenRouting(d_cov=2, d_inp=3, d_out=4, **CONFIGS[config]).double())
    lengths = [6] * 4 if layer.n_inp_is_fixed else [1, 6, 30, 3, 12]
    a = [torch.randn(2, n, dtype=torch.float64) for n in lengths]
    mu = [torch.randn(2, n, 2, 3, dtype=torch.float64) for n in lengths]
    n_out = None if layer.n_out_is_fixed else [2, 5, 1, 3][: len(lengths)] + [4] * (len(lengths) - 4)
    got = layer.forward_ragged(a, mu, return_R=True, n_out=n_out)
    assert all(len(x) == len(lengths) for x in got)
    for k in range(len(lengths)):
        kwargs = {} if n_out is None else {"n_out": n_out[k]}
        alone = layer(a[k], mu[k], return_R=True, **kwargs)
        for x, y in zip(got, alone):
            assert x[k].shape == y.shape
            torch.testing.assert_close(x[k], y, rtol=1e-12, atol=1e-12)


def test_ragged_gradients_equal_the_per_input_sum():
    layer = randomise(HeinsenRouting(d_cov=1, d_inp=5, d_out=3, n_out=4, p_model="skm").double())
    lengths = [2, 17, 9]
    a = [torch.randn(n, dtype=torch.float64, requires_grad=True) for n in lengths]
    mu = [torch.randn(n, 1, 5, dtype=torch.float64, requires_grad=True) for n in lengths]
    wrt = a + mu + list(layer.parameters())
    a_out, mu_out, _ = layer.forward_ragged(a, mu)
    g1 = torch.autograd.grad(sum((x ** 2).sum() + y.sum() for x, y in zip(a_out, mu_out)), wrt)
    total = 0
    for x, y in zip(a, mu):
        out = layer(x, y)
        total = total + (out[0] ** 2).sum() + out[1].sum()
    g2 = torch.autograd.grad(total, wrt)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_ragged_with_one_count_for_all_and_the_default():
    layer = HeinsenRouting(d_cov=1, d_inp=2, d_out=2)
    a = [torch.randn(n) for n in (3, 5)]
    mu = [torch.randn(n, 1, 2) for n in (3, 5)]
    assert [x.shape[-1] for x in layer.forward_ragged(a, mu)[0]] == [3, 5]
    assert [x.shape[-1] for x in layer.forward_ragged(a, mu, n_out=4)[0]] == [4, 4]


def test_gradcheck_tiny():
    layer = randomise(HeinsenRouting(d_cov=1, d_inp=2, d_out=2, n_out=2).double())
    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(3, 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: layer(x, y), (a, mu))
    assert torch.autograd.gradcheck(lambda x, y: layer.forward_ragged([x[:1], x[1:]], [y[:1], y[1:]])[0], (a, mu))


def test_leaves_no_features_on_the_cached_graph_and_prints_its_config():
    layer = HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_inp=12, n_out=3)
    layer(torch.randn(2, 12), torch.randn(2, 12, 4, 4))
    layer.forward_ragged([torch.randn(12)] * 2, [torch.randn(12, 4, 4)] * 2)
    g = dc.capsule_graph(12, 3)
    assert len(g.edata) == 0 and len(g.srcdata) == 0 and len(g.dstdata) == 0
    assert repr(layer) == (
        "HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_inp=12, n_out=3, n_iters=3, single_beta=False, "
        "p_model='gaussian', eps=1e-05)"
    )


def test_bad_inputs_name_the_argument():
    fixed = HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_inp=100, n_out=10)
    with pytest.raises(ValueError, match=r"mu_inp must have shape \(\.\.\., n_inp, d_cov, d_inp\) = \(100, 4, 4\).*got \(100, 4, 3\)"):
        fixed(torch.randn(100), torch.randn(100, 4, 3))
    with pytest.raises(ValueError, match=r"a_inp must have shape \(\.\.\., n_inp\) with n_inp = 100 .*got \(2, 99\)"):
        fixed(torch.randn(2, 99), torch.randn(2, 99, 4, 4))
    with pytest.raises(ValueError, match=r"mu_inp must have shape .* = \(2, 100, 4, 4\) to match a_inp of shape \(2, 100\).*got \(2, 50, 4, 4\)"):
        fixed(torch.randn(2, 100), torch.randn(2, 50, 4, 4))
    with pytest.raises(ValueError, match=r"mu_inp must have shape .* = \(3, 100, 4, 4\).*got \(2, 100, 4, 4\)"):
        fixed(torch.randn(3, 100), torch.randn(2, 100, 4, 4))
    with pytest.raises(ValueError, match=r"n_out was fixed to 10 at construction; do not pass n_out to forward \(got n_out=5\)"):
        fixed(torch.randn(100), torch.randn(100, 4, 4), n_out=5)
    with pytest.raises(TypeError, match="a_inp must be a floating-point tensor .*; got dtype torch.int64"):
        fixed(torch.ones(100, dtype=torch.long), torch.randn(100, 4, 4))
    with pytest.raises(TypeError, match=r"mu_inp must be a torch.Tensor of shape \(\.\.\., n_inp, d_cov, d_inp\); got list"):
        fixed(torch.randn(100), [0.0])
    with pytest.raises(ValueError, match=r"a_inp must have shape \(\.\.\., n_inp\) with at least one dim; got \(\)"):
        HeinsenRouting(1, 1, 1)(torch.tensor(1.0), torch.randn(1, 1))
    with pytest.raises(ValueError, match=r"p_model must be one of \('gaussian', 'skm'\); got 'em'"):
        HeinsenRouting(d_cov=4, d_inp=4, d_out=4, p_model="em")
    with pytest.raises(ValueError, match=r"n_inp must be a positive integer, or -1 for a variable count; got 0"):
        HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_inp=0)
    with pytest.raises(ValueError, match=r"n_out must be a positive integer, or -1 for a variable count; got 2.5"):
        HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_out=2.5)
    with pytest.raises(ValueError, match="d_cov must be a positive integer; got 0"):
        HeinsenRouting(d_cov=0, d_inp=4, d_out=4)
    with pytest.raises(ValueError, match="n_iters must be an integer >= 1; got 0"):
        HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_iters=0)
    with pytest.raises(ValueError, match="eps must be a positive number; got -1"):
        HeinsenRouting(d_cov=4, d_inp=4, d_out=4, eps=-1)
    variable = HeinsenRouting(d_cov=1, d_inp=2, d_out=2)
    with pytest.raises(ValueError, match="n_out must be a positive integer; got 0"):
        variable(torch.randn(3), torch.randn(3, 1, 2), n_out=0)


def test_bad_ragged_inputs_name_the_element():
    layer = HeinsenRouting(d_cov=1, d_inp=2, d_out=2, n_out=3)
    a = [torch.randn(4), torch.randn(6)]
    mu = [torch.randn(4, 1, 2), torch.randn(6, 1, 2)]
    with pytest.raises(ValueError, match=r"mu_inp\[1\] must have shape .* = \(6, 1, 2\) to match a_inp\[1\].*got \(5, 1, 2\)"):
        layer.forward_ragged(a, [mu[0], torch.randn(5, 1, 2)])
    with pytest.raises(ValueError, match="a_inp and mu_inp must be non-empty lists of the same length; got 2 and 1"):
        layer.forward_ragged(a, mu[:1])
    with pytest.raises(ValueError, match="got 0 and 0"):
        layer.forward_ragged([], [])
    with pytest.raises(ValueError, match=r"a_inp\[1\] must have the leading dims \(\) of a_inp\[0\]; got shape \(2, 6\)"):
        layer.forward_ragged(a[:1] + [torch.randn(2, 6)], mu[:1] + [torch.randn(2, 6, 1, 2)])
    with pytest.raises(TypeError, match="forward_ragged takes lists of tensors"):
        layer.forward_ragged(a[0], mu[0])
    with pytest.raises(ValueError, match=r"n_out was fixed to 3"):
        layer.forward_ragged(a, mu, n_out=3)
    variable = HeinsenRouting(d_cov=1, d_inp=2, d_out=2)
    with pytest.raises(ValueError, match=r"n_out must be an int or have one count per input \(2\); got 3"):
        variable.forward_ragged(a, mu, n_out=[1, 2, 3])
    fixed_inp = HeinsenRouting(d_cov=1, d_inp=2, d_out=2, n_inp=4)
    with pytest.raises(ValueError, match=r"a_inp\[1\] must have shape \(\.\.\., n_inp\) with n_inp = 4 .*got \(6,\)"):
        fixed_inp.forward_ragged(a, mu)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_layer_reads_the_edge_order_from_the_graph(config, monkeypatch):
    """On a capsule graph whose edge ids are shuffled, the layer gathers its votes and gives the same outputs."""
    import dgl_capsules.nn.heinsen as module
    from dgl_capsules.testing import permuted

    layer = randomise(HeinsenRouting(d_cov=2, d_inp=3, d_out=4, **CONFIGS[config]).double())
    a = [torch.randn(2, 6, dtype=torch.float64) for _ in range(3)]
    mu = [torch.randn(2, 6, 2, 3, dtype=torch.float64) for _ in range(3)]
    want = layer(a[0], mu[0], return_R=True)
    want_ragged = layer.forward_ragged(a, mu, return_R=True)
    monkeypatch.setattr(module, "capsule_graph", lambda n, m, device=None: permuted(dc.capsule_graph(n, m))[0])
    got = layer(a[0], mu[0], return_R=True)
    got_ragged = layer.forward_ragged(a, mu, return_R=True)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    for xs, ys in zip(got_ragged, want_ragged):
        for x, y in zip(xs, ys):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


# Empty batches, dtypes and the graph (the layer contract checks the rest).


def test_empty_batch_gives_empty_outputs():
    m = HeinsenRouting(d_cov=2, d_inp=3, d_out=4, n_inp=5, n_out=6)
    a, mu = torch.randn(0, 5, requires_grad=True), torch.randn(0, 5, 2, 3, requires_grad=True)
    a_out, mu_out, sig2, R = m(a, mu, return_R=True)
    assert a_out.shape == (0, 6) and mu_out.shape == (0, 6, 2, 4) and sig2.shape == (0, 6, 2, 4) and R.shape == (0, 5, 6)
    (a_out.sum() + mu_out.sum()).backward()
    assert mu.grad.shape == mu.shape
    free = HeinsenRouting(d_cov=1, d_inp=3, d_out=2)
    outs = free.forward_ragged([torch.randn(0, 4), torch.randn(0, 2)], [torch.randn(0, 4, 1, 3), torch.randn(0, 2, 1, 3)])
    assert [x.shape for x in outs[0]] == [(0, 4), (0, 2)]


def test_ragged_empty_sequence_is_named_by_its_index():
    m = HeinsenRouting(d_cov=1, d_inp=3, d_out=2, n_out=4)
    a = [torch.randn(3), torch.randn(0), torch.randn(2)]
    mu = [torch.randn(3, 1, 3), torch.randn(0, 1, 3), torch.randn(2, 1, 3)]
    with pytest.raises(ValueError, match=r"a_inp\[1\] must have shape \(\.\.\., n_inp\) with at least one input "
                                         r"capsule; got \(0,\)"):
        m.forward_ragged(a, mu)
    with pytest.raises(ValueError, match=r"a_inp must have shape \(\.\.\., n_inp\) with at least one input capsule"):
        m(torch.randn(0), torch.randn(0, 1, 3))


def test_dtypes_and_types_of_the_inputs():
    m = HeinsenRouting(d_cov=2, d_inp=3, d_out=4, n_inp=5, n_out=6)
    a, mu = torch.randn(2, 5), torch.randn(2, 5, 2, 3)
    want = m(a, mu)
    got = m(a.double(), mu)  # a_inp follows mu_inp's dtype
    for x, y in zip(got, want):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"mu_inp must be float32 or float64 .*got torch.float16"):
        m(a, mu.half())
    with pytest.raises(TypeError, match=r"mu_inp must have the layer's dtype torch.float32 .*got torch.float64"):
        m(a, mu.double())
    with pytest.raises(TypeError, match=r"mu_inp must be a torch.Tensor .*got numpy.ndarray"):
        m(a, mu.numpy())
    with pytest.raises(TypeError, match=r"a_inp must be a torch.Tensor .*got a DGLGraph: HeinsenRouting builds its own"):
        m(dc.capsule_graph(5, 6), a, mu)
    with pytest.raises(TypeError, match=r"mu_inp\[0\] must be a torch.Tensor"):
        m.forward_ragged([a[0]], [mu[0].tolist()])


def test_graph_is_the_routed_graph():
    m = HeinsenRouting(d_cov=2, d_inp=3, d_out=4, n_inp=5, n_out=6)
    g = m.graph()
    assert (g.num_src_nodes(), g.num_dst_nodes()) == (5, 6)
    a, mu = torch.randn(2, 5), torch.randn(2, 5, 2, 3)
    a_out, mu_out, _, R, r = m(a, mu, return_R=True, return_routing=True)  # R (2, 5, 6)
    src, dst = g.edges()  # the couplings of the routing result follow the edge order of m.graph()
    torch.testing.assert_close(r.coupling.T, R[:, src, dst], rtol=0, atol=0)
    assert torch.equal(r.activations.T, a_out) and torch.equal(r.poses.movedim(0, 1), mu_out) and r.trace is None
    free = HeinsenRouting(d_cov=1, d_inp=3, d_out=2)
    assert free.graph(7).num_dst_nodes() == 7 and free.graph(7, n_out=3).num_dst_nodes() == 3
    with pytest.raises(ValueError, match="n_inp must be given"):
        free.graph()
    with pytest.raises(ValueError, match=r"n_inp must be 5, fixed at construction; got 4"):
        m.graph(4)
    with pytest.raises(ValueError, match=r"n_out was fixed to 6 at construction"):
        m.graph(n_out=3)


def test_return_routing_and_trace_of_forward_and_forward_ragged():
    m = randomise(HeinsenRouting(d_cov=1, d_inp=3, d_out=2, n_out=4, n_iters=3))
    a, mu = torch.randn(2, 5), torch.randn(2, 5, 1, 3)
    plain = m(a, mu)
    *out, r = m(a, mu, return_trace=True)
    assert all(torch.equal(x, y) for x, y in zip(out, plain))
    assert len(r.trace) == 3 and torch.equal(r.trace[-1], r.coupling) and r.coupling.shape == (20, 2)
    lengths = [3, 5]
    a_list, mu_list = [torch.randn(1, n) for n in lengths], [torch.randn(1, n, 1, 3) for n in lengths]
    *out, r = m.forward_ragged(a_list, mu_list, return_routing=True)
    g, outs = m.ragged_graph(lengths)
    assert outs == [4, 4] and g.batch_size == 2 and r.coupling.shape == (g.num_edges(), 1) and r.trace is None
    for k, (a_k, mu_k) in enumerate(zip(a_list, mu_list)):
        torch.testing.assert_close(out[0][k], m(a_k, mu_k)[0], rtol=1e-6, atol=1e-6)
