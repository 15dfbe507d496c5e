"""The model's core: back-end resource pools, Jcc fusion, the front end's fetch windows and
call/return bubbles, each against a figure computed by hand from cycle_model.toml."""

from __future__ import annotations

import pytest

from tests.support.cycle_harness import CODE, P, Run

pytestmark = pytest.mark.unit

TRIPS = (200, 400)


def two_runs(src: str) -> list:
    """The accounting of `src` (with `{k}` for the trip count) run for each of TRIPS."""
    return [Run(src.format(k=k)).acc for k in TRIPS]


def extra(runs: list, key: str | None = None) -> float:
    """What one more iteration adds to the cycles (or a breakdown entry): the difference of the
    two runs cancels start-up and the first, cold iteration."""
    a, b = (r.cycles if key is None else r.breakdown()[key] for r in runs)
    return (b - a) / (TRIPS[1] - TRIPS[0])


def per_iteration(body: str, before: str = "") -> float:
    """Cycles one more iteration of `L: body; dec rcx; jnz L` costs."""
    return extra(two_runs(f"{before} mov rcx, {{k}}; L: {body} dec rcx; jnz L; hlt"))


ALU = P.classes["alu"].throughput
FOUR_ADDS = "add rax, 1; add rdx, 1; add rsi, 1; add r8, 1;"


def test_independent_alu_ops_share_four_alus_and_dec_jnz_fuses():
    # 8 adds + the fused dec/jnz: 9 ALU macro-ops on 4 ALUs
    assert per_iteration(FOUR_ADDS * 2) == pytest.approx(9 * ALU, abs=0.01)


def test_a_jcc_that_cannot_fuse_takes_an_alu_slot_of_its_own():
    # the nop between dec and jnz prevents fusion: 10 ALU ops
    runs = two_runs(f"mov rcx, {{k}}; L: {FOUR_ADDS * 2} dec rcx; nop; jnz L; hlt")
    assert extra(runs) == pytest.approx(10 * ALU, abs=0.01)


def test_division_is_bound_by_the_divider_not_the_sum_of_the_block():
    assert per_iteration("xor edx, edx; mov eax, 100; div r8;", before="mov r8, 7;") == \
        pytest.approx(P.classes["div"].throughput, abs=0.01)


def test_a_dependent_chain_bounds_the_block():
    assert per_iteration("imul rax, rax; imul rax, rax;") == pytest.approx(2 * P.classes["imul"].latency, abs=0.01)


def test_a_loop_in_one_fetch_window_takes_a_cycle_and_two_when_it_crosses_a_line():
    """Three adds + dec/jnz are 17 bytes: at offset 47 of a line they end on its last byte,
    at 48 they cross into the next line (a second fetch window per iteration)."""
    def placed(offset: int) -> float:
        pad = (0x40 - (CODE + 7) % 0x40 + offset) % 0x40  # `mov rcx, imm32` is 7 bytes
        return extra(two_runs(f"mov rcx, {{k}}; {'nop;' * pad} L: add rax, 1; add rdx, 1; add rsi, 1; "
                              "dec rcx; jnz L; hlt"))
    assert placed(47) == pytest.approx(1.0, abs=0.01)
    assert placed(48) == pytest.approx(2.0, abs=0.01)


def test_taken_jumps_calls_and_returns_cost_front_end_windows():
    assert per_iteration("jmp T; T:") == pytest.approx(2.0, abs=0.01)  # two windows, each closed by a jump
    runs = two_runs("mov rcx, {k}; L: call F; dec rcx; jnz L; hlt; F: ret")
    per = extra(runs)
    assert per == pytest.approx(3 + P.taken_call + P.taken_ret, abs=0.01)
    # the back end needs a branch unit for the call and the ret and one cycle for the `dec rcx`
    # chain; the breakdown books the rest as front-end stall
    assert extra(runs, "base") == pytest.approx(2 * P.classes["branch"].throughput + P.classes["alu"].latency,
                                                abs=0.01)
    assert extra(runs, "frontend_stall") == pytest.approx(per - extra(runs, "base"), abs=0.01)


def test_the_front_end_overlaps_a_busy_back_end():
    """A divide per iteration keeps the back end busy for longer than the call's windows: the
    calls cost nothing extra."""
    per = extra(two_runs("mov r8, 7; mov rcx, {k}; L: xor edx, edx; mov eax, 100; div r8; call F; "
                         "dec rcx; jnz L; hlt; F: ret"))
    assert per == pytest.approx(P.classes["div"].throughput + P.classes["branch"].throughput * 2, abs=0.6)
    assert per < P.classes["div"].throughput + 3 + P.taken_call + P.taken_ret


def test_a_mispredict_restarts_the_front_end():
    """An indirect jump to a target that changes every time mispredicts; the penalty is charged
    once and the front end starts again behind it (no window is counted twice)."""
    runs = two_runs("mov rcx, {k}; lea r9, [rip + A]; lea r10, [rip + B]; "
                    "L: xchg r9, r10; jmp r9; A: nop; B: dec rcx; jnz L; hlt")
    assert extra(runs, "branch_mispredicts") == 1  # the BTB keeps the last target, always the other one
    assert P.mispredict + 1 <= extra(runs) <= P.mispredict + 4
