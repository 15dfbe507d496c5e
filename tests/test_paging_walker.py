"""The host page-table walker over synthetic tables built in Python bytes (no emulator)."""

from __future__ import annotations

import pytest

from emulator.errors import GuestMemoryError
from emulator.guestmem.paging import HUGE, NX, PRESENT, USER, WRITABLE, PageTables, Region, WalkFailure
from emulator.layout import HEAP_START

pytestmark = pytest.mark.unit

P, W, U = PRESENT, WRITABLE, USER
PAT = 0x80  # bit 7 of a PT entry is PAT, not a page size


class FakePhys:
    """Guest physical memory of `size` bytes; tables are handed out from 0x1000 upwards."""

    def __init__(self, size: int = 0x40000) -> None:
        self.mem = bytearray(size)
        self.next_frame = 0x1000
        self.root = self.table()

    def read(self, addr: int, size: int) -> bytes:
        if addr < 0 or addr + size > len(self.mem):
            raise GuestMemoryError(f"0x{addr:x} outside RAM")
        return bytes(self.mem[addr : addr + size])

    def table(self) -> int:
        frame = self.next_frame
        self.next_frame += 0x1000
        return frame

    def get(self, table: int, index: int) -> int:
        return int.from_bytes(self.mem[table + 8 * index : table + 8 * index + 8], "little")

    def set(self, table: int, index: int, value: int) -> None:
        self.mem[table + 8 * index : table + 8 * index + 8] = value.to_bytes(8, "little")

    def map(self, va: int, phys: int, size: int, leaf: int = P | W, upper: int = P | W | U) -> list[int]:
        """Map one page of `size` (4 KiB, 2 MiB or 1 GiB); return the tables walked through."""
        depth = {0x1000: 3, 0x20_0000: 2, 0x4000_0000: 1}[size]
        table, tables = self.root, [self.root]
        for level, shift in enumerate((39, 30, 21, 12)):
            index = (va >> shift) & 0x1FF
            if level == depth:
                self.set(table, index, phys | leaf | (HUGE if depth < 3 else 0))
                return tables
            entry = self.get(table, index)
            if not entry & P:
                entry = self.table() | upper
            else:
                entry |= upper  # later mappings may widen the upper levels, as a kernel would
            self.set(table, index, entry)
            table = entry & 0x000F_FFFF_FFFF_F000
            tables.append(table)
        raise AssertionError("unreachable")

    def walker(self, cr3_low_bits: int = 0) -> PageTables:
        return PageTables(self.read, self.root | cr3_low_bits)


def test_4k_page_translates_with_offset_and_names_each_level():
    mem = FakePhys()
    va = HEAP_START + 0x123
    tables = mem.map(va & ~0xFFF, 0x10_6000, 0x1000, P | W | NX)
    t = mem.walker().translate(va)
    assert t.phys == 0x10_6123 and t.page_size == 0x1000
    assert t.perms == "rw-" and not t.user  # leaf has no U bit
    assert [e.level for e in t.entries] == ["PML4", "PDPT", "PD", "PT"]
    assert [e.index for e in t.entries] == [136, 273, 34, 64]
    assert [e.table for e in t.entries] == tables
    assert t.entries[-1].value == 0x10_6000 | P | W | NX


def test_2m_page_keeps_the_low_21_bits():
    mem = FakePhys()
    mem.map(0x0220_0000, 0x0220_0000, 0x20_0000, P)
    t = mem.walker().translate(0x0231_2345)
    assert t.phys == 0x0231_2345 and t.page_size == 0x20_0000
    assert t.perms == "r-x"
    assert [e.level for e in t.entries] == ["PML4", "PDPT", "PD"]
    assert t.entries[-1].index == 0x0220_0000 >> 21


def test_1g_page_keeps_the_low_30_bits_and_ignores_low_address_bits_of_the_entry():
    mem = FakePhys()
    mem.map(0x40_0000_0000, 0x8000_0000, 0x4000_0000, P | W)
    # Bits 12..29 of a 1 GiB entry are reserved/PAT: they must not leak into the address.
    leaf = mem.walker().translate(0x40_0000_0000).entries[1]
    assert leaf.index == 256
    mem.set(leaf.table, leaf.index, leaf.value | 0x1000)
    t = mem.walker().translate(0x40_3FFF_FFFF)
    assert t.phys == 0xBFFF_FFFF and t.page_size == 0x4000_0000
    assert [e.level for e in t.entries] == ["PML4", "PDPT"]


def test_pat_bit_of_a_pt_entry_is_not_a_page_size():
    mem = FakePhys()
    mem.map(0x5000, 0x9000, 0x1000, P | PAT)
    t = mem.walker().translate(0x5ABC)
    assert t.phys == 0x9ABC and t.page_size == 0x1000


@pytest.mark.parametrize(
    ("upper", "leaf", "perms", "user"),
    [
        (P | W | U, P | W | U, "rwx", True),
        (P | W | U, P | W | NX, "rw-", False),
        (P | W | U, P, "r-x", False),
        (P | U, P | W | U, "r-x", True),  # RW clear above the leaf wins
        (P | W | U | NX, P | W | U, "rw-", True),  # NX above the leaf wins
        (P | W, P | W | U, "rwx", False),  # U needed at every level
        (P | NX, P | W | U, "r--", False),
    ],
)
def test_effective_permissions_combine_all_levels(upper, leaf, perms, user):
    mem = FakePhys()
    mem.map(0x7000, 0x7000, 0x1000, leaf, upper)
    t = mem.walker().translate(0x7000)
    assert (t.perms, t.user) == (perms, user)


@pytest.mark.parametrize("level", range(4))
def test_not_present_at_each_level_names_level_index_and_entry(level):
    mem = FakePhys()
    va = HEAP_START
    tables = mem.map(va, 0x20_0000, 0x1000, P | W | NX)
    index = (va >> (39 - 9 * level)) & 0x1FF
    value = mem.get(tables[level], index) & ~P  # clear only P, keep the rest for the report
    mem.set(tables[level], index, value)
    walker = mem.walker()
    failure = walker.walk(va)
    assert isinstance(failure, WalkFailure)
    assert failure.level == ("PML4", "PDPT", "PD", "PT")[level]
    assert (failure.index, failure.table, failure.entry) == (index, tables[level], value)
    assert failure.reason == "not present (P=0)"
    expected = f"{failure.level} entry {index} of table 0x{tables[level]:x} not present (P=0) (entry 0x{value:x})"
    assert failure.describe() == expected
    assert walker.translate(va) is None


def test_guard_page_next_to_a_mapped_page_fails_at_pt():
    mem = FakePhys()
    mem.map(HEAP_START, 0x10_6000, 0x1000)
    failure = mem.walker().walk(HEAP_START - 1)
    assert (failure.level, failure.index, failure.entry) == ("PT", 63, 0)  # HEAP_START is PT slot 64, not 2 MiB aligned
    failure = mem.walker().walk(HEAP_START + 0x1000)
    assert (failure.level, failure.index, failure.entry) == ("PT", 65, 0)


def test_non_canonical_address_is_refused_before_walking():
    mem = FakePhys()
    failure = mem.walker().walk(0x0000_8000_0000_0000)
    assert failure.reason == "non-canonical"
    assert failure.describe() == "0x800000000000 is not a canonical address"


def test_table_outside_ram_is_a_failure_not_a_crash():
    mem = FakePhys(size=0x10000)
    mem.set(mem.root, 0, 0x1234_5000 | P | W)
    failure = mem.walker().walk(0x1000)
    assert (failure.level, failure.table, failure.reason) == ("PDPT", 0x1234_5000, "table outside RAM")
    assert mem.walker().mappings() == []


def test_cr3_flag_bits_are_masked():
    mem = FakePhys()
    mem.map(0x3000, 0xA000, 0x1000)
    walker = mem.walker(cr3_low_bits=0x18)  # PWT|PCD
    assert walker.root == mem.root and walker.cr3 == mem.root | 0x18
    assert walker.translate(0x3004).phys == 0xA004


def test_mappings_coalesce_same_perms_and_size_only():
    mem = FakePhys()
    for page in range(1, 4):  # 0x1000..0x4000 rw-, contiguous
        mem.map(page * 0x1000, page * 0x1000, 0x1000, P | W | NX)
    mem.map(0x4000, 0x4000, 0x1000, P)  # r-x breaks the run
    mem.map(0x6000, 0x6000, 0x1000, P)  # gap at 0x5000 breaks it again
    mem.map(0x20_0000, 0x20_0000, 0x20_0000, P | W | NX)
    mem.map(0x40_0000, 0x40_0000, 0x20_0000, P | W | NX)  # two 2 MiB pages merge
    mem.map(0x60_0000, 0x60_0000, 0x1000, P | W | NX)  # same perms, smaller pages: separate
    assert mem.walker().mappings() == [
        Region(0x1000, 0x4000, "rw-", 0x1000),
        Region(0x4000, 0x5000, "r-x", 0x1000),
        Region(0x6000, 0x7000, "r-x", 0x1000),
        Region(0x20_0000, 0x60_0000, "rw-", 0x20_0000),
        Region(0x60_0000, 0x60_1000, "rw-", 0x1000),
    ]


def test_mappings_use_effective_perms_and_sign_extend_the_upper_half():
    mem = FakePhys()
    mem.map(0x8000, 0x8000, 0x1000, P | W, upper=P)  # read-only above: leaf's W does not count
    mem.map(0xFFFF_FF80_0000_0000, 0x4000_0000, 0x4000_0000, P | W | NX)
    regions = mem.walker().mappings()
    assert regions == [
        Region(0x8000, 0x9000, "r-x", 0x1000),
        Region(0xFFFF_FF80_0000_0000, 0xFFFF_FF80_4000_0000, "rw-", 0x4000_0000),
    ]
    assert regions[1].to_json() == {"start": "0xffffff8000000000", "end": "0xffffff8040000000",
                                    "perms": "rw-", "page_size": 0x4000_0000}


def test_mappings_skip_not_present_entries_at_every_level():
    mem = FakePhys()
    tables = mem.map(HEAP_START, 0x10_0000, 0x1000)
    mem.map(HEAP_START + 0x1000, 0x10_1000, 0x1000)
    mem.set(tables[3], 64, mem.get(tables[3], 64) & ~P)
    assert mem.walker().mappings() == [Region(HEAP_START + 0x1000, HEAP_START + 0x2000, "rwx", 0x1000)]
    mem.set(tables[1], 273, 0)
    assert mem.walker().mappings() == []
