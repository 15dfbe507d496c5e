"""Trace files: JSON Lines, a header, the allocator calls, the heap checks' findings, an end record.

Version 2 (written) is compact: an event is one array, call sites and backtrace frames are
named once in `site` records, and the file may be zstd-compressed (a name ending in `.zst`).
Lines are written whole and flushed (as one zstd frame) after every batch of events and at the
end, so a run that faults, stops or is interrupted leaves a valid trace up to its last batch.
Readers take versions 1 and 2, plain or compressed, from a path or a pipe. The format, field by
field: docs/trace-format.md.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from emulator.errors import OutputError, TraceFormatError
from emulator.trace import schema
from emulator.trace.events import AllocEvent
from emulator.trace.freelists import FreeListHistory, HeapAt

FORMAT = "aeth-trace"
FORMAT_VERSION = 2
READS = (1, 2)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Trace:
    header: dict[str, Any]
    events: tuple[AllocEvent, ...]
    end: dict[str, Any] | None = None
    violations: tuple[dict[str, Any], ...] = field(default=())
    free_lists: FreeListHistory = field(default_factory=FreeListHistory, repr=False, compare=False)
    changes_after: dict[int, int] = field(default_factory=dict, repr=False, compare=False)  # seq -> changes

    def heap_at(self, seq: int) -> HeapAt:
        """The heap right after event `seq` (its free list: version 2 rebuilds it from the changes,
        version 1 has the first entries on every line)."""
        event = self.events[seq] if 0 <= seq < len(self.events) and self.events[seq].seq == seq else next(
            (e for e in self.events if e.seq == seq), None)
        if event is None:
            raise IndexError(f"no event #{seq} in this trace")
        h = event.heap
        free_list = self.free_lists.after(self.changes_after[seq]) if seq in self.changes_after else h.free_list
        return HeapAt(seq, self.header.get("allocator"), None, h.used, h.free, h.free_blocks, free_list, (),
                      h.live_blocks, h.live_bytes)


class TraceWriter:
    """Streams a version 2 trace. A write error (a full disk) does not unwind into the emulator:
    it is kept in `error`, later lines are dropped, and `close` reports it once the run is over."""

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.error: OSError | None = None
        self._named: set[int] = set()  # return addresses whose `site` record is written
        self._pending: list[bytes] = []  # whole lines, each ending in a newline
        try:
            self._raw: IO[bytes] = open(self.path, "wb")
        except OSError as exc:
            raise OutputError(f"cannot write trace {self.path}: {exc.strerror}") from None
        self._zstd = None
        if self.path.name.endswith(".zst"):
            import zstandard

            # level 1: on trace lines both faster and smaller than the default 3 (churn=10^6: 34.6 vs 37.3 MB)
            self._zstd = zstandard.ZstdCompressor(level=1).stream_writer(self._raw, closefd=False)
        self._line({"format": FORMAT, "version": FORMAT_VERSION, **header})
        self.flush()

    def _line(self, record: Any) -> None:
        self._pending.append(json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n")

    def event(self, event: AllocEvent) -> None:
        frames = event.frames
        for address, name in ((event.return_address, event.caller), *zip(frames, event.backtrace[1:])):
            if address not in self._named:
                self._named.add(address)
                site = event.call_site if address == event.return_address else None
                self._line({"site": [address, site, name]})
        h = event.heap
        self._line({"e": [event.seq, event.kind, event.size, event.align, event.ptr, event.old_size, event.result,
                          int(event.returned), event.insn_entry, event.insn_return, event.cycles_entry,
                          event.cycles_return, event.return_address, event.depth, list(frames), event.vector],
                    "h": [h.used, h.free, h.free_blocks, h.live_blocks, h.live_bytes]})

    def violation(self, record: dict[str, Any]) -> None:
        self._line({"violation": record})

    def batch(self, sites: list[tuple[int, int, str]], text: bytes, violations: list[dict[str, Any]]) -> None:
        """A batch the native tracer wrote: its new `site` records first (its events name them),
        then its event lines, then its violations; flushed as one whole."""
        for address, call, name in sites:
            if address not in self._named:
                self._named.add(address)
                self._line({"site": [address, call, name]})
        if text:
            self._pending.append(text)
        for record in violations:
            self.violation(record)
        self.flush()

    def flush(self) -> None:
        """Write what is pending as whole lines (one zstd frame) and push it to the file."""
        if self.error is not None or not self._pending:
            self._pending.clear()
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            if self._zstd is not None:
                import zstandard

                self._zstd.write(data)
                self._zstd.flush(zstandard.FLUSH_FRAME)
            else:
                self._raw.write(data)
            self._raw.flush()
        except OSError as exc:
            self.error = exc

    def close(self, end: dict[str, Any] | None = None) -> None:
        if self._raw.closed:
            return
        if end is not None:
            self._line({"end": end})
        self.flush()
        try:
            if os.path.isfile(self.path):
                os.fsync(self._raw.fileno())
            self._raw.close()
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


def _decompressed(stream: BinaryIO) -> BinaryIO:
    """The stream itself, or its zstd-decompressed text when it starts with zstd's magic."""
    if not isinstance(stream, io.BufferedReader):
        stream = io.BufferedReader(stream)  # a raw pipe: peek needs a buffer
    if stream.peek(4)[:4] != ZSTD_MAGIC:
        return stream
    import zstandard

    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True))


def _lines(stream: BinaryIO, name: str):
    """(number, text, whole) for each line; `whole` is False for a last line without its newline
    (or in a zstd frame cut off by a hard kill)."""
    import zstandard

    number = 0
    stream = _decompressed(stream)
    while True:
        try:
            raw = stream.readline(MAX_LINE + 1)
        except zstandard.ZstdError:
            if number:
                return  # the last frame was cut off: keep every whole frame before it
            raise TraceFormatError(f"{name}: not a valid zstd stream: not a trace") from None
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
    head, events, violations, end, sites = None, [], [], None, {}
    free_lists, changes_after, listed = FreeListHistory(), {}, 0  # listed: the free list's length now
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
            head = schema.header(where, record, FORMAT, READS)
            continue
        if head["version"] == 2 and isinstance(record, dict) and record.keys() in ({"e", "h"}, {"e", "h", "f"}):
            event = schema.event_v2(where, record["e"], record["h"], sites)
            if "f" in record:
                keep, drop, entries = schema.free_list_change(where, record["f"], listed)
                free_lists.add(keep, drop, entries)
                listed += len(entries) // 2 - drop
            events.append(event)
            changes_after[event.seq] = len(free_lists)
            continue
        keys = "event, violation or end" if head["version"] == 1 else "e and h (and f), site, violation or end"
        if not isinstance(record, dict) or len(record) != 1:
            raise TraceFormatError(f"{where}: a record must be an object with the keys {keys}")
        (key, body), = record.items()
        if key == "event" and head["version"] == 1:
            events.append(schema.event(where, body))
        elif key == "site" and head["version"] == 2:
            address, call_site, name = schema.site(where, body)
            sites[address] = (call_site, name)
        elif key == "violation":
            violations.append(schema.violation(where, body))
        elif key == "end":
            end = schema.end(where, body)
        else:
            raise TraceFormatError(f"{where}: unknown record {_short(key)} (expected {keys})")
    if head is None:
        raise TraceFormatError(f"{name} is empty, not a trace")
    events.sort(key=lambda e: e.seq)
    return Trace(head, tuple(events), end, tuple(violations), free_lists, changes_after)


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")
