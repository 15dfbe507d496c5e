"""The BIOS ROM (firmware/bios.s) run on its own in a raw 16-bit Unicorn CPU, as the emulator runs it.

How Unicorn's `emu_start(begin, until)` treats real mode (measured, Unicorn 2.1.4, UC_MODE_16):
- `begin` is a *linear* address. Unicorn sets `EIP = begin - CS * 16` from the CS selector already
  in the CPU, so with `CS = 0xF000` the reset vector is `emu_start(0xFFFF0, ...)` and EIP reads 0xFFF0.
- `until` is compared with the *linear* PC (CS base + EIP) of each instruction about to run, in real
  and protected mode alike: `until=0xF0000` stops at F000:0000 with EIP = 0.
- `UC_HOOK_BLOCK` reports linear addresses too.
- `hlt` makes `emu_start` return (EIP then points after the `hlt`).
A UC_MODE_16 instance reads 64-bit registers as 0 (docs/unicorn-notes.md), so only 32-bit ones are read here.

The source is assembled by the project's toolchain for every test session, so these tests check
firmware/bios.s itself; tests/test_images.py checks that images/firmware.bin is its build.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, Cs
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_BLOCK,
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_MEM_WRITE,
    UC_MODE_16,
    UC_PROT_EXEC,
    UC_PROT_READ,
    Uc,
)
from unicorn import x86_const as x86

from emulator.layout import (
    BDA,
    BOOT_PARAMS_MAGIC,
    COM1,
    EBDA_BASE,
    IVT,
    KERNEL_BASE,
    RESET_VECTOR,
    ROM_BASE,
    ROM_SIZE,
    START_INFO,
    VGA_TEXT,
)
from emulator.machine.records import BootConfig, StopReason
from emulator.machine.session import prepare
from emulator.toolchain.build import FlatImage, build_firmware
from tests.support.guest import build
from tests.support.paths import ROOT

pytestmark = pytest.mark.boot

RESET = RESET_VECTOR
ENTRY = KERNEL_BASE
BOOT_MAGIC = BOOT_PARAMS_MAGIC
LCR_DLAB = 0x80
MAX_INSNS = 100_000  # the firmware runs ~2,600; a runaway loop stops here instead of hanging the suite

# Every POST code of a good boot, in order (docs/boot-protocol.md).
GOOD_POST = (0x01, 0x10, 0x11, 0x12, 0x13, 0x14, 0x20, 0x21, 0x22, 0x30)
# COM1 initialisation, the only UART writes allowed: (port, value).
COM1_INIT = (
    (COM1 + 3, 0x80), (COM1 + 0, 0x01), (COM1 + 1, 0x00),  # DLAB on, divisor 1 = 115200 baud
    (COM1 + 3, 0x03),                                        # DLAB off, 8N1
    (COM1 + 2, 0xC7), (COM1 + 4, 0x0B), (COM1 + 1, 0x00),  # FIFOs on and cleared; DTR, RTS, OUT2; no IRQs
)
# Where POST may write (docs/memory-map.md): IVT + BDA, the hvm_start_info page, the EBDA size word, VGA text.
WRITABLE = ((IVT, BDA + 0x100), (START_INFO, START_INFO + 0x1000), (EBDA_BASE, EBDA_BASE + 2),
            (VGA_TEXT, VGA_TEXT + 80 * 25 * 2))


@pytest.fixture(scope="module")
def rom() -> FlatImage:
    image = build_firmware(ROOT / "firmware")
    assert len(image.data) == ROM_SIZE
    return image


def boot_block(entry: int = ENTRY, ram_size: int = 128 << 20, cmdline: bytes | None = b"",
               magic: int = BOOT_MAGIC, version: int = 1, length: int | None = None) -> bytes:
    """A boot parameter block as the loader writes it (docs/boot-protocol.md)."""
    flags = 0 if cmdline is None else 1
    text = b"" if cmdline is None else cmdline
    size = len(text) if length is None else length
    return struct.pack("<IIIIQII", magic, version, entry, flags, ram_size, size, 0) + text + b"\0"


class InstructionCounter:
    """Counts retired instructions from block hooks, decoding each translated block with capstone.

    A `rep` instruction re-enters its own block once per iteration; it counts once, so a block that
    starts at the `rep` the previous block ended with is a repeat, not new work. A block is decoded
    in 32-bit mode once CS holds the flat code selector: the far jump after `mov cr0` still runs with
    real-mode CS attributes, so CR0.PE alone would pick the wrong width.
    """

    def __init__(self) -> None:
        self.count = 0
        self._decoders = {16: Cs(CS_ARCH_X86, CS_MODE_16), 32: Cs(CS_ARCH_X86, CS_MODE_32)}
        self._blocks: dict[tuple[int, int, int], tuple[int, int, bool]] = {}
        self._last_rep_at: int | None = None

    def on_block(self, uc: Uc, address: int, size: int, _user: object) -> None:
        bits = 32 if uc.reg_read(x86.UC_X86_REG_CS) == 0x08 else 16
        key = (address, size, bits)
        if key not in self._blocks:
            insns = list(self._decoders[bits].disasm(bytes(uc.mem_read(address, size)), address))
            assert sum(i.size for i in insns) == size, f"undecodable block at {address:#x}"
            last = insns[-1]
            self._blocks[key] = (len(insns), last.address, last.mnemonic.startswith("rep"))
        n, last_address, last_is_rep = self._blocks[key]
        if address != self._last_rep_at:
            self.count += n
        self._last_rep_at = last_address if last_is_rep else None


@dataclass
class FirmwareRun:
    uc: Uc
    post_codes: list[int] = field(default_factory=list)
    port_writes: list[tuple[int, int]] = field(default_factory=list)  # (port, value), POST port excluded
    port_reads: list[int] = field(default_factory=list)
    thr_writes: int = 0  # writes to COM1 + 0 while DLAB is clear: serial output
    memory_writes: list[tuple[int, int]] = field(default_factory=list)  # (address, size)
    counter: InstructionCounter = field(default_factory=InstructionCounter)
    reference_count: int = 0  # from a per-instruction hook, when asked for

    def reg(self, name: str) -> int:
        return self.uc.reg_read(getattr(x86, f"UC_X86_REG_{name.upper()}"))

    def read(self, address: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(address, size))

    def u16(self, address: int) -> int:
        return struct.unpack("<H", self.read(address, 2))[0]

    def u32(self, address: int) -> int:
        return struct.unpack("<I", self.read(address, 4))[0]

    def u64(self, address: int) -> int:
        return struct.unpack("<Q", self.read(address, 8))[0]

    @property
    def linear_pc(self) -> int:
        return self.reg("cs") * 16 + self.reg("eip") if not self.reg("cr0") & 1 else self.reg("eip")


def run_firmware(rom: FlatImage, block: bytes, ram_mib: int = 128, port_0x92: int = 0x00,
                 until: int = ENTRY, dirty_registers: bool = True, per_instruction: bool = False) -> FirmwareRun:
    """Reset the CPU at F000:FFF0 with `block` at 0x6000 and run until the linear PC reaches `until`."""
    uc = Uc(UC_ARCH_X86, UC_MODE_16)
    ram = ram_mib << 20
    uc.mem_map(0, ROM_BASE)
    uc.mem_map(ROM_BASE, ROM_SIZE, UC_PROT_READ | UC_PROT_EXEC)  # a write into ROM stops emu_start
    uc.mem_map(ROM_BASE + ROM_SIZE, ram - ROM_BASE - ROM_SIZE)
    uc.mem_write(ROM_BASE, rom.data)
    uc.mem_write(0x6000, block)
    uc.mem_write(ENTRY, b"\xf4")  # hlt, should anything run past the stop
    run = FirmwareRun(uc)
    dlab = [False]

    def on_out(_uc: Uc, port: int, size: int, value: int, _user: object) -> None:
        assert size == 1, f"{size}-byte out to {port:#x}"
        if port == 0x80:
            run.post_codes.append(value)
            return
        run.port_writes.append((port, value))
        if port == COM1 + 3:
            dlab[0] = bool(value & LCR_DLAB)
        elif port == COM1 and not dlab[0]:
            run.thr_writes += 1

    def on_in(_uc: Uc, port: int, size: int, _user: object) -> int:
        run.port_reads.append(port)
        return port_0x92 if port == 0x92 else 0xFF

    uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, x86.UC_X86_INS_OUT)
    uc.hook_add(UC_HOOK_INSN, on_in, None, 1, 0, x86.UC_X86_INS_IN)
    uc.hook_add(UC_HOOK_MEM_WRITE, lambda _u, _a, address, size, _v, _d: run.memory_writes.append((address, size)))
    uc.hook_add(UC_HOOK_BLOCK, run.counter.on_block)
    if per_instruction:  # Unicorn calls this once per instruction and once per `rep` iteration
        last = [None]

        def on_code(_uc: Uc, address: int, _size: int, _user: object) -> None:
            head = bytes(_uc.mem_read(address, 2))
            is_rep = head[0] in (0xF2, 0xF3) or (head[0] == 0x66 and head[1] in (0xF2, 0xF3))
            if not (is_rep and last[0] == address):
                run.reference_count += 1
            last[0] = address

        uc.hook_add(UC_HOOK_CODE, on_code)
    if dirty_registers:  # so the hand-off checks see the firmware's own work, not Unicorn's zeroed reset
        for name in ("eax", "ecx", "edx", "ebx", "esi", "edi", "ebp", "esp"):
            uc.reg_write(getattr(x86, f"UC_X86_REG_{name.upper()}"), 0xDEAD0000 | len(name))
        uc.reg_write(x86.UC_X86_REG_EFLAGS, 0x202)  # IF set: the firmware must clear it itself
        uc.reg_write(x86.UC_X86_REG_CR0, 0x60000010)  # the architectural reset value (CD, NW, ET)
    uc.reg_write(x86.UC_X86_REG_CS, 0xF000)
    uc.emu_start(RESET, until, count=MAX_INSNS)
    return run


# --- Unicorn's real-mode addressing, as the emulator relies on it ---------------------------------

def test_emu_start_takes_linear_addresses_for_begin_and_until(rom):
    run = run_firmware(rom, boot_block(), until=ROM_BASE)  # stop where the reset vector's far jump lands
    assert (run.reg("cs"), run.reg("eip")) == (0xF000, 0x0000)
    assert run.counter.count == 1 and run.post_codes == []


def test_rom_layout(rom):
    data, sym = rom.data, rom.symbols
    reset = data[RESET - ROM_BASE:]
    assert reset[:5] == b"\xea\x00\x00\x00\xf0"  # jmp far F000:0000
    assert sym["post"] == ROM_BASE
    cs16 = Cs(CS_ARCH_X86, CS_MODE_16)
    assert data[0] == 0xFA  # cli, before anything else
    assert data[sym["default_handler"] - ROM_BASE] == 0xCF  # iret
    # The far jump into 32-bit code: 66 EA off32 sel16, written as bytes (keystone mis-encodes it).
    far = struct.pack("<BBIH", 0x66, 0xEA, sym["protected"], 0x08)
    assert far in data
    insn, = cs16.disasm(far, 0)
    assert (insn.mnemonic, insn.op_str) == ("ljmp", f"8:{sym['protected']:#x}")
    # The jump to the kernel: jmp dword ptr [0x6008], an absolute indirect jump in 32-bit code.
    cs32 = Cs(CS_ARCH_X86, CS_MODE_32)
    tail = data[sym["protected"] - ROM_BASE:sym["banner"] - ROM_BASE]
    last = list(cs32.disasm(tail, sym["protected"]))[-1]
    assert last.bytes == b"\xff\x25\x08\x60\x00\x00"
    assert (last.mnemonic, last.op_str) == ("jmp", "dword ptr [0x6008]")
    # Flat GDT, Accessed preset (the CPU would otherwise write the bit into ROM).
    gdt = data[sym["gdt"] - ROM_BASE:][:24]
    assert struct.unpack("<3Q", gdt) == (0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF)
    assert struct.unpack_from("<HI", data, sym["gdt_pointer"] - ROM_BASE) == (23, sym["gdt"])


# --- a good boot ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def booted(rom) -> FirmwareRun:
    return run_firmware(rom, boot_block(cmdline=b"allocator=bump test"), port_0x92=0x01)


def test_stops_at_the_kernel_entry_in_32_bit_code(booted):
    assert booted.reg("eip") == ENTRY and booted.reg("cs") == 0x08


def test_post_codes(booted):
    assert tuple(booted.post_codes) == GOOD_POST


def test_com1_initialised_and_never_written_to(booted):
    uart = [(port, value) for port, value in booted.port_writes if COM1 <= port <= COM1 + 7]
    assert tuple(uart) == COM1_INIT
    assert booted.thr_writes == 0


def test_a20_fast_gate(booted):
    # Read port 0x92, set bit 1 (A20), clear bit 0 (it would reset the CPU), write it back.
    assert booted.port_reads == [0x92]
    assert [value for port, value in booted.port_writes if port == 0x92] == [0x02]
    other = {port for port, _ in booted.port_writes} - {0x92} - set(range(COM1, COM1 + 8)) - PIC_PORTS
    assert other == set()


PIC_PORTS = {0x20, 0x21, 0xA0, 0xA1}


def test_the_interrupt_controllers_are_set_up_and_masked(booted):
    """As a BIOS: ICW1-4 to both 8259As (vectors 0x08 and 0x70, the slave on IRQ2), then all masked."""
    writes = [(port, value) for port, value in booted.port_writes if port in PIC_PORTS]
    assert writes == [(0x20, 0x11), (0xA0, 0x11), (0x21, 0x08), (0xA1, 0x70), (0x21, 0x04), (0xA1, 0x02),
                      (0x21, 0x01), (0xA1, 0x01), (0x21, 0xFF), (0xA1, 0xFF)]


def test_a20_gate_keeps_the_other_bits(rom):
    run = run_firmware(rom, boot_block(), port_0x92=0xF1)
    assert [value for port, value in run.port_writes if port == 0x92] == [0xF2]


def test_interrupt_vector_table(booted, rom):
    ivt = booted.read(0, 1024)
    handler = rom.symbols["default_handler"]
    assert all(struct.unpack_from("<HH", ivt, 4 * i) == (handler - ROM_BASE, 0xF000) for i in range(256))


def test_bios_data_area_and_ebda(booted):
    assert booted.u16(0x400) == 0x3F8
    assert booted.u16(0x40E) == 0x9FC0
    assert booted.u16(0x413) == 639
    assert booted.read(0x449, 1) == b"\x03"
    assert booted.u16(0x9FC00) == 1  # EBDA size in KiB


def test_vga_screen_and_banner(booted):
    screen = booted.read(0xB8000, 80 * 25 * 2)
    banner = b"Aetherion BIOS"
    assert screen[0:2 * len(banner):2] == banner
    assert set(screen[1:2 * len(banner):2]) == {0x0F}  # bright white on black
    assert screen[2 * len(banner):] == b"\x20\x07" * (80 * 25 - len(banner))  # the rest blank, grey


def test_writes_only_where_the_memory_map_allows(booted):
    outside = [(hex(a), s) for a, s in booted.memory_writes
               if not any(lo <= a and a + s <= hi for lo, hi in WRITABLE)]
    assert outside == []


def test_hvm_start_info(booted):
    si = booted.read(0x7000, 56)
    magic, version, flags, nr_modules, modlist, cmdline, rsdp, memmap, entries, reserved = \
        struct.unpack("<IIIIQQQQII", si)
    assert (magic, version, flags, nr_modules, modlist) == (0x336EC578, 1, 0, 0, 0)
    assert (cmdline, rsdp, memmap, entries, reserved) == (0x7100, 0, 0x7040, 4, 0)


def test_command_line_copy(booted):
    assert booted.read(0x7100, 21) == b"allocator=bump test\0\0"


def test_pvh_handoff_registers(booted):
    assert booted.reg("cr0") == 0x11
    assert booted.reg("cs") == 0x08
    assert {booted.reg(s) for s in ("ds", "es", "ss", "fs", "gs")} == {0x10}
    assert booted.reg("ebx") == 0x7000
    assert {booted.reg(r) for r in ("eax", "ecx", "edx", "esi", "edi", "ebp", "esp")} == {0}
    assert not booted.reg("eflags") & (1 << 9)  # IF


@pytest.mark.parametrize(("cmdline", "expected"), [(b"allocator=bump test", 1514), (None, 1506)])
def test_instruction_count(rom, cmdline, expected):
    # IVT loop 256 x 5 = 1280, banner loop 14 x 6 + 3 = 87, 147 straight-line instructions with a
    # command line (8 fewer without); a `rep` counts once however many iterations it runs.
    run = run_firmware(rom, boot_block(cmdline=cmdline), per_instruction=True)
    assert run.counter.count == run.reference_count == expected


# --- memory sizes and command lines ---------------------------------------------------------------

def e820(run: FirmwareRun) -> list[tuple[int, int, int, int]]:
    count = run.u32(0x7000 + 48)
    return [struct.unpack_from("<QQII", run.read(0x7040 + 24 * i, 24)) for i in range(count)]


@pytest.mark.parametrize("ram_mib", [128, 64])
def test_e820_map(rom, ram_mib):
    run = run_firmware(rom, boot_block(ram_size=ram_mib << 20), ram_mib=ram_mib)
    assert run.reg("eip") == ENTRY
    assert e820(run) == [(0, 0x9FC00, 1, 0), (0x9FC00, 0x400, 2, 0), (0xF0000, 0x10000, 2, 0),
                         (0x100000, (ram_mib << 20) - 0x100000, 1, 0)]


def test_e820_ram_size_above_4_gib_uses_all_64_bits(rom):
    run = run_firmware(rom, boot_block(ram_size=(5 << 30) + (1 << 20)))
    assert e820(run)[3] == (0x100000, 5 << 30, 1, 0)


def test_absent_command_line(rom):
    run = run_firmware(rom, boot_block(cmdline=None))
    assert run.u64(0x7000 + 24) == 0
    assert all(not (0x7100 <= a < 0x8000) for a, _ in run.memory_writes)


def test_empty_command_line(rom):
    run = run_firmware(rom, boot_block(cmdline=b""))
    assert run.u64(0x7000 + 24) == 0x7100 and run.read(0x7100, 1) == b"\0"


def test_longest_command_line_fills_the_page(rom):
    text = bytes(ord("a") + i % 26 for i in range(3839))
    run = run_firmware(rom, boot_block(cmdline=text))
    assert run.read(0x7100, 3840) == text + b"\0"  # the NUL lands on 0x7FFF, the page's last byte


def test_overlong_command_line_is_cut_to_fit(rom):
    run = run_firmware(rom, boot_block(cmdline=b"b" * 3900))
    assert run.read(0x7100, 3840) == b"b" * 3839 + b"\0"


def test_length_of_64_kib_or_more_is_capped_not_wrapped(rom):
    # 0x10005 would be 5 if only its low 16 bits were read; the whole length must be capped.
    run = run_firmware(rom, boot_block(cmdline=b"c" * 3900, length=0x10005))
    assert run.read(0x7100, 3840) == b"c" * 3839 + b"\0"


def test_entry_comes_from_the_boot_block(rom):
    run = run_firmware(rom, boot_block(entry=0x0300_1234), until=0x0300_1234)
    assert run.reg("eip") == 0x0300_1234 and run.reg("cs") == 0x08


# --- a bad boot parameter block -------------------------------------------------------------------

@pytest.mark.parametrize("block", [boot_block(magic=0x58585858), boot_block(version=2)], ids=["magic", "version"])
def test_bad_boot_block_halts_with_post_e1(rom, block):
    run = run_firmware(rom, block)
    assert tuple(run.post_codes) == GOOD_POST[:6] + (0xE1,)
    assert run.read(run.linear_pc - 1, 1) == b"\xf4"  # stopped by its hlt, in the ROM
    assert ROM_BASE <= run.linear_pc < ROM_BASE + ROM_SIZE
    assert run.reg("cr0") & 1 == 0 and not run.reg("eflags") & (1 << 9)
    assert all(not (0x7000 <= a < 0x8000) for a, _ in run.memory_writes)  # no start info for the kernel


# --- the same ROM inside the emulator's machine: its device models see what the firmware did -----

HALT_AT_ENTRY = ".code32\n.section text\n.pvh_entry start\nstart:\n    cli\n    hlt\n"


def machine_boot(tmp_path, corrupt_block: bool = False):
    machine = prepare(build(tmp_path, HALT_AT_ENTRY, raw=True), BootConfig())
    if corrupt_block:
        machine.memory.write(0x6000, b"XXXX")
    return machine, machine.run()


def test_machine_devices_after_post(tmp_path):
    machine, result = machine_boot(tmp_path)
    assert result.post_codes == GOOD_POST
    assert result.serial == b"" and machine.serial_bytes == 0
    assert machine.uart.baud == 115200 and machine.uart.lcr == 0x03 and machine.uart.mcr == 0x0B
    assert machine.a20.enabled
    assert result.screen.splitlines()[0] == "Aetherion BIOS"
    assert machine.handoff_registers["ebx"] == 0x7000


def test_machine_stops_on_a_bad_boot_block(tmp_path):
    machine, result = machine_boot(tmp_path, corrupt_block=True)
    assert result.post_codes[-1] == 0xE1
    assert (result.stop_reason, result.exit_code) == (StopReason.HALT, 4)
    assert "firmware halted" in result.detail and machine.handoff_registers is None
