"""Every stop reason and exit code (docs/report-format.md), each from a purpose-built kernel."""

from __future__ import annotations

import pytest

from emulator.machine.records import BootConfig, StopReason
from emulator.machine.session import run_untraced as boot
from tests.support.guest import build

pytestmark = pytest.mark.boot

SERIAL_HELLO = """
.function main, test::main
main:
    push rbp
    mov rbp, rsp
    mov dx, COM1
    mov al, 'h'
    out dx, al
    mov al, 'i'
    out dx, al
    mov al, 10
    out dx, al
    pop rbp
    ret
.endfunction
"""


def run(tmp_path, body, **config):
    _, result = boot(build(tmp_path, body), BootConfig(**config))
    return result


def test_success_exit_streams_serial_and_counts_instructions(tmp_path):
    result = run(tmp_path, SERIAL_HELLO)
    assert (result.stop_reason, result.exit_code, result.guest_exit_value) == (StopReason.EXIT, 0, 0x10)
    assert result.serial == b"hi\n"
    assert result.fault is None
    # The kernel part is known exactly: the prologue's loop runs 512 times (10 insns each)...
    assert result.instructions > result.firmware_instructions > 0


@pytest.mark.parametrize("value", [0x11, 0x42])
def test_any_other_exit_value_is_failure(tmp_path, value):
    body = f"""
.function main, test::main
main:
    mov eax, {value}
    out DEBUG_EXIT_PORT, eax
    ret
.endfunction
"""
    result = run(tmp_path, body)
    assert (result.stop_reason, result.exit_code, result.guest_exit_value) == (StopReason.EXIT, 1, value)


def test_exit_is_precise_nothing_after_it_happens(tmp_path):
    body = """
.function main, test::main
main:
    mov eax, 0x10
    out DEBUG_EXIT_PORT, eax
    mov dx, COM1
    mov al, 'x'
    out dx, al
    ret
.endfunction
"""
    result = run(tmp_path, body)
    assert result.exit_code == 0 and result.serial == b""


def fault_body(instructions: str) -> str:
    return f"""
.function main, test::main
main:
    push rbp
    mov rbp, rsp
    call inner
    pop rbp
    ret
.endfunction
.function inner, test::inner
inner:
    push rbp
    mov rbp, rsp
{instructions}
    pop rbp
    ret
.endfunction
"""


def test_invalid_opcode_report(tmp_path):
    result = run(tmp_path, fault_body("    nop\n    ud2"))
    assert (result.stop_reason, result.exit_code) == (StopReason.FAULT, 3)
    fault = result.fault
    assert fault.exception == "#UD" and fault.vector == 6
    assert fault.location == "test::inner+0x5"
    assert fault.instruction == "ud2"
    assert fault.backtrace[0].startswith("test::inner+0x5")
    assert fault.backtrace[1].startswith("test::main+0x")


def test_page_fault_names_the_missing_level(tmp_path):
    result = run(tmp_path, fault_body("    mov rax, 0x400000000000\n    mov rbx, qword ptr [rax]"))
    fault = result.fault
    assert result.exit_code == 3 and fault.exception == "#PF"
    assert fault.cr2 == 0x400000000000
    assert "read of 0x400000000000" in fault.summary
    assert "PML4 entry 128" in fault.page_walk and "not present" in fault.page_walk


def test_divide_error(tmp_path):
    result = run(tmp_path, fault_body("    xor ecx, ecx\n    mov eax, 1\n    xor edx, edx\n    div ecx"))
    assert result.exit_code == 3 and result.fault.exception == "#DE"
    assert result.fault.instruction == "div ecx"


def test_general_protection_on_non_canonical_address(tmp_path):
    result = run(tmp_path, fault_body("    mov rax, 0x8000000000000000\n    mov rbx, qword ptr [rax]"))
    assert result.exit_code == 3 and result.fault.exception == "#GP"


def test_write_to_rom_is_a_fault(tmp_path):
    result = run(tmp_path, fault_body("    mov eax, 0xF0000\n    mov byte ptr [rax], 1"))
    assert result.exit_code == 3 and result.stop_reason is StopReason.FAULT
    assert "ROM" in result.fault.summary and "0xf0000" in result.fault.summary


ENDLESS = """
.function main, test::main
main:
.Lspin:
    jmp .Lspin
.endfunction
"""


def test_endless_loop_stops_at_max_insns(tmp_path):
    result = run(tmp_path, ENDLESS, max_insns=200_000)
    assert (result.stop_reason, result.exit_code) == (StopReason.MAX_INSNS, 4)
    assert 200_000 <= result.instructions <= 200_000 + 64  # stops within the block that crosses it


def test_endless_loop_stops_at_timeout(tmp_path):
    result = run(tmp_path, ENDLESS, timeout=0.5)
    assert (result.stop_reason, result.exit_code) == (StopReason.TIMEOUT, 4)
    assert 0.5 <= result.wall_seconds < 5


def test_hlt_with_interrupts_off(tmp_path):
    result = run(tmp_path, ".function main, test::main\nmain:\n    cli\n    hlt\n.endfunction\n")
    assert (result.stop_reason, result.exit_code) == (StopReason.HALT, 4)
    assert "interrupts off" in result.detail
