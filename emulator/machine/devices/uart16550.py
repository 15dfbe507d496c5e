"""COM1 as a 16550 UART: what a polling kernel driver and QEMU's model agree on.

Transmit is instant (LSR always reports the holding register empty), so output goes to the
host as soon as the guest writes it. Nothing is ever received.
"""

from __future__ import annotations

from collections.abc import Callable

RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)
LCR_DLAB = 0x80
LSR_THR_EMPTY = 0x20
LSR_TX_IDLE = 0x40
IIR_NO_INTERRUPT = 0x01
IIR_FIFO_ENABLED = 0xC0
MCR_LOOPBACK = 0x10


class Uart16550:
    def __init__(self, base: int, on_output: Callable[[bytes], None]) -> None:
        self.base = base
        self._on_output = on_output
        self.ier = 0
        self.fcr = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.divisor = 12  # 9600 baud until the guest programs it
        self.bytes_sent = 0

    @property
    def plain_transmit(self) -> bool:
        """DLAB clear and no loopback: THR writes are output and LSR reads are `line_status`,
        so the machine's native port hook may serve them without this model."""
        return not self.lcr & LCR_DLAB and not self.mcr & MCR_LOOPBACK

    line_status = LSR_THR_EMPTY | LSR_TX_IDLE  # transmit is instant; nothing is ever received

    @property
    def baud(self) -> int:
        return 115200 // self.divisor if self.divisor else 0

    def read(self, port: int, size: int) -> int:
        reg = port - self.base
        if reg == RBR_THR:
            return self.divisor & 0xFF if self.lcr & LCR_DLAB else 0
        if reg == IER:
            return (self.divisor >> 8) & 0xFF if self.lcr & LCR_DLAB else self.ier
        if reg == IIR_FCR:
            return IIR_NO_INTERRUPT | (IIR_FIFO_ENABLED if self.fcr & 1 else 0)
        if reg == LCR:
            return self.lcr
        if reg == MCR:
            return self.mcr
        if reg == LSR:
            return self.line_status
        if reg == MSR:
            # Loopback reflects MCR outputs onto the status inputs; otherwise the line is up.
            if self.mcr & MCR_LOOPBACK:
                m = self.mcr
                return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            return 0xB0
        return self.scr

    def write(self, port: int, size: int, value: int) -> None:
        reg = port - self.base
        value &= 0xFF
        if reg == RBR_THR:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0xFF00) | value
            elif not self.mcr & MCR_LOOPBACK:
                self.bytes_sent += 1
                self._on_output(bytes([value]))
        elif reg == IER:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0xFF) | (value << 8)
            else:
                self.ier = value & 0x0F
        elif reg == IIR_FCR:
            self.fcr = value
        elif reg == LCR:
            self.lcr = value
        elif reg == MCR:
            self.mcr = value & 0x1F
        elif reg == SCR:
            self.scr = value
