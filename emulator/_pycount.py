"""Temporary Python instruction counter with CycleAccounting's interface (slow: a Python block hook)."""

from __future__ import annotations

from capstone import CS_MODE_16, CS_MODE_64, CS_ARCH_X86, Cs
from unicorn import UC_HOOK_BLOCK, Uc


class CycleAccounting:
    def __init__(self, uc: Uc, params=None, mode: int = 64) -> None:
        self._uc = uc
        self._cs = Cs(CS_ARCH_X86, CS_MODE_16 if mode == 16 else CS_MODE_64)
        self._blocks: dict[tuple[int, int], list[int]] = {}
        self._count = 0
        self._last: list[int] = []
        self._budget: int | None = None

    def attach(self) -> None:
        self._uc.hook_add(UC_HOOK_BLOCK, self._block)

    def _block(self, uc: Uc, address: int, size: int, user_data) -> None:
        key = (address, size)
        addrs = self._blocks.get(key)
        if addrs is None:
            code = bytes(uc.mem_read(address, size)) if size else b""
            addrs = [i.address for i in self._cs.disasm(code, address)] or [address]
            self._blocks[key] = addrs
        self._count += len(addrs)
        self._last = addrs
        if self._budget is not None and self._count > self._budget:
            uc.emu_stop()

    def set_budget(self, n: int | None) -> None:
        self._budget = n

    def finish(self, stop_pc: int) -> None:
        if stop_pc in self._last:
            self._count -= len(self._last) - self._last.index(stop_pc)

    @property
    def instructions(self) -> int:
        return self._count

    @property
    def cycles(self) -> int:
        return 0

    def breakdown(self) -> dict[str, int]:
        return {}
