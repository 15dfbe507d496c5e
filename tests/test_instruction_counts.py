"""Exact instruction counts over a whole firmware run, including the real-to-protected switch.

Reference: a per-instruction Python hook, which Unicorn calls once per executed instruction
(and once per iteration of a `rep` instruction, which counts once).
"""

from __future__ import annotations

import struct

import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INSN, UC_MODE_16, Uc
from unicorn import x86_const as x86

from emulator.cycles.accounting import CycleAccounting
from emulator.machine.physmem import PhysicalMemory
from tests.support.paths import FIRMWARE

pytestmark = pytest.mark.unit

ENTRY = 0x0220_0000


def firmware_cpu() -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_16)
    memory = PhysicalMemory(128, FIRMWARE.read_bytes())
    memory.map_into(uc)
    memory.write(0x6000, struct.pack("<IIIIQII", 0x50424541, 1, ENTRY, 1, 128 << 20, 1, 0) + b"x\0")
    uc.hook_add(UC_HOOK_INSN, lambda *a: 0xFF, None, 1, 0, x86.UC_X86_INS_IN)
    uc.hook_add(UC_HOOK_INSN, lambda *a: None, None, 1, 0, x86.UC_X86_INS_OUT)
    uc.reg_write(x86.UC_X86_REG_CS, 0xF000)
    uc._memory = memory  # type: ignore[attr-defined]
    return uc


def test_firmware_count_matches_a_per_instruction_hook():
    reference = firmware_cpu()
    seen = {"count": 0, "last": None, "rep": False}

    def each(uc, address, size, user_data):
        if not (address == seen["last"] and seen["rep"]):
            seen["count"] += 1
        head = bytes(uc.mem_read(address, 2))
        seen["rep"] = head[0] in (0xF2, 0xF3) or (head[0] == 0x66 and head[1] in (0xF2, 0xF3))
        seen["last"] = address

    reference.hook_add(UC_HOOK_CODE, each)
    reference.emu_start(0xFFFF0, ENTRY)

    counted = firmware_cpu()
    accounting = CycleAccounting(counted)
    accounting.attach()
    counted.emu_start(0xFFFF0, ENTRY)
    accounting.finish(counted.reg_read(x86.UC_X86_REG_EIP))
    assert counted.reg_read(x86.UC_X86_REG_EIP) == ENTRY
    assert accounting.instructions == seen["count"] > 1000
