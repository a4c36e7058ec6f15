"""Files the library writes and reads: atomic writes, loads that never run code from a file, folder locks."""
import json
import os
import socket

import torch

__all__ = ["save_atomic", "load_file", "write_text", "write_json", "check_writable_folder", "FolderLock",
           "FolderInUseError"]


def _write_atomic(path, mode, write):
    """``write(f)`` into a temporary file next to ``path``, flushed to disk, then renamed to ``path``."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj, path):
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it into place.

    A crash in the middle leaves the previous file at ``path`` untouched (the
    temporary file is removed).
    """
    _write_atomic(path, "wb", lambda f: torch.save(obj, f))


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
        If the file does not load as tensors and plain values, is a directory
        or cannot be read.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name} {path!r}: is a directory; expected a file written by torch.save "
                         f"(model.pt or checkpoint.pt of a run)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} {path!r}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ValueError(f"{name} {path!r}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - truncated, foreign or code-carrying files all end here
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if ("Weights only load failed" in first or "Unsupported" in str(e)) and "Unsupported operand" not in str(e):
            why = "it holds Python objects beyond tensors and plain values, which are never unpickled"
        else:
            why = "it is cut short or was not written by torch.save"
        raise ValueError(f"{name} {path!r}: not loaded: {why}") from None


def write_text(path, text):
    """Write ``text`` to ``path`` atomically: a temporary file next to it, flushed, then renamed into place.

    A failure or a crash in the middle leaves the previous file (or none) at
    ``path``, never a half-written one.
    """
    _write_atomic(path, "w", lambda f: f.write(text))


def write_json(path, obj, indent=2):
    """``obj`` as JSON at ``path``, written atomically (:func:`write_text`); the text is made before the file."""
    write_text(path, json.dumps(obj, indent=indent))


def check_writable_folder(path, name="out", what="a directory"):
    """Raise ``ValueError`` naming ``name`` unless ``path`` is a directory this process may write, or may create.

    Examples
    --------
    >>> import os, tempfile
    >>> check_writable_folder(os.path.join(tempfile.mkdtemp(), "new", "run"))
    >>> check_writable_folder(__file__, "out", "a directory for the run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: out '...files.py' is a file; expected a directory for the run
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a file; expected {what}")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{name} {path!r} cannot be created: {existing!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path!r} cannot be written: no permission to write in {existing!r}")


class FolderInUseError(RuntimeError):
    """Another live process holds the folder's lock file; the message names the folder, the PID and the file."""


class FolderLock:
    """A folder that belongs to one process at a time: a lock file holding the owner's PID.

    :meth:`acquire` creates ``folder/.lock`` and holds an exclusive
    ``flock`` on it for as long as the process runs, so the kernel frees it
    when the process ends, however it ends (even ``SIGKILL``). A lock file
    whose owner has ended is stale: it is taken over with one line through
    ``log`` naming the PID. A lock held by a live process is refused with
    :class:`FolderInUseError`.

    Parameters
    ----------
    folder : str
        The folder (created by :meth:`acquire` if missing).
    name : str
        The argument the folder came from, named in the messages.
    log : callable
        Receives the one line about a stale lock taken over.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with FolderLock(folder) as lock:
    ...     print(open(lock.path).read().split()[0] == str(os.getpid()))
    True
    >>> os.listdir(folder)
    []
    """

    FILE = ".lock"

    def __init__(self, folder, name="out", log=print):
        self.folder, self.name, self.log = os.fspath(folder), name, log
        self.path = os.path.join(self.folder, self.FILE)
        self._fd = None
        self._created = False

    def acquire(self):
        """Take the lock; return ``self``.

        Raises
        ------
        FolderInUseError
            If a live process holds it.
        """
        import fcntl

        self._created = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _read_owner(fd)
                os.close(fd)
                self._remove_created_folder()
                raise FolderInUseError(
                    f"{self.name} {self.folder!r} is in use by another run (PID {owner or 'unknown'}, lock file "
                    f"{self.path}); wait for it to end or stop it") from None
            try:
                same = os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if same:  # not a file that its owner removed while this process opened it
                break
            os.close(fd)
        owner = _read_owner(fd)
        if owner and owner != str(os.getpid()):
            self.log(f"{self.name} {self.folder!r}: taking over the lock of PID {owner}, which has ended "
                     f"({self.path})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self):
        """Remove the lock file and free the lock (and the folder, if :meth:`acquire` made it and it is empty)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        self._remove_created_folder()

    def _remove_created_folder(self):
        if self._created:
            try:
                os.rmdir(self.folder)  # only if empty
            except OSError:
                pass

    @classmethod
    def owner(cls, folder):
        """The PID (a string) of the live process that holds ``folder``'s lock, or ``None`` if none does.

        Examples
        --------
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> FolderLock.owner(folder) is None
        True
        >>> with FolderLock(folder):
        ...     print(FolderLock.owner(folder) == str(os.getpid()))
        True
        """
        import fcntl

        try:
            fd = os.open(os.path.join(os.fspath(folder), cls.FILE), os.O_RDONLY)
        except OSError:  # no lock file: nobody holds it
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_owner(fd) or "unknown"
        finally:
            os.close(fd)  # closing frees a shared lock this call took
        return None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_owner(fd):
    """The PID written in an open lock file, or ``None``."""
    try:
        words = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        return None
    return words[0] if words and words[0].isdigit() else None
