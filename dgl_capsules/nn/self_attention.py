"""Fully connected capsule layer routed by self-attention (Efficient-CapsNet's "FCCaps")."""
import math

import dgl
import torch
from torch import nn

from .._checks import check_eps, check_float_tensor, check_positive_int
from ..graph import capsule_graph
from ..routing import self_attention_routing

__all__ = ["SelfAttentionCaps", "keras_truncated_normal_"]

# The standard deviation of a unit normal truncated to [-2, 2] (Keras divides by it so that the
# truncated draws have the asked-for standard deviation).
_TRUNCATED_STD = 0.87962566103423978


def keras_truncated_normal_(tensor, fan, scale=1.0):
    """Fill ``tensor`` as Keras's variance-scaling initialisers with a truncated normal do, in place.

    Draws from a normal with standard deviation ``sqrt(scale / fan) / 0.8796``
    truncated at two of those deviations, so that the draws have standard
    deviation ``sqrt(scale / fan)``: ``he_normal`` is ``scale=2, fan=fan_in``,
    ``glorot_normal`` is ``scale=2, fan=fan_in + fan_out``.

    Examples
    --------
    >>> w = keras_truncated_normal_(torch.empty(20000), fan=50, scale=2.0)
    >>> round(w.std().item(), 2), bool(w.abs().max() <= 2 * 0.2 / 0.8796)
    (0.2, True)
    """
    std = math.sqrt(scale / fan) / _TRUNCATED_STD
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std)


class SelfAttentionCaps(nn.Module):
    r"""Fully connected capsule layer with self-attention routing (Mazzia et al. 2021, "FCCaps").

    Every child ``i`` votes for every parent ``j`` with its own matrix,
    :math:`\hat u_{j|i} = u_i W_{ji}`, and the votes are routed in one pass by
    :func:`~dgl_capsules.routing.self_attention_routing` on the complete
    capsule graph, with a learned bias :math:`b_{ji}` added to the couplings
    after the softmax; the parents are squashed with
    :func:`~dgl_capsules.functional.efficient_squash`. The mini-batch lives
    in the feature dimensions of one shared graph.

    Parameters
    ----------
    in_caps, out_caps : int
        Number of child and parent capsules (16 and 10 in the paper's MNIST network).
    in_dim, out_dim : int
        Their dimensions (8 and 16).
    uniform : bool
        Route with the uniform couplings :math:`1 / \text{out\_caps}` instead
        of self-attention (the routing switched off; the parameters, the bias
        among them, are the same).
    eps : float
        :math:`\epsilon` of the squash (1e-20, as in the published code).

    Attributes
    ----------
    weight : torch.nn.Parameter
        :math:`W`, ``(out_caps, in_caps, in_dim, out_dim)`` (the layout of the published ``W``).
    bias : torch.nn.Parameter
        :math:`b`, ``(out_caps, in_caps)``, added to the couplings after the softmax.

    Shape
    -----
    - Input: ``(B, in_caps, in_dim)``, batch first as in PyTorch.
    - Output: ``(B, out_caps, out_dim)``; the length of a parent is its probability.

    Examples
    --------
    >>> import torch
    >>> layer = SelfAttentionCaps(in_caps=16, out_caps=10, in_dim=8, out_dim=16)
    >>> layer
    SelfAttentionCaps(in_caps=16, out_caps=10, in_dim=8, out_dim=16, uniform=False)
    >>> v, r = layer(torch.randn(2, 16, 8), return_routing=True)
    >>> v.shape, r.coupling.shape, sum(p.numel() for p in layer.parameters())
    (torch.Size([2, 10, 16]), torch.Size([160, 2]), 20640)
    """

    #: The registered routing family the layer routes with.
    routing = "self-attention"

    def __init__(self, in_caps, out_caps, in_dim, out_dim, uniform=False, eps=1e-20):
        super().__init__()
        self.in_caps = check_positive_int("in_caps", in_caps)
        self.out_caps = check_positive_int("out_caps", out_caps)
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        if not isinstance(uniform, bool):
            raise TypeError(f"uniform must be True or False; got {uniform!r}")
        self.uniform = uniform
        self.eps = check_eps(eps)
        self.weight = nn.Parameter(torch.empty(out_caps, in_caps, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(out_caps, in_caps))
        self.reset_parameters()

    def reset_parameters(self):
        """The published initialisation: Keras ``he_normal`` for ``weight``, zeros for ``bias``.

        NOTE: Keras takes the fans of a 4-d weight ``(J, I, D_in, D_out)`` as
        ``fan_in = J I D_in``, so the standard deviation is
        :math:`\\sqrt{2 / (J I D_{in})}` (0.0395 for 10 x 16 x 8), from a normal
        truncated at two deviations.
        """
        keras_truncated_normal_(self.weight, fan=self.out_caps * self.in_caps * self.in_dim, scale=2.0)
        nn.init.zeros_(self.bias)

    def graph(self, device=None):
        """The layer's complete ``in_caps -> out_caps`` capsule graph (cached); couplings follow its edge order.

        Parameters
        ----------
        device : torch.device or str, optional
            Where the graph lives (default: the CPU).
        """
        return capsule_graph(self.in_caps, self.out_caps, device=device)

    def _pairs(self, g):
        """``(|E|,)`` int64: the row of each edge of ``g`` in the flattened ``(out_caps, in_caps)`` pairs."""
        src, dst = g.edges()
        return dst.long() * self.in_caps + src.long()

    def votes(self, g, x):
        """Votes :math:`u_i W_{ji}` in the edge order of ``g`` (a complete graph): ``(|E|, B, out_dim)``."""
        # NOTE: every (parent, child) pair votes, so all votes are computed at once and put in edge order.
        every = torch.einsum("bik,jikd->jibd", x, self.weight)  # (out_caps, in_caps, B, out_dim)
        flat = every.reshape(self.out_caps * self.in_caps, x.shape[0], self.out_dim)
        return flat.index_select(0, self._pairs(g))  # (E, B, out_dim)

    def forward(self, x, return_routing=False, return_trace=False):
        """Route a batch of child capsules.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, in_caps, in_dim)`` child capsules in the layer's dtype
            (float32 or float64). ``B = 0`` gives an empty output.
        return_routing : bool
            Also return the :class:`~dgl_capsules.routing.RoutingResult`
            (couplings in the edge order of :meth:`graph`, batch in dim 1).
        return_trace : bool
            Record the coupling of the pass in that result's ``trace``;
            implies ``return_routing=True``.

        Returns
        -------
        torch.Tensor or (torch.Tensor, RoutingResult)
            Parent capsules ``(B, out_caps, out_dim)`` and, on request, the routing.

        Raises
        ------
        TypeError
            If ``x`` is not a float32 / float64 tensor of the layer's dtype (or
            is a graph: the layer builds its own).
        ValueError
            If ``x`` does not have shape ``(B, in_caps, in_dim)``.
        """
        layout = f"(B, in_caps, in_dim) = (B, {self.in_caps}, {self.in_dim})"
        if isinstance(x, dgl.DGLGraph):
            raise TypeError(f"x must be a torch.Tensor of shape {layout}; got a DGLGraph: SelfAttentionCaps builds "
                            "its own graph (see .graph()), call it as layer(x)")
        x = check_float_tensor("x", x, layout)
        if x.dtype != self.weight.dtype:
            raise TypeError(f"x must have the layer's dtype {self.weight.dtype} (convert x, or the layer with "
                            f".to({x.dtype})); got {x.dtype}")
        if x.dim() != 3 or x.shape[1:] != (self.in_caps, self.in_dim):
            raise ValueError(f"x must have shape {layout}; got {tuple(x.shape)}")
        g = self.graph(device=x.device)
        bias = self.bias.reshape(-1).index_select(0, self._pairs(g))  # (E,)
        r = self_attention_routing(g, self.votes(g, x), bias, uniform=self.uniform, eps=self.eps,
                                   return_trace=return_trace)
        v = r.poses.transpose(0, 1)  # (B, out_caps, out_dim)
        return (v, r) if return_routing or return_trace else v

    def extra_repr(self):
        return (f"in_caps={self.in_caps}, out_caps={self.out_caps}, in_dim={self.in_dim}, out_dim={self.out_dim}, "
                f"uniform={self.uniform}")
