"""Writing what the user asked for, carefully: the serial stream on stdout and the report file.

A regular file is replaced atomically in its own directory; a device, FIFO or `/dev/stdout` is
opened and written, never renamed over; a symlink is followed. A closed pipe on stdout stops the
guest quietly (as Unix tools end on EPIPE); any other write error is one line and exit code 5.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.errors import OutputError, UsageError
from emulator.files import replace_atomically

EPIPE_EXIT = 141  # what a shell reports for a tool ended by SIGPIPE


class SerialStream:
    """Serial bytes to stdout as they come; flushed per line so a pipe sees them live."""

    def __init__(self) -> None:
        self._out = sys.stdout.buffer
        self.on_failure: Callable[[str], None] | None = None  # e.g. stop the guest
        self.closed_by_reader = False
        self.error: OSError | None = None

    def __call__(self, data: bytes) -> None:
        if self.closed_by_reader or self.error is not None:
            return
        try:
            self._out.write(data)
            if b"\n" in data:
                self._out.flush()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if exc.errno == errno.EPIPE:
            self.closed_by_reader = True
            silence_stdout()
            why = "standard output was closed"
        else:
            self.error = exc
            why = f"the serial output could not be written ({exc.strerror})"
        if self.on_failure is not None:
            self.on_failure(why)

    def close(self) -> None:
        if self.closed_by_reader or self.error is not None:
            return
        try:
            self._out.flush()
        except OSError as exc:
            self._failed(exc)

    def check(self) -> None:
        """After the run: a write error is the command's result."""
        if self.error is not None:
            raise OutputError(f"cannot write the serial output to standard output: {self.error.strerror}")


def stdout_console():
    """rich's Console on stdout, except that a reader closing the pipe ends the command as every
    other output does (main(): quietly, exit 141), not with rich's own exit 1."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "standard output was closed")

    return _Console()


def silence_stdout() -> None:
    # Later writes and the interpreter's own flush at exit must not fail on the closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def refuse_overwriting_input(path: str | Path, inputs: tuple[str | Path, ...], what: str) -> None:
    """A report or trace path that names an input file would destroy it: refuse (exit 2)."""
    for source in inputs:
        try:
            if os.path.samefile(path, source):
                raise UsageError(f"{what} {path} is the input {source}; choose another file")
        except OSError:
            continue  # one of them does not exist yet: not the same file


def write_text_file(path: str | Path, text: str, what: str) -> None:
    try:
        standard = _standard_stream(path)
        if standard is not None:  # e.g. /dev/stdout: append to what the process already writes
            standard.flush()
            standard.buffer.write(text.encode("utf-8"))
            standard.flush()
            return
        target = os.path.realpath(path)  # a symlink to a regular file is written through, not replaced
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise OutputError(f"cannot write {what} {path}: it is a directory")
            with open(path, "w", encoding="utf-8") as f:  # a device or FIFO: written, never renamed over
                f.write(text)
            return
        replace_atomically(target, lambda stream: stream.write(text.encode("utf-8")), mode)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {path}: {exc.strerror or exc}") from None


def _standard_stream(path: str | Path):
    """sys.stdout or sys.stderr when `path` names the same open file (as /dev/stdout does)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    for stream in (sys.stdout, sys.stderr):
        try:
            own = os.fstat(stream.fileno())
        except (OSError, ValueError, AttributeError):
            continue
        if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
            return stream
    return None


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    import json  # only a run with a report needs it

    write_text_file(path, json.dumps(report, indent=2) + "\n", "report")
