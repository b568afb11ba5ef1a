"""Ctrl-C during apply: finish the step in flight, start nothing new, then say what was done.

Python's default turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be:
between ``scancel`` of a disaggregated stack's decode pool and ``sbatch`` of its replacement, the
stack is left without decode workers and the state cannot tell. So while an apply runs, the first
SIGINT only *requests* a stop: apply loops ask :func:`stop_requested` before each change and
record the rest as not started. A second SIGINT is the user insisting; it raises
``KeyboardInterrupt`` as usual, and the engine marks the change in flight as interrupted in state.

The flag is process-wide because signals are; this module has no dependencies so providers and
the engine can both ask it without importing each other.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Callable

_requested = threading.Event()


def stop_requested() -> bool:
    """True once the user pressed Ctrl-C during this apply: start no further change."""
    return _requested.is_set()


class GracefulInterrupt:
    """Context manager that turns the first SIGINT into a stop request (main thread only).

    ``notify`` gets one sentence when the first SIGINT arrives, so the user knows the command
    heard them and why it has not stopped yet. Outside the main thread (tests, embedded use) the
    handler cannot be installed and SIGINT keeps its default behaviour.
    """

    def __init__(self, notify: Callable[[str], None]):
        self.notify = notify
        self._previous: object = None
        self._installed = False

    def __enter__(self) -> "GracefulInterrupt":
        _requested.clear()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._installed = False

    @property
    def requested(self) -> bool:
        return _requested.is_set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        self.notify(
            "Interrupt received: finishing the change in flight, then stopping (nothing new is started). "
            "Press Ctrl-C again to stop at once; the change in flight is then recorded as interrupted."
        )
