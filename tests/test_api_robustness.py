"""The Python API under a test suite's use: many boots in one process, limits checked once,
host calls that cannot return stale registers, errors from `emulator`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emulator import BootConfig, GuestCallError, UsageError, boot

pytestmark = pytest.mark.boot

GROWTH = """
import sys
from emulator import boot
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
boot(sys.argv[1])
start = rss_mb()
for _ in range(30):
    run = boot(sys.argv[1])
    assert run.exit_code == 0
print(rss_mb() - start)
"""


@pytest.mark.slow
def test_thirty_boots_in_one_process_stay_small(kernel):
    done = subprocess.run([sys.executable, "-c", GROWTH, str(kernel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 60  # MB; before the engines were closed with their machines, 30 boots grew ~370 MB


@pytest.mark.parametrize("bad, message", [
    (dict(max_insns=2**64), "instruction limit"), (dict(max_insns=-1), "instruction limit"),
    (dict(max_insns=0), "instruction limit"), (dict(timeout=0), "time limit"),
    (dict(timeout=float("inf")), "time limit"), (dict(timeout=1e300), "time limit"),
    (dict(memory_mib=32), "RAM must be"), (dict(cmdline="\udcff"), "UTF-8"), (dict(cmdline="a\0b"), "NUL"),
    (dict(cmdline="x" * 4000), "at most 3839 bytes"),
])
def test_limits_are_checked_the_same_for_the_api(bad, message, kernel):
    with pytest.raises(UsageError, match=message):
        BootConfig(**bad)
    with pytest.raises(UsageError, match=message) as raised:
        boot(kernel, **bad)
    assert "--" not in str(raised.value)  # an API message names no command-line flag


def test_a_limit_stops_the_api_boot(kernel):
    run = boot(kernel, cmdline="test", max_insns=100_000)
    assert run.stop_reason.value == "max-insns" and run.exit_code == 4
    assert 100_000 <= run.result.instructions < 101_000


@pytest.fixture(scope="module")
def own_boot(kernel):
    """Not the shared `booted` run: host calls add traced events to their run."""
    return boot(kernel)


@pytest.mark.parametrize("function, message", [
    (0, "did not return"), (2**70, "not a 64-bit address"), (-1, "not a 64-bit address"),
    ("no::such::symbol", "no symbol named 'no::such::symbol'"),
])
def test_host_calls_that_cannot_return_raise(own_boot, function, message):
    run = own_boot
    before = run.call("__rust_alloc", 8, 8)
    with pytest.raises(GuestCallError, match=message):
        run.call(function)
    assert run.call("__rust_alloc", 8, 8) == before + 16  # the machine still works afterwards
