"""Shared fixtures: the committed images, and one cached boot per command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import FIRMWARE, KERNEL


@pytest.fixture(scope="session")
def kernel() -> Path:
    """The committed kernel image."""
    return KERNEL


@pytest.fixture(scope="session")
def firmware() -> Path:
    """The committed BIOS ROM."""
    return FIRMWARE


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
