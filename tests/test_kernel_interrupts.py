"""Kernel phase 2 on the emulator: its IDT, exception handlers, PIC-driven timer and the two
interrupt demos, seen from the host (the in-kernel tests run in test_kernel_heap's `test` boots)."""

from __future__ import annotations

import pytest

from emulator import boot
from emulator.machine.records import StopReason

pytestmark = pytest.mark.boot

TIMER = 0x20  # the kernel remaps IRQ0 to vector 32
TICKS = 20


@pytest.fixture(scope="module")
def demo(kernel):
    return boot(kernel, cmdline="demo=interrupts")


def test_the_demo_takes_a_breakpoint_a_demand_fault_and_the_timer(demo, kernel):
    assert demo.exit_code == 0, demo.result.detail
    result = demo.result
    assert result.interrupts[3] == 1 and result.interrupts[14] == 1
    # the handler records exactly TICKS; a tick pending as the wait ends is taken, not recorded
    assert TICKS <= result.interrupts[TIMER] <= TICKS + 1
    assert set(result.interrupts) == {3, 14, TIMER}
    assert result.exceptions_handled == 2
    breakpoint, page_fault = [e for e in result.recent_exceptions if e.vector < 32]
    assert page_fault.cr2 == 0x6666_6666_0008
    assert f"instruction_pointer: 0x{breakpoint.pc:x}," in demo.serial
    assert f"InterruptStackFrame {{ instruction_pointer: 0x{page_fault.pc:x}," in demo.serial.split("PAGE FAULT")[1]
    assert "Error Code: 0x2 (not present | write | supervisor)" in demo.serial
    assert "demand page: read back 42 at 0x666666660008\n" in demo.serial
    assert f"timer: {TICKS} ticks at 1000 Hz, each recorded by the handler in a TickRecord on the heap: in order\n" \
        in demo.serial
    assert f"with the records live, Used: {TICKS * 16 + 24} bytes\n" in demo.serial
    assert "after dropping them, Used: 0 bytes\n" in demo.serial


def test_allocations_in_handlers_carry_their_vector(demo):
    """The #PF handler's backtrace Vec and the timer handler's TickRecords, against the main code's."""
    by_vector: dict[int | None, list] = {}
    for event in demo.events:
        by_vector.setdefault(event.vector, []).append(event)
    ticks = by_vector[TIMER]
    assert [(e.kind, e.size, e.align) for e in ticks] == [("alloc", 16, 8)] * TICKS
    assert all("aetherion::interrupts::timer::handler" in e.caller for e in ticks)
    backtrace = by_vector[14]
    assert [e.kind for e in backtrace] == ["alloc", "dealloc"]
    assert backtrace[0].size == 4 * 8  # RawVec's first capacity for u64s: 4 frames (3 used)
    assert [frame.split("+")[0] for frame in backtrace[0].backtrace[1:4]] == \
        ["alloc::vec::Vec::push_u64", "aetherion::interrupts::collect_backtrace", "aetherion::interrupts::page_fault_handler"]
    main = by_vector[None]
    assert sum(e.kind == "dealloc" and e.size == 16 for e in main) == TICKS  # the records, dropped by main
    assert demo.violations == ()


def test_the_backtrace_the_handler_printed_is_the_guests_own_chain(demo):
    symbols = demo.machine.image.symbols
    lines = demo.serial.split("backtrace (3 frames in a heap Vec):\n")[1].splitlines()[:3]
    names = [symbols.describe(int(line.split(": ")[1], 16)).split("+")[0] for line in lines]
    assert names == ["aetherion::demo::interrupts", "aetherion::kmain", "aetherion::boot::long_mode"]


def test_two_runs_of_the_interrupt_demo_are_identical(demo, kernel):
    again = boot(kernel, cmdline="demo=interrupts")
    assert (again.result.instructions, again.result.cycles, again.result.interrupts) == \
        (demo.result.instructions, demo.result.cycles, demo.result.interrupts)
    assert [(e.insn_entry, e.cycles_entry, e.cycles_return, e.vector) for e in again.events] == \
        [(e.insn_entry, e.cycles_entry, e.cycles_return, e.vector) for e in demo.events]


def test_the_deadlock_demo_stops_with_the_report(kernel):
    run = boot(kernel, cmdline="demo=deadlock")
    result = run.result
    assert (result.stop_reason, result.exit_code) == (StopReason.DEADLOCK, 3), result.detail
    report = result.deadlock
    assert report.vector == TIMER and report.lock_name == "aetherion::allocator::ALLOCATOR"
    spinner = [frame.split("+")[0] for frame in report.spinner_backtrace]
    assert spinner[:4] == ["aetherion::allocator::Locked::lock", "aetherion::allocator::LockedAllocator::alloc",
                           "__rust_alloc", "aetherion::interrupts::timer::handler"]
    assert report.holder_backtrace[0].startswith("aetherion::demo::deadlock+")
    assert "interrupt 0x20 spins at aetherion::allocator::Locked::lock+" in report.summary
    # the main code's TickLog, then the handler's TickRecord: begun, never returned
    assert [(e.vector, e.size, e.returned) for e in run.events] == [(None, 24, True), (TIMER, 16, False)]
    assert result.interrupts == {TIMER: 1}
