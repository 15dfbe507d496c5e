"""The host view of FRAME_ALLOCATOR and the frame classification, on synthetic bytes (no emulator)."""

from __future__ import annotations

import pytest

from emulator.errors import GuestMemoryError
from emulator.guestmem.frames import mapped_frames, page_table_frames, read_frame_pool
from emulator.guestmem.paging import HUGE, NX, PRESENT, WRITABLE, PageTables
from emulator.layout import FRAME_BITMAP_WORDS as BITMAP_WORDS
from emulator.layout import FRAME_USABLE_OFFSET as USABLE_AT
from emulator.layout import FRAME_USED_OFFSET as USED_AT
from emulator.layout import HEAP_START

pytestmark = pytest.mark.unit

POOL_START, POOL_END = 0x10_0000, 0x210_0000
FA = 0x0230_0000  # where the synthetic FRAME_ALLOCATOR lives


def allocator_bytes(used: set[int], usable: set[int], total: int, free: int, pool_end: int = POOL_END) -> bytes:
    """FRAME_ALLOCATOR as frame.s lays it out; `used`/`usable` are frame indices."""
    head = b"".join(v.to_bytes(8, "little") for v in (POOL_START, pool_end, total, free, 0))
    used_bits = sum(1 << i for i in used)
    usable_bits = sum(1 << i for i in usable)
    raw = head + used_bits.to_bytes(8 * BITMAP_WORDS, "little") + usable_bits.to_bytes(8 * BITMAP_WORDS, "little")
    assert len(raw) == USABLE_AT + 8 * BITMAP_WORDS and len(head) == USED_AT
    return raw


def reader_at(base: int, blob: bytes):
    def read(addr: int, size: int) -> bytes:
        if addr < base or addr + size > base + len(blob):
            raise GuestMemoryError(f"0x{addr:x} outside the fake memory")
        return blob[addr - base : addr - base + size]

    return read


def test_used_frames_are_allocated_ram_frames_only():
    # Frames 0..2 allocated; 8190..8191 not RAM (marked used as frame.s does, but not usable).
    usable = set(range(8190))
    used = {0, 1, 2, 8190, 8191}
    pool = read_frame_pool(reader_at(FA, allocator_bytes(used, usable, total=8190, free=8187)), FA)
    assert pool.used_frames == {POOL_START, POOL_START + 0x1000, POOL_START + 0x2000}
    assert (pool.total, pool.free, pool.used, pool.usable_frames) == (8190, 8187, 3, 8190)
    assert (pool.pool_start, pool.pool_end) == (POOL_START, POOL_END)


def test_last_frame_of_the_bitmap_maps_to_the_pools_last_page():
    pool = read_frame_pool(reader_at(FA, allocator_bytes({8191}, set(range(8192)), 8192, 8191)), FA)
    assert pool.used_frames == {POOL_END - 0x1000}


def test_bits_beyond_a_shorter_pool_end_are_ignored():
    everything = set(range(8192))
    pool = read_frame_pool(reader_at(FA, allocator_bytes(everything, everything, 16, 0, POOL_START + 16 * 0x1000)), FA)
    assert pool.used == 16 and max(pool.used_frames) == POOL_START + 15 * 0x1000


def test_reading_past_memory_raises_value_error():
    blob = allocator_bytes(set(), set(), 0, 0)[:-8]  # one word short
    try:
        read_frame_pool(reader_at(FA, blob), FA)
    except GuestMemoryError as err:
        assert "outside" in str(err)
    else:
        raise AssertionError("a truncated FRAME_ALLOCATOR must not be read as valid")


class Phys:
    """Page tables in pool frames; data pages are only addresses, never read."""

    def __init__(self) -> None:
        self.mem = bytearray(0x20_0000)
        self.base = POOL_START
        self.next = POOL_START

    def read(self, addr: int, size: int) -> bytes:
        off = addr - self.base
        if off < 0 or off + size > len(self.mem):
            raise GuestMemoryError(f"0x{addr:x} outside RAM")
        return bytes(self.mem[off : off + size])

    def frame(self) -> int:
        self.next += 0x1000
        return self.next - 0x1000

    def entry(self, table: int, index: int, value: int | None = None) -> int:
        at = table - self.base + 8 * index
        if value is not None:
            self.mem[at : at + 8] = value.to_bytes(8, "little")
        return int.from_bytes(self.mem[at : at + 8], "little")

    def map(self, root: int, va: int, phys: int, depth: int = 3) -> None:
        table = root
        for level, shift in enumerate((39, 30, 21, 12)):
            index = (va >> shift) & 0x1FF
            if level == depth:
                self.entry(table, index, phys | PRESENT | WRITABLE | NX | (HUGE if depth < 3 else 0))
                return
            value = self.entry(table, index)
            if not value & PRESENT:
                value = self.entry(table, index, self.frame() | PRESENT | WRITABLE)
            table = value & 0x000F_FFFF_FFFF_F000


def test_classify_used_frames_into_tables_and_heap():
    phys = Phys()
    root = phys.frame()
    phys.map(root, 0x20_0000, 0x20_0000, depth=2)  # a 2 MiB identity page: target is not a table
    heap_va = HEAP_START
    heap = [phys.frame() for _ in range(4)]
    for i, frame in enumerate(heap):
        phys.map(root, heap_va + i * 0x1000, frame)
    tables = PageTables(phys.read, root)
    table_frames = page_table_frames(tables)
    # root; PDPT+PD for 0x200000; PDPT+PD+PT for the heap
    assert len(table_frames) == 6 and root in table_frames
    assert not table_frames & set(heap) and 0x20_0000 not in table_frames
    assert mapped_frames(tables, heap_va - 0x1000, 6 * 0x1000) == [None, *heap, None]
    # The pool marks exactly these as used: the classification accounts for every used frame.
    used = {(f - POOL_START) // 0x1000 for f in table_frames | set(heap)}
    pool = read_frame_pool(reader_at(FA, allocator_bytes(used, set(range(8192)), 8192, 8192 - len(used))), FA)
    assert pool.used_frames == table_frames | set(heap)


def test_page_table_frames_tolerate_a_table_outside_ram_and_cycles():
    phys = Phys()
    root = phys.frame()
    phys.entry(root, 1, 0x7000_0000 | PRESENT)  # PDPT outside RAM: listed, not followed
    phys.entry(root, 2, root | PRESENT)  # self-reference: must not loop
    assert page_table_frames(PageTables(phys.read, root)) == {root, 0x7000_0000}
