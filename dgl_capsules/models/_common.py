"""Input checks and the reconstruction decoder shared by the image models."""
from torch import nn

from .. import _checks
from .._checks import check_positive_int


def check_images(x, in_channels, image_size):
    """Raise unless ``x`` is a float batch of images ``(B, in_channels, image_size, image_size)``.

    ``TypeError`` for anything but a floating-point tensor, ``ValueError`` for another shape.
    """
    _checks.check_images("x", x, in_channels, image_size)


def make_decoder(in_features, widths, out_features):
    """``Linear-ReLU`` per hidden width, then ``Linear-Sigmoid`` to ``out_features``; ``None`` without widths."""
    layers, width = [], in_features
    for w in widths:
        check_positive_int("decoder widths", w)
        layers += [nn.Linear(width, w), nn.ReLU(inplace=True)]
        width = w
    if not layers:
        return None
    return nn.Sequential(*layers, nn.Linear(width, out_features), nn.Sigmoid())


def decode_masked(decoder, poses, scores, y, image_shape):
    """Decode the class capsules ``poses`` ``(B, K, D)`` with all but one (or the multi-hot ``y``) masked.

    The kept capsule is the true class ``y`` ``(B,)`` while training, else the
    highest of ``scores`` ``(B, K)``. Returns images ``(B, *image_shape)``.
    """
    n_classes = poses.shape[1]
    if y is None:
        mask = nn.functional.one_hot(scores.argmax(1), n_classes)
    elif y.dim() == 1:
        mask = nn.functional.one_hot(y.long(), n_classes)
    else:
        mask = y
    masked = (poses * mask.to(poses.dtype).unsqueeze(-1)).flatten(1)  # (B, K * D)
    return decoder(masked).view(-1, *image_shape)  # (B, C, H, W)


def reconstruction_error(reconstruction, inputs):
    """Squared error summed over pixels, averaged over the batch."""
    return (reconstruction - inputs).pow(2).flatten(1).sum(1).mean()
