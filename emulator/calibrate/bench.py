"""`aeth-emu bench`: host speed and the kernel's in-guest benchmarks, measured in one run.

Speeds are reported as ratios between configurations measured back to back in the same
process on the same workload, never as absolute timings to assert on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as x86

from emulator.errors import GuestStopped
from emulator.machine.board import Machine
from emulator.machine.records import BootConfig, StopReason
from emulator.machine.session import prepare

CODE_BASE, DATA_BASE = 0x10000, 0x100000
# A load/add/store loop over 64 KiB (docs/unicorn-notes.md: ≈110 MIPS for plain Unicorn on this).
LOOP = """
    mov rcx, {iterations}
    mov rsi, 0x100000
loop:
    mov rax, qword ptr [rsi]
    add rax, rcx
    mov qword ptr [rsi], rax
    add rsi, 8
    and rsi, 0x10FFF8
    dec rcx
    jnz loop
    hlt
"""
LOOP_BODY = 7


@dataclass(frozen=True)
class Speed:
    name: str
    instructions: int
    seconds: float

    @property
    def mips(self) -> float:
        return self.instructions / self.seconds / 1e6


def _loop_cpu(iterations: int) -> tuple[Uc, int]:
    code = bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(LOOP.format(iterations=iterations), CODE_BASE)[0])
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(CODE_BASE, 0x1000)
    uc.mem_map(DATA_BASE, 0x10000)
    uc.mem_write(CODE_BASE, code)
    return uc, 2 + LOOP_BODY * iterations + 1


def _time(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def loop_speeds(iterations: int = 3_000_000) -> list[Speed]:
    """Plain Unicorn, with exact instruction counting and full cycle accounting, same loop."""
    from unicorn import UC_HOOK_CODE

    from emulator.cycles.accounting import CycleAccounting

    speeds = []
    for name in ("plain unicorn", "cycle accounting", "cycle accounting + allocator hooks"):
        uc, expected = _loop_cpu(iterations)
        accounting = None
        if name != "plain unicorn":
            accounting = CycleAccounting(uc)
            accounting.attach()
        if name.endswith("allocator hooks"):
            # What the tracer installs: code hooks on the allocator entry points only (here five
            # addresses the loop never reaches), so nothing runs between allocator calls.
            for address in range(CODE_BASE + 0x800, CODE_BASE + 0x805):
                uc.hook_add(UC_HOOK_CODE, lambda *a: None, None, address, address)
        seconds = _time(lambda: uc.emu_start(CODE_BASE, 1 << 63))
        if accounting is not None:
            accounting.finish(uc.reg_read(x86.UC_X86_REG_RIP))
            if accounting.instructions != expected:
                raise AssertionError(f"counted {accounting.instructions} instructions, the loop has {expected}")
        speeds.append(Speed(name, expected, seconds))
    return speeds


class Boots:
    """The benchmark's guest boots: the same limits for each, one host signal stops the current one
    and the rest, and a boot that does not exit normally is an error, not a meaningless speed."""

    def __init__(self, image: Path, firmware: Path | None = None, max_insns: int | None = None,
                 timeout: float | None = None) -> None:
        self.image, self.firmware = image, firmware
        self.max_insns, self.timeout = max_insns, timeout
        self._current: Machine | None = None
        self.interrupted: str | None = None

    def interrupt(self, why: str) -> None:
        self.interrupted = why
        if self._current is not None:
            self._current.interrupt(why)

    def config(self, cmdline: str) -> BootConfig:
        return BootConfig(cmdline=cmdline, max_insns=self.max_insns, timeout=self.timeout)

    def run(self, machine: Machine, result_of=lambda machine: machine.run()):
        if self.interrupted:
            raise KeyboardInterrupt
        self._current = machine
        try:
            result = result_of(machine)
        finally:
            self._current = None
        run_result = getattr(result, "result", result)
        if self.interrupted:
            raise KeyboardInterrupt
        if run_result.stop_reason is not StopReason.EXIT or run_result.exit_code != 0:
            raise GuestStopped(f"bench needs an image that boots and exits with success; with command line "
                               f"{run_result.cmdline!r} it stopped: {run_result.detail}", run_result.exit_code)
        return result


# Each real-code workload is run in every configuration below, back to back in this process:
# Unicorn with the machine's own hooks only, the cycle model's block hook, the full model, the full
# model with the allocation tracer and heap checks keeping every event (the API's boot()), and the
# same writing a compressed trace instead (`aeth-emu trace -o t.jsonl.zst`, which keeps none).
# QEMU's whole process runs the same image.
VARIANTS = (("raw Unicorn", "off", None), ("block hook", "blocks", None), ("full model", "full", None),
            ("full model + tracing", "full", "kept"), ("full model + trace file", "full", "file"))
REAL_WORKLOADS = ("", "test", "churn=10000", "churn=100000", "churn=1000000")  # "": `aeth-emu boot kernel.elf` as is


def real_code(boots: Boots, cmdline: str, qemu: Callable[[Path, str], float | None]) -> list[dict[str, Any]]:
    """One workload's rows: seconds, MIPS (instructions from the counted runs) and ratios to raw."""
    import tempfile

    from emulator.api import TracedBoot

    config = boots.config(cmdline)
    rows, instructions = [], 0
    # Without the model's hooks nothing counts instructions, so an instruction limit cannot hold.
    variants = [v for v in VARIANTS if v[1] != "off" or boots.max_insns is None]
    with tempfile.TemporaryDirectory(prefix="aeth-bench-") as scratch:
        for label, model, traced in variants:
            trace_bytes = None
            if traced:
                path = Path(scratch) / "bench.jsonl.zst" if traced == "file" else None
                tracing = TracedBoot(boots.image, config, firmware=boots.firmware, check=True, trace_path=path,
                                     keep_events=traced == "kept")
                run = boots.run(tracing.machine, lambda _: tracing.run())
                result, events = run.result, tracing.event_count
                trace_bytes = path.stat().st_size if path is not None else None
                del run, tracing  # the kept events go before the next row runs
            else:
                result, events = boots.run(prepare(boots.image, config, firmware=boots.firmware, model=model)), None
            instructions = max(instructions, result.instructions)  # "off" counts nothing: the same run, counted
            rows.append({"workload": cmdline, "variant": label, "seconds": result.wall_seconds, "events": events,
                         "trace_bytes_per_event": trace_bytes / events if trace_bytes and events else None})
    seconds = qemu(boots.image, cmdline)
    if seconds is not None:
        rows.append({"workload": cmdline, "variant": "QEMU (whole process)", "seconds": seconds, "events": None})
    whole = aeth_seconds(boots.image, cmdline, boots.firmware)
    rows.append({"workload": cmdline, "variant": "aeth-emu boot (whole process)", "seconds": whole, "events": None,
                 "ratio_to_qemu": whole / seconds if seconds else None})
    raw = rows[0]["seconds"]
    full = next(row["seconds"] for row in rows if row["variant"] == "full model")
    for row in rows:
        row["instructions"] = instructions
        row["mips"] = row["instructions"] / row["seconds"] / 1e6
        row["ratio_to_raw"] = row["seconds"] / raw
        if row["events"]:
            row["us_per_event"] = (row["seconds"] - full) / row["events"] * 1e6
            row["ratio_to_untraced"] = row["seconds"] / full
    return rows


WHOLE_PROCESS_RUNS = 3  # the whole-process rows are the best of these: start-up is noisy at 0.1 s


def _best_wall(command: list[str]) -> float:
    import subprocess

    best = float("inf")
    for _ in range(WHOLE_PROCESS_RUNS):
        started = time.perf_counter()
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=600)
        best = min(best, time.perf_counter() - started)
    return best


def qemu_seconds(image: Path, cmdline: str) -> float | None:
    """Wall time of `qemu-system-x86_64 -kernel IMAGE` to its exit (None when QEMU is missing)."""
    import shutil

    tool = shutil.which("qemu-system-x86_64")
    if tool is None:
        return None
    return _best_wall([tool, "-machine", "q35", "-m", "128M", "-display", "none", "-serial", "null", "-kernel",
                       str(image), "-append", cmdline, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                       "-no-reboot"])


def aeth_seconds(image: Path, cmdline: str, firmware: Path | None) -> float:
    """Wall time of a whole `aeth-emu boot IMAGE --cmdline C` process (the default, full model), as a
    user runs it: interpreter start-up and imports included."""
    import sys

    command = [sys.executable, "-m", "emulator", "boot", str(image), "--cmdline", cmdline]
    return _best_wall(command + (["--firmware", str(firmware)] if firmware else []))


BENCH_LINE = re.compile(r"^bench (?P<name>\S+) (?P<fields>.*)$")


def guest_benchmarks(serial: str) -> list[dict[str, Any]]:
    """The kernel's `bench NAME key=value ...` lines (cmdline `bench`)."""
    rows = []
    for line in serial.splitlines():
        m = BENCH_LINE.match(line.strip())
        if m:
            fields: dict[str, Any] = {"name": m.group("name")}
            for item in m.group("fields").split():
                key, _, value = item.partition("=")
                try:
                    fields[key] = int(value, 0)
                except ValueError:
                    fields[key] = value
            rows.append(fields)
    return rows


def guest_run(boots: Boots) -> list[dict[str, Any]]:
    """Boot with `bench` and collect the guest's own rdtsc-timed results."""
    result = boots.run(prepare(boots.image, boots.config("bench"), firmware=boots.firmware))
    return guest_benchmarks(result.serial.decode("utf-8", errors="replace"))


# The specification's figures (phase 1.3 "Benchmarks"): ns per operation on real hardware.
SPEC_NS = {"bump_alloc": 100.0, "linked_list_alloc": 1000.0, "linked_list_dealloc": 100.0}
SPEC_MEMORY = {"memory_bump": "used 100 KB, overhead 0, fragmentation 0 %",
               "memory_linked_list": "used 100 KB, overhead ~1.6 KB, fragmentation < 2 %"}


def report(loop: list[Speed], real: list[list[dict[str, Any]]], guest: list[dict[str, Any]],
           clock_ghz: float) -> dict[str, Any]:
    """The loop's speeds as ratios to plain Unicorn; the real-code rows as they came."""
    base = loop[0].mips
    rows = [{"name": s.name, "instructions": s.instructions, "seconds": s.seconds, "mips": s.mips,
             "ratio": s.mips / base} for s in loop]
    table = []
    for row in guest:
        name = row["name"]
        if "ops" in row and "cycles" in row:
            per_op = row["cycles"] / row["ops"]
            ns = per_op / clock_ghz
            table.append({"operation": name, "cycles_per_op": round(per_op, 1), "ns_per_op": round(ns, 1),
                          "spec": f"{SPEC_NS[name]:g} ns" if name in SPEC_NS else None,
                          "ratio": round(ns / SPEC_NS[name], 3) if name in SPEC_NS else None})
        else:
            table.append({"operation": name, "used": row.get("used"), "overhead": row.get("overhead"),
                          "fragmentation_percent": row.get("fragmentation_permille", 0) / 10,
                          "spec": SPEC_MEMORY.get(name)})
    return {"host": rows, "real_code": [row for group in real for row in group], "guest": table, "clock_ghz": clock_ghz}
