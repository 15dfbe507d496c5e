"""Where the repository's committed images and sources are (tests take them through the
`kernel` and `firmware` fixtures; module-level code that needs a path before fixtures exist
imports these)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNEL = ROOT / "images" / "kernel.elf"
FIRMWARE = ROOT / "images" / "firmware.bin"
