"""The local APIC timer end to end: a guest maps the xAPIC page, enables it, and takes periodic
and one-shot timer interrupts on model time (the timer counts the 3.7 GHz clock, divided); the
task-priority register holds them back; EOI ends each one. Plus the register model alone."""

from __future__ import annotations

import pytest

from emulator.machine.devices.lapic import LocalApic, divisor
from emulator.machine.records import StopReason
from emulator.machine.session import run_untraced
from tests.support.guest import build
from tests.test_interrupt_delivery import DATA, SUPPORT, gate, handler, results, stamp_tick

VECTOR = 0x40
APIC = 0xFEE0_0000

TICK = handler("apic_tick", """    inc qword ptr [rip + results]
""" + stamp_tick(1) + """    mov eax, 0xFEE00000
    mov dword ptr [rax + 0xB0], 0             ; EOI
""")

MAP_APIC = f"""    lea rax, [rip + apic_pd]
    mov rcx, {APIC | 0x9B:#x}                 ; a 2 MiB page, present, writable, uncached
    mov qword ptr [rax + {((APIC >> 21) & 0x1FF) * 8:#x}], rcx
    or rax, 3
    mov qword ptr [rip + boot_pdpt + 24], rax ; the fourth GiB
    mov rax, cr3
    mov cr3, rax
    mov ebx, {APIC:#x}
    mov dword ptr [rbx + 0xF0], 0x1FF         ; SVR: enabled, spurious vector 0xFF
    mov dword ptr [rbx + 0x3E0], 0xB          ; divide by 1
"""


def _kernel(tmp_path, program: str):
    main = (".function main, idt::main\nmain:\n    push rbp\n    mov rbp, rsp\n    call setup_tss\n"
            + gate(VECTOR, "apic_tick") + "    call load_idt\n" + MAP_APIC + program
            + "    cli\n    pop rbp\n    ret\n.endfunction\n")
    return build(tmp_path, main + TICK + SUPPORT + DATA.format(ist2=0) + "\n.section bss\n.align 4096\napic_pd: .zero 4096\n")


@pytest.mark.boot
def test_periodic_apic_timer_ticks_every_initial_count_cycles(tmp_path):
    image = _kernel(tmp_path, f"""    mov dword ptr [rbx + 0x320], {VECTOR | 1 << 17:#x}   ; LVT timer: periodic
    mov dword ptr [rbx + 0x380], 370000       ; 100 us
    sti
.Lidle:
    hlt
    cmp qword ptr [rip + results], 5
    jb .Lidle
    mov dword ptr [rbx + 0x320], {1 << 16:#x} ; masked: no more
""")
    machine, result = run_untraced(image)
    assert (result.stop_reason, result.exit_code) == (StopReason.EXIT, 0), result.detail
    r = results(machine, 9)
    assert r[0] == 5 and result.interrupts == {VECTOR: 5}
    stamps = [r[1 + (k & 7)] for k in range(1, 6)]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    # asleep in hlt between ticks: exact, once the handler's code and data are in the caches (its
    # first run misses before its rdtsc, so the first gap is a little shorter)
    assert gaps[1:] == [370000] * 3 and 369000 < gaps[0] < 370000


@pytest.mark.boot
def test_one_shot_fires_once_and_the_tpr_holds_it_back_until_lowered(tmp_path):
    image = _kernel(tmp_path, f"""    mov dword ptr [rbx + 0x80], 0x40          ; TPR: class 4 and below held back
    mov dword ptr [rbx + 0x320], {VECTOR:#x}  ; LVT timer: one-shot
    mov dword ptr [rbx + 0x380], 1000
    sti
    mov ecx, 20000
.Lwait:
    dec ecx
    jnz .Lwait                                ; long past the count: still held back
    mov rax, qword ptr [rip + results]
    mov qword ptr [rip + results + 72], rax   ; 9: ticks while the TPR was 0x40
    mov eax, dword ptr [rbx + 0x390]
    mov qword ptr [rip + results + 80], rax   ; 10: the current count after it ran out
    mov dword ptr [rbx + 0x80], 0             ; TPR 0: now it is taken
    mov ecx, 20000
.Lmore:
    dec ecx
    jnz .Lmore
""")
    machine, result = run_untraced(image)
    assert (result.stop_reason, result.exit_code) == (StopReason.EXIT, 0), result.detail
    r = results(machine, 11)
    assert (r[9], r[10]) == (0, 0)
    assert r[0] == 1 and result.interrupts == {VECTOR: 1}  # one-shot: once


DEADLINE_AFTER = 500_000  # cycles


@pytest.mark.boot
def test_tsc_deadline_fires_when_the_tsc_reaches_the_msr(tmp_path):
    """TSC-deadline mode: WRMSR IA32_TSC_DEADLINE arms the timer for that TSC value (the model's
    cycles, what rdtsc reads); the MSR reads back the deadline until it fires, then 0. Writing 0
    disarms, and a write outside TSC-deadline mode is ignored. With the stock libunicorn the MSR
    never reaches the device: CPUID does not offer the mode and the write does nothing."""
    from emulator.machine.unicorn_build import loaded_build

    image = _kernel(tmp_path, f"""    push rbx
    mov eax, 1
    cpuid
    mov qword ptr [rip + results + 120], rcx  ; 15: CPUID.1 ECX
    pop rbx
    mov dword ptr [rbx + 0x320], {VECTOR | 1 << 18:#x}   ; LVT timer: TSC-deadline
    rdtsc
    shl rdx, 32
    or rax, rdx
    add rax, {DEADLINE_AFTER}
    mov qword ptr [rip + results + 80], rax   ; 10: the deadline
    mov rdx, rax
    shr rdx, 32
    mov ecx, 0x6E0
    wrmsr
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov qword ptr [rip + results + 88], rax   ; 11: the MSR while armed
    test rax, rax
    jz .Lfired                                ; not armed (stock Unicorn): nothing to wait for
    sti
.Lidle:
    cmp qword ptr [rip + results], 1          ; asleep until the deadline
    jae .Lfired
    hlt
    jmp .Lidle
.Lfired:
    cli
    mov ecx, 0x6E0
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov qword ptr [rip + results + 96], rax   ; 12: the MSR after it fired
    ; disarmed by 0: no second tick
    rdtsc
    add eax, 1000
    mov ecx, 0x6E0
    xor edx, edx
    wrmsr
    xor eax, eax
    wrmsr
    ; ignored outside the mode: one-shot mode with no count, then a deadline already past
    mov dword ptr [rbx + 0x320], {VECTOR:#x}
    mov eax, 1
    wrmsr
    sti
    mov ecx, 20000
.Lspin:
    dec ecx
    jnz .Lspin
""")
    machine, result = run_untraced(image)
    assert (result.stop_reason, result.exit_code) == (StopReason.EXIT, 0), result.detail
    r = results(machine, 16)
    deadline = r[10]
    if loaded_build().kind == "patched":
        assert r[15] & (1 << 24)  # CPUID offers the TSC-deadline timer
        assert r[0] == 1 and result.interrupts == {VECTOR: 1}
        assert (r[11], r[12]) == (deadline, 0)
        # taken at the first block boundary at or past the deadline: the wait was asleep in hlt, so
        # only the handler's own first instructions lie between
        assert 0 <= r[2] - deadline < 1_000
    else:
        assert not r[15] & (1 << 24) and r[0] == 0 and (r[11], r[12]) == (0, 0)


@pytest.mark.unit
def test_the_register_model():
    now = [0]
    apic = LocalApic(lambda: now[0])
    assert apic.read(0x30, 4) == 0x0005_0014 and apic.read(0xF0, 4) == 0xFF  # version; SVR after reset
    assert [divisor(v) for v in (0, 1, 2, 3, 8, 9, 10, 11)] == [2, 4, 8, 16, 32, 64, 128, 1]
    apic.write(0xF0, 4, 0x1FF)
    apic.write(0x3E0, 4, 0x3)  # divide by 16
    apic.write(0x320, 4, 0x30)
    apic.write(0x380, 4, 100)  # 100 counts of 16 cycles
    assert apic.next_event() == 1600 * 1000
    now[0] = 800 * 1000
    assert apic.read(0x390, 4) == 50  # half way
    apic.catch_up(1600 * 1000)
    assert apic.pending() and apic.read(0x200 + 0x10, 4) == 1 << 16  # IRR bit 0x30 (register 1, bit 16)
    assert apic.acknowledge() == 0x30 and not apic.pending() and apic.read(0x100 + 0x10, 4) == 1 << 16
    apic.write(0xB0, 4, 0)  # EOI
    assert apic.isr == 0 and apic.next_event() is None  # one-shot: done
    apic.write(0xF0, 4, 0xFF)  # software-disabled: every LVT masked
    assert apic.read(0x320, 4) & (1 << 16)


@pytest.mark.unit
def test_the_tsc_deadline_register_model():
    now = [0]
    apic = LocalApic(lambda: now[0])
    apic.write(0xF0, 4, 0x1FF)
    apic.write(0x320, 4, 0x30)  # one-shot: the deadline is ignored
    apic.write_tsc_deadline(500, 500_000)
    assert apic.deadline == 0 and apic.next_event() is None
    apic.write(0x320, 4, 0x30 | 1 << 18)  # TSC-deadline mode: the count is ignored, reads 0
    apic.write(0x380, 4, 100)
    assert apic.initial == 0 and apic.read(0x390, 4) == 0
    apic.write_tsc_deadline(500, 500_000)
    assert apic.next_event() == 500_000
    apic.catch_up(499_999)
    assert not apic.pending() and apic.deadline == 500
    apic.catch_up(500_000)
    assert apic.pending() and apic.deadline == 0 and apic.next_event() is None  # fired: disarmed
    apic.write_tsc_deadline(900, 900_000)
    apic.write(0x320, 4, 0x30 | 1 << 17)  # to periodic: disarmed
    assert apic.deadline == 0 and apic.next_event() is None
