"""Reference models of the two heap allocators, with the specification's semantics.

Written from the specification (and blog_os, which it follows), not from the assembly: the
property tests compare every pointer the guest returns, and its whole heap state, with these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NODE_SIZE = 16  # a ListNode: size and next
NODE_ALIGN = 8


def align_up(addr: int, align: int) -> int:
    return (addr + align - 1) & ~(align - 1)


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass
class BumpModel:
    heap_start: int
    heap_end: int
    next: int
    allocations: int

    def alloc(self, size: int, align: int) -> int:
        if not is_power_of_two(align):
            return 0
        start = align_up(self.next, align)
        end = start + size
        if start >= 1 << 64 or end >= 1 << 64 or end > self.heap_end:
            return 0
        self.next = end
        self.allocations += 1
        return start

    def dealloc(self, ptr: int, size: int, align: int) -> None:
        if self.allocations:
            self.allocations -= 1  # no reuse: the specification's bump allocator frees on reset only

    @property
    def used(self) -> int:
        return self.next - self.heap_start


@dataclass
class LinkedListModel:
    free: list[tuple[int, int]] = field(default_factory=list)  # (address, size), head first

    @staticmethod
    def size_align(size: int, align: int) -> tuple[int, int]:
        align = max(align, NODE_ALIGN)
        size = align_up(size, align)
        return max(size, NODE_SIZE), align

    def alloc(self, size: int, align: int) -> int:
        size, align = self.size_align(size, align)
        for i, (region, region_size) in enumerate(self.free):
            start = align_up(region, align)
            end = start + size
            region_end = region + region_size
            if end > region_end:
                continue
            excess = region_end - end
            if 0 < excess < NODE_SIZE:
                continue  # the rest could not hold a ListNode
            del self.free[i]
            if excess:
                self.free.insert(0, (end, excess))  # the part before `start` is not given back
            return start
        return 0

    def dealloc(self, ptr: int, size: int, align: int) -> None:
        size, _ = self.size_align(size, align)
        self.free.insert(0, (ptr, size))

    def free_bytes(self) -> int:
        return sum(size for _, size in self.free)


def realloc(model, ptr: int, old_size: int, align: int, new_size: int, copy) -> int:
    """In place when the bump allocator's last block can be resized where it is; otherwise
    GlobalAlloc's default: allocate, copy, free the old block (if the allocation worked)."""
    if isinstance(model, BumpModel) and ptr + old_size == model.next and ptr + new_size <= model.heap_end:
        model.next = ptr + new_size
        return ptr
    new = model.alloc(new_size, align)
    if new:
        copy(new, ptr, min(old_size, new_size))
        model.dealloc(ptr, old_size, align)
    return new
