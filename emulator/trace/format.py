"""Trace logs: JSON Lines, a header, one line per allocation event, then an end record.

Every line is written whole and flushed at once, so a run that faults or is interrupted
still leaves a valid trace up to that point. Readers accept a trace without its end record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from emulator.errors import TraceFormatError, UsageError
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
    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        try:
            self._file: IO[str] = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write trace {self.path}: {exc.strerror}") from None
        self._line({"format": FORMAT, "version": FORMAT_VERSION, **header})

    def _line(self, record: dict[str, Any]) -> None:
        # One write call per line, then flush: a Ctrl-C between lines never leaves half of one.
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def event(self, event: AllocEvent) -> None:
        self._line({"event": event.to_json()})

    def violation(self, record: dict[str, Any]) -> None:
        self._line({"violation": record})

    def close(self, end: dict[str, Any] | None = None) -> None:
        if self._file.closed:
            return
        if end is not None:
            self._line({"end": end})
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def read_trace(path: str | Path) -> Trace:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TraceFormatError(f"{path} is not a trace (not UTF-8 text)") from None
    if not lines:
        raise TraceFormatError(f"{path} is empty, not a trace")
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a last line cut off by a hard kill: keep everything before it
            raise TraceFormatError(f"{path}:{number}: not a JSON line") from None
    header = records[0]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TraceFormatError(f"{path} is not an aeth-emu trace (no '{FORMAT}' header)")
    if header.get("version") != FORMAT_VERSION:
        raise TraceFormatError(f"{path} is trace format version {header.get('version')}; this aeth-emu reads {FORMAT_VERSION}")
    events, violations, end = [], [], None
    try:
        for record in records[1:]:
            if "event" in record:
                events.append(AllocEvent.from_json(record["event"]))
            elif "violation" in record:
                violations.append(record["violation"])
            elif "end" in record:
                end = record["end"]
    except (TypeError, ValueError, KeyError) as exc:
        raise TraceFormatError(f"{path}: malformed event ({exc})") from None
    events.sort(key=lambda e: e.seq)
    return Trace(header, tuple(events), end, tuple(violations))
