"""Primary capsules: a convolution whose channels are grouped into capsule vectors."""
from torch import nn

from ..functional import squash
from .._checks import check_float_tensor, check_positive_int

__all__ = ["PrimaryCaps"]


class PrimaryCaps(nn.Module):
    r"""Convolutional primary capsules (Sabour et al. 2017, "PrimaryCapsules").

    A ``Conv2d`` with ``out_types * out_dim`` output channels; capsule type
    ``k`` at grid position ``(y, x)`` is channels ``k*out_dim ... k*out_dim +
    out_dim - 1`` at ``(y, x)``, squashed along those channels. Capsules come
    out row-major over (row, column, type), which is the child numbering of
    :func:`~dgl_capsules.conv_capsule_graph` with ``in_types = out_types`` and
    a valid order for :func:`~dgl_capsules.capsule_graph`.

    Parameters
    ----------
    in_channels : int
        Channels of the input feature map.
    out_types : int
        Capsule types per grid position (32 in the paper).
    out_dim : int
        Capsule dimension (8 in the paper).
    kernel_size, stride : int
        Of the convolution (9 and 2 in the paper); no padding.

    Shape
    -----
    - Input: ``(B, in_channels, H, W)``
    - Output: ``(B, Ho * Wo * out_types, out_dim)``

    Examples
    --------
    >>> import torch
    >>> caps = PrimaryCaps(256, 32, 8, kernel_size=9, stride=2)
    >>> caps(torch.randn(2, 256, 20, 20)).shape
    torch.Size([2, 1152, 8])
    """

    def __init__(self, in_channels, out_types, out_dim, kernel_size=9, stride=2):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_types = check_positive_int("out_types", out_types)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.stride = check_positive_int("stride", stride)
        self.conv = nn.Conv2d(in_channels, out_types * out_dim, kernel_size, stride)
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's default ``Conv2d`` initialisation (Kaiming-uniform weights)."""
        self.conv.reset_parameters()

    def out_hw(self, in_hw):
        """Grid ``(Ho, Wo)`` of the capsules for an input of spatial size ``in_hw``."""
        return tuple((n - self.kernel_size) // self.stride + 1 for n in in_hw)

    def forward(self, x):
        x = check_float_tensor("x", x, f"(B, in_channels={self.in_channels}, H, W)")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, in_channels={self.in_channels}, H, W); got {tuple(x.shape)}"
            )
        u = self.conv(x)  # (B, types * D, Ho, Wo)
        b, _, ho, wo = u.shape
        u = u.view(b, self.out_types, self.out_dim, ho, wo)
        u = u.permute(0, 3, 4, 1, 2).reshape(b, ho * wo * self.out_types, self.out_dim)
        return squash(u)  # (B, Ho * Wo * types, D)

    def extra_repr(self):
        return (
            f"in_channels={self.in_channels}, out_types={self.out_types}, out_dim={self.out_dim}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}"
        )
