"""One boot from files on disk: read the image and the ROM, build the machine (and run it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emulator.errors import FirmwareError
from emulator.image.bundled import bundled_firmware
from emulator.image.loader import KernelImage, load_image
from emulator.layout import ROM_SIZE
from emulator.machine.board import Machine
from emulator.machine.physmem import check_ram_size
from emulator.machine.records import BootConfig, RunResult


def read_firmware(path: str | Path | None = None) -> bytes:
    """The BIOS ROM at `path` (default: the one shipped with the package), read with a size bound."""
    path = Path(path) if path is not None else bundled_firmware()
    try:
        with open(path, "rb") as f:
            rom = f.read(ROM_SIZE + 1)  # a device or a huge file costs no more than this
    except FileNotFoundError:
        raise FirmwareError(f"firmware ROM {path} not found") from None
    except OSError as exc:
        raise FirmwareError(f"firmware ROM {path}: {exc.strerror or exc}") from None
    if len(rom) != ROM_SIZE:
        size = f"{len(rom)} bytes" if len(rom) <= ROM_SIZE else "larger than that"
        raise FirmwareError(f"firmware ROM {path} is {size}; it must be exactly {ROM_SIZE}")
    return rom


def prepare(
    image_path: str | Path,
    config: BootConfig = BootConfig(),
    firmware: str | Path | None = None,
    on_serial: Callable[[bytes], None] | None = None,
    kernel_instruments: tuple = (),
    model: str = "full",
) -> Machine:
    check_ram_size(config.memory_mib)  # before the image is measured against it
    image: KernelImage = load_image(image_path, config.memory_mib << 20)
    return Machine(image, read_firmware(firmware), config, on_serial=on_serial, kernel_instruments=kernel_instruments,
                   model=model)


def run_untraced(image_path: str | Path, config: BootConfig = BootConfig(), **kwargs) -> tuple[Machine, RunResult]:
    """Boot without the allocation tracer: the machine and its result."""
    machine = prepare(image_path, config, **kwargs)
    return machine, machine.run()
