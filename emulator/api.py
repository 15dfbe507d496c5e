"""The Python API: boot an image, get back everything the run did.

    from emulator import boot
    run = boot("images/kernel.elf", cmdline="allocator=bump")
    assert run.exit_code == 0
    assert run.heap.stats().used == sum(b.size for b in run.heap.blocks())  # bump: no padding here
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emulator.errors import GuestCallError
from emulator.guestmem.virtual import VirtualMemory
from emulator.heap.checker import HeapChecker, Violation
from emulator.heap.event_view import EventHeap
from emulator.heap.guest_view import GuestHeap
from emulator.heap.kernel_view import kernel_heap_stats
from emulator.heap.views import HeapViews
from emulator.image.symbols import SymbolTable
from emulator.layout import MIN_BLOCK
from emulator.lifetimes import weak_callback
from emulator.machine.board import Machine
from emulator.machine.guestcall import CALL_RETURN
from emulator.machine.hostsignals import StopOnSignals
from emulator.machine.records import BootConfig, RunResult, StopReason
from emulator.machine.session import prepare
from emulator.trace.events import AllocEvent, HeapState
from emulator.trace.format import TraceWriter
from emulator.trace.tracer import AllocationTracer, CallSummary, GuestHeapLayout


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

    def call(self, function: str | int, *args: int) -> int:
        """Run a guest function (by symbol or address, System V ABI) on the booted machine; returns rax.
        Raises GuestCallError when it cannot (see `emulator.errors`)."""
        return self.tracing.call(function, *args) if self.tracing is not None else self.machine.call(function, *args)


class TracedBoot:
    """A machine with the allocation tracer, checker and trace file wired together."""

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
        on_event: Callable[[AllocEvent], None] | None = None,
        keep_events: bool = True,
    ) -> None:
        """`keep_events=False`: the events are checked, summarised and written, but not kept,
        so memory stays bounded however long the guest allocates (the command line's boot
        and trace)."""
        self.events: list[AllocEvent] = []
        self.keep_events = keep_events
        self.event_count = 0
        self.last_event: AllocEvent | None = None
        self._running = False
        self.heap = EventHeap()
        self._on_event = on_event
        self.machine = prepare(image, config, firmware=firmware, on_serial=on_serial,
                               kernel_instruments=(weak_callback(self._attach),))
        symbols = self.machine.image.symbols
        self.guest_heap = GuestHeap.find(symbols)
        heap_range = self.guest_heap.heap_range() if self.guest_heap else None
        self.checker = HeapChecker(self.heap, heap_range) if check else None
        self.tracer = AllocationTracer(symbols, weak_callback(self._memory_now), weak_callback(self._record_batch),
                                       backtrace_depth, host_return=CALL_RETURN)
        self.machine.host_call_listeners.append(weak_callback(self._host_returned))
        self.tracer.stop_guest = weak_callback(self.machine.interrupt)
        self.writer = None
        if trace_path is not None:
            self.writer = TraceWriter(trace_path, {
                "image": str(image), "image_sha256": self.machine.image.sha256, "cmdline": config.cmdline,
                "allocator": None, "entry_points": sorted(name for _, (name, _) in self.tracer.entry_points.items()),
            })
        self._reported = 0

    def _attach(self, uc) -> None:
        layout = None
        if self.guest_heap is not None:
            start, end = self.guest_heap.heap_range()
            layout = GuestHeapLayout(self.guest_heap.address, start, end, MIN_BLOCK)
        memory = self.machine.memory
        self.tracer.attach(uc, self.machine.accounting, self.machine.firmware_instructions, layout,
                           (memory.ram_pointer, memory.size))
        self.machine.keep_alive.append(self.tracer)  # its native hooks live as long as the engine

    def _host_returned(self, uc) -> None:
        self.tracer.host_return(uc, self.machine.accounting)

    def _memory_now(self):
        return self.machine.virtual().read

    def _record_batch(self, batch: list[tuple[AllocEvent, CallSummary]]) -> None:
        """A batch of finished calls, in call order: checked, applied, kept and written."""
        for event, summary in batch:
            if self.checker is not None:
                self.checker.check(event)
            self.heap.apply(event)
            # The event was made for this moment and nobody holds it yet: set its heap in place
            # (dataclasses.replace per event cost more than the rest of the work).
            object.__setattr__(event, "heap", HeapState(summary.used, summary.free, summary.free_blocks,
                                                        self.heap.live_blocks, self.heap.live_bytes))
            if summary.problems and self.checker is not None:
                for problem in summary.problems:
                    self.checker.guest_problem(event, problem)
            self.event_count += 1
            self.last_event = event
            if self.keep_events:
                self.events.append(event)
            if self.writer is not None:
                self.writer.event(event)
                self._flush_violations()
            if self._on_event is not None:
                self._on_event(event)
        if self.writer is not None:
            self.writer.flush()  # a batch is whole lines (one zstd frame) on disk
        # The events are kept for the whole run and hold no cycles: keep the garbage collector from
        # scanning them again and again as they pile up (its full collections grew with the run).
        if self._running:
            gc.freeze()
        if self.writer is not None and self.writer.error is not None:
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

    def _flush_violations(self) -> None:
        if self.checker is None or self.writer is None:
            return
        for violation in self.checker.violations[self._reported :]:
            self.writer.violation(violation.to_json())
        self._reported = len(self.checker.violations)

    def run(self) -> BootRun:
        self._running = True
        try:
            result = self.machine.run()
        finally:
            self._running = False
            self.tracer.finish()
            gc.unfreeze()
        symbols = self.machine.image.symbols
        guest = self.guest_heap.read(self.machine.virtual()) if self.guest_heap and self.machine.uc else None
        kernel_stats = kernel_heap_stats(self.machine, symbols) if self.guest_heap and result.stop_reason is StopReason.EXIT else None
        views = HeapViews(self.heap, guest, kernel_stats)
        if self.checker is not None and views.views_agree is False and self.last_event is not None:
            self.checker.guest_problem(self.last_event, f"guest structures say {(guest.heap_size, guest.used, guest.free)}, "
                                       f"heap_stats() says {tuple(kernel_stats)}", kind="views-disagree")
        if self.writer is not None:
            self._flush_violations()
            writer, self.writer = self.writer, None  # calls from the host after the run are not the trace's
            writer.close({"stop_reason": result.stop_reason.value, "exit_code": result.exit_code,
                          "instructions": result.instructions, "cycles": result.cycles,
                          "live_blocks": self.heap.live_blocks, "live_bytes": self.heap.live_bytes})
        return BootRun(result, LiveSequence(self.events), LiveSequence(self.checker.violations) if self.checker else (),
                       views, self.machine, self)


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
