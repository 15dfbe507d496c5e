"""`make images` rebuilds the committed images byte for byte."""

from __future__ import annotations

import pytest

from emulator.toolchain.build import main as build_images
from tests.support.paths import FIRMWARE, KERNEL

pytestmark = pytest.mark.unit


def test_images_rebuild_identically(tmp_path):
    assert build_images(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "kernel.elf").read_bytes() == KERNEL.read_bytes()
    assert (tmp_path / "firmware.bin").read_bytes() == FIRMWARE.read_bytes()
