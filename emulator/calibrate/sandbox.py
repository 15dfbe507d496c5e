"""Guest machine code run natively, never in this process: the ctypes side of native/hostrun.c.

`run_native` hands hostrun.c's `hr_run_all` the memory to set up and the cases to time. It
forks a child that maps and fills that memory, closes every way out to the host (descriptors
other than its result pipe, 0/1/2 pointed at /dev/null, writable shared mappings) and locks
itself into a seccomp filter allowing read, write, exit and rt_sigreturn only, before any of the
code runs; the child writes each case's fewest TSC ticks to the pipe. A case that makes any
other system call, crashes, exits or outlives the time limit ends the child, and `run_native`
raises `NativeRunFailed` saying which case and why.
"""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from emulator.errors import GuestCallError

DEFAULT_TIME_LIMIT = 60.0  # seconds for the whole native run


class _Region(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("size", ctypes.c_uint64)]


class _Copy(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("data", ctypes.c_void_p), ("len", ctypes.c_uint64)]


class _Case(ctypes.Structure):
    _fields_ = [("fn", ctypes.c_uint64), ("arg", ctypes.c_uint64), ("reps", ctypes.c_uint32),
                ("first_copy", ctypes.c_uint32), ("ncopies", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class _Outcome(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int32), ("case_index", ctypes.c_int32), ("signo", ctypes.c_int32),
                ("err", ctypes.c_int32), ("detail", ctypes.c_uint64)]


# hostrun.c's enum hr_kind and enum hr_step
_KINDS = {1: "setup", 2: "syscall", 3: "crashed", 4: "timeout", 5: "exited", 6: "protocol", 7: "host"}
_STEPS = {1: "it died while preparing", 2: "cannot map", 3: "cannot read /proc/self/maps",
          4: "cannot unmap its writable shared mappings", 5: "cannot open /dev/null",
          6: "cannot close its file descriptors", 7: "cannot enter its seccomp filter"}


@dataclass(frozen=True)
class NativeCase:
    name: str
    function: int  # address of a System V function taking one argument
    argument: int
    reps: int = 15
    writes: Sequence[tuple[int, bytes | bytearray]] = field(default=())  # written just before this case


class NativeRunFailed(GuestCallError):
    """The sandboxed child did not complete every case. `kind` is one of "syscall", "crashed",
    "timeout", "exited", "protocol" (a guest case), or "setup", "host" (before any guest code);
    `case` is the name of the case that was running (None before the first)."""

    def __init__(self, message: str, kind: str, case: str | None, signo: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.case = case
        self.signo = signo


def _library() -> ctypes.CDLL:
    from emulator.calibrate import _hostrun  # built with the package

    lib = ctypes.CDLL(_hostrun.__file__)
    lib.hr_run_all.restype = ctypes.c_int
    lib.hr_run_all.argtypes = [ctypes.POINTER(_Region), ctypes.c_uint32, ctypes.POINTER(_Copy), ctypes.c_uint32,
                               ctypes.POINTER(_Case), ctypes.c_uint32, ctypes.POINTER(_Copy),
                               ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint32, ctypes.POINTER(_Outcome)]
    return lib


def _copies(writes, keep: list) -> list[_Copy]:
    out = []
    for address, data in writes:
        buffer = (ctypes.c_char * len(data)).from_buffer(data if isinstance(data, bytearray) else bytearray(data))
        keep.append(buffer)  # alive until the child has forked
        out.append(_Copy(address, ctypes.addressof(buffer), len(data)))
    return out


def _inside(regions, address: int, size: int) -> bool:
    return any(start <= address and address + size <= start + length for start, length in regions)


def run_native(regions: Sequence[tuple[int, int]], setup: Sequence[tuple[int, bytes | bytearray]],
               cases: Sequence[NativeCase], time_limit: float = DEFAULT_TIME_LIMIT) -> list[int]:
    """Map `regions` (address, size) in a sandboxed child, write `setup` (address, bytes) there,
    then time each case in order; returns each case's fewest TSC ticks over its calls."""
    if time_limit <= 0:
        raise ValueError("time_limit must be positive")
    for address, data in [*setup, *(w for case in cases for w in case.writes)]:
        if not _inside(regions, address, len(data)):
            raise ValueError(f"a write of {len(data)} bytes at 0x{address:x} is outside the mapped regions")
    keep: list = []
    region_array = (_Region * max(1, len(regions)))(*[_Region(a, s) for a, s in regions])
    setup_list = _copies(setup, keep)
    setup_array = (_Copy * max(1, len(setup_list)))(*setup_list)
    case_list, copy_list = [], []
    for case in cases:
        case_copies = _copies(case.writes, keep)
        case_list.append(_Case(case.function, case.argument, case.reps, len(copy_list), len(case_copies), 0))
        copy_list += case_copies
    case_array = (_Case * max(1, len(case_list)))(*case_list)
    copy_array = (_Copy * max(1, len(copy_list)))(*copy_list)
    results = (ctypes.c_uint64 * max(1, len(cases)))()
    outcome = _Outcome()
    status = _library().hr_run_all(region_array, len(regions), setup_array, len(setup_list), case_array, len(cases),
                                   copy_array, results, max(1, round(time_limit * 1000)), ctypes.byref(outcome))
    if status == 0:
        return [int(results[i]) for i in range(len(cases))]
    raise _failure(outcome, [case.name for case in cases], regions, time_limit)


def _signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def _failure(outcome: _Outcome, names: list[str], regions, time_limit: float) -> NativeRunFailed:
    kind = _KINDS.get(outcome.kind, "protocol")
    if kind in ("setup", "host"):
        import os

        why = os.strerror(outcome.err) if outcome.err else ""
        if kind == "host":
            return NativeRunFailed(f"cannot start the sandboxed native run: {why}", kind, None)
        step = _STEPS.get(outcome.case_index, f"failed at step {outcome.case_index}")
        if outcome.case_index == 2 and outcome.detail < len(regions):
            start, size = regions[outcome.detail]
            step += f" [0x{start:x}, +0x{size:x})"
            why = "the range is taken" if outcome.err == 17 else why  # EEXIST
        elif outcome.signo:
            why = f"killed by {_signal_name(outcome.signo)}"
        return NativeRunFailed(f"the sandbox for the native run {step}{': ' + why if why else ''}; no guest code ran",
                               kind, None, outcome.signo)
    index = outcome.case_index
    case = names[index] if 0 <= index < len(names) else None
    where = f"native case {case}" if case else "the native run, after its last case,"
    if kind == "crashed" and outcome.signo == signal.SIGINT:
        raise KeyboardInterrupt  # Ctrl-C reached the child too: the user's stop, not a crash
    if kind == "syscall":
        message = f"{where} made a system call; the sandbox killed it (only read, write and exit are allowed)"
    elif kind == "crashed":
        message = f"{where} crashed ({_signal_name(outcome.signo)})"
    elif kind == "timeout":
        during = f"case {case}" if case else "its end"
        message = f"the native run passed its time limit of {time_limit:g} s during {during}; killed"
    elif kind == "exited":
        message = f"{where} exited (status {outcome.err}) instead of returning"
    else:
        message = f"{where} wrote more to the result pipe than its results; killed"
    return NativeRunFailed(message, kind, case, outcome.signo)
