"""A live status line on stderr while a long run goes on, only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

FIRST_UPDATE = 0.5  # seconds; a shorter run shows no status line (and never imports rich)


class StatusLine:
    """Shows `running: N instructions, T s` every half second; silent on pipes and in CI."""

    def __init__(self, progress: Callable[[], int], label: str = "running") -> None:
        self._progress = progress
        self._label = label
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StatusLine:
        if sys.stderr.isatty():
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        started = time.monotonic()
        if self._done.wait(FIRST_UPDATE):
            return
        from rich.console import Console  # ~50 ms to import: only once a run lasts

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        with console.status("") as status:
            while True:
                status.update(f"{self._label}: {self._progress():,} instructions, {time.monotonic() - started:.1f} s")
                if self._done.wait(FIRST_UPDATE):
                    break
