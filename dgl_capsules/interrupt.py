"""Stopping long work cleanly: Ctrl-C (SIGINT) and SIGTERM ask for a stop at the next safe point.

While a :class:`StopRequests` context is active in the main thread, the first
SIGINT or SIGTERM only records the request; the work checks
:attr:`StopRequests.requested` at its safe points (the end of a training step),
saves what it needs to continue and raises :class:`TrainingInterrupted`. A
second signal stops at once (a plain :class:`TrainingInterrupted` without a
new checkpoint). Outside the main thread nothing changes.

Examples
--------
>>> import os, signal
>>> with StopRequests() as stop:
...     os.kill(os.getpid(), signal.SIGTERM)
...     stop.requested, stop.signal_name
(True, 'SIGTERM')
"""
import signal
import threading

__all__ = ["StopRequests", "TrainingInterrupted"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Work stopped on a signal.

    Attributes
    ----------
    signum : int
        The signal (``signal.SIGINT`` or ``signal.SIGTERM``).
    checkpoint : str or None
        A checkpoint from which the run continues, if one was left.
    where : str
        Where the work stopped, in words (``"after step 37 (epoch 2)"``).
    exit_code : int
        ``128 + signum``, what a shell reports for a process ended by it (130, 143).
    """

    def __init__(self, signum, checkpoint=None, where=""):
        self.signum, self.checkpoint, self.where = int(signum), checkpoint, where
        self.exit_code = 128 + self.signum
        super().__init__(f"{signal.Signals(self.signum).name} {where}".strip())

    @property
    def signal_name(self):
        """``"SIGINT"`` or ``"SIGTERM"``."""
        return signal.Signals(self.signum).name


class StopRequests:
    """Record SIGINT / SIGTERM as a request to stop instead of interrupting; a context manager.

    The previous handlers are restored on exit. A second signal while a
    request is pending raises :class:`TrainingInterrupted` at once.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}

    @property
    def requested(self):
        """Whether a stop was asked for."""
        return self.signum is not None

    @property
    def signal_name(self):
        """The name of the signal that asked for the stop (``None`` if none did)."""
        return None if self.signum is None else signal.Signals(self.signum).name

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise TrainingInterrupted(signum, where="at once (a second signal)")
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
