"""Checking trace records against the documented schema (docs/trace-format.md) before use.

A trace is input like any other: every record is checked field by field, and what is wrong is
named with its line and field, so a hostile or damaged file is one clear error, never a crash.
"""

from __future__ import annotations

from typing import Any

from emulator.errors import TraceFormatError
from emulator.trace.events import KINDS, AllocEvent, HeapState

U64 = (1 << 64) - 1
MAX_BACKTRACE = 4096  # frames kept per event; more is not a trace this tool wrote
MAX_FREE_LIST = 1 << 20


class _Record:
    """One record's fields, with the line it came from for messages."""

    def __init__(self, where: str, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise TraceFormatError(f"{where}: {what} must be an object, not {_kind(data)}")
        self.where, self.data, self.what = where, data, what

    def fail(self, field: str, expected: str) -> TraceFormatError:
        value = self.data.get(field)
        return TraceFormatError(f"{self.where}: {self.what} field '{field}' must be {expected}, not {_show(value)}")

    def has(self, field: str) -> bool:
        return field in self.data and self.data[field] is not None

    def count(self, field: str, default: int | None = None, *, nullable: bool = False) -> int | None:
        if not self.has(field):
            if field in self.data and nullable:
                return None
            if default is None and not nullable:
                raise TraceFormatError(f"{self.where}: {self.what} has no '{field}'")
            return default
        value = self.data[field]
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64):
            raise self.fail(field, "a whole number from 0 to 2^64-1")
        return value

    def address(self, field: str, *, required: bool = False, nullable: bool = True) -> int | None:
        if not self.has(field):
            if required or not nullable:
                raise TraceFormatError(f"{self.where}: {self.what} has no '{field}'")
            return None
        return _address(self, field, self.data[field])

    def text(self, field: str, default: str | None = "", *, nullable: bool = False) -> str | None:
        if not self.has(field):
            return None if nullable else default
        value = self.data[field]
        if not isinstance(value, str):
            raise self.fail(field, "a string")
        return value

    def flag(self, field: str, default: bool) -> bool:
        if field not in self.data:
            return default
        value = self.data[field]
        if not isinstance(value, bool):
            raise self.fail(field, "true or false")
        return value


def _address(record: _Record, field: str, value: Any) -> int:
    if isinstance(value, str) and value[:2] in ("0x", "0X") and 2 < len(value) <= 18:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise record.fail(field, 'an address string such as "0x1000"')


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def header(where: str, data: Any, fmt: str, versions: tuple[int, ...]) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise TraceFormatError(f"{where}: not an aeth-emu trace (no '{fmt}' header)")
    record = _Record(where, data, "the header")
    found = data.get("version")
    if not (isinstance(found, int) and not isinstance(found, bool)):
        raise record.fail("version", "a whole number")
    if found not in versions:
        readable = " and ".join(str(v) for v in versions)
        raise TraceFormatError(f"{where}: trace format version {found}; this aeth-emu reads versions {readable}")
    for field in ("image", "image_sha256", "cmdline", "allocator"):
        record.text(field, nullable=True)
    points = data.get("entry_points", [])
    if not (isinstance(points, list) and all(isinstance(p, str) for p in points)):
        raise record.fail("entry_points", "a list of strings")
    return data


def event(where: str, data: Any) -> AllocEvent:
    r = _Record(where, data, "event")
    kind = r.text("kind", None)
    if kind not in KINDS:
        raise r.fail("kind", "one of " + ", ".join(KINDS))
    backtrace = data.get("backtrace", [])
    if not (isinstance(backtrace, list) and len(backtrace) <= MAX_BACKTRACE and all(isinstance(f, str) for f in backtrace)):
        raise r.fail("backtrace", "a list of strings")
    releases = kind in ("dealloc", "realloc")
    return AllocEvent(
        seq=r.count("seq"), kind=kind, size=r.count("size"), align=r.count("align"),
        ptr=r.address("ptr", required=releases), old_size=r.count("old_size", nullable=kind != "realloc"),
        result=r.address("result"), returned=r.flag("returned", False),
        insn_entry=r.count("insn_entry", 0), insn_return=r.count("insn_return", nullable=True),
        cycles_entry=r.count("cycles_entry", 0), cycles_return=r.count("cycles_return", nullable=True),
        call_site=r.address("call_site") or 0, return_address=r.address("return_address") or 0,
        caller=r.text("caller"), backtrace=tuple(backtrace), depth=r.count("depth", 0),
        heap=_heap(where, data.get("heap")),
    )


def _heap(where: str, data: Any) -> HeapState:
    if data is None:
        return HeapState()
    r = _Record(where, data, "event heap")
    free_list = data.get("free_list", [])
    if not isinstance(free_list, list) or len(free_list) > MAX_FREE_LIST:
        raise r.fail("free_list", "a list of [address, size] pairs")
    pairs = []
    for item in free_list:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], int) and not isinstance(item[1], bool)
                and 0 <= item[1] <= U64):
            raise r.fail("free_list", "a list of [address, size] pairs")
        pairs.append((_address(r, "free_list", item[0]), item[1]))
    return HeapState(used=r.count("used", nullable=True), free=r.count("free", nullable=True),
                     free_blocks=r.count("free_blocks", nullable=True), live_blocks=r.count("live_blocks", 0),
                     live_bytes=r.count("live_bytes", 0), free_list=tuple(pairs))


def violation(where: str, data: Any) -> dict[str, Any]:
    r = _Record(where, data, "violation")
    return {"seq": r.count("seq"), "kind": r.text("kind"), "message": r.text("message")}


def end(where: str, data: Any) -> dict[str, Any]:
    r = _Record(where, data, "end record")
    out: dict[str, Any] = {}
    for field in ("stop_reason",):
        if field in data:
            out[field] = r.text(field)
    for field in ("exit_code", "instructions", "cycles", "live_blocks", "live_bytes"):
        if field in data:
            out[field] = r.count(field)
    return out


def site(where: str, data: Any) -> tuple[int, int | None, str]:
    """A v2 `site` record: [return address, call instruction or null, symbol+offset]."""
    if not (isinstance(data, list) and len(data) == 3):
        raise TraceFormatError(f"{where}: site must be [return_address, call_site, name], not {_show(data)}")
    r = _Record(where, dict(zip(("return_address", "call_site", "name"), data)), "site")
    return _integer(r, "return_address"), _integer(r, "call_site", nullable=True), r.text("name", None) or ""


def _integer(r: _Record, field: str, nullable: bool = False) -> int | None:
    value = r.data.get(field)
    if value is None and nullable:
        return None
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64):
        raise r.fail(field, "a whole number from 0 to 2^64-1")
    return value


# Version 2's event and heap arrays, in order (docs/trace-format.md).
V2_FIELDS = ("seq", "kind", "size", "align", "ptr", "old_size", "result", "returned", "insn_entry", "insn_return",
             "cycles_entry", "cycles_return", "return_address", "depth", "frames", "vector")
V2_OPTIONAL = 1  # the last fields, which traces written before they existed leave out
V2_HEAP = ("used", "free", "free_blocks", "live_blocks", "live_bytes")


def event_v2(where: str, data: Any, heap: Any, sites: dict[int, tuple[int | None, str]]) -> AllocEvent:
    """A v2 event: an array in V2_FIELDS order, its heap an array in V2_HEAP order."""
    if not (isinstance(data, list) and len(V2_FIELDS) - V2_OPTIONAL <= len(data) <= len(V2_FIELDS)):
        raise TraceFormatError(f"{where}: e must be an array of {len(V2_FIELDS)} fields ({', '.join(V2_FIELDS)})")
    if not (isinstance(heap, list) and len(heap) == len(V2_HEAP)):
        raise TraceFormatError(f"{where}: h must be an array of {len(V2_HEAP)} fields ({', '.join(V2_HEAP)})")
    r = _Record(where, dict(zip(V2_FIELDS, data)), "event")
    kind = r.text("kind", None)
    if kind not in KINDS:
        raise r.fail("kind", "one of " + ", ".join(KINDS))
    if r.data["returned"] not in (0, 1) or isinstance(r.data["returned"], bool):
        raise r.fail("returned", "0 or 1")
    frames = r.data["frames"]
    if not (isinstance(frames, list) and len(frames) <= MAX_BACKTRACE and all(
            isinstance(f, int) and not isinstance(f, bool) and 0 <= f <= U64 for f in frames)):
        raise r.fail("frames", "a list of return addresses")
    ret = _integer(r, "return_address")
    releases = kind in ("dealloc", "realloc")
    if releases and r.data["ptr"] is None:
        raise TraceFormatError(f"{where}: event has no 'ptr'")
    if kind == "realloc" and r.data["old_size"] is None:
        raise TraceFormatError(f"{where}: event has no 'old_size'")
    call_site, caller = sites.get(ret, (None, None))
    names = [caller if caller is not None else f"0x{ret:x}"]
    names += [sites.get(f, (None, f"0x{f:x}"))[1] for f in frames]
    h = _Record(where, dict(zip(V2_HEAP, heap)), "event heap")
    return AllocEvent(
        seq=_integer(r, "seq"), kind=kind, size=_integer(r, "size"), align=_integer(r, "align"),
        ptr=_integer(r, "ptr", nullable=True), old_size=_integer(r, "old_size", nullable=True),
        result=_integer(r, "result", nullable=True), returned=bool(r.data["returned"]),
        insn_entry=_integer(r, "insn_entry"), insn_return=_integer(r, "insn_return", nullable=True),
        cycles_entry=_integer(r, "cycles_entry"), cycles_return=_integer(r, "cycles_return", nullable=True),
        call_site=call_site if call_site is not None else ret, return_address=ret, caller=names[0],
        backtrace=tuple(names), frames=tuple(frames), depth=_integer(r, "depth"),
        vector=_integer(r, "vector", nullable=True) if "vector" in r.data else None,
        heap=HeapState(used=h.count("used", nullable=True), free=h.count("free", nullable=True),
                       free_blocks=h.count("free_blocks", nullable=True), live_blocks=h.count("live_blocks", 0),
                       live_bytes=h.count("live_bytes", 0)),
    )


def free_list_change(where: str, data: Any, listed: int) -> tuple[int, int, list[int]]:
    """A v2 event's `f`: [keep, drop, [address, size, ...]] against a free list of `listed` entries."""
    if not (isinstance(data, list) and len(data) == 3 and isinstance(data[2], list)):
        raise TraceFormatError(f"{where}: f must be [keep, drop, [address, size, ...]], not {_show(data)}")
    keep, drop, entries = data
    numbers = [keep, drop, *entries]
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= U64 for n in numbers):
        raise TraceFormatError(f"{where}: f must hold whole numbers from 0 to 2^64-1")
    if len(entries) % 2 or keep + drop > listed or listed - drop + len(entries) // 2 > MAX_FREE_LIST:
        raise TraceFormatError(f"{where}: f changes entries the free list does not have ({listed} entries)")
    return keep, drop, entries
