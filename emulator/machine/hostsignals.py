"""Host signals while a guest runs: Ctrl-C (and, for the command line, SIGTERM and SIGHUP)
stop the guest cleanly, so the trace, report and serial output are finished.

Python runs a signal handler only between bytecodes, never inside Unicorn's C loop, so a guest
spinning in native code would not notice a signal. Instead the signals are blocked in the main
thread while the run goes on, and a thread takes them with sigwait and asks the machine to stop.
The command line keeps them blocked until the process ends, so a second Ctrl-C can never cut
its outputs short; the API unblocks them after the run, which then ends `interrupted`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class StopOnSignals:
    """For the main thread only (it changes the process's signal handling); elsewhere it does
    nothing and Python's own KeyboardInterrupt applies. `stop(description)` is called once per
    signal, from the waiter thread."""

    def __init__(self, stop: Callable[[str], None], signals: tuple[int, ...] = (signal.SIGINT,),
                 keep_blocked: bool = False) -> None:
        self._stop = stop
        self._signals = set(signals)
        self._keep_blocked = keep_blocked
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._previous: set[int] | None = None
        self.received: list[int] = []

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._previous = signal.pthread_sigmask(signal.SIG_BLOCK, self._signals)
        self._thread = threading.Thread(target=self._wait, name="stop-on-signals", daemon=True)
        self._thread.start()  # a new thread inherits the blocked mask: only sigwait takes them
        return self

    def _wait(self) -> None:
        while True:
            number = signal.sigwait(self._signals)
            if self._done.is_set():
                return
            self.received.append(number)
            self._stop(f"interrupted by {NAMES.get(number, signal.Signals(number).name)}")

    def __exit__(self, *exc) -> None:
        if self._thread is None or self._keep_blocked:
            return  # the waiter stays, swallowing signals until the process exits
        self._done.set()
        signal.pthread_kill(self._thread.ident, min(self._signals))  # one it waits for: it wakes and ends
        self._thread.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous)
