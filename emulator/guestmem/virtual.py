"""Guest virtual memory, read through the guest's own page tables."""

from __future__ import annotations

from emulator.errors import PageFault
from emulator.guestmem.paging import PageTables, ReadPhys, Translation
from emulator.layout import PAGE_SIZE as PAGE


class VirtualMemory:
    """A view for one moment: translations are cached, so make a new one after the guest runs."""

    def __init__(self, read_phys: ReadPhys, cr3: int | None) -> None:
        self._read_phys = read_phys
        self.cr3 = cr3  # None: paging off, virtual == physical
        self.tables = PageTables(read_phys, cr3) if cr3 is not None else None
        self._pages: dict[int, int] = {}

    def translate(self, va: int) -> int:
        if self.tables is None:
            return va
        page = va & ~(PAGE - 1)
        phys = self._pages.get(page)
        if phys is None:
            found = self.tables.walk(page)
            if not isinstance(found, Translation):
                raise PageFault(f"0x{va:x} is not mapped: {found.describe()}")
            phys = self._pages[page] = found.phys
        return phys | (va & (PAGE - 1))

    def read(self, va: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            chunk = min(size, PAGE - (va & (PAGE - 1)))
            out += self._read_phys(self.translate(va), chunk)
            va += chunk
            size -= chunk
        return bytes(out)

    def read_u64(self, va: int) -> int:
        return int.from_bytes(self.read(va, 8), "little")
