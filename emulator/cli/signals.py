"""Ctrl-C while the guest runs: stop the guest, then finish the outputs.

Python runs a SIGINT handler only between bytecodes, never inside Unicorn's C loop, so a
guest spinning in native code would not notice Ctrl-C. Instead SIGINT is blocked while the
run and the writing of its outputs go on, and a thread takes it with sigwait and asks the
machine to stop. Later presses only ask again, harmlessly; SIGINT stays blocked until the
process ends (the command-line tool ends right after its outputs are written), so a second
Ctrl-C can never cut the trace, report or serial output short.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


class StopOnCtrlC:
    """For the command-line tool's main thread only (it changes the process's SIGINT handling)."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._thread: threading.Thread | None = None
        self._done = False
        self.presses = 0

    def __enter__(self) -> StopOnCtrlC:
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
            return self  # elsewhere Python's own KeyboardInterrupt still applies
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        self._thread = threading.Thread(target=self._wait, name="ctrl-c", daemon=True)
        self._thread.start()
        return self

    def _wait(self) -> None:
        while True:
            signal.sigwait({signal.SIGINT})
            self.presses += 1
            if not self._done:
                self._stop()

    def __exit__(self, *exc) -> None:
        self._done = True  # the waiter stays, swallowing presses until the process exits
