"""A fully connected capsule layer routed by any registered routing family."""
import inspect

import dgl
import torch
from torch import nn

from .._checks import check_float_tensor, check_positive_int
from ..graph import capsule_graph
from ..routing.registry import get_routing, takes_keyword

__all__ = ["RoutedCaps"]

_LAYER_KINDS = ("edge", "child", "edge_value", "parent_value")


class RoutedCaps(nn.Module):
    r"""Fully connected capsule layer routed by any registered routing family.

    Every child ``i`` votes for every parent ``j`` with its own transformation
    matrix, :math:`\hat u_{j|i} = W_{ij} u_i` (Sabour et al. 2017), computed
    straight into the edge layout of :func:`~dgl_capsules.capsule_graph`
    ``(in_caps, out_caps)``; the votes are routed by the function registered
    as ``routing`` (:func:`~dgl_capsules.routing.get_routing`). What else the
    family takes comes from its registration (its ``inputs``):

    - ``"child"``: the child activations ``a`` ``(B, in_caps)``, the second
      input of :meth:`forward` (probabilities or logits, as the family reads
      them);
    - ``"edge_value"`` / ``"parent_value"``: one learned value per edge
      ``(in_caps, out_caps)`` or per parent ``(out_caps,)``, zero at first
      and named as the routing function's parameter (Heinsen's
      ``beta_use``, EM's ``beta_a``).

    A family with matrix votes (``vote_dims=2``) gets ``1 x out_dim`` votes.
    A new family registered with :func:`~dgl_capsules.routing.register_routing`
    works in this layer with no layer code of its own.

    Parameters
    ----------
    in_caps, out_caps : int
        Number of child and parent capsules.
    in_dim, out_dim : int
        Their dimensions.
    routing : str
        A name of :func:`~dgl_capsules.routing.list_routings`.
    **routing_kwargs
        Keyword arguments of the routing function, over its registered
        defaults (``n_iters=2``).

    Shape
    -----
    - Input: ``x`` ``(B, in_caps, in_dim)`` and, for families that take child
      activations, ``a`` ``(B, in_caps)``.
    - Output: parent poses ``(B, out_caps, out_dim)``, and their activations
      ``(B, out_caps)`` for families whose result has activations.

    Raises
    ------
    ValueError
        For an unknown ``routing``, a family whose inputs the layer cannot
        make (``"const"``), or a keyword its function does not take.

    Examples
    --------
    >>> import torch
    >>> layer = RoutedCaps(in_caps=32, out_caps=10, in_dim=8, out_dim=16, routing="dynamic", n_iters=2)
    >>> layer
    RoutedCaps(in_caps=32, out_caps=10, in_dim=8, out_dim=16, routing='dynamic', n_iters=2)
    >>> v, r = layer(torch.randn(4, 32, 8), return_routing=True)
    >>> v.shape, r.coupling.shape
    (torch.Size([4, 10, 16]), torch.Size([320, 4]))
    >>> em = RoutedCaps(32, 10, 8, 16, routing="em")
    >>> poses, acts = em(torch.randn(4, 32, 8), torch.rand(4, 32))
    >>> poses.shape, acts.shape, [n for n, _ in em.named_parameters()]
    (torch.Size([4, 10, 16]), torch.Size([4, 10]), ['weight', 'beta_u', 'beta_a'])
    """

    def __init__(self, in_caps, out_caps, in_dim, out_dim, routing="dynamic", **routing_kwargs):
        super().__init__()
        self.in_caps = check_positive_int("in_caps", in_caps)
        self.out_caps = check_positive_int("out_caps", out_caps)
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.spec = spec = get_routing(routing)
        self.routing = routing
        if any(k not in _LAYER_KINDS for k in spec.inputs):
            raise ValueError(f"routing: {type(self).__name__} makes the inputs {_LAYER_KINDS} of a routing; "
                             f"{routing!r} takes {spec.inputs}")
        unknown = [k for k in routing_kwargs if k == "return_trace" or not takes_keyword(spec.fn, k)]
        if unknown:
            raise ValueError(f"routing_kwargs: the {routing!r} routing function takes no keyword {', '.join(unknown)}")
        self.routing_kwargs = {**spec.defaults, **routing_kwargs}
        self.weight = nn.Parameter(torch.empty(in_caps, out_caps, in_dim, out_dim))
        names = list(inspect.signature(spec.fn).parameters)[1:1 + len(spec.inputs)]  # after g
        self.value_names = []  # the learned per-edge / per-parent inputs, in the routing's order
        for name, kind in zip(names, spec.inputs):
            if kind in ("edge_value", "parent_value"):
                shape = (in_caps, out_caps) if kind == "edge_value" else (out_caps,)
                self.register_parameter(name, nn.Parameter(torch.empty(shape)))
                self.value_names.append(name)
        self.reset_parameters()

    def reset_parameters(self):
        r"""Weights from :math:`\mathcal{N}(0, 0.05^2)` (votes start small, so a squash is not saturated);
        the learned per-edge and per-parent values are zero."""
        nn.init.normal_(self.weight, std=0.05)
        for name in self.value_names:
            nn.init.zeros_(getattr(self, name))

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

    def _check(self, x, a):
        layout = f"(B, in_caps, in_dim) = (B, {self.in_caps}, {self.in_dim})"
        if isinstance(x, dgl.DGLGraph):
            raise TypeError(
                f"x must be a torch.Tensor of shape {layout}; got a DGLGraph: {type(self).__name__} builds its own "
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
        if "child" not in self.spec.inputs:
            if a is not None:
                raise ValueError(f"a: the {self.routing!r} routing takes no child activations; got {type(a).__name__}")
            return x, None
        a = check_float_tensor("a", a, f"(B, in_caps) = ({x.shape[0]}, {self.in_caps})", dtype=x.dtype)
        if tuple(a.shape) != (x.shape[0], self.in_caps):
            raise ValueError(f"a must have shape (B, in_caps) = ({x.shape[0]}, {self.in_caps}); got {tuple(a.shape)}")
        return x, a

    def forward(self, x, a=None, return_routing=False, return_trace=False):
        """Route a batch of child capsules.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, in_caps, in_dim)`` child capsules, in the layer's dtype
            (float32 or float64). ``B = 0`` gives empty outputs.
        a : torch.Tensor, optional
            ``(B, in_caps)`` child activations, for (and only for) families
            that take them.
        return_routing : bool
            Also return the :class:`~dgl_capsules.routing.RoutingResult`
            (couplings in the edge order of :meth:`graph`, batch in dim 1).
        return_trace : bool
            Record the coupling of every iteration in that result; implies
            ``return_routing=True``.

        Returns
        -------
        torch.Tensor or tuple
            Parent poses ``(B, out_caps, out_dim)``; ``(poses, activations)``
            for families with activations; the routing result appended with
            ``return_routing`` or ``return_trace``.

        Raises
        ------
        TypeError
            If ``x`` is not a float32 / float64 tensor of the layer's dtype (or
            a graph is passed: the layer builds its own), or ``a`` is not a
            floating-point tensor.
        ValueError
            If ``x`` or ``a`` has the wrong shape, or ``a`` is given to a family
            that takes no child activations.
        """
        x, a = self._check(x, a)
        g = self.graph(device=x.device)
        src, dst = g.edges()
        votes = self.votes(g, x)  # (E, B, out_dim)
        if self.spec.vote_dims == 2:
            votes = votes.unsqueeze(-2)  # (E, B, 1, out_dim)
        values = iter(self.value_names)
        inputs = [votes]
        for kind in self.spec.inputs[1:]:
            if kind == "child":
                inputs.append(a.T)  # (N_src, B)
            else:
                value = getattr(self, next(values))
                inputs.append(value[src, dst] if kind == "edge_value" else value)  # (E,) or (N_dst,)
        r = self.spec.fn(g, *inputs, **self.routing_kwargs, return_trace=return_trace)
        poses = r.poses.transpose(0, 1)  # (B, out_caps, ..., out_dim)
        out = (poses.flatten(-2) if self.spec.vote_dims == 2 else poses,)
        if "activations" in self.spec.outputs:
            out += (r.activations.T,)  # (B, out_caps)
        if return_routing or return_trace:
            return out + (r,)
        return out[0] if len(out) == 1 else out

    def extra_repr(self):
        settings = "".join(f", {k}={v!r}" for k, v in self.routing_kwargs.items())
        return (f"in_caps={self.in_caps}, out_caps={self.out_caps}, in_dim={self.in_dim}, out_dim={self.out_dim}, "
                f"routing={self.routing!r}{settings}")
