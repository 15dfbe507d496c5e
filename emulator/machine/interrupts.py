"""The PC's interrupt hardware wired to the CPU: the 8259A pair, the 8254 PIT whose channel 0
drives IRQ0, the local APIC and its timer, and the CMOS RTC, on the machine's clock (the cycle
model's, in millicycles). The APIC's own vectors come first; the 8259A pair reaches the CPU
directly, as in the APIC's virtual-wire mode.

The CPU side is native (native/delivery.c): it calls `catch_up` only when the clock reaches
`next_event`, and `acknowledge` when it takes an interrupt; the machine calls the delivery's
`sync` after each port write. Nothing here runs per instruction.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from emulator.layout import PIC_MASTER_PORT, PIC_SLAVE_PORT, PIT_PORT, PIT_PORTS, PORT_B, RTC_PORT, RTC_PORTS
from emulator.machine.devices.bus import PortBus
from emulator.machine.devices.lapic import MC_PER_CYCLE, MSR_TSC_DEADLINE, LocalApic
from emulator.machine.devices.pic8259 import PicPair
from emulator.machine.devices.pit8254 import Pit, mc_per_tick
from emulator.machine.devices.rtc import CmosRtc

TIMER_LINE = 0  # the PIT's channel 0 drives the master's IRQ0


class PcInterrupts:
    """An `InterruptSource` (emulator/machine/delivery.py). `now()` is the machine's time in
    millicycles since reset; the kernel CPU's clock starts at its own entry, `kernel_start` later."""

    def __init__(self, now: Callable[[], int], clock_hz: int) -> None:
        self._now = now
        self.kernel_start = 0  # machine time when the kernel's CPU instance began (its clock's zero)
        self.pic = PicPair()
        self.pit = Pit(now, mc_per_tick(clock_hz))
        self.rtc = CmosRtc(now, Fraction(clock_hz * 1000))
        self.apic = LocalApic(now)

    def attach(self, bus: PortBus) -> None:
        bus.attach(self.pic, PIC_MASTER_PORT, 2)
        bus.attach(self.pic, PIC_SLAVE_PORT, 2)
        bus.attach(self.pit, PIT_PORT, PIT_PORTS)
        bus.attach(self.pit, PORT_B, 1)
        bus.attach(self.rtc, RTC_PORT, RTC_PORTS)

    # -- InterruptSource (times in the kernel CPU's clock) ---------------------------------

    def catch_up(self, now: int) -> None:
        if self.pit.advance(self.kernel_start + now):
            self.pic.pulse_irq(TIMER_LINE)  # edge-triggered: edges that came together make one request
        self.apic.catch_up(self.kernel_start + now)

    def asserted(self) -> bool:
        return self.apic.pending() or self.pic.pending()

    def acknowledge(self) -> int:
        return self.apic.acknowledge() if self.apic.pending() else self.pic.acknowledge()

    def read_msr(self, msr: int) -> int | None:
        """RDMSR of an MSR these devices own (IA32_TSC_DEADLINE); None for any other."""
        return self.apic.deadline if msr == MSR_TSC_DEADLINE else None

    def write_msr(self, msr: int, value: int) -> bool:
        """WRMSR: True when these devices own the MSR. The TSC is the kernel CPU's cycle count."""
        if msr != MSR_TSC_DEADLINE:
            return False
        self.apic.write_tsc_deadline(value, self.kernel_start + value * MC_PER_CYCLE)
        return True

    def next_event(self) -> int | None:
        """When a timer next raises an interrupt: the PIT's IRQ0 while the PIC lets it through
        (masked, it wakes nothing), or the APIC timer's count reaching 0."""
        times = [] if self.pic.master.imr & (1 << TIMER_LINE) else [self.pit.next_event(self._now())]
        times.append(self.apic.next_event())
        times = [t for t in times if t is not None]
        return max(min(times) - self.kernel_start, 0) if times else None
