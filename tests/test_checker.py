"""The native heap checks (emulator/heap/native/liveset.c) on synthetic event sequences: each
seeded bug is caught and named."""

from __future__ import annotations

import pytest

from emulator.heap.liveset import LiveSet
from emulator.trace.events import AllocEvent

pytestmark = pytest.mark.unit

HEAP = (0x1000, 0x2000)
CALLERS: dict[int, str] = {}  # return address -> name, as the tracer's site names give them


def _ret(caller: str) -> int:
    address = 0x40_0000 + 16 * len(CALLERS) if caller not in CALLERS.values() else next(
        a for a, n in CALLERS.items() if n == caller)
    CALLERS[address] = caller
    return address


def alloc(seq, size, align, result, caller="main+0x10"):
    return AllocEvent(seq, "alloc", size, align, result=result, returned=True, caller=caller, return_address=_ret(caller))


def dealloc(seq, ptr, size, align, caller="main+0x20"):
    return AllocEvent(seq, "dealloc", size, align, ptr=ptr, returned=True, caller=caller, return_address=_ret(caller))


def realloc(seq, ptr, old, align, new, result, caller="main+0x30"):
    return AllocEvent(seq, "realloc", new, align, ptr=ptr, old_size=old, result=result, returned=True, caller=caller,
                      return_address=_ret(caller))


class Checked:
    def __init__(self, heap: LiveSet) -> None:
        self.heap = heap
        self.violations = heap.take_violations(HEAP)


def run(events):
    heap = LiveSet.standalone(HEAP, name_of=lambda ret: CALLERS.get(ret, hex(ret)))
    for event in events:
        heap.apply(event)
    return Checked(heap), heap


def kinds(checker):
    return [v.kind for v in checker.violations]


def test_clean_sequence_has_no_violations_and_tracks_peak():
    checker, heap = run([alloc(0, 32, 8, 0x1000), alloc(1, 64, 16, 0x1020), dealloc(2, 0x1000, 32, 8),
                         realloc(3, 0x1020, 64, 16, 128, 0x1080), dealloc(4, 0x1080, 128, 16)])
    assert checker.violations == []
    assert heap.peak_live_bytes == 128  # after the realloc grew 64 -> 128
    assert heap.live_blocks == 0 and heap.live_bytes == 0
    assert heap.counts == {"alloc": 2, "dealloc": 2, "realloc": 1}
    assert heap.bytes_requested == 32 + 64 + 128


def test_double_free_names_both_call_sites():
    checker, _ = run([alloc(0, 16, 8, 0x1000), dealloc(1, 0x1000, 16, 8, caller="drop+0x4"),
                      dealloc(2, 0x1000, 16, 8, caller="oops+0x8")])
    assert kinds(checker) == ["double-free"]
    message = checker.violations[0].message
    assert "oops+0x8" in message and "#1 from drop+0x4" in message


def test_invalid_free_of_foreign_pointer():
    checker, _ = run([alloc(0, 16, 8, 0x1000), dealloc(1, 0x1800, 16, 8)])
    assert kinds(checker) == ["invalid-free"]
    assert "0x1800" in checker.violations[0].message


def test_size_mismatch_reports_allocation_site():
    checker, _ = run([alloc(0, 16, 8, 0x1000, caller="mk+0x1"), dealloc(1, 0x1000, 24, 8)])
    assert kinds(checker) == ["size-mismatch"]
    assert "mk+0x1" in checker.violations[0].message and "size 24" in checker.violations[0].message


def test_overlapping_result_is_caught():
    checker, _ = run([alloc(0, 64, 8, 0x1000, caller="a+0x1"), alloc(1, 16, 8, 0x1030, caller="b+0x2")])
    assert kinds(checker) == ["overlap"]
    assert "a+0x1" in checker.violations[0].message and "b+0x2" in checker.violations[0].message


def test_adjacent_blocks_do_not_overlap():
    checker, _ = run([alloc(0, 64, 8, 0x1000), alloc(1, 16, 8, 0x1040)])
    assert checker.violations == []


def test_misaligned_and_outside_heap_results():
    checker, _ = run([alloc(0, 16, 64, 0x1008), alloc(1, 32, 8, 0x1ff0)])
    assert kinds(checker) == ["misaligned", "outside-heap"]


def test_realloc_in_place_is_not_an_overlap_and_reuse_after_free_is_fine():
    checker, heap = run([alloc(0, 16, 8, 0x1000), realloc(1, 0x1000, 16, 8, 32, 0x1000),
                         dealloc(2, 0x1000, 32, 8), alloc(3, 8, 8, 0x1000), dealloc(4, 0x1000, 8, 8)])
    assert checker.violations == []
    assert heap.live_blocks == 0


def test_failed_allocation_is_not_live():
    checker, heap = run([AllocEvent(0, "alloc", 1 << 30, 8, result=0, returned=True)])
    assert heap.counts == {"alloc": 1}
    assert checker.violations == [] and heap.live_blocks == 0


def test_overlap_queries_stay_exact_after_live_blocks_overlapped():
    """The fast path (one neighbour) holds while live blocks are disjoint; after a bad allocator
    hands out overlapping blocks, queries walk back and still find every overlap."""
    _, heap = run([alloc(0, 0x100, 8, 0x1000, "a"), alloc(1, 0x10, 8, 0x2000, "b")])
    assert heap.overlapping(0x10F0, 0x20).seq == 0 and heap.overlapping(0x1100, 0x100) is None
    heap.apply(alloc(2, 0x10, 8, 0x1080, "inside a"))  # overlaps a: no longer disjoint
    assert [v.kind for v in heap.take_violations(HEAP)] == ["overlap"]
    assert heap.overlapping(0x10F0, 0x8).seq == 0  # found behind the later-starting block
    assert heap.overlapping(0x1100, 0x100) is None
    assert [(b.ptr, b.caller) for b in heap.blocks()] == [(0x1000, "a"), (0x1080, "inside a"), (0x2000, "b")]
    assert heap.get(0x1080).seq == 2 and heap.get(0x1081) is None


def test_violations_past_the_cap_are_counted_not_kept():
    from emulator.heap.checker import MAX_KEPT

    heap = LiveSet.standalone(HEAP)
    kept = []
    for seq in range(MAX_KEPT + 5):
        heap.apply(AllocEvent(seq, "dealloc", 8, 8, ptr=0x1800, returned=True))
        if seq % 4096 == 0:
            kept += heap.take_violations(HEAP)  # taken in batches, as the tracer does: the cap is per run
    kept += heap.take_violations(HEAP)
    assert len(kept) == MAX_KEPT and heap.dropped == 5 and kept[-1].seq == MAX_KEPT - 1
