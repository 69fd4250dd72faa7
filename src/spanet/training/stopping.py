"""Turn SIGINT/SIGTERM into a polite request: the loop finishes its step, checkpoints and returns.

A second SIGINT while a stop is pending raises `KeyboardInterrupt` at once, for when the checkpoint itself hangs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["StopRequest"]


class StopRequest:
    """A flag set by SIGINT/SIGTERM while `installed()` is active (handlers are restored afterwards)."""

    def __init__(self, *, announce: Callable[[str], None] = print) -> None:
        self._announce = announce
        self.signal_name: str | None = None

    def requested(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, frame: FrameType | None = None) -> None:
        """Signal handler (also callable directly, e.g. from tests)."""
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self._announce(f"{self.signal_name} received: finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Install the handlers for the duration of a run (only possible from the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
