"""Helpers for the tests: learnable little images, an autograd function with a wrong gradient, and the
graph helpers of :mod:`dgl_capsules.testing`."""
import torch

from dgl_capsules.data import ImageDataset, Splits
from dgl_capsules.testing import dense_mask, dense_to_edge, edge_to_dense, permuted  # noqa: F401


def band_splits(n_train, seed=0):
    """Learnable little 28x28 images for training tests: the class is the row of a bright band."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n) % 10
        x = 0.1 * torch.rand(n, 1, 28, 28, generator=g)
        for i in range(n):
            x[i, 0, 2 * y[i] + 3:2 * y[i] + 6, 4:24] = 1.0
        return ImageDataset(x, y, 10)

    return Splits(make(n_train), make(20), make(20))


class DoubleGradient(torch.autograd.Function):
    """The identity with twice the true gradient: what a gradient check must catch."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad
