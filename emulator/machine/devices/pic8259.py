"""The PC's two cascaded 8259A interrupt controllers: master at 0x20/0x21, slave at 0xA0/0xA1.

Modelled as the Intel 8259A datasheet describes and QEMU's i8259 implements it: edge-triggered
inputs, the slave's INT output wired to the master's IR2, fully nested priority (with rotation),
OCW1 masks, OCW2 EOIs, OCW3 register selection, poll and special mask mode. What is left out is
listed in docs/devices.md. Only port accesses and the machine's IRQ lines drive it.
"""

from __future__ import annotations

from collections.abc import Callable

from emulator.layout import PIC_SLAVE_PORT as SLAVE_PORT

CASCADE_LINE = 2  # the master's input the slave's INT output drives
SPURIOUS_LINE = 7

ICW1_IC4 = 0x01     # ICW4 follows
ICW1_SNGL = 0x02    # single controller: no ICW3
ICW1_INIT = 0x10
OCW3_SELECT = 0x08  # bit 3 set and bit 4 clear: OCW3 (bit 3 clear: OCW2)
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10


class Pic8259:
    """One 8259A. `irr`, `isr` and `imr` are the datasheet's registers, bit n = IRn."""

    def __init__(self, master: bool) -> None:
        self.master = master
        self.reset()

    def reset(self) -> None:
        """What ICW1 (and power-on) leaves: as QEMU's pic_reset_common, the IMR is cleared (all
        lines unmasked), IRR, ISR and the inputs' edge memory are cleared, vector base 0."""
        self.irr = 0
        self.isr = 0
        self.imr = 0
        self.levels = 0          # the input lines as last driven; a 0 -> 1 change sets IRR
        self.base = 0            # vector base from ICW2 (low 3 bits zero)
        self.icw3 = 0
        self.lowest = 7          # the line with the lowest priority (rotation moves it)
        self.read_isr = False    # OCW3: what a read of the command port returns
        self.poll = False
        self.special_mask = False
        self.auto_eoi = False
        self.rotate_on_auto_eoi = False
        self.special_fully_nested = False
        self._init_step = 0      # 0: operating; 2, 3, 4: the next data write is that ICW
        self._icw4_needed = False
        self._single = False

    # -- priority -----------------------------------------------------------------------------

    def _highest(self, mask: int) -> int | None:
        """The highest-priority line in `mask` (IR(lowest+1) first, IR(lowest) last)."""
        for step in range(1, 9):
            line = (self.lowest + step) & 7
            if mask & (1 << line):
                return line
        return None

    def _rank(self, line: int | None) -> int:
        return 8 if line is None else (line - self.lowest - 1) & 7  # 0 = highest priority

    def requesting(self) -> int | None:
        """The line this chip's INT output asks the CPU (or the master) to serve, or None:
        the highest unmasked IRR bit above every in-service line (fully nested mode)."""
        line = self._highest(self.irr & ~self.imr)
        if line is None:
            return None
        in_service = self.isr
        if self.special_mask:
            in_service &= ~self.imr  # masked in-service lines do not block lower ones
        if self.special_fully_nested and self.master:
            in_service &= ~(1 << CASCADE_LINE)  # the slave may interrupt its own service
        return line if self._rank(line) < self._rank(self._highest(in_service)) else None

    def set_input(self, line: int, level: bool) -> None:
        bit = 1 << line
        if level and not self.levels & bit:
            self.irr |= bit  # edge-triggered: only a rising edge latches a request
        self.levels = self.levels | bit if level else self.levels & ~bit

    def intack(self, line: int) -> None:
        """The INTA cycle for `line`: IRR -> ISR (ISR untouched with auto-EOI)."""
        bit = 1 << line
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.lowest = line
        else:
            self.isr |= bit
        self.irr &= ~bit

    # -- ports --------------------------------------------------------------------------------

    def read(self, reg: int) -> int:
        if self.poll:  # poll command: this read is the acknowledge
            self.poll = False
            line = self.requesting()
            if line is None:
                return 0x00
            self.intack(line)
            return 0x80 | line
        if reg == 1:
            return self.imr
        return self.isr if self.read_isr else self.irr

    def write(self, reg: int, value: int) -> None:
        if reg == 0:
            if value & ICW1_INIT:
                self.reset()
                self._init_step = 2
                self._icw4_needed = bool(value & ICW1_IC4)
                self._single = bool(value & ICW1_SNGL)
            elif value & OCW3_SELECT:
                self._ocw3(value)
            else:
                self._ocw2(value)
            return
        if self._init_step == 0:
            self.imr = value  # OCW1
        elif self._init_step == 2:
            self.base = value & 0xF8
            self._init_step = 3 if not self._single else (4 if self._icw4_needed else 0)
        elif self._init_step == 3:
            self.icw3 = value
            self._init_step = 4 if self._icw4_needed else 0
        else:
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.special_fully_nested = bool(value & ICW4_SFNM)
            self._init_step = 0

    def _ocw2(self, value: int) -> None:
        command, line = value >> 5, value & 7
        if command in (0, 4):    # clear / set rotate in automatic EOI mode
            self.rotate_on_auto_eoi = command == 4
        elif command in (1, 5):  # non-specific EOI (5: and rotate)
            served = self._highest(self.isr)
            if served is not None:
                self.isr &= ~(1 << served)
                if command == 5:
                    self.lowest = served
        elif command in (3, 7):  # specific EOI (7: and rotate)
            self.isr &= ~(1 << line)
            if command == 7:
                self.lowest = line
        elif command == 6:       # set priority: `line` becomes the lowest
            self.lowest = line
        # command 2 is a no-operation

    def _ocw3(self, value: int) -> None:
        if value & 0x04:
            self.poll = True
        if value & 0x02:
            self.read_isr = bool(value & 0x01)
        if value & 0x40:
            self.special_mask = bool(value & 0x20)


class PicPair:
    """The master and slave 8259A as the CPU sees them: one INTR line and the INTA cycle.

    `on_intr`, if given, is called with the new INTR level whenever it changes (after a port
    write, an IRQ line change or an acknowledge), so the machine need not poll `pending()`.
    """

    def __init__(self, on_intr: Callable[[bool], None] | None = None) -> None:
        self.master = Pic8259(master=True)
        self.slave = Pic8259(master=False)
        self._on_intr = on_intr
        self._intr = False
        self._cascade = False  # the slave's INT output, as last driven onto the master's IR2

    def reset(self) -> None:
        """Power-on state: both chips as after ICW1 (IMR 0, as QEMU), vector bases 0."""
        self.master.reset()
        self.slave.reset()
        self._cascade = False
        self._update()

    def _chip(self, port: int) -> Pic8259:
        return self.slave if port & ~1 == SLAVE_PORT else self.master

    def read(self, port: int, size: int) -> int:
        value = self._chip(port).read(port & 1)
        self._update()  # a poll read acknowledges
        return value

    def write(self, port: int, size: int, value: int) -> None:
        self._chip(port).write(port & 1, value & 0xFF)
        self._update()

    # -- the machine's side ---------------------------------------------------------------------

    def set_irq(self, line: int, level: bool) -> None:
        """Drive ISA line 0-15 (8-15 are the slave's IR0-7). Line 2 is the cascade: an AT bus
        routes a device's IRQ2 to IRQ9, so driving it directly is refused."""
        if not 0 <= line < 16 or line == CASCADE_LINE:
            raise ValueError(f"IRQ line {line} is not 0-15 or is the cascade (2)")
        chip = self.master if line < 8 else self.slave
        chip.set_input(line & 7, level)
        self._update()

    def raise_irq(self, line: int) -> None:
        self.set_irq(line, True)

    def lower_irq(self, line: int) -> None:
        self.set_irq(line, False)

    def pulse_irq(self, line: int) -> None:
        """One rising edge then low again: how a PIT OUT edge reaches IRQ0."""
        self.set_irq(line, True)
        self.set_irq(line, False)

    def pending(self) -> bool:
        """The INTR line: the master has a request to present to the CPU."""
        return self.master.requesting() is not None

    def acknowledge(self) -> int:
        """The CPU's INTA: the vector to deliver. Moves the request IRR -> ISR (not with
        auto-EOI). With nothing left to present, the spurious vector: master base + 7 with no
        ISR bit set; through the cascade, slave base + 7 with the master's IR2 in service."""
        line = self.master.requesting()
        if line is None:
            vector = self.master.base + SPURIOUS_LINE
        elif line == CASCADE_LINE:
            slave_line = self.slave.requesting()
            if slave_line is None:
                slave_line = SPURIOUS_LINE
            else:
                self.slave.intack(slave_line)
            vector = self.slave.base + slave_line
            self.master.intack(line)
        else:
            vector = self.master.base + line
            self.master.intack(line)
        self._update()
        return vector

    def _update(self) -> None:
        cascade = self.slave.requesting() is not None
        if cascade != self._cascade:  # only a change of the wire is an edge (ICW1 forgets levels)
            self._cascade = cascade
            self.master.set_input(CASCADE_LINE, cascade)
        intr = self.pending()
        if intr != self._intr:
            self._intr = intr
            if self._on_intr is not None:
                self._on_intr(intr)
