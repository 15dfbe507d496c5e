"""The heap checks' rules in plain Python, event by event: the reference the native checks
(emulator/heap/native/liveset.c) are held to by tests/test_checker_properties.py."""

from __future__ import annotations

from emulator.heap.checker import MAX_KEPT, Violation
from emulator.heap.event_view import EventHeap
from emulator.trace.events import AllocEvent


class CheckerModel:
    """Feed every event, in call order, before it is applied to `heap`."""

    def __init__(self, heap: EventHeap, heap_range: tuple[int, int] | None = None) -> None:
        self.heap = heap
        self.heap_range = heap_range  # [start, end) when the kernel's heap is known
        self.violations: list[Violation] = []
        self.dropped = 0  # violations past MAX_KEPT, counted only
        self._freed: dict[int, AllocEvent] = {}  # pointer -> the dealloc that freed it last

    def _report(self, event: AllocEvent, kind: str, message: str) -> None:
        if len(self.violations) >= MAX_KEPT:
            self.dropped += 1  # a guest that breaks a rule for ever must not grow memory for ever
            return
        self.violations.append(Violation(event.seq, kind, message))

    def check(self, event: AllocEvent) -> None:
        if event.kind in ("dealloc", "realloc"):
            self._check_release(event)
        if event.allocates:
            self._check_result(event)

    def _check_release(self, event: AllocEvent) -> None:
        if event.kind == "realloc" and not (event.returned and event.result):
            return  # a failed realloc leaves the old block alone
        ptr = event.ptr or 0
        size = event.size if event.kind == "dealloc" else event.old_size
        block = self.heap.get(ptr)
        if block is None:
            earlier = self._freed.get(ptr)
            if earlier is not None:
                self._report(event, "double-free",
                             f"#{event.seq} {event.kind} of 0x{ptr:x} from {event.caller}: already freed by "
                             f"#{earlier.seq} from {earlier.caller}")
            else:
                self._report(event, "invalid-free",
                             f"#{event.seq} {event.kind} of 0x{ptr:x} from {event.caller}: not a live block")
            return
        if (block.size, block.align) != (size, event.align):
            self._report(event, "size-mismatch",
                         f"#{event.seq} {event.kind} of 0x{ptr:x} from {event.caller} with size {size} align "
                         f"{event.align}, but #{block.seq} from {block.caller} allocated size {block.size} "
                         f"align {block.align}")
        self._freed[ptr] = event

    def _check_result(self, event: AllocEvent) -> None:
        ptr = event.result or 0
        self._freed.pop(ptr, None)
        if event.align and ptr % event.align:
            self._report(event, "misaligned", f"#{event.seq} {event.kind} returned 0x{ptr:x}, not aligned to {event.align}")
        if self.heap_range is not None:
            start, end = self.heap_range
            if not (start <= ptr and ptr + event.size <= end):
                self._report(event, "outside-heap",
                             f"#{event.seq} {event.kind} returned [0x{ptr:x}, 0x{ptr + event.size:x}), outside the "
                             f"heap [0x{start:x}, 0x{end:x})")
        other = self.heap.overlapping(ptr, event.size)
        if other is not None and not (event.kind == "realloc" and other.ptr == event.ptr):
            self._report(event, "overlap",
                         f"#{event.seq} {event.kind} from {event.caller} returned [0x{ptr:x}, 0x{ptr + event.size:x}), "
                         f"which overlaps live block [0x{other.ptr:x}, 0x{other.ptr + other.size:x}) from "
                         f"#{other.seq} {other.caller}")
