"""The heap as the allocation events describe it, for any kernel: live blocks, peak, leaks."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from emulator.trace.events import AllocEvent


@dataclass(frozen=True)
class LiveBlock:
    ptr: int
    size: int
    align: int
    seq: int  # the event that allocated it
    caller: str


class EventHeap:
    """Replays events; tolerant of bad ones (the checker reports those, this just keeps count)."""

    def __init__(self) -> None:
        self._live: dict[int, LiveBlock] = {}
        self._starts: list[int] = []  # sorted live pointers, for overlap queries
        self.live_bytes = 0
        self.peak_live_bytes = 0
        self.peak_live_blocks = 0
        self.bytes_requested = 0
        self.counts: dict[str, int] = {}
        self._largest = 1  # bounds how far back an overlap query must look
        # While no two live blocks have ever overlapped, the block that starts last before a
        # range's end is the only one an overlap query needs to look at.
        self._disjoint = True

    def apply(self, event: AllocEvent) -> None:
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        if event.frees and event.ptr is not None:
            self._remove(event.ptr)
        if event.allocates:
            assert event.result is not None
            self.bytes_requested += event.size
            self._add(LiveBlock(event.result, event.size, event.align, event.seq, event.caller))
        self.peak_live_bytes = max(self.peak_live_bytes, self.live_bytes)
        self.peak_live_blocks = max(self.peak_live_blocks, len(self._live))

    def _add(self, block: LiveBlock) -> None:
        if block.ptr in self._live:
            self._remove(block.ptr)
        self._live[block.ptr] = block
        self._largest = max(self._largest, block.size)
        i = bisect.bisect_left(self._starts, block.ptr)
        if self._disjoint:
            before = self._live[self._starts[i - 1]] if i else None
            after = self._starts[i] if i < len(self._starts) else None
            if (before is not None and before.ptr + max(before.size, 1) > block.ptr) or \
                    (after is not None and after < block.ptr + max(block.size, 1)):
                self._disjoint = False
        self._starts.insert(i, block.ptr)
        self.live_bytes += block.size

    def _remove(self, ptr: int) -> None:
        block = self._live.pop(ptr, None)
        if block is not None:
            del self._starts[bisect.bisect_left(self._starts, ptr)]
            self.live_bytes -= block.size

    def get(self, ptr: int) -> LiveBlock | None:
        return self._live.get(ptr)

    def overlapping(self, start: int, size: int) -> LiveBlock | None:
        """A live block sharing a byte with [start, start + size), if any (size 0 counts as 1)."""
        end = start + max(size, 1)
        i = bisect.bisect_left(self._starts, end) - 1
        if self._disjoint and i >= 0:
            block = self._live[self._starts[i]]
            return block if block.ptr + max(block.size, 1) > start else None
        while i >= 0:
            block = self._live[self._starts[i]]
            if block.ptr + max(block.size, 1) > start:
                return block
            if block.ptr + self._largest <= start:
                break
            i -= 1
        return None

    def blocks(self) -> list[LiveBlock]:
        return [self._live[p] for p in self._starts]

    @property
    def live_blocks(self) -> int:
        return len(self._live)
