"""x86 CPU state of a Unicorn instance: registers by name, snapshots, and the CPU's mode."""

from __future__ import annotations

from collections.abc import Callable

from unicorn import UC_MODE_16, UC_MODE_32, UC_MODE_64, Uc
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
    """A UC_MODE_16 instance reads 64-bit registers as 0 (docs/unicorn-notes.md): use the 32-bit names."""
    regs = {name: read(uc, name) for name in (*GPRS_32, "eip", "eflags", *SEGMENTS, "cr0", "cr2", "cr3", "cr4")}
    return regs


# -- the CPU's mode: worked out here only ------------------------------------------------------

EFER_SCE, EFER_LMA = 1, 1 << 10
CR0_PE, CR0_PG = 1, 1 << 31
DESC_LONG, DESC_DB = 0x20, 0x40  # flags nibble of a code descriptor's byte 6: L and D/B


_INSTANCE_BITS = {UC_MODE_16: 16, UC_MODE_32: 32, UC_MODE_64: 64}


def instance_bits(uc: Uc) -> int:
    """The Unicorn instance's mode: 16 for the firmware's instance, 64 for the kernel's."""
    return _INSTANCE_BITS[uc.ctl_get_mode()]


def pc(uc: Uc) -> int:
    """The program counter as the instance reads it (EIP in a 16-bit instance: an offset into CS in real mode)."""
    return read(uc, "rip") if instance_bits(uc) == 64 else read(uc, "eip")  # 16/32: 64-bit names read 0


def linear_pc(uc: Uc) -> int:
    """The program counter as a linear address (real mode adds CS << 4)."""
    value = pc(uc)
    if instance_bits(uc) == 16 and not read(uc, "cr0") & CR0_PE:
        value += (read(uc, "cs") & 0xFFFF) << 4
    return value


def paging_root(uc: Uc) -> int | None:
    """CR3 when paging is on, else None (virtual addresses are physical)."""
    return read(uc, "cr3") if read(uc, "cr0") & CR0_PG else None


def code_bits(uc: Uc, read_linear: Callable[[int, int], bytes]) -> int:
    """16, 32 or 64: the width the CPU decodes the current code segment in, from CR0, EFER and
    the CS descriptor in the GDT (read through `read_linear`, which may raise)."""
    if not read(uc, "cr0") & CR0_PE:
        return 16
    default = 64 if instance_bits(uc) == 64 else 32
    try:
        selector = read(uc, "cs") & 0xFFF8
        if not selector:
            return default  # Unicorn's initial long-mode state: CS = 0 with 64-bit attributes
        _, base, _, _ = uc.reg_read(x86.UC_X86_REG_GDTR)
        flags = read_linear(base + selector, 8)[6]
    except Exception:  # noqa: BLE001 - an unreadable GDT: the instance's natural width
        return default
    if flags & DESC_LONG and default == 64 and read_efer(uc) & EFER_LMA:
        return 64
    return 32 if flags & DESC_DB else 16
