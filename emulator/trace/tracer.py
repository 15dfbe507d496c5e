"""Live allocation tracing: native hooks on the allocator's entry points, Python per batch.

The capture is native (emulator/cycles/native/alloctrace.c): a hook on the first instruction
of each `__rust_*` entry point records the call, a hook on each return address (added when it
is first seen) pairs the return by address and stack pointer, so nested calls — a realloc
that calls alloc — stay paired; stamps are exact. After each call, still in native code, our
kernel's heap is walked and its free list's change recorded, the call is checked and applied
to the live blocks, and its trace line written. Python takes the finished calls in batches
(every `batch` calls, at stops and at the end): it names the addresses the batch met for the
first time and hands the batch on. Calls made from the
host (`run.call("__rust_alloc", …)`) are traced like the guest's own.
"""

from __future__ import annotations

import ctypes
import weakref
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from unicorn import UC_HOOK_CODE, Uc

from emulator.cycles.accounting import CycleAccounting
from emulator.cycles.native import add_native_hook, uc_function
from emulator.errors import NativeError
from emulator.image.symbols import SymbolTable
from emulator.layout import RUSTC_SHIM_PREFIX
from emulator.lifetimes import weak_callback
from emulator.trace import native
from emulator.trace.eventlog import KINDS_BY_CODE
from emulator.trace.events import ENTRY_POINTS
from emulator.trace.freelists import CHANGE
from emulator.trace.sites import SiteNames

BATCH = 4096


@dataclass(frozen=True)
class GuestHeapLayout:
    """Where our kernel's allocator lives, for the per-call walk (docs/kernel-structures.md)."""

    allocator: int  # virtual address of ALLOCATOR
    heap_start: int
    heap_end: int
    min_block: int


@dataclass(frozen=True)
class Batch:
    """Finished calls, as the native side left them, and what Python made of them."""

    records: bytes  # native.RECORD each, in the order the calls finished
    frames: array  # the backtrace frames the records index (bt_at, bt_len)
    text: bytes  # their trace lines (version 2), when a trace is written
    sites: list[tuple[int, int, str]]  # (address, call instruction, name) of addresses first met here
    changes: bytes  # CHANGE each: the guest free list's changes, in the order they were recorded
    entries: array  # the changes' inserted (address, size) pairs
    violations: bytes  # native.VIOLATION each: what the checks found (emulator/heap/checker.py names them)

    def __len__(self) -> int:
        return len(self.records) // native.RECORD.size


class AllocationTracer:
    """Records every allocator call of one run. Attach to the kernel's CPU before it starts."""

    def __init__(self, symbols: SymbolTable, read_memory: Callable[[], Callable[[int, int], bytes]],
                 on_batch: Callable[[Batch], None], backtrace_depth: int = 8, host_return: int = 0,
                 batch: int = BATCH, check: bool = True, write_text: bool = False, max_violations: int = 0) -> None:
        self.symbols = symbols
        self.names = SiteNames(symbols)
        self._read_memory = read_memory  # () -> read(va, n) through the page tables as they are now
        self._on_batch = on_batch
        self.backtrace_depth = max(1, min(backtrace_depth, 64))
        self.entry_points = self._resolve(symbols)
        self._host_return = host_return
        self._batch = batch
        self.check = check
        self._write_text = write_text
        self._max_violations = max_violations  # kept per run; past it they are only counted
        self.lib = native.load()
        self._tracer = None
        self.insn_base = 0
        self.heap_range: tuple[int, int] | None = None
        self.live_handle: int | None = None  # the native live-block set (emulator/heap/liveset.py reads it)
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
               heap: GuestHeapLayout | None = None, ram: tuple[int, int] | None = None,
               delivery: int | None = None) -> None:
        """Hook the entry points on `uc`; stamps count from `first_instruction` (the firmware's);
        `delivery` (the CPU's exception-delivery state) says which handler a call runs under."""
        lib = self.lib
        self.insn_base = first_instruction
        tracer = lib.at_new(accounting.native_state, uc_function("uc_reg_read"), uc_function("uc_vmem_read"),
                            uc_function("uc_hook_add"), uc_function("uc_ctl"), self._host_return,
                            self.backtrace_depth, self._batch, self._batch_cb)
        if not tracer:
            raise MemoryError("no memory for the allocation tracer")
        self._tracer = tracer
        weakref.finalize(self, lib.at_free, tracer)
        for code, (kind, slots) in KINDS_BY_CODE.items():
            lib.at_set_kind(tracer, code, kind.encode(), *(native.NO_SLOT if s is None else s for s in slots))
        self.heap_range = (heap.heap_start, heap.heap_end) if heap is not None else None
        lo, hi = self.heap_range or (0, 0)
        if lib.at_set_events(tracer, lo, hi, int(self.check), self._max_violations, first_instruction, int(self._write_text)):
            raise MemoryError("no memory for the allocation tracer")
        self.live_handle = lib.at_liveset(tracer)
        if delivery is not None:
            lib.at_set_delivery(tracer, delivery)
        if heap is not None and ram is not None:
            if lib.at_set_heap(tracer, heap.allocator, heap.heap_start, heap.heap_end, heap.min_block, ram[0], ram[1]):
                raise MemoryError("no memory for the allocation tracer")
        for address, (kind, _) in self.entry_points.items():
            user = lib.at_add_entry(tracer, address, native.KIND_CODES[kind])
            add_native_hook(uc, UC_HOOK_CODE, lib.at_hook_entry(), ctypes.c_void_p(user), begin=address, end=address,
                            what="the tracer's")

    def host_return(self, uc: Uc, accounting: CycleAccounting) -> None:
        """A call made from the host returned: pair it (its return address never executes)."""
        if self._tracer is None:
            return
        rsp, rax = uc.reg_read(44), uc.reg_read(35)  # RSP, RAX
        self.lib.at_host_return(self._tracer, uc._uch, rsp, rax, accounting.instructions, accounting.millicycles)

    def finish(self) -> None:
        """The run ended: calls still open never returned (a fault or a stop inside the allocator)."""
        if self._tracer is None:
            return
        self.lib.at_finish(self._tracer)
        self.drain()

    def abandon_host_calls(self) -> None:
        """A call from the host did not return: its open allocator calls never will."""
        if self._tracer is not None:
            self.lib.at_abandon_host_calls(self._tracer)

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
        """Take the finished calls from the native buffers (a batch, a stop, the end)."""
        lib, t = self.lib, self._tracer
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
        records = ctypes.string_at(lib.at_events(t), n * native.RECORD.size)
        frames = _u64s(lib.at_frames(t), lib.at_nframes(t))
        size = ctypes.c_size_t()
        text = lib.at_text(t, ctypes.byref(size))
        text = ctypes.string_at(text, size.value) if size.value else b""
        unnamed = lib.at_unnamed(t, ctypes.byref(size))
        unnamed = _u64s(unnamed, size.value)
        changes, entries = b"", array("Q")
        walker = lib.at_walker(t)
        if walker:
            nchanges = lib.gw_nchanges(walker)
            changes = ctypes.string_at(lib.gw_changes(walker), nchanges * CHANGE.size) if nchanges else b""
            entries = _u64s(lib.gw_entries(walker), 2 * lib.gw_nentries(walker))
        sites = self.names.learn(unnamed, self._read_memory())
        nviolations = lib.ls_nviolations(self.live_handle)
        violations = ctypes.string_at(lib.ls_violations(self.live_handle), nviolations * native.VIOLATION.size) \
            if nviolations else b""
        lib.at_clear_batch(t)
        self._on_batch(Batch(records, frames, text, sites, changes, entries, violations))


def _u64s(address: int | None, n: int) -> array:
    out = array("Q")
    if n:
        out.frombytes(ctypes.string_at(address, n * 8))
    return out
