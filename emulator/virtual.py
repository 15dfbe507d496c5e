"""Guest virtual memory read through the guest's own page tables."""

from __future__ import annotations

from .memory import PhysicalMemory

PAGE = 0x1000


class PageFault(ValueError):
    pass


class VirtualMemory:
    def __init__(self, memory: PhysicalMemory, cr3: int | None) -> None:
        self.memory = memory
        self.cr3 = cr3  # None: paging off, virtual == physical

    def translate(self, va: int) -> int:
        if self.cr3 is None:
            return va
        table = self.cr3 & 0x000F_FFFF_FFFF_F000
        for level, shift in enumerate((39, 30, 21, 12)):
            entry = self.memory.read_u64(table + ((va >> shift) & 0x1FF) * 8)
            if not entry & 1:
                raise PageFault(f"0x{va:x} is not mapped")
            base = entry & 0x000F_FFFF_FFFF_F000
            if shift != 12 and level > 0 and entry & 0x80:
                return (base & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
            table = base
        return table | (va & 0xFFF)

    def read(self, va: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            chunk = min(size, PAGE - (va & (PAGE - 1)))
            out += self.memory.read(self.translate(va), chunk)
            va += chunk
            size -= chunk
        return bytes(out)

    def read_u64(self, va: int) -> int:
        return int.from_bytes(self.read(va, 8), "little")
