"""Device interrupts on model time: taken between blocks at exact, reproducible instruction
boundaries when RFLAGS.IF allows, delivered through the guest's IDT, and `hlt` with interrupts on
waiting (in model time) for the next one. The source here is a bare periodic line, so these
tests hold the CPU side alone; the PIC and PIT have their own."""

from __future__ import annotations

import pytest

from emulator.machine.records import StopReason
from emulator.machine.session import prepare
from tests.support.guest import build
from tests.test_interrupt_delivery import DATA, SUPPORT, gate, handler, results, stamp_tick

pytestmark = pytest.mark.boot

VECTOR = 0x30


class Periodic:
    """An interrupt line raised every `period` millicycles from `start`; each acknowledge lowers it."""

    def __init__(self, start: int, period: int, vector: int = VECTOR) -> None:
        self.due, self.period, self.vector = start, period, vector
        self.line = False
        self.raised: list[int] = []  # the clock when each was raised
        self.taken = 0

    def catch_up(self, now: int) -> None:
        while now >= self.due:
            self.line = True
            self.raised.append(now)
            self.due += self.period

    def asserted(self) -> bool:
        return self.line

    def acknowledge(self) -> int:
        if not self.line:
            return -1
        self.line = False
        self.taken += 1
        return self.vector

    def next_event(self) -> int | None:
        return self.due


TICK = handler("tick_handler", """    inc qword ptr [rip + results]             ; 0: ticks
    mov rax, qword ptr [rsp + FRAME]
    mov qword ptr [rip + results + 8], rax    ; 1: the RIP the last tick returns to
""" + stamp_tick(2))


def _kernel(tmp_path, wait: str):
    main = (".function main, idt::main\nmain:\n    push rbp\n    mov rbp, rsp\n    call setup_tss\n"
            + gate(VECTOR, "tick_handler") + "    call load_idt\n    sti\n" + wait
            + "    cli\n    pop rbp\n    ret\n.endfunction\n")
    return build(tmp_path, main + TICK + SUPPORT + DATA.format(ist2=0))


HLT_LOOP = """.Lidle:
    hlt
after_hlt:
    cmp qword ptr [rip + results], 5
    jb .Lidle
"""
BUSY_LOOP = """.Lspin:
    cmp qword ptr [rip + results], 5
    jb .Lspin
"""


def _run(image, source):
    machine = prepare(image)
    machine.interrupt_source = source
    return machine, machine.run()


def test_hlt_waits_for_the_next_interrupt_in_model_time(tmp_path):
    image = _kernel(tmp_path, HLT_LOOP)
    source = Periodic(start=50_000_000, period=37_000_000)  # every 10 us of model time, from 13.5 us
    machine, result = _run(image, source)
    assert (result.stop_reason, result.exit_code) == (StopReason.EXIT, 0), result.detail
    r = results(machine, 10)
    assert r[0] == 5 and source.taken == 5 and result.interrupts == {VECTOR: 5}
    assert r[1] == machine.image.symbols.get("after_hlt").address  # `hlt` retired; the tick returns after it
    # the CPU slept: the ticks came at the exact instants the source raised them (the clock jumps there)
    assert source.raised == [50_000_000 + 37_000_000 * k for k in range(5)]
    assert result.cycle_breakdown["halted"] > 4 * 37_000  # cycles; most of the run is waiting
    stamps = [r[2 + (k % 8)] for k in range(1, 6)]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_a_busy_guest_takes_interrupts_at_block_boundaries_reproducibly(tmp_path):
    image = _kernel(tmp_path, BUSY_LOOP)
    first_source, second_source = Periodic(20_000_000, 9_000_000), Periodic(20_000_000, 9_000_000)
    first_machine, first = _run(image, first_source)
    second_machine, second = _run(image, second_source)
    assert first.stop_reason is StopReason.EXIT and first.interrupts == {VECTOR: 5}
    assert (first.instructions, first.cycles) == (second.instructions, second.cycles)
    assert first_source.raised == second_source.raised
    assert results(first_machine, 10) == results(second_machine, 10)  # the same rdtsc in every handler
    # each was raised at the first block boundary at or after its instant: within a few cycles of it
    for k, raised in enumerate(first_source.raised):
        due = 20_000_000 + 9_000_000 * k
        assert due <= raised < due + 200_000, (k, raised - due)
    assert first.cycle_breakdown["halted"] == 0


def test_interrupts_wait_while_if_is_clear(tmp_path):
    wait = "    cli\n    mov ecx, 20000\n.Lbusy:\n    dec ecx\n    jnz .Lbusy\n    sti\n    nop\nsecond_nop:\n    nop\n    cli\n"
    image = _kernel(tmp_path, wait)
    source = Periodic(1_000_000, 10**15)  # one, early, while interrupts are off
    machine, result = _run(image, source)
    assert result.stop_reason is StopReason.EXIT
    assert source.taken == 1 and results(machine, 1)[0] == 1
    # taken after `sti` and the one instruction it shields: it returns to the second nop
    assert results(machine, 2)[1] == machine.image.symbols.get("second_nop").address


SPIN_HANDLER = """
.function tick_lock, idt::tick_lock
tick_lock:
    push rbp
    mov rbp, rsp
.Lspin:
    pause
    cmp byte ptr [rip + the_lock], 0
    jne .Lspin
    pop rbp
    iretq
.endfunction
.section bss
the_lock: .zero 8
.section text
"""


def test_a_handler_spinning_on_a_lock_the_interrupted_code_holds_is_a_deadlock(tmp_path):
    """The classic single-CPU deadlock: the main code holds a lock with interrupts on, the timer's
    handler (an interrupt gate: interrupts off) waits for it. Found from the spin, not from names."""
    main = (".function main, idt::main\nmain:\n    push rbp\n    mov rbp, rsp\n    call setup_tss\n"
            + gate(VECTOR, "tick_lock") + "    call load_idt\n    call holder\n    pop rbp\n    ret\n.endfunction\n"
            + """.function holder, idt::holder
holder:
    push rbp
    mov rbp, rsp
    mov byte ptr [rip + the_lock], 1
    sti
.Lwork:
    jmp .Lwork                                ; the work the tick interrupts, lock held
.endfunction
""")
    image = build(tmp_path, main + SPIN_HANDLER + SUPPORT + DATA.format(ist2=0))
    machine, result = _run(image, Periodic(5_000_000, 10**15))
    assert (result.stop_reason, result.exit_code) == (StopReason.DEADLOCK, 3), result.detail
    report = result.deadlock
    assert report.vector == VECTOR and report.lock == machine.image.symbols.get("the_lock").address
    assert report.spinner_backtrace[0].startswith("idt::tick_lock+")
    assert report.holder_backtrace[0].startswith("idt::holder+") and report.holder_backtrace[1].startswith("idt::main+")
    assert "only the code it interrupted" in report.summary
    assert result.instructions < 2_000_000  # found after a bounded spin, not at a limit


def test_a_handler_that_polls_and_makes_progress_is_not_a_deadlock(tmp_path):
    """A handler that waits with interrupts off but counts down (its registers change) finishes."""
    wait_handler = handler("tick_wait", "    mov ecx, 50000\n.Lcount:\n    dec ecx\n    jnz .Lcount\n"
                                        "    inc qword ptr [rip + results]\n")
    main = (".function main, idt::main\nmain:\n    push rbp\n    mov rbp, rsp\n    call setup_tss\n"
            + gate(VECTOR, "tick_wait") + "    call load_idt\n    sti\n" + BUSY_LOOP.replace("5", "2")
            + "    cli\n    pop rbp\n    ret\n.endfunction\n")
    image = build(tmp_path, main + wait_handler + SUPPORT + DATA.format(ist2=0))
    machine, result = _run(image, Periodic(5_000_000, 400_000_000))  # longer than the handler takes
    assert (result.stop_reason, result.exit_code) == (StopReason.EXIT, 0), result.detail
    assert results(machine, 1)[0] == 2
