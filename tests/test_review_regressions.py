"""Regressions found in review of the native tracer, the serial path and the output code."""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys

import pytest

from emulator import boot
from emulator.machine.hostsignals import StopOnSignals

pytestmark = pytest.mark.boot


def test_a_machine_outlives_its_run_safely(kernel):
    run = boot(kernel)
    machine = run.machine
    del run
    gc.collect()
    assert machine.call("__rust_alloc", 32, 8) % 8 == 0  # the tracer's native hooks are still valid


def test_host_calls_after_a_traced_run_do_not_touch_the_closed_trace(kernel, tmp_path):
    run = boot(kernel, trace_path=tmp_path / "t.jsonl")
    assert run.call("__rust_alloc", 32, 8)
    assert len(run.events) == 8 and (tmp_path / "t.jsonl").read_text().count('"e":') == 7


def test_no_objects_stay_frozen_after_a_run_or_a_host_call(kernel):
    run = boot(kernel)
    assert gc.get_freeze_count() == 0
    run.call("__rust_alloc", 32, 8)
    assert gc.get_freeze_count() == 0


def test_a_host_call_that_faults_in_the_allocator_ends_its_calls(kernel):
    """The free-list write faults with the allocator's lock held; the kernel's #PF handler then
    allocates its backtrace Vec and spins on that lock: a deadlock, and both calls stay open."""
    run = boot(kernel)
    before = len(run.events)
    with pytest.raises(Exception, match="did not return: the handler of page fault .* spins at "
                                        "aetherion::allocator::Locked::lock"):
        run.call("__rust_dealloc", 0x7777_0000_0000, 64, 8)  # the free list write faults
    dealloc, alloc = run.events[before:]
    assert (dealloc.kind, dealloc.returned, dealloc.depth, dealloc.vector) == ("dealloc", False, 0, None)
    assert (alloc.kind, alloc.returned, alloc.depth, alloc.vector) == ("alloc", False, 1, 14)


def test_a_report_to_dev_stdout_follows_the_serial_output(kernel, tmp_path):
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        done = subprocess.run([sys.executable, "-m", "emulator", "boot", str(kernel), "--report", "/dev/stdout"],
                              stdout=f, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 0
    text = out.read_text()
    assert text.startswith("Aetherion OS\n")  # the serial output was not replaced
    assert json.loads(text[text.index("{"):])["exit_code"] == 0


def test_stop_on_signals_for_sigterm_alone_unblocks_cleanly():
    with StopOnSignals(lambda why: None, (signal.SIGTERM,)):
        pass
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
