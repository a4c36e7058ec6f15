"""Files the library writes and reads: atomic writes, and loads that never run code from a file."""
import os

import torch

__all__ = ["save_atomic", "load_file"]


def save_atomic(obj, path):
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it into place.

    A crash in the middle leaves the previous file at ``path`` untouched (the
    temporary file is removed).
    """
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_file(path, name="path"):
    """Load a file written with ``torch.save`` without running code from it (``weights_only=True``).

    Only tensors and plain values (dicts, lists, tuples, strings, numbers)
    load; a file that needs anything else, a truncated or foreign file, is
    refused with one line naming it.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    name : str
        The argument the file came from, named in the errors.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file does not load as tensors and plain values.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} {path!r}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or code-carrying files all end here
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "Weights only load failed" in first or "Unsupported" in str(e):
            why = "it holds Python objects beyond tensors and plain values, which are never unpickled"
        else:
            why = "it is cut short or was not written by torch.save"
        raise ValueError(f"{name} {path!r}: not loaded: {why}") from None
