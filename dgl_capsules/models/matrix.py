"""Matrix capsules with EM routing (Hinton, Sabour & Frosst 2018)."""
from typing import NamedTuple, Optional

import torch
from torch import nn

from ..functional import spread_loss, spread_margin
from .._checks import check_positive_int
from ..nn.em import ClassCaps, ConvCaps, PrimaryMatrixCaps
from ._common import check_images, decode_masked, make_decoder, reconstruction_error
from .registry import RoutedLayer, get_model, register_model

__all__ = ["MatrixCapsNet", "MatrixCapsOutput"]


class MatrixCapsOutput(NamedTuple):
    """What :meth:`MatrixCapsNet.forward` returns.

    Attributes
    ----------
    poses : torch.Tensor
        Class capsule poses ``(B, n_classes, 4, 4)``.
    activations : torch.Tensor
        Class activations ``(B, n_classes)`` in (0, 1): the class scores.
    reconstruction : torch.Tensor or None
        Decoder output ``(B, C, H, W)``, or ``None`` without a decoder.
    inputs : torch.Tensor or None
        The images the reconstruction is compared with (``None`` without a decoder).
    """

    poses: torch.Tensor
    activations: torch.Tensor
    reconstruction: Optional[torch.Tensor] = None
    inputs: Optional[torch.Tensor] = None


PRESETS = {
    # Trains on two CPU cores: 14400, 5184 and 720 edges in the routed layers on 28x28 inputs.
    # A second convolution before the capsules (5x5 stem at stride 1, 3x3 primary capsules at
    # stride 2: an 11x11 primary grid) reaches 98.5 % on mnist5k (README).
    "small": dict(conv_channels=64, primary_types=8, caps1_types=8, caps2_types=8, n_iters=2,
                  step_scale=2000.0, stem_stride=1, primary_kernel=3, primary_stride=2),
    # For smoke tests and demos.
    "tiny": dict(conv_channels=16, primary_types=4, caps1_types=4, caps2_types=4, n_iters=2,
                 step_scale=500.0),
    # The paper's configuration (A = 32, B = C = D = 32, three EM iterations).
    "paper": dict(conv_channels=32, primary_types=32, caps1_types=32, caps2_types=32, n_iters=3,
                  step_scale=50000.0),
}


@register_model("matrixcaps", presets=PRESETS)
class MatrixCapsNet(nn.Module):
    r"""Matrix capsule network with EM routing (Hinton et al. 2018, Figure 1).

    ``Conv2d(5x5, stride 2) + ReLU`` with ``A`` channels, then
    :class:`~dgl_capsules.nn.PrimaryMatrixCaps` (1x1, ``B`` types),
    :class:`~dgl_capsules.nn.ConvCaps` (3x3, stride 2, ``C`` types),
    :class:`~dgl_capsules.nn.ConvCaps` (3x3, stride 1, ``D`` types) and
    :class:`~dgl_capsules.nn.ClassCaps` with coordinate addition. On 28x28
    inputs the grids are 12x12, 12x12, 5x5, 3x3. Trained with
    :func:`~dgl_capsules.functional.spread_loss` whose margin follows
    :func:`~dgl_capsules.functional.spread_margin`.

    Parameters
    ----------
    in_channels : int
        Image channels.
    image_size : int
        Side of the square input images (at least 17 with the paper's stem, so
        that ConvCaps2 has a cell).
    n_classes : int
        Class capsules.
    conv_channels, primary_types, caps1_types, caps2_types : int
        ``A``, ``B``, ``C``, ``D``.
    n_iters : int
        EM iterations in every routed layer.
    inverse_temperatures : sequence of float, optional
        :math:`\lambda_t` for every routed layer; by default the routing's
        schedule :math:`0.01 (1 - 0.95^t)`.
    step_scale : float
        The step scale :math:`S` of the margin schedule.
    decoder : tuple of int
        Hidden widths of an optional reconstruction decoder (none in the
        paper, which used weight decay instead): it decodes the 16 pose
        entries of one class capsule (the true class while training, the most
        active otherwise; the others masked to zero) into the image, like
        :class:`~dgl_capsules.models.CapsNet`'s.
    recon_weight : float
        Weight of the summed squared reconstruction error in :meth:`loss`.
    stem_stride : int
        Stride of the 5x5 stem convolution (2 in the paper).
    primary_kernel, primary_stride : int
        Kernel and stride of :class:`~dgl_capsules.nn.PrimaryMatrixCaps`
        (1 and 1 in the paper). A 5x5 stem at stride 1 followed by 3x3 primary
        capsules at stride 2 gives 11x11 primary grids on 28x28 inputs and the
        same ConvCaps grids as the paper's stem, with a second convolution
        before the capsules.

    Notes
    -----
    Registered as ``"matrixcaps"`` with the presets ``"tiny"`` (A = 16,
    B = C = D = 4), ``"small"`` (A = 64, B = C = D = 8, 2 iterations, 5x5
    stem at stride 1 and 3x3 primary capsules at stride 2; trains on a CPU)
    and ``"paper"`` (A = B = C = D = 32, 3 iterations):
    ``get_model("matrixcaps", "small")``.

    Examples
    --------
    >>> import torch
    >>> from dgl_capsules.models import get_model
    >>> net = get_model("matrixcaps", "small")
    >>> out = net(torch.rand(2, 1, 28, 28))
    >>> out.poses.shape, net.scores(out).shape
    (torch.Size([2, 10, 4, 4]), torch.Size([2, 10]))
    >>> net.loss(out, torch.tensor([3, 7]), step=0).shape
    torch.Size([])
    """

    def __init__(self, in_channels=1, image_size=28, n_classes=10, conv_channels=32, primary_types=32,
                 caps1_types=32, caps2_types=32, n_iters=3, inverse_temperatures=None,
                 step_scale=50000.0, stem_stride=2, primary_kernel=1, primary_stride=1, decoder=(),
                 recon_weight=0.0005):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.stem_stride = check_positive_int("stem_stride", stem_stride)
        primary_kernel = check_positive_int("primary_kernel", primary_kernel)
        primary_stride = check_positive_int("primary_stride", primary_stride)
        # NOTE: ConvCaps2 needs a 3x3 child grid, ConvCaps1 (3x3, stride 2) then 7x7; walk that back through
        # the primary capsules and the 5x5 stem.
        smallest = ((7 - 1) * primary_stride + primary_kernel - 1) * self.stem_stride + 5
        if image_size < smallest:
            raise ValueError(f"image_size must be at least {smallest} for MatrixCapsNet; got {image_size}")
        self.step_scale = float(step_scale)
        self.conv = nn.Conv2d(in_channels, conv_channels, 5, stride=stem_stride)
        self.primary = PrimaryMatrixCaps(conv_channels, primary_types, primary_kernel, primary_stride)
        opts = dict(n_iters=n_iters, inverse_temperatures=inverse_temperatures)
        self.caps1 = ConvCaps(primary_types, caps1_types, kernel=3, stride=2, **opts)
        self.caps2 = ConvCaps(caps1_types, caps2_types, kernel=3, stride=1, **opts)
        self.classes = ClassCaps(caps2_types, n_classes, coord_add=True, **opts)
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0; got {recon_weight}")
        self.recon_weight = float(recon_weight)
        self.decoder_widths = tuple(decoder or ())
        self.decoder = make_decoder(n_classes * 16, self.decoder_widths, in_channels * image_size ** 2)
        self.reset_parameters()

    @classmethod
    def from_preset(cls, preset, **settings):
        """``get_model("matrixcaps", preset, **settings)``: a preset with single settings replaced.

        >>> MatrixCapsNet.from_preset("paper").caps1
        ConvCaps(in_types=32, out_types=32, kernel=3, stride=2)
        """
        return get_model("matrixcaps", preset, **settings)

    def reset_parameters(self):
        """PyTorch's default ``Conv2d`` init for the stem; each capsule layer's own ``reset_parameters``."""
        self.conv.reset_parameters()
        for layer in (self.primary, self.caps1, self.caps2, self.classes):
            layer.reset_parameters()
        for m in self.decoder or ():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def _layers(self, x, routed):
        check_images(x, self.in_channels, self.image_size)
        poses, acts = self.primary(torch.relu(self.conv(x)))  # (B, H1, W1, B_t, 4, 4)
        for name, layer in (("convcaps1", self.caps1), ("convcaps2", self.caps2), ("classcaps", self.classes)):
            if routed is None:
                poses, acts = layer(poses, acts)
                continue
            g, a_in = layer.graph(poses.shape[1:3], device=x.device), acts.flatten(1).T  # (N_src, B)
            poses, acts, r = layer(poses, acts, return_trace=True)
            routed.append(RoutedLayer.of(name, g, r, layer.routing, a_in=a_in, child_types=layer.in_types,
                                         parent_types=getattr(layer, "out_types", None)))
        return MatrixCapsOutput(poses, acts)  # (B, K, 4, 4), (B, K)

    def forward(self, x, y=None):
        """Class capsules of images ``x`` ``(B, C, H, W)`` in [0, 1]; with a decoder, also their
        reconstruction from the capsule of class ``y`` (the most active one without ``y``)."""
        out = self._layers(x, None)
        if self.decoder is None:
            return out
        return out._replace(reconstruction=self._decode(out, y), inputs=x)

    def _decode(self, out, classes):
        poses = out.poses.flatten(2)  # (B, K, 16)
        return decode_masked(self.decoder, poses, out.activations, classes, (self.in_channels, self.image_size,
                                                                            self.image_size))

    def reconstruct(self, out, classes=None):
        """Decoder images ``(B, C, H, W)`` from the class capsule ``classes`` ``(B,)`` (default: the most active)."""
        if self.decoder is None:
            raise ValueError("reconstruct needs a MatrixCapsNet built with decoder widths, e.g. decoder=(256, 512)")
        return self._decode(out, classes)

    def loss(self, out, y, step=0):
        """Spread loss with margin :func:`~dgl_capsules.functional.spread_margin` ``(step, step_scale)``,
        plus ``recon_weight`` times the summed squared reconstruction error with a decoder."""
        loss = spread_loss(out.activations, y, spread_margin(step, self.step_scale))
        if out.reconstruction is not None and self.recon_weight:
            loss = loss + self.recon_weight * reconstruction_error(out.reconstruction, out.inputs)
        return loss

    def scores(self, out):
        """Class scores ``(B, n_classes)``: the class activations."""
        return out.activations

    def routing(self, x):
        """A :class:`~dgl_capsules.models.RoutedLayer` for every routed layer, ``convcaps1``, ``convcaps2``
        and ``classcaps``: the routing with its trace, the parent activations ``(N_dst, B)``, the child
        activations ``(N_src, B)`` and the capsule types of the grids."""
        routed = []
        self._layers(x, routed)
        return routed

    def extra_repr(self):
        return f"in_channels={self.in_channels}, image_size={self.image_size}, n_classes={self.n_classes}"
