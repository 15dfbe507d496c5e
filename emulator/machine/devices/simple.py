"""The one-register ports: isa-debug-exit, the POST code port and the fast A20 gate."""

from __future__ import annotations

from collections.abc import Callable


class IsaDebugExit:
    """QEMU's isa-debug-exit at 0xF4: the first value written ends the run."""

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, port: int, size: int, value: int) -> None:
        self._on_exit(value)


class PostPort:
    """Port 0x80: POST codes, kept in order for the report."""

    def __init__(self, limit: int = 4096) -> None:
        self.codes: list[int] = []
        self._limit = limit  # a guest that loops on port 0x80 must not grow the report forever

    def read(self, port: int, size: int) -> int:
        return self.codes[-1] if self.codes else 0xFF

    def write(self, port: int, size: int, value: int) -> None:
        if len(self.codes) < self._limit:
            self.codes.append(value & 0xFF)


class A20Gate:
    """Port 0x92 (system control port A): bit 1 is A20; bit 0 would reset, which we ignore."""

    def __init__(self) -> None:
        self.value = 0x00

    @property
    def enabled(self) -> bool:
        return bool(self.value & 0x02)

    def read(self, port: int, size: int) -> int:
        return self.value

    def write(self, port: int, size: int, value: int) -> None:
        self.value = value & 0xFE
