"""A picture of a model's reconstructions next to the digits they reconstruct."""
import math
import os

import torch

__all__ = ["reconstruction_grid"]


def reconstruction_grid(model, dataset, path, n=16):
    """Save a PNG: ``n`` evenly spaced digits of ``dataset`` (upper rows) above their reconstructions (lower rows).

    Parameters
    ----------
    model : torch.nn.Module
        A model with ``reconstruct(out)`` (a CapsNet, or a MatrixCapsNet with a decoder).
    dataset : ImageDataset
        Images and labels (e.g. ``mnist5k().test``).
    path : str or os.PathLike
        The PNG file to write.
    n : int
        Number of digits.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer or the model cannot reconstruct images.

    Examples
    --------
    >>> import os, tempfile, torch, dgl_capsules as dc
    >>> ds = dc.data.ImageDataset(torch.rand(4, 1, 28, 28), torch.arange(4), n_classes=10)
    >>> p = reconstruction_grid(dc.models.CapsNet.from_preset("tiny"), ds, os.path.join(tempfile.mkdtemp(), "r.png"))
    >>> os.path.basename(p)
    'r.png'
    """
    fig = _reconstruction_figure(model, dataset, n)
    fig.savefig(os.fspath(path), dpi=100)
    return os.fspath(path)


def _reconstruction_figure(model, dataset, n):
    from matplotlib.figure import Figure

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    name = type(model).__name__
    if not hasattr(model, "reconstruct"):
        raise ValueError(f"model: {name} cannot reconstruct images (it has no reconstruct method)")
    n = min(n, len(dataset))
    idx = torch.linspace(0, len(dataset) - 1, n).round().long()  # spread over a class-sorted split
    x = dataset.images[idx]
    model.eval()
    with torch.no_grad():
        out = model(x)
        rec, pred = model.reconstruct(out), model.scores(out).argmax(1)
    if rec is None:
        raise ValueError(f"model: this {name} has no decoder, so it cannot reconstruct images")
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(max(cols, 4) * 1.1, rows * 2.3), layout="constrained")
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        for k, (img, title) in enumerate(((x, "digit {}"), (rec, "pred {}"))):
            ax = axes[2 * r + k, c]
            ax.set_axis_off()
            if i < n:
                ax.imshow(img[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                label = int(dataset.labels[idx[i]]) if k == 0 else int(pred[i])
                ax.set_title(title.format(label), fontsize=8)
    fig.suptitle(f"digits (upper) and {name} reconstructions (lower)", fontsize=9)
    return fig
