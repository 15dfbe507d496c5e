"""Shared fixtures: the committed images, and one cached boot per command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests' own helpers: guest, elfcraft, qemu

KERNEL = ROOT / "images" / "kernel.elf"
FIRMWARE = ROOT / "images" / "firmware.bin"


@pytest.fixture(scope="session")
def kernel() -> Path:
    return KERNEL


@pytest.fixture(scope="session")
def booted():
    """`booted("allocator=bump")`: a finished, traced and checked boot, cached per command line."""
    from emulator import boot

    cache: dict[str, object] = {}

    def get(cmdline: str = ""):
        if cmdline not in cache:
            cache[cmdline] = boot(KERNEL, cmdline=cmdline)
        return cache[cmdline]

    return get
