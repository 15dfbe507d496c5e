"""The JSON run report (`aeth-emu boot --report FILE`), built in this one place from a finished run.

Its fields are documented in docs/report-format.md.
"""

from __future__ import annotations

from typing import Any

from emulator import __version__
from emulator.api import BootRun
from emulator.cycles.params import load_params
from emulator.machine.faults import vector_name
from emulator.report.heap import heap_section
from emulator.report.memory import frames_section, paging_section

REPORT_VERSION = 1


def build_report(run: BootRun) -> dict[str, Any]:
    result = run.result
    return {
        "version": REPORT_VERSION,
        "aeth_emu": __version__,
        "image": result.image,
        "image_sha256": run.machine.image.sha256,
        "cmdline": result.cmdline,
        "stop_reason": result.stop_reason.value,
        "detail": result.detail,
        "exit_code": result.exit_code,
        "guest_exit_value": result.guest_exit_value,
        "instructions": result.instructions,
        "firmware_instructions": result.firmware_instructions,
        "cycles": result.cycles,
        "firmware_cycles": result.firmware_cycles,
        "clock_ghz": load_params().clock_ghz,
        "cycle_breakdown": result.cycle_breakdown,
        "serial": result.serial.decode("utf-8", errors="replace"),
        "post_codes": [f"0x{c:02x}" for c in result.post_codes],
        "unknown_ports": {f"0x{p:x}": access for p, access in result.unknown_ports.items()},
        "fault": result.fault.to_json() if result.fault else None,
        "deadlock": result.deadlock.to_json() if result.deadlock else None,
        "interrupts": {f"0x{v:02x}": n for v, n in sorted(result.interrupts.items())},
        "exceptions_handled": {"count": result.exceptions_handled, "recent": [
            {"vector": f"0x{e.vector:02x}", "name": vector_name(e.vector), "rip": f"0x{e.pc:x}",
             "caller": run.symbols.describe(e.pc), "cr2": f"0x{e.cr2:x}" if e.vector == 14 else None,
             "instructions": e.instructions} for e in result.recent_exceptions]},
        "wall_seconds": round(result.wall_seconds, 3),
        "events": dict(run.heap.events.counts),
        "heap": heap_section(run.heap, bool(run.heap.events.counts)),
        "violations": [v.to_json() for v in run.violations],
        "paging": paging_section(run.machine),
        "frames": frames_section(run.machine),
    }
