"""Matrix capsule layers routed by EM (Hinton, Sabour & Frosst 2018).

All layers take and return batch-first tensors on a grid, capsule types last::

    poses        (B, H, W, types, 4, 4)
    activations  (B, H, W, types)

Flattening ``(H, W, types)`` row-major gives the child id ``(y * W + x) * A + a``
of :func:`~dgl_capsules.conv_capsule_graph`, so ``poses.reshape(B, -1, 16)``
is already in node order.
"""
import torch
from torch import nn

from .._checks import check_float_tensor, check_n_iters, check_positive_int
from ..graph import capsule_graph, conv_capsule_graph, conv_output_size
from ..routing import em_routing
from ..routing.em import check_inverse_temperatures

__all__ = ["PrimaryMatrixCaps", "ConvCaps", "ClassCaps"]


def _check_caps(poses, activations, n_types, who):
    """Validate a ``(B, H, W, types, 4, 4)`` / ``(B, H, W, types)`` pair.

    The poses decide the dtype (float32 or float64); the activations are cast to it and must lie
    in [0, 1]. Returns ``(poses, activations)``."""
    poses = check_float_tensor("poses", poses, "(B, H, W, in_types, 4, 4)")
    if poses.dim() != 6 or poses.shape[3:] != (n_types, 4, 4):
        raise ValueError(
            f"{who}: poses must have shape (B, H, W, in_types, 4, 4) = (B, H, W, {n_types}, 4, 4); "
            f"got {tuple(poses.shape)}"
        )
    activations = check_float_tensor("activations", activations, "(B, H, W, in_types)", dtype=poses.dtype)
    if tuple(activations.shape) != tuple(poses.shape[:4]):
        raise ValueError(
            f"{who}: activations must have shape (B, H, W, in_types) = {tuple(poses.shape[:4])}; "
            f"got {tuple(activations.shape)}"
        )
    if activations.numel() and not bool(((activations >= 0) & (activations <= 1)).all()):
        raise ValueError(
            f"{who}: activations must lie in [0, 1]; got values in "
            f"[{float(activations.min())}, {float(activations.max())}]"
        )
    return poses, activations


def _pick(table, index):
    """``table[index]``, skipping the copy when ``index`` is ``0, 1, ..., len(table) - 1``."""
    if len(index) == len(table) and bool((index == torch.arange(len(index), device=index.device)).all()):
        return table
    return table[index]


class PrimaryMatrixCaps(nn.Module):
    r"""Primary matrix capsules (Hinton et al. 2018, "PrimaryCaps").

    Two convolutions over the same input: one with ``16 * out_types``
    channels gives every capsule type a 4x4 pose matrix, one with
    ``out_types`` channels and a sigmoid gives its activation,

    .. math::

        M_{yx t} = \big(W^{M}_t * x\big)_{yx} \in \mathbb{R}^{4 \times 4}, \qquad
        a_{yx t} = \operatorname{sigmoid}\big((W^{a}_t * x)_{yx}\big).

    Pose channel ``16 t + 4 r + c`` is entry ``(r, c)`` of type ``t``.

    Parameters
    ----------
    in_channels : int
        Channels of the input feature map.
    out_types : int
        Capsule types per position (``B = 32`` in the paper).
    kernel_size, stride : int
        Of both convolutions (1 and 1 in the paper); no padding.

    Shape
    -----
    - Input: ``(B, in_channels, H, W)``
    - Output: poses ``(B, Ho, Wo, out_types, 4, 4)`` and activations
      ``(B, Ho, Wo, out_types)``.

    Examples
    --------
    >>> import torch
    >>> caps = PrimaryMatrixCaps(32, 8)
    >>> poses, acts = caps(torch.randn(2, 32, 12, 12))
    >>> poses.shape, acts.shape
    (torch.Size([2, 12, 12, 8, 4, 4]), torch.Size([2, 12, 12, 8]))
    """

    def __init__(self, in_channels, out_types, kernel_size=1, stride=1):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_types = check_positive_int("out_types", out_types)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.stride = check_positive_int("stride", stride)
        self.pose = nn.Conv2d(in_channels, out_types * 16, kernel_size, stride)
        self.activation = nn.Conv2d(in_channels, out_types, kernel_size, stride)
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's default ``Conv2d`` initialisation (Kaiming-uniform) for both convolutions."""
        self.pose.reset_parameters()
        self.activation.reset_parameters()

    def forward(self, x):
        layout = f"(B, in_channels={self.in_channels}, H, W)"
        x = check_float_tensor("x", x, layout)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape {layout}; got {tuple(x.shape)}")
        m = self.pose(x)  # (B, T * 16, Ho, Wo)
        b, _, ho, wo = m.shape
        poses = m.view(b, self.out_types, 4, 4, ho, wo).permute(0, 4, 5, 1, 2, 3)  # (B, Ho, Wo, T, 4, 4)
        acts = torch.sigmoid(self.activation(x)).permute(0, 2, 3, 1)  # (B, Ho, Wo, T)
        return poses.contiguous(), acts.contiguous()

    def extra_repr(self):
        return (
            f"in_channels={self.in_channels}, out_types={self.out_types}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}"
        )


class _EMLayer(nn.Module):
    """Shared parts: transformation matrices, one β_u and β_a per parent type, routing options."""

    #: The registered routing family the layer routes with.
    routing = "em"

    def __init__(self, n_weights, out_types, n_iters, inverse_temperatures, eps):
        super().__init__()
        self.n_iters = check_n_iters(n_iters)
        self.inverse_temperatures = None if inverse_temperatures is None else check_inverse_temperatures(
            inverse_temperatures, self.n_iters, torch.zeros((), dtype=torch.float64)).tolist()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(n_weights, 4, 4))
        self.beta_u = nn.Parameter(torch.empty(out_types))
        self.beta_a = nn.Parameter(torch.empty(out_types))
        self.reset_parameters()

    def reset_parameters(self):
        r"""Transformation matrices from :math:`\mathcal{N}(0, 0.5^2)`, so that a vote entry,
        a sum of 4 products, has about the scale of a pose entry; :math:`\beta_u = \beta_a = 0`."""
        nn.init.normal_(self.weight, std=0.5)
        nn.init.zeros_(self.beta_u)
        nn.init.zeros_(self.beta_a)

    def _weight(self, like):
        """The transformation matrices in the dtype of the poses (the library's dtype rule)."""
        return self.weight if self.weight.dtype == like.dtype else self.weight.to(like.dtype)

    def _route(self, g, votes, a_in, n_positions, return_trace):
        beta_u = self.beta_u.repeat(n_positions)  # (N_dst,): parent id = position * C + type
        beta_a = self.beta_a.repeat(n_positions)
        return em_routing(
            g, votes, a_in, beta_u, beta_a, n_iters=self.n_iters,
            inverse_temperatures=self.inverse_temperatures, eps=self.eps, return_trace=return_trace,
        )


class ConvCaps(_EMLayer):
    r"""Convolutional matrix capsules routed by EM over the exact convolutional graph.

    Child type ``a`` at position ``(y, x)`` votes for parent type ``c`` at
    every output position ``(y', x')`` whose ``kernel x kernel`` receptive
    field holds it, with one 4x4 matrix per (kernel offset, child type,
    parent type), shared across positions:

    .. math:: V_{ij} = M_i\, W_{(k_y, k_x), a, c}.

    The votes are computed straight into the edge layout of
    :func:`~dgl_capsules.conv_capsule_graph` (its ``w_index`` edge feature
    picks the matrix) and routed by :func:`~dgl_capsules.routing.em_routing`,
    so a child in overlapping receptive fields divides its vote among all of
    its parents, not patch by patch. :math:`\beta_u` and :math:`\beta_a` are
    learned, one per parent type.

    Parameters
    ----------
    in_types, out_types : int
        Capsule types per child and per parent position.
    kernel, stride : int
        Receptive field and step (3 and 2, then 3 and 1 in the paper); no padding.
    n_iters : int
        EM iterations.
    inverse_temperatures : sequence of float, optional
        :math:`\lambda_t` per iteration; see :func:`~dgl_capsules.routing.em_routing`.
    eps : float
        Added to the variances.

    Shape
    -----
    - Input: poses ``(B, H, W, in_types, 4, 4)``, activations ``(B, H, W, in_types)``.
    - Output: poses ``(B, Ho, Wo, out_types, 4, 4)``, activations
      ``(B, Ho, Wo, out_types)``, ``Ho = (H - kernel) // stride + 1``.

    The poses decide the dtype (float32 or float64); the activations and the
    layer's parameters are cast to it. A batch of ``B = 0`` samples gives empty
    outputs. ``forward(..., return_routing=True)`` also returns the
    :class:`~dgl_capsules.routing.RoutingResult`; ``return_trace=True``
    implies ``return_routing=True``.

    Raises
    ------
    TypeError
        If ``poses`` or ``activations`` is not a floating-point tensor (a numpy
        array, an integer tensor), or ``poses`` is not float32 / float64.
    ValueError
        If a shape is wrong, an activation leaves ``[0, 1]``, the child grid is
        smaller than ``kernel``, or an inverse temperature is negative or NaN.

    Examples
    --------
    >>> import torch
    >>> layer = ConvCaps(in_types=8, out_types=4, kernel=3, stride=2)
    >>> layer
    ConvCaps(in_types=8, out_types=4, kernel=3, stride=2)
    >>> poses, acts = layer(torch.randn(2, 12, 12, 8, 4, 4), torch.rand(2, 12, 12, 8))
    >>> poses.shape, acts.shape
    (torch.Size([2, 5, 5, 4, 4, 4]), torch.Size([2, 5, 5, 4]))
    """

    def __init__(self, in_types, out_types, kernel, stride, n_iters=3, inverse_temperatures=None,
                 eps=1e-6):
        self.in_types = check_positive_int("in_types", in_types)
        self.out_types = check_positive_int("out_types", out_types)
        self.kernel = check_positive_int("kernel", kernel)
        self.stride = check_positive_int("stride", stride)
        super().__init__(kernel * kernel * in_types * out_types, out_types, n_iters,
                         inverse_temperatures, eps)

    def graph(self, in_hw, device=None):
        """The (cached) :func:`~dgl_capsules.conv_capsule_graph` for a child grid ``in_hw``."""
        return conv_capsule_graph(tuple(in_hw), self.kernel, self.stride, self.in_types,
                                  self.out_types, device=device)

    def votes(self, g, poses):
        """Votes :math:`M_i W_{offset, a, c}` in the edge order of ``g``: ``(|E|, B, 16)``.

        All ``Ho * Wo * C * kernel² * A`` votes come from one batched matrix product over the
        (offset, child type) pairs, laid out batch first by (parent, offset, child type) (a
        transposed view when that is the edge order of ``g``, as for :meth:`graph`, so EM
        routing reads them without a copy); each edge picks its vote by its ``dst``,
        ``offset`` and ``child_type``."""
        b = poses.shape[0]
        k, s, n_a, n_c = self.kernel, self.stride, self.in_types, self.out_types
        # receptive fields as a view: (B, Ho, Wo, A, 4, 4, ky, kx)
        patches = poses.unfold(1, k, s).unfold(2, k, s)
        weight = self._weight(poses).view(k, k, n_a, n_c, 4, 4)
        table = torch.einsum("bqraikyx,yxackj->bqrcyxaij", patches, weight)
        table = table.reshape(b, table.shape[1:7].numel(), 16).transpose(0, 1)  # (E, B, 16), batch-first in memory
        _, dst = g.edges()
        return _pick(table, (dst * (k * k) + g.edata["offset"]) * n_a + g.edata["child_type"])

    def forward(self, poses, activations, return_routing=False, return_trace=False):
        """Route a batch of child capsules; with ``return_routing`` also return the
        :class:`~dgl_capsules.routing.RoutingResult` (edge order of :meth:`graph`, batch in dim 1).
        ``return_trace=True`` implies ``return_routing=True`` (the trace is in the result)."""
        poses, activations = _check_caps(poses, activations, self.in_types, "ConvCaps")
        b, h, w = poses.shape[:3]
        return_routing = return_routing or return_trace
        if self.kernel > min(h, w):
            raise ValueError(
                f"ConvCaps: the child grid (H, W) = {(h, w)} is smaller than kernel = {self.kernel}"
            )
        ho, wo = conv_output_size((h, w), self.kernel, self.stride)
        g = self.graph((h, w), device=poses.device)
        a_in = activations.reshape(b, h * w * self.in_types).T  # (N_src, B)
        r = self._route(g, self.votes(g, poses), a_in, ho * wo, return_trace)
        out_poses = r.poses.transpose(0, 1).reshape(b, ho, wo, self.out_types, 4, 4)
        out_acts = r.activations.T.reshape(b, ho, wo, self.out_types)
        return (out_poses, out_acts, r) if return_routing else (out_poses, out_acts)

    def extra_repr(self):
        s = f"in_types={self.in_types}, out_types={self.out_types}, kernel={self.kernel}, stride={self.stride}"
        return s if self.n_iters == 3 else s + f", n_iters={self.n_iters}"


class ClassCaps(_EMLayer):
    r"""Class capsules: every child capsule votes for every class, routed by EM.

    One 4x4 matrix per (child type, class), shared across positions. With
    coordinate addition the scaled centre of the child's grid cell,
    :math:`(x + \tfrac12) / W` and :math:`(y + \tfrac12) / H`, is added to
    vote entries ``(0, 3)`` and ``(1, 3)``:

    .. math::

        V_{ij} = M_i W_{a(i), j} + \Big(\tfrac{x_i + 1/2}{W} e_0 + \tfrac{y_i + 1/2}{H} e_1\Big) e_3^\top.

    Parameters
    ----------
    in_types : int
        Capsule types per child position.
    n_classes : int
        Class capsules.
    coord_add : bool
        Add the scaled coordinates to the votes.
    n_iters, inverse_temperatures, eps
        As in :class:`ConvCaps`.

    Shape
    -----
    - Input: poses ``(B, H, W, in_types, 4, 4)``, activations ``(B, H, W, in_types)``.
    - Output: poses ``(B, n_classes, 4, 4)`` and activations ``(B, n_classes)``.

    Dtypes, empty batches, ``return_routing`` / ``return_trace`` and the errors
    raised are as in :class:`ConvCaps`.

    Examples
    --------
    >>> import torch
    >>> layer = ClassCaps(in_types=8, n_classes=10)
    >>> poses, acts = layer(torch.randn(2, 3, 3, 8, 4, 4), torch.rand(2, 3, 3, 8))
    >>> poses.shape, acts.shape
    (torch.Size([2, 10, 4, 4]), torch.Size([2, 10]))
    """

    def __init__(self, in_types, n_classes, coord_add=True, n_iters=3, inverse_temperatures=None,
                 eps=1e-6):
        self.in_types = check_positive_int("in_types", in_types)
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.coord_add = bool(coord_add)
        super().__init__(in_types * n_classes, n_classes, n_iters, inverse_temperatures, eps)

    def graph(self, in_hw, device=None):
        """The (cached) complete :func:`~dgl_capsules.capsule_graph` for a child grid ``in_hw``."""
        return capsule_graph(in_hw[0] * in_hw[1] * self.in_types, self.n_classes, device=device)

    def votes(self, g, poses):
        """Votes in the edge order of ``g``, with coordinate addition if enabled: ``(|E|, B, 16)``.

        One batched matrix product per child type gives every (child, class) vote, laid out
        by (child, class); each edge then picks its vote by its ``src`` and ``dst``."""
        b, h, w = poses.shape[:3]
        n_a, n_k = self.in_types, self.n_classes
        weight = self._weight(poses).view(n_a, n_k, 4, 4)
        table = torch.einsum("bpaik,ankj->panbij", poses.reshape(b, h * w, n_a, 4, 4), weight)
        if self.coord_add:  # table: (H * W, A, K, B, 4, 4)
            offset = table.new_zeros(h, w, 1, 1, 1, 4, 4)
            offset[:, :, 0, 0, 0, 0, 3] = (torch.arange(w, dtype=table.dtype, device=table.device) + 0.5) / w
            offset[:, :, 0, 0, 0, 1, 3] = ((torch.arange(h, dtype=table.dtype, device=table.device) + 0.5) / h)[:, None]
            table = table + offset.view(h * w, 1, 1, 1, 4, 4)
        src, dst = g.edges()
        return _pick(table.reshape(h * w * n_a * n_k, b, 16), src * n_k + dst)

    def forward(self, poses, activations, return_routing=False, return_trace=False):
        """Route a batch of child capsules to the classes; with ``return_routing`` also return
        the :class:`~dgl_capsules.routing.RoutingResult`. ``return_trace=True`` implies
        ``return_routing=True``."""
        poses, activations = _check_caps(poses, activations, self.in_types, "ClassCaps")
        b, h, w = poses.shape[:3]
        return_routing = return_routing or return_trace
        g = self.graph((h, w), device=poses.device)
        a_in = activations.reshape(b, h * w * self.in_types).T  # (N_src, B)
        r = self._route(g, self.votes(g, poses), a_in, 1, return_trace)
        out_poses = r.poses.transpose(0, 1).reshape(b, self.n_classes, 4, 4)
        out_acts = r.activations.T  # (B, n_classes)
        return (out_poses, out_acts, r) if return_routing else (out_poses, out_acts)

    def extra_repr(self):
        s = f"in_types={self.in_types}, n_classes={self.n_classes}, coord_add={self.coord_add}"
        return s if self.n_iters == 3 else s + f", n_iters={self.n_iters}"
