"""Test-time routing swaps: uniform and random couplings and other iteration counts, for every routing family."""
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.analysis import MODES, routed_modules, routing_swap, swapped_routing
from dgl_capsules.analysis.swap import random_coupling
from dgl_capsules.data import ImageDataset
from dgl_capsules.evaluation import evaluate, unpack_correct
from dgl_capsules.functional import efficient_squash, squash
from dgl_capsules.models import get_model
from dgl_capsules.nn import RoutedCaps
from dgl_capsules.routing import first_coupling, register_routing, unregister_routing

FAMILY_MODELS = {"dynamic": "capsnet", "em": "matrixcaps", "heinsen": "heinsen", "self-attention": "efficient-capsnet"}


def _x(n=4, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _scores(net, x):
    with torch.no_grad():
        return net.scores(net(x))


def _uniform(g):
    src = g.edges()[0].long()
    return 1.0 / g.out_degrees().double()[src]


def test_every_model_routes_with_a_registered_family():
    for family, name in FAMILY_MODELS.items():
        assert {spec.name for _, _, spec in routed_modules(get_model(name, "tiny"))} == {family}


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_uniform_swap_routes_every_child_uniformly_and_restores_the_model_bitwise(family):
    net, x = get_model(FAMILY_MODELS[family], "tiny").eval(), _x()
    before, state, text = _scores(net, x), {k: v.clone() for k, v in net.state_dict().items()}, repr(net)
    for mode in ("uniform", "random"):
        with swapped_routing(net, mode) as names:
            with torch.no_grad():
                routed = net.routing(x)
            swapped = _scores(net, x)
        assert names == [n for n, _, _ in routed_modules(net)]
        for layer in routed:
            (c,) = layer.result.trace  # one pass
            uniform = _uniform(layer.graph)[:, None].expand_as(c)
            if mode == "uniform":
                assert torch.allclose(c.double(), uniform, atol=1e-6), layer.name
            else:
                assert not torch.allclose(c.double(), uniform, atol=1e-3), layer.name
                sums = torch.zeros(layer.graph.num_src_nodes(), c.shape[1]).index_add_(0, layer.graph.edges()[0], c)
                linked = layer.graph.out_degrees() > 0  # border children of a convolution have no parents
                assert torch.allclose(sums[linked], torch.ones_like(sums[linked]), atol=1e-5)
        assert swapped.shape == before.shape
        assert torch.equal(_scores(net, x), before) and repr(net) == text
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_uniform_swap_changes_nothing_in_a_model_trained_with_uniform_couplings():
    x = _x()
    for net in (get_model("efficient-capsnet", "tiny", routing="uniform").eval(),
                get_model("capsnet", "tiny", n_iters=1).eval()):
        before = _scores(net, x)
        with swapped_routing(net, "uniform"):
            assert torch.equal(_scores(net, x), before)


def test_iteration_count_changes_dynamic_routing_and_the_trained_count_changes_nothing():
    net, x = get_model("capsnet", "tiny").eval(), _x()
    with torch.no_grad():
        net.digits.weight.mul_(30)  # votes long enough for agreement to move the couplings, as after training
    before = _scores(net, x)
    with swapped_routing(net, "iterations", n_iters=3):
        assert torch.equal(_scores(net, x), before)
    for k in (1, 2, 5):
        with swapped_routing(net, "iterations", n_iters=k):
            assert net.digits.n_iters == k
            assert not torch.allclose(_scores(net, x), before)
    assert net.digits.n_iters == 3 and torch.equal(_scores(net, x), before)


def test_more_em_iterations_continue_the_inverse_temperatures_and_restore_them():
    net = get_model("matrixcaps", "tiny", inverse_temperatures=[0.1, 0.2]).eval()
    schedule = net.caps1.inverse_temperatures
    with swapped_routing(net, "iterations", n_iters=4):
        assert net.caps1.n_iters == 4 and net.caps1.inverse_temperatures == [0.1, 0.2, 0.2, 0.2]
        with torch.no_grad():
            routed = net.routing(_x(2))
        assert [len(l.result.trace) for l in routed] == [4, 4, 4]
    assert net.caps1.n_iters == 2 and net.caps1.inverse_temperatures is schedule


def test_first_coupling_routes_dynamic_and_self_attention_with_the_given_couplings_by_hand():
    g = dc.capsule_graph(3, 2)
    votes = torch.randn(6, 5, 4, dtype=torch.float64)
    c = random_coupling(torch.Generator().manual_seed(1))(g, (5,), votes)
    src, dst = g.edges()
    s = torch.zeros(2, 5, 4, dtype=torch.float64).index_add_(0, dst, c[..., None] * votes)
    with first_coupling(lambda g_, batch, like: c):
        r = dc.routing.dynamic_routing(g, votes, n_iters=1, return_trace=True)
        bias = torch.randn(6, dtype=torch.float64)
        a = dc.routing.self_attention_routing(g, votes, bias, uniform=True)
    assert torch.equal(r.trace[0], c) and torch.allclose(r.poses, squash(s))
    s_bias = torch.zeros(2, 5, 4, dtype=torch.float64).index_add_(0, dst, (c + bias[:, None])[..., None] * votes)
    assert torch.allclose(a.poses, efficient_squash(s_bias))


@pytest.mark.parametrize("family", ["em", "heinsen"])
def test_first_coupling_with_uniform_couplings_equals_the_routing_and_given_ones_start_it(family):
    from dgl_capsules.routing import get_routing

    spec = get_routing(family)
    g = dc.capsule_graph(4, 3)
    inputs = spec.get_example()(g, 2, torch.Generator().manual_seed(0))
    plain = spec.fn(g, *inputs, n_iters=2, return_trace=True)
    with first_coupling(lambda g_, batch, like: _uniform(g_)[:, None].expand(-1, *batch).to(like)):
        same = spec.fn(g, *inputs, n_iters=2, return_trace=True)
    assert torch.allclose(same.poses, plain.poses) and torch.allclose(same.activations, plain.activations)
    c = random_coupling(torch.Generator().manual_seed(3))(g, (2,), inputs[0])
    with first_coupling(lambda g_, batch, like: c):
        given = spec.fn(g, *inputs, n_iters=1, return_trace=True)
    assert torch.equal(given.trace[0], c) and not torch.allclose(given.activations, plain.activations)


def test_routing_swap_scores_every_swap_with_mcnemar_against_the_trained_routing():
    net = get_model("capsnet", "tiny")
    data = ImageDataset(_x(10), torch.arange(10) % 10)
    out = routing_swap(net, data, batch_size=4, progress=False)
    assert out["samples"] == 10 and out["trained_iterations"] == {"digits": 3}
    assert out["trained"]["accuracy"] == pytest.approx(evaluate(net, data))
    assert sorted(out["iterations"]) == ["1", "2", "3", "4", "5"]
    assert out["iterations"]["3"]["mcnemar"] == dict(b=0, c=0, p=1.0)
    assert out["iterations"]["1"]["correct"] == out["uniform"]["correct"]  # one pass of dynamic routing is uniform
    right = unpack_correct(out["random"]["correct"], 10)
    assert out["random"]["accuracy"] == pytest.approx(right.double().mean().item())
    eff = routing_swap(get_model("efficient-capsnet", "tiny"), data, iterations=(2,), max_samples=6, progress=False)
    assert eff["samples"] == 6 and eff["trained_iterations"] == {}
    assert "has no iterations to change" in eff["iterations"]["2"]["unavailable"]


def _toy(name, normalise="parents", iterative=True, honour=True):
    def route(g, votes, n_iters=1, return_trace=False):
        if honour:
            return dc.routing.dynamic_routing(g, votes, n_iters=n_iters, return_trace=return_trace)
        c = _uniform(g).to(votes)[:, None].expand(votes.shape[:-1])
        s = torch.zeros((g.num_dst_nodes(),) + votes.shape[1:]).index_add_(0, g.edges()[1], c[..., None] * votes)
        return dc.routing.RoutingResult(poses=squash(s), coupling=c, trace=[c] if return_trace else None)

    register_routing(name, route, label=name, normalise=normalise, iterative=iterative)


class _Net(torch.nn.Module):
    def __init__(self, routing, **kwargs):
        super().__init__()
        self.caps = RoutedCaps(784, 3, 1, 4, routing=routing, **kwargs)

    def forward(self, x, y=None):
        return self.caps(x.flatten(1)[..., None])

    def scores(self, out):
        return out.norm(dim=-1)


def test_bad_swaps_fail_naming_the_argument():
    net = get_model("capsnet", "tiny")
    with pytest.raises(ValueError, match=r"mode must be one of \('uniform', 'random', 'iterations'\); got 'none'"):
        with swapped_routing(net, "none"):
            pass
    assert MODES == ("uniform", "random", "iterations")
    with pytest.raises(ValueError, match="n_iters must be an integer >= 1 for mode 'iterations'; got None"):
        with swapped_routing(net, "iterations"):
            pass
    with pytest.raises(ValueError, match="n_iters is only for mode 'iterations'; got n_iters=2 with mode 'uniform'"):
        with swapped_routing(net, "uniform", n_iters=2):
            pass
    with pytest.raises(ValueError, match="model: BaselineCNN has no routed layers"):
        with swapped_routing(get_model("cnn", "tiny"), "uniform"):
            pass
    with pytest.raises(ValueError, match="layer 'digits' routes by 'self-attention', which has no iterations"):
        with swapped_routing(get_model("efficient-capsnet", "tiny"), "iterations", n_iters=2):
            pass
    try:
        _toy("toy-children", normalise="children")
        _toy("toy-static", iterative=False)
        _toy("toy-deaf", honour=False)
        with pytest.raises(ValueError, match="layer 'caps' routes by 'toy-children', normalised over children"):
            with swapped_routing(_Net("toy-children"), "random"):
                pass
        with pytest.raises(ValueError, match="'toy-static', which has neither a uniform switch nor iterations"):
            with swapped_routing(_Net("toy-static"), "uniform"):
                pass
        data = ImageDataset(_x(3), torch.arange(3))
        with pytest.raises(ValueError, match=r"model: a routing family of \['toy-deaf'\] ignores the couplings"):
            routing_swap(_Net("toy-deaf", n_iters=2), data, iterations=(), progress=False)
    finally:
        for name in ("toy-children", "toy-static", "toy-deaf"):
            unregister_routing(name)
    data = ImageDataset(_x(3), torch.arange(3))
    with pytest.raises(ValueError, match="data must be an image data set with .images and .labels"):
        routing_swap(net, "mnist", progress=False)
    with pytest.raises(ValueError, match="max_samples must be None or an integer >= 1; got 0"):
        routing_swap(net, data, max_samples=0, progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got -1"):
        routing_swap(net, data, batch_size=-1, progress=False)
    with pytest.raises(ValueError, match=r"iterations must be integers >= 1; got \[0\]"):
        routing_swap(net, data, iterations=(0,), progress=False)
    with pytest.raises(ValueError, match=r"data must hold at least 1 sample\(s\); got 0"):
        routing_swap(net, ImageDataset(torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), n_classes=10),
                     progress=False)
