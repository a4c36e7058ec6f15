"""Result files of reproduction experiments: one JSON per finished (row, seed), written atomically.

A result is read by :func:`read_result`, which refuses a file that is cut
short, not JSON, or lacks what every result holds; such a file never counts
as a finished run (:func:`~dgl_capsules.reproduce.reproduce` trains it again,
the tables leave it out with a warning naming it).
"""
import json
import numbers
import os

from ..files import write_json

__all__ = ["CorruptResultError", "read_result", "read_record", "check_record", "write_result", "result_path",
           "REQUIRED"]

#: What every result JSON holds (with these types).
REQUIRED = {"experiment": str, "row": str, "seed": int, "test_accuracy": numbers.Real}
_KINDS = {str: "a string", int: "an integer", numbers.Real: "a number"}


class CorruptResultError(ValueError):
    """A result JSON that cannot be read; the message names the file and what is wrong with it."""


def result_path(out, row, seed):
    """``OUT/<row slug>-seed<seed>.json``."""
    return os.path.join(out, f"{row.slug}-seed{seed}.json")


def read_record(path):
    """The JSON object in ``path``, unchecked.

    Raises
    ------
    CorruptResultError
        If the file is not JSON or not a JSON object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CorruptResultError(f"{path}: not a readable result JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(rec, dict):
        raise CorruptResultError(f"{path}: not a readable result JSON (a {type(rec).__name__}, not an object)")
    return rec


def check_record(rec, path):
    """``rec`` if it holds every key of :data:`REQUIRED` with its type, else :class:`CorruptResultError`."""
    for key, kind in REQUIRED.items():
        value = rec.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CorruptResultError(f"{path}: not a readable result JSON ({key} is {value!r}; expected "
                                     f"{_KINDS[kind]})")
    return rec


def read_result(path):
    """The record in the result JSON at ``path``.

    Raises
    ------
    CorruptResultError
        If the file is not JSON, not an object, or lacks one of :data:`REQUIRED`
        (or holds it with another type).
    """
    return check_record(read_record(path), path)


def write_result(path, record):
    """Write ``record`` to ``path`` atomically (a crash leaves the previous file or none, never half of one)."""
    write_json(path, record, indent=1)
