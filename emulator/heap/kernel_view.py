"""View (c): the kernel's own `heap_stats()`, called in the guest after the run."""

from __future__ import annotations

from typing import NamedTuple

from emulator.errors import GuestCallError
from emulator.image.symbols import SymbolTable
from emulator.layout import HEAP_STATS_SIZE, HEAP_STATS_SYMBOL
from emulator.machine.board import Machine


class KernelHeapStats(NamedTuple):
    """`HeapStats { heap_size, used, free }` as the kernel computes it."""

    heap_size: int
    used: int
    free: int


def kernel_heap_stats(machine: Machine, symbols: SymbolTable) -> KernelHeapStats | None:
    """None when the kernel has no heap_stats() or the call does not return."""
    sym = symbols.get(HEAP_STATS_SYMBOL)
    if sym is None:
        return None
    try:
        raw = machine.call_sret(sym.address, HEAP_STATS_SIZE)
    except GuestCallError:
        return None
    return KernelHeapStats(*(int.from_bytes(raw[i : i + 8], "little") for i in range(0, HEAP_STATS_SIZE, 8)))
