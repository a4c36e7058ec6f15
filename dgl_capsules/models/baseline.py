"""The convolutional baseline that Sabour et al. 2017 compare CapsNet with."""
from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_positive_int
from ._common import check_images, decode_masked, make_decoder, reconstruction_error
from .capsnet import PRESETS as CAPSNET_PRESETS
from .efficient import PRESETS as EFFICIENT_PRESETS, keras_decoder_init, n_parameters_without_decoder
from .registry import get_model, n_parameters, register_model

__all__ = ["BaselineCNN", "CNNOutput", "baseline_cnn"]


class CNNOutput(NamedTuple):
    """What :meth:`BaselineCNN.forward` returns when the CNN has a decoder.

    Attributes
    ----------
    logits : torch.Tensor
        Class logits ``(B, n_classes)``.
    codes : torch.Tensor
        One ``code_dim`` vector per class ``(B, n_classes, code_dim)``, what the decoder reads.
    reconstruction : torch.Tensor
        Decoder output ``(B, C, H, W)`` in (0, 1).
    inputs : torch.Tensor
        The images ``(B, C, H, W)``.
    """

    logits: torch.Tensor
    codes: torch.Tensor
    reconstruction: torch.Tensor
    inputs: torch.Tensor


def _closest_width(count, n_params):
    """The width multiplier whose ``count(width)`` (parameters, growing with the width) is closest to ``n_params``."""
    lo, hi = 1e-3, 1.0
    while count(hi) < n_params:
        hi *= 2
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < n_params else (lo, mid)
    return min((lo, hi), key=lambda w: abs(count(w) - n_params))


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

    With ``decoder`` widths the CNN also reconstructs its input as the
    capsule networks do: a linear layer maps the last hidden layer to one
    ``code_dim`` vector per class, the decoder ``decoder[0] - ... - C*H*W``
    (ReLU, sigmoid output, the initialisation of
    :func:`~dgl_capsules.models.efficient.keras_decoder_init`) reads the true
    class's vector while training and the predicted class's otherwise (the
    others masked to zero), and the loss adds ``recon_weight`` times the
    summed squared error. The code layer is part of the CNN (it counts in its
    parameters); the decoder is not.

    Parameters
    ----------
    in_channels, image_size, n_classes : int
        Images ``(C, H, H)`` and classes.
    width : float
        Multiplier of the paper's widths.
    dropout : float
        Dropout probability before the last layer.
    fc : (int, int), optional
        Widths of the two hidden fully connected layers, instead of the paper's times ``width``.
    decoder : tuple of int, optional
        Hidden widths of a reconstruction decoder; ``None``: no decoder (the
        output is the logits).
    code_dim : int
        Size of each class's vector for the decoder.
    recon_weight : float
        Weight of the summed squared reconstruction error.

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

    def __init__(self, in_channels=1, image_size=28, n_classes=10, width=1.0, dropout=0.5, fc=None, decoder=None,
                 code_dim=16, recon_weight=0.0005):
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
        if fc is None:
            f1, f2 = (max(1, round(f * width)) for f in self.PAPER_FC)
        elif isinstance(fc, (tuple, list)) and len(fc) == 2:
            f1, f2 = (check_positive_int("fc", f) for f in fc)
        else:
            raise ValueError(f"fc must be None or two positive integers (f1, f2); got {fc!r}")
        self.fc = (f1, f2)
        side = image_size // 2 // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 5, padding=2), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * side * side, f1), nn.ReLU(inplace=True),
            nn.Linear(f1, f2), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(f2, n_classes),
        )
        self.decoder_widths = tuple(decoder or ())
        self.code_dim = check_positive_int("code_dim", code_dim)
        if isinstance(recon_weight, bool) or not isinstance(recon_weight, (int, float)) or not recon_weight >= 0:
            raise ValueError(f"recon_weight must be a number >= 0; got {recon_weight!r}")
        self.recon_weight = float(recon_weight)
        self.code = nn.Linear(f2, n_classes * code_dim) if self.decoder_widths else None
        self.decoder = make_decoder(n_classes * code_dim, self.decoder_widths, in_channels * image_size ** 2)
        self.reset_parameters()

    @classmethod
    def matching(cls, n_params, in_channels=1, image_size=28, n_classes=10, dropout=0.5, **settings):
        """The baseline whose parameter count is closest to ``n_params`` (bisection on ``width``).

        Examples
        --------
        >>> net = BaselineCNN.matching(100_000)
        >>> abs(sum(p.numel() for p in net.parameters()) - 100_000) < 5_000
        True
        """
        def count(w):
            return sum(p.numel() for p in cls(in_channels, image_size, n_classes, w, dropout).parameters())

        if settings:
            return cls._matching_without_decoder(n_params, in_channels, image_size, n_classes, dropout, settings)
        return cls(in_channels, image_size, n_classes, _closest_width(count, n_params), dropout)

    @classmethod
    def _matching_without_decoder(cls, n_params, in_channels, image_size, n_classes, dropout, settings):
        """:meth:`matching` on the parameters outside the decoder, then the second hidden width to within one unit."""
        shape = dict(in_channels=in_channels, image_size=image_size, n_classes=n_classes, dropout=dropout)
        probe = dict(settings, decoder=(1,) if settings.get("decoder") else None)  # a cheap decoder: not counted

        def count(w, fc=None):
            return n_parameters_without_decoder(cls(width=w, fc=fc, **shape, **probe))

        width = _closest_width(count, n_params)
        f1, f2 = cls(width=width, **shape, **probe).fc
        base, per_unit = count(width, (f1, f2)), count(width, (f1, f2 + 1)) - count(width, (f1, f2))
        f2 = max(1, f2 + round((n_params - base) / per_unit))  # the count is linear in f2
        return cls(width=width, fc=(f1, f2), **shape, **settings)

    def reset_parameters(self):
        """PyTorch's default initialisation of every convolution and linear layer; the decoder's is the published
        Efficient-CapsNet one (:func:`~dgl_capsules.models.efficient.keras_decoder_init`)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
        if self.decoder is not None:
            keras_decoder_init(self.decoder)

    def forward(self, x, y=None):
        """Class logits ``(B, n_classes)`` of images ``x`` ``(B, C, H, W)``; with a decoder a :class:`CNNOutput`.

        ``y`` ``(B,)`` chooses the decoded class while training; without it the
        highest logit's class is decoded. Without a decoder ``y`` is unused.
        """
        check_images(x, self.in_channels, self.image_size)
        if self.decoder is None:
            return self.classifier(self.features(x))  # (B, n_classes)
        hidden = self.classifier[:5](self.features(x))  # (B, f2), after the ReLU
        logits = self.classifier[5:](hidden)  # (B, n_classes)
        codes = self.code(hidden).view(-1, self.n_classes, self.code_dim)  # (B, n_classes, code_dim)
        image = (self.in_channels, self.image_size, self.image_size)
        return CNNOutput(logits, codes, decode_masked(self.decoder, codes, logits, y, image), x)

    def loss(self, out, y, step=None):
        """Cross-entropy for labels ``(B,)`` (binary cross-entropy for multi-hot ``(B, K)``), plus with a decoder
        ``recon_weight`` × the summed squared reconstruction error (batch means)."""
        logits = self.scores(out)
        if y.dim() == 2:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
        else:
            loss = nn.functional.cross_entropy(logits, y)
        if isinstance(out, CNNOutput) and self.recon_weight:
            loss = loss + self.recon_weight * reconstruction_error(out.reconstruction, out.inputs)
        return loss

    def scores(self, out):
        """The logits ``(B, n_classes)``."""
        return out.logits if isinstance(out, CNNOutput) else out

    def routing(self, x):
        """No routed layers: an empty list."""
        return []

    def extra_repr(self):
        text = f"width={self.width:.3f}, dropout={self.dropout}"
        if self.decoder is not None:
            text += f", fc={self.fc}, decoder={self.decoder_widths}, recon_weight={self.recon_weight}"
        return text


_PRESETS = {preset: dict(match_capsnet=preset) for preset in CAPSNET_PRESETS}
# Efficient-CapsNet's comparison: its parameter count without the decoder, its decoder and reconstruction loss.
_PRESETS.update({
    "efficient-capsnet": dict(match_efficient="mnist", decoder=EFFICIENT_PRESETS["mnist"]["decoder"],
                              code_dim=EFFICIENT_PRESETS["mnist"]["class_dim"]),
    "efficient-capsnet-tiny": dict(match_efficient="tiny", decoder=EFFICIENT_PRESETS["tiny"]["decoder"],
                                   code_dim=EFFICIENT_PRESETS["tiny"]["class_dim"]),
})


@register_model("cnn", presets=_PRESETS)
def baseline_cnn(in_channels=1, image_size=28, n_classes=10, width=None, dropout=0.5, match_capsnet=None,
                 match_efficient=None, fc=None, decoder=None, code_dim=16, recon_weight=0.0005):
    """The :class:`BaselineCNN`, registered as ``"cnn"``; its presets are matched in size to a capsule network.

    ``get_model("cnn", preset)`` for a CapsNet preset is the baseline whose
    parameter count is closest to that of ``get_model("capsnet", preset)`` for
    the same images and classes (the comparison of Sabour et al. 2017).
    ``get_model("cnn", "efficient-capsnet")`` is the baseline with
    Efficient-CapsNet's decoder and reconstruction loss whose parameters
    outside the decoder are as many as Efficient-CapsNet's (161,824, within
    one unit of the second hidden layer: 0.2 %). An explicit ``width``
    replaces the matching.

    Parameters
    ----------
    in_channels, image_size, n_classes : int
        Images ``(C, H, H)`` and classes.
    width : float, optional
        Multiplier of the paper's widths; default: matched to ``match_capsnet``
        or ``match_efficient``, or 1 (the paper's widths) without them.
    dropout : float
        Dropout probability before the last layer.
    match_capsnet : str, optional
        A CapsNet preset whose parameter count (decoder included) the width is matched to.
    match_efficient : str, optional
        An Efficient-CapsNet preset whose parameter count without the decoder
        is matched, by the width and then the second hidden layer's width.
    fc, decoder, code_dim, recon_weight
        As :class:`BaselineCNN`.

    Examples
    --------
    >>> net = get_model("cnn", "tiny")
    >>> target = n_parameters(get_model("capsnet", "tiny"))
    >>> abs(n_parameters(net) - target) / target < 0.05
    True
    >>> get_model("cnn", "tiny", width=0.5).width
    0.5
    >>> n_parameters_without_decoder(get_model("cnn", "efficient-capsnet"))  # Efficient-CapsNet: 161,824
    161745
    """
    shape = dict(in_channels=in_channels, image_size=image_size, n_classes=n_classes)
    if match_capsnet is not None and match_efficient is not None:
        raise ValueError(f"match_capsnet and match_efficient exclude each other; got {match_capsnet!r} and "
                         f"{match_efficient!r}")
    extra = dict(decoder=decoder, code_dim=code_dim, recon_weight=recon_weight)
    if width is None and match_efficient is not None:
        target = n_parameters_without_decoder(get_model("efficient-capsnet", match_efficient, **shape, decoder=None))
        return BaselineCNN.matching(target, dropout=dropout, **shape, **extra)
    if width is None and match_capsnet is not None and fc is None and not decoder:
        target = n_parameters(get_model("capsnet", match_capsnet, **shape))
        return BaselineCNN.matching(target, dropout=dropout, **shape)
    return BaselineCNN(width=1.0 if width is None else width, dropout=dropout, fc=fc, **shape, **extra)
