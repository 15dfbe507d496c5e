"""Report sections read from the guest after a run: its page tables and its frame pool."""

from __future__ import annotations

from typing import Any

from emulator.errors import GuestMemoryError
from emulator.guestmem.frames import mapped_frames, page_table_frames, read_frame_pool
from emulator.guestmem.paging import PageTables
from emulator.layout import FRAME_ALLOCATOR_SYMBOL, HEAP_SIZE, HEAP_START
from emulator.machine import cpu
from emulator.machine.board import Machine


def page_tables(machine: Machine) -> PageTables | None:
    """The kernel's page tables as the run left them (None before long mode or with paging off)."""
    uc = machine.uc
    if uc is None or cpu.instance_bits(uc) != 64:
        return None
    root = cpu.paging_root(uc)
    return None if root is None else PageTables(machine.memory.read, root)


def paging_section(machine: Machine) -> dict[str, Any] | None:
    tables = page_tables(machine)
    if tables is None:
        return None
    return {"cr3": f"0x{tables.cr3:x}", "regions": [r.to_json() for r in tables.mappings()]}


def frames_section(machine: Machine) -> dict[str, Any] | None:
    sym = machine.image.symbols.get(FRAME_ALLOCATOR_SYMBOL)
    tables = page_tables(machine)
    if sym is None or tables is None:
        return None
    try:
        pool = read_frame_pool(machine.virtual().read, sym.address)
    except GuestMemoryError:
        return None
    table_frames = page_table_frames(tables) & pool.used_frames
    heap = {f for f in mapped_frames(tables, HEAP_START, HEAP_SIZE) if f is not None} & pool.used_frames
    return {"total": pool.total, "free": pool.free, "used": pool.used,
            "page_table_frames": len(table_frames), "heap_frames": len(heap)}
