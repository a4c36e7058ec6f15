"""Fully connected capsule layer routed by agreement."""
from .._checks import check_n_iters
from .routed import RoutedCaps

__all__ = ["DynamicCaps"]


class DynamicCaps(RoutedCaps):
    r"""Fully connected capsule layer with dynamic routing (Sabour et al. 2017, "DigitCaps").

    Every child ``i`` votes for every parent ``j`` with its own transformation
    matrix: :math:`\hat u_{j|i} = W_{ij} u_i`. The votes are computed straight
    into the edge layout of :func:`~dgl_capsules.capsule_graph` and routed by
    :func:`~dgl_capsules.routing.dynamic_routing`, the mini-batch in the
    feature dimensions. It is :class:`~dgl_capsules.nn.RoutedCaps` with
    ``routing="dynamic"``.

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

    def forward(self, x, return_routing=False, return_trace=False):
        """Route a batch of child capsules ``x`` ``(B, in_caps, in_dim)``; see :meth:`RoutedCaps.forward`.

        Returns
        -------
        torch.Tensor or (torch.Tensor, RoutingResult)
            Parent capsules ``(B, out_caps, out_dim)`` and, with
            ``return_routing`` or ``return_trace``, the routing result.
        """
        return super().forward(x, None, return_routing=return_routing, return_trace=return_trace)

    def extra_repr(self):
        return (
            f"in_caps={self.in_caps}, out_caps={self.out_caps}, in_dim={self.in_dim}, "
            f"out_dim={self.out_dim}, n_iters={self.n_iters}"
        )
