"""A bare 64-bit Unicorn CPU with cycle accounting attached: the cycle-model tests' harness."""

from __future__ import annotations

from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc, UcError
from unicorn import x86_const as x

from emulator.cycles.accounting import CycleAccounting
from emulator.cycles.params import load_params, millicycles

CODE = 0x1000
DATA = 0x100000
RAM = 0x800000
P = load_params()


def asm(src: str, address: int = CODE, mode: int = KS_MODE_64) -> bytes:
    return bytes(Ks(KS_ARCH_X86, mode).asm(src, address)[0])


class Run:
    """A fresh 64-bit CPU with RAM at 0, `src` at CODE, and cycle accounting attached."""

    def __init__(self, src: str, *, budget: int | None = None, until: int | None = None, count: int = 0,
                 setup=None) -> None:
        self.code = asm(src)
        uc = self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map(0, RAM)
        uc.mem_write(CODE, self.code)
        uc.reg_write(x.UC_X86_REG_RSP, 0x80000)
        if setup:
            setup(uc)
        self.acc = CycleAccounting(uc)
        self.acc.attach()
        self.acc.set_budget(budget)
        self.error = None
        try:
            uc.emu_start(CODE, until if until is not None else CODE + len(self.code) + 0x100000, count=count)
        except UcError as exc:
            self.error = exc
        self.pc = uc.reg_read(x.UC_X86_REG_RIP)
        self.acc.finish(self.pc)

    @property
    def n(self) -> int:
        return self.acc.instructions

    def reg(self, name: str) -> int:
        return self.uc.reg_read(getattr(x, f"UC_X86_REG_{name.upper()}"))


mc = millicycles


