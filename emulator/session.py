"""One boot from files on disk: load the image and the ROM, build the machine, run it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .errors import UsageError
from .loader import KernelImage, load_image
from .machine import BootConfig, Machine, RunResult
from .memory import ROM_SIZE, check_ram_size

DEFAULT_FIRMWARE = Path(__file__).resolve().parent.parent / "images" / "firmware.bin"


def read_firmware(path: str | Path = DEFAULT_FIRMWARE) -> bytes:
    path = Path(path)
    try:
        rom = path.read_bytes()
    except OSError:
        raise UsageError(f"firmware ROM {path} not found (run 'make images', or pass --firmware)") from None
    if len(rom) != ROM_SIZE:
        raise UsageError(f"firmware ROM {path} is {len(rom)} bytes; it must be exactly {ROM_SIZE}")
    return rom


def prepare(
    image_path: str | Path,
    config: BootConfig = BootConfig(),
    firmware: str | Path = DEFAULT_FIRMWARE,
    on_serial: Callable[[bytes], None] | None = None,
    kernel_instruments: tuple = (),
) -> Machine:
    check_ram_size(config.memory_mib)  # before the image is measured against it
    image: KernelImage = load_image(image_path, config.memory_mib << 20)
    return Machine(image, read_firmware(firmware), config, on_serial=on_serial, kernel_instruments=kernel_instruments)


def boot(image_path: str | Path, config: BootConfig = BootConfig(), **kwargs) -> tuple[Machine, RunResult]:
    machine = prepare(image_path, config, **kwargs)
    return machine, machine.run()
