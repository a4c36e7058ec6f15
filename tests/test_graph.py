import itertools

import pytest
import torch

import dgl_capsules as dc


def test_capsule_graph_is_complete_bipartite():
    g = dc.capsule_graph(7, 3)
    assert g.is_unibipartite and g.ntypes == ["child", "parent"]
    assert (g.num_src_nodes(), g.num_dst_nodes(), g.num_edges()) == (7, 3, 21)
    src, dst = g.edges()
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert pairs == set(itertools.product(range(7), range(3)))
    assert len(g.edata) == 0


def test_graphs_are_cached_per_arguments_and_device():
    # every call is a view of one cached structure (DGL's graph index, formats built once)
    assert dc.capsule_graph(5, 2)._graph is dc.capsule_graph(5, 2)._graph
    assert dc.capsule_graph(5, 2)._graph is dc.capsule_graph(5, 2, device="cpu")._graph
    assert dc.capsule_graph(5, 2)._graph is dc.capsule_graph(5, 2, device=torch.device("cpu"))._graph
    assert dc.capsule_graph(5, 2)._graph is not dc.capsule_graph(2, 5)._graph
    a = dc.conv_capsule_graph((5, 5), 3, 1, 2, 2)
    assert a._graph is dc.conv_capsule_graph((5, 5), 3, 1, 2, 2, device="cpu")._graph
    assert a._graph is not dc.conv_capsule_graph((5, 5), 3, 2, 2, 2)._graph


def test_to_device_works():
    g = dc.capsule_graph(4, 2, device="cpu")
    assert g.device == torch.device("cpu")
    h = dc.conv_capsule_graph((4, 4), 2, 2, 1, 1).to("cpu")
    assert h.num_edges() == 2 * 2 * 4


def test_a_handle_cannot_change_the_cached_graph():
    g = dc.capsule_graph(4, 2)
    g.edata["x"] = torch.ones(8)
    g.ndata["h"] = {"child": torch.ones(4)}
    g.add_edges(torch.tensor([0]), torch.tensor([1]))
    again = dc.capsule_graph(4, 2)
    assert again.num_edges() == 8 and len(again.edata) == 0 and len(again.srcdata) == 0
    assert dc.nn.DynamicCaps(4, 2, 3, 5)(torch.randn(1, 4, 3)).shape == (1, 2, 5)

    c = dc.conv_capsule_graph((4, 4), 2, 2, 1, 3)
    expect = {k: v.clone() for k, v in c.edata.items()}
    c.remove_edges(torch.tensor([0, 1]))
    del c.edata["offset"]
    again = dc.conv_capsule_graph((4, 4), 2, 2, 1, 3)
    assert again.num_edges() == 2 * 2 * 4 * 3 and sorted(again.edata.keys()) == sorted(expect)
    # a shared feature changed in place through a handle: the cache rebuilds the graph
    again.edata["w_index"].zero_()
    fresh = dc.conv_capsule_graph((4, 4), 2, 2, 1, 3)
    for k, v in expect.items():
        assert torch.equal(fresh.edata[k], v), k


def brute_force_conv_edges(h, w, k, s, n_a, n_c):
    """The DESIGN.md contract, written as plain loops over every child and parent."""
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    edges = {}
    for y, x, a in itertools.product(range(h), range(w), range(n_a)):
        for yo, xo, c in itertools.product(range(ho), range(wo), range(n_c)):
            if yo * s <= y < yo * s + k and xo * s <= x < xo * s + k:
                child = (y * w + x) * n_a + a
                parent = (yo * wo + xo) * n_c + c
                offset = (y - yo * s) * k + (x - xo * s)
                edges[(child, parent)] = (offset, a, c)
    return edges, ho * wo * n_c


@pytest.mark.parametrize(
    "h, w, k, s, n_a, n_c",
    [(5, 5, 3, 1, 2, 3), (6, 7, 3, 2, 1, 2), (7, 5, 2, 3, 2, 1), (4, 4, 4, 1, 3, 2), (3, 3, 1, 1, 1, 1)],
)
def test_conv_capsule_graph_matches_the_index_contract(h, w, k, s, n_a, n_c):
    g = dc.conv_capsule_graph(in_hw=(h, w), kernel=k, stride=s, in_types=n_a, out_types=n_c)
    expected, n_parents = brute_force_conv_edges(h, w, k, s, n_a, n_c)
    assert g.num_src_nodes() == h * w * n_a and g.num_dst_nodes() == n_parents
    src, dst = g.edges()
    got = {
        (i, j): (o, a, c)
        for i, j, o, a, c in zip(
            src.tolist(), dst.tolist(), g.edata["offset"].tolist(),
            g.edata["child_type"].tolist(), g.edata["parent_type"].tolist(),
        )
    }
    assert len(got) == g.num_edges()  # no duplicate edges
    assert got == expected
    assert torch.equal(g.edata["parent_type"], dst % n_c)
    w_index = (g.edata["offset"] * n_a + g.edata["child_type"]) * n_c + g.edata["parent_type"]
    assert torch.equal(g.edata["w_index"], w_index)
    assert int(g.edata["w_index"].max()) < k * k * n_a * n_c


def test_overlapping_receptive_fields_give_centre_children_more_parents():
    g = dc.conv_capsule_graph((5, 5), kernel=3, stride=1, in_types=1, out_types=1)
    deg = g.out_degrees().view(5, 5)
    assert deg[0, 0] == 1 and deg[2, 2] == 9 and deg[0, 2] == 3
    assert (g.in_degrees() == 9).all()


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 3), "n_in must be a positive integer; got 0"),
        ((3, -1), "n_out must be a positive integer; got -1"),
        ((2.5, 3), "n_in must be a positive integer; got 2.5"),
    ],
)
def test_capsule_graph_rejects_bad_sizes(args, match):
    with pytest.raises(ValueError, match=match):
        dc.capsule_graph(*args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_hw=6), r"in_hw must be a pair \(H, W\)"),
        (dict(in_hw=(6, 0)), r"in_hw\[1\] must be a positive integer; got 0"),
        (dict(kernel=0), "kernel must be a positive integer; got 0"),
        (dict(kernel=7), r"kernel must be at most min\(H, W\) = 6 for in_hw = \(6, 6\); got 7"),
        (dict(stride=0), "stride must be a positive integer; got 0"),
        (dict(in_types=0), "in_types must be a positive integer"),
        (dict(out_types=True), "out_types must be a positive integer; got True"),
    ],
)
def test_conv_capsule_graph_rejects_bad_sizes(kwargs, match):
    args = dict(in_hw=(6, 6), kernel=3, stride=1, in_types=2, out_types=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        dc.conv_capsule_graph(**args)
