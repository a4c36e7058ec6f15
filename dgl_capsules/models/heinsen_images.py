"""An image classifier routed by Heinsen's algorithm, in the style of his smallNORB model (Heinsen 2019)."""
from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_positive_int
from ..nn import HeinsenRouting
from ._common import check_images
from .registry import RoutedLayer, register_model

__all__ = ["HeinsenImageNet", "HeinsenImageOutput"]


class HeinsenImageOutput(NamedTuple):
    """What :meth:`HeinsenImageNet.forward` returns.

    Attributes
    ----------
    logits : torch.Tensor
        Class score logits ``(B, n_classes)``: the class capsules' activations.
    poses : torch.Tensor
        Class capsules ``(B, n_classes, pose, pose)``.
    sigma2 : torch.Tensor
        Their variances ``(B, n_classes, pose, pose)``.
    """

    logits: torch.Tensor
    poses: torch.Tensor
    sigma2: torch.Tensor


PRESETS = {
    # For tests and smoke runs.
    "tiny": dict(stem_channels=8, stem_layers=3, primary_types=2, hidden_caps=8, n_iters=2),
    # A two-CPU-core size for the viewpoints experiment: on 32x32 stereo pairs a 4x4 grid of 8 part types,
    # 128 x 16 + 16 x 10 edges, 159k parameters. (16 types and 32 hidden capsules, 8192 edges in the first
    # routed layer, took 141 s per epoch of the default viewpoints set against CapsNet small's 23 s.)
    "small": dict(stem_channels=64, stem_layers=3, primary_types=8, hidden_caps=16, n_iters=3),
}


@register_model("heinsen", presets=PRESETS)
class HeinsenImageNet(nn.Module):
    r"""Convolutions, primary matrix capsules and two :class:`~dgl_capsules.nn.HeinsenRouting` layers.

    The design of Heinsen's smallNORB classifier (2019, section 4): a
    convolutional stem (``stem_layers`` 3×3 convolutions at stride 2 with
    batch normalisation and ReLU, each halving the grid), then at every
    position of the final ``h × w`` grid ``primary_types`` capsules, each a
    ``pose × pose`` matrix and a score logit computed by 1×1 convolutions,
    with the position's normalised coordinates added to the first two
    entries of every pose (coordinate addition, Hinton et al. 2018); these
    ``h w primary_types`` capsules are routed to ``hidden_caps`` capsules and
    those to one capsule per class. The class logits are the last layer's
    activations; the loss is cross-entropy on them (binary cross-entropy for
    multi-hot labels):

    .. math::

        L = -\frac1B \sum_b \log \operatorname{softmax}(a^{out}_b)_{y_b}.

    Parameters
    ----------
    in_channels, image_size, n_classes : int
        Images ``(C, H, H)`` and classes.
    stem_channels : int
        Channels of every stem convolution.
    stem_layers : int
        Number of stride-2 convolutions (the grid side is ``H`` halved, rounded up, that many times).
    primary_types : int
        Primary capsules per grid position.
    hidden_caps : int
        Capsules of the hidden routed layer.
    pose : int
        Side of the pose matrices (``d_cov = d_inp = d_out``).
    n_iters : int
        Routing iterations of both routed layers.
    p_model : {"gaussian", "skm"}
        Heinsen's E-step scoring.

    Examples
    --------
    >>> import torch
    >>> net = HeinsenImageNet(in_channels=2, image_size=32, n_classes=5, **PRESETS["tiny"])
    >>> out = net(torch.rand(3, 2, 32, 32))
    >>> net.scores(out).shape, out.poses.shape, net.n_primary
    (torch.Size([3, 5]), torch.Size([3, 5, 4, 4]), 32)
    """

    def __init__(self, in_channels=1, image_size=28, n_classes=10, stem_channels=64, stem_layers=3,
                 primary_types=16, hidden_caps=32, pose=4, n_iters=3, p_model="gaussian"):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.stem_channels = check_positive_int("stem_channels", stem_channels)
        self.stem_layers = check_positive_int("stem_layers", stem_layers)
        self.primary_types = check_positive_int("primary_types", primary_types)
        self.hidden_caps = check_positive_int("hidden_caps", hidden_caps)
        self.pose = check_positive_int("pose", pose)
        if self.pose < 2:
            raise ValueError(f"pose must be >= 2 (coordinates are added to two pose entries); got {pose}")
        layers, c, side = [], in_channels, image_size
        for _ in range(stem_layers):
            layers += [nn.Conv2d(c, stem_channels, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True)]
            c, side = stem_channels, (side + 1) // 2
        self.stem = nn.Sequential(*layers)
        self.grid = side
        self.n_primary = side * side * primary_types
        self.compute_a = nn.Conv2d(stem_channels, primary_types, 1)
        self.compute_mu = nn.Conv2d(stem_channels, primary_types * pose * pose, 1)
        coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side  # (h,) cell centres in (0, 1)
        self.register_buffer("coords", torch.stack(torch.meshgrid(coords, coords, indexing="ij"), -1),
                             persistent=False)  # (h, w, 2): (y, x)
        opts = dict(d_cov=pose, d_inp=pose, d_out=pose, n_iters=n_iters, p_model=p_model)
        self.routings = nn.ModuleList([
            HeinsenRouting(n_inp=self.n_primary, n_out=hidden_caps, **opts),
            HeinsenRouting(n_inp=hidden_caps, n_out=n_classes, **opts),
        ])
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's defaults for the convolutions and batch norms; the routing layers reset themselves."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                m.reset_parameters()
        for r in self.routings:
            r.reset_parameters()

    def primary_caps(self, x):
        """Primary score logits ``(B, n_primary)`` and poses ``(B, n_primary, pose, pose)`` of images ``x``."""
        check_images(x, self.in_channels, self.image_size)
        h = self.stem(x)  # (B, C, h, w)
        b, p, t = x.shape[0], self.pose, self.primary_types
        a = self.compute_a(h).permute(0, 2, 3, 1)  # (B, h, w, T)
        mu = self.compute_mu(h).view(b, t, p, p, self.grid, self.grid).permute(0, 4, 5, 1, 2, 3)  # (B, h, w, T, p, p)
        # NOTE: coordinate addition: the cell's (y, x) is added to pose entries [0, 0] and [0, 1].
        shift = torch.zeros(self.grid, self.grid, 1, p, p, dtype=mu.dtype, device=mu.device)
        shift[..., 0, :2] = self.coords.to(mu.dtype)[:, :, None, :]
        mu = mu + shift
        return a.reshape(b, self.n_primary), mu.reshape(b, self.n_primary, p, p)  # (B, N), (B, N, p, p)

    def forward(self, x, y=None):
        """Class capsules of images ``x`` ``(B, C, H, W)``; ``y`` is unused (no decoder).

        Returns
        -------
        HeinsenImageOutput
        """
        a, mu = self.primary_caps(x)
        if x.shape[0] == 0:  # an empty batch: empty outputs, no routing
            empty = mu.new_zeros(0, self.n_classes, self.pose, self.pose)
            return HeinsenImageOutput(a.new_zeros(0, self.n_classes), empty, empty.clone())
        for routing in self.routings:
            a, mu, sig2 = routing(a, mu)  # (B, n_out), (B, n_out, p, p), (B, n_out, p, p)
        return HeinsenImageOutput(a, mu, sig2)

    def loss(self, out, y, step=None):
        """Cross-entropy of the class logits for labels ``(B,)``; binary cross-entropy for multi-hot ``(B, K)``."""
        if y.dim() == 2:
            return nn.functional.binary_cross_entropy_with_logits(out.logits, y.to(out.logits.dtype))
        return nn.functional.cross_entropy(out.logits, y)

    def scores(self, out):
        """Class scores ``(B, n_classes)``: the logits."""
        return out.logits

    def routing(self, x):
        """Both routed layers for images ``x``, with their traces.

        Returns
        -------
        list of RoutedLayer
            ``"hidden"`` and ``"classes"`` on the layers' complete capsule
            graphs (the same outputs as :meth:`forward`); strengths are the
            activation probabilities (sigmoid of the score logits) of the
            parents ``(N_dst, B)`` and children ``(N_src, B)``.
        """
        a, mu = self.primary_caps(x)
        out = []
        for name, layer in zip(("hidden", "classes"), self.routings):
            a_out, mu_out, _, r = layer(a, mu, return_trace=True)  # (B, n_out), (B, n_out, p, p)
            out.append(RoutedLayer.of(name, layer.graph(device=x.device), r, layer.routing, a_in=a.T))
            a, mu = a_out, mu_out
        return out

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, image_size={self.image_size}, n_classes={self.n_classes}, "
                f"grid={self.grid}x{self.grid}, primary_caps={self.n_primary}, hidden_caps={self.hidden_caps}")
