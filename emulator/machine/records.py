"""What a run is configured with and what it returns: plain records, no behaviour."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from emulator.errors import UsageError
from emulator.layout import DEFAULT_RAM_MIB, MAX_RAM_MIB, MIN_RAM_MIB
from emulator.machine.bootparams import encode_cmdline
from emulator.machine.deadlock import DeadlockReport
from emulator.machine.faults import FaultReport

MAX_INSNS = 1 << 62  # far beyond any run, and safely inside the native counter's u64
MAX_TIMEOUT_S = 1e7  # about 115 days: beyond any run, and inside what a host timer accepts


class StopReason(str, Enum):
    EXIT = "exit"  # the guest wrote to isa-debug-exit
    FAULT = "fault"  # an exception the guest did not handle, a triple fault, a ROM write
    MAX_INSNS = "max-insns"
    TIMEOUT = "timeout"
    HALT = "halt"  # hlt with nothing that could wake the CPU
    DEADLOCK = "deadlock"  # an interrupt handler spins, interrupts off, on what the code it interrupted holds
    INTERRUPTED = "interrupted"  # Ctrl-C on the host


# `aeth-emu`'s exit code for each stop; an EXIT is 0 or 1 by the value the guest wrote.
EXIT_CODES = {StopReason.FAULT: 3, StopReason.DEADLOCK: 3, StopReason.MAX_INSNS: 4, StopReason.TIMEOUT: 4,
              StopReason.HALT: 4, StopReason.INTERRUPTED: 4}


@dataclass(frozen=True)
class BootConfig:
    """How to run a boot. Checked when made, the same for the API and the command line."""

    cmdline: str | None = ""  # None: no command line at all (cmdline_paddr = 0)
    memory_mib: int = DEFAULT_RAM_MIB
    max_insns: int | None = None  # stop after this many instructions
    timeout: float | None = None  # stop after this many seconds of host time

    def __post_init__(self) -> None:
        if self.cmdline is not None and not isinstance(self.cmdline, str):
            raise UsageError(f"the kernel command line must be text or None, not {type(self.cmdline).__name__}")
        encode_cmdline(self.cmdline)
        if not _whole(self.memory_mib) or not MIN_RAM_MIB <= self.memory_mib <= MAX_RAM_MIB:
            raise UsageError(f"RAM of {self.memory_mib!r} MiB: RAM must be {MIN_RAM_MIB} to {MAX_RAM_MIB} MiB")
        if self.max_insns is not None and not (_whole(self.max_insns) and 1 <= self.max_insns <= MAX_INSNS):
            raise UsageError(f"the instruction limit {self.max_insns!r} must be a whole number from 1 to {MAX_INSNS}")
        if self.timeout is not None:
            ok = isinstance(self.timeout, (int, float)) and not isinstance(self.timeout, bool)
            if not (ok and math.isfinite(self.timeout) and 0 < self.timeout <= MAX_TIMEOUT_S):
                raise UsageError(f"the time limit {self.timeout!r} must be a number of seconds above 0 and at most "
                                 f"{MAX_TIMEOUT_S:g}")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Stop:
    """Why emulation stopped; the first reason recorded wins."""

    reason: StopReason
    detail: str = ""
    guest_exit_value: int | None = None
    fault: FaultReport | None = None
    deadlock: DeadlockReport | None = None


@dataclass(frozen=True)
class RunResult:
    image: str
    cmdline: str | None
    stop_reason: StopReason
    exit_code: int
    detail: str
    guest_exit_value: int | None
    instructions: int
    firmware_instructions: int
    cycles: int  # firmware and kernel; guest rdtsc counts from the kernel's entry
    firmware_cycles: int
    cycle_breakdown: dict[str, int]
    serial: bytes
    post_codes: tuple[int, ...]
    fault: FaultReport | None
    unknown_ports: dict[int, str]
    wall_seconds: float
    screen: str = field(repr=False, default="")
    interrupts: dict[int, int] = field(default_factory=dict)  # deliveries through the guest's IDT, by vector
    exceptions_handled: int = 0  # of those, CPU exceptions (vectors 0-31)
    recent_exceptions: tuple = ()  # the last few handled (delivery.Handled), oldest first
    deadlock: DeadlockReport | None = None
