"""The CMOS real-time clock (an MC146818 as PCs have it) at ports 0x70 (index) and 0x71 (data).

The clock reads a FIXED instant, RTC_EPOCH, plus the guest time elapsed since time 0 of the
machine's clock (whole seconds of `now()` millicycles), so every run reads the same dates. It
cannot be set and raises no interrupt; docs/devices.md lists what is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from fractions import Fraction

from emulator.layout import RTC_PORT

RTC_EPOCH = datetime(2026, 1, 1, 0, 0, 0)  # a Thursday; what the clock reads at time 0

SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY, MONTH, YEAR = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09
ALARMS = (0x01, 0x03, 0x05)
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
RAM_START = 0x0E         # 114 bytes of battery-backed RAM, 0x0E-0x7F
CENTURY = 0x32           # RAM byte PC BIOSes keep the century in (BCD)

REG_A_RESET = 0x26       # 32.768 kHz time base, 1024 Hz rate select; bit 7 (UIP) always clear
REG_B_24_HOUR = 0x02
REG_B_BINARY = 0x04
REG_B_RESET = REG_B_24_HOUR  # BCD, 24-hour, as PC BIOSes leave it
REG_D_VALID_RAM = 0x80
HOUR_PM = 0x80


def bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


class CmosRtc:
    """`now()` is the machine's time in millicycles, `mc_per_second` millicycles a second."""

    def __init__(self, now: Callable[[], int], mc_per_second: int | Fraction) -> None:
        if not isinstance(mc_per_second, (int, Fraction)):
            raise TypeError("mc_per_second must be an int or a Fraction (time is never a float)")
        self._now = now
        self._mc_per_second = Fraction(mc_per_second)
        self.reset()

    def reset(self) -> None:
        self.index = 0
        self.nmi_disabled = False
        self.reg_a = REG_A_RESET
        self.reg_b = REG_B_RESET
        self.ram = bytearray(128)  # by register number; 0x0E-0x7F are the RAM, the rest unused
        self.ram[CENTURY] = bcd(RTC_EPOCH.year // 100)

    def time(self) -> datetime:
        """The instant the clock shows now: the epoch plus whole elapsed guest seconds."""
        mc = self._now()
        seconds = mc * self._mc_per_second.denominator // self._mc_per_second.numerator
        return RTC_EPOCH + timedelta(seconds=seconds)

    def _encode(self, value: int) -> int:
        return value if self.reg_b & REG_B_BINARY else bcd(value)

    def _clock_register(self, index: int) -> int:
        t = self.time()
        if index == HOURS:
            if self.reg_b & REG_B_24_HOUR:
                return self._encode(t.hour)
            hour12 = t.hour % 12 or 12
            return self._encode(hour12) | (HOUR_PM if t.hour >= 12 else 0)
        value = {SECONDS: t.second, MINUTES: t.minute, DAY_OF_WEEK: t.isoweekday() % 7 + 1,
                 DAY: t.day, MONTH: t.month, YEAR: t.year % 100}[index]
        return self._encode(value)  # day of week: 1 = Sunday ... 7 = Saturday

    def read(self, port: int, size: int) -> int:
        if port == RTC_PORT:
            return 0xFF  # the index register is write-only
        index = self.index
        if index in (SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY, MONTH, YEAR):
            return self._clock_register(index)
        if index == REG_A:
            return self.reg_a
        if index == REG_B:
            return self.reg_b
        if index == REG_C:
            return 0x00  # no interrupt flag is ever set
        if index == REG_D:
            return REG_D_VALID_RAM
        return self.ram[index]  # the alarm registers and the RAM

    def write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == RTC_PORT:
            self.index = value & 0x7F
            self.nmi_disabled = bool(value & 0x80)
            return
        index = self.index
        if index == REG_A:
            self.reg_a = value & 0x7F  # UIP is read-only
        elif index == REG_B:
            self.reg_b = value
        elif index in ALARMS or index >= RAM_START:
            self.ram[index] = value
        # the clock registers, C and D are read-only here
