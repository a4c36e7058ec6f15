"""dc.nn.EfficientVectorRouting against a dense float64 re-statement of the published class (Heinsen 2022)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import dgl_capsules as dc
from dgl_capsules.nn import EfficientVectorRouting

KEYS = ("a_inp", "V", "pred_x_inp", "S", "R", "D_use", "D_ign", "phi", "x_out")


class PublishedAlgorithm(nn.Module):
    """The published EfficientVectorRouting, restated for these tests from the paper and its documented behaviour.

    Parameters are named, shaped and initialised (in the same order) as the published class's. ``forward``
    computes every quantity densely over ``(..., n_inp, n_out)``, forms the votes ``V`` in full and, like the
    published class, scales by the length of the (possibly padded) input. ``mask`` (not in the published class)
    states this library's extension: scale by the real count and leave padded inputs out of every sum.
    """

    def __init__(self, n_inp, n_out, d_inp, d_out, n_iters=2, normalize=True, memory_efficient=True):
        super().__init__()
        rows = max(1, n_inp)
        self.n_inp, self.n_out, self.d_inp, self.d_out = n_inp, n_out, d_inp, d_out
        self.n_iters, self.normalize, self.memory_efficient = n_iters, normalize, memory_efficient
        self.register_buffer("CONST_ones_over_n_out", torch.full((n_out,), 1.0 / n_out))
        draw = [("W_A", (rows, d_inp), 2 / math.sqrt(d_inp)), ("B_A", (rows,), 0),
                ("W_F1", (n_out, d_inp), 1), ("W_F2", (d_inp, d_out), 2 / math.sqrt(d_inp)), ("B_F2", (n_out, d_out), 0),
                ("W_G1", (d_out, d_inp), 1 / math.sqrt(d_out)), ("W_G2", (n_out, d_inp), 1), ("B_G2", (n_out, d_inp), 0),
                ("W_S", (rows, n_out), 1 / math.sqrt(d_inp)), ("B_S", (rows, n_out), 0)]
        if n_inp > 0:
            draw += [("beta_use", (n_inp, n_out), 1), ("beta_ign", (n_inp, n_out), 1)]
        for name, shape, std in draw:
            t = torch.empty(shape).normal_(std=std) if std else torch.zeros(shape)
            setattr(self, name, nn.Parameter(t))
        if n_inp < 0:
            self.compute_beta_use = nn.Linear(d_inp, n_out)
            self.compute_beta_ign = nn.Linear(d_inp, n_out)

    @staticmethod
    def layer_norm(y):
        if y.shape[-1] == 1:
            return y
        centred = y - y.mean(-1, keepdim=True)
        return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5)

    def forward(self, x, mask=None):
        n = x.shape[-2]
        keep = torch.ones(x.shape[:-1], dtype=x.dtype) if mask is None else mask.to(x.dtype)  # (..., n)
        count = keep.sum(-1, keepdim=True) if mask is not None else torch.full(x.shape[:-2] + (1,), float(n), dtype=x.dtype)
        x_tilde = x / count.sqrt()[..., None]
        if self.n_inp > 0:
            b_use, b_ign = self.beta_use, self.beta_ign
        else:
            b_use, b_ign = self.compute_beta_use(x), self.compute_beta_ign(x)
        a = (x_tilde * self.W_A).sum(-1) + self.B_A  # (..., n)
        f_a = torch.sigmoid(a)[..., None] * keep[..., None]  # pads: no data to use or ignore
        V = torch.einsum("...id,jd,dh->...ijh", x_tilde, self.W_F1, self.W_F2) + self.B_F2  # (..., n, J, H)
        P = S = None
        for t in range(self.n_iters):
            if t == 0:
                R = torch.full(x.shape[:-1] + (self.n_out,), 1.0 / self.n_out, dtype=x.dtype)
            else:
                P = (self.layer_norm(x_out) @ self.W_G1) * self.W_G2 + self.B_G2  # (..., J, d)
                S = torch.nn.functional.logsigmoid((x @ P.transpose(-1, -2)) * self.W_S + self.B_S)  # (..., n, J)
                R = torch.exp(S - torch.logsumexp(S, -1, keepdim=True))
            D_use = f_a * R
            D_ign = f_a - D_use
            phi = b_use * D_use - b_ign * D_ign
            x_out = torch.einsum("...ij,...ijh->...jh", phi, V)
        if self.normalize:
            x_out = self.layer_norm(x_out)
        if mask is not None:  # the library reports zeros for padded inputs
            k = keep[..., None]
            R, S = R * k, None if S is None else S * k
            a, V = a * keep, V * k[..., None]
        return dict(a_inp=a, V=None if self.memory_efficient else V, pred_x_inp=P, S=S, R=R, D_use=D_use,
                    D_ign=D_ign, phi=phi, x_out=x_out)


def pair(n_inp=7, n_out=3, d_inp=5, d_out=4, seed=0, **kw):
    """The library's layer and the test's re-statement with the same (non-zero) parameters, in float64."""
    torch.manual_seed(seed)
    ref = PublishedAlgorithm(n_inp, n_out, d_inp, d_out, **{k: v for k, v in kw.items() if k != "return_dict"})
    ref = ref.double()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))  # biases and all: nothing trivially zero
    layer = EfficientVectorRouting(n_inp, n_out, d_inp, d_out, **kw).double()
    layer.load_state_dict(ref.state_dict(), strict=True)
    return layer, ref


def close(got, want, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def assert_same_dict(got, want, keys=KEYS):
    assert list(got) == list(KEYS)
    for k in keys:
        if want[k] is None:
            assert got[k] is None, k
        else:
            close(got[k], want[k])


@pytest.mark.parametrize("n_inp", [7, -1])
def test_parameters_state_dict_and_init_are_the_published_ones(n_inp):
    torch.manual_seed(3)
    ref = PublishedAlgorithm(n_inp, 4, 6, 5)
    torch.manual_seed(3)
    layer = EfficientVectorRouting(n_inp, 4, 6, 5)
    want, got = ref.state_dict(), layer.state_dict()
    assert list(got) == list(want)
    for k in want:
        assert got[k].shape == want[k].shape and torch.equal(got[k], want[k]), k
    layer.load_state_dict(want, strict=True)
    ref.load_state_dict(got, strict=True)
    assert isinstance(layer.N, nn.LayerNorm) and not layer.N.elementwise_affine
    assert isinstance(EfficientVectorRouting(3, 2, 4, 1).N, nn.Identity)


@pytest.mark.parametrize("n_inp", [7, -1])
@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
@pytest.mark.parametrize("n_iters", [2, 3])
def test_forward_equals_published_algorithm(n_inp, lead, n_iters):
    layer, ref = pair(n_inp=n_inp, n_iters=n_iters)
    x = torch.randn(lead + (7, 5), dtype=torch.float64)
    close(layer(x), ref(x)["x_out"])


@pytest.mark.parametrize("n_inp", [7, -1])
@pytest.mark.parametrize("memory_efficient", [True, False])
@pytest.mark.parametrize("normalize, d_out", [(True, 4), (False, 4), (True, 1)])
def test_return_dict_equals_published_algorithm(n_inp, memory_efficient, normalize, d_out):
    layer, ref = pair(n_inp=n_inp, d_out=d_out, memory_efficient=memory_efficient, normalize=normalize,
                      return_dict=False)
    layer.return_dict = True  # an attribute, as in the published class
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    assert_same_dict(layer(x), ref(x))


def test_return_dict_with_one_iteration_has_no_e_step():
    """The published class raises UnboundLocalError here; the library returns None for what never ran."""
    layer, ref = pair(n_iters=1, return_dict=True)
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    out = layer(x)
    assert out["pred_x_inp"] is None and out["S"] is None
    close(out["R"], torch.full((2, 7, 3), 1 / 3, dtype=torch.float64))
    assert_same_dict(out, ref(x))


def test_mask_routes_every_sequence_as_if_it_were_alone_and_unpadded():
    layer, ref = pair(n_inp=-1)
    lengths = [2, 7, 4]
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    mask = torch.arange(7) < torch.tensor(lengths)[:, None]
    out = layer(x, mask=mask)
    for k, n in enumerate(lengths):
        close(out[k], layer(x[k, :n]))
    close(out, ref(x, mask)["x_out"])
    # the published scale counts the padding: unmasked, a padded sequence routes differently
    assert not torch.allclose(layer(x[:1]), layer(x[0, :2]))


def test_mask_anywhere_and_with_fixed_positions_equals_the_masked_re_statement():
    layer, ref = pair(n_inp=7, return_dict=True)
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64)
    mask = torch.rand(2, 3, 7) < 0.6
    mask[..., 3] = True
    assert_same_dict(layer(x, mask=mask), ref(x, mask))
    layer.return_dict = False
    close(layer(x, mask=torch.ones_like(mask)), layer(x))


@pytest.mark.parametrize("n_inp", [-1, 9])
@pytest.mark.parametrize("min_edges", [0, 10 ** 9])  # routed part by part / by message passing
def test_forward_ragged_equals_each_sequence_alone(n_inp, min_edges, monkeypatch):
    monkeypatch.setattr(dc.routing.vector, "BLOCK_MIN_EDGES", min_edges)
    layer, ref = pair(n_inp=n_inp)
    xs = [torch.randn(n, 5, dtype=torch.float64) for n in (3, 9, 1, 6)]
    out = layer.forward_ragged(xs)
    assert out.shape == (4, 3, 4)
    for k, x in enumerate(xs):
        if n_inp < 0:
            close(out[k], layer(x))
        close(out[k], ref(nn.functional.pad(x, (0, 0, 0, 9 - len(x)))[None], (torch.arange(9) < len(x))[None])["x_out"][0])
    layer.return_dict = True
    d = layer.forward_ragged(xs)
    assert d["R"].shape == (4, 9, 3) and bool((d["R"][2, 1:] == 0).all())


def test_return_routing_and_trace():
    layer, _ = pair(n_inp=7, return_dict=True)
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    out, r = layer(x, return_trace=True)
    g = layer.graph(7)
    src, dst = g.edges()
    assert isinstance(r, dc.RoutingResult) and len(r.trace) == 2
    assert r.poses.shape == (3, 2, 4) and r.coupling.shape == (21, 2)
    close(r.coupling.T, out["R"][:, src, dst])
    close(r.poses.transpose(0, 1), out["x_out"])
    layer.return_dict = False
    x_out, r = layer(x, return_routing=True)
    assert r.trace is None
    close(x_out, out["x_out"])
    _, r = layer(x, mask=torch.rand(2, 7) < 0.5, return_routing=True)  # some sequence may keep few inputs
    assert r.poses.shape == (6, 4)


def test_gradcheck_through_the_layer():
    layer, _ = pair(n_inp=-1, n_out=2, d_inp=3, d_out=3)
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)
    # NOTE: fast_mode (a random projection of the Jacobian): the full one takes a minute through DGL.
    assert torch.autograd.gradcheck(lambda t: layer.forward_ragged([t[0, :2], t[1]]), (x,), eps=1e-6, atol=1e-6,
                                    rtol=1e-4, fast_mode=True)


def test_gradients_of_parameters_equal_published_algorithm():
    layer, ref = pair(n_inp=7, return_dict=True)
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    w = torch.randn(3, 3, 4, dtype=torch.float64)
    (w * layer(x)["x_out"]).sum().backward()
    (w * ref(x)["x_out"]).sum().backward()
    grads = dict(ref.named_parameters())
    for name, p in layer.named_parameters():
        close(p.grad, grads[name].grad, rtol=1e-9, atol=1e-10)


def test_dtype_batch_independence_empty_batch_and_repr():
    layer = EfficientVectorRouting(6, 3, 4, 2)
    x = torch.randn(5, 6, 4)
    assert layer(x.double()).dtype == torch.float64  # the input decides, parameters are cast
    torch.testing.assert_close(layer(x[2:3]), layer(x)[2:3], rtol=1e-5, atol=1e-6)
    assert layer(x[:0]).shape == (0, 3, 2)
    assert repr(layer).startswith("EfficientVectorRouting(\n  n_inp=6, n_out=3, d_inp=4, d_out=2, n_iters=2, "
                                  "normalize=True, memory_efficient=True, return_dict=False")
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.manual_seed(1)
    layer.reset_parameters()
    assert any(not torch.equal(before[k], v) for k, v in layer.state_dict().items())


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_inp=0), r"^n_inp must be a positive integer, or -1"),
    (dict(n_inp=-2), r"^n_inp must be a positive integer, or -1"),
    (dict(n_out=1), r"^n_out must be an integer >= 2"),
    (dict(n_out=2.0), r"^n_out must be an integer >= 2"),
    (dict(d_inp=0), r"^d_inp must be a positive integer"),
    (dict(d_out=True), r"^d_out must be a positive integer"),
    (dict(n_iters=0), r"^n_iters must be an integer >= 1"),
    (dict(normalize=None), r"^normalize must be True or False"),
    (dict(memory_efficient=1), r"^memory_efficient must be True or False"),
    (dict(return_dict="yes"), r"^return_dict must be True or False"),
])
def test_bad_constructor_arguments_are_named(kwargs, match):
    args = dict(n_inp=5, n_out=3, d_inp=4, d_out=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        EfficientVectorRouting(**args)


def test_bad_forward_inputs_are_named():
    layer = EfficientVectorRouting(5, 3, 4, 2)
    x = torch.randn(2, 5, 4)
    with pytest.raises(TypeError, match=r"^x_inp must be a torch.Tensor .*torch.from_numpy"):
        layer(np.zeros((2, 5, 4)))
    with pytest.raises(TypeError, match=r"^x_inp must be a torch.Tensor .*got a DGLGraph"):
        layer(layer.graph(5))
    with pytest.raises(TypeError, match=r"^x_inp must be float32 or float64"):
        layer(x.half())
    with pytest.raises(ValueError, match=r"^x_inp must have shape \(\.\.\., n_inp, d_inp\) with n_inp = 5 and d_inp = 4; got \(2, 4, 4\)"):
        layer(x[:, :4])
    with pytest.raises(ValueError, match=r"^x_inp must have shape .* got \(2, 5, 3\)"):
        layer(x[..., :3])
    with pytest.raises(ValueError, match=r"^x_inp must have shape .* got \(4,\)"):
        layer(x[0, 0])
    with pytest.raises(TypeError, match=r"^mask must be a torch.Tensor"):
        layer(x, mask=[[True] * 5] * 2)
    with pytest.raises(ValueError, match=r"^mask must be a bool tensor of shape \(\.\.\., n_inp\) = \(2, 5\)"):
        layer(x, mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"^mask must be a bool tensor .* got torch.bool \(2, 4\)"):
        layer(x, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^mask must keep at least one input of every sequence; sequence 1"):
        layer(x, mask=torch.tensor([[True] * 5, [False] * 5]))
    ragged = EfficientVectorRouting(-1, 3, 4, 2)
    with pytest.raises(TypeError, match=r"^x_inp must be a non-empty list of tensors"):
        ragged.forward_ragged(x)
    with pytest.raises(TypeError, match=r"^x_inp must be a non-empty list of tensors"):
        ragged.forward_ragged([])
    with pytest.raises(ValueError, match=r"^x_inp\[1\] must have shape \(n, d_inp\) with n_inp >= 1 and d_inp = 4"):
        ragged.forward_ragged([x[0], x[1, :, :2]])
    with pytest.raises(ValueError, match=r"^x_inp\[0\] must have shape \(n, d_inp\) with n <= n_inp = 5"):
        layer.forward_ragged([torch.randn(6, 4)])
    with pytest.raises(TypeError, match=r"^x_inp must hold tensors of one dtype"):
        ragged.forward_ragged([x[0], x[1].double()])
