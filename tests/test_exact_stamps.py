"""Exact stamps: an event's insn_entry is the count of instructions retired before the entry
point's first instruction executes, insn_return before the instruction at the return address;
cycles_entry is what a guest `rdtsc` at the entry point reads. Checked against a per-instruction
reference on entry points whose first translated block has different lengths (tail-jumping
shims of 3 to 8 instructions, as rustc emits them)."""

from __future__ import annotations

import pytest
from unicorn import UC_HOOK_CODE

from emulator import boot
from emulator.machine.records import BootConfig
from emulator.machine.session import prepare
from tests.support.guest import build

pytestmark = pytest.mark.boot


def kernel_with_shims(lengths: dict[str, int]) -> str:
    """__rust_alloc / __rust_dealloc / __rust_realloc as shims of n instructions (n - 1 padding
    `lea`s, then a jmp to the real function); main calls each twice."""
    parts = []
    for name, n in lengths.items():
        pad = "    lea r11, [r11 + 1]\n" * (n - 1)
        parts.append(f".function {name}\n{name}:\n{pad}    jmp real_{name}\n.endfunction\n"
                     f".function real_{name}, t::real_{name}\nreal_{name}:\n    push rbp\n    mov rbp, rsp\n"
                     f"    mov rax, qword ptr [rip + next_block]\n    add qword ptr [rip + next_block], 64\n"
                     f"    pop rbp\n    ret\n.endfunction\n")
    calls = "".join(f"    mov edi, 16\n    mov esi, 8\n    mov edx, 8\n    mov ecx, 32\n    call {name}\n"
                    for name in lengths for _ in range(2))
    return ("".join(parts) + f".function main, t::main\nmain:\n    push rbp\n    mov rbp, rsp\n{calls}"
            "    pop rbp\n    ret\n.endfunction\n.section data\nnext_block: .quad 0x1000000\n.section text\n")


def reference_counts(image, entries: set[int]) -> tuple[list[int], list[int]]:
    """Per-instruction reference: the kernel-instance count before each entry instruction and
    before each instruction that follows a call to one (its return address)."""
    entry_counts, return_counts, state = [], [], {"n": 0, "returns": set()}

    def instrument(uc):
        def each(uc, address, size, _):
            if address in entries:
                entry_counts.append(state["n"])
                rsp = uc.reg_read(__import__("unicorn").x86_const.UC_X86_REG_RSP)
                state["returns"].add(int.from_bytes(uc.mem_read(rsp, 8), "little"))
            elif address in state["returns"]:
                return_counts.append(state["n"])
            state["n"] += 1
        uc.hook_add(UC_HOOK_CODE, each)

    machine = prepare(image, BootConfig(), kernel_instruments=(instrument,))
    result = machine.run()
    assert result.exit_code == 0
    firmware = machine.firmware_instructions
    return [firmware + n for n in entry_counts], [firmware + n for n in return_counts]


@pytest.mark.parametrize("lengths", [
    {"__rust_alloc": 3, "__rust_dealloc": 5, "__rust_realloc": 8},
    {"__rust_alloc": 8, "__rust_dealloc": 4, "__rust_realloc": 6},
])
def test_stamps_equal_a_per_instruction_reference(tmp_path, lengths):
    image = build(tmp_path, kernel_with_shims(lengths))
    run = boot(image)
    assert run.exit_code == 0 and len(run.events) == 6
    entries = {run.symbols.address(name) for name in lengths}
    want_entry, want_return = reference_counts(image, entries)
    assert [e.insn_entry for e in run.events] == want_entry
    assert [e.insn_return for e in run.events] == want_return


RDTSC_SHIM = """
.function __rust_alloc
__rust_alloc:
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov qword ptr [rip + seen_tsc], rax
    jmp real_alloc
.endfunction
.function real_alloc, t::real_alloc
real_alloc:
    mov rax, 0x1000000
    ret
.endfunction
.function main, t::main
main:
    push rbp
    mov rbp, rsp
    mov edi, 8
    mov esi, 8
    call __rust_alloc
    pop rbp
    ret
.endfunction
.section data
seen_tsc: .quad 0
.section text
"""


def test_cycles_entry_is_what_rdtsc_reads_at_the_entry_point(tmp_path):
    run = boot(build(tmp_path, RDTSC_SHIM))
    seen = int.from_bytes(run.memory.read(run.symbols.address("seen_tsc"), 8), "little")
    assert run.events[0].cycles_entry == seen
