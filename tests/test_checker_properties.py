"""The native heap checks and live-block set against the same rules in Python
(tests/support/checker_model.py), on random event sequences: same violations, same messages,
same live blocks and counters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.heap.event_view import EventHeap
from emulator.heap.liveset import LiveSet
from emulator.trace.events import AllocEvent
from tests.support.checker_model import CheckerModel

pytestmark = pytest.mark.unit

HEAP = (0x1000, 0x3000)
POINTERS = st.sampled_from([0x1000 + 16 * i for i in range(24)] + [0x0FF0, 0x2FF8, 0x3000, 0x1004])
SIZES = st.sampled_from([0, 1, 8, 16, 24, 40, 64, 200])
ALIGNS = st.sampled_from([1, 8, 16, 64])
CALLERS = st.sampled_from([0x40_0010, 0x40_0020, 0x40_0030])


@st.composite
def events(draw):
    out = []
    for seq in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(["alloc", "alloc_zeroed", "dealloc", "realloc", "alloc_error"]))
        returned = kind != "alloc_error" and draw(st.booleans() | st.just(True))
        ret = draw(CALLERS)
        common = dict(returned=returned, return_address=ret, caller=f"f{ret:x}")
        if kind == "dealloc":
            out.append(AllocEvent(seq, kind, draw(SIZES), draw(ALIGNS), ptr=draw(POINTERS), **common))
        elif kind == "realloc":
            result = draw(POINTERS | st.just(0)) if returned else None
            out.append(AllocEvent(seq, kind, draw(SIZES), draw(ALIGNS), ptr=draw(POINTERS), old_size=draw(SIZES),
                                  result=result, **common))
        else:
            result = draw(POINTERS | st.just(0)) if returned and kind != "alloc_error" else None
            out.append(AllocEvent(seq, kind, draw(SIZES), draw(ALIGNS), result=result, **common))
    return out


@settings(max_examples=300, deadline=None)
@given(events())
def test_native_checks_match_the_python_rules(sequence):
    model_heap = EventHeap()
    model = CheckerModel(model_heap, HEAP)
    native = LiveSet.standalone(HEAP, name_of=lambda ret: f"f{ret:x}")
    for event in sequence:
        model.check(event)
        model_heap.apply(event)
        native.apply(event)
    assert native.take_violations(HEAP) == model.violations
    assert [(b.ptr, b.size, b.align, b.seq, b.caller) for b in native.blocks()] == \
        [(b.ptr, b.size, b.align, b.seq, b.caller) for b in model_heap.blocks()]
    assert (native.live_blocks, native.live_bytes, native.peak_live_blocks, native.peak_live_bytes,
            native.bytes_requested, native.counts) == (
        model_heap.live_blocks, model_heap.live_bytes, model_heap.peak_live_blocks, model_heap.peak_live_bytes,
        model_heap.bytes_requested, model_heap.counts)
    for start in range(0x0FF0, 0x1200, 8):
        a, b = native.overlapping(start, 16), model_heap.overlapping(start, 16)
        assert (a.ptr if a else None) == (b.ptr if b else None)
