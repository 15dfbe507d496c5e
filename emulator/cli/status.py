"""A live status line on stderr while a long run goes on, only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


class StatusLine:
    """Shows `running: N instructions, T s` every half second; silent on pipes and in CI."""

    def __init__(self, progress: Callable[[], int], label: str = "running") -> None:
        self._console = None
        if sys.stderr.isatty():  # rich is imported only for a terminal: pipes and CI never need it
            from rich.console import Console

            self._console = Console(stderr=True)
        self._progress = progress
        self._label = label
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StatusLine:
        if self._console is not None and self._console.is_terminal:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        started = time.monotonic()
        with self._console.status("") as status:
            while not self._done.wait(0.5):
                status.update(f"{self._label}: {self._progress():,} instructions, {time.monotonic() - started:.1f} s")
