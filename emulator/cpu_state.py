"""Reading and writing x86 CPU state of a Unicorn instance by name."""

from __future__ import annotations

from unicorn import Uc
from unicorn import x86_const as x86

GPRS_64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
           "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
GPRS_32 = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")
CONTROL = ("cr0", "cr2", "cr3", "cr4")
SEGMENTS = ("cs", "ds", "es", "ss", "fs", "gs")
MSR_EFER = 0xC0000080
RFLAGS_IF = 1 << 9


def reg_id(name: str) -> int:
    return getattr(x86, f"UC_X86_REG_{name.upper()}")


def read(uc: Uc, name: str) -> int:
    return uc.reg_read(reg_id(name))


def write(uc: Uc, name: str, value: int) -> None:
    uc.reg_write(reg_id(name), value)


def read_efer(uc: Uc) -> int:
    return uc.msr_read(MSR_EFER)


def snapshot_64(uc: Uc) -> dict[str, int]:
    """Everything a fault report shows, for a 64-bit instance."""
    regs = {name: read(uc, name) for name in (*GPRS_64, "rip", "rflags", *SEGMENTS, *CONTROL)}
    regs["efer"] = read_efer(uc)
    return regs


def snapshot_16(uc: Uc) -> dict[str, int]:
    """A UC_MODE_16 instance reads 64-bit registers as 0 (DESIGN.md §6): use the 32-bit names."""
    regs = {name: read(uc, name) for name in (*GPRS_32, "eip", "eflags", *SEGMENTS, "cr0", "cr2", "cr3", "cr4")}
    return regs
