"""Bad usage and bad input: one clear line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emulator import __version__
from tests.support.elfcraft import Elf

pytestmark = pytest.mark.boot


def aeth(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emulator", *args], input=stdin, capture_output=True, text=True, timeout=120)


def test_version_and_help():
    assert aeth("--version").stdout.strip() == f"aeth-emu {__version__}"
    done = aeth("--help")
    assert done.returncode == 0
    for command in ("boot", "trace", "stats", "step", "bench"):
        assert command in done.stdout


@pytest.mark.parametrize("args, message", [
    ((), "no command given"),
    (("boot",), "the following arguments are required: image"),
    (("boot", "x.elf", "--bogus"), "unrecognized arguments: --bogus"),
    (("boot", "x.elf", "--memory", "lots"), "'lots' is not a whole number"),
    (("boot", "x.elf", "--max-insns", "-5"), "must be positive"),
    (("boot", "x.elf", "--timeout", "soon"), "is not a number of seconds"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
    (("boot", "/nonexistent/kernel.elf"), "/nonexistent/kernel.elf: no such file"),
    (("stats", "/nonexistent/trace.jsonl"), "cannot read trace"),
])
def test_usage_errors_are_one_line_exit_2(args, message):
    done = aeth(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_bad_image_and_bad_memory(tmp_path):
    empty = tmp_path / "empty.elf"
    empty.write_bytes(b"")
    elf32 = tmp_path / "k32.elf"
    elf32.write_bytes(Elf(ei_class=1).build())
    for path, message in ((empty, "empty file"), (elf32, "ELF32 image")):
        done = aeth("boot", str(path))
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    good = tmp_path / "k.elf"
    good.write_bytes(Elf().build())
    done = aeth("boot", str(good), "--memory", "32")
    assert done.returncode == 2 and "RAM must be 64 to" in done.stderr
    done = aeth("boot", str(good), "--firmware", str(tmp_path / "nope.bin"))
    assert done.returncode == 2 and "firmware ROM" in done.stderr and "not found" in done.stderr
