"""Report sections read from the guest after a run: page tables, frame pool, heap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import cpu_state
from .frames import FRAME_ALLOCATOR_SYMBOL, mapped_frames, page_table_frames, read_frame_pool
from .guestheap import HEAP_SIZE, HEAP_START
from .paging import PageTables

if TYPE_CHECKING:
    from .machine import Machine


def page_tables(machine: Machine) -> PageTables | None:
    uc = machine.uc
    if uc is None or machine._mode(uc) != 64 or not cpu_state.read(uc, "cr0") & (1 << 31):
        return None
    return PageTables(machine.memory.read, cpu_state.read(uc, "cr3"))


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
    except ValueError:
        return None
    table_frames = page_table_frames(tables) & pool.used_frames
    heap = {f for f in mapped_frames(tables, HEAP_START, HEAP_SIZE) if f is not None} & pool.used_frames
    return {"total": pool.total, "free": pool.free, "used": pool.used,
            "page_table_frames": len(table_frames), "heap_frames": len(heap)}
