"""`make bench`'s real-code rows, on the shortest workload: every configuration, and the two
whole-process rows (QEMU's and a user's `aeth-emu boot`) with the ratio between them."""

from __future__ import annotations

import shutil

import pytest

from emulator.calibrate import bench

pytestmark = pytest.mark.boot


def test_a_workload_has_every_row_and_the_whole_process_ratio(kernel):
    rows = bench.real_code(bench.Boots(kernel), "", bench.qemu_seconds)
    by_variant = {row["variant"]: row for row in rows}
    assert list(by_variant) == [label for label, _, _ in bench.VARIANTS] + \
        (["QEMU (whole process)"] if shutil.which("qemu-system-x86_64") else []) + ["aeth-emu boot (whole process)"]
    counted = {row["instructions"] for row in rows}
    assert len(counted) == 1 and counted.pop() > 200_000  # the counted runs' instructions, on every row
    assert by_variant["full model + tracing"]["events"] == 7  # the demo's allocator calls
    whole = by_variant["aeth-emu boot (whole process)"]
    qemu = by_variant.get("QEMU (whole process)")
    assert whole["seconds"] > 0
    assert whole["ratio_to_qemu"] == (whole["seconds"] / qemu["seconds"] if qemu else None)
