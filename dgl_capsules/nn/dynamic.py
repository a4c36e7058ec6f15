"""Fully connected capsule layer routed by agreement."""
import dgl
import torch
from torch import nn

from .._checks import check_float_tensor, check_n_iters, check_positive_int
from ..graph import capsule_graph
from ..routing.dynamic import dynamic_routing_table

__all__ = ["DynamicCaps"]


class DynamicCaps(nn.Module):
    r"""Fully connected capsule layer with dynamic routing (Sabour et al. 2017, "DigitCaps").

    Every child ``i`` votes for every parent ``j`` with its own transformation
    matrix: :math:`\hat u_{j|i} = W_{ij} u_i`. The votes come out of one
    batched product per child (:meth:`vote_table`) and are routed on the
    complete graph :func:`~dgl_capsules.capsule_graph` by
    :func:`~dgl_capsules.routing.dynamic.dynamic_routing_table` (the result of
    :func:`~dgl_capsules.routing.dynamic_routing` for the votes in the graph's
    edge order, :meth:`votes`), the mini-batch in the feature dimensions.

    Parameters
    ----------
    in_caps, out_caps : int
        Number of child and parent capsules.
    in_dim, out_dim : int
        Their dimensions.
    n_iters : int
        Routing iterations.

    Shape
    -----
    - Input: ``(B, in_caps, in_dim)``, batch first as in PyTorch.
    - Output: ``(B, out_caps, out_dim)``; the class probability of parent
      ``j`` is the length of its vector.

    Examples
    --------
    >>> import torch
    >>> layer = DynamicCaps(in_caps=1152, out_caps=10, in_dim=8, out_dim=16)
    >>> v, r = layer(torch.randn(2, 1152, 8), return_routing=True)
    >>> v.shape, r.coupling.shape
    (torch.Size([2, 10, 16]), torch.Size([11520, 2]))
    """

    def __init__(self, in_caps, out_caps, in_dim, out_dim, n_iters=3):
        super().__init__()
        self.in_caps = check_positive_int("in_caps", in_caps)
        self.out_caps = check_positive_int("out_caps", out_caps)
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.n_iters = check_n_iters(n_iters)
        self.weight = nn.Parameter(torch.empty(in_caps, out_caps, in_dim, out_dim))
        self.reset_parameters()

    def reset_parameters(self):
        """Weights from :math:`\\mathcal{N}(0, 0.05^2)`: votes start small, so the squash is not saturated."""
        nn.init.normal_(self.weight, std=0.05)

    def graph(self, device=None):
        """The layer's complete ``in_caps -> out_caps`` capsule graph (a view of the cached one).

        Parameters
        ----------
        device : torch.device or str, optional
            Where the graph lives (default: the CPU).

        Returns
        -------
        dgl.DGLGraph
            :func:`~dgl_capsules.capsule_graph` ``(in_caps, out_caps)``; the
            couplings returned by :meth:`forward` follow its edge order.
        """
        return capsule_graph(self.in_caps, self.out_caps, device=device)

    def votes(self, g, x):
        """Votes :math:`W_{ij} u_i` in the edge order of ``g``: ``(|E|, B, out_dim)``."""
        src, dst = g.edges()
        u = x.transpose(0, 1)[src]  # (E, B, in_dim)
        w = self.weight[src, dst]  # (E, in_dim, out_dim)
        return torch.bmm(u, w)  # (E, B, out_dim)

    def vote_table(self, x):
        """Votes :math:`W_{ij} u_i` of every sample, parent and child: ``(B, out_caps, in_caps, out_dim)``.

        One batched product per child (``(B, in_dim) @ (in_dim, out_caps * out_dim)``); the result is a
        permuted view of its ``(in_caps, B, out_caps, out_dim)`` output, the layout
        :func:`~dgl_capsules.routing.dynamic.dynamic_routing_table` takes.
        """
        n_in, n_out, d_in, d_out = self.weight.shape
        w = self.weight.transpose(1, 2).reshape(n_in, d_in, n_out * d_out)  # (I, in_dim, J * D)
        table = torch.bmm(x.transpose(0, 1), w)  # (I, B, J * D)
        return table.view(n_in, x.shape[0], n_out, d_out).permute(1, 2, 0, 3)  # (B, J, I, D)

    def forward(self, x, return_routing=False, return_trace=False):
        """Route a batch of child capsules.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, in_caps, in_dim)`` child capsules, in the layer's dtype
            (float32 or float64). ``B = 0`` gives an empty output.
        return_routing : bool
            Also return the :class:`~dgl_capsules.routing.RoutingResult`
            (couplings in the edge order of :meth:`graph`, batch in dim 1).
        return_trace : bool
            Record the coupling of every iteration in that result; implies
            ``return_routing=True``.

        Returns
        -------
        torch.Tensor or (torch.Tensor, RoutingResult)
            Parent capsules ``(B, out_caps, out_dim)`` and, with
            ``return_routing`` or ``return_trace``, the routing result.

        Raises
        ------
        TypeError
            If ``x`` is not a float32 / float64 tensor of the layer's dtype
            (or a graph is passed: the layer builds its own).
        ValueError
            If ``x`` does not have shape ``(B, in_caps, in_dim)``.
        """
        layout = f"(B, in_caps, in_dim) = (B, {self.in_caps}, {self.in_dim})"
        if isinstance(x, dgl.DGLGraph):
            raise TypeError(
                f"x must be a torch.Tensor of shape {layout}; got a DGLGraph: DynamicCaps builds its own "
                "graph (see .graph()), call it as layer(x)"
            )
        x = check_float_tensor("x", x, layout)
        if x.dtype != self.weight.dtype:
            raise TypeError(
                f"x must have the layer's dtype {self.weight.dtype} (convert x, or the layer with "
                f".to({x.dtype})); got {x.dtype}"
            )
        if x.dim() != 3 or x.shape[1:] != (self.in_caps, self.in_dim):
            raise ValueError(f"x must have shape {layout}; got {tuple(x.shape)}")
        g = self.graph(device=x.device)
        r = dynamic_routing_table(g, self.vote_table(x), self.n_iters, return_trace=return_trace)
        v = r.poses.transpose(0, 1)  # (B, out_caps, out_dim)
        return (v, r) if return_routing or return_trace else v

    def extra_repr(self):
        return (
            f"in_caps={self.in_caps}, out_caps={self.out_caps}, in_dim={self.in_dim}, "
            f"out_dim={self.out_dim}, n_iters={self.n_iters}"
        )
