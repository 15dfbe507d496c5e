"""Why a page fault happened, in words, from the guest's own page tables."""

from __future__ import annotations

from emulator.guestmem.paging import PageTables, ReadPhys, WalkFailure


def describe_page_fault(read_phys: ReadPhys, cr3: int, va: int, kind: str) -> str:
    """E.g. `PT entry 63 of table 0x105000 not present (P=0) (entry 0x0)` or `page is read-only`."""
    result = PageTables(read_phys, cr3).walk(va)
    if isinstance(result, WalkFailure):
        return result.describe()
    leaf = result.entries[-1]
    if kind == "write" and not result.writable:
        return f"the page is read-only (R/W=0; {leaf.level} entry {leaf.index} = 0x{leaf.value:x})"
    if kind == "execute" and not result.executable:
        return f"the page is not executable (NX=1; {leaf.level} entry {leaf.index} = 0x{leaf.value:x})"
    return f"mapped {result.perms} by the tables ({leaf.level} entry {leaf.index}): a stale TLB entry or a reserved bit"
