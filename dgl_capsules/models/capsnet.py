"""CapsNet: convolution, primary capsules and class capsules routed by agreement (Sabour et al. 2017)."""
from typing import NamedTuple, Optional

import torch
from torch import nn

from ..functional import margin_loss
from .._checks import check_positive_int
from ..nn import DynamicCaps, PrimaryCaps
from ._common import check_images, decode_masked, make_decoder, reconstruction_error
from .registry import RoutedLayer, get_model, register_model

__all__ = ["CapsNet", "CapsNetOutput"]


class CapsNetOutput(NamedTuple):
    """What :meth:`CapsNet.forward` returns.

    Attributes
    ----------
    poses : torch.Tensor
        Class capsules ``(B, n_classes, class_dim)``.
    lengths : torch.Tensor
        Their lengths ``(B, n_classes)``: the class probabilities.
    reconstruction : torch.Tensor or None
        Decoder output ``(B, C, H, W)`` in (0, 1), or ``None`` without a decoder.
    inputs : torch.Tensor
        The images ``(B, C, H, W)`` the reconstruction is compared with.
    """

    poses: torch.Tensor
    lengths: torch.Tensor
    reconstruction: Optional[torch.Tensor]
    inputs: torch.Tensor


PRESETS = {
    # Sabour et al. 2017, section 4: 256@9x9, 32 x 8-D primary types, 10 x 16-D, decoder 512-1024.
    "paper": dict(conv_channels=256, primary_types=32, primary_dim=8, class_dim=16, decoder=(512, 1024)),
    # Narrow enough that `dgl-capsules demo` trains to >= 97.5% on mnist5k in minutes on 2 CPU cores.
    "small": dict(conv_channels=64, primary_types=8, primary_dim=8, class_dim=16, decoder=(256, 512)),
    # For tests and smoke runs: trains in well under a second per step.
    "tiny": dict(conv_channels=8, primary_types=2, primary_dim=4, class_dim=4, decoder=(16,)),
}


@register_model("capsnet", presets=PRESETS)
class CapsNet(nn.Module):
    r"""The capsule network of Sabour, Frosst & Hinton 2017 ("Dynamic routing between capsules").

    ``Conv2d(in_channels, conv_channels, 9) + ReLU`` →
    :class:`~dgl_capsules.nn.PrimaryCaps` (``primary_types`` × ``primary_dim``-D,
    9×9, stride 2) → :class:`~dgl_capsules.nn.DynamicCaps` (``n_classes`` ×
    ``class_dim``-D, ``n_iters`` routing iterations on the complete capsule
    graph) → decoder ``decoder[0] - decoder[1] - C*H*W`` (ReLU, ReLU, sigmoid).
    The decoder sees only one class capsule: the true one while training
    (``y`` given), the longest one otherwise; the others are masked to zero.

    The loss is the margin loss plus ``recon_weight`` times the squared
    reconstruction error summed over pixels, both averaged over the batch:

    .. math::

        L = \frac1B \sum_b \Big[\sum_k L^{\text{margin}}_{bk}
            + \lambda_r \lVert \hat x_b - x_b \rVert^2\Big],
        \qquad \lambda_r = 0.0005.

    Parameters
    ----------
    in_channels : int
        Image channels.
    image_size : int
        Side of the (square) images.
    n_classes : int
        Number of class capsules.
    conv_channels, conv_kernel : int
        The first convolution (256 and 9 in the paper).
    primary_types, primary_dim, primary_kernel, primary_stride : int
        The primary capsules (32, 8, 9 and 2 in the paper).
    class_dim : int
        Dimension of the class capsules (16).
    n_iters : int
        Routing iterations (3).
    decoder : tuple of int
        Hidden widths of the reconstruction decoder ((512, 1024)); an empty
        tuple or ``None`` means no decoder and no reconstruction loss.
    recon_weight : float
        :math:`\lambda_r`.

    Notes
    -----
    Registered as ``"capsnet"`` with the presets ``"paper"`` (Sabour 2017),
    ``"small"`` (the demo's) and ``"tiny"`` (tests):
    ``get_model("capsnet", "small")``.

    Examples
    --------
    >>> import torch
    >>> from dgl_capsules.models import get_model
    >>> net = get_model("capsnet", "small")
    >>> out = net(torch.rand(2, 1, 28, 28), y=torch.tensor([3, 7]))
    >>> out.poses.shape, net.scores(out).shape, out.reconstruction.shape
    (torch.Size([2, 10, 16]), torch.Size([2, 10]), torch.Size([2, 1, 28, 28]))
    >>> net.loss(out, torch.tensor([3, 7])).shape
    torch.Size([])
    """

    def __init__(self, in_channels=1, image_size=28, n_classes=10, conv_channels=256, conv_kernel=9,
                 primary_types=32, primary_dim=8, primary_kernel=9, primary_stride=2, class_dim=16,
                 n_iters=3, decoder=(512, 1024), recon_weight=0.0005):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.conv_channels = check_positive_int("conv_channels", conv_channels)
        self.conv_kernel = check_positive_int("conv_kernel", conv_kernel)
        self.class_dim = check_positive_int("class_dim", class_dim)
        self.decoder_widths = tuple(decoder or ())
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0; got {recon_weight}")
        self.recon_weight = float(recon_weight)
        conv_out = image_size - conv_kernel + 1
        if conv_out < primary_kernel:
            raise ValueError(
                f"image_size={image_size} is too small: the conv ({conv_kernel}x{conv_kernel}) leaves "
                f"{conv_out}x{conv_out}, less than primary_kernel={primary_kernel}"
            )

        self.conv = nn.Conv2d(in_channels, conv_channels, conv_kernel)
        self.primary = PrimaryCaps(conv_channels, primary_types, primary_dim, primary_kernel, primary_stride)
        ho, wo = self.primary.out_hw((conv_out, conv_out))
        self.n_primary = ho * wo * primary_types
        self.digits = DynamicCaps(self.n_primary, n_classes, primary_dim, class_dim, n_iters)
        self.decoder = make_decoder(n_classes * class_dim, self.decoder_widths, in_channels * image_size ** 2)
        self.reset_parameters()

    @classmethod
    def from_preset(cls, preset, **settings):
        """``get_model("capsnet", preset, **settings)``: a preset with single settings replaced.

        >>> CapsNet.from_preset("paper").n_primary
        1152
        """
        return get_model("capsnet", preset, **settings)

    def reset_parameters(self):
        """PyTorch's defaults for the convolution and decoder layers; capsule layers reset themselves."""
        self.conv.reset_parameters()
        self.primary.reset_parameters()
        self.digits.reset_parameters()
        if self.decoder is not None:
            for m in self.decoder:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()

    def primary_caps(self, x):
        """Primary capsules ``(B, n_primary, primary_dim)`` of images ``x``."""
        check_images(x, self.in_channels, self.image_size)
        return self.primary(torch.relu(self.conv(x)))  # (B, n_primary, primary_dim)

    def forward(self, x, y=None):
        """Classify (and reconstruct) a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            Images ``(B, C, H, W)`` in [0, 1].
        y : torch.Tensor, optional
            Labels ``(B,)`` (or multi-hot ``(B, n_classes)``) to mask the decoder
            input with while training; without them the longest capsule is used.

        Returns
        -------
        CapsNetOutput
        """
        v = self.digits(self.primary_caps(x))  # (B, K, class_dim)
        lengths = v.norm(dim=-1)  # (B, K)
        return CapsNetOutput(v, lengths, self._decode(v, lengths, y), x)

    def _decode(self, v, lengths, y):
        if self.decoder is None:
            return None
        return decode_masked(self.decoder, v, lengths, y, (self.in_channels, self.image_size, self.image_size))

    def reconstruct(self, out, classes=None):
        """Decoder images ``(B, C, H, W)`` from the capsules of ``out``.

        ``classes`` ``(B,)`` picks the capsule to decode; by default the longest.
        """
        return self._decode(out.poses, out.lengths, classes)

    def loss(self, out, y, step=None):
        """Margin loss + ``recon_weight`` × summed squared reconstruction error (batch means)."""
        loss = margin_loss(out.lengths, y)
        if out.reconstruction is not None and self.recon_weight:
            loss = loss + self.recon_weight * reconstruction_error(out.reconstruction, out.inputs)
        return loss

    def scores(self, out):
        """Class scores ``(B, n_classes)``: the capsule lengths."""
        return out.lengths

    def routing(self, x):
        """Routing of the class-capsule layer for images ``x``, with its trace.

        Returns
        -------
        list of RoutedLayer
            One entry ``"digitcaps"``: its parent strengths are the class
            capsules' lengths ``(N_dst, B)``, its child strengths the primary
            capsules' mean vote lengths ``(N_src, B)``.
        """
        u = self.primary_caps(x)  # (B, N_src, primary_dim)
        g = self.digits.graph(device=x.device)
        _, r = self.digits(u, return_trace=True)
        return [RoutedLayer.of("digitcaps", g, r, self.digits.routing, votes=self.digits.votes(g, u),
                               child_types=self.primary.out_types)]

    def extra_repr(self):
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, n_classes={self.n_classes}, "
            f"primary_caps={self.n_primary}, decoder={self.decoder_widths}, recon_weight={self.recon_weight}"
        )
