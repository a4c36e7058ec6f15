"""Helpers for the tests: converting edge tensors to dense child x parent arrays."""
import dgl
import torch

from dgl_capsules.graph import CHILD, PARENT, VOTE


def edge_to_dense(g, x):
    """Edge tensor ``(E, *rest)`` -> dense ``(N_src, N_dst, *rest)`` with zeros off the graph."""
    src, dst = g.edges()
    out = x.new_zeros((g.num_src_nodes(), g.num_dst_nodes()) + tuple(x.shape[1:]))
    out[src, dst] = x
    return out


def dense_to_edge(g, x):
    src, dst = g.edges()
    return x[src, dst]


def dense_mask(g):
    """``(N_src, N_dst)`` boolean: which child votes for which parent."""
    src, dst = g.edges()
    mask = torch.zeros(g.num_src_nodes(), g.num_dst_nodes(), dtype=torch.bool)
    mask[src, dst] = True
    return mask


def permuted(g, seed=1):
    """The same graph with its edge ids shuffled; returns (graph, perm) with new edge k = old perm[k]."""
    src, dst = g.edges()
    perm = torch.randperm(g.num_edges(), generator=torch.Generator().manual_seed(seed))
    h = dgl.heterograph(
        {(CHILD, VOTE, PARENT): (src[perm], dst[perm])},
        num_nodes_dict={CHILD: g.num_src_nodes(), PARENT: g.num_dst_nodes()},
    )
    for k, v in g.edata.items():
        h.edata[k] = v[perm]
    return h, perm
