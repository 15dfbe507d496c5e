"""Why a page fault happened, in words, from the guest's own page tables."""

from __future__ import annotations

from .memory import PhysicalMemory

LEVELS = (("PML4", 39), ("PDPT", 30), ("PD", 21), ("PT", 12))
PRESENT, WRITABLE, USER, HUGE = 1, 2, 4, 0x80
NX = 1 << 63
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000


def describe_page_fault(memory: PhysicalMemory, cr3: int, va: int, kind: str) -> str:
    """E.g. `PT entry 63 of table 0x105000 not present (P=0)` or `page is read-only`."""
    table = cr3 & ADDRESS_MASK
    writable = executable = True
    for name, shift in LEVELS:
        index = (va >> shift) & 0x1FF
        try:
            entry = memory.read_u64(table + index * 8)
        except ValueError:
            return f"{name} table at 0x{table:x} is outside RAM"
        if not entry & PRESENT:
            return f"{name} entry {index} of table 0x{table:x} not present (P=0; entry 0x{entry:x})"
        writable &= bool(entry & WRITABLE)
        executable &= not entry & NX
        if shift == 12 or (shift in (30, 21) and entry & HUGE):
            break
        table = entry & ADDRESS_MASK
    if kind == "write" and not writable:
        return f"page is read-only (R/W=0 at some level, last {name} entry {index})"
    if kind == "execute" and not executable:
        return f"page is not executable (NX=1 at some level, last {name} entry {index})"
    return f"mapped and permitted by the tables ({name} entry {index}); a stale TLB entry or a reserved bit"
