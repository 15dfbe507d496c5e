"""View (a) of a traced run, held in native code: live blocks, peaks and counts, kept by the
checks in emulator/heap/native/liveset.c after every allocator call. Read here on demand; it
answers the same questions as `EventHeap` (which replays events read from a trace file)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from emulator.heap.checker import MAX_KEPT, Violation, describe
from emulator.heap.event_view import LiveBlock
from emulator.trace import native
from emulator.trace.events import AllocEvent

NAMES_BY_CODE = {code: kind for kind, code in native.KIND_CODES.items()}


class LiveSet:
    """A native live-block set. `owner` keeps the memory it lives in (the tracer) alive."""

    def __init__(self, lib: ctypes.CDLL, handle: int, name_of: Callable[[int], str], owner: object = None) -> None:
        self._lib, self._handle, self._name_of, self._owner = lib, handle, name_of, owner

    @classmethod
    def standalone(cls, heap_range: tuple[int, int] | None, check: bool = True,
                   name_of: Callable[[int], str] = lambda ret: f"0x{ret:x}") -> LiveSet:
        """A set of its own, fed with `apply` (tests, and events from the host)."""
        import weakref

        lib = native.load()
        lo, hi = heap_range or (0, 0)
        handle = lib.ls_new(lo, hi, int(check), MAX_KEPT)
        if not handle:
            raise MemoryError("no memory for the live-block set")
        live = cls(lib, handle, name_of)
        weakref.finalize(live, lib.ls_free, handle)
        return live

    def apply(self, event: AllocEvent) -> None:
        """Check and apply one event (its return address names it: `name_of(event.return_address)`)."""
        call = native.Call(event.seq, native.KIND_CODES[event.kind], int(event.returned), event.ptr or 0,
                           event.size, event.old_size or 0, event.align,
                           event.result or 0, event.return_address)
        if self._lib.ls_apply(self._handle, ctypes.byref(call)):
            raise MemoryError("no memory for the live-block set")

    # -- the view ------------------------------------------------------------------------

    @property
    def _stats(self) -> native.Stats:
        return self._lib.ls_stats_of(self._handle).contents

    @property
    def counts(self) -> dict[str, int]:
        """Calls by kind (kinds never called are left out)."""
        counts = self._stats.counts
        return {kind: counts[code] for kind, code in native.KIND_CODES.items() if counts[code]}

    live_blocks = property(lambda self: self._stats.live_blocks)
    live_bytes = property(lambda self: self._stats.live_bytes)
    peak_live_blocks = property(lambda self: self._stats.peak_live_blocks)
    peak_live_bytes = property(lambda self: self._stats.peak_live_bytes)
    bytes_requested = property(lambda self: self._stats.bytes_requested)
    dropped = property(lambda self: self._stats.dropped)  # violations past MAX_KEPT

    def _block(self, b: native.Block) -> LiveBlock:
        return LiveBlock(b.ptr, b.size, b.align, b.seq, self._name_of(b.ret))

    def blocks(self) -> list[LiveBlock]:
        n = self._stats.live_blocks
        out = (native.Block * max(n, 1))()
        got = self._lib.ls_blocks(self._handle, out, n)
        return [self._block(out[i]) for i in range(min(got, n))]

    def get(self, ptr: int) -> LiveBlock | None:
        b = native.Block()
        return self._block(b) if self._lib.ls_get(self._handle, ptr, ctypes.byref(b)) else None

    def overlapping(self, start: int, size: int) -> LiveBlock | None:
        """A live block sharing a byte with [start, start + size), if any (size 0 counts as 1)."""
        b = native.Block()
        return self._block(b) if self._lib.ls_overlapping(self._handle, start, size, ctypes.byref(b)) else None

    def take_violations(self, heap_range: tuple[int, int] | None) -> list[Violation]:
        """The violations found since the last call, with their messages; forgets them."""
        n = self._lib.ls_nviolations(self._handle)
        raw = ctypes.string_at(self._lib.ls_violations(self._handle), n * native.VIOLATION.size) if n else b""
        self._lib.ls_clear_violations(self._handle)
        return self.describe(raw, heap_range)

    def describe(self, raw: bytes, heap_range: tuple[int, int] | None) -> list[Violation]:
        """Violations from native records (native.VIOLATION each)."""
        out = []
        for values in native.VIOLATION.iter_unpack(raw):
            record = dict(zip(native.VIOLATION_FIELDS, values))
            out.append(describe(record, NAMES_BY_CODE.get(record["kind"], "?"), self._name_of, heap_range,
                                native.PROBLEMS))
        return out

