"""Input checks shared by the image models."""
import torch


def check_images(x, in_channels, image_size):
    """Raise unless ``x`` is a batch of images ``(B, in_channels, image_size, image_size)``."""
    expected = (in_channels, image_size, image_size)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (B, C, H, W) = (B, {', '.join(map(str, expected))}); got {shape}")
