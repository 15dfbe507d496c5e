"""The model's core: back-end resource pools, Jcc fusion, the front end's fetch windows and
call/return bubbles, each against a figure computed by hand from cycle_model.toml."""

from __future__ import annotations

import pytest
from test_cycles import CODE, P, Run


def per_iteration(body: str, before: str = "", n: tuple[int, int] = (200, 400)) -> float:
    """Cycles one more iteration of `L: body; dec rcx; jnz L` costs (the difference of two runs
    cancels start-up and the first, cold iteration)."""
    runs = [Run(f"{before} mov rcx, {k}; L: {body} dec rcx; jnz L; hlt").acc.cycles for k in n]
    return (runs[1] - runs[0]) / (n[1] - n[0])


ALU = P.classes["alu"].throughput


def test_independent_alu_ops_share_four_alus_and_dec_jnz_fuses():
    # 8 adds + the fused dec/jnz: 9 ALU macro-ops on 4 ALUs
    assert per_iteration("add rax, 1; add rdx, 1; add rsi, 1; add r8, 1;" * 2) == pytest.approx(9 * ALU, abs=0.01)


def test_a_jcc_that_cannot_fuse_takes_an_alu_slot_of_its_own():
    # the nop between dec and jnz prevents fusion: 10 ALU ops
    body = "add rax, 1; add rdx, 1; add rsi, 1; add r8, 1;" * 2
    runs = [Run(f"mov rcx, {k}; L: {body} dec rcx; nop; jnz L; hlt").acc.cycles for k in (200, 400)]
    assert (runs[1] - runs[0]) / 200 == pytest.approx(10 * ALU, abs=0.01)


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
        runs = [Run(f"mov rcx, {k}; {'nop;' * pad} L: add rax, 1; add rdx, 1; add rsi, 1; dec rcx; jnz L; hlt")
                for k in (200, 400)]
        return (runs[1].acc.cycles - runs[0].acc.cycles) / 200
    assert placed(47) == pytest.approx(1.0, abs=0.01)
    assert placed(48) == pytest.approx(2.0, abs=0.01)


def test_taken_jumps_calls_and_returns_cost_front_end_windows():
    assert per_iteration("jmp T; T:") == pytest.approx(2.0, abs=0.01)  # two windows, each closed by a jump
    runs = [Run(f"mov rcx, {k}; L: call F; dec rcx; jnz L; hlt; F: ret").acc for k in (200, 400)]
    per = (runs[1].cycles - runs[0].cycles) / 200
    assert per == pytest.approx(3 + P.taken_call + P.taken_ret, abs=0.01)
    # the back end needs a branch unit for the call and the ret and one cycle for the `dec rcx`
    # chain; the breakdown books the rest as front-end stall
    delta = {k: (runs[1].breakdown()[k] - runs[0].breakdown()[k]) / 200 for k in ("base", "frontend_stall")}
    assert delta["base"] == pytest.approx(2 * P.classes["branch"].throughput + P.classes["alu"].latency, abs=0.01)
    assert delta["frontend_stall"] == pytest.approx(per - delta["base"], abs=0.01)


def test_the_front_end_overlaps_a_busy_back_end():
    """A divide per iteration keeps the back end busy for longer than the call's windows: the
    calls cost nothing extra."""
    body = "xor edx, edx; mov eax, 100; div r8; call F;"
    runs = [Run(f"mov r8, 7; mov rcx, {k}; L: {body} dec rcx; jnz L; hlt; F: ret").acc.cycles for k in (200, 400)]
    per = (runs[1] - runs[0]) / 200
    assert per == pytest.approx(P.classes["div"].throughput + P.classes["branch"].throughput * 2, abs=0.6)
    assert per < P.classes["div"].throughput + 3 + P.taken_call + P.taken_ret


def test_a_mispredict_restarts_the_front_end():
    """An indirect jump to a target that changes every time mispredicts; the penalty is charged
    once and the front end starts again behind it (no window is counted twice)."""
    src = """mov rcx, {k}; lea r9, [rip + A]; lea r10, [rip + B];
             L: xchg r9, r10; jmp r9; A: nop; B: dec rcx; jnz L; hlt"""
    runs = [Run(src.format(k=k)).acc for k in (200, 400)]
    mispredicts = runs[1].breakdown()["branch_mispredicts"] - runs[0].breakdown()["branch_mispredicts"]
    assert mispredicts == 200  # the BTB keeps the last target, which is always the other one
    per = (runs[1].cycles - runs[0].cycles) / 200
    assert P.mispredict + 1 <= per <= P.mispredict + 4
