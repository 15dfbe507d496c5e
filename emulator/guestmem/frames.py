"""The kernel's physical frame pool as its FRAME_ALLOCATOR describes it (layout in
docs/kernel-structures.md: u64 fields, then a used and a usable bitmap; frame i is
pool_start + i * 4 KiB)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emulator.guestmem.paging import ADDRESS_MASK, PRESENT, PageTables
from emulator.layout import FRAME_BITMAP_WORDS as BITMAP_WORDS
from emulator.layout import FRAME_USABLE_OFFSET as USABLE_AT
from emulator.layout import FRAME_USED_OFFSET as USED_AT
from emulator.layout import PAGE_SIZE as FRAME


@dataclass(frozen=True)
class FramePool:
    pool_start: int
    pool_end: int
    total: int
    free: int
    used_frames: frozenset[int]  # physical addresses of allocated usable frames
    usable_frames: int

    @property
    def used(self) -> int:
        return len(self.used_frames)


def read_frame_pool(read: Callable[[int, int], bytes], address: int) -> FramePool:
    raw = read(address, USABLE_AT + 8 * BITMAP_WORDS)
    word = lambda at: int.from_bytes(raw[at : at + 8], "little")  # noqa: E731
    start, end, total, free = (word(8 * i) for i in range(4))
    used_bits = int.from_bytes(raw[USED_AT:USABLE_AT], "little")
    usable_bits = int.from_bytes(raw[USABLE_AT:], "little")
    count = min((end - start) // FRAME, BITMAP_WORDS * 64)
    used = frozenset(start + i * FRAME for i in range(count) if (usable_bits >> i) & 1 and (used_bits >> i) & 1)
    return FramePool(start, end, total, free, used, bin(usable_bits).count("1"))


def page_table_frames(tables: PageTables) -> set[int]:
    """Every frame that holds a page table reachable from CR3."""
    found = {tables.root}

    def visit(table: int, depth: int) -> None:
        for value in tables.table(table) or ():
            if value & PRESENT and not tables.maps_a_page(depth, value):
                child = value & ADDRESS_MASK
                if child not in found:
                    found.add(child)
                    visit(child, depth + 1)

    visit(tables.root, 0)
    return found


def mapped_frames(tables: PageTables, start: int, size: int) -> list[int | None]:
    """The frame behind each 4 KiB page of [start, start + size) (None where unmapped)."""
    out: list[int | None] = []
    for va in range(start, start + size, FRAME):
        found = tables.translate(va)
        out.append(None if found is None else found.phys & ~(FRAME - 1))
    return out
