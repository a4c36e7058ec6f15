"""Routing metrics against hand-computed values on small examples."""
import math

import dgl
import pytest
import torch

import dgl_capsules as dc
from dgl_capsules.analysis import (
    agreement, chain_credit, dead_share, normalised_entropy, routing_dynamics, static_index, weighted_mean,
)
from dgl_capsules.testing import permuted, random_bipartite


def test_uniform_routing_has_entropy_one_and_static_index_zero_on_any_graph():
    for g in (dc.capsule_graph(5, 3), dc.conv_capsule_graph((4, 4), kernel=2, stride=1, in_types=2, out_types=3),
              random_bipartite(9, 4, p=0.5, seed=2)):
        src, _ = g.edges()
        uniform = (1.0 / g.out_degrees().double()[src.long()])[:, None].expand(-1, 6)
        h = normalised_entropy(g, uniform)
        several = g.out_degrees() > 1
        assert torch.allclose(h[several], torch.ones_like(h[several]))
        assert torch.isnan(h[~several]).all()  # one parent or none: no choice to measure
        assert static_index(g, uniform) == 0.0


def test_one_hot_routing_has_entropy_zero_and_the_edge_order_does_not_matter():
    g = dc.capsule_graph(3, 4)
    src, dst = g.edges()
    one_hot = (dst == src % 4).double()[:, None]  # child i routes everything to parent i
    assert normalised_entropy(g, one_hot).abs().max().item() == 0.0
    h, perm = permuted(g)
    c = torch.rand(g.num_edges(), 2, dtype=torch.float64)
    c = c / torch.zeros(3, 2, dtype=torch.float64).index_add_(0, src, c)[src]
    assert torch.allclose(normalised_entropy(h, c[perm]), normalised_entropy(g, c))


def test_normalised_entropy_by_hand_with_unequal_out_degrees():
    g = dgl.heterograph({("child", "vote", "parent"): (torch.tensor([0, 0, 1, 1, 1]),
                                                                torch.tensor([0, 1, 0, 1, 2]))})
    c = torch.tensor([[0.5], [0.5], [0.5], [0.25], [0.25]], dtype=torch.float64)
    want1 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)) / math.log(3)
    assert normalised_entropy(g, c).squeeze(1).tolist() == pytest.approx([1.0, want1])


def test_static_index_by_hand():
    g = dc.capsule_graph(1, 2)
    c = torch.tensor([[0.2, 0.6], [0.8, 0.4]])
    assert static_index(g, c) == pytest.approx(0.2)  # each edge's values differ by 0.4: std 0.2
    with pytest.raises(ValueError, match="coupling needs at least 2 inputs to vary over; got B = 1"):
        static_index(g, c[:, :1])


def test_routing_dynamics_by_hand():
    g = dc.capsule_graph(1, 2)
    # class 0: two inputs routed alike; class 1: two inputs routed differently (one bin each of 2 values)
    c = torch.tensor([[0.9, 0.9, 0.9, 0.1], [0.1, 0.1, 0.1, 0.9]])
    out = routing_dynamics(g, c, torch.tensor([0, 0, 1, 1]), bins=10)
    assert out["parse_trees"] == {0: 1, 1: 2} and out["inputs"] == {0: 2, 1: 2}
    assert out["entropy"] == pytest.approx((0 + math.log(2)) / 2)
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\) = \(4,\); got \(3,\)"):
        routing_dynamics(g, c, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="bins must be a positive integer; got 0"):
        routing_dynamics(g, c, torch.tensor([0, 0, 1, 1]), bins=0)


def test_dead_share_and_weighted_mean():
    s = torch.tensor([[0.0, 0.02], [0.5, 0.0], [0.001, 0.003], [0.2, 0.3]])
    assert dead_share(s, (0.01, 0.05, 0.5)) == {0.01: 0.25, 0.05: 0.5, 0.5: 0.75}
    with pytest.raises(ValueError, match=r"strength must have shape \(N, B\) with N >= 1; got \(3,\)"):
        dead_share(torch.ones(3))
    v = torch.tensor([[1.0, float("nan")], [0.0, 2.0]])
    assert weighted_mean(v) == pytest.approx(1.0)
    assert weighted_mean(v, torch.tensor([[3.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        weighted_mean(v, -torch.ones(2, 2))


def test_agreement_by_hand():
    g = dc.capsule_graph(2, 1)
    votes = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (E=2, B=1, 2): child 0 along x, child 1 along y
    poses = torch.tensor([[[1.0, 0.0]]])  # the parent points along x
    c = torch.tensor([[0.75], [0.25]])
    assert agreement(g, c, votes, poses).item() == pytest.approx(0.75)  # 0.75 * cos 0 + 0.25 * cos 90°
    with pytest.raises(ValueError, match=r"poses must have shape \(N_dst, B, \*pose\) of the votes = \(1, 1, 2\)"):
        agreement(g, c, votes, poses[:, :, :1])


def test_chain_credit_by_hand_and_rows_sum_to_one():
    g1, g2 = dc.capsule_graph(2, 2), dc.capsule_graph(2, 2)
    src, dst = g1.edges()
    c1 = torch.where(src == dst, 0.9, 0.1)[:, None].double()  # child i mostly to middle i
    c2 = torch.where(g2.edges()[0] == g2.edges()[1], 1.0, 0.0)[:, None].double()  # middle j all to class j
    k = chain_credit([(g1, c1), (g2, c2)])
    assert torch.allclose(k[0], torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64))
    with pytest.raises(ValueError, match="layers\\[1\\]: the graph has 3 children; the previous layer has 2 parents"):
        chain_credit([(g1, c1), (dc.capsule_graph(3, 2), torch.full((6, 1), 0.5))])
    with pytest.raises(ValueError, match=r"layers\[0\] coupling must have shape \(\|E\|, B\) with \|E\| = 4"):
        chain_credit([(g1, c1[:3])])


def test_routing_dynamics_counts_float32_uniform_couplings_as_static():
    g = dc.capsule_graph(6, 10)
    c = torch.full((60, 40), 0.1)  # uniform couplings 1/10 as float32 rounds them: half one ulp below
    c[:, ::2] = torch.nextafter(c[:, ::2], torch.zeros(()))
    assert (c.double() * 10).min() < 1 < (c.double() * 10).max()  # on both sides of the bin edge at 0.1
    out = routing_dynamics(g, c, torch.arange(40) // 20)  # each class holds both roundings
    assert out["entropy"] == 0.0 and out["parse_trees"] == {0: 1, 1: 1}
