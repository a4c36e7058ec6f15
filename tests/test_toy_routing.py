"""A routing family is one registration: a toy routing defined and registered here, and nowhere else, passes
the routing contract, works in the generic layer, which passes the layer contract, and shows in the pictures."""
import torch
from torch import nn

import dgl_capsules as dc
from dgl_capsules.models import RoutedLayer
from dgl_capsules.routing import list_routings, register_routing, unregister_routing
from dgl_capsules.testing import check_layer_contract, check_routing_contract, dense_mask, dense_to_edge, edge_to_dense


def uniform_routing(g, votes, return_trace=False):
    """One pass of uniform couplings: every child splits its vote evenly, c_ij = 1 / |N(i)|, s_j = sum_i c_ij u_j|i."""
    if not isinstance(votes, torch.Tensor) or votes.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"votes must be a float32 or float64 tensor; got {getattr(votes, 'dtype', type(votes))}")
    if votes.dim() < 2 or votes.shape[0] != g.num_edges():
        raise ValueError(f"votes must have shape (|E|, *, D) with |E| = {g.num_edges()}; got {tuple(votes.shape)}")
    src, dst = (ids.long() for ids in g.edges())
    coupling = (1.0 / g.out_degrees().to(votes)[src]).view((-1,) + (1,) * (votes.dim() - 2))  # (E, 1...)
    coupling = coupling.expand(votes.shape[:-1])  # (E, *)
    poses = votes.new_zeros((g.num_dst_nodes(),) + votes.shape[1:]).index_add(0, dst, coupling[..., None] * votes)
    return dc.RoutingResult(poses=poses, coupling=coupling, trace=[coupling] if return_trace else None)


def dense_uniform_routing(g, votes, return_trace=False):
    """The same, densely and without DGL: the reference the routing contract compares with."""
    mask = dense_mask(g).to(votes.dtype)  # (I, J)
    c = mask / mask.sum(1, keepdim=True).clamp(min=1)
    poses = torch.einsum("ij,ij...->j...", c, edge_to_dense(g, votes))
    coupling = dense_to_edge(g, c).view((-1,) + (1,) * (votes.dim() - 2)).expand(votes.shape[:-1])
    return dc.RoutingResult(poses=poses, coupling=coupling, trace=[coupling] if return_trace else None)


def example_votes(g, batch, generator):
    return (torch.randn(g.num_edges(), batch, 4, generator=generator, dtype=torch.float64),)


class TinyNet(nn.Module):
    """4 capsules of 2 dims (inputs of 8 numbers) routed to 3 class capsules by the toy routing."""

    def __init__(self):
        super().__init__()
        self.caps = dc.nn.RoutedCaps(in_caps=4, out_caps=3, in_dim=2, out_dim=5, routing="uniform")

    def forward(self, x, y=None):
        return self.caps(x.view(-1, 4, 2))  # (B, 3, 5)

    def scores(self, out):
        return out.norm(dim=-1)

    def routing(self, x):
        g, u = self.caps.graph(), x.view(-1, 4, 2)
        _, r = self.caps(u, return_trace=True)
        return [RoutedLayer.of("caps", g, r, "uniform", votes=self.caps.votes(g, u))]


def test_a_routing_registered_here_passes_both_contracts_and_shows_in_the_pictures(tmp_path):
    register_routing("uniform", uniform_routing, label="uniform couplings", iterative=False,
                     reference=dense_uniform_routing, example=example_votes)
    try:
        assert "uniform" in list_routings()
        check_routing_contract("uniform")
        layer = dc.nn.RoutedCaps(in_caps=4, out_caps=3, in_dim=2, out_dim=5, routing="uniform")
        check_layer_contract(layer, lambda b, gen: (torch.randn(b, 4, 2, generator=gen, dtype=torch.float64),))
        res = dc.viz.visualize_model(TinyNet(), torch.randn(2, 8), None, tmp_path, dpi=30)
        layer_summary = res["summary"]["layers"]["caps"]
        assert (layer_summary["algorithm"], layer_summary["label"]) == ("uniform", "uniform couplings")
        assert sorted(res["paths"]["caps"]) == ["bipartite", "entropy", "histogram"]
    finally:
        unregister_routing("uniform")
    assert "uniform" not in list_routings()
