"""The images shipped inside the package: the BIOS ROM every boot needs, and our kernel as the
default image of the commands that take one. Found through the package, so an installed
`aeth-emu` works from any directory (in the repository they are links to `images/`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_DATA = resources.files("emulator") / "data"


def bundled_firmware() -> Path:
    return Path(str(_DATA / "firmware.bin"))


def bundled_kernel() -> Path:
    return Path(str(_DATA / "kernel.elf"))
