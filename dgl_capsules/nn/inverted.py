"""Capsule layers routed by inverted dot-product attention (Tsai et al. 2020).

Both layers take batch-first poses with the pose entries last: the fully
connected :class:`InvertedCaps` ``(B, n_in, d_in)``, the convolutional
:class:`InvertedConvCaps` ``(B, H, W, in_types, d_in)``. A 4x4 pose matrix is
given flattened (``d = 16``, entry ``(r, c)`` at ``4 r + c``).

Their weights and LayerNorm carry the names and layouts of the published
``CapsuleFC`` / ``CapsuleCONV`` (``w``, ``nonlinear_act``), so those layers'
state_dicts load with ``strict=True``.
"""
import math

import torch
from torch import nn

from .._checks import check_eps, check_float_tensor, check_n_iters, check_positive_int
from ..graph import _bipartite, _cached, _device, capsule_graph, conv_capsule_graph, conv_output_size
from ..routing import inverted_routing

__all__ = ["InvertedCaps", "InvertedConvCaps", "window_capsule_graph", "POSES", "NORMALISATIONS"]

#: ``"matrix"``: a pose is a square matrix, the vote is ``P_i W_ij``; ``"vector"``: the vote is ``p_i W_ij``.
POSES = ("matrix", "vector")

#: How :class:`InvertedConvCaps` normalises a child's couplings: ``"window"`` separately in every kernel
#: window that holds it (the paper's layer); ``"overlap"`` over all its parents in all those windows.
NORMALISATIONS = ("window", "overlap")


def window_capsule_graph(in_hw, kernel, stride, in_types, out_types, device=None):
    """The convolutional capsule graph with one child node per (kernel window, child): the paper's normalisation.

    The edges, their order and their features are those of
    :func:`~dgl_capsules.conv_capsule_graph`; only the source of an edge
    changes, from child ``(y, x, a)`` to its copy in the parent's window,
    node ``((y' W_o + x') k^2 + k_y k + k_x) A + a``. A softmax over the parents
    of a node is then a softmax over the ``out_types`` parents at one output
    position, as the paper's convolutional capsule layer computes it.

    Examples
    --------
    >>> g = window_capsule_graph((6, 6), kernel=3, stride=2, in_types=4, out_types=5)
    >>> g.num_nodes("child"), g.num_nodes("parent"), g.num_edges(), int(g.out_degrees().max())
    (144, 20, 720, 5)
    """
    conv = conv_capsule_graph(in_hw, kernel, stride, in_types, out_types)  # checks the arguments
    h, w = int(in_hw[0]), int(in_hw[1])
    key = ("inverted-window", h, w, kernel, stride, in_types, out_types, _device(device))

    def build():
        ho, wo = conv_output_size((h, w), kernel, stride)
        _, dst = conv.edges()
        src = ((dst // out_types) * kernel * kernel + conv.edata["offset"]) * in_types + conv.edata["child_type"]
        g = _bipartite(src, dst, ho * wo * kernel * kernel * in_types, ho * wo * out_types)
        for k, v in conv.edata.items():
            g.edata[k] = v
        return g

    return _cached(key, build)


def _check_pose(pose, d_in, d_out):
    if pose not in POSES:
        raise ValueError(f"pose must be one of {POSES}; got {pose!r}")
    side = math.isqrt(d_in)
    if pose == "matrix" and (d_in != d_out or side * side != d_in):
        raise ValueError(f"pose='matrix' needs d_in = d_out = a square (16 for 4x4 poses); got d_in = {d_in}, "
                         f"d_out = {d_out}")
    return side


class _InvertedLayer(nn.Module):
    """Shared parts: the transformation weights ``w``, the LayerNorm ``nonlinear_act`` and the routing."""

    #: The registered routing family the layer routes with.
    routing = "inverted-dot-product"

    def __init__(self, d_in, d_out, pose, n_iters, eps, weight_shape, fan):
        super().__init__()
        self.d_in = check_positive_int("d_in", d_in)
        self.d_out = check_positive_int("d_out", d_out)
        self.side = _check_pose(pose, self.d_in, self.d_out)
        self.pose = pose
        self.n_iters = check_n_iters(n_iters)
        self.eps = check_eps(eps)
        self._fan = fan
        self.w = nn.Parameter(torch.empty(weight_shape))
        # NOTE: the published layers apply the LayerNorm only to poses of size > 1, but always have one.
        self.nonlinear_act = nn.LayerNorm(self.d_out, eps=self.eps)
        self.reset_parameters()

    def reset_parameters(self):
        r"""The published initialisation: :math:`w \sim \mathcal{N}(0, c^2)` with
        :math:`c^2 = n_{out} / \mathrm{fan}`, the fan being (kernel area x) input capsules x
        (:math:`\sqrt{d}` for matrix poses, :math:`d_{in}` for vector poses); the LayerNorm at 1 and 0."""
        nn.init.normal_(self.w, std=math.sqrt(self._fan[0] / self._fan[1]))
        self.nonlinear_act.reset_parameters()

    def _check_poses(self, poses, layout, shape):
        poses = check_float_tensor("poses", poses, layout)
        ok = poses.dim() == len(shape) and all(isinstance(s, str) or s == n for s, n in zip(shape, poses.shape))
        if not ok:
            want = "(" + ", ".join(str(s) for s in shape) + ")"
            raise ValueError(f"poses must have shape {layout} = {want}; got {tuple(poses.shape)}")
        return poses

    def _route(self, g, votes, return_trace):
        ln = self.nonlinear_act
        normalize = self.d_out > 1
        return inverted_routing(g, votes, ln.weight.to(votes.dtype) if normalize else None,
                                ln.bias.to(votes.dtype) if normalize else None, n_iters=self.n_iters,
                                normalize=normalize, eps=self.eps, return_trace=return_trace)

    def _weight(self, like):
        return self.w if self.w.dtype == like.dtype else self.w.to(like.dtype)


class InvertedCaps(_InvertedLayer):
    r"""Fully connected capsules routed by inverted dot-product attention (Tsai et al. 2020).

    Every child :math:`i` votes for every parent :math:`j` with
    :math:`v_{ij} = P_i W_{ij}` (matrix poses, ``pose="matrix"``) or
    :math:`v_{ij} = p_i W_{ij}` (vector poses), and the votes are routed by
    :func:`~dgl_capsules.routing.inverted_routing` on a complete
    :func:`~dgl_capsules.capsule_graph` with this layer's LayerNorm (skipped
    for ``d_out = 1``, as in the published code). Each layer routes on its own
    (the paper's *sequential* routing); its *concurrent* routing, which
    feeds every layer the previous iteration's poses of the next one, is a
    property of a whole network and not offered here. Dropout is not applied.

    Parameters
    ----------
    n_in, n_out : int
        Child and parent capsules (800 and 10 in the paper's CIFAR-10 head).
    d_in, d_out : int
        Pose sizes (16 and 16: 4x4 matrices).
    pose : {"matrix", "vector"}
        Matrix poses need ``d_in = d_out`` a square.
    n_iters : int
        Routing iterations (2 in the paper).
    eps : float
        The LayerNorm's epsilon.

    Attributes
    ----------
    w : torch.nn.Parameter
        ``(n_in, s, s, n_out)`` for ``s x s`` matrix poses, ``(n_in, d_in, n_out, d_out)`` for vectors.
    nonlinear_act : torch.nn.LayerNorm
        Over the ``d_out`` entries of a parent pose.

    Shape
    -----
    - Input: ``(B, n_in, d_in)``. Output: ``(B, n_out, d_out)``.

    ``forward(..., return_routing=True)`` also returns the
    :class:`~dgl_capsules.routing.RoutingResult` on :meth:`graph`;
    ``return_trace=True`` implies it. The poses decide the dtype.

    Examples
    --------
    >>> import torch
    >>> layer = InvertedCaps(n_in=800, n_out=10)
    >>> layer
    InvertedCaps(
      n_in=800, n_out=10, d_in=16, d_out=16, pose='matrix', n_iters=2
      (nonlinear_act): LayerNorm((16,), eps=1e-05, elementwise_affine=True)
    )
    >>> out, r = layer(torch.randn(4, 800, 16), return_trace=True)
    >>> out.shape, r.coupling.shape, len(r.trace)
    (torch.Size([4, 10, 16]), torch.Size([8000, 4]), 2)
    """

    def __init__(self, n_in, n_out, d_in=16, d_out=16, pose="matrix", n_iters=2, eps=1e-5):
        self.n_in = check_positive_int("n_in", n_in)
        self.n_out = check_positive_int("n_out", n_out)
        side = _check_pose(pose, check_positive_int("d_in", d_in), check_positive_int("d_out", d_out))
        shape = (n_in, side, side, n_out) if pose == "matrix" else (n_in, d_in, n_out, d_out)
        fan = (n_out, (side if pose == "matrix" else d_in) * n_in)
        super().__init__(d_in, d_out, pose, n_iters, eps, shape, fan)

    def graph(self, device=None):
        """The complete ``n_in -> n_out`` capsule graph the layer routes on."""
        return capsule_graph(self.n_in, self.n_out, device=device)

    def votes(self, g, poses):
        """Votes in the edge order of ``g``: ``(|E|, B, d_out)``."""
        b, w = poses.shape[0], self._weight(poses)
        if self.pose == "matrix":
            s = self.side
            table = torch.einsum("biax,ixdj->ijbad", poses.view(b, self.n_in, s, s), w)  # (I, J, B, s, s)
        else:
            table = torch.einsum("bia,iajd->ijbd", poses, w)  # (I, J, B, d_out)
        table = table.reshape(self.n_in * self.n_out, b, self.d_out)
        src, dst = g.edges()
        return table.index_select(0, src.long() * self.n_out + dst.long())

    def forward(self, poses, return_routing=False, return_trace=False):
        """Route child poses ``(B, n_in, d_in)`` to parent poses ``(B, n_out, d_out)``."""
        poses = self._check_poses(poses, "(B, n_in, d_in)", ("B", self.n_in, self.d_in))
        g = self.graph(device=poses.device)
        r = self._route(g, self.votes(g, poses), return_trace)
        out = r.poses.transpose(0, 1)  # (B, n_out, d_out)
        return (out, r) if (return_routing or return_trace) else out

    def extra_repr(self):
        return (f"n_in={self.n_in}, n_out={self.n_out}, d_in={self.d_in}, d_out={self.d_out}, pose={self.pose!r}, "
                f"n_iters={self.n_iters}")


class InvertedConvCaps(_InvertedLayer):
    r"""Convolutional capsules routed by inverted dot-product attention (Tsai et al. 2020).

    Child type ``a`` at ``(y, x)`` votes for parent type ``c`` at every output
    position whose ``kernel x kernel`` window holds it, with one transform per
    (kernel offset, child type, parent type), shared over positions:
    :math:`v = P_i W_{(k_y, k_x), a, c}` (matrix poses) or :math:`p_i W` (vectors).
    The votes are routed by :func:`~dgl_capsules.routing.inverted_routing`
    with one of two normalisations of a child's couplings:

    - ``normalise="window"`` (the paper's layer): separately in every kernel
      window that holds the child, over the ``out_types`` parents at that
      position; routed on :func:`window_capsule_graph`.
    - ``normalise="overlap"``: once over all the child's parents, in all the
      windows that hold it, so overlapping windows share the child; routed
      on :func:`~dgl_capsules.conv_capsule_graph` (as EM routing's ``ConvCaps``).

    Both are the same with ``stride >= kernel`` (windows do not overlap).

    Parameters
    ----------
    in_types, out_types : int
        Capsule types per child and per parent position (32 and 32 in the paper).
    kernel, stride : int
        Window and step (3 and 2, then 3 and 1 in the paper); no padding.
    d_in, d_out, pose, n_iters, eps
        As in :class:`InvertedCaps`.
    normalise : {"window", "overlap"}
        See above.

    Attributes
    ----------
    w : torch.nn.Parameter
        ``(kernel, kernel, in_types, s, s, out_types)`` for matrix poses,
        ``(kernel, kernel, in_types, d_in, out_types, d_out)`` for vectors.
    nonlinear_act : torch.nn.LayerNorm
        Over the ``d_out`` entries of a parent pose.

    Shape
    -----
    - Input: ``(B, H, W, in_types, d_in)``. Output: ``(B, Ho, Wo, out_types, d_out)``,
      ``Ho = (H - kernel) // stride + 1``.

    Examples
    --------
    >>> import torch
    >>> layer = InvertedConvCaps(in_types=8, out_types=4, kernel=3, stride=2)
    >>> layer.extra_repr()
    "in_types=8, out_types=4, kernel=3, stride=2, d_in=16, d_out=16, pose='matrix', n_iters=2, normalise='window'"
    >>> layer(torch.randn(2, 9, 9, 8, 16)).shape
    torch.Size([2, 4, 4, 4, 16])
    """

    def __init__(self, in_types, out_types, kernel, stride, d_in=16, d_out=16, pose="matrix", n_iters=2,
                 normalise="window", eps=1e-5):
        self.in_types = check_positive_int("in_types", in_types)
        self.out_types = check_positive_int("out_types", out_types)
        self.kernel = check_positive_int("kernel", kernel)
        self.stride = check_positive_int("stride", stride)
        if normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}; got {normalise!r}")
        self.normalise = normalise
        side = _check_pose(pose, check_positive_int("d_in", d_in), check_positive_int("d_out", d_out))
        k, a, c = self.kernel, self.in_types, self.out_types
        shape = (k, k, a, side, side, c) if pose == "matrix" else (k, k, a, d_in, c, d_out)
        fan = (c, (side if pose == "matrix" else d_in) * a * k * k)
        super().__init__(d_in, d_out, pose, n_iters, eps, shape, fan)

    def graph(self, in_hw, device=None):
        """The graph the layer routes on for a child grid ``in_hw``: per window or with exact overlaps."""
        make = window_capsule_graph if self.normalise == "window" else conv_capsule_graph
        return make(tuple(in_hw), self.kernel, self.stride, self.in_types, self.out_types, device=device)

    def votes(self, g, poses):
        """Votes in the edge order of ``g`` (either graph of :meth:`graph`): ``(|E|, B, d_out)``."""
        b = poses.shape[0]
        k, s, n_a = self.kernel, self.stride, self.in_types
        patches = poses.unfold(1, k, s).unfold(2, k, s)  # (B, Ho, Wo, A, d_in, ky, kx)
        w = self._weight(poses)
        if self.pose == "matrix":
            side = self.side
            patches = patches.unflatten(4, (side, side))  # (B, Ho, Wo, A, s, s, ky, kx)
            table = torch.einsum("bhwnaxkl,klnxdc->hwcklnbad", patches, w).flatten(-2)
        else:
            table = torch.einsum("bhwnakl,klnacd->hwcklnbd", patches, w)
        table = table.flatten(0, 5)  # (E, B, d_out) in the order (y', x', c, ky, kx, a)
        _, dst = g.edges()
        index = (dst.long() * (k * k) + g.edata["offset"].long()) * n_a + g.edata["child_type"].long()
        return table.index_select(0, index)

    def forward(self, poses, return_routing=False, return_trace=False):
        """Route child poses ``(B, H, W, in_types, d_in)`` to ``(B, Ho, Wo, out_types, d_out)``."""
        layout = "(B, H, W, in_types, d_in)"
        poses = self._check_poses(poses, layout, ("B", "H", "W", self.in_types, self.d_in))
        b, h, w = poses.shape[:3]
        if self.kernel > min(h, w):
            raise ValueError(f"poses must have a grid (H, W) of at least kernel = {self.kernel}; got {(h, w)}")
        ho, wo = conv_output_size((h, w), self.kernel, self.stride)
        g = self.graph((h, w), device=poses.device)
        r = self._route(g, self.votes(g, poses), return_trace)
        out = r.poses.transpose(0, 1).reshape(b, ho, wo, self.out_types, self.d_out)
        return (out, r) if (return_routing or return_trace) else out

    def extra_repr(self):
        return (f"in_types={self.in_types}, out_types={self.out_types}, kernel={self.kernel}, stride={self.stride}, "
                f"d_in={self.d_in}, d_out={self.d_out}, pose={self.pose!r}, n_iters={self.n_iters}, "
                f"normalise={self.normalise!r}")
