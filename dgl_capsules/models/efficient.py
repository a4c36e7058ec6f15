"""Efficient-CapsNet: four convolutions, depthwise primary capsules, self-attention routing (Mazzia et al. 2021)."""
import torch
from torch import nn

from .._checks import check_positive_int
from ..functional import efficient_squash
from ..nn import SelfAttentionCaps
from ..nn.self_attention import keras_truncated_normal_
from ._common import check_images, make_decoder
from .capsnet import CapsNet, CapsNetOutput
from .registry import RoutedLayer, register_model

__all__ = ["EfficientCapsNet", "keras_decoder_init", "n_parameters_without_decoder"]

#: The published network's four convolutions: (kernel, stride); "valid" padding, ReLU, then batch norm.
CONVS = ((5, 1), (3, 1), (3, 1), (3, 2))

#: Keras's constant under the capsule lengths: ``sqrt(sum v^2 + 1e-7)``.
LENGTH_EPS = 1e-7

ROUTINGS = ("self-attention", "uniform")

PRESETS = {
    # Mazzia, Salvetti & Chiaberge 2021, MNIST: 32-64-64-128 channels, 16 x 8-D primary capsules,
    # 10 x 16-D class capsules, decoder 512-1024; 161,824 parameters without the decoder.
    "mnist": dict(conv_channels=(32, 64, 64, 128), primary_dim=8, class_dim=16, decoder=(512, 1024)),
    # For tests and smoke runs.
    "tiny": dict(conv_channels=(4, 8, 8, 16), primary_dim=4, class_dim=4, decoder=(16,)),
}


def keras_decoder_init(decoder):
    """The published decoder initialisation: ``he_normal`` hidden layers, ``glorot_normal`` output, zero biases."""
    linears = [m for m in decoder if isinstance(m, nn.Linear)]
    for k, m in enumerate(linears):
        last = k == len(linears) - 1
        keras_truncated_normal_(m.weight, fan=m.in_features + (m.out_features if last else 0), scale=2.0)
        nn.init.zeros_(m.bias)


def n_parameters_without_decoder(model):
    """Trainable parameters of ``model`` outside its ``decoder`` (batch-norm running statistics are buffers)."""
    return sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and not name.startswith("decoder."))


@register_model("efficient-capsnet", presets=PRESETS)
class EfficientCapsNet(nn.Module):
    r"""Efficient-CapsNet (Mazzia, Salvetti & Chiaberge 2021, "capsule network with self-attention routing").

    Four convolutions ``5x5 / 3x3 / 3x3 / 3x3 stride 2`` ("valid", each
    followed by ReLU and then batch norm, in the published order) → primary
    capsules from a depthwise convolution over the whole remaining map
    (``conv_channels[-1] / primary_dim`` capsules of ``primary_dim``, squashed
    with :func:`~dgl_capsules.functional.efficient_squash`) →
    :class:`~dgl_capsules.nn.SelfAttentionCaps` to ``n_classes`` class
    capsules of ``class_dim`` → decoder ``decoder[0] - decoder[1] - C*H*W``
    (ReLU, ReLU, sigmoid) that sees only one class capsule: the true one while
    training (``y`` given), the longest otherwise.

    The loss is the margin loss (:math:`m^+ = 0.9`, :math:`m^- = 0.1`,
    :math:`\lambda = 0.5`, summed over classes) plus ``recon_weight`` times the
    squared reconstruction error summed over pixels, both averaged over the
    batch.

    NOTE: the published code weighs Keras's mean squared error (a mean over
    the 784 pixels) by 0.392 = 0.0005 x 784, so its objective is this one with
    ``recon_weight = 0.0005`` exactly, not only up to a constant factor.

    NOTE: batch norm follows Keras's defaults (running averages kept with
    momentum 0.99, i.e. PyTorch ``momentum=0.01``, and ``eps=1e-3``); the
    capsule lengths are :math:`\sqrt{\lVert v \rVert^2 + 10^{-7}}` as Keras
    computes them; every layer is initialised as the published network is
    (``he_normal`` convolutions, capsule weights and hidden decoder layers,
    ``glorot_uniform`` depthwise convolution, ``glorot_normal`` decoder output,
    zero biases). Images are this library's, scaled to [0, 1] by ``/255``;
    the published code divides by 256 (a 0.4 % smaller scale, which the batch
    norm after the first convolution absorbs).

    Parameters
    ----------
    in_channels : int
        Image channels.
    image_size : int
        Side of the (square) images, at least 11 (28 for MNIST).
    n_classes : int
        Number of class capsules.
    conv_channels : tuple of 4 ints
        Channels of the four convolutions ((32, 64, 64, 128)); the last must
        be a multiple of ``primary_dim``.
    primary_dim : int
        Dimension of the primary capsules (8: 128 / 8 = 16 capsules).
    class_dim : int
        Dimension of the class capsules (16).
    routing : str
        ``"self-attention"`` (the paper's), or ``"uniform"``: couplings
        :math:`1 / n_{classes}` with the same parameters (the routing switched off).
    decoder : tuple of int
        Hidden widths of the reconstruction decoder ((512, 1024)); empty or
        ``None``: no decoder and no reconstruction loss.
    recon_weight : float
        Weight of the summed squared reconstruction error (0.0005).

    Notes
    -----
    Registered as ``"efficient-capsnet"`` with presets ``"mnist"`` (the
    paper's, 161,824 trainable parameters without the decoder) and ``"tiny"``
    (tests).

    Examples
    --------
    >>> import torch
    >>> from dgl_capsules.models import get_model
    >>> net = get_model("efficient-capsnet", "mnist")
    >>> n_parameters_without_decoder(net)
    161824
    >>> out = net(torch.rand(2, 1, 28, 28), y=torch.tensor([3, 7]))
    >>> out.poses.shape, net.scores(out).shape, out.reconstruction.shape
    (torch.Size([2, 10, 16]), torch.Size([2, 10]), torch.Size([2, 1, 28, 28]))
    >>> net.loss(out, torch.tensor([3, 7])).shape
    torch.Size([])
    """

    def __init__(self, in_channels=1, image_size=28, n_classes=10, conv_channels=(32, 64, 64, 128), primary_dim=8,
                 class_dim=16, routing="self-attention", decoder=(512, 1024), recon_weight=0.0005):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.conv_channels = self._check_channels(conv_channels)
        self.primary_dim = check_positive_int("primary_dim", primary_dim)
        self.class_dim = check_positive_int("class_dim", class_dim)
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}; got {routing!r}")
        self.routing_name = routing
        self.decoder_widths = tuple(decoder or ())
        if isinstance(recon_weight, bool) or not isinstance(recon_weight, (int, float)) or not recon_weight >= 0:
            raise ValueError(f"recon_weight must be a number >= 0; got {recon_weight!r}")
        self.recon_weight = float(recon_weight)
        if self.conv_channels[-1] % self.primary_dim:
            raise ValueError(f"conv_channels[-1] = {self.conv_channels[-1]} must be a multiple of primary_dim = "
                             f"{self.primary_dim} (each primary capsule takes primary_dim channels)")
        side = self.feature_side(self.image_size)

        layers, width = [], in_channels
        for (kernel, stride), out in zip(CONVS, self.conv_channels):
            # NOTE: the published order is convolution, ReLU, then batch norm.
            layers += [nn.Conv2d(width, out, kernel, stride), nn.ReLU(inplace=True),
                       nn.BatchNorm2d(out, eps=1e-3, momentum=0.01)]
            width = out
        self.features = nn.Sequential(*layers)
        self.primary = nn.Conv2d(width, width, side, groups=width)  # depthwise over the whole map: (B, C, 1, 1)
        self.n_primary = width // self.primary_dim
        self.digits = SelfAttentionCaps(self.n_primary, n_classes, self.primary_dim, class_dim,
                                        uniform=routing == "uniform")
        self.decoder = make_decoder(n_classes * class_dim, self.decoder_widths, in_channels * image_size ** 2)
        self.reset_parameters()

    @staticmethod
    def _check_channels(channels):
        if not isinstance(channels, (tuple, list)) or len(channels) != len(CONVS):
            raise ValueError(f"conv_channels must be {len(CONVS)} positive integers; got {channels!r}")
        return tuple(check_positive_int("conv_channels", c) for c in channels)

    @staticmethod
    def feature_side(image_size):
        """Side of the map the four convolutions leave of ``image_size`` (9 for 28).

        Raises
        ------
        ValueError
            If the images are smaller than 11 pixels.
        """
        side = image_size
        for kernel, stride in CONVS:
            side = (side - kernel) // stride + 1
            if side < 1:
                raise ValueError(f"image_size={image_size} is too small: the four convolutions need at least 11x11")
        return side

    def reset_parameters(self):
        """The published initialisation (see the class notes); batch norm starts as the identity."""
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                keras_truncated_normal_(m.weight, fan=m.in_channels * m.kernel_size[0] * m.kernel_size[1], scale=2.0)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
        k = self.primary.kernel_size[0] * self.primary.kernel_size[1]
        # Keras glorot_uniform of a depthwise kernel (k, k, 1, C): fan_in = k*k, fan_out = k*k*C
        bound = (6 / (k + k * self.primary.out_channels)) ** 0.5
        nn.init.uniform_(self.primary.weight, -bound, bound)
        nn.init.zeros_(self.primary.bias)
        self.digits.reset_parameters()
        if self.decoder is not None:
            keras_decoder_init(self.decoder)

    def primary_caps(self, x):
        """Primary capsules ``(B, n_primary, primary_dim)`` of images ``x`` (capsule ``n``: channels ``nD..nD+D-1``)."""
        check_images(x, self.in_channels, self.image_size)
        f = self.features(x)  # (B, C, side, side): the depthwise kernel covers the whole map
        # NOTE: written as the per-channel dot product it is, not as the convolution: the same sums, about ten times
        # faster forward + backward on CPU, a few percent of a training step (bench/bench_primary_caps.py).
        u = (f * self.primary.weight.squeeze(1)).sum((-2, -1)) + self.primary.bias  # (B, C)
        return efficient_squash(u.view(u.shape[0], self.n_primary, self.primary_dim))  # (B, n_primary, primary_dim)

    def forward(self, x, y=None):
        """Classify (and reconstruct) a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            Images ``(B, C, H, W)`` in [0, 1].
        y : torch.Tensor, optional
            Labels ``(B,)`` (or multi-hot ``(B, n_classes)``) that choose the
            decoded capsule while training; without them the longest is decoded.

        Returns
        -------
        CapsNetOutput
            ``poses`` ``(B, n_classes, class_dim)``, ``lengths`` ``(B, n_classes)``,
            ``reconstruction`` ``(B, C, H, W)`` or ``None``, ``inputs``.
        """
        v = self.digits(self.primary_caps(x))  # (B, K, class_dim)
        lengths = self.lengths(v)
        return CapsNetOutput(v, lengths, self._decode(v, lengths, y), x)

    @staticmethod
    def lengths(v):
        """Capsule lengths ``sqrt(|v|^2 + 1e-7)`` ``(B, K)``, as the published network measures them."""
        return torch.sqrt(v.pow(2).sum(-1) + LENGTH_EPS)

    # The decoder, loss and scores are CapsNet's (margin loss + recon_weight x summed squared error).
    _decode = CapsNet._decode
    reconstruct = CapsNet.reconstruct
    loss = CapsNet.loss
    scores = CapsNet.scores

    def routing(self, x):
        """Routing of the class-capsule layer for images ``x``.

        Returns
        -------
        list of RoutedLayer
            One entry for the class-capsule layer, routed by ``"self-attention"``
            (with ``routing="uniform"``, its couplings are 1 / n_classes);
            ``result.trace`` holds the single pass's couplings.
        """
        u = self.primary_caps(x)
        g = self.digits.graph(device=x.device)
        _, r = self.digits(u, return_trace=True)
        return [RoutedLayer.of("digitcaps", g, r, "self-attention", votes=self.digits.votes(g, u))]

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, image_size={self.image_size}, n_classes={self.n_classes}, "
                f"primary_caps={self.n_primary}, routing={self.routing_name!r}, decoder={self.decoder_widths}, "
                f"recon_weight={self.recon_weight}")
