"""The Python API: boot an image, get back everything the run did.

    from emulator import boot
    run = boot("images/kernel.elf", cmdline="allocator=bump")
    assert run.exit_code == 0
    assert run.heap.stats().used == sum(b.size for b in run.heap.blocks())  # bump: no padding here
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emulator.errors import GuestCallError
from emulator.guestmem.virtual import VirtualMemory
from emulator.heap.checker import MAX_KEPT, Violation
from emulator.heap.guest_view import GuestHeap
from emulator.heap.kernel_view import kernel_heap_stats
from emulator.heap.liveset import LiveSet
from emulator.heap.views import HeapViews
from emulator.image.symbols import SymbolTable
from emulator.layout import MIN_BLOCK
from emulator.lifetimes import weak_callback
from emulator.machine.board import Machine
from emulator.machine.guestcall import CALL_RETURN
from emulator.machine.hostsignals import StopOnSignals
from emulator.machine.records import BootConfig, RunResult, StopReason
from emulator.machine.session import prepare
from emulator.trace import native
from emulator.trace.eventlog import EventLog
from emulator.trace.events import AllocEvent
from emulator.trace.freelists import FreeListHistory, HeapAt
from emulator.trace.tracer import AllocationTracer, Batch, GuestHeapLayout


class LiveSequence(Sequence):
    """A read-only view of a list that calls from the host (`run.call`) may still extend."""

    def __init__(self, items: list) -> None:
        self._items = items

    def __getitem__(self, index):
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return tuple(self._items) == tuple(other) if isinstance(other, (tuple, list, LiveSequence)) else NotImplemented

    def __repr__(self) -> str:
        return repr(tuple(self._items))


@dataclass(frozen=True)
class BootRun:
    result: RunResult
    events: tuple[AllocEvent, ...]
    violations: tuple[Violation, ...]
    heap: HeapViews
    machine: Machine
    # Keeps the tracer, whose hooks reach it weakly, alive for as long as `call()` can run
    tracing: TracedBoot | None = field(default=None, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        return self.result.exit_code

    @property
    def stop_reason(self) -> StopReason:
        return self.result.stop_reason

    @property
    def serial(self) -> str:
        return self.result.serial.decode("utf-8", errors="replace")

    @property
    def symbols(self) -> SymbolTable:
        return self.machine.image.symbols

    @property
    def memory(self) -> VirtualMemory:
        """Guest virtual memory as the run left it: `run.memory.read(va, n)`."""
        return self.machine.virtual()

    def heap_at(self, seq: int) -> HeapAt:
        """The heap right after event `seq`: the guest's own summary and free list then, and the
        events' live blocks (exact at every event: the free list is rebuilt from the changes the
        native walk recorded after each call)."""
        if self.tracing is None:
            raise ValueError("this run was not traced")
        return self.tracing.heap_at(seq)

    def call(self, function: str | int, *args: int) -> int:
        """Run a guest function (by symbol or address, System V ABI) on the booted machine; returns rax.
        Raises GuestCallError when it cannot (see `emulator.errors`)."""
        return self.tracing.call(function, *args) if self.tracing is not None else self.machine.call(function, *args)


class TracedBoot:
    """A machine with the allocation tracer, its checks and the trace file wired together."""

    def __init__(
        self,
        image: str | Path,
        config: BootConfig = BootConfig(),
        *,
        firmware: str | Path | None = None,
        trace_path: str | Path | None = None,
        check: bool = True,
        backtrace_depth: int = 8,
        on_serial: Callable[[bytes], None] | None = None,
        keep_events: bool = True,
    ) -> None:
        """`keep_events=False`: the events are checked, summarised and written, but not kept,
        so memory stays bounded however long the guest allocates (the command line's boot
        and trace)."""
        self.keep_events = keep_events
        self.event_count = 0
        self.violations: list[Violation] = []
        self.machine = prepare(image, config, firmware=firmware, on_serial=on_serial,
                               kernel_instruments=(weak_callback(self._attach),))
        symbols = self.machine.image.symbols
        self.guest_heap = GuestHeap.find(symbols)
        self.tracer = AllocationTracer(symbols, weak_callback(self._memory_now), weak_callback(self._record_batch),
                                       backtrace_depth, host_return=CALL_RETURN, check=check,
                                       write_text=trace_path is not None, max_violations=MAX_KEPT)
        self.machine.host_call_listeners.append(weak_callback(self._host_returned))
        self.tracer.stop_guest = weak_callback(self.machine.interrupt)
        self.events = EventLog(self.tracer.names, 0)
        self.free_lists = FreeListHistory()
        self.live: LiveSet | None = None  # view (a), once the kernel's CPU starts
        self.writer = None
        if trace_path is not None:
            from emulator.trace.format import TraceWriter  # the format's reader and schema: only for a trace

            self.writer = TraceWriter(trace_path, {
                "image": str(image), "image_sha256": self.machine.image.sha256, "cmdline": config.cmdline,
                "allocator": None, "entry_points": sorted(name for _, (name, _) in self.tracer.entry_points.items()),
            })

    def _attach(self, uc) -> None:
        layout = None
        if self.guest_heap is not None:
            start, end = self.guest_heap.heap_range()
            layout = GuestHeapLayout(self.guest_heap.address, start, end, MIN_BLOCK)
        memory = self.machine.memory
        self.tracer.attach(uc, self.machine.accounting, self.machine.firmware_instructions, layout,
                           (memory.ram_pointer, memory.size), self.machine.delivery.handle)
        self.events = EventLog(self.tracer.names, self.tracer.insn_base)
        self.live = LiveSet(self.tracer.lib, self.tracer.live_handle, self.tracer.names.name, owner=self.tracer)
        self.machine.keep_alive.append(self.tracer)  # its native hooks live as long as the engine

    def _host_returned(self, uc) -> None:
        self.tracer.host_return(uc, self.machine.accounting)

    def _memory_now(self):
        return self.machine.virtual().read

    def _record_batch(self, batch: Batch) -> None:
        """A batch of finished calls, already checked and applied natively: kept and written."""
        self.event_count += len(batch)
        if self.keep_events:
            self.events.add_batch(batch.records, batch.frames)
            self.free_lists.add_native(batch.changes, batch.entries)
        violations = self.live.describe(batch.violations, self.tracer.heap_range) if batch.violations else []
        self.violations.extend(violations)
        if self.writer is not None:
            self.writer.batch(batch.sites, batch.text, [v.to_json() for v in violations])
            if self.writer.error is not None:
                self.machine.interrupt(f"the trace could not be written ({self.writer.error.strerror})")

    def call(self, function: str | int, *args: int) -> int:
        """A guest function called from the host; its allocator calls are traced like the guest's."""
        try:
            return self.machine.call(function, *args)
        except GuestCallError:
            self.tracer.abandon_host_calls()  # it faulted or ran away inside the allocator
            raise
        finally:
            self.tracer.drain()

    def heap_at(self, seq: int) -> HeapAt:
        """The heap right after event `seq` returned (or, for a call that never returned, as last seen)."""
        if not self.keep_events:
            raise ValueError("this run did not keep its events (keep_events=False)")
        r = dict(zip(native.FIELDS, self.events.record(seq) if 0 <= seq < len(self.events) else ()))
        if not r:
            raise IndexError(f"no event #{seq} (the run has {len(self.events)})")
        known = bool(r["flags"] & native.F_RETURNED) and r["heap_kind"] != native.H_NONE
        readable = known and r["heap_kind"] != native.H_UNKNOWN
        return HeapAt(
            seq=seq, allocator=native.HEAP_KINDS.get(r["heap_kind"]) if known else None,
            heap_size=r["heap_size"] if readable else None, used=r["heap_used"] if readable else None,
            free=r["heap_free"] if readable else None, free_blocks=r["heap_blocks"] if readable else None,
            free_list=self.free_lists.after(r["changes"]) if self.guest_heap is not None else (),
            problems=tuple(text for bit, text in native.PROBLEMS.items() if r["heap_problems"] & bit),
            live_blocks=r["live_blocks"], live_bytes=r["live_bytes"])

    def run(self) -> BootRun:
        try:
            result = self.machine.run()
        finally:
            self.tracer.finish()
        symbols = self.machine.image.symbols
        guest = self.guest_heap.read(self.machine.virtual()) if self.guest_heap and self.machine.uc else None
        kernel_stats = kernel_heap_stats(self.machine, symbols) if self.guest_heap and result.stop_reason is StopReason.EXIT else None
        live = self.live if self.live is not None else LiveSet.standalone(None)
        views = HeapViews(live, guest, kernel_stats)
        if self.tracer.check and views.views_agree is False and self.event_count:
            seq = self.event_count - 1
            disagree = Violation(seq, "views-disagree", f"after #{seq}: guest structures say "
                                 f"{(guest.heap_size, guest.used, guest.free)}, heap_stats() says {tuple(kernel_stats)}")
            self.violations.append(disagree)
            if self.writer is not None:
                self.writer.batch([], b"", [disagree.to_json()])
        if self.writer is not None:
            writer, self.writer = self.writer, None  # calls from the host after the run are not the trace's
            writer.close({"stop_reason": result.stop_reason.value, "exit_code": result.exit_code,
                          "instructions": result.instructions, "cycles": result.cycles,
                          "live_blocks": live.live_blocks, "live_bytes": live.live_bytes})
        return BootRun(result, self.events, LiveSequence(self.violations) if self.tracer.check else (), views,
                       self.machine, self)


def boot(
    image: str | Path,
    cmdline: str | None = "",
    *,
    memory_mib: int = 128,
    max_insns: int | None = None,
    timeout: float | None = None,
    trace_path: str | Path | None = None,
    check: bool = True,
    backtrace_depth: int = 8,
    firmware: str | Path | None = None,
) -> BootRun:
    """Boot `image` with allocation tracing and return the finished run. Ctrl-C stops the guest
    (the run ends `interrupted`, its outputs finished), as on the command line."""
    config = BootConfig(cmdline=cmdline, memory_mib=memory_mib, max_insns=max_insns, timeout=timeout)
    traced = TracedBoot(image, config, firmware=firmware, trace_path=trace_path, check=check,
                        backtrace_depth=backtrace_depth)
    with StopOnSignals(traced.machine.interrupt):  # a guest spinning in native code never sees KeyboardInterrupt
        return traced.run()
