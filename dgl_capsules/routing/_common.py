"""What every routing algorithm shares: its result type and input checks."""
from numbers import Integral, Real
from typing import List, NamedTuple, Optional

import dgl
import torch

__all__ = ["RoutingResult"]


class RoutingResult(NamedTuple):
    """Outputs of a routing call; fields an algorithm does not produce are ``None``.

    Attributes
    ----------
    poses : torch.Tensor
        Parent poses, ``(N_dst, *, D)`` (``v_j`` for dynamic routing, ``mu_j``
        for EM and Heinsen routing).
    activations : torch.Tensor or None
        Parent activations ``(N_dst, *)`` (EM: probabilities; Heinsen: logits).
    coupling : torch.Tensor
        Edge couplings ``(|E|, *)`` of the last iteration (``c_ij`` or ``R_ij``).
    sigma2 : torch.Tensor or None
        Parent variances, same shape as ``poses`` (EM and Heinsen).
    trace : list of torch.Tensor or None
        With ``return_trace=True``, the coupling of every iteration.
    """

    poses: torch.Tensor
    activations: Optional[torch.Tensor] = None
    coupling: Optional[torch.Tensor] = None
    sigma2: Optional[torch.Tensor] = None
    trace: Optional[List[torch.Tensor]] = None


def check_graph(g, who):
    """Raise unless ``g`` is a unibipartite capsule graph whose parents all have children."""
    if not isinstance(g, dgl.DGLGraph):
        raise TypeError(f"{who}: g must be a dgl.DGLGraph; got {type(g).__name__}")
    if not g.is_unibipartite or len(g.canonical_etypes) != 1:
        raise dgl.DGLError(
            f"{who}: g must be a bipartite capsule graph with one edge type from child to "
            f"parent nodes (build it with dgl_capsules.capsule_graph or conv_capsule_graph, "
            f"or dgl.heterograph({{('child', 'vote', 'parent'): (u, v)}})); got node types "
            f"{g.ntypes} and edge types {g.canonical_etypes}"
        )
    if g.num_dst_nodes() and int(g.in_degrees().min()) == 0:
        lonely = int((g.in_degrees() == 0).sum())
        raise dgl.DGLError(
            f"{who}: {lonely} parent capsule(s) of g have no children; every parent needs at "
            "least one incoming edge (remove those parents or connect them)"
        )


def check_n_iters(n_iters):
    if isinstance(n_iters, bool) or not isinstance(n_iters, Integral) or n_iters < 1:
        raise ValueError(f"n_iters must be an integer >= 1; got {n_iters!r}")
    return int(n_iters)


def check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, Real) or not eps > 0:
        raise ValueError(f"eps must be a positive number; got {eps!r}")
    return float(eps)


def check_edge_tensor(name, x, g, min_dim, layout):
    """Check a per-edge tensor: floating point, ``|E|`` rows, at least ``min_dim`` dims."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}; got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if x.dim() < min_dim or x.shape[0] != g.num_edges():
        raise ValueError(
            f"{name} must have shape {layout} with |E| = {g.num_edges()} edges of the graph; "
            f"got {tuple(x.shape)}"
        )


def check_node_tensor(name, x, n, batch_shape, layout):
    """Check a per-node tensor: floating point with shape ``(n, *batch_shape)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}; got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    expected = (n,) + tuple(batch_shape)
    if tuple(x.shape) != expected:
        raise ValueError(f"{name} must have shape {layout} = {expected}; got {tuple(x.shape)}")


def per_item(name, value, n, what, like):
    """A scalar or a length-``n`` vector (one value per ``what``) as a tensor broadcastable over items.

    Returns a tensor of shape ``()`` or ``(n,)`` with the dtype and device of ``like``.
    """
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0 or (t.dim() == 1 and t.shape[0] == n):
        return t
    raise ValueError(f"{name} must be a scalar or have shape ({what},) = ({n},); got {tuple(t.shape)}")


def uniform_coupling(g, batch_shape, like):
    """``R_ij = 1 / (number of parents of i)`` on every edge: ``(|E|, *batch_shape)``."""
    src, _ = g.edges()
    deg = g.out_degrees().to(device=like.device, dtype=like.dtype)
    r = 1.0 / deg[src.to(like.device)]  # (E,)
    return r.view((-1,) + (1,) * len(batch_shape)).expand((-1,) + tuple(batch_shape))
