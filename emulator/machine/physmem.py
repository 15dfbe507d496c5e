"""Guest physical memory: one host buffer for RAM and one for the BIOS ROM.

Both Unicorn instances (the 16-bit one that runs the firmware and the 64-bit one that runs
the kernel) map the same host buffers with `mem_map_ptr`, so the hand-off copies nothing.
Host tools read guest RAM straight from the buffer, which is far cheaper than `mem_read`.
"""

from __future__ import annotations

import ctypes
import mmap

from unicorn import UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ, Uc

from emulator.errors import FirmwareError, GuestMemoryError, UsageError
from emulator.layout import LOW_MEMORY_END, MAX_RAM_MIB, MIN_RAM_MIB, ROM_BASE, ROM_SIZE


def check_ram_size(ram_mib: int) -> None:
    if not MIN_RAM_MIB <= ram_mib <= MAX_RAM_MIB:
        raise UsageError(f"RAM of {ram_mib} MiB: RAM must be {MIN_RAM_MIB} to {MAX_RAM_MIB} MiB")


class PhysicalMemory:
    """RAM `[0, ram_size)` minus the ROM window, and the 64 KiB ROM at 0xF0000."""

    def __init__(self, ram_mib: int, rom: bytes) -> None:
        check_ram_size(ram_mib)
        if len(rom) != ROM_SIZE:
            raise FirmwareError(f"firmware image is {len(rom)} bytes; the BIOS ROM must be exactly {ROM_SIZE}")
        self.size = ram_mib << 20
        self._ram = mmap.mmap(-1, self.size)  # anonymous: zero-filled, pages committed lazily
        self._rom = mmap.mmap(-1, ROM_SIZE)
        self._rom[:] = rom
        self._ram_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._ram))
        self._rom_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._rom))

    @property
    def ram_pointer(self) -> int:
        """The host address of guest RAM (physical address 0), for native code that reads it."""
        return self._ram_ptr

    def map_into(self, uc: Uc) -> None:
        """Map RAM read-write-execute and the ROM read-execute, so a ROM write faults."""
        uc.mem_map_ptr(0, ROM_BASE, UC_PROT_ALL, self._ram_ptr)
        uc.mem_map_ptr(ROM_BASE, ROM_SIZE, UC_PROT_READ | UC_PROT_EXEC, self._rom_ptr)
        uc.mem_map_ptr(LOW_MEMORY_END, self.size - LOW_MEMORY_END, UC_PROT_ALL, self._ram_ptr + LOW_MEMORY_END)

    def _buffer(self, address: int, size: int) -> tuple[mmap.mmap, int]:
        if size < 0 or address < 0:
            raise GuestMemoryError(f"bad physical access 0x{address:x}+{size}")
        if ROM_BASE <= address and address + size <= ROM_BASE + ROM_SIZE:
            return self._rom, address - ROM_BASE
        if address + size <= ROM_BASE or (LOW_MEMORY_END <= address and address + size <= self.size):
            return self._ram, address
        raise GuestMemoryError(f"physical range 0x{address:x}+0x{size:x} is outside RAM and ROM")

    def read(self, address: int, size: int) -> bytes:
        buf, off = self._buffer(address, size)
        return buf[off : off + size]

    def write(self, address: int, data: bytes) -> None:
        """Host-side write (the loader's); guest writes to ROM fault, host writes may not either."""
        buf, off = self._buffer(address, len(data))
        if buf is self._rom:
            raise GuestMemoryError("the host does not write into the ROM after power-on")
        buf[off : off + len(data)] = data

    def read_u64(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")
