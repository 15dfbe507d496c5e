"""Live allocation tracing: hooks on the allocator's entry points, nothing in between.

A code hook covers only the first instruction of each `__rust_*` entry point. At entry the
return address is on the stack; a code hook is added at that return site the first time it is
seen (and the translated code there dropped so the hook takes effect), and the call is paired
with its return by the stack pointer, so nested calls — a realloc that calls alloc — stay paired.
Between allocator calls no Python runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import UC_HOOK_CODE, Uc

import emulator.machine.cpu as cpu_state
from emulator.errors import GuestMemoryError
from emulator.image.symbols import SymbolTable
from emulator.lifetimes import weak_callback
from emulator.trace.events import ENTRY_POINTS, AllocEvent, HeapState

ARG_REGISTERS = ("rdi", "rsi", "rdx", "rcx")


@dataclass
class _Pending:
    seq: int
    kind: str
    args: dict[str, int]
    rsp: int  # at entry: the return pops it to rsp + 8
    return_address: int
    call_site: int
    caller: str
    backtrace: tuple[str, ...]
    depth: int
    insn_entry: int
    cycles_entry: int


class AllocationTracer:
    """Records every allocator call of one run. Attach to the kernel's CPU before it starts."""

    def __init__(
        self,
        symbols: SymbolTable,
        counters: Callable[[], tuple[int, int]],
        memory_now: Callable[[], Callable[[int, int], bytes]],
        on_event: Callable[[AllocEvent], HeapState | None],
        backtrace_depth: int = 8,
    ) -> None:
        self.symbols = symbols
        self._counters = counters  # () -> (instructions, cycles) so far
        self._memory_now = memory_now  # () -> read(va, n) through the page tables as they are now
        self._read: Callable[[int, int], bytes] = lambda va, n: b""
        self._call_sites: dict[int, int] = {}  # return address -> call instruction
        self._on_event = on_event  # called once per finished call; returns the heap after it
        self.backtrace_depth = backtrace_depth
        self.entry_points = self._resolve(symbols)
        self._pending: list[_Pending] = []
        self._return_sites: set[int] = set()
        self._seq = 0
        self._cs = Cs(CS_ARCH_X86, CS_MODE_64)

    @staticmethod
    def _resolve(symbols: SymbolTable) -> dict[int, tuple[str, tuple[str, ...]]]:
        found = {}
        for name, spec in ENTRY_POINTS.items():
            sym = symbols.get(name) or symbols.get(f"__rustc::{name}")
            if sym is not None:
                found[sym.address] = spec
        return found

    def attach(self, uc: Uc) -> None:
        for address in self.entry_points:
            uc.hook_add(UC_HOOK_CODE, weak_callback(self._on_entry), None, address, address)

    # -- hooks ----------------------------------------------------------------------------

    def _on_entry(self, uc: Uc, address: int, size: int, user_data) -> None:
        kind, names = self.entry_points[address]
        self._read = self._memory_now()  # one view of memory for everything this hook reads
        regs = [cpu_state.read(uc, r) for r in ARG_REGISTERS[: len(names)]]
        args = dict(zip(names, regs))
        rsp = cpu_state.read(uc, "rsp")
        try:
            return_address = int.from_bytes(self._read(rsp, 8), "little")
        except GuestMemoryError:
            return_address = 0
        call_site = self._call_site(return_address)
        insns, cycles = self._counters()
        pending = _Pending(
            seq=self._seq, kind=kind, args=args, rsp=rsp, return_address=return_address, call_site=call_site,
            caller=self.symbols.describe(call_site), backtrace=self._backtrace(call_site, cpu_state.read(uc, "rbp")),
            depth=len(self._pending), insn_entry=insns, cycles_entry=cycles,
        )
        self._seq += 1
        if kind == "alloc_error":
            self._emit(pending, returned=False, result=None)  # diverges: there is no return to wait for
            return
        self._pending.append(pending)
        if return_address and return_address not in self._return_sites:
            self._return_sites.add(return_address)
            uc.hook_add(UC_HOOK_CODE, weak_callback(self._on_return), None, return_address, return_address)
            uc.ctl_remove_cache(return_address, return_address + 1)

    def _on_return(self, uc: Uc, address: int, size: int, user_data) -> None:
        rsp = cpu_state.read(uc, "rsp")
        for i in range(len(self._pending) - 1, -1, -1):
            call = self._pending[i]
            if call.return_address == address and call.rsp + 8 == rsp:
                del self._pending[i:]  # anything deeper never returned normally (longjmp-like unwinding)
                self._emit(call, returned=True, result=cpu_state.read(uc, "rax"))
                return

    # -- records --------------------------------------------------------------------------

    def _emit(self, call: _Pending, returned: bool, result: int | None) -> None:
        insns, cycles = self._counters()
        a = call.args
        event = AllocEvent(
            seq=call.seq, kind=call.kind, size=a.get("size", 0), align=a.get("align", 0), ptr=a.get("ptr"),
            old_size=a.get("old_size"), result=result if call.kind != "dealloc" else None, returned=returned,
            insn_entry=call.insn_entry, insn_return=insns if returned else None, cycles_entry=call.cycles_entry,
            cycles_return=cycles if returned else None, call_site=call.call_site, return_address=call.return_address,
            caller=call.caller, backtrace=call.backtrace, depth=call.depth,
        )
        self._on_event(event)

    def finish(self) -> None:
        """The run ended: calls still open never returned (a fault or a stop inside the allocator)."""
        while self._pending:
            self._emit(self._pending.pop(0), returned=False, result=None)

    def _call_site(self, return_address: int) -> int:
        """The call instruction that pushed `return_address` (x86 calls are 2 to 7 bytes)."""
        cached = self._call_sites.get(return_address)
        if cached is None:
            cached = self._call_sites[return_address] = self._find_call_site(return_address)
        return cached

    def _find_call_site(self, return_address: int) -> int:
        for length in (5, 2, 3, 6, 7, 4):
            start = return_address - length
            try:
                code = self._read(start, length)
            except GuestMemoryError:
                continue
            insn = next(self._cs.disasm(code, start), None)
            if insn is not None and insn.size == length and insn.mnemonic == "call":
                return start
        return return_address

    def _backtrace(self, call_site: int, rbp: int) -> tuple[str, ...]:
        frames = [self.symbols.describe(call_site)]
        for _ in range(self.backtrace_depth - 1):
            if not rbp or rbp % 8:
                break
            try:
                frame = self._read(rbp, 16)
            except GuestMemoryError:
                break
            saved, ret = int.from_bytes(frame[:8], "little"), int.from_bytes(frame[8:], "little")
            if not ret:
                break
            frames.append(self.symbols.describe(self._call_site(ret)))
            if saved <= rbp:
                break
            rbp = saved
        return tuple(frames)
