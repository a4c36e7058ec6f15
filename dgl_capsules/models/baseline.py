"""The convolutional baseline that Sabour et al. 2017 compare CapsNet with."""
from torch import nn

from .._checks import check_positive_int
from ..nn.conv import ImageConv2d
from ._common import check_images
from .capsnet import PRESETS as CAPSNET_PRESETS
from .registry import get_model, n_parameters, register_model

__all__ = ["BaselineCNN", "baseline_cnn"]


class BaselineCNN(nn.Module):
    r"""Three 5×5 convolutions, two fully connected layers, dropout, softmax (Sabour et al. 2017, sec. 5).

    ``conv(c1) - pool - conv(c2) - pool - conv(c3) - fc(f1) - fc(f2) - dropout
    - linear(n_classes)``, ReLU after every hidden layer. The paper's widths
    are ``(256, 256, 128)`` and ``(328, 192)``; ``width`` multiplies all of
    them so that a baseline can be matched to a CapsNet's parameter count
    (:meth:`matching`).

    NOTE: the paper does not state its pooling; we use 2×2 max-pooling after
    the first two convolutions (with "same" padding) so the fully connected
    layers stay small.

    Parameters
    ----------
    in_channels, image_size, n_classes : int
        Images ``(C, H, H)`` and classes.
    width : float
        Multiplier of the paper's widths.
    dropout : float
        Dropout probability before the last layer.

    Examples
    --------
    >>> import torch
    >>> net = BaselineCNN(width=0.25)
    >>> out = net(torch.rand(2, 1, 28, 28))
    >>> net.scores(out).shape
    torch.Size([2, 10])
    """

    PAPER_CONV = (256, 256, 128)
    PAPER_FC = (328, 192)

    def __init__(self, in_channels=1, image_size=28, n_classes=10, width=1.0, dropout=0.5):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        self.n_classes = check_positive_int("n_classes", n_classes)
        if not width > 0:
            raise ValueError(f"width must be > 0; got {width}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.width, self.dropout = float(width), float(dropout)
        c1, c2, c3 = (max(1, round(c * width)) for c in self.PAPER_CONV)
        f1, f2 = (max(1, round(f * width)) for f in self.PAPER_FC)
        side = image_size // 2 // 2
        self.features = nn.Sequential(
            ImageConv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 5, padding=2), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * side * side, f1), nn.ReLU(inplace=True),
            nn.Linear(f1, f2), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(f2, n_classes),
        )
        self.reset_parameters()

    @classmethod
    def matching(cls, n_params, in_channels=1, image_size=28, n_classes=10, dropout=0.5):
        """The baseline whose parameter count is closest to ``n_params`` (bisection on ``width``).

        Examples
        --------
        >>> net = BaselineCNN.matching(100_000)
        >>> abs(sum(p.numel() for p in net.parameters()) - 100_000) < 5_000
        True
        """
        def count(w):
            return sum(p.numel() for p in cls(in_channels, image_size, n_classes, w, dropout).parameters())

        lo, hi = 1e-3, 1.0
        while count(hi) < n_params:
            hi *= 2
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if count(mid) < n_params else (lo, mid)
        best = min((lo, hi), key=lambda w: abs(count(w) - n_params))
        return cls(in_channels, image_size, n_classes, best, dropout)

    def reset_parameters(self):
        """PyTorch's default initialisation of every convolution and linear layer."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()

    def forward(self, x, y=None):
        """Class logits ``(B, n_classes)`` of images ``x`` ``(B, C, H, W)``; ``y`` is unused."""
        check_images(x, self.in_channels, self.image_size)
        return self.classifier(self.features(x))  # (B, n_classes)

    def loss(self, out, y, step=None):
        """Cross-entropy for labels ``(B,)``; binary cross-entropy for multi-hot ``(B, K)``."""
        if y.dim() == 2:
            return nn.functional.binary_cross_entropy_with_logits(out, y.to(out.dtype))
        return nn.functional.cross_entropy(out, y)

    def scores(self, out):
        """The logits ``(B, n_classes)``."""
        return out

    def routing(self, x):
        """No routed layers: an empty list."""
        return []

    def extra_repr(self):
        return f"width={self.width:.3f}, dropout={self.dropout}"


@register_model("cnn", presets={preset: dict(match_capsnet=preset) for preset in CAPSNET_PRESETS})
def baseline_cnn(in_channels=1, image_size=28, n_classes=10, width=None, dropout=0.5, match_capsnet=None):
    """The :class:`BaselineCNN`, registered as ``"cnn"``; its presets are CapsNet's, matched in size.

    ``get_model("cnn", preset)`` is the baseline whose parameter count is
    closest to that of ``get_model("capsnet", preset)`` for the same images
    and classes (the comparison of Sabour et al. 2017); an explicit ``width``
    replaces the matching.

    Parameters
    ----------
    in_channels, image_size, n_classes : int
        Images ``(C, H, H)`` and classes.
    width : float, optional
        Multiplier of the paper's widths; default: matched to ``match_capsnet``,
        or 1 (the paper's widths) without it.
    dropout : float
        Dropout probability before the last layer.
    match_capsnet : str, optional
        A CapsNet preset whose parameter count the width is matched to.

    Examples
    --------
    >>> net = get_model("cnn", "tiny")
    >>> target = n_parameters(get_model("capsnet", "tiny"))
    >>> abs(n_parameters(net) - target) / target < 0.05
    True
    >>> get_model("cnn", "tiny", width=0.5).width
    0.5
    """
    shape = dict(in_channels=in_channels, image_size=image_size, n_classes=n_classes)
    if width is None and match_capsnet is not None:
        target = n_parameters(get_model("capsnet", match_capsnet, **shape))
        return BaselineCNN.matching(target, dropout=dropout, **shape)
    return BaselineCNN(width=1.0 if width is None else width, dropout=dropout, **shape)
