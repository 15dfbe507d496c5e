"""The heap as our kernel's own allocator structures describe it (DESIGN.md §4).

Found by the symbol `aetherion::allocator::ALLOCATOR`; kernels without it get no guest view
(the event view still works for them). Reads go through the guest's page tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .symbols import SymbolTable

if TYPE_CHECKING:
    from .machine import Machine
    from .memory import PhysicalMemory
    from .virtual import VirtualMemory

ALLOCATOR_SYMBOL = "aetherion::allocator::ALLOCATOR"
HEAP_STATS_SYMBOL = "aetherion::allocator::heap_stats"
HEAP_START = 0x4444_4444_0000  # fixed by DESIGN.md §4
HEAP_SIZE = 0x10_0000
MIN_BLOCK = 16
KINDS = {0: "bump", 1: "linked_list"}


@dataclass(frozen=True)
class GuestHeapState:
    allocator: str  # "bump", "linked_list", or "unknown(N)"
    heap_size: int
    used: int
    free: int
    free_blocks: int
    free_list: tuple[tuple[int, int], ...]  # (address, size) in list order
    lock_held: bool
    problems: tuple[str, ...] = ()
    bump: dict[str, int] | None = None  # heap_start, heap_end, next, allocations

    @property
    def largest_free_block(self) -> int:
        if self.bump is not None:
            return self.free
        return max((size for _, size in self.free_list), default=0)

    @property
    def fragmentation(self) -> float:
        """1 − largest free block / total free (0 when free memory is one block, or none)."""
        return 0.0 if self.free == 0 else 1 - self.largest_free_block / self.free


class GuestHeap:
    def __init__(self, allocator_address: int, heap_stats_address: int | None) -> None:
        self.address = allocator_address
        self.heap_stats_address = heap_stats_address

    @classmethod
    def find(cls, symbols: SymbolTable) -> GuestHeap | None:
        sym = symbols.get(ALLOCATOR_SYMBOL)
        if sym is None:
            return None
        stats = symbols.get(HEAP_STATS_SYMBOL)
        return cls(sym.address, stats.address if stats else None)

    def heap_range(self, memory: PhysicalMemory | None = None) -> tuple[int, int]:
        return HEAP_START, HEAP_START + HEAP_SIZE

    def read(self, vm: VirtualMemory) -> GuestHeapState | None:
        try:
            lock, kind = vm.read_u64(self.address), vm.read_u64(self.address + 8)
            if kind == 0:
                return self._bump(vm, lock)
            if kind == 1:
                return self._linked_list(vm, lock)
        except ValueError:
            return None  # before paging maps the allocator, or a guest that broke its tables
        return GuestHeapState(f"unknown({kind})", HEAP_SIZE, 0, 0, 0, (), bool(lock),
                              (f"ALLOCATOR.kind is {kind}, neither 0 (bump) nor 1 (linked_list)",))

    def _bump(self, vm: VirtualMemory, lock: int) -> GuestHeapState:
        inner = self.address + 16
        start, end, nxt, count = (vm.read_u64(inner + 8 * i) for i in range(4))
        problems = []
        if start == 0 and end == 0:
            return GuestHeapState("bump", 0, 0, 0, 0, (), bool(lock), (), dict(heap_start=0, heap_end=0, next=0, allocations=0))
        if not start <= nxt <= end:
            problems.append(f"bump next 0x{nxt:x} outside [heap_start 0x{start:x}, heap_end 0x{end:x}]")
        size = end - start
        used = nxt - start
        free = end - nxt
        return GuestHeapState("bump", size, used, free, 1 if free else 0, ((nxt, free),) if free else (), bool(lock),
                              tuple(problems), dict(heap_start=start, heap_end=end, next=nxt, allocations=count))

    def _linked_list(self, vm: VirtualMemory, lock: int) -> GuestHeapState:
        head = self.address + 16
        node = vm.read_u64(head + 8)
        blocks: list[tuple[int, int]] = []
        problems: list[str] = []
        seen: set[int] = set()
        low, high = HEAP_START, HEAP_START + HEAP_SIZE
        while node:
            if node in seen:
                problems.append(f"free list has a cycle back to 0x{node:x}")
                break
            if len(blocks) > HEAP_SIZE // MIN_BLOCK:
                problems.append("free list longer than the heap can hold")
                break
            seen.add(node)
            try:
                size, nxt = vm.read_u64(node), vm.read_u64(node + 8)
            except ValueError:
                problems.append(f"free-list node 0x{node:x} is not mapped")
                break
            if not (low <= node and node + size <= high):
                problems.append(f"free block [0x{node:x}, +{size}) is outside the heap")
            if size < MIN_BLOCK or size % 8:
                problems.append(f"free block 0x{node:x} has size {size} (must be >= {MIN_BLOCK} and a multiple of 8)")
            blocks.append((node, size))
            node = nxt
        ordered = sorted(blocks)
        for (a, sa), (b, _) in zip(ordered, ordered[1:]):
            if a + sa > b:
                problems.append(f"free blocks 0x{a:x}+{sa} and 0x{b:x} overlap")
        free = sum(size for _, size in blocks)
        return GuestHeapState("linked_list", HEAP_SIZE, HEAP_SIZE - free, free, len(blocks), tuple(blocks),
                              bool(lock), tuple(problems))

    def kernel_stats(self, machine: Machine) -> tuple[int, int, int] | None:
        """The kernel's own heap_stats(), called in the guest: (heap_size, used, free)."""
        if self.heap_stats_address is None:
            return None
        from .machine import GuestCallError

        try:
            raw = machine.call_sret(self.heap_stats_address, 24)
        except GuestCallError:
            return None
        return tuple(int.from_bytes(raw[i : i + 8], "little") for i in (0, 8, 16))  # type: ignore[return-value]
