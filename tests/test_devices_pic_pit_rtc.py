"""The 8259A PIC pair, the 8254 PIT with port 0x61 and the CMOS RTC as port devices
(docs/devices.md): each rule with values that would differ if the rule were wrong."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from emulator.machine.devices.pic8259 import PicPair
from emulator.machine.devices.pit8254 import Pit, mc_per_tick
from emulator.machine.devices.rtc import RTC_EPOCH, CmosRtc

pytestmark = pytest.mark.unit

MC = Fraction(3_700_000_000_000, 1_193_182)  # millicycles per PIT tick at 3.7 GHz
MC_PER_SECOND = 3_700_000_000_000


# -- the PIC pair ---------------------------------------------------------------------------------

def remapped(auto_eoi: bool = False, on_intr=None) -> PicPair:
    """The sequence every PC kernel runs: vectors 32-47, slave on IRQ2, 8086 mode, all unmasked."""
    pic = PicPair(on_intr)
    icw4 = 0x03 if auto_eoi else 0x01
    for port, value in [(0x20, 0x11), (0xA0, 0x11), (0x21, 0x20), (0xA1, 0x28),
                        (0x21, 0x04), (0xA1, 0x02), (0x21, icw4), (0xA1, icw4),
                        (0x21, 0x00), (0xA1, 0x00)]:
        pic.write(port, 1, value)
    return pic


def irr(pic: PicPair, port: int) -> int:
    pic.write(port, 1, 0x0A)  # OCW3: read IRR
    return pic.read(port, 1)


def isr(pic: PicPair, port: int) -> int:
    pic.write(port, 1, 0x0B)  # OCW3: read ISR
    return pic.read(port, 1)


def test_pic_power_on_state_follows_qemu_all_unmasked_base_zero():
    pic = PicPair()
    assert pic.read(0x21, 1) == 0x00 and pic.read(0xA1, 1) == 0x00
    assert not pic.pending()
    pic.pulse_irq(1)
    assert pic.pending()
    assert pic.acknowledge() == 1  # vector base 0 until ICW2


def test_pic_remap_gives_vectors_32_to_47():
    pic = remapped()
    assert (pic.master.base, pic.slave.base, pic.master.icw3, pic.slave.icw3) == (0x20, 0x28, 4, 2)
    vectors = []
    for line in (0, 1, 5, 7, 8, 12, 15):
        pic.pulse_irq(line)
        vectors.append(pic.acknowledge())
        if line >= 8:
            pic.write(0xA0, 1, 0x20)
        pic.write(0x20, 1, 0x20)
    assert vectors == [32, 33, 37, 39, 40, 44, 47]
    assert not pic.pending()


def test_pic_icw2_low_bits_are_ignored():
    pic = PicPair()
    for port, value in [(0x20, 0x11), (0x21, 0x35), (0x21, 0x04), (0x21, 0x01)]:
        pic.write(port, 1, value)
    pic.pulse_irq(3)
    assert pic.acknowledge() == 0x33  # base 0x30, not 0x35


def test_pic_imr_reads_back_and_masks_without_losing_the_request():
    pic = remapped()
    pic.write(0x21, 1, 0xFA)
    pic.write(0xA1, 1, 0x5C)
    assert pic.read(0x21, 1) == 0xFA and pic.read(0xA1, 1) == 0x5C
    pic.pulse_irq(1)  # masked
    assert not pic.pending()
    assert irr(pic, 0x20) == 0x02  # latched in IRR all the same
    pic.pulse_irq(0)
    assert pic.pending()
    assert pic.acknowledge() == 32
    pic.write(0x20, 1, 0x20)
    pic.write(0x21, 1, 0x00)  # unmask: the old IRQ1 request is served now
    assert pic.pending()
    assert pic.acknowledge() == 33


def test_pic_lower_line_number_wins_when_both_request():
    pic = remapped()
    pic.pulse_irq(4)
    pic.pulse_irq(3)
    assert pic.acknowledge() == 35
    assert isr(pic, 0x20) == 0x08


def test_pic_irq1_waits_while_irq0_is_in_service():
    pic = remapped()
    pic.pulse_irq(0)
    assert pic.acknowledge() == 32
    pic.pulse_irq(1)
    assert not pic.pending()  # fully nested: lower priority waits for the EOI
    assert irr(pic, 0x20) == 0x02 and isr(pic, 0x20) == 0x01
    pic.write(0x20, 1, 0x20)
    assert pic.pending()
    assert pic.acknowledge() == 33


def test_pic_irq0_preempts_irq3_in_service():
    pic = remapped()
    pic.pulse_irq(3)
    assert pic.acknowledge() == 35
    pic.pulse_irq(0)
    assert pic.pending()
    assert pic.acknowledge() == 32
    assert isr(pic, 0x20) == 0x09  # both in service, nested


def test_pic_non_specific_eoi_ends_the_highest_priority_in_service_first():
    pic = remapped()
    pic.pulse_irq(3)
    pic.acknowledge()
    pic.pulse_irq(0)
    pic.acknowledge()
    pic.write(0x20, 1, 0x20)
    assert isr(pic, 0x20) == 0x08  # IRQ0 ended, IRQ3 still in service
    pic.write(0x20, 1, 0x20)
    assert isr(pic, 0x20) == 0x00


def test_pic_specific_eoi_ends_the_named_line_even_if_not_the_highest():
    pic = remapped()
    pic.pulse_irq(3)
    pic.acknowledge()
    pic.pulse_irq(0)
    pic.acknowledge()
    pic.write(0x20, 1, 0x63)  # specific EOI for IRQ3
    assert isr(pic, 0x20) == 0x01
    pic.pulse_irq(5)
    assert not pic.pending()  # IRQ0 still in service blocks IRQ5
    pic.write(0x20, 1, 0x60)
    assert pic.acknowledge() == 37


def test_pic_cascade_irq8_goes_through_master_irq2_to_vector_40():
    pic = remapped()
    pic.pulse_irq(8)
    assert irr(pic, 0x20) == 0x04  # the slave's INT drives the master's IR2
    assert pic.pending()
    assert pic.acknowledge() == 40
    assert isr(pic, 0x20) == 0x04 and isr(pic, 0xA0) == 0x01
    pic.pulse_irq(9)
    assert not pic.pending()  # IRQ8 in service on the slave, IR2 in service on the master
    pic.write(0xA0, 1, 0x20)
    assert not pic.pending()  # the master still has IR2 in service
    pic.write(0x20, 1, 0x20)
    assert pic.pending()
    assert pic.acknowledge() == 41


def serve(pic: PicPair) -> int:
    """Acknowledge and end the interrupt as a handler would (slave first for 40-47)."""
    vector = pic.acknowledge()
    if vector >= 40:
        pic.write(0xA0, 1, 0x20)
    pic.write(0x20, 1, 0x20)
    return vector


def test_pic_slave_irq_has_the_priority_of_irq2_on_the_master():
    pic = remapped()
    pic.pulse_irq(3)
    pic.pulse_irq(14)
    pic.pulse_irq(1)
    pic.pulse_irq(9)
    assert [serve(pic) for _ in range(4)] == [33, 41, 46, 35]  # IRQ1 > IRQ2 (8-15) > IRQ3
    assert not pic.pending()


def test_pic_spurious_irq7_when_the_request_is_masked_before_inta():
    pic = remapped()
    pic.pulse_irq(1)
    assert pic.pending()
    pic.write(0x21, 1, 0x02)  # masked between INTR and INTA
    assert pic.acknowledge() == 39
    assert isr(pic, 0x20) == 0x00  # a spurious IRQ7 sets no ISR bit
    assert irr(pic, 0x20) == 0x02


def test_pic_spurious_irq15_leaves_master_irq2_in_service():
    pic = remapped()
    pic.pulse_irq(10)
    assert pic.pending()
    pic.write(0xA1, 1, 0x04)  # slave masks IRQ10; the master's IR2 request stays latched
    assert pic.acknowledge() == 47
    assert isr(pic, 0xA0) == 0x00
    assert isr(pic, 0x20) == 0x04  # so the handler must EOI the master, as on a real pair


def test_pic_auto_eoi_sets_no_isr_bit():
    pic = remapped(auto_eoi=True)
    pic.pulse_irq(0)
    assert pic.acknowledge() == 32
    assert isr(pic, 0x20) == 0x00
    pic.pulse_irq(5)
    assert pic.pending()  # nothing in service blocks it
    assert pic.acknowledge() == 37
    pic.pulse_irq(8)
    assert pic.acknowledge() == 40
    assert isr(pic, 0x20) == 0x00 and isr(pic, 0xA0) == 0x00


def test_pic_is_edge_triggered():
    pic = remapped()
    pic.raise_irq(4)
    pic.raise_irq(4)
    assert pic.acknowledge() == 36
    pic.write(0x20, 1, 0x20)
    pic.raise_irq(4)  # still high: no new edge
    assert not pic.pending()
    pic.lower_irq(4)
    pic.raise_irq(4)
    assert pic.acknowledge() == 36
    for line in (16, -1, 2):  # 2 is the cascade, driven only by the slave
        with pytest.raises(ValueError):
            pic.raise_irq(line)


def test_pic_icw1_clears_requests_service_and_masks():
    pic = remapped()
    pic.write(0x21, 1, 0xFF)
    pic.pulse_irq(3)
    pic.pulse_irq(0)
    pic.write(0x21, 1, 0x00)
    pic.acknowledge()
    pic.write(0x20, 1, 0x11)
    assert pic.read(0x21, 1) == 0x00  # IMR cleared
    assert irr(pic, 0x20) == 0x00 and isr(pic, 0x20) == 0x00
    assert not pic.pending()


def test_pic_intr_callback_sees_each_change_once():
    levels = []
    pic = remapped(on_intr=levels.append)
    pic.pulse_irq(0)
    pic.pulse_irq(1)
    pic.acknowledge()   # IRQ0 in service: IRQ1 waits, INTR drops
    pic.write(0x20, 1, 0x20)
    pic.acknowledge()
    assert levels == [True, False, True, False]


def test_pic_poll_command_acknowledges_through_the_port():
    pic = remapped()  # a CPU with interrupts off polls instead of taking INTR
    pic.pulse_irq(6)
    pic.write(0x20, 1, 0x0C)  # OCW3 poll
    assert pic.read(0x20, 1) == 0x86
    assert isr(pic, 0x20) == 0x40
    pic.write(0x20, 1, 0x0C)
    assert pic.read(0x20, 1) == 0x00  # nothing requesting
    pic.write(0x21, 1, 0x5A)
    assert pic.read(0x21, 1) == 0x5A  # the poll is over: the data port reads IMR again


def test_pic_specific_rotation_changes_priority():
    pic = remapped()
    pic.write(0x20, 1, 0xC3)  # OCW2 set priority: IRQ3 lowest, so IRQ4 highest
    pic.pulse_irq(0)
    pic.pulse_irq(4)
    pic.pulse_irq(3)
    assert pic.acknowledge() == 36
    pic.write(0x20, 1, 0x20)
    assert pic.acknowledge() == 32
    pic.write(0x20, 1, 0x20)
    assert pic.acknowledge() == 35


def test_pic_special_mask_mode_lets_lower_lines_through():
    pic = remapped()
    pic.pulse_irq(0)
    pic.acknowledge()
    pic.write(0x20, 1, 0x68)  # OCW3: set special mask mode
    pic.write(0x21, 1, 0x01)  # mask the line in service
    pic.pulse_irq(5)
    assert pic.acknowledge() == 37
    pic.write(0x20, 1, 0x48)  # reset special mask mode
    pic.pulse_irq(6)
    assert not pic.pending()  # IRQ0 and IRQ5 in service block it again


def test_pic_wide_access_is_the_byte_access():
    pic = remapped()
    pic.write(0x21, 2, 0xAB)
    assert pic.read(0x21, 2) == 0xAB


# -- the PIT --------------------------------------------------------------------------------------

class Clock:
    def __init__(self, mc: int = 0) -> None:
        self.mc = mc

    def __call__(self) -> int:
        return self.mc


def edge_time(tick: int) -> int:
    return math.ceil(tick * MC)  # the millicycle PIT input clock `tick` happens at


def tick_of(mc: int) -> int:
    return math.floor(mc / MC)


def program(pit: Pit, channel: int, mode: int, count: int, access: int = 3) -> None:
    pit.write(0x43, 1, channel << 6 | access << 4 | mode << 1)
    if access in (1, 3):
        pit.write(0x40 + channel, 1, count & 0xFF)
    if access in (2, 3):
        pit.write(0x40 + channel, 1, (count >> 8) & 0xFF)


def read_back_status(pit: Pit, channel: int) -> int:
    pit.write(0x43, 1, 0xE0 | 2 << channel)  # read-back: status only (bit 5 set, bit 4 clear)
    return pit.read(0x40 + channel, 1)


def test_mc_per_tick_is_exact():
    assert mc_per_tick(3_700_000_000) == MC
    with pytest.raises(TypeError):
        Pit(Clock(), 3100951.9)


def test_pit_ticks_happen_at_the_ceiling_millicycle():
    pit = Pit(Clock(), MC)
    assert pit.tick_time(1) == 3_100_952
    assert pit.tick_time(18) == 55_817_135
    for tick in (1, 2, 18, 11933, 596591, 10**9 + 7):
        at = pit.tick_time(tick)
        assert at == edge_time(tick)
        assert pit.tick(at) == tick and pit.tick(at - 1) == tick - 1


def test_pit_power_on_runs_channel_0_at_18_2_hz():
    clock = Clock()
    pit = Pit(clock, MC)
    assert pit.next_event(0) == edge_time(65537) == 203_227_085_223
    assert pit.advance(203_227_085_222) == 0
    assert pit.advance(203_227_085_223) == 1
    assert pit.next_event(203_227_085_223) == edge_time(65537 + 65536)


def test_pit_mode_2_divisor_11932_edges_at_exact_millicycles():
    clock = Clock(1_000_000)  # tick 0: programmed before the first input clock
    pit = Pit(clock, MC)
    program(pit, 0, 2, 11932)
    pit.advance(clock.mc)  # whatever the power-on programming produced
    first = edge_time(1 + 11932)
    assert first == 37_003_659_124  # the count is loaded at tick 1, OUT rises at tick 11933
    assert pit.next_event(clock.mc) == first
    assert pit.advance(first - 1) == 0
    assert pit.advance(first) == 1
    second = edge_time(1 + 2 * 11932)
    assert second == 74_004_217_295
    assert pit.next_event(first) == second
    assert second - first in (37_000_558_172, 37_000_558_171)  # 11932 ticks = 10.00015 ms
    # A late machine gets every edge it missed, counted once.
    late = edge_time(1 + 7 * 11932) + 5
    assert pit.advance(late) == 6
    assert pit.advance(late) == 0
    assert pit.next_event(late) == edge_time(1 + 8 * 11932)


def test_pit_mode_2_counts_down_and_pulses_out_low_for_one_tick():
    clock = Clock()
    pit = Pit(clock, MC)
    program(pit, 2, 2, 4)     # in tick 0, with gate 2 low
    pit.write(0x61, 1, 0x01)  # the gate rises in tick 0: loaded on tick 1
    seen = []
    for tick in range(10):
        clock.mc = edge_time(tick)
        pit.write(0x43, 1, 0x80)  # counter latch, channel 2
        low = pit.read(0x42, 1)
        high = pit.read(0x42, 1)
        seen.append((low | high << 8, bool(pit.read(0x61, 1) & 0x20)))
    assert seen == [(4, True), (4, True), (3, True), (2, True), (1, False),
                    (4, True), (3, True), (2, True), (1, False), (4, True)]


def test_pit_mode_3_square_wave_even_and_odd_counts():
    clock = Clock()
    pit = Pit(clock, MC)
    program(pit, 2, 3, 6)
    pit.write(0x61, 1, 0x01)
    values, outs = [], []
    for tick in range(1, 13):
        clock.mc = edge_time(tick)
        pit.write(0x43, 1, 0x80)
        values.append(pit.read(0x42, 1) | pit.read(0x42, 1) << 8)
        outs.append(pit.read(0x61, 1) >> 5 & 1)
    assert values == [6, 4, 2, 6, 4, 2, 6, 4, 2, 6, 4, 2]
    assert outs == [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0]

    program(pit, 2, 3, 5)  # odd: high for 3 clocks, low for 2
    start = tick_of(clock.mc)
    values, outs = [], []
    for tick in range(start + 1, start + 11):
        clock.mc = edge_time(tick)
        pit.write(0x43, 1, 0x80)
        values.append(pit.read(0x42, 1) | pit.read(0x42, 1) << 8)
        outs.append(pit.read(0x61, 1) >> 5 & 1)
    assert values == [4, 2, 0, 4, 2, 4, 2, 0, 4, 2]
    assert outs == [1, 1, 1, 0, 0, 1, 1, 1, 0, 0]


def test_pit_mode_3_irq0_period_and_edges():
    clock = Clock(edge_time(1000) + 17)  # mid-tick 1000
    pit = Pit(clock, MC)
    program(pit, 0, 3, 11932)
    pit.advance(clock.mc)
    assert pit.next_event(clock.mc) == edge_time(1001 + 11932)
    assert pit.advance(edge_time(1001 + 3 * 11932)) == 3


def test_pit_count_zero_means_65536():
    clock = Clock()
    pit = Pit(clock, MC)
    program(pit, 0, 2, 0)
    pit.advance(0)
    assert pit.next_event(0) == edge_time(1 + 65536)
    clock.mc = edge_time(1)
    pit.write(0x43, 1, 0x00)
    assert (pit.read(0x40, 1), pit.read(0x40, 1)) == (0x00, 0x00)  # 65536 reads as 0
    clock.mc = edge_time(2)
    pit.write(0x43, 1, 0x00)
    assert (pit.read(0x40, 1), pit.read(0x40, 1)) == (0xFF, 0xFF)


def test_pit_mode_0_is_a_one_shot():
    clock = Clock(edge_time(50))
    pit = Pit(clock, MC)
    program(pit, 0, 0, 100)
    pit.advance(clock.mc)
    assert read_back_status(pit, 0) >> 7 == 0  # OUT low while counting
    fire = edge_time(50 + 100 + 1)  # N + 1 clocks after the write, as the datasheet says
    assert pit.next_event(clock.mc) == fire
    assert pit.advance(fire - 1) == 0
    clock.mc = fire - 1
    assert read_back_status(pit, 0) >> 7 == 0
    assert pit.advance(fire) == 1
    clock.mc = fire
    assert read_back_status(pit, 0) >> 7 == 1
    assert pit.next_event(fire) is None  # fired: OUT stays high, no more edges
    clock.mc = edge_time(50 + 100 + 3)
    pit.write(0x43, 1, 0x00)
    assert pit.read(0x40, 1) | pit.read(0x40, 1) << 8 == 0xFFFE  # the counter wraps on
    assert pit.advance(edge_time(10**6)) == 0


def test_pit_mode_0_rewrite_restarts_the_count():
    clock = Clock(edge_time(10))
    pit = Pit(clock, MC)
    program(pit, 0, 0, 100)
    clock.mc = edge_time(60)
    pit.write(0x40, 1, 50)
    pit.write(0x40, 1, 0)
    pit.advance(clock.mc)
    assert pit.next_event(clock.mc) == edge_time(60 + 50 + 1)


def test_pit_control_word_raising_out_is_an_irq0_edge():
    clock = Clock(edge_time(10))
    pit = Pit(clock, MC)
    program(pit, 0, 0, 1000)
    pit.advance(clock.mc)
    clock.mc = edge_time(20)
    pit.write(0x43, 1, 0x34)  # mode 2: OUT goes from low (mode 0 counting) to high
    assert pit.next_event(clock.mc) == clock.mc  # due now
    assert pit.advance(clock.mc) == 1
    assert pit.next_event(clock.mc) is None  # no count yet: the counter waits


def test_pit_latch_holds_the_count_until_read():
    clock = Clock()
    pit = Pit(clock, MC)
    program(pit, 0, 2, 1000)
    clock.mc = edge_time(101)  # 100 decrements after the load clock
    pit.write(0x43, 1, 0x00)   # latch channel 0
    clock.mc = edge_time(400)
    pit.write(0x43, 1, 0x00)   # a second latch before reading is ignored
    assert pit.read(0x40, 1) == 900 & 0xFF
    clock.mc = edge_time(700)
    assert pit.read(0x40, 1) == 900 >> 8
    live = pit.read(0x40, 1) | pit.read(0x40, 1) << 8  # unlatched: the count now
    assert live == 1000 - 699


def test_pit_lobyte_hibyte_order_and_single_byte_modes():
    clock = Clock()
    pit = Pit(clock, MC)
    pit.write(0x43, 1, 0x34)
    pit.write(0x40, 1, 0x9C)
    pit.advance(0)
    assert pit.next_event(0) is None  # half a count is not a count
    pit.write(0x40, 1, 0x2E)
    assert pit.next_event(0) == edge_time(1 + 0x2E9C)
    pit.write(0x43, 1, 0x14)  # LSB only, mode 2
    pit.write(0x40, 1, 0x05)
    assert pit.next_event(0) == edge_time(1 + 5)
    pit.write(0x43, 1, 0x24)  # MSB only, mode 2
    pit.write(0x40, 1, 0x01)
    assert pit.next_event(0) == edge_time(1 + 256)
    clock.mc = edge_time(11)  # 10 decrements: 246 = 0x00F6, MSB read gives 0
    assert pit.read(0x40, 1) == 0x00
    pit.write(0x43, 1, 0x14)
    pit.write(0x40, 1, 0x80)
    clock.mc = edge_time(14)
    assert [pit.read(0x40, 1) for _ in range(2)] == [0x80 - 2, 0x80 - 2]  # LSB each time


def test_pit_read_back_latches_status_then_count():
    clock = Clock(edge_time(5))
    pit = Pit(clock, MC)
    pit.write(0x43, 1, 0x34)  # channel 0, lobyte/hibyte, mode 2, binary
    assert read_back_status(pit, 0) == 0xF4  # OUT high, null count (no count yet), 11, 010, 0
    pit.write(0x40, 1, 0x10)
    pit.write(0x40, 1, 0x27)  # 10000
    assert read_back_status(pit, 0) == 0xF4  # still null: loaded on the next clock
    clock.mc = edge_time(6 + 42)
    pit.write(0x43, 1, 0xC2)  # read-back: count and status of channel 0
    clock.mc = edge_time(5000)
    assert [pit.read(0x40, 1) for _ in range(3)] == [0xB4, (10000 - 42) & 0xFF, (10000 - 42) >> 8]
    pit.write(0x43, 1, 0xB0)  # channel 2, lobyte/hibyte, mode 0
    assert read_back_status(pit, 2) == 0x70  # OUT low in mode 0, null count
    pit.write(0x43, 1, 0xDE)  # read-back of the counts of all three
    # Channel 1 still runs its power-on mode 3, count 65536, from tick 5: down by 2 a clock.
    assert pit.read(0x41, 1) | pit.read(0x41, 1) << 8 == 65536 - 2 * (5000 - 5 - 1)


def test_pit_new_count_in_mode_2_waits_for_the_period_to_end():
    clock = Clock()
    pit = Pit(clock, MC)
    program(pit, 0, 2, 100)
    pit.advance(0)
    clock.mc = edge_time(150)  # in the second period (reloads at ticks 101, 201, ...)
    assert pit.advance(clock.mc) == 1
    pit.write(0x40, 1, 10)
    pit.write(0x40, 1, 0)
    assert pit.next_event(clock.mc) == edge_time(201)  # the old period finishes
    assert pit.advance(edge_time(201)) == 1
    assert pit.next_event(edge_time(201)) == edge_time(211)
    assert pit.advance(edge_time(241)) == 4


def test_pit_port_61_gate_controls_channel_2():
    clock = Clock()
    pit = Pit(clock, MC)
    assert pit.read(0x61, 1) & 0x0F == 0x00
    # Linux's PIT calibration: gate on, speaker off, channel 2 mode 0, poll OUT (bit 5).
    pit.write(0x61, 1, 0x01)
    program(pit, 2, 0, 1000)
    clock.mc = edge_time(1000)
    assert pit.read(0x61, 1) & 0x20 == 0
    clock.mc = edge_time(1001)
    assert pit.read(0x61, 1) & 0x21 == 0x21
    # Gate low pauses mode 0 counting.
    program(pit, 2, 0, 100)          # written in tick 1001, loaded at 1002
    clock.mc = edge_time(1052)       # 50 decrements
    pit.write(0x61, 1, 0x00)
    clock.mc = edge_time(5000)
    assert pit.read(0x61, 1) & 0x20 == 0
    pit.write(0x43, 1, 0x80)
    assert pit.read(0x42, 1) | pit.read(0x42, 1) << 8 == 50
    pit.write(0x61, 1, 0x03)         # gate on again, speaker data on
    assert pit.speaker_data
    clock.mc = edge_time(5049)
    assert pit.read(0x61, 1) & 0x20 == 0
    clock.mc = edge_time(5050)
    assert pit.read(0x61, 1) & 0x23 == 0x23


def test_pit_gate_low_holds_mode_2_out_high_and_rising_gate_restarts():
    clock = Clock()
    pit = Pit(clock, MC)
    pit.write(0x61, 1, 0x01)
    program(pit, 2, 2, 3)
    clock.mc = edge_time(3)    # CE = 1: OUT low
    assert pit.read(0x61, 1) & 0x20 == 0
    pit.write(0x61, 1, 0x00)   # gate low forces OUT high
    assert pit.read(0x61, 1) & 0x20 == 0x20
    clock.mc = edge_time(10)
    pit.write(0x61, 1, 0x01)   # restart: reloaded on the next clock
    clock.mc = edge_time(13)
    assert pit.read(0x61, 1) & 0x20 == 0
    clock.mc = edge_time(14)
    assert pit.read(0x61, 1) & 0x20 == 0x20


def test_pit_port_61_keeps_bits_0_to_3_and_toggles_refresh_every_18_ticks():
    clock = Clock()
    pit = Pit(clock, MC)
    pit.write(0x61, 1, 0xFE)
    assert pit.read(0x61, 1) & 0xCF == 0x0E
    refresh = []
    for mc in (0, edge_time(17), edge_time(18) - 1, edge_time(18), edge_time(35), edge_time(36), edge_time(54)):
        clock.mc = mc
        refresh.append(pit.read(0x61, 1) >> 4 & 1)
    assert refresh == [0, 0, 0, 1, 1, 0, 1]


def out2_levels(pit: Pit, clock: Clock, ticks) -> list[int]:
    levels = []
    for tick in ticks:
        clock.mc = edge_time(tick)
        levels.append(pit.read(0x61, 1) >> 5 & 1)
    return levels


def test_pit_mode_4_strobes_out_low_for_one_clock():
    clock = Clock()
    pit = Pit(clock, MC)
    program(pit, 0, 4, 10)
    pit.advance(0)
    assert pit.next_event(0) == edge_time(12)  # low in tick 11 (count 0), high again in 12
    assert pit.advance(edge_time(12)) == 1
    assert pit.next_event(edge_time(12)) is None


def test_pit_modes_1_and_5_start_on_a_gate_trigger():
    clock = Clock()
    pit = Pit(clock, MC)
    program(pit, 2, 1, 5)  # gate 2 is low: nothing happens yet
    assert out2_levels(pit, clock, [0, 5]) == [1, 1]
    clock.mc = edge_time(10)
    pit.write(0x61, 1, 0x01)  # trigger
    assert out2_levels(pit, clock, range(10, 18)) == [1, 0, 0, 0, 0, 0, 1, 1]
    pit.write(0x61, 1, 0x00)
    clock.mc = edge_time(20)
    pit.write(0x61, 1, 0x01)  # retrigger: a fresh one-shot of 5 clocks
    clock.mc = edge_time(22)
    pit.write(0x61, 1, 0x00)  # gate low does not stop a mode 1 one-shot
    assert out2_levels(pit, clock, range(22, 28)) == [0, 0, 0, 0, 1, 1]
    program(pit, 2, 5, 3)
    clock.mc = edge_time(30)
    pit.write(0x61, 1, 0x01)
    assert out2_levels(pit, clock, range(30, 36)) == [1, 1, 1, 1, 0, 1]


def test_pit_mode_numbers_6_and_7_are_modes_2_and_3():
    clock = Clock()
    pit = Pit(clock, MC)
    pit.write(0x43, 1, 0x3C | 0x01)  # channel 0, lobyte/hibyte, mode 6, BCD bit
    assert read_back_status(pit, 0) == 0xF5  # reported as mode 2; the BCD bit is kept
    pit.write(0x43, 1, 0x7E)  # channel 1, mode 7
    assert read_back_status(pit, 1) & 0x0E == 3 << 1


@pytest.mark.parametrize("seed", range(6))
def test_pit_edge_counts_agree_with_out_observed_every_tick(seed):
    """advance() and next_event() against OUT as the status byte shows it, tick by tick and
    after every write, under random reprogramming (all modes, small counts, counts written
    mid-period)."""
    rng = random.Random(seed)
    clock = Clock()
    pit = Pit(clock, MC)
    state = {"level": 1, "observed": 0, "counted": 0}

    def look() -> int:
        level = read_back_status(pit, 0) >> 7
        state["observed"] += state["level"] == 0 and level == 1
        state["level"] = level
        edges = pit.advance(clock.mc)
        state["counted"] += edges
        assert state["counted"] == state["observed"]
        return edges

    promised = pit.next_event(0)
    for tick in range(1, 3000):
        clock.mc = edge_time(tick) + rng.choice([0, 1, 1000])
        edges = look()
        assert (edges > 0) == (promised is not None and clock.mc >= promised)
        writes = []
        if rng.random() < 0.02:
            count = rng.choice([1, 2, 3, 5, 8, 13, 40])
            writes = [(0x43, 0x30 | rng.choice([0, 2, 3, 4, 6, 7]) << 1), (0x40, count), (0x40, 0)]
        elif rng.random() < 0.02:
            writes = [(0x40, rng.choice([2, 3, 7, 20])), (0x40, 0)]
        for port, value in writes:
            pit.write(port, 1, value)
            look()
        promised = pit.next_event(clock.mc)
        assert promised is None or promised > clock.mc  # everything due was just taken
    assert state["counted"] > 30


def test_pit_two_runs_agree_exactly():
    def run() -> list[int]:
        clock = Clock()
        pit = Pit(clock, MC)
        program(pit, 0, 3, 1193)
        out = []
        now = 0
        for _ in range(50):
            now = pit.next_event(now)
            out += [now, pit.advance(now)]
        return out

    first = run()
    assert first == run()
    assert first[:2] == [edge_time(1 + 1193), 1]


# -- the CMOS RTC ---------------------------------------------------------------------------------

def cmos(rtc: CmosRtc, index: int) -> int:
    rtc.write(0x70, 1, index)
    return rtc.read(0x71, 1)


def clock_registers(rtc: CmosRtc) -> list[int]:
    return [cmos(rtc, index) for index in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09)]


def test_rtc_reads_the_fixed_date_at_time_zero_in_bcd():
    rtc = CmosRtc(Clock(), MC_PER_SECOND)
    assert RTC_EPOCH.isoformat() == "2026-01-01T00:00:00"
    # seconds, minutes, hours, day of week (Thursday = 5), day, month, year
    assert clock_registers(rtc) == [0x00, 0x00, 0x00, 0x05, 0x01, 0x01, 0x26]
    assert cmos(rtc, 0x32) == 0x20  # century, as the BIOS keeps it in CMOS RAM


def test_rtc_adds_the_elapsed_guest_seconds():
    elapsed = ((1 * 24 + 23) * 60 + 45) * 60 + 59  # 2026-01-02 23:45:59, a Friday
    clock = Clock(elapsed * MC_PER_SECOND)
    rtc = CmosRtc(clock, MC_PER_SECOND)
    assert clock_registers(rtc) == [0x59, 0x45, 0x23, 0x06, 0x02, 0x01, 0x26]
    clock.mc += MC_PER_SECOND - 1  # not yet a whole second more
    assert cmos(rtc, 0x00) == 0x59
    clock.mc += 1
    assert clock_registers(rtc) == [0x00, 0x46, 0x23, 0x06, 0x02, 0x01, 0x26]
    clock.mc = (365 + 31 + 28) * 86400 * MC_PER_SECOND  # 2027-03-01, a Monday
    assert clock_registers(rtc)[3:] == [0x02, 0x01, 0x03, 0x27]


def test_rtc_binary_and_12_hour_formats():
    clock = Clock((((23 * 60) + 45) * 60 + 59) * MC_PER_SECOND)  # 23:45:59
    rtc = CmosRtc(clock, MC_PER_SECOND)
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x06)  # binary, 24-hour
    assert clock_registers(rtc) == [59, 45, 23, 5, 1, 1, 26]
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x00)  # BCD, 12-hour
    assert cmos(rtc, 0x04) == 0x91  # 11 PM
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x04)  # binary, 12-hour
    assert cmos(rtc, 0x04) == 0x8B
    clock.mc = 30 * MC_PER_SECOND  # 00:00:30 is 12 AM
    assert cmos(rtc, 0x04) == 0x0C
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x00)
    assert cmos(rtc, 0x04) == 0x12
    clock.mc = 12 * 3600 * MC_PER_SECOND  # noon is 12 PM
    assert cmos(rtc, 0x04) == 0x92


def test_rtc_status_registers():
    rtc = CmosRtc(Clock(), MC_PER_SECOND)
    assert [cmos(rtc, index) for index in (0x0A, 0x0B, 0x0C, 0x0D)] == [0x26, 0x02, 0x00, 0x80]
    rtc.write(0x70, 1, 0x0A)
    rtc.write(0x71, 1, 0xA5)
    assert cmos(rtc, 0x0A) == 0x25  # UIP stays clear
    rtc.write(0x70, 1, 0x0D)
    rtc.write(0x71, 1, 0x00)
    assert cmos(rtc, 0x0D) == 0x80  # valid RAM, read-only


def test_rtc_cmos_ram_index_and_nmi_bit():
    rtc = CmosRtc(Clock(), MC_PER_SECOND)
    for index in range(0x0E, 0x80):
        rtc.write(0x70, 1, 0x80 | index)  # with NMI disabled
        rtc.write(0x71, 1, (index * 7 + 3) & 0xFF)
    assert rtc.nmi_disabled
    assert all(cmos(rtc, index) == (index * 7 + 3) & 0xFF for index in range(0x0E, 0x80))
    assert not rtc.nmi_disabled
    assert rtc.index == 0x7F and rtc.read(0x70, 1) == 0xFF
    for alarm in (0x01, 0x03, 0x05):
        rtc.write(0x70, 1, alarm)
        rtc.write(0x71, 1, 0x40 + alarm)
    assert [cmos(rtc, alarm) for alarm in (0x01, 0x03, 0x05)] == [0x41, 0x43, 0x45]
    rtc.write(0x70, 1, 0x00)
    rtc.write(0x71, 1, 0x33)  # the clock cannot be set
    assert cmos(rtc, 0x00) == 0x00


def test_rtc_refuses_float_time():
    with pytest.raises(TypeError):
        CmosRtc(Clock(), 3.7e12)
