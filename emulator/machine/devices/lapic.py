"""The local APIC in xAPIC mode (memory-mapped at 0xFEE00000), the parts a kernel's timer uses:
ID, version, TPR, EOI, the spurious-vector register, ISR/IRR, the error status, the LVT timer
(one-shot, periodic and TSC-deadline, with the IA32_TSC_DEADLINE MSR), LINT0/LINT1/error LVTs
(kept, masking only), the divide configuration, and the initial and current counts.

The timer counts the model's clock (3.7 GHz), divided: one count every `divide` cycles, so a guest
calibrating it against the PIT finds the model's frequency. Time is millicycles from `now()`.
In TSC-deadline mode the timer fires when the TSC (the model's cycles, what rdtsc reads) reaches
the MSR's value, and the MSR reads 0 again; the caller converts the deadline to machine time
(the MSR reaches the device only through a libunicorn with RDMSR/WRMSR hooks, delivery.py).
Not modelled: x2APIC, inter-processor interrupts, the LINT0/LINT1 pins (the 8259A pair reaches
the CPU directly, as in virtual-wire mode), logical destinations (LDR/DFR are kept, unused) and
the error interrupt (ESR stays 0).
"""

from __future__ import annotations

from collections.abc import Callable

VERSION = 0x0005_0014  # version 0x14, six LVT entries (max LVT index 5), as a Pentium 4/Xeon xAPIC
MASKED = 1 << 16
PERIODIC = 1 << 17  # LVT timer mode, bits 17-18: 00 one-shot, 01 periodic, 10 TSC-deadline
TSC_DEADLINE = 1 << 18
TIMER_MODE = PERIODIC | TSC_DEADLINE
MSR_TSC_DEADLINE = 0x6E0
SVR_ENABLE = 1 << 8
MC_PER_CYCLE = 1000

ID, VER, TPR, PPR, EOI, LDR, DFR, SVR, ESR = 0x20, 0x30, 0x80, 0xA0, 0xB0, 0xD0, 0xE0, 0xF0, 0x280
ISR, TMR, IRR = 0x100, 0x180, 0x200  # eight 32-bit registers each, 16 bytes apart
LVT_TIMER, LVT_LINT0, LVT_LINT1, LVT_ERROR = 0x320, 0x350, 0x360, 0x370
INITIAL, CURRENT, DIVIDE = 0x380, 0x390, 0x3E0


def divisor(value: int) -> int:
    """The divide configuration register's divisor (bits 0, 1 and 3)."""
    code = (value & 3) | ((value >> 1) & 4)
    return 1 if code == 7 else 2 << code


class LocalApic:
    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now
        self.regs = {ID: 0, TPR: 0, LDR: 0, DFR: 0xFFFF_FFFF, SVR: 0xFF, ESR: 0,
                     LVT_TIMER: MASKED, LVT_LINT0: MASKED, LVT_LINT1: MASKED, LVT_ERROR: MASKED, DIVIDE: 0}
        self.irr = 0  # 256 bits
        self.isr = 0
        self.initial = 0
        self._start = 0  # millicycles when the count was last (re)loaded
        self._fired = 0  # periods already raised since _start
        self.deadline = 0  # IA32_TSC_DEADLINE, in TSC cycles; 0: disarmed
        self._deadline_at = 0  # the same as machine time (millicycles)

    # -- the timer --------------------------------------------------------------------------

    def _period(self) -> int:
        return self.initial * divisor(self.regs[DIVIDE]) * MC_PER_CYCLE

    def _due(self, k: int) -> int:
        return self._start + (k + 1) * self._period()

    def _deadline_mode(self) -> bool:
        return self.regs[LVT_TIMER] & TIMER_MODE == TSC_DEADLINE

    def next_event(self) -> int | None:
        """When the timer next counts down to 0 or reaches its deadline (millicycles), or None."""
        if self._deadline_mode():
            return self._deadline_at if self.deadline else None
        if not self.initial:
            return None
        if not self.regs[LVT_TIMER] & PERIODIC and self._fired:
            return None
        return self._due(self._fired)

    def catch_up(self, now: int) -> None:
        while (when := self.next_event()) is not None and when <= now:
            if self._deadline_mode():
                self.deadline = 0  # fired: disarmed, the MSR reads 0
            else:
                self._fired += 1
            lvt = self.regs[LVT_TIMER]
            if not lvt & MASKED and self.regs[SVR] & SVR_ENABLE and (lvt & 0xFF) >= 16:
                self.irr |= 1 << (lvt & 0xFF)

    def write_tsc_deadline(self, value: int, at: int) -> None:
        """WRMSR IA32_TSC_DEADLINE: `value` in TSC cycles, `at` the same instant in machine time.
        Ignored outside TSC-deadline mode (SDM vol. 3, 10.5.4.1); 0 disarms; a deadline already
        past fires at once."""
        if self._deadline_mode():
            self.deadline, self._deadline_at = value, at

    def _current(self) -> int:
        if not self.initial or self._deadline_mode():
            return 0
        elapsed = self._now() - self._start
        if not self.regs[LVT_TIMER] & PERIODIC and elapsed >= self._period():
            return 0
        per_count = divisor(self.regs[DIVIDE]) * MC_PER_CYCLE
        return self.initial - (elapsed % self._period()) // per_count

    # -- interrupts ---------------------------------------------------------------------------

    def _ppr(self) -> int:
        in_service = self.isr.bit_length() - 1
        return max(self.regs[TPR] & 0xF0, (in_service & 0xF0) if in_service >= 0 else 0)

    def pending(self) -> bool:
        """A requested vector whose priority class is above the processor priority."""
        highest = self.irr.bit_length() - 1
        return highest >= 0 and (highest & 0xF0) > self._ppr()

    def acknowledge(self) -> int:
        if not self.pending():
            return self.regs[SVR] & 0xFF  # the spurious vector
        vector = self.irr.bit_length() - 1
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector
        return vector

    # -- the registers (32-bit, 16-byte aligned) ------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        reg = offset & ~0xF
        if reg == VER:
            value = VERSION
        elif reg == PPR:
            value = self._ppr()
        elif ISR <= reg < ISR + 0x80:
            value = (self.isr >> (32 * ((reg - ISR) >> 4))) & 0xFFFF_FFFF
        elif IRR <= reg < IRR + 0x80:
            value = (self.irr >> (32 * ((reg - IRR) >> 4))) & 0xFFFF_FFFF
        elif reg == INITIAL:
            value = self.initial
        elif reg == CURRENT:
            value = self._current()
        else:
            value = self.regs.get(reg, 0)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        reg = offset & ~0xF
        if reg == EOI:
            if self.isr:
                self.isr &= ~(1 << (self.isr.bit_length() - 1))
        elif reg == INITIAL:
            if not self._deadline_mode():  # the count is not used in TSC-deadline mode
                self.initial = value & 0xFFFF_FFFF
                self._start, self._fired = self._now(), 0
        elif reg == LVT_TIMER:
            old = self.regs[reg] & TIMER_MODE
            self.regs[reg] = value & 0x0007_00FF
            if (old == TSC_DEADLINE) != (self.regs[reg] & TIMER_MODE == TSC_DEADLINE):
                self.initial, self.deadline = 0, 0  # a change to or from TSC-deadline mode disarms
        elif reg in (LVT_LINT0, LVT_LINT1):
            self.regs[reg] = value & 0x0001_87FF
        elif reg == LVT_ERROR:
            self.regs[reg] = value & 0x0001_00FF
        elif reg in (ID, LDR):
            self.regs[reg] = value & 0xFF00_0000
        elif reg in (TPR, DFR, SVR, DIVIDE):
            self.regs[reg] = value & {TPR: 0xFF, DFR: 0xFFFF_FFFF, SVR: 0x1FF, DIVIDE: 0xB}[reg]
            if reg == SVR and not value & SVR_ENABLE:
                for lvt in (LVT_TIMER, LVT_LINT0, LVT_LINT1, LVT_ERROR):
                    self.regs[lvt] |= MASKED  # a software-disabled APIC masks every LVT entry
        # ESR, ISR, TMR, IRR, PPR, version and the current count are read-only
