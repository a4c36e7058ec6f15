"""The first convolution of an image model, as one matrix product."""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ImageConv2d"]


class ImageConv2d(nn.Conv2d):
    r"""A :class:`torch.nn.Conv2d` for inputs with few channels (images), computed as one matrix product.

    The same layer as ``nn.Conv2d`` (same arguments, parameters, ``state_dict``
    and initialisation; an instance of it), with another kernel: when the input
    has at most :attr:`MAX_IN_CHANNELS` channels, every receptive field is
    copied into one row of a matrix (*im2col*) and the convolution is one
    matrix product with the weights,

    .. math::

        Y_{(b, y, x),\, o} = \beta_o + \sum_{(c, k_y, k_x)}
            X_{b,\, c,\, s y + k_y,\, s x + k_x}\; W_{o, c, k_y, k_x},

    an ``addmm`` of ``(B Ho Wo, C kh kw)`` by ``(C kh kw, out_channels)``. Its
    rows are the output pixels in (b, y, x) order and its columns the output
    channels, which is the channels-last memory layout: the output is returned
    as that ``(B, out_channels, Ho, Wo)`` view, so the layers after it run
    channels-last too (oneDNN's fastest convolutions on the CPU; elementwise
    layers and pooling keep the layout).

    NOTE: with one or a few input channels the matrix has few columns
    (81 for a 9x9 kernel on gray images); oneDNN's direct kernels cannot vectorise
    over such an input and run its weight gradient at a few GFLOP/s, while the
    product is one well-shaped ``addmm`` (and its weight gradient one ``mm``): about
    3x faster forward and backward for CapsNet's 9x9 convolution on MNIST
    (``bench/bench_epoch.py``). The sums are the same, added in another order,
    so results agree with ``nn.Conv2d`` to float rounding.

    Groups, dilation, padding modes other than ``"zeros"`` and inputs with more
    channels run ``nn.Conv2d``'s own kernel.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d`.

    Shape
    -----
    - Input: ``(B, in_channels, H, W)``
    - Output: ``(B, out_channels, Ho, Wo)``, in channels-last memory when computed
      as a product.

    Examples
    --------
    >>> import torch
    >>> conv = ImageConv2d(1, 8, 5)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> y = conv(x)
    >>> y.shape, y.is_contiguous(memory_format=torch.channels_last)
    (torch.Size([2, 8, 24, 24]), True)
    >>> torch.allclose(y, torch.nn.functional.conv2d(x, conv.weight, conv.bias), atol=1e-5)
    True
    """

    #: Inputs with at most this many channels are convolved as one matrix product.
    MAX_IN_CHANNELS = 4

    def _as_product(self, x):
        return (self.in_channels <= self.MAX_IN_CHANNELS and self.groups == 1 and self.dilation == (1, 1)
                and self.padding_mode == "zeros" and not isinstance(self.padding, str) and x.dim() == 4
                and x.shape[1] == self.in_channels)

    def forward(self, x):
        if not self._as_product(x):
            return super().forward(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        b = x.shape[0]
        fields = x.permute(0, 2, 3, 1).unfold(1, kh, sh).unfold(2, kw, sw)  # (B, Ho, Wo, C, kh, kw), a view
        ho, wo = fields.shape[1:3]
        rows = fields.reshape(b * ho * wo, self.in_channels * kh * kw)  # (B Ho Wo, C kh kw), the copy
        weight = self.weight.reshape(self.out_channels, -1)  # (out, C kh kw), same order
        if self.bias is None:
            y = torch.mm(rows, weight.t())
        else:
            y = torch.addmm(self.bias, rows, weight.t())  # (B Ho Wo, out)
        return y.view(b, ho, wo, self.out_channels).permute(0, 3, 1, 2)  # (B, out, Ho, Wo), channels-last
