import pytest
import torch

from dgl_capsules.nn import ClassCaps, ConvCaps, PrimaryMatrixCaps
from dgl_capsules.testing import dense_em_routing, permuted

LAMBDAS = [0.05, 0.1, 0.2]


def caps(b, h, w, types, dtype=torch.float64):
    return torch.randn(b, h, w, types, 4, 4, dtype=dtype), torch.rand(b, h, w, types, dtype=dtype)


def dense_conv_caps(layer, poses, acts):
    """ConvCaps written densely: every (child, parent) pair by explicit loops over the paper's indices."""
    b, h, w, n_a = poses.shape[:4]
    k, s, n_c = layer.kernel, layer.stride, layer.out_types
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    n_i, n_j = h * w * n_a, ho * wo * n_c
    V = poses.new_zeros(b, n_i, n_j, 16)
    mask = torch.zeros(n_i, n_j, dtype=torch.bool)
    rows, cols, vals = [], [], []
    for yo in range(ho):
        for xo in range(wo):
            for ky in range(k):
                for kx in range(k):
                    y, x = yo * s + ky, xo * s + kx
                    for a in range(n_a):
                        for c in range(n_c):
                            i, j = (y * w + x) * n_a + a, (yo * wo + xo) * n_c + c
                            W = layer.weight[((ky * k + kx) * n_a + a) * n_c + c]
                            rows.append(i), cols.append(j)
                            vals.append((poses[:, y, x, a] @ W).reshape(b, 16))
    V = V.index_put((torch.arange(b)[:, None], torch.tensor(rows), torch.tensor(cols)), torch.stack(vals, 1))
    mask[rows, cols] = True
    mu, sigma2, act, Rs = dense_em_routing(
        V, acts.reshape(b, n_i), mask, layer.beta_u.repeat(ho * wo), layer.beta_a.repeat(ho * wo),
        layer.inverse_temperatures[: layer.n_iters],
    )
    return mu.reshape(b, ho, wo, n_c, 4, 4), act.reshape(b, ho, wo, n_c), mask


def dense_class_caps(layer, poses, acts):
    """ClassCaps written densely, coordinate addition by hand."""
    b, h, w, n_a = poses.shape[:4]
    W = layer.weight.view(n_a, layer.n_classes, 4, 4)
    V = torch.einsum("byxars,ajst->byxajrt", poses, W)  # (B, H, W, A, K, 4, 4)
    if layer.coord_add:
        add = torch.zeros(h, w, 1, 1, 4, 4, dtype=poses.dtype)
        for y in range(h):
            for x in range(w):
                add[y, x, 0, 0, 0, 3] = (x + 0.5) / w
                add[y, x, 0, 0, 1, 3] = (y + 0.5) / h
        V = V + add
    V = V.reshape(b, h * w * n_a, layer.n_classes, 16)
    mask = torch.ones(h * w * n_a, layer.n_classes, dtype=torch.bool)
    mu, sigma2, act, Rs = dense_em_routing(
        V, acts.reshape(b, -1), mask, layer.beta_u, layer.beta_a, layer.inverse_temperatures[: layer.n_iters]
    )
    return mu.reshape(b, layer.n_classes, 4, 4), act


def randomise_betas(layer):
    with torch.no_grad():
        layer.beta_u.normal_(0, 0.3)
        layer.beta_a.normal_(0, 0.3)
    return layer


@pytest.mark.parametrize("kernel,stride,hw", [(3, 1, (5, 5)), (3, 2, (7, 6)), (2, 1, (4, 3))])
def test_conv_caps_equals_dense_with_overlapping_fields(kernel, stride, hw):
    layer = randomise_betas(ConvCaps(2, 3, kernel, stride, inverse_temperatures=LAMBDAS).double())
    poses, acts = caps(2, *hw, 2)
    poses.requires_grad_(True)
    out_poses, out_acts = layer(poses, acts)
    mu, act, mask = dense_conv_caps(layer, poses, acts)
    assert (mask.sum(1) > 1).any()  # some child has parents at several positions
    torch.testing.assert_close(out_poses, mu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out_acts, act, rtol=1e-10, atol=1e-12)
    wp, wa = torch.randn_like(mu), torch.randn_like(act)
    params = (poses, layer.weight, layer.beta_u, layer.beta_a)
    g_graph = torch.autograd.grad((wp * out_poses).sum() + (wa * out_acts).sum(), params)
    g_dense = torch.autograd.grad((wp * mu).sum() + (wa * act).sum(), params)
    for x, y in zip(g_graph, g_dense):
        torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("coord_add", [True, False])
def test_class_caps_equals_dense(coord_add):
    layer = randomise_betas(ClassCaps(3, 4, coord_add=coord_add, inverse_temperatures=LAMBDAS).double())
    poses, acts = caps(2, 3, 2, 3)
    out_poses, out_acts = layer(poses, acts)
    mu, act = dense_class_caps(layer, poses, acts)
    torch.testing.assert_close(out_poses, mu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out_acts, act, rtol=1e-10, atol=1e-12)


def test_coordinate_addition_changes_only_the_translation_entries():
    with_ca = ClassCaps(2, 3, coord_add=True).double()
    without = ClassCaps(2, 3, coord_add=False).double()
    without.load_state_dict(with_ca.state_dict())
    poses, _ = caps(2, 3, 4, 2)  # H = 3, W = 4
    g = with_ca.graph((3, 4))
    diff = (with_ca.votes(g, poses) - without.votes(g, poses)).view(-1, 2, 4, 4)  # (E, B, 4, 4)
    changed = torch.zeros(4, 4, dtype=torch.bool)
    changed[0, 3] = changed[1, 3] = True
    assert torch.equal(diff[:, :, ~changed], torch.zeros_like(diff[:, :, ~changed]))
    src, _ = g.edges()
    cell = src // 2
    x, y = (cell % 4).double(), (cell // 4).double()
    torch.testing.assert_close(diff[:, :, 0, 3], ((x + 0.5) / 4)[:, None].expand(-1, 2), rtol=0, atol=1e-14)
    torch.testing.assert_close(diff[:, :, 1, 3], ((y + 0.5) / 3)[:, None].expand(-1, 2), rtol=0, atol=1e-14)
    assert diff[:, :, 0, 3].round(decimals=10).unique().numel() == 4  # W = 4 columns
    assert diff[:, :, 1, 3].round(decimals=10).unique().numel() == 3  # H = 3 rows


@pytest.mark.parametrize("make", [
    lambda: ConvCaps(2, 3, kernel=3, stride=2).double(),
    lambda: ClassCaps(2, 3, coord_add=True).double(),
])
def test_votes_follow_the_edge_ids_of_the_graph(make):
    layer = make()
    poses, _ = caps(2, 7, 5, 2)
    g = layer.graph((7, 5))
    h, perm = permuted(g)
    votes = layer.votes(g, poses)
    src, _ = g.edges()
    assert votes.shape == (g.num_edges(), 2, 16)
    torch.testing.assert_close(layer.votes(h, poses), votes[perm], rtol=0, atol=0)
    # every vote is its child's pose times the matrix the edge names (plus coordinates for classes)
    m = poses.reshape(2, -1, 4, 4)[:, src]  # (B, E, 4, 4)
    if isinstance(layer, ConvCaps):
        w = layer.weight[g.edata["w_index"]]
    else:
        _, dst = g.edges()
        w = layer.weight.view(2, 3, 4, 4)[src % 2, dst]
    expect = (m @ w).transpose(0, 1).reshape(-1, 2, 16)
    if isinstance(layer, ClassCaps):
        expect = expect.clone()
        cell = src // 2
        expect[:, :, 3] += ((cell % 5).double() + 0.5)[:, None] / 5
        expect[:, :, 7] += ((cell // 5).double() + 0.5)[:, None] / 7
    torch.testing.assert_close(votes, expect, rtol=1e-12, atol=1e-12)


def test_primary_matrix_caps_layout_and_range():
    layer = PrimaryMatrixCaps(3, 2, kernel_size=3, stride=2)
    x = torch.randn(2, 3, 9, 7)
    poses, acts = layer(x)
    assert poses.shape == (2, 4, 3, 2, 4, 4) and acts.shape == (2, 4, 3, 2)
    m = layer.pose(x)  # (B, 32, 4, 3)
    assert torch.equal(poses[1, 2, 1, 1, 2, 3], m[1, 16 * 1 + 4 * 2 + 3, 2, 1])
    assert torch.equal(acts[0, 3, 2, 1], torch.sigmoid(layer.activation(x))[0, 1, 3, 2])
    assert ((acts > 0) & (acts < 1)).all()
    assert "in_channels=3, out_types=2, kernel_size=3, stride=2" in repr(layer)
    with pytest.raises(ValueError, match=r"x must have shape \(B, in_channels=3, H, W\); got \(2, 4, 9, 7\)"):
        layer(torch.randn(2, 4, 9, 7))


def test_layers_return_routing_keep_no_state_and_print():
    layer = ConvCaps(in_types=32, out_types=32, kernel=3, stride=2)
    assert repr(layer) == "ConvCaps(in_types=32, out_types=32, kernel=3, stride=2)"
    assert repr(ClassCaps(32, 10)) == "ClassCaps(in_types=32, n_classes=10, coord_add=True)"
    assert "n_iters=2" in repr(ConvCaps(2, 2, 3, 1, n_iters=2))
    layer = ConvCaps(2, 3, kernel=3, stride=1)
    poses, acts = caps(4, 5, 5, 2, dtype=torch.float32)
    g = layer.graph((5, 5))
    keys = set(g.edata.keys())
    p, a, r = layer(poses, acts, return_routing=True, return_trace=True)
    assert p.shape == (4, 3, 3, 3, 4, 4) and a.shape == (4, 3, 3, 3)
    assert r.coupling.shape == (g.num_edges(), 4) and len(r.trace) == 3
    assert torch.equal(r.activations.T.reshape(a.shape), a)
    assert set(g.edata.keys()) == keys and len(g.dstdata) == 0 and len(g.srcdata) == 0
    p2, a2 = layer(poses, acts)
    assert torch.equal(p, p2) and torch.equal(a, a2)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "beta_u", "beta_a"]
    assert layer.weight.shape == (9 * 2 * 3, 4, 4) and layer.beta_u.shape == (3,)
    cls = ClassCaps(2, 4)
    _, a, r = cls(poses, acts, return_routing=True)
    assert a.shape == (4, 4) and r.coupling.shape == (5 * 5 * 2 * 4, 4)
    assert len(cls.graph((5, 5)).edata) == 0


def test_layers_reject_bad_input():
    layer = ConvCaps(2, 3, kernel=3, stride=1)
    poses, acts = caps(4, 5, 5, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"ConvCaps: poses must have shape \(B, H, W, in_types, 4, 4\) = \(B, H, W, 2, 4, 4\); got \(4, 5, 5, 3, 4, 4\)"):
        layer(torch.randn(4, 5, 5, 3, 4, 4), acts)
    with pytest.raises(ValueError, match=r"ConvCaps: activations must have shape \(B, H, W, in_types\) = \(4, 5, 5, 2\); got \(4, 5, 5\)"):
        layer(poses, acts[..., 0])
    with pytest.raises(ValueError, match=r"ConvCaps: the child grid \(H, W\) = \(2, 5\) is smaller than kernel = 3"):
        layer(poses[:, :2], acts[:, :2])
    with pytest.raises(ValueError, match=r"ClassCaps: poses must have shape .* got \(4, 25, 2, 4, 4\)"):
        ClassCaps(2, 4)(poses.reshape(4, 25, 2, 4, 4), acts)
    with pytest.raises(ValueError, match="in_types must be a positive integer; got 0"):
        ConvCaps(0, 3, 3, 1)
    with pytest.raises(ValueError, match="n_iters must be an integer >= 1; got 0"):
        ClassCaps(2, 4, n_iters=0)
    with pytest.raises(ValueError, match=r"inverse_temperatures must be a sequence with at least n_iters = 3 values "
                                         r"\(one per iteration\); got shape \(2,\)"):
        ConvCaps(2, 3, 3, 1, inverse_temperatures=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"ConvCaps: activations must lie in \[0, 1\]; got values in \[1"):
        layer(poses, acts + 1)
    with pytest.raises(ValueError, match=r"ClassCaps: activations must lie in \[0, 1\]; got values in \[-0\.9"):
        ClassCaps(2, 4)(poses, acts - 1)
    for lay in (layer, ClassCaps(2, 4)):
        with pytest.raises(TypeError, match=r"poses must be a torch.Tensor .*; got numpy.ndarray \(convert it with torch.from_numpy\)"):
            lay(poses.numpy(), acts)
        with pytest.raises(TypeError, match=r"activations must be a torch.Tensor .*; got numpy.ndarray"):
            lay(poses, acts.numpy())
        with pytest.raises(TypeError, match=r"poses must be a floating-point tensor .*; got dtype torch.int64"):
            lay(poses.long(), acts)
        with pytest.raises(TypeError, match=r"activations must be a floating-point tensor .*; got dtype torch.int64"):
            lay(poses, acts.long())
        for half in (torch.float16, torch.bfloat16):
            with pytest.raises(TypeError, match=rf"poses must be float32 or float64 \(.*\); got {half}$"):
                lay(poses.to(half), acts)
    for lam in ([0.1, -0.1, 0.2], [0.1, float("nan"), 0.2], [float("inf"), 0.1, 0.2]):
        with pytest.raises(ValueError, match=r"inverse_temperatures must be finite and >= 0; got \["):
            ConvCaps(2, 3, 3, 1, inverse_temperatures=lam)
        with pytest.raises(ValueError, match=r"inverse_temperatures must be finite and >= 0; got \["):
            ClassCaps(2, 4, inverse_temperatures=lam)
    with pytest.raises(ValueError, match=r"inverse_temperatures must be a sequence .*got shape \(\)"):
        ClassCaps(2, 4, inverse_temperatures=0.1)
    with pytest.raises(TypeError, match="inverse_temperatures must be a sequence of numbers"):
        ClassCaps(2, 4, inverse_temperatures=["a", "b", "c"])


def _conv_and_class():
    return [(ConvCaps(2, 3, kernel=3, stride=2, n_iters=2), (7, 6)), (ClassCaps(2, 4, n_iters=2), (3, 2))]


def test_int32_graphs_give_the_same_votes_and_routing():
    for layer, (h, w) in _conv_and_class():
        poses, acts = caps(3, h, w, 2)
        layer = randomise_betas(layer.double())
        g = layer.graph((h, w))
        v64, v32 = layer.votes(g, poses), layer.votes(g.int(), poses)
        torch.testing.assert_close(v32, v64, rtol=0, atol=0)
        a_in = acts.reshape(3, -1).T
        r64 = layer._route(g, v64, a_in, g.num_dst_nodes() // layer.beta_u.shape[0], False)
        r32 = layer._route(g.int(), v32, a_in, g.num_dst_nodes() // layer.beta_u.shape[0], False)
        for x, y in zip((r64.poses, r64.activations, r64.coupling), (r32.poses, r32.activations, r32.coupling)):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_float64_poses_through_a_float32_layer_compute_in_float64():
    for layer, (h, w) in _conv_and_class():
        poses, acts = caps(2, h, w, 2)  # float64
        acts = acts.float()
        p, a = layer(poses, acts)  # float32 parameters, float32 activations: cast to float64
        assert p.dtype == a.dtype == torch.float64
        p2, a2 = layer.double()(poses, acts.double())
        torch.testing.assert_close(p, p2, rtol=0, atol=0)
        torch.testing.assert_close(a, a2, rtol=0, atol=0)
