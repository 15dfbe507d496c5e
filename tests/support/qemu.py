"""Running an image on QEMU, for parity tests: same serial output, exit status 33 for success."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

QEMU = "qemu-system-x86_64"
SUCCESS_STATUS = (0x10 << 1) | 1  # isa-debug-exit turns a write of v into exit status (v << 1) | 1


@dataclass(frozen=True)
class QemuRun:
    serial: bytes
    status: int


def require_qemu() -> str:
    """QEMU's path; under CI its absence fails the test instead of skipping it."""
    path = shutil.which(QEMU)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{QEMU} is missing under CI=true: 'make test' installs qemu-system-x86")
        pytest.skip(f"{QEMU} not installed (run 'make test' as root to install it)")
    return path


def run_qemu(image: Path, cmdline: str, timeout: float = 60) -> QemuRun:
    command = [
        require_qemu(), "-machine", "q35", "-m", "128M", "-display", "none", "-serial", "stdio",
        "-kernel", str(image), "-append", cmdline,
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot",
    ]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return QemuRun(done.stdout, done.returncode)
