"""The same kernel.elf on QEMU: identical serial output and the matching exit status."""

from __future__ import annotations

import pytest

from tests.support.qemu import SUCCESS_STATUS, run_qemu

pytestmark = [pytest.mark.boot, pytest.mark.qemu]

FAILURE_STATUS = (0x11 << 1) | 1


@pytest.mark.parametrize("cmdline", ["", "allocator=bump", "test", "test allocator=bump", "demo=oom",
                                     "quiet test=paging", "unknown=1 allocator=linked_list", "churn=2000",
                                     "churn=2000 seed=7 allocator=bump", "demo=interrupts",
                                     "demo=interrupts allocator=bump"])
def test_serial_and_exit_match_qemu(booted, cmdline, kernel):
    ours = booted(cmdline)
    qemu = run_qemu(kernel, cmdline)
    assert qemu.serial.decode() == ours.serial
    expected = SUCCESS_STATUS if ours.exit_code == 0 else FAILURE_STATUS
    assert qemu.status == expected
