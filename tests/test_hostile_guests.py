"""Hostile guests: each misbehaviour ends in a clear stop reason, exit code and report."""

from __future__ import annotations

import pytest

from emulator.errors import GuestCallError
from emulator.layout import HEAP_START, KERNEL_BASE
from emulator.machine.board import SERIAL_KEEP
from emulator.machine.records import BootConfig, StopReason
from emulator.machine.session import run_untraced as boot
from tests.support.guest import build

pytestmark = pytest.mark.boot


def run(tmp_path, body, **config):
    return boot(build(tmp_path, body), BootConfig(**config))[1]


def main(instructions: str) -> str:
    return f".function main, hostile::main\nmain:\n    push rbp\n    mov rbp, rsp\n{instructions}\n    pop rbp\n    ret\n.endfunction\n"


def test_wild_jump_faults_on_execute(tmp_path):
    result = run(tmp_path, main("    mov rax, 0x123456789000\n    jmp rax"))
    assert (result.stop_reason, result.exit_code) == (StopReason.FAULT, 3)
    assert result.fault.cr2 == 0x123456789000 and "execute of 0x123456789000" in result.fault.summary
    assert "not present" in result.fault.page_walk


def test_execution_from_a_non_executable_page(tmp_path):
    """A kernel with no IDT: the fault report's page walk names the NX bit (EFER.NXE is set)."""
    nx_page = 0x4000_0000 - 0x20_0000  # the last 2 MiB page of the identity map
    result = run(tmp_path, main(f"""    lea rax, [rip + boot_pd]
    bts qword ptr [rax + 511 * 8], 63
    mov rax, {nx_page:#x}
    call rax"""))
    assert (result.stop_reason, result.exit_code) == (StopReason.FAULT, 3)
    fault = result.fault
    assert fault.exception == "#PF" and f"execute of {nx_page:#x}" in fault.summary
    assert "not executable (NX=1" in fault.page_walk


def test_a_host_call_into_the_nx_heap_meets_the_kernels_own_handler(kernel):
    """Our kernel has an IDT: its #PF handler reports the fetch and panics, so the call ends in
    the guest's failure exit, not in a fault the host reports (a fresh boot: the handler allocates)."""
    from emulator import boot as traced_boot

    run_ = traced_boot(kernel)
    with pytest.raises(GuestCallError, match="did not return: guest wrote 0x11 to isa-debug-exit") as err:
        run_.call(HEAP_START)  # the heap is RW- NX
    assert err.value.fault is None
    serial = run_.machine.serial.decode()
    report = serial.split("EXCEPTION: PAGE FAULT\n")[1]
    assert report.startswith(f"Accessed Address: {HEAP_START:#x}\n"
                             "Error Code: 0x11 (protection violation | supervisor | instruction fetch)\n")
    assert f"InterruptStackFrame {{ instruction_pointer: {HEAP_START:#x}," in report


def test_self_modifying_code_runs_the_new_bytes(tmp_path):
    body = """
.function target, hostile::target
target:
    mov eax, 1
    ret
.endfunction
""" + main("""    call target
    lea edi, [eax + 'A']
    call emit
    lea rax, [rip + target]
    mov byte ptr [rax + 1], 2       ; rewrite the immediate of `mov eax, 1` after it has run
    call target
    lea edi, [eax + 'A']
    call emit""") + """
.function emit, hostile::emit
emit:
    mov dx, COM1
    mov eax, edi
    out dx, al
    ret
.endfunction
"""
    result = run(tmp_path, body)
    assert result.exit_code == 0 and result.serial == b"BC"


def test_stack_overflow_into_an_unmapped_guard(tmp_path):
    # Unmap the first 2 MiB (the test kernel maps them with one 2 MiB page), put the stack at
    # 2 MiB + 16 KiB and recurse: the stack runs down into the unmapped region.
    body = """
.function recurse, hostile::recurse
recurse:
    push rbp
    mov rbp, rsp
    sub rsp, 64
    call recurse
    leave
    ret
.endfunction
""" + main("""    mov qword ptr [rip + boot_pd], 0
    mov rax, cr3
    mov cr3, rax
    mov rsp, 0x204000
    call recurse""")
    result = run(tmp_path, body)
    fault = result.fault
    assert (result.stop_reason, result.exit_code, fault.exception) == (StopReason.FAULT, 3, "#PF")
    assert 0x1FF000 <= fault.cr2 < 0x200000 and "write of" in fault.summary
    assert "PD entry 0" in fault.page_walk
    assert len(fault.backtrace) == 33 and all(f.startswith("hostile::recurse") for f in fault.backtrace[:32])


@pytest.mark.parametrize("instruction, exception", [("ud2", "#UD"), ("int3", "#BP"), ("int 0x80", None)])
def test_undefined_and_software_interrupts(tmp_path, instruction, exception):
    result = run(tmp_path, main(f"    {instruction}"))
    assert (result.stop_reason, result.exit_code) == (StopReason.FAULT, 3)
    if exception:
        assert result.fault.exception == exception
    else:
        assert "interrupt 0x80 with no handler" in result.fault.summary


def test_port_io_storm_is_bounded_and_reported_once(tmp_path):
    result = run(tmp_path, main("""    mov ecx, 100000
.Lstorm:
    mov al, cl
    out 0x80, al
    in al, 0x60
    out 0x64, al
    dec ecx
    jnz .Lstorm"""))
    assert result.exit_code == 0
    assert len(result.post_codes) == 4096  # kept for the report, the rest dropped
    assert result.unknown_ports == {0x60: "read", 0x64: "write"}


def test_megabytes_of_serial_output_are_streamed_and_bounded(tmp_path):
    seen = bytearray()
    body = main("""    mov rcx, 4 * 1024 * 1024 + 65536
    mov dx, COM1
.Lbyte:
    mov al, cl
    and al, 63
    add al, 48
    out dx, al
    dec rcx
    jnz .Lbyte""")
    machine_result = boot(build(tmp_path, body), BootConfig(), on_serial=lambda data: seen.extend(data))[1]
    assert machine_result.exit_code == 0
    assert len(seen) == (4 << 20) + 65536  # every byte reached the host as it was written
    assert len(machine_result.serial) == SERIAL_KEEP  # the report keeps a bounded prefix
    assert machine_result.serial == bytes(seen[:SERIAL_KEEP])


@pytest.mark.parametrize("instruction, vector, length", [("int3", 3, 1), ("int 0x80", 0x80, 2), ("int 3", 3, 2)])
def test_a_trap_is_reported_at_its_own_instruction(tmp_path, instruction, vector, length):
    result = run(tmp_path, main(f"    nop\n    {instruction}\n    nop"))
    fault = result.fault
    assert fault.vector == vector
    assert fault.instruction == instruction.replace("int 3", "int 3")  # capstone's spelling of the trap
    assert fault.registers["rip"] == fault.rip + length  # the CPU's saved RIP is the next instruction
    assert fault.location.startswith("hostile::main+")


def test_syscall_with_efer_sce_clear_is_invalid_opcode(tmp_path):
    result = run(tmp_path, main("    mov eax, 60\n    syscall\n    mov eax, 0x11\n    out DEBUG_EXIT_PORT, eax"))
    fault = result.fault
    assert (result.stop_reason, fault.exception, fault.vector) == (StopReason.FAULT, "#UD", 6)
    assert fault.instruction == "syscall" and "EFER.SCE clear" in fault.summary
    assert fault.registers["rip"] == fault.rip  # a fault: RIP stays on the instruction
    assert result.guest_exit_value is None  # nothing after the syscall ran as far as the run is concerned


def test_a_page_fault_whose_instruction_cannot_be_read_is_not_called_an_execute(tmp_path):
    # The guest unmaps its own 2 MiB code page (no invlpg: the TLB still has it) and then loads
    # from unmapped memory. The report cannot read the instruction through the tables; the
    # fault is not at RIP, so it is an access of unknown kind, not an execute.
    body = main(f"""    lea rdi, [rip + boot_pd]
    mov qword ptr [rdi + {8 * (KERNEL_BASE >> 21)}], 0
    mov rax, 0x40000000
    mov rax, qword ptr [rax]""")
    fault = run(tmp_path, body).fault
    assert fault.exception == "#PF" and fault.cr2 == 0x40000000
    assert fault.instruction == "(instruction not readable)"
    assert "on access of 0x40000000" in fault.summary and "execute" not in fault.summary
