"""The JSON run report (`aeth-emu boot --report FILE`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import __version__
from .machine import RunResult

REPORT_VERSION = 1


def clock_ghz() -> float:
    from .cycles import load_params

    return load_params().clock_ghz


def build_report(result: RunResult, image_sha256: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "aeth_emu": __version__,
        "image": result.image,
        "image_sha256": image_sha256,
        "cmdline": result.cmdline,
        "stop_reason": result.stop_reason.value,
        "detail": result.detail,
        "exit_code": result.exit_code,
        "guest_exit_value": result.guest_exit_value,
        "instructions": result.instructions,
        "firmware_instructions": result.firmware_instructions,
        "cycles": result.cycles,
        "firmware_cycles": result.firmware_cycles,
        "clock_ghz": clock_ghz(),
        "cycle_breakdown": result.cycle_breakdown,
        "serial": result.serial.decode("utf-8", errors="replace"),
        "post_codes": [f"0x{c:02x}" for c in result.post_codes],
        "unknown_ports": {f"0x{p:x}": access for p, access in result.unknown_ports.items()},
        "fault": result.fault.to_json() if result.fault else None,
        "wall_seconds": round(result.wall_seconds, 3),
    }
    if extra:
        report.update(extra)
    return report


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    # Written to a temporary name first so an interrupted write never leaves half a report.
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
