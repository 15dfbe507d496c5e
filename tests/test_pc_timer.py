"""The PC's own timer path end to end: a guest remaps the 8259A pair, programs the 8254 for
100 Hz and idles in `hlt`; every tick arrives through IRQ0 at vector 32 on model time, 10 ms
(37,000,000 cycles at 3.7 GHz) apart, and two runs are identical to the cycle."""

from __future__ import annotations

import pytest

from emulator.machine.records import StopReason
from emulator.machine.session import run_untraced
from tests.support.guest import build
from tests.test_interrupt_delivery import DATA, SUPPORT, gate, handler, results, stamp_tick

pytestmark = pytest.mark.boot

DIVISOR = 11932  # 1,193,182 Hz / 11932 = 100.0 Hz

TIMER = handler("timer", """    inc qword ptr [rip + results]
""" + stamp_tick(1) + """    mov al, 0x20                              ; non-specific EOI
    out 0x20, al
""")

MAIN = (".function main, idt::main\nmain:\n    push rbp\n    mov rbp, rsp\n    call setup_tss\n"
        + gate(32, "timer") + f"""    call load_idt
    mov al, 0x11
    out 0x20, al
    out 0xA0, al
    mov al, 32
    out 0x21, al
    mov al, 40
    out 0xA1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xA1, al
    mov al, 1
    out 0x21, al
    out 0xA1, al
    mov al, 0xFE                              ; only IRQ0
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al
    mov al, 0x34                              ; channel 0, lobyte/hibyte, mode 2
    out 0x43, al
    mov al, {DIVISOR & 0xFF}
    out 0x40, al
    mov al, {DIVISOR >> 8}
    out 0x40, al
    sti
.Lidle:
    hlt
    cmp qword ptr [rip + results], 5
    jb .Lidle
    cli
    pop rbp
    ret
.endfunction
""")


def test_pit_ticks_through_the_pic_at_100_hz_on_model_time(tmp_path):
    image = build(tmp_path, MAIN + TIMER + SUPPORT + DATA.format(ist2=0))
    machine, result = run_untraced(image)
    assert (result.stop_reason, result.exit_code) == (StopReason.EXIT, 0), result.detail
    r = results(machine, 9)
    assert r[0] == 5 and result.interrupts == {32: 5}
    stamps = [r[1 + (k & 7)] for k in range(1, 6)]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    period = DIVISOR * 3_700_000_000 / 1_193_182  # cycles
    # the CPU sleeps between ticks: they are exact (the first may come early: writing the control
    # word can itself raise OUT, an edge, before the first count runs out)
    assert all(abs(gap - period) < 2 for gap in gaps[1:]), gaps
    assert period * 0.99 < gaps[0] <= period + 1
    assert result.cycle_breakdown["halted"] > 4 * period * 0.99
    again = run_untraced(image)[1]
    assert (again.instructions, again.cycles) == (result.instructions, result.cycles)


def test_a_masked_timer_cannot_wake_hlt(tmp_path):
    image = build(tmp_path, MAIN.replace("mov al, 0xFE                              ; only IRQ0", "mov al, 0xFF")
                  + TIMER + SUPPORT + DATA.format(ist2=0))
    result = run_untraced(image)[1]
    assert (result.stop_reason, result.exit_code) == (StopReason.HALT, 4)
    assert "no device can interrupt it" in result.detail
