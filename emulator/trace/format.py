"""Trace logs: JSON Lines, a header, one line per allocation event, then an end record.

Every line is written whole and flushed at once, so a run that faults or is interrupted
still leaves a valid trace up to that point. Readers accept a trace without its end record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from emulator.errors import OutputError, TraceFormatError
from emulator.trace import schema
from emulator.trace.events import AllocEvent

FORMAT = "aeth-trace"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Trace:
    header: dict[str, Any]
    events: tuple[AllocEvent, ...]
    end: dict[str, Any] | None = None
    violations: tuple[dict[str, Any], ...] = field(default=())


class TraceWriter:
    """Streams a trace: every line written whole and flushed. A write error (a full disk) does not
    unwind into the emulator's hooks: it is kept in `error`, later lines are dropped, and the
    caller reports it once the run is over."""

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.error: OSError | None = None
        try:
            self._file: IO[str] = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write trace {self.path}: {exc.strerror}") from None
        self._line({"format": FORMAT, "version": FORMAT_VERSION, **header})

    def _line(self, record: dict[str, Any]) -> None:
        # One write call per line, then flush: a Ctrl-C between lines never leaves half of one.
        if self.error is not None:
            return
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as exc:
            self.error = exc

    def event(self, event: AllocEvent) -> None:
        self._line({"event": event.to_json()})

    def violation(self, record: dict[str, Any]) -> None:
        self._line({"violation": record})

    def close(self, end: dict[str, Any] | None = None) -> None:
        if self._file.closed:
            return
        if end is not None:
            self._line({"end": end})
        try:
            self._file.flush()
            if os.path.isfile(self.path):
                os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self.error = self.error or exc
        if self.error is not None:
            raise OutputError(f"cannot write trace {self.path}: {self.error.strerror or self.error}")


MAX_LINE = 1 << 20  # bytes: a v1 event line is a few KiB; a longer one is not a trace


def read_trace(source: str | Path | BinaryIO) -> Trace:
    """Read a trace from a path or an open binary stream (a pipe is read once, front to back).

    Every record is checked against the schema; a last line cut off by a hard kill is dropped,
    anything else wrong is a TraceFormatError naming the line and the field."""
    if isinstance(source, (str, Path)):
        name = str(source)
        try:
            with open(source, "rb") as stream:
                return _read(stream, name)
        except FileNotFoundError:
            raise TraceFormatError(f"cannot read trace {name}: no such file") from None
        except IsADirectoryError:
            raise TraceFormatError(f"cannot read trace {name}: it is a directory") from None
        except OSError as exc:
            raise TraceFormatError(f"cannot read trace {name}: {exc.strerror or exc}") from None
    return _read(source, getattr(source, "name", "<stream>"))


def _lines(stream: BinaryIO, name: str):
    """(number, text, whole) for each line; `whole` is False for a last line without its newline."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE:
            raise TraceFormatError(f"{name}:{number}: a line longer than {MAX_LINE} bytes: not a trace")
        whole = raw.endswith(b"\n")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if not whole:
                return  # a last line cut off mid-character
            raise TraceFormatError(f"{name}:{number}: not UTF-8 text: not a trace") from None
        yield number, text, whole


def _read(stream: BinaryIO, name: str) -> Trace:
    head, events, violations, end = None, [], [], None
    for number, text, whole in _lines(stream, name):
        if not text.strip():
            continue  # blank lines (e.g. trailing ones) carry nothing
        where = f"{name}:{number}"
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            if not whole:
                break  # a last line cut off by a hard kill: keep everything before it
            raise TraceFormatError(f"{where}: not a JSON line") from None
        if head is None:
            head = schema.header(where, record, FORMAT, FORMAT_VERSION)
            continue
        if not isinstance(record, dict) or len(record) != 1:
            raise TraceFormatError(f"{where}: a record must be an object with one key: event, violation or end")
        (key, body), = record.items()
        if key == "event":
            events.append(schema.event(where, body))
        elif key == "violation":
            violations.append(schema.violation(where, body))
        elif key == "end":
            end = schema.end(where, body)
        else:
            raise TraceFormatError(f"{where}: unknown record {_short(key)} (expected event, violation or end)")
    if head is None:
        raise TraceFormatError(f"{name} is empty, not a trace")
    events.sort(key=lambda e: e.seq)
    return Trace(head, tuple(events), end, tuple(violations))


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")
