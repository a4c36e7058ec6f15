"""Generated routing problems with a known answer."""
from typing import NamedTuple

import torch

from ..graph import capsule_graph

__all__ = ["PlantedClusters", "planted_clusters"]


class PlantedClusters(NamedTuple):
    """A routing problem whose right couplings are known."""

    graph: object
    votes: torch.Tensor  # (E, B, D) in the graph's edge order
    assignment: torch.Tensor  # (n_in,) the parent each child truly belongs to


def planted_clusters(n_in=64, n_out=4, dim=8, batch=1, noise=0.1, seed=0, dtype=torch.float32):
    """Children whose votes agree in groups, one group per parent.

    Child ``i`` belongs to parent ``assignment[i] = i % n_out``. Its vote for
    that parent is the parent's unit direction plus Gaussian noise of scale
    ``noise``; its votes for the other parents are independent random vectors
    of the same typical length, which agree with nothing. Routing should
    attach every child to its own parent, so the coupling entropy falls from
    ``log(n_out)`` towards 0.

    Parameters
    ----------
    n_in, n_out : int
        Children and parents of the complete capsule graph.
    dim : int
        Vote dimension.
    batch : int
        Independent samples, each with its own parent directions.
    noise : float
        Spread of the agreeing votes around their parent's direction.
    seed : int
        Everything is generated from this seed.

    Returns
    -------
    PlantedClusters
        ``graph``, ``votes`` ``(|E|, batch, dim)``, ``assignment`` ``(n_in,)``.

    Examples
    --------
    >>> p = planted_clusters(n_in=12, n_out=3, dim=4, batch=2)
    >>> p.votes.shape, p.assignment.tolist()[:4]
    (torch.Size([36, 2, 4]), [0, 1, 2, 0])
    """
    gen = torch.Generator().manual_seed(seed)
    g = capsule_graph(n_in, n_out)
    src, dst = g.edges()
    assignment = torch.arange(n_in) % n_out
    directions = torch.randn(n_out, batch, dim, generator=gen, dtype=dtype)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    agree = directions[dst] + noise * torch.randn(len(src), batch, dim, generator=gen, dtype=dtype)
    scatter = torch.randn(len(src), batch, dim, generator=gen, dtype=dtype) / dim**0.5
    own = (assignment[src] == dst).view(-1, 1, 1)
    votes = torch.where(own, agree, scatter)  # (E, B, D)
    return PlantedClusters(g, votes, assignment)
