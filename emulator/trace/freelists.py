"""The guest's free list at any event, rebuilt from the changes recorded after every call.

The native walk (emulator/heap/native/guestwalk.c) compares each call's free list with the one
before and records only the difference: keep the first `keep` entries, drop the next `drop`,
put `entries` in their place. Any event's list is the first changes replayed in order. Replays
start from the nearest list kept on the way (one every CHECKPOINT changes, made when a replay
first passes it), so a query costs at most CHECKPOINT changes; stepping forward reuses the last
answer.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

CHECKPOINT = 512  # changes between kept lists
CHANGE = struct.Struct("<QQQQQ")  # guestwalk.h's gw_change: seq, keep, drop, at, len


@dataclass(frozen=True)
class HeapAt:
    """The heap right after one event, as the guest's structures and the events say."""

    seq: int
    allocator: str | None  # "bump", "linked_list", "unknown", or None (not readable then)
    heap_size: int | None
    used: int | None
    free: int | None
    free_blocks: int | None
    free_list: tuple[tuple[int, int], ...]  # (address, size) in the guest's list order
    problems: tuple[str, ...]
    live_blocks: int  # from events
    live_bytes: int

    @property
    def largest_free_block(self) -> int:
        return max((size for _, size in self.free_list), default=0)

    @property
    def fragmentation(self) -> float:
        """1 − largest free block / total free (0 when free memory is one block, or none)."""
        return 0.0 if not self.free else 1 - self.largest_free_block / self.free


class FreeListHistory:
    """Free-list changes in the order they were recorded (the order calls finished)."""

    def __init__(self) -> None:
        self._chunks: list[tuple[bytes, array]] = []  # native batches not unpacked yet
        self._keep = array("Q")
        self._drop = array("Q")
        self._at = array("Q")  # first entry of each change in _entries (pairs)
        self._len = array("Q")
        self._entries = array("Q")  # address, size, address, size, ...
        self._kept: dict[int, array] = {0: array("Q")}  # change count -> the flat list after that many changes
        self._last: tuple[int, list[int]] = (0, [])

    def __len__(self) -> int:
        self._unpack()
        return len(self._keep)

    def add_native(self, changes: bytes, entries: array) -> None:
        """A batch of changes as the native walk left them (CHANGE records, their pairs in `entries`);
        unpacked when first asked for, so tracing does no work per change here."""
        if changes:
            self._chunks.append((changes, entries))

    def _unpack(self) -> None:
        for changes, entries in self._chunks:
            for _seq, keep, drop, at, n in CHANGE.iter_unpack(changes):
                self.add(keep, drop, entries[2 * at:2 * (at + n)])
        self._chunks.clear()

    def add(self, keep: int, drop: int, entries) -> None:
        """One change: `entries` is flat (address, size, ...)."""
        self._keep.append(keep)
        self._drop.append(drop)
        self._at.append(len(self._entries))
        self._len.append(len(entries) // 2)
        self._entries.extend(entries)

    def after(self, changes: int) -> tuple[tuple[int, int], ...]:
        """The list once the first `changes` changes are applied."""
        if not 0 <= changes <= len(self):  # (unpacks what was added natively)
            raise IndexError(f"{changes} changes asked for, {len(self)} recorded")
        kept = changes - changes % CHECKPOINT
        while kept not in self._kept:
            kept -= CHECKPOINT
        start, flat = self._last
        if not kept <= start <= changes:
            start, flat = kept, self._kept[kept]
        flat = list(flat)  # a copy: the kept lists and the last answer stay as they were
        for i in range(start, changes):
            at, n = self._at[i], self._len[i]
            keep, drop = 2 * self._keep[i], 2 * self._drop[i]
            flat[keep:keep + drop] = self._entries[at:at + 2 * n]
            if (i + 1) % CHECKPOINT == 0 and i + 1 not in self._kept:
                self._kept[i + 1] = array("Q", flat)
        self._last = (changes, flat)
        return tuple(zip(flat[::2], flat[1::2]))
