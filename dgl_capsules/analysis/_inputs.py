"""Input checks the analysis functions share: an image data set, and how many of its samples to use."""
from .._checks import check_positive_int


def check_samples(data, max_samples, least=1):
    """The number of samples of ``data`` to use: all, or the first ``max_samples`` (at least ``least``).

    Raises
    ------
    ValueError
        If ``data`` has no ``images`` and ``labels``, ``max_samples`` is not ``None`` or an integer
        ``>= least``, or ``data`` holds fewer than ``least`` samples.
    """
    if not hasattr(data, "images") or not hasattr(data, "labels"):
        raise ValueError(f"data must be an image data set with .images and .labels (an ImageDataset); got "
                         f"{type(data).__name__}")
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < least):
        raise ValueError(f"max_samples must be None or an integer >= {least}; got {max_samples!r}")
    n = len(data.images) if max_samples is None else min(max_samples, len(data.images))
    if n < least:
        raise ValueError(f"data must hold at least {least} sample(s); got {n}")
    return n


__all__ = ["check_samples", "check_positive_int"]
