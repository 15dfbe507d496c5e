"""The Python API: boot an image, get back everything the run did.

    from emulator import boot
    run = boot("images/kernel.elf", cmdline="allocator=bump")
    assert run.exit_code == 0
    assert run.heap.stats().used == sum(b.size for b in run.heap.blocks())  # bump: no padding here
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emulator.guestmem.virtual import VirtualMemory
from emulator.heap.checker import HeapChecker, Violation
from emulator.heap.event_view import EventHeap
from emulator.heap.guest_view import GuestHeap
from emulator.heap.kernel_view import kernel_heap_stats
from emulator.heap.views import HeapViews
from emulator.image.symbols import SymbolTable
from emulator.lifetimes import weak_callback
from emulator.machine.board import Machine
from emulator.machine.records import BootConfig, RunResult, StopReason
from emulator.machine.session import prepare
from emulator.trace.events import FREE_LIST_KEEP, AllocEvent, HeapState
from emulator.trace.format import TraceWriter
from emulator.trace.tracer import AllocationTracer


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
        return self.machine.call(function, *args)


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
    ) -> None:
        self.events: list[AllocEvent] = []
        self.heap = EventHeap()
        self._on_event = on_event
        self.machine = prepare(image, config, firmware=firmware, on_serial=on_serial,
                               kernel_instruments=(weak_callback(self._attach),))
        symbols = self.machine.image.symbols
        self.guest_heap = GuestHeap.find(symbols)
        heap_range = self.guest_heap.heap_range() if self.guest_heap else None
        self.checker = HeapChecker(self.heap, heap_range) if check else None
        self.tracer = AllocationTracer(symbols, weak_callback(self._counters, (0, 0)), weak_callback(self._memory_now),
                                       weak_callback(self._record), backtrace_depth)
        self.writer = None
        if trace_path is not None:
            self.writer = TraceWriter(trace_path, {
                "image": str(image), "image_sha256": self.machine.image.sha256, "cmdline": config.cmdline,
                "allocator": None, "entry_points": sorted(name for _, (name, _) in self.tracer.entry_points.items()),
            })
        self._reported = 0

    def _attach(self, uc) -> None:
        self.tracer.attach(uc)

    def _counters(self) -> tuple[int, int]:
        acc = self.machine.accounting
        return self.machine.total_instructions, acc.cycles if acc else 0

    def _memory_now(self):
        return self.machine.virtual().read

    def _record(self, event: AllocEvent) -> None:
        if self.checker is not None:
            self.checker.check(event)
        self.heap.apply(event)
        guest = self.guest_heap.read(self.machine.virtual()) if self.guest_heap else None
        event = event.with_heap(HeapState(
            used=guest.used if guest else None, free=guest.free if guest else None,
            free_blocks=guest.free_blocks if guest else None,
            live_blocks=self.heap.live_blocks, live_bytes=self.heap.live_bytes,
            free_list=guest.free_list[:FREE_LIST_KEEP] if guest else (),
        ))
        if guest is not None and guest.problems and self.checker is not None:
            for problem in guest.problems:
                self.checker.guest_problem(event, problem)
        self.events.append(event)
        if self.writer is not None:
            self.writer.event(event)
            self._flush_violations()
            if self.writer.error is not None:
                self.machine.interrupt(f"the trace could not be written ({self.writer.error.strerror})")
        if self._on_event is not None:
            self._on_event(event)

    def _flush_violations(self) -> None:
        if self.checker is None or self.writer is None:
            return
        for violation in self.checker.violations[self._reported :]:
            self.writer.violation(violation.to_json())
        self._reported = len(self.checker.violations)

    def run(self) -> BootRun:
        try:
            result = self.machine.run()
        finally:
            self.tracer.finish()
        symbols = self.machine.image.symbols
        guest = self.guest_heap.read(self.machine.virtual()) if self.guest_heap and self.machine.uc else None
        kernel_stats = kernel_heap_stats(self.machine, symbols) if self.guest_heap and result.stop_reason is StopReason.EXIT else None
        views = HeapViews(self.heap, guest, kernel_stats)
        if self.checker is not None and views.views_agree is False and self.events:
            self.checker.guest_problem(self.events[-1], f"guest structures say {(guest.heap_size, guest.used, guest.free)}, "
                                       f"heap_stats() says {tuple(kernel_stats)}", kind="views-disagree")
        if self.writer is not None:
            self._flush_violations()
            self.writer.close({"stop_reason": result.stop_reason.value, "exit_code": result.exit_code,
                               "instructions": result.instructions, "cycles": result.cycles,
                               "live_blocks": self.heap.live_blocks, "live_bytes": self.heap.live_bytes})
        violations = tuple(self.checker.violations) if self.checker else ()
        return BootRun(result, tuple(self.events), violations, views, self.machine, self)


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
    """Boot `image` with allocation tracing and return the finished run."""
    config = BootConfig(cmdline=cmdline, memory_mib=memory_mib, max_insns=max_insns, timeout=timeout)
    return TracedBoot(image, config, firmware=firmware, trace_path=trace_path, check=check,
                      backtrace_depth=backtrace_depth).run()
