"""The heap at the end of a run, three ways, and whether they agree.

(a) the allocation events, for any kernel; (b) the guest's own allocator structures (our
kernel); (c) the kernel's own `heap_stats()`. Views (b) and (c) must agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.heap.event_view import EventHeap, LiveBlock
from emulator.heap.guest_view import GuestHeapState
from emulator.heap.kernel_view import KernelHeapStats


@dataclass(frozen=True)
class HeapViews:
    events: EventHeap  # (a)
    guest: GuestHeapState | None  # (b): None for kernels whose structures are unknown
    kernel_stats: KernelHeapStats | None  # (c): None without heap_stats() or a normal exit

    def stats(self) -> GuestHeapState | None:
        """The guest's own view (b)."""
        return self.guest

    def blocks(self) -> list[LiveBlock]:
        """Blocks live at the end of the run, by address (view a): at a normal exit, the leaks."""
        return self.events.blocks()

    def free_list(self) -> list[tuple[int, int]]:
        """(address, size) of each free block in the guest's list order (view b)."""
        return [] if self.guest is None else list(self.guest.free_list)

    @property
    def peak_used(self) -> int:
        """The most requested bytes live at once (view a)."""
        return self.events.peak_live_bytes

    @property
    def views_agree(self) -> bool | None:
        """(b) == (c); None when either is not available."""
        if self.guest is None or self.kernel_stats is None:
            return None
        return (self.guest.heap_size, self.guest.used, self.guest.free) == tuple(self.kernel_stats)
