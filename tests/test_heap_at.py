"""The heap at every event: `run.heap_at(seq)` (rebuilt from the free-list changes the native walk
records after each call) against a direct walk of the guest's structures taken at the moment each
call returned, under both allocators; and the same states read back from the trace file."""

from __future__ import annotations

import json

import pytest
from unicorn import UC_HOOK_CODE
from unicorn.x86_const import UC_X86_REG_RSP

from emulator.api import TracedBoot
from emulator.machine.records import BootConfig
from emulator.trace.format import TraceWriter, read_trace

pytestmark = pytest.mark.boot


def _return_addresses(kernel, cmdline):
    boot = TracedBoot(kernel, BootConfig(cmdline=cmdline))
    run = boot.run()
    assert run.exit_code == 0
    return sorted({e.return_address for e in run.events if e.returned})


def _walked_at_every_return(kernel, cmdline, trace_path=None):
    """A traced boot, plus a Python walk of the guest heap each time an allocator call returns
    (its return address reached with the stack pointer it was called with: a jump to that
    address from elsewhere is not a return)."""
    addresses = _return_addresses(kernel, cmdline)
    boot = TracedBoot(kernel, BootConfig(cmdline=cmdline), trace_path=trace_path)
    walks, open_calls = [], []

    def at_entry(uc, address, size, user):
        rsp = uc.reg_read(UC_X86_REG_RSP)
        open_calls.append((int.from_bytes(uc.mem_read(rsp, 8), "little"), rsp + 8))

    def at_return(uc, address, size, user):
        if (address, uc.reg_read(UC_X86_REG_RSP)) in open_calls:
            while open_calls.pop() != (address, uc.reg_read(UC_X86_REG_RSP)):
                pass
            walks.append(boot.guest_heap.read(boot.machine.virtual()))

    def instrument(uc):
        for address in boot.tracer.entry_points:
            uc.hook_add(UC_HOOK_CODE, at_entry, begin=address, end=address)
        for address in addresses:
            uc.hook_add(UC_HOOK_CODE, at_return, begin=address, end=address)

    boot.machine.kernel_instruments.append(instrument)
    run = boot.run()
    return run, walks


@pytest.mark.parametrize("cmdline, calls", [("test", 8216), ("allocator=bump test", 16),
                                            ("churn=3000 seed=7", 3000), ("allocator=bump churn=300 seed=7", 300)])
def test_heap_at_every_event_equals_a_direct_walk(kernel, cmdline, calls, tmp_path):
    run, walks = _walked_at_every_return(kernel, cmdline, tmp_path / "t.jsonl")
    returned = sorted((e for e in run.events if e.returned), key=lambda e: e.insn_return)
    assert len(run.events) >= calls
    assert len(returned) == len(walks)  # one walk per return, in the order they happened
    allocators = set()
    for event, walked in zip(returned, walks):
        at = run.heap_at(event.seq)
        assert at.free_list == walked.free_list, f"#{event.seq}"
        assert (at.allocator, at.used, at.free, at.free_blocks) == (walked.allocator, walked.used, walked.free,
                                                                     walked.free_blocks), f"#{event.seq}"
        assert (at.live_blocks, at.live_bytes) == (event.heap.live_blocks, event.heap.live_bytes)
        allocators.add(at.allocator)
    assert allocators == {"bump" if "bump" in cmdline else "linked_list"}
    # the last state is the end-of-run walk, and the kernel's own heap_stats() agrees with it
    last = max(run.events, key=lambda e: e.insn_return or 0)
    assert run.heap_at(last.seq).free_list == tuple(run.heap.free_list())
    assert run.heap.views_agree is True
    # the trace file rebuilds the same state at every event
    trace = read_trace(tmp_path / "t.jsonl")
    assert len(trace.events) == len(run.events)
    for event in run.events:
        assert trace.heap_at(event.seq).free_list == run.heap_at(event.seq).free_list, f"#{event.seq}"


def test_free_list_changes_are_small_and_the_trace_compact(kernel, tmp_path):
    path = tmp_path / "t.jsonl.zst"
    boot = TracedBoot(kernel, BootConfig(cmdline="test"), trace_path=path)
    run = boot.run()
    sizes = [len(list(run.heap_at(e.seq).free_list)) for e in run.events[::97]]
    assert max(sizes) >= 10  # the list is long enough that writing it per event would show
    assert path.stat().st_size / len(run.events) < 100  # bytes per event, compressed


def test_native_trace_lines_equal_the_python_writer(kernel, tmp_path):
    """The event lines alloctrace.c writes are the ones TraceWriter.event writes for the same events."""
    native_path, python_path = tmp_path / "native.jsonl", tmp_path / "python.jsonl"
    run = TracedBoot(kernel, BootConfig(cmdline="allocator=bump test"), trace_path=native_path).run()
    writer = TraceWriter(python_path, {"image": None, "image_sha256": None, "cmdline": "", "allocator": None,
                                       "entry_points": []})
    for event in run.events:
        writer.event(event)
    writer.close({})

    def events(path):
        out = {}
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "e" in record:
                out[record["e"][0]] = (record["e"], record["h"])
        return out

    native, python = events(native_path), events(python_path)
    assert len(native) == len(run.events) and native == python
