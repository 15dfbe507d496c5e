"""The guest's 4-level page tables, walked from CR3 over guest physical memory.

`translate(va)` answers "where does this virtual address live, with which permissions, and
through which entries"; a failed walk says which level's entry was missing. `mappings()`
lists coalesced regions like QEMU's `info mem`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emulator.errors import GuestMemoryError

LEVELS = ("PML4", "PDPT", "PD", "PT")
SHIFTS = (39, 30, 21, 12)
PRESENT, WRITABLE, USER, HUGE = 1, 2, 4, 0x80
NX = 1 << 63
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000
CANONICAL_BITS = 48
ENTRIES = 512  # per table

ReadPhys = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Entry:
    level: str  # "PML4", "PDPT", "PD" or "PT"
    table: int  # physical address of the table
    index: int
    value: int


@dataclass(frozen=True)
class Translation:
    va: int
    phys: int
    page_size: int
    writable: bool
    executable: bool
    user: bool
    entries: tuple[Entry, ...]

    @property
    def perms(self) -> str:
        return "r" + ("w" if self.writable else "-") + ("x" if self.executable else "-")


@dataclass(frozen=True)
class WalkFailure:
    va: int
    level: str
    index: int
    table: int
    entry: int
    reason: str  # "not present", "non-canonical", "table outside RAM"

    def describe(self) -> str:
        if self.reason == "non-canonical":
            return f"0x{self.va:x} is not a canonical address"
        return f"{self.level} entry {self.index} of table 0x{self.table:x} {self.reason} (entry 0x{self.entry:x})"


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    perms: str
    page_size: int

    def to_json(self) -> dict:
        return {"start": f"0x{self.start:x}", "end": f"0x{self.end:x}", "perms": self.perms, "page_size": self.page_size}


def canonical(va: int) -> int:
    """Sign-extend bit 47, as the CPU requires of every address it uses."""
    va &= (1 << CANONICAL_BITS) - 1
    return va - (1 << CANONICAL_BITS) if va & (1 << (CANONICAL_BITS - 1)) else va


class PageTables:
    def __init__(self, read_phys: ReadPhys, cr3: int) -> None:
        self._read = read_phys
        self.cr3 = cr3
        self.root = cr3 & ADDRESS_MASK

    def _entry(self, table: int, index: int) -> int | None:
        try:
            return int.from_bytes(self._read(table + index * 8, 8), "little")
        except GuestMemoryError:
            return None

    def walk(self, va: int) -> Translation | WalkFailure:
        va &= (1 << 64) - 1
        if canonical(va) & ((1 << 64) - 1) != va:
            return WalkFailure(va, "PML4", 0, self.root, 0, "non-canonical")
        table = self.root
        entries: list[Entry] = []
        writable = executable = user = True
        for level, shift in zip(LEVELS, SHIFTS):
            index = (va >> shift) & 0x1FF
            value = self._entry(table, index)
            if value is None:
                return WalkFailure(va, level, index, table, 0, "table outside RAM")
            entries.append(Entry(level, table, index, value))
            if not value & PRESENT:
                return WalkFailure(va, level, index, table, value, "not present (P=0)")
            writable &= bool(value & WRITABLE)
            user &= bool(value & USER)
            executable &= not value & NX
            if shift == 12 or (level in ("PDPT", "PD") and value & HUGE):
                size = 1 << shift
                phys = (value & ADDRESS_MASK & ~(size - 1)) | (va & (size - 1))
                return Translation(va, phys, size, writable, executable, user, tuple(entries))
            table = value & ADDRESS_MASK
        raise AssertionError("unreachable: the PT level always ends the walk")

    def translate(self, va: int) -> Translation | None:
        result = self.walk(va)
        return result if isinstance(result, Translation) else None

    def table(self, address: int) -> list[int] | None:
        """The 512 entries of the table at physical `address` (None if it is outside memory)."""
        try:
            raw = self._read(address, ENTRIES * 8)
        except GuestMemoryError:
            return None
        return [int.from_bytes(raw[i * 8 : i * 8 + 8], "little") for i in range(ENTRIES)]

    @staticmethod
    def maps_a_page(depth: int, value: int) -> bool:
        """A present entry at `depth` (0 = PML4) maps a page rather than pointing at a table."""
        return depth == len(LEVELS) - 1 or (LEVELS[depth] in ("PDPT", "PD") and bool(value & HUGE))

    def mappings(self) -> list[Region]:
        """Every present mapping, coalesced where contiguous with the same perms and page size."""
        regions: list[Region] = []

        def visit(table: int, depth: int, base: int, writable: bool, executable: bool) -> None:
            shift = SHIFTS[depth]
            for index, value in enumerate(self.table(table) or ()):
                if not value & PRESENT:
                    continue
                va = canonical(base | (index << shift)) & ((1 << 64) - 1)
                w = writable and bool(value & WRITABLE)
                x = executable and not value & NX
                if self.maps_a_page(depth, value):
                    _append(regions, va, 1 << shift, "r" + ("w" if w else "-") + ("x" if x else "-"))
                else:
                    visit(value & ADDRESS_MASK, depth + 1, base | (index << shift), w, x)

        visit(self.root, 0, 0, True, True)
        return regions


def _append(regions: list[Region], start: int, size: int, perms: str) -> None:
    last = regions[-1] if regions else None
    if last is not None and last.end == start and last.perms == perms and last.page_size == size:
        regions[-1] = Region(last.start, start + size, perms, size)
    else:
        regions.append(Region(start, start + size, perms, size))
