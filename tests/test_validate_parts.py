"""The validation harness's own parts (the host measurement itself is `make validate`)."""

from __future__ import annotations

import struct

import pytest

from emulator.calibrate.validate import (
    CASES,
    CODE,
    CODE_SIZE,
    DATA,
    PROBES,
    RNG_STATE,
    case_source,
    chain_bytes,
    kendall_tau,
    kernel_addresses,
    mape,
)
from emulator.image.loader import load_image
from emulator.toolchain.build import assemble_flat

pytestmark = pytest.mark.unit


def test_kendall_tau_and_mape():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == 1 / 3
    assert mape([0.1, -0.3]) == 20.0


def test_pointer_chain_visits_every_node_once():
    data, first = chain_bytes(4096, 64)
    seen, node = set(), first
    for _ in range(64):
        seen.add(node)
        node = struct.unpack_from("<Q", data, node - DATA)[0]
    assert node == first and len(seen) == 64 and all((n - DATA - 8) % 64 == 0 for n in seen)


def test_every_case_assembles_against_the_kernel(kernel):
    kernel = kernel_addresses(load_image(kernel, 4096 << 20))
    flat = assemble_flat([("validate.s", case_source(CASES, kernel))], CODE, CODE_SIZE, default_mode=64)
    assert len(CASES) >= 20
    assert all(f"case_{case.name}" in flat.symbols for case in CASES)


def _loop_start(flat, name: str) -> tuple[int, int]:
    """(first, end) address of a case's loop: the target of its closing `jne`, and past it."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    at = flat.symbols[f"case_{name}"]
    for _ in range(200):  # follow the code, over the prologue's jump past the alignment padding
        insn = next(Cs(CS_ARCH_X86, CS_MODE_64).disasm(flat.data[at - CODE:at - CODE + 16], at))
        if insn.mnemonic == "jne" and int(insn.op_str, 16) < insn.address:
            return int(insn.op_str, 16), insn.address + insn.size
        at = int(insn.op_str, 16) if insn.mnemonic == "jmp" else at + insn.size
    raise AssertionError(f"no loop in {name}")


def test_probes_assemble_with_the_cases_and_sit_where_they_say(kernel):
    kernel = kernel_addresses(load_image(kernel, 4096 << 20))
    names = [case.name for case in CASES + PROBES]
    assert len(set(names)) == len(names)
    flat = assemble_flat([("validate.s", case_source(CASES + PROBES, kernel))], CODE, CODE_SIZE, default_mode=64)
    first, end = _loop_start(flat, "probe_adds_in_line")
    assert first % 64 == 47 and (end - 1) // 64 == first // 64  # ends on the last byte of its line
    first, end = _loop_start(flat, "probe_adds_across_lines")
    assert first % 64 == 48 and (end - 1) // 64 == first // 64 + 1
    first, end = _loop_start(flat, "probe_nops_across_lines")
    assert first % 64 == 54 and (end - 1) // 64 == first // 64 + 1


def test_random_branch_case_goes_on_where_it_stopped(kernel):
    """branch_random keeps its generator state in memory between calls (a host predictor
    memorises a sequence that every call would otherwise repeat)."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn import x86_const as x
    image = load_image(kernel, 4096 << 20)
    case = next(c for c in CASES if c.name == "branch_random")
    flat = assemble_flat([("validate.s", case_source([case], kernel_addresses(image)))], CODE, CODE_SIZE,
                         default_mode=64)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(CODE, CODE_SIZE)
    uc.mem_map(RNG_STATE & ~0xFFF, 0x1000)
    uc.mem_map(0x6F00_0000, 0x10000)
    uc.mem_write(CODE, flat.data)
    uc.mem_write(RNG_STATE, case.seed.to_bytes(8, "little"))
    states = []
    for _ in range(2):
        uc.mem_write(0x6F00_8000, flat.symbols["return_here"].to_bytes(8, "little"))
        uc.reg_write(x.UC_X86_REG_RSP, 0x6F00_8000)
        uc.reg_write(x.UC_X86_REG_RDI, 3)
        uc.emu_start(flat.symbols["case_branch_random"], flat.symbols["return_here"])
        states.append(int.from_bytes(uc.mem_read(RNG_STATE, 8), "little"))
    state = case.seed
    for expected in states:  # three xorshift64 steps per call, continuing
        for _ in range(3):
            state ^= (state << 13) & (2**64 - 1)
            state ^= state >> 7
            state ^= (state << 17) & (2**64 - 1)
        assert expected == state
