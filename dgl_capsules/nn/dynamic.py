"""Fully connected capsule layer routed by agreement."""
import torch

from .._checks import check_n_iters
from ..routing.dynamic import dynamic_routing_table
from .routed import RoutedCaps

__all__ = ["DynamicCaps"]


class DynamicCaps(RoutedCaps):
    r"""Fully connected capsule layer with dynamic routing (Sabour et al. 2017, "DigitCaps").

    Every child ``i`` votes for every parent ``j`` with its own transformation
    matrix: :math:`\hat u_{j|i} = W_{ij} u_i`. It is
    :class:`~dgl_capsules.nn.RoutedCaps` with ``routing="dynamic"``; the votes
    come out of one batched product per child (:meth:`vote_table`) and are
    routed on the complete graph :func:`~dgl_capsules.capsule_graph` by
    :func:`~dgl_capsules.routing.dynamic.dynamic_routing_table` (the result of
    :func:`~dgl_capsules.routing.dynamic_routing` for the votes in the graph's
    edge order, :meth:`votes`), the mini-batch in the feature dimensions.

    Parameters
    ----------
    in_caps, out_caps, in_dim, out_dim : int
        The numbers of child and parent capsules and their dimensions.
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
        super().__init__(in_caps, out_caps, in_dim, out_dim, routing="dynamic", n_iters=check_n_iters(n_iters))

    @property
    def n_iters(self):
        """Routing iterations."""
        return self.routing_kwargs["n_iters"]

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
        """Route a batch of child capsules ``x`` ``(B, in_caps, in_dim)``; see :meth:`RoutedCaps.forward`.

        Returns
        -------
        torch.Tensor or (torch.Tensor, RoutingResult)
            Parent capsules ``(B, out_caps, out_dim)`` and, with
            ``return_routing`` or ``return_trace``, the routing result.
        """
        x, _ = self._check(x, None)
        g = self.graph(device=x.device)
        r = dynamic_routing_table(g, self.vote_table(x), self.n_iters, return_trace=return_trace)
        v = r.poses.transpose(0, 1)  # (B, out_caps, out_dim)
        return (v, r) if return_routing or return_trace else v

    def extra_repr(self):
        return (
            f"in_caps={self.in_caps}, out_caps={self.out_caps}, in_dim={self.in_dim}, "
            f"out_dim={self.out_dim}, n_iters={self.n_iters}"
        )
