"""The 8254 interval timer (ports 0x40-0x43) and its bits of system control port B (0x61).

Time is the machine's clock in millicycles; the PIT's 1,193,182 Hz input clock ticks at the
exact millicycles ceil(k * mc_per_tick), k = 0, 1, 2, ... (a Fraction, never a float), so every
count, OUT level and IRQ0 edge is a pure function of the time of each access: runs repeat.

A counter follows the Intel 8254 datasheet: a count written in tick k is loaded into the
counting element on the next input clock (tick k + 1) and decremented on each clock after.
Channel 0's OUT drives IRQ0; channel 2's gate and OUT are port 0x61 bits 0 and 5; channel 1
(DRAM refresh on a real PC) counts but drives nothing. docs/devices.md lists what is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from emulator.layout import PIT_PORT, PORT_B

PIT_HZ = 1_193_182
REFRESH_TICKS = 18       # port 0x61 bit 4 toggles every 18 PIT ticks (15.085 us)

ACCESS_LATCH, ACCESS_LSB, ACCESS_MSB, ACCESS_WORD = range(4)
PORT_B_WRITABLE = 0x0F   # gate 2, speaker data, parity and channel-check disables
PORT_B_REFRESH = 0x10
PORT_B_OUT2 = 0x20


def mc_per_tick(clock_hz: int) -> Fraction:
    """Millicycles per PIT input clock tick for a CPU clock of `clock_hz` cycles a second."""
    return Fraction(clock_hz * 1000, PIT_HZ)


class Counter:
    """One counter. Ticks are PIT input clocks since time 0; `e` below is the number of
    clocks counted since the count was written (or the gate triggered/restarted it)."""

    def __init__(self, gate: bool) -> None:
        self.gate = gate
        self.mode = 3
        self.access = ACCESS_WORD
        self.bcd = False           # stored and reported by read-back; counting is binary
        self.count: int | None = None  # the count register, 1-65536 (0 written = 65536)
        self.active = 0x10000      # the count the counting element is cycling through
        self.armed = False         # counting has begun (modes 1/5: a gate trigger came)
        self.running = False       # e advances with the clock (else it stays `frozen`)
        self.base = 0              # while running, e = tick - base
        self.frozen = 0
        self.switch_tick: int | None = None  # modes 2/3: a new count takes over at this tick
        self.idle_value = 0        # what a read returns between a control word and a count
        self.latch: list[int] = []
        self.status: int | None = None
        self._write_high = False   # lobyte/hibyte: the next count byte written is the MSB
        self._low_byte = 0
        self._read_high = False    # lobyte/hibyte: the next unlatched read is the MSB

    # -- time -----------------------------------------------------------------------------------

    def catch_up(self, tick: int) -> None:
        """Apply a count written during counting (modes 2/3) once its period has ended."""
        if self.switch_tick is not None and tick >= self.switch_tick:
            self.active, self.base = self.count, self.switch_tick - 1
            self.switch_tick = None

    def elapsed(self, tick: int) -> int:
        return tick - self.base if self.running else self.frozen

    def out(self, tick: int) -> bool:
        mode = self.mode
        if not self.armed:
            return mode != 0  # a control word sets OUT low in mode 0, high in the others
        if mode in (2, 3) and not self.gate:
            return True
        n, j = self.active, self.elapsed(tick) - 1  # j: decrements since the load clock
        if mode in (0, 1):
            return j >= n if mode == 0 else not 0 <= j < n
        if mode == 2:
            return not (j >= 0 and j % n == n - 1)
        if mode == 3:
            return j < 0 or j % n < (n + 1) // 2
        return j != n  # modes 4 and 5: one clock low at terminal count

    def value(self, tick: int) -> int:
        """The counting element as a read or a latch sees it."""
        if not self.armed:
            return self.idle_value if self.count is None else self.count & 0xFFFF
        n, j = self.active, self.elapsed(tick) - 1
        if j < 0:
            return n & 0xFFFF
        if self.mode == 2:
            return (n - j % n) & 0xFFFF
        if self.mode == 3:
            half = (n + 1) // 2
            p = j % n
            step = p if p < half else p - half
            return ((n if n % 2 == 0 else n - 1) - 2 * step) & 0xFFFF
        return (n - j) & 0xFFFF

    def _edge_values(self) -> tuple[int, int | None] | None:
        """Rising OUT edges as (first e, period or None), or None if OUT never rises."""
        n = self.active
        if not self.armed or not self.running:
            return None
        if self.mode in (2, 3):
            return (1 + n, n) if n >= 2 else None  # a count of 1 is illegal in these modes
        return (n + 1, None) if self.mode in (0, 1) else (n + 2, None)

    def edges(self, after: int, upto: int) -> int:
        """How many rising OUT edges happen at ticks in (after, upto]."""
        total = 0
        if self.switch_tick is not None and upto >= self.switch_tick:
            total += self.edges(after, self.switch_tick - 1) + (self.switch_tick > after)
            after = max(after, self.switch_tick)
            self.catch_up(self.switch_tick)
        found = self._edge_values()
        if found is None or upto <= after:
            return total
        first, period = found[0] + self.base, found[1]
        if period is None:
            return total + (after < first <= upto)

        def through(tick: int) -> int:  # edges at ticks <= tick
            return (tick - first) // period + 1 if tick >= first else 0

        return total + through(upto) - through(after)

    def next_edge(self, after: int) -> int | None:
        """The first tick > `after` with a rising OUT edge. A pending switch needs no care: its
        tick is itself an edge of the current period, so the next edge comes no later."""
        found = self._edge_values()
        if found is None:
            return None
        first, period = found[0] + self.base, found[1]
        if first > after:
            return first
        return None if period is None else first + ((after - first) // period + 1) * period

    # -- programming ----------------------------------------------------------------------------

    def control(self, tick: int, mode: int, access: int, bcd: bool) -> None:
        self.idle_value = self.value(tick)
        self.mode = mode - 4 if mode >= 6 else mode  # 6 and 7 are 2 and 3
        self.access, self.bcd = access, bcd
        self.count, self.armed, self.running, self.switch_tick = None, False, False, None
        self.latch, self.status = [], None
        self._write_high = self._read_high = False

    def write_byte(self, tick: int, value: int) -> None:
        if self.access == ACCESS_LSB:
            self.load(tick, value)
        elif self.access == ACCESS_MSB:
            self.load(tick, value << 8)
        elif not self._write_high:
            self._low_byte, self._write_high = value, True
        else:
            self._write_high = False
            self.load(tick, self._low_byte | value << 8)

    def load(self, tick: int, count: int) -> None:
        self.count = count or 0x10000
        if self.mode in (1, 5):
            return  # loaded on the next gate trigger; a one-shot in progress is unaffected
        if self.mode in (2, 3) and self.running and self.active >= 2 and tick > self.base:
            # The current period finishes first: the new count is loaded at the next reload.
            n, j = self.active, tick - self.base - 1
            self.switch_tick = self.base + 1 + (j // n + 1) * n
            return
        self.start(tick)

    def start(self, tick: int) -> None:
        """Load the count register into the counting element on the clock after `tick`."""
        self.active, self.armed, self.switch_tick = self.count, True, None
        self.base, self.frozen, self.running = tick, 0, self.gate

    def set_gate(self, tick: int, level: bool) -> None:
        rising = level and not self.gate
        if self.running and not level and self.mode in (0, 2, 3, 4):
            self.frozen, self.running = self.elapsed(tick), False
            self.switch_tick = None  # modes 2/3 reload the count register when the gate rises
        self.gate = level
        if self.count is None:
            return
        if rising and self.mode in (1, 2, 3, 5):
            self.start(tick)  # a trigger (1, 5) or a restart of the count (2, 3)
            self.running = True
        elif rising and self.armed:  # modes 0 and 4: counting resumes where it stopped
            self.base, self.running = tick - self.frozen, True

    def latch_count(self, tick: int) -> None:
        if self.latch:
            return  # a second latch before the first is read is ignored
        value = self.value(tick)
        self.latch = {ACCESS_LSB: [value & 0xFF], ACCESS_MSB: [value >> 8]}.get(
            self.access, [value & 0xFF, value >> 8])

    def latch_status(self, tick: int) -> None:
        if self.status is not None:
            return
        null_count = self.count is None or self.switch_tick is not None or (
            self.armed and self.running and self.elapsed(tick) == 0) or (
            not self.armed and self.mode in (1, 5))
        self.status = (self.out(tick) << 7 | null_count << 6 | self.access << 4
                       | self.mode << 1 | self.bcd)

    def read_byte(self, tick: int) -> int:
        if self.status is not None:
            value, self.status = self.status, None
            return value
        if self.latch:
            return self.latch.pop(0)
        value = self.value(tick)
        if self.access == ACCESS_LSB:
            return value & 0xFF
        if self.access == ACCESS_MSB:
            return value >> 8
        high, self._read_high = self._read_high, not self._read_high
        return value >> 8 if high else value & 0xFF


class Pit:
    """The 8254 with port 0x61. `now()` is the machine's time in millicycles."""

    def __init__(self, now: Callable[[], int], mc_per_tick: Fraction) -> None:
        if not isinstance(mc_per_tick, (Fraction, int)):
            raise TypeError("mc_per_tick must be a Fraction (time is never a float)")
        self._now = now
        self._mc = Fraction(mc_per_tick)
        self.reset()

    def reset(self) -> None:
        """Power-on, as QEMU: every counter in mode 3 (lobyte/hibyte) with count 65536 and
        counting; gates 0 and 1 high, gate 2 low (port 0x61 = 0), so IRQ0 runs at 18.2 Hz."""
        tick = self.tick(self._now())
        self.counters = [Counter(gate=index != 2) for index in range(3)]
        for counter in self.counters:
            counter.count = 0x10000
            counter.start(tick)
        self.port_b = 0
        self._counted = tick   # channel 0's edges up to this tick are in `_uncounted` or taken
        self._uncounted = 0

    # -- time -----------------------------------------------------------------------------------

    def tick(self, mc: int) -> int:
        """The PIT input clocks that have happened by millicycle `mc`: floor(mc / mc_per_tick)."""
        return mc * self._mc.denominator // self._mc.numerator

    def tick_time(self, tick: int) -> int:
        """The millicycle of input clock `tick`: ceil(tick * mc_per_tick)."""
        return -(-tick * self._mc.numerator // self._mc.denominator)

    def _settle(self, mc: int) -> int:
        tick = self.tick(mc)
        if tick > self._counted:
            self._uncounted += self.counters[0].edges(self._counted, tick)
            self._counted = tick
        for counter in self.counters:
            counter.catch_up(tick)
        return tick

    def next_event(self, now: int) -> int | None:
        """The millicycle of channel 0's next rising OUT edge (what raises IRQ0): `now` itself
        if edges are already due that `advance` has not returned, None if none will come."""
        tick = self._settle(now)
        if self._uncounted:
            return now
        edge = self.counters[0].next_edge(tick)
        return None if edge is None else self.tick_time(edge)

    def advance(self, now: int) -> int:
        """The number of channel 0 rising OUT edges since the previous call (or reset)."""
        self._settle(now)
        edges, self._uncounted = self._uncounted, 0
        return edges

    def _changing(self, channel: int, tick: int, change: Callable[[], None]) -> None:
        """Apply `change` to the counters; a rising OUT on channel 0 it causes is an edge."""
        before = self.counters[0].out(tick)
        change()
        if channel == 0 and not before and self.counters[0].out(tick):
            self._uncounted += 1

    # -- ports ----------------------------------------------------------------------------------

    def read(self, port: int, size: int) -> int:
        tick = self._settle(self._now())
        if port == PORT_B:
            refresh = PORT_B_REFRESH if (tick // REFRESH_TICKS) & 1 else 0
            out2 = PORT_B_OUT2 if self.counters[2].out(tick) else 0
            return self.port_b | refresh | out2
        if port - PIT_PORT == 3:
            return 0xFF  # the control word register cannot be read
        return self.counters[port - PIT_PORT].read_byte(tick)

    def write(self, port: int, size: int, value: int) -> None:
        tick = self._settle(self._now())
        value &= 0xFF
        if port == PORT_B:
            self.port_b = value & PORT_B_WRITABLE
            self.counters[2].set_gate(tick, bool(value & 1))
            return
        index = port - PIT_PORT
        if index < 3:
            self._changing(index, tick, lambda: self.counters[index].write_byte(tick, value))
            return
        select, access = value >> 6, (value >> 4) & 3
        if select == 3:  # read-back: bit 5 clear latches counts, bit 4 clear latches status
            for index, counter in enumerate(self.counters):
                if value & (2 << index):
                    if not value & 0x20:
                        counter.latch_count(tick)
                    if not value & 0x10:
                        counter.latch_status(tick)
        elif access == ACCESS_LATCH:
            self.counters[select].latch_count(tick)
        else:
            counter = self.counters[select]
            self._changing(select, tick, lambda: counter.control(tick, (value >> 1) & 7, access, bool(value & 1)))

    @property
    def speaker_data(self) -> bool:
        """Port 0x61 bit 1: the speaker follows channel 2's OUT while this is set."""
        return bool(self.port_b & 0x02)
