"""Reports carry exact counts and the cycle model's figures; runs are deterministic."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emulator.machine.records import BootConfig
from emulator.machine.session import run_untraced as boot

pytestmark = pytest.mark.boot


def test_two_runs_give_identical_counts_and_cycles(kernel):
    first = boot(str(kernel), BootConfig(cmdline="test=frame"))[1]
    second = boot(str(kernel), BootConfig(cmdline="test=frame"))[1]
    assert first.exit_code == second.exit_code == 0
    assert (first.instructions, first.cycles, first.cycle_breakdown) == \
        (second.instructions, second.cycles, second.cycle_breakdown)
    assert first.cycles > first.instructions / 4 and first.firmware_cycles > 0


def test_report_fields(tmp_path, kernel):
    path = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "emulator", "boot", str(kernel), "--report", str(path),
                           "--profile"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    report = json.loads(path.read_text())
    for key in ("version", "image", "cmdline", "stop_reason", "exit_code", "guest_exit_value", "instructions",
                "serial", "post_codes", "fault", "cycles", "cycle_breakdown", "clock_ghz"):
        assert key in report
    assert report["clock_ghz"] == 3.7 and report["guest_exit_value"] == 16
    assert report["serial"].startswith("Aetherion OS\ncmdline: \n")
    breakdown = report["cycle_breakdown"]
    assert {"base", "l1_misses", "l2_misses", "l3_misses", "dtlb_misses", "page_walks", "branch_mispredicts"} <= set(breakdown)
    assert breakdown["page_walks"] > 0 and breakdown["l1_misses"] > 0
    # firmware and kernel together: the cycle parts add up to the run's cycles (each part is
    # rounded down to whole cycles on its own, twice: once per CPU instance)
    parts = [value for key, value in breakdown.items() if key == "base" or key.endswith("_stall")]
    assert len(parts) == 6 and report["cycles"] - 2 * len(parts) <= sum(parts) <= report["cycles"]
    assert "flat profile" in done.stderr and "aetherion::memory::paging::alloc_table" in done.stderr


def test_the_model_can_be_reduced_for_measuring_unicorn_itself(kernel):
    """bench's configurations: the block hook alone counts exactly what the full model counts;
    with no model hooks the boot is the same but counts nothing."""
    full = boot(str(kernel), BootConfig(cmdline="test=bump"))[1]
    blocks = boot(str(kernel), BootConfig(cmdline="test=bump"), model="blocks")[1]
    off = boot(str(kernel), BootConfig(cmdline="test=bump"), model="off")[1]
    assert full.serial == blocks.serial == off.serial and full.exit_code == blocks.exit_code == off.exit_code == 0
    assert blocks.instructions == full.instructions and off.instructions == 0
    assert 0 < blocks.cycles < full.cycles  # base costs only: no cache, TLB or branch penalties
