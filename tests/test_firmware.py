"""The BIOS: POST, tables in low memory, and the PVH hand-off, observed through the machine."""

from __future__ import annotations

import struct

import pytest
from guest import build

from emulator.machine import BootConfig, StopReason
from emulator.session import prepare

HALT_AT_ENTRY = ".code32\n.section text\n.pvh_entry start\nstart:\n    cli\n    hlt\n"


def boot_to_entry(tmp_path, **config):
    machine = prepare(build(tmp_path, HALT_AT_ENTRY, raw=True), BootConfig(**config))
    result = machine.run()
    return machine, result


def u32(machine, address):
    return struct.unpack("<I", machine.memory.read(address, 4))[0]


def u64(machine, address):
    return machine.memory.read_u64(address)


def test_post_codes_and_low_memory_tables(tmp_path):
    machine, result = boot_to_entry(tmp_path, cmdline="abc")
    assert result.stop_reason is StopReason.HALT  # the kernel's own cli; hlt
    assert result.post_codes == (0x01, 0x10, 0x11, 0x12, 0x13, 0x14, 0x20, 0x21, 0x22, 0x30)
    ivt = machine.memory.read(0, 1024)
    vectors = {struct.unpack_from("<HH", ivt, 4 * i) for i in range(256)}
    (offset, segment), = vectors
    assert segment == 0xF000 and machine.memory.read(0xF0000 + offset, 1) == b"\xcf"  # iret
    assert struct.unpack("<H", machine.memory.read(0x400, 2))[0] == 0x3F8
    assert struct.unpack("<H", machine.memory.read(0x40E, 2))[0] == 0x9FC0
    assert struct.unpack("<H", machine.memory.read(0x413, 2))[0] == 639
    assert machine.memory.read(0x449, 1) == b"\x03"
    assert struct.unpack("<H", machine.memory.read(0x9FC00, 2))[0] == 1
    assert machine.a20.enabled


def test_com1_initialised_without_a_byte_of_output(tmp_path):
    machine, result = boot_to_entry(tmp_path)
    assert result.serial == b"" and machine.uart.bytes_sent == 0
    assert machine.uart.baud == 115200 and machine.uart.lcr == 0x03 and machine.uart.mcr == 0x0B


def test_vga_banner(tmp_path):
    machine, result = boot_to_entry(tmp_path)
    assert result.screen.splitlines()[0] == "Aetherion BIOS"
    cells = machine.memory.read(0xB8000, 4)
    assert cells == b"A\x0fe\x0f"  # bright white on black
    assert machine.memory.read(0xB8000 + 2 * 80, 2) == b" \x07"  # the rest blank, grey on black


@pytest.mark.parametrize("ram_mib", [128, 64])
def test_start_info_and_memory_map(tmp_path, ram_mib):
    machine, _ = boot_to_entry(tmp_path, cmdline="allocator=bump test", memory_mib=ram_mib)
    assert (u32(machine, 0x7000), u32(machine, 0x7004)) == (0x336EC578, 1)
    assert u64(machine, 0x7000 + 24) == 0x7100
    assert machine.memory.read(0x7100, 21) == b"allocator=bump test\0\0"
    assert (u64(machine, 0x7000 + 40), u32(machine, 0x7000 + 48)) == (0x7040, 4)
    entries = [struct.unpack_from("<QQI", machine.memory.read(0x7040 + 24 * i, 24)) for i in range(4)]
    assert entries == [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
                       (0x100000, (ram_mib << 20) - 0x100000, 1)]


def test_absent_and_empty_command_lines(tmp_path):
    machine, _ = boot_to_entry(tmp_path, cmdline=None)
    assert u64(machine, 0x7000 + 24) == 0
    machine, _ = boot_to_entry(tmp_path, cmdline="")
    assert u64(machine, 0x7000 + 24) == 0x7100 and machine.memory.read(0x7100, 1) == b"\0"


def test_pvh_handoff_register_state(tmp_path):
    machine, _ = boot_to_entry(tmp_path)
    regs = machine.handoff_registers
    assert regs["cr0"] == 0x11 and regs["cs"] == 0x08
    assert regs["ds"] == regs["es"] == regs["ss"] == 0x10
    assert regs["ebx"] == 0x7000 and not regs["eflags"] & (1 << 9)
    assert regs["eip"] == machine.image.entry
    assert all(regs[r] == 0 for r in ("eax", "ecx", "edx", "esi", "edi", "ebp", "esp"))


def test_bad_boot_block_stops_in_the_firmware(tmp_path):
    machine = prepare(build(tmp_path, HALT_AT_ENTRY, raw=True), BootConfig())
    machine.memory.write(0x6000, b"XXXX")
    result = machine.run()
    assert result.post_codes[-1] == 0xE1
    assert (result.stop_reason, result.exit_code) == (StopReason.HALT, 4)
    assert "firmware halted" in result.detail and machine.handoff_registers is None
