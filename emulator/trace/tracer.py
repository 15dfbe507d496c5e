"""Live allocation tracing: native hooks on the allocator's entry points, Python per batch.

The capture is native (emulator/cycles/native/alloctrace.c): a hook on the first instruction
of each `__rust_*` entry point records the call, a hook on each return address (added when it
is first seen) pairs the return by address and stack pointer, so nested calls — a realloc
that calls alloc — stay paired; stamps are exact, and our kernel's heap is summarised after
each call. Python takes the finished calls in batches (every `batch` calls, at stops and at the
end), turns them into `AllocEvent`s and hands them on. Calls made from the host
(`run.call("__rust_alloc", …)`) are traced like the guest's own. Between allocator calls
nothing runs in Python.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import UC_HOOK_CODE, Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib

from emulator.cycles.accounting import CycleAccounting
from emulator.cycles.native import uc_function
from emulator.errors import GuestMemoryError, NativeError
from emulator.image.symbols import SymbolTable
from emulator.layout import RUSTC_SHIM_PREFIX
from emulator.lifetimes import weak_callback
from emulator.trace import native
from emulator.trace.events import ENTRY_POINTS, AllocEvent

BATCH = 4096


@dataclass(frozen=True)
class GuestHeapLayout:
    """Where our kernel's allocator lives, for the per-call summary (docs/kernel-structures.md)."""

    allocator: int  # virtual address of ALLOCATOR
    heap_start: int
    heap_end: int
    min_block: int


@dataclass(frozen=True)
class CallSummary:
    """The guest heap right after a call, as the native walk saw it."""

    used: int | None
    free: int | None
    free_blocks: int | None
    problems: tuple[str, ...]


class AllocationTracer:
    """Records every allocator call of one run. Attach to the kernel's CPU before it starts."""

    def __init__(self, symbols: SymbolTable, read_memory: Callable[[], Callable[[int, int], bytes]],
                 on_events: Callable[[list[tuple[AllocEvent, CallSummary]]], None], backtrace_depth: int = 8,
                 host_return: int = 0, batch: int = BATCH) -> None:
        self.symbols = symbols
        self._read_memory = read_memory  # () -> read(va, n) through the page tables as they are now
        self._on_events = on_events
        self.backtrace_depth = max(1, min(backtrace_depth, 64))
        self.entry_points = self._resolve(symbols)
        self._host_return = host_return
        self._batch = batch
        self._lib = native.load()
        self._tracer = None
        self._insn_base = 0
        self._call_sites: dict[int, int] = {}  # return address -> call instruction
        self._names: dict[int, str] = {}  # address -> symbol+offset
        self._backtraces: dict[tuple[int, tuple[int, ...]], tuple[str, ...]] = {}
        self._cs = Cs(CS_ARCH_X86, CS_MODE_64)
        self._batch_cb = native.BATCH_CB(weak_callback(self._drain_from_native, dead=0))
        self._failure: BaseException | None = None
        self.stop_guest: Callable[[str], None] | None = None  # set by the owner: stops the run

    @staticmethod
    def _resolve(symbols: SymbolTable) -> dict[int, tuple[str, tuple[str, ...]]]:
        found = {}
        for name, spec in ENTRY_POINTS.items():
            sym = symbols.get(name) or symbols.get(f"{RUSTC_SHIM_PREFIX}{name}")
            if sym is not None:
                found[sym.address] = spec
        return found

    def attach(self, uc: Uc, accounting: CycleAccounting, first_instruction: int,
               heap: GuestHeapLayout | None = None, ram: tuple[int, int] | None = None) -> None:
        """Hook the entry points on `uc`; stamps count from `first_instruction` (the firmware's)."""
        lib = self._lib
        self._insn_base = first_instruction
        tracer = lib.at_new(accounting.native_state, uc_function("uc_reg_read"), uc_function("uc_vmem_read"),
                            uc_function("uc_hook_add"), uc_function("uc_ctl"), self._host_return,
                            self.backtrace_depth, self._batch, self._batch_cb)
        if not tracer:
            raise MemoryError("no memory for the allocation tracer")
        self._tracer = tracer
        weakref.finalize(self, lib.at_free, tracer)
        if heap is not None and ram is not None:
            lib.at_set_heap(tracer, heap.allocator, heap.heap_start, heap.heap_end, heap.min_block, ram[0], ram[1])
        for address, (kind, _) in self.entry_points.items():
            user = lib.at_add_entry(tracer, address, native.KIND_CODES[kind])
            handle = ctypes.c_size_t()
            err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_CODE, ctypes.c_void_p(lib.at_hook_entry()),
                                    ctypes.c_void_p(user), ctypes.c_uint64(address), ctypes.c_uint64(address))
            if err:
                raise NativeError(f"Unicorn refused the tracer's hook: {UcError(err)}")

    def host_return(self, uc: Uc, accounting: CycleAccounting) -> None:
        """A call made from the host returned: pair it (its return address never executes)."""
        if self._tracer is None:
            return
        rsp, rax = uc.reg_read(44), uc.reg_read(35)  # RSP, RAX
        self._lib.at_host_return(self._tracer, uc._uch, rsp, rax, accounting.instructions, accounting.millicycles)

    def finish(self) -> None:
        """The run ended: calls still open never returned (a fault or a stop inside the allocator)."""
        if self._tracer is None:
            return
        self._lib.at_finish(self._tracer)
        self.drain()

    def abandon_host_calls(self) -> None:
        """A call from the host did not return: its open allocator calls never will."""
        if self._tracer is not None:
            self._lib.at_abandon_host_calls(self._tracer)

    def _drain_from_native(self) -> int:
        # Called from inside a Unicorn hook: an exception cannot unwind through C. It is kept,
        # the guest is stopped, and it is raised from the next drain outside the hook.
        try:
            self.drain()
        except BaseException as exc:  # noqa: BLE001 - re-raised by drain()
            self._failure = self._failure or exc
            if self.stop_guest is not None:
                self.stop_guest(f"the allocation tracer failed: {exc}")
        return 0

    def drain(self) -> None:
        """Take the finished calls from the native buffer (a batch, a stop, the end)."""
        lib, t = self._lib, self._tracer
        if t is None:
            return
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if lib.at_error(t):
            raise NativeError(f"the native allocation tracer failed (error {lib.at_error(t)}: out of memory or "
                              f"more than 64 nested allocator calls)")
        n = lib.at_nevents(t)
        if not n:
            return
        raw = ctypes.string_at(lib.at_events(t), n * native.RECORD.size)
        nframes = lib.at_nframes(t)
        frames = (ctypes.c_uint64 * nframes).from_address(lib.at_frames(t))[:] if nframes else []
        lib.at_clear_events(t)
        lib.at_clear_frames(t)
        read = self._read_memory()
        batch = [self._event(record, frames, read) for record in native.RECORD.iter_unpack(raw)]
        batch.sort(key=lambda pair: pair[0].seq)  # calls unwound past end before the one that returned
        self._on_events(batch)

    # -- records --------------------------------------------------------------------------

    def _event(self, r: tuple[int, ...], frames: list[int], read) -> tuple[AllocEvent, CallSummary]:
        (seq, kind_code, depth, flags, a0, a1, a2, a3, result, _rsp, ret, insn_entry, insn_return, mc_entry,
         mc_return, bt_at, bt_len, _vector, heap_kind, _heap_size, used, free, blocks, problems, _largest) = r
        kind, slots = KINDS_BY_CODE[kind_code]
        regs = (a0, a1, a2, a3)  # rdi, rsi, rdx, rcx
        ptr, size, align, old_size = (None if slot is None else regs[slot] for slot in slots)
        returned = bool(flags & native.F_RETURNED)
        call_site = self._call_site(ret, read)
        outer = tuple(frames[bt_at:bt_at + bt_len])
        backtrace = self._backtraces.get((ret, outer))
        if backtrace is None:  # the same call path recurs: name it once
            backtrace = self._backtraces[(ret, outer)] = (
                self._describe(call_site), *(self._describe(self._call_site(frame, read)) for frame in outer))
        event = AllocEvent(
            seq=seq, kind=kind, size=size or 0, align=align or 0, ptr=ptr, old_size=old_size,
            result=result if returned and kind != "dealloc" else None,
            returned=returned, insn_entry=self._insn_base + insn_entry,
            insn_return=self._insn_base + insn_return if returned else None, cycles_entry=mc_entry // 1000,
            cycles_return=mc_return // 1000 if returned else None, call_site=call_site, return_address=ret,
            caller=backtrace[0], backtrace=backtrace, frames=outer, depth=depth,
        )
        known = heap_kind in (native.H_BUMP, native.H_LINKED_LIST) and returned
        summary = CallSummary(used if known else None, free if known else None, blocks if known else None,
                              tuple(text for bit, text in native.PROBLEMS.items() if problems & bit))
        return event, summary

    def _describe(self, address: int) -> str:
        name = self._names.get(address)
        if name is None:
            name = self._names[address] = self.symbols.describe(address)
        return name

    def _call_site(self, return_address: int, read) -> int:
        """The call instruction that pushed `return_address` (x86 calls are 2 to 7 bytes)."""
        cached = self._call_sites.get(return_address)
        if cached is None:
            cached = self._call_sites[return_address] = self._find_call_site(return_address, read)
        return cached

    def _find_call_site(self, return_address: int, read) -> int:
        for length in (5, 2, 3, 6, 7, 4):
            start = return_address - length
            try:
                code = read(start, length)
            except GuestMemoryError:
                continue
            insn = next(self._cs.disasm(code, start), None)
            if insn is not None and insn.size == length and insn.mnemonic == "call":
                return start
        return return_address


# kind code -> (kind, the register slot of ptr, size, align and old_size, or None), from ENTRY_POINTS
KINDS_BY_CODE = {
    native.KIND_CODES[kind]: (kind, tuple(names.index(f) if f in names else None
                                          for f in ("ptr", "size", "align", "old_size")))
    for kind, names in ENTRY_POINTS.values()
}
