"""The events of a traced run, kept compactly: the native records of each batch, zstd-compressed,
with the batch's backtrace frames. An `AllocEvent` is built only when someone reads it
(`run.events[i]`, iteration, the stepper), so a run holds a few bytes per call, not an object."""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import zstandard

from emulator.trace import native
from emulator.trace.events import ENTRY_POINTS, AllocEvent, HeapState
from emulator.trace.sites import SiteNames

# kind code -> (kind, the register slot of ptr, size, align and old_size, or None), from ENTRY_POINTS
KINDS_BY_CODE = {
    native.KIND_CODES[kind]: (kind, tuple(names.index(f) if f in names else None
                                          for f in ("ptr", "size", "align", "old_size")))
    for kind, names in ENTRY_POINTS.values()
}
_F = native.INDEX
_CACHED_BATCHES = 2
NOT_YET = (1 << 64) - 1  # a seq whose call has not finished
NO_VECTOR = (1 << 64) - 1  # a call made outside any interrupt or exception handler


def make_event(r: tuple[int, ...], frames, names: SiteNames, insn_base: int) -> AllocEvent:
    """The event a native record describes."""
    kind, slots = KINDS_BY_CODE[r[_F["kind"]]]
    regs = r[_F["a0"]:_F["a3"] + 1]  # rdi, rsi, rdx, rcx
    ptr, size, align, old_size = (None if slot is None else regs[slot] for slot in slots)
    returned = bool(r[_F["flags"]] & native.F_RETURNED)
    ret, at, n = r[_F["ret"]], r[_F["bt_at"]], r[_F["bt_len"]]
    outer = tuple(frames[at:at + n])
    known = returned and r[_F["heap_kind"]] in (native.H_BUMP, native.H_LINKED_LIST)
    used, free, blocks = (r[_F[f]] if known else None for f in ("heap_used", "heap_free", "heap_blocks"))
    return AllocEvent(
        seq=r[_F["seq"]], kind=kind, size=size or 0, align=align or 0, ptr=ptr, old_size=old_size,
        result=r[_F["result"]] if returned and kind != "dealloc" else None, returned=returned,
        insn_entry=insn_base + r[_F["insn_entry"]],
        insn_return=insn_base + r[_F["insn_return"]] if returned else None,
        cycles_entry=r[_F["mc_entry"]] // 1000, cycles_return=r[_F["mc_return"]] // 1000 if returned else None,
        call_site=names.call_site(ret), return_address=ret, caller=names.name(ret),
        backtrace=(names.name(ret), *(names.name(f) for f in outer)), frames=outer, depth=r[_F["depth"]],
        heap=HeapState(used, free, blocks, r[_F["live_blocks"]], r[_F["live_bytes"]]),
        vector=None if r[_F["vector"]] == NO_VECTOR else r[_F["vector"]],
    )


class EventLog(Sequence):
    """Events by sequence number. Calls from the host (`run.call`) may still add to it."""

    def __init__(self, names: SiteNames, insn_base: int) -> None:
        self._names, self._insn_base = names, insn_base
        self._batches: list[tuple[bytes, array, array]] = []  # compressed records, frames, the seq column
        self._where = array("Q")  # seq -> batch << 32 | index in the batch, built when first read
        self._indexed = 0  # batches in _where
        self._count = 0
        self._cache: dict[int, bytes] = {}
        self._zc = zstandard.ZstdCompressor(level=1)
        self._zd = zstandard.ZstdDecompressor()

    def add_batch(self, raw: bytes, frames: array) -> None:
        """A drained batch: records in the order the calls finished (an outer call after its inner ones)."""
        seqs = array("Q", memoryview(raw).cast("Q")[_F["seq"]::len(native.FIELDS)].tolist())
        self._batches.append((self._zc.compress(raw), frames, seqs))
        self._count += len(seqs)

    def _index(self) -> None:
        """seq -> where its record is, for the batches added since the last read (once per batch)."""
        where = self._where
        if len(where) < self._count:
            where.extend([NOT_YET] * (self._count - len(where)))
        for batch in range(self._indexed, len(self._batches)):
            for i, seq in enumerate(self._batches[batch][2]):
                if seq >= len(where):
                    where.extend([NOT_YET] * (seq + 1 - len(where)))
                where[seq] = batch << 32 | i
        self._indexed = len(self._batches)

    def record(self, seq: int) -> tuple[int, ...]:
        """The native record of event `seq` (fields: native.FIELDS)."""
        if self._indexed < len(self._batches):
            self._index()
        at = self._where[seq]
        return native.RECORD.unpack_from(self._raw(at >> 32), (at & 0xFFFFFFFF) * native.RECORD.size)

    def _raw(self, batch: int) -> bytes:
        raw = self._cache.get(batch)
        if raw is None:
            if len(self._cache) >= _CACHED_BATCHES:
                self._cache.pop(next(iter(self._cache)))
            raw = self._cache[batch] = self._zd.decompress(self._batches[batch][0])
        return raw

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if self._indexed < len(self._batches):
            self._index()
        if not 0 <= index < self._count or self._where[index] == NOT_YET:
            raise IndexError("event index out of range (or the call has not finished yet)")
        return make_event(self.record(index), self._batches[self._where[index] >> 32][1], self._names, self._insn_base)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, list, EventLog)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{self._count} allocation events>"
