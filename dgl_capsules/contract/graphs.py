"""Small capsule graphs and edge <-> dense conversions shared by the references and the contracts."""
import dgl
import torch

from ..graph import CHILD, PARENT, VOTE, capsule_graph, conv_capsule_graph

__all__ = ["edge_to_dense", "dense_to_edge", "dense_mask", "permuted", "random_bipartite", "default_graphs",
           "ragged_parts"]


def edge_to_dense(g, x):
    """Edge tensor ``(|E|, *rest)`` -> dense ``(N_src, N_dst, *rest)`` with zeros off the graph."""
    src, dst = g.edges()
    out = x.new_zeros((g.num_src_nodes(), g.num_dst_nodes()) + tuple(x.shape[1:]))
    out[src.long(), dst.long()] = x
    return out


def dense_to_edge(g, x):
    """Dense ``(N_src, N_dst, *rest)`` -> edge tensor ``(|E|, *rest)`` in the edge order of ``g``."""
    src, dst = g.edges()
    return x[src.long(), dst.long()]


def dense_mask(g):
    """``(N_src, N_dst)`` boolean: which child votes for which parent."""
    src, dst = g.edges()
    mask = torch.zeros(g.num_src_nodes(), g.num_dst_nodes(), dtype=torch.bool)
    mask[src.long(), dst.long()] = True
    return mask


def permuted(g, seed=1):
    """The same graph with its edge ids shuffled: ``(graph, perm)``, new edge ``k`` = old edge ``perm[k]``.

    Edge features are carried along (permuted).
    """
    src, dst = g.edges()
    perm = torch.randperm(g.num_edges(), generator=torch.Generator().manual_seed(seed)).to(src.device)
    h = dgl.heterograph(
        {(CHILD, VOTE, PARENT): (src[perm], dst[perm])},
        num_nodes_dict={CHILD: g.num_src_nodes(), PARENT: g.num_dst_nodes()},
        idtype=g.idtype, device=g.device,
    )
    for k, v in g.edata.items():
        h.edata[k] = v[perm]
    return h, perm


def random_bipartite(n_in, n_out, p=0.5, seed=0):
    """A random capsule graph: every parent has a child, some children may have no parent."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_in, n_out, generator=gen) < p
    mask[torch.randint(n_in, (n_out,), generator=gen), torch.arange(n_out)] = True
    src, dst = mask.nonzero(as_tuple=True)
    return dgl.heterograph({(CHILD, VOTE, PARENT): (src, dst)}, num_nodes_dict={CHILD: n_in, PARENT: n_out})


def default_graphs():
    """The routing contract's graphs: a complete, a convolutional and a random capsule graph."""
    return {
        "complete": capsule_graph(4, 3),
        "conv": conv_capsule_graph((4, 4), kernel=2, stride=1, in_types=2, out_types=2),
        "random": random_bipartite(7, 4, p=0.4, seed=3),
    }


def ragged_parts():
    """Three graphs of different sizes for the ragged-batch check (one with a child without parents)."""
    return [capsule_graph(3, 2), random_bipartite(5, 3, p=0.5, seed=1), capsule_graph(2, 4)]
