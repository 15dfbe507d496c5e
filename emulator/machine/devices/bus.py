"""The I/O port bus: routes `in`/`out` to devices; unclaimed ports float high."""

from __future__ import annotations

from typing import Protocol


class PortDevice(Protocol):
    def read(self, port: int, size: int) -> int: ...

    def write(self, port: int, size: int, value: int) -> None: ...


class PortBus:
    def __init__(self) -> None:
        self._devices: dict[int, PortDevice] = {}
        self.unknown_ports: dict[int, str] = {}  # port -> "read"/"write"/"read+write", first use order

    def attach(self, device: PortDevice, base: int, count: int) -> None:
        for port in range(base, base + count):
            if port in self._devices:
                raise ValueError(f"port 0x{port:x} claimed twice")
            self._devices[port] = device

    def read(self, port: int, size: int) -> int:
        device = self._devices.get(port)
        if device is None:
            self._note_unknown(port, "read")
            return (1 << (8 * size)) - 1  # nothing drives the bus: all ones
        return device.read(port, size) & ((1 << (8 * size)) - 1)

    def write(self, port: int, size: int, value: int) -> None:
        device = self._devices.get(port)
        if device is None:
            self._note_unknown(port, "write")
            return
        device.write(port, size, value & ((1 << (8 * size)) - 1))

    def _note_unknown(self, port: int, access: str) -> None:
        seen = self.unknown_ports.get(port)
        if seen is None:
            self.unknown_ports[port] = access
        elif access not in seen:
            self.unknown_ports[port] = "read+write"
