"""What a run is configured with and what it returns: plain records, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from emulator.layout import DEFAULT_RAM_MIB
from emulator.machine.faults import FaultReport


class StopReason(str, Enum):
    EXIT = "exit"  # the guest wrote to isa-debug-exit
    FAULT = "fault"  # an exception the guest did not handle, a triple fault, a ROM write
    MAX_INSNS = "max-insns"
    TIMEOUT = "timeout"
    HALT = "halt"  # hlt with nothing that could wake the CPU
    INTERRUPTED = "interrupted"  # Ctrl-C on the host


# `aeth-emu`'s exit code for each stop; an EXIT is 0 or 1 by the value the guest wrote.
EXIT_CODES = {StopReason.FAULT: 3, StopReason.MAX_INSNS: 4, StopReason.TIMEOUT: 4,
              StopReason.HALT: 4, StopReason.INTERRUPTED: 4}


@dataclass(frozen=True)
class BootConfig:
    cmdline: str | None = ""  # None: no command line at all (cmdline_paddr = 0)
    memory_mib: int = DEFAULT_RAM_MIB
    max_insns: int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Stop:
    """Why emulation stopped; the first reason recorded wins."""

    reason: StopReason
    detail: str = ""
    guest_exit_value: int | None = None
    fault: FaultReport | None = None


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
