"""View (b): the heap as our kernel's own allocator structures describe it (docs/kernel-structures.md).

Found by the symbol `aetherion::allocator::ALLOCATOR`; kernels without it get no guest view
(the event view still works for them). Reads go through the guest's page tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.errors import GuestMemoryError
from emulator.guestmem.virtual import VirtualMemory
from emulator.image.symbols import SymbolTable
from emulator.layout import (
    ALLOCATOR_KINDS,
    ALLOCATOR_SYMBOL,
    BUMP_FIELDS,
    HEAP_END,
    HEAP_SIZE,
    HEAP_START,
    INNER_OFFSET,
    KIND_OFFSET,
    LIST_NODE_NEXT_OFFSET,
    LIST_NODE_SIZE_OFFSET,
    LOCK_OFFSET,
    MIN_BLOCK,
)


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
    """Reads `ALLOCATOR` (a LockedAllocator) through the guest's page tables."""

    def __init__(self, allocator_address: int) -> None:
        self.address = allocator_address

    @classmethod
    def find(cls, symbols: SymbolTable) -> GuestHeap | None:
        sym = symbols.get(ALLOCATOR_SYMBOL)
        return None if sym is None else cls(sym.address)

    @staticmethod
    def heap_range() -> tuple[int, int]:
        """[start, end) of the heap our kernel maps (fixed by the layout)."""
        return HEAP_START, HEAP_END

    def read(self, vm: VirtualMemory) -> GuestHeapState | None:
        try:
            lock = vm.read_u64(self.address + LOCK_OFFSET)
            kind = vm.read_u64(self.address + KIND_OFFSET)
            name = ALLOCATOR_KINDS.get(kind)
            if name == "bump":
                return self._bump(vm, lock)
            if name == "linked_list":
                return self._linked_list(vm, lock)
        except GuestMemoryError:
            return None  # before paging maps the allocator, or a guest that broke its tables
        known = ", ".join(f"{k} ({v})" for k, v in ALLOCATOR_KINDS.items())
        return GuestHeapState(f"unknown({kind})", HEAP_SIZE, 0, 0, 0, (), bool(lock),
                              (f"ALLOCATOR.kind is {kind}, none of {known}",))

    def _bump(self, vm: VirtualMemory, lock: int) -> GuestHeapState:
        inner = self.address + INNER_OFFSET
        fields = {name: vm.read_u64(inner + 8 * i) for i, name in enumerate(BUMP_FIELDS)}
        start, end, nxt = fields["heap_start"], fields["heap_end"], fields["next"]
        if start == 0 and end == 0:
            return GuestHeapState("bump", 0, 0, 0, 0, (), bool(lock), (), fields)
        problems = []
        if not start <= nxt <= end:
            problems.append(f"bump next 0x{nxt:x} outside [heap_start 0x{start:x}, heap_end 0x{end:x}]")
        free = end - nxt
        return GuestHeapState("bump", end - start, nxt - start, free, 1 if free else 0, ((nxt, free),) if free else (),
                              bool(lock), tuple(problems), fields)

    def _linked_list(self, vm: VirtualMemory, lock: int) -> GuestHeapState:
        head = self.address + INNER_OFFSET  # LinkedListAllocator { head: ListNode }
        node = vm.read_u64(head + LIST_NODE_NEXT_OFFSET)
        blocks: list[tuple[int, int]] = []
        problems: list[str] = []
        seen: set[int] = set()
        while node:
            if node in seen:
                problems.append(f"free list has a cycle back to 0x{node:x}")
                break
            if len(blocks) > HEAP_SIZE // MIN_BLOCK:
                problems.append("free list longer than the heap can hold")
                break
            seen.add(node)
            try:
                size = vm.read_u64(node + LIST_NODE_SIZE_OFFSET)
                nxt = vm.read_u64(node + LIST_NODE_NEXT_OFFSET)
            except GuestMemoryError:
                problems.append(f"free-list node 0x{node:x} is not mapped")
                break
            if not (HEAP_START <= node and node + size <= HEAP_END):
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
