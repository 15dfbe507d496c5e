"""Exceptions delivered through the guest's own IDT (Intel SDM vol. 3, ch. 6), on hand-built
guests: gates, error codes, CR2, the saved RIP of faults and traps, interrupt vs trap gates,
the 16-byte stack alignment, IST stacks from the TSS, #DF when a gate is missing, the triple
fault, and the run report's counts. Each guest records what its handlers saw in `results`."""

from __future__ import annotations

import pytest

from emulator.api import boot
from emulator.layout import DEBUG_EXIT_PORT
from emulator.machine.records import StopReason
from emulator.machine.session import run_untraced
from emulator.report.run import build_report
from tests.support.guest import build

pytestmark = pytest.mark.boot

UNMAPPED = 0x1234_5678_9000  # the test kernels identity-map the first GiB only
NON_CANONICAL = 0x8000_0000_0000_0000

# set_gate(vector, handler, type_attr, ist); load_idt(); setup_tss() with IST1 = ist1_top and
# IST2 = the value in ist2_value; report(c) writes one character to COM1.
SUPPORT = """
.function set_gate, idt::set_gate
set_gate:
    lea rax, [rip + idt]
    shl rdi, 4
    add rax, rdi
    mov word ptr [rax], si
    mov word ptr [rax + 2], 0x08
    mov byte ptr [rax + 4], cl
    mov byte ptr [rax + 5], dl
    mov r8, rsi
    shr r8, 16
    mov word ptr [rax + 6], r8w
    shr r8, 16
    mov dword ptr [rax + 8], r8d
    mov dword ptr [rax + 12], 0
    ret
.endfunction

.function load_idt, idt::load_idt
load_idt:
    sub rsp, 16
    mov word ptr [rsp], 4095
    lea rax, [rip + idt]
    mov qword ptr [rsp + 2], rax
    lidt [rsp]
    add rsp, 16
    ret
.endfunction

; a GDT with our code and data descriptors and a 64-bit TSS at 0x18, then ltr
.function setup_tss, idt::setup_tss
setup_tss:
    lea rax, [rip + ist1_top]
    lea rdx, [rip + tss]
    mov qword ptr [rdx + 0x24], rax
    mov rax, qword ptr [rip + ist2_value]
    mov qword ptr [rdx + 0x2C], rax
    lea rcx, [rip + gdt2]
    mov qword ptr [rcx], 0
    mov rax, 0x00AF9B000000FFFF
    mov qword ptr [rcx + 8], rax
    mov rax, 0x00CF93000000FFFF
    mov qword ptr [rcx + 16], rax
    ; TSS descriptor: limit 103, base = tss (below 4 GiB), type 0x89
    mov rax, rdx
    and rax, 0xFFFFFF
    shl rax, 16
    or rax, 103
    mov r8, 0x89
    shl r8, 40
    or rax, r8
    mov r8, rdx
    shr r8, 24
    and r8, 0xFF
    shl r8, 56
    or rax, r8
    mov qword ptr [rcx + 24], rax
    mov qword ptr [rcx + 32], 0
    sub rsp, 16
    mov word ptr [rsp], 39
    mov qword ptr [rsp + 2], rcx
    lgdt [rsp]
    add rsp, 16
    mov ax, 0x18
    ltr ax
    ret
.endfunction

.function report, idt::report
report:
    mov dx, COM1
    mov eax, edi
    out dx, al
    ret
.endfunction
"""

DATA = """
.section bss
.align 16
idt: .zero 4096
gdt2: .zero 64
tss: .zero 128
results: .zero 256
.align 16
ist1: .zero 4096
ist1_top:
.section rodata
ist2_value: .quad {ist2}
"""


def handler(name: str, body: str, error_code: bool = False) -> str:
    """A handler that saves rax/rdx/rdi/r8, runs `body` (the frame's RIP is at [rsp + 32 (+8)]) and returns."""
    frame = 40 if error_code else 32
    tail = "    add rsp, 8\n" if error_code else ""
    return (f".function {name}, idt::{name}\n{name}:\n    push rax\n    push rdx\n    push rdi\n    push r8\n"
            + body.replace("FRAME", str(frame)) +
            f"    pop r8\n    pop rdi\n    pop rdx\n    pop rax\n{tail}    iretq\n.endfunction\n")


def stamp_tick(first: int) -> str:
    """Handler code: rdtsc into results[first + (results[0] & 7)], results[0] being the tick count."""
    return f"""    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rdi, qword ptr [rip + results]
    and rdi, 7
    lea r8, [rip + results]
    mov qword ptr [r8 + {8 * first} + rdi*8], rax
"""


def kernel(tmp_path, main_body: str, handlers: str, ist2: int = 0) -> object:
    main = (".function main, idt::main\nmain:\n    push rbp\n    mov rbp, rsp\n    call setup_tss\n"
            + main_body + "    pop rbp\n    ret\n.endfunction\n")
    return build(tmp_path, main + handlers + SUPPORT + DATA.format(ist2=ist2))


def gate(vector: int, name: str, type_attr: int = 0x8E, ist: int = 0) -> str:
    return (f"    mov edi, {vector}\n    lea rsi, [rip + {name}]\n    mov edx, {type_attr:#x}\n    mov ecx, {ist}\n"
            "    call set_gate\n")


def results(machine, n: int = 16) -> list[int]:
    data = machine.virtual().read(machine.image.symbols.get("results").address, 8 * n)
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, 8 * n, 8)]


HANDLERS = (
    handler("bp_handler", """    mov qword ptr [rip + results], rsp        ; 0: RSP after our four pushes
    mov rax, qword ptr [rsp + FRAME]
    mov qword ptr [rip + results + 8], rax    ; 1: saved RIP
    pushfq
    pop rax
    mov qword ptr [rip + results + 16], rax   ; 2: RFLAGS inside an interrupt gate
    mov edi, 'B'
    call report
""")
    + handler("pf_handler", """    mov rax, qword ptr [rsp + 32]
    mov qword ptr [rip + results + 24], rax   ; 3: error code
    mov rax, cr2
    mov qword ptr [rip + results + 32], rax   ; 4: CR2
    mov rax, qword ptr [rsp + FRAME]
    mov qword ptr [rip + results + 40], rax   ; 5: saved RIP (the faulting instruction)
    add qword ptr [rsp + FRAME], 3            ; skip the 3-byte load
    mov qword ptr [rip + results + 48], rsp   ; 6: RSP (with an error code pushed)
    mov edi, 'P'
    call report
""", error_code=True)
    + handler("gp_handler", """    mov rax, qword ptr [rsp + 32]
    mov qword ptr [rip + results + 56], rax   ; 7: error code
    add qword ptr [rsp + FRAME], 3
    mov edi, 'G'
    call report
""", error_code=True)
    + handler("trap_handler", """    pushfq
    pop rax
    mov qword ptr [rip + results + 64], rax   ; 8: RFLAGS inside a trap gate
    mov edi, 'T'
    call report
""")
)

MAIN = (gate(3, "bp_handler") + gate(14, "pf_handler") + gate(13, "gp_handler") + gate(0x81, "trap_handler", 0x8F)
        + f"""    call load_idt
    sti
bp_site:
    int3
after_bp:
    mov rbx, {UNMAPPED:#x}
pf_site:
    mov rax, qword ptr [rbx]
    int 0x81
    mov rbx, {NON_CANONICAL:#x}
    mov rax, qword ptr [rbx]
    cli
""")


def test_exceptions_are_delivered_through_the_guests_idt(tmp_path):
    image = kernel(tmp_path, MAIN, HANDLERS)
    machine, result = run_untraced(image)
    assert (result.stop_reason, result.exit_code) == (StopReason.EXIT, 0), result.detail
    assert result.serial.endswith(b"BPTG")
    r = results(machine)
    symbols = machine.image.symbols
    # int3 is a trap: the saved RIP is the next instruction; an interrupt gate clears IF
    assert r[1] == symbols.get("after_bp").address
    assert r[2] & 0x200 == 0
    # the CPU aligns RSP to 16 before pushing SS, RSP, RFLAGS, CS, RIP (40 bytes): our four
    # pushes leave RSP = 8 mod 16; with an error code (48 bytes) 0 mod 16
    assert r[0] % 16 == 8 and r[6] % 16 == 0
    # #PF: CR2, the faulting instruction as RIP, error code 0 (not present, read, supervisor)
    assert (r[3], r[4], r[5]) == (0, UNMAPPED, symbols.get("pf_site").address)
    assert r[7] == 0  # #GP for a non-canonical address: error code 0
    assert r[8] & 0x200  # a trap gate leaves IF set
    assert result.interrupts == {3: 1, 13: 1, 14: 1, 0x81: 1}
    assert result.exceptions_handled == 3
    assert [e.vector for e in result.recent_exceptions] == [3, 14, 13]
    assert result.recent_exceptions[1].cr2 == UNMAPPED


def test_the_report_counts_interrupts_and_names_the_handled_exceptions(tmp_path):
    run = boot(kernel(tmp_path, MAIN, HANDLERS))
    report = build_report(run)
    assert report["interrupts"] == {"0x03": 1, "0x0d": 1, "0x0e": 1, "0x81": 1}
    handled = report["exceptions_handled"]
    assert handled["count"] == 3
    assert [(e["vector"], e["caller"].split("+")[0]) for e in handled["recent"]] == [
        ("0x03", "idt::main"), ("0x0e", "idt::main"), ("0x0d", "idt::main")]
    assert handled["recent"][1]["cr2"] == f"{UNMAPPED:#x}" and handled["recent"][0]["cr2"] is None


def test_the_two_runs_of_an_exception_driven_guest_are_identical(tmp_path):
    image = kernel(tmp_path, MAIN, HANDLERS)
    first, second = run_untraced(image)[1], run_untraced(image)[1]
    assert (first.instructions, first.cycles, first.serial) == (second.instructions, second.cycles, second.serial)
    assert first.instructions > 0


DF_HANDLER = """
.function df_handler, idt::df_handler
df_handler:
    mov qword ptr [rip + results], rsp        ; 0: RSP on entry (the IST1 stack, error code pushed)
    mov rax, qword ptr [rsp]
    mov qword ptr [rip + results + 8], rax    ; 1: error code (always 0)
    mov edi, 'D'
    call report
    mov eax, DEBUG_EXIT_SUCCESS
    out DEBUG_EXIT_PORT, eax
.Lstay:
    hlt
    jmp .Lstay
.endfunction
"""


def test_a_missing_page_fault_gate_becomes_a_double_fault_on_its_ist_stack(tmp_path):
    image = kernel(tmp_path, gate(8, "df_handler", 0x8E, ist=1) + f"""    call load_idt
    mov rbx, {UNMAPPED:#x}
    mov rax, qword ptr [rbx]
""", DF_HANDLER)
    machine, result = run_untraced(image)
    assert (result.stop_reason, result.exit_code) == (StopReason.EXIT, 0), result.detail
    assert result.serial.endswith(b"D")
    r = results(machine, 2)
    top = machine.image.symbols.get("ist1_top").address
    assert r[0] == top - 48 and r[1] == 0  # SS, RSP, RFLAGS, CS, RIP and the error code, on IST1
    assert result.interrupts == {8: 1}  # the #PF and the #NP it led to were never delivered


def test_a_fault_while_delivering_the_double_fault_is_a_triple_fault(tmp_path):
    # both gates switch to IST2, which points at unmapped memory: the #PF's frame cannot be
    # pushed (#PF again: #DF), nor can the #DF's
    image = kernel(tmp_path, gate(14, "df_handler", 0x8E, ist=2) + gate(8, "df_handler", 0x8E, ist=2) + f"""    call load_idt
    mov rbx, {UNMAPPED:#x}
fault_site:
    mov rax, qword ptr [rbx]
""", DF_HANDLER, ist2=UNMAPPED)
    machine, result = run_untraced(image)
    assert (result.stop_reason, result.exit_code) == (StopReason.FAULT, 3)
    summary = result.fault.summary
    assert result.fault.vector == 14 and summary.startswith(f"page fault (#PF) on read of {UNMAPPED:#x}")
    assert "delivering it raised double fault (#DF), and delivering #DF faulted" in summary  # #PF in #PF: #DF
    assert result.fault.rip == machine.image.symbols.get("fault_site").address
    assert result.interrupts == {}


def test_a_kernel_without_an_idt_stops_at_the_fault_as_before(tmp_path):
    image = kernel(tmp_path, f"    mov rbx, {UNMAPPED:#x}\nsite:\n    mov rax, qword ptr [rbx]\n", "")
    machine, result = run_untraced(image)
    assert (result.stop_reason, result.fault.vector) == (StopReason.FAULT, 14)
    assert result.fault.summary.startswith(f"page fault (#PF) on read of {UNMAPPED:#x}")
    assert "triple" not in result.fault.summary
    assert result.fault.rip == machine.image.symbols.get("site").address
    assert result.interrupts == {} and result.exceptions_handled == 0


def test_instruction_counts_stay_exact_across_deliveries(tmp_path):
    """Against a per-instruction count: the faulting instruction does not retire, the trap does,
    and the block after an exception is not counted."""
    from unicorn import UC_HOOK_CODE

    from emulator.machine.session import prepare

    image = kernel(tmp_path, MAIN, HANDLERS)
    machine = prepare(image)
    executed = []
    machine.kernel_instruments.append(lambda uc: uc.hook_add(UC_HOOK_CODE, lambda uc, a, n, u: executed.append(a)))
    result = machine.run()
    assert result.stop_reason is StopReason.EXIT
    # the run ends with the `out` to isa-debug-exit (Unicorn finishes the block after it)
    code = machine.virtual().read
    last = next(i for i, a in enumerate(executed) if code(a, 2) == bytes([0xE7, DEBUG_EXIT_PORT]))
    # a code hook also fires for the two faulting loads, which never retire
    faulted = 2
    assert result.instructions - result.firmware_instructions == last + 1 - faulted


def test_allocator_calls_carry_the_vector_of_the_handler_they_run_in(tmp_path):
    """An allocation from a #BP handler, one from a #PF handler that itself takes a #BP, and
    ones outside: each event names the innermost handler running, which ends with its iretq."""
    from tests.support.guest import fake_allocator

    alloc = "    mov edi, 16\n    mov esi, 8\n    call __rust_alloc\n"
    handlers = (handler("bp_alloc", alloc) + handler("pf_alloc", alloc + "    int3\n" + alloc
                                                     + "    add qword ptr [rsp + FRAME], 3\n", error_code=True))
    main = (gate(3, "bp_alloc") + gate(14, "pf_alloc") + "    call load_idt\n" + alloc + "    int3\n" + alloc
            + f"    mov rbx, {UNMAPPED:#x}\n    mov rax, qword ptr [rbx]\n" + alloc)
    run = boot(kernel(tmp_path, main, handlers + fake_allocator(16)))
    assert run.exit_code == 0, run.result.detail
    assert [e.vector for e in run.events] == [None, 3, None, 14, 3, 14, None]
    assert "in the handler of vector 0x0e" in run.events[3].describe()


def test_cpuid_reports_what_is_modelled(tmp_path):
    """An xAPIC, but no x2APIC; the TSC-deadline timer only when its MSR reaches the APIC model (a
    libunicorn with patch 0006): CPUID leaf 1 says so; the rest is QEMU's."""
    from emulator.machine.unicorn_build import loaded_build

    body = """    mov eax, 1
    xor ecx, ecx
    cpuid
    mov qword ptr [rip + results], rdx
    mov qword ptr [rip + results + 8], rcx
    xor eax, eax
    cpuid
    mov qword ptr [rip + results + 16], rax
"""
    machine, result = run_untraced(kernel(tmp_path, body, ""))
    assert result.stop_reason is StopReason.EXIT
    edx, ecx, max_leaf = results(machine, 3)
    assert edx & (1 << 9) and not ecx & (1 << 21)  # APIC; no x2APIC
    assert bool(ecx & (1 << 24)) == (loaded_build().kind == "patched")  # TSC-deadline
    assert edx & 1 and edx & (1 << 4) and edx & (1 << 25)  # FPU, TSC, SSE: still there
    assert max_leaf >= 1


ROM = """.code16
.section text
post:
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7000
    mov word ptr [0x50 * 4], real_handler - ROM_BASE
    mov word ptr [0x50 * 4 + 2], 0xF000
    int 0x50
    mov dx, COM1
    mov al, 'K'
    out dx, al
    hlt
real_handler:
    mov dx, COM1
    mov al, 'R'
    out dx, al
    iret
.org 0xFFFF0
reset:
    .byte 0xEA
    .word 0x0000, 0xF000
"""


def test_real_mode_code_takes_interrupts_through_its_ivt(tmp_path, kernel):
    """A BIOS of our own making runs `int 0x50` in real mode: the CPU goes through the IVT entry
    it wrote and its `iret` comes back."""
    from emulator.layout import ROM_BASE, ROM_SIZE
    from emulator.machine.session import prepare
    from emulator.toolchain.build import assemble_flat
    from tests.support.guest import LAYOUT_EQUS

    rom = tmp_path / "rom.bin"
    rom.write_bytes(assemble_flat([("rom.s", LAYOUT_EQUS + ROM)], ROM_BASE, ROM_SIZE).data)
    result = prepare(kernel, firmware=rom).run()
    assert result.serial == b"RK"
    assert result.stop_reason is StopReason.HALT and "firmware halted" in result.detail
    assert result.interrupts == {0x50: 1} and result.exceptions_handled == 0
