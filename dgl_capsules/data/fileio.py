"""Reading the bytes of data files: gzip recognised by content, every failure naming the file and what was expected.

A file whose bytes start with the gzip magic number is decompressed whatever
its name, and one that does not is read as it is, also under a ``.gz`` name
(files are renamed and decompressed by hand more often than they are damaged).

Examples
--------
>>> import gzip, os, tempfile
>>> folder = tempfile.mkdtemp()
>>> with open(os.path.join(folder, "plain.gz"), "wb") as f:
...     _ = f.write(b"not compressed")
>>> read_bytes(os.path.join(folder, "plain.gz"), "an IDX file")
b'not compressed'
>>> with open(os.path.join(folder, "cut.gz"), "wb") as f:
...     _ = f.write(gzip.compress(b"x" * 1000)[:20])
>>> read_bytes(os.path.join(folder, "cut.gz"), "an IDX file")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: .../cut.gz: gzip data cut short or damaged (Compressed file ended before the end-of-stream marker was reached); expected an IDX file, gzip-compressed or not
"""
import gzip
import os
import zlib

__all__ = ["read_bytes"]

_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path, expected):
    """The bytes of ``path``, decompressed if they are gzip data.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    expected : str
        What the file should be, for the message (``"an IDX file"``).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If gzip data are cut short or damaged, or the file cannot be read.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory; expected {expected}") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; expected {expected}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror}); expected {expected}") from None
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: gzip data cut short or damaged ({e}); expected {expected}, gzip-compressed "
                         f"or not") from None
