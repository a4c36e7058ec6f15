"""Result files of reproduction experiments: one JSON per finished (row, seed), written atomically.

A result is read by :func:`read_result`, which refuses a file that is cut
short, not JSON, or lacks what every result holds; such a file never counts
as a finished run (:func:`~dgl_capsules.reproduce.reproduce` trains it again,
the tables leave it out with a warning naming it).
"""
import json
import numbers
import os

from ..files import FolderLock, load_file, write_json

__all__ = ["CorruptResultError", "read_result", "read_record", "check_record", "write_result", "result_path",
           "run_progress", "REQUIRED"]

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


def run_progress(out, row, seed):
    """Where the unfinished run of ``row`` and ``seed`` stands, from its checkpoint in ``OUT/runs/<row slug>-seed<seed>``.

    Returns
    -------
    dict or None
        ``None`` if the run has no checkpoint (not started, or finished and
        cleaned up); else ``epoch`` (epochs finished), ``epochs`` (planned),
        ``batch`` and ``batches`` (where in the next epoch a stopped run
        left off, or ``None``), ``running`` (the PID of the process training
        it now, or ``None``) and ``error`` (why the checkpoint cannot be read,
        or ``None``).
    """
    run_dir = os.path.join(out, "runs", f"{row.slug}-seed{seed}")
    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.isfile(path):
        return None
    out = dict(epoch=None, epochs=None, batch=None, batches=None, running=FolderLock.owner(run_dir), error=None)
    try:
        ckpt = load_file(path, "checkpoint")
        out.update(epoch=int(ckpt["state"]["epoch"]), epochs=int(ckpt["config"]["epochs"]))
        partial = ckpt.get("partial")
        if isinstance(partial, dict) and partial.get("epoch") == out["epoch"]:
            out.update(batch=int(partial["batches"]), batches=int(partial["of"]))
    except (OSError, ValueError) as e:
        out["error"] = str(e)
    except (KeyError, TypeError):
        out["error"] = f"checkpoint {path!r}: not a training checkpoint"
    return out
