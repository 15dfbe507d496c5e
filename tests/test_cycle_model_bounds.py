"""The native block table stays bounded (code that rewrites itself, or runs fresh memory), and
flushing it, restoring forgotten blocks or reusing their slots changes no count."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc, UcError
from unicorn import x86_const as x

from emulator.cycles.accounting import UNATTRIBUTED, CycleAccounting
from emulator.errors import CycleModelError
from tests.support.cycle_harness import CODE, DATA, RAM, asm

pytestmark = pytest.mark.unit


def run(src: str | None = None, *, code: bytes | None = None, limits: tuple[int, int] | None = None,
        budget: int | None = None, count: int = 0, setup=None) -> CycleAccounting:
    """`src` (or raw `code`) at CODE on a fresh 64-bit CPU, with the block table bounded to
    `limits` (blocks, profile rows) when given."""
    body = asm(src) if src is not None else code
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, RAM)
    uc.mem_write(CODE, body)
    uc.reg_write(x.UC_X86_REG_RSP, 0x80000)
    if setup:
        setup(uc)
    acc = CycleAccounting(uc)
    if limits:
        acc.limit_table(*limits)
    acc.attach()
    acc.set_budget(budget)
    try:
        uc.emu_start(CODE, CODE + len(body) + 0x100000, count=count)
    except UcError:
        pass
    acc.finish(uc.reg_read(x.UC_X86_REG_RIP))
    acc.uc = uc
    return acc


def facts(acc: CycleAccounting) -> tuple:
    return acc.instructions, acc.cycles, acc.breakdown(), acc.profile_millicycles()


def zeros_at_code(uc) -> None:
    # Zero-filled memory runs as `add byte ptr [rax], al`: every instruction writes to the
    # first bytes of the code it runs in.
    uc.reg_write(x.UC_X86_REG_RAX, CODE + 0x37)


def stosb_ahead(uc) -> None:
    # `stosb` five bytes ahead of itself: every instruction rewrites the block it runs in, so
    # Unicorn starts a new block at every instruction.
    uc.mem_write(CODE, b"\xaa" * 0x10000)
    uc.reg_write(x.UC_X86_REG_RAX, 0xAA)
    uc.reg_write(x.UC_X86_REG_RDI, CODE + 5)


# Guests: an ordinary loop (calls, memory, a rep string), code that rewrites a byte of its own
# block with the value it has, code whose immediate changes every iteration, zero-filled memory.
LOOP = (f"mov rbx, 40; L: mov rdi, {DATA}; mov rcx, 50; rep stosb; mov rax, qword ptr [rdi]; call F; "
        f"test rbx, 3; jz S; inc rdx; S: dec rbx; jnz L; hlt; F: push rbp; imul rax, rbx; pop rbp; ret")
SAME_BYTES = "mov rcx, 500; L: lea rdx, [rip + L]; mov byte ptr [rdx + 10], 0x48; dec rcx; jnz L; hlt"
NEW_BYTES = "mov rcx, 500; L: lea rdx, [rip + M]; mov byte ptr [rdx + 3], cl; jmp M; M: add rbx, 1; dec rcx; jnz L; hlt"
GUESTS = {
    "loop": dict(src=LOOP),
    "same_bytes": dict(src=SAME_BYTES),
    "new_bytes": dict(src=NEW_BYTES),
    "zeros": dict(code=b"", budget=20000, setup=zeros_at_code),
    "stosb_ahead": dict(code=b"", count=120, setup=stosb_ahead),
}


@pytest.fixture(scope="module")
def unbounded():
    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            cache[name] = facts(run(**GUESTS[name]))
        return cache[name]
    return get


@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("guest", sorted(GUESTS))
def test_flushes_change_no_count_and_no_profile(unbounded, guest, blocks):
    acc = run(**GUESTS[guest], limits=(blocks, 1000))
    assert facts(acc) == unbounded(guest)
    stats = acc.table_stats()
    assert stats["flushes"] > 0 and stats["blocks"] <= blocks + 1  # + the block that ran last


def test_profile_adds_up_past_its_row_bound(unbounded):
    acc = run(**GUESTS["zeros"], limits=(2, 3))
    rows = acc.profile_millicycles()
    assert UNATTRIBUTED in rows and len(rows) <= 3 + 2 + 1
    n, cycles, _, full = unbounded("zeros")
    assert sum(i for i, _ in rows.values()) == acc.instructions == n
    assert sum(mc for _, mc in rows.values()) == sum(mc for _, mc in full.values())
    assert sum(mc for _, mc in rows.values()) // 1000 == acc.cycles == cycles
    assert sum(i for i, _ in acc.profile().values()) == n
    # the rows that fit are exact
    for address, counts in rows.items():
        if address != UNATTRIBUTED:
            assert full[address] == counts


def test_zero_filled_memory_keeps_the_table_bounded():
    short, long = (run(**{**GUESTS["zeros"], "budget": n}, limits=(16, 8)) for n in (30000, 90000))
    for acc in (short, long):
        assert acc.table_stats()["blocks"] <= 17 and acc.table_stats()["flushes"] > 0
    assert long.instructions >= 90000
    assert long.table_stats()["memory_bytes"] == short.table_stats()["memory_bytes"]


def test_a_new_block_at_every_instruction_keeps_the_table_bounded():
    short, long = (run(**{**GUESTS["stosb_ahead"], "count": n}, limits=(8, 4)) for n in (100, 300))
    assert long.table_stats()["decodes"] >= 300 // 2  # a block per instruction really happens
    for acc in (short, long):
        assert acc.table_stats()["blocks"] <= 9
    assert long.table_stats()["memory_bytes"] == short.table_stats()["memory_bytes"]


def test_a_forgotten_block_with_unchanged_bytes_is_not_decoded_again():
    acc = run(SAME_BYTES)
    stats = acc.table_stats()
    assert stats["restores"] >= 500 and stats["decodes"] <= 6 and stats["blocks"] <= 6
    # without restoring (a one-block table forgets everything at each new block): same counts
    plain = run(SAME_BYTES, limits=(1, 1000))
    assert plain.table_stats()["restores"] == 0 and plain.table_stats()["decodes"] > 1000
    assert facts(plain) == facts(acc)


def test_rewritten_bytes_are_decoded_again_into_the_same_slot():
    acc = run(NEW_BYTES)
    # `add rbx, imm8` ran with imm8 = cl (sign-extended) each iteration, as written just before
    assert acc.uc.reg_read(x.UC_X86_REG_RBX) == sum(((c & 0xFF) ^ 0x80) - 0x80 for c in range(1, 501)) % 2**64
    stats = acc.table_stats()
    assert stats["decodes"] >= 500 and stats["blocks"] <= 6 and stats["flushes"] == 0


def test_self_modifying_code_under_a_tiny_table():
    # tests/test_cycles.py's case: B rewritten (same address and size, new instructions).
    new = int.from_bytes(asm("nop;" * 6 + "ret", 0), "little")
    src = "call B; mov rdx, {b}; mov rbx, 0x%x; mov qword ptr [rdx], rbx; call B; hlt; B: inc rax; inc rax; ret" % new
    b = CODE + len(asm(src.format(b=0x7000))) - 7
    for limits in (None, (1, 1), (2, 1000)):
        acc = run(src.format(b=b), limits=limits)
        assert acc.uc.reg_read(x.UC_X86_REG_RAX) == 2
        assert acc.instructions == 1 + 3 + 3 + 1 + 7 + 1


@pytest.mark.parametrize("wide", [False, True])
def test_host_rewrites_are_seen_through_the_line_index_or_a_scan(wide):
    # forget_code over the code walks the line index; over a GiB it scans the table.
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, RAM)
    code = asm("mov rcx, 3; L: inc rax; dec rcx; jnz L; hlt")
    uc.mem_write(CODE, code)
    acc = CycleAccounting(uc)
    acc.attach()

    def again(expected: int) -> None:
        acc.forget_code(0, 1 << 30) if wide else acc.forget_code(CODE, len(code))
        uc.emu_start(CODE, CODE + 0x1000)
        acc.finish(uc.reg_read(x.UC_X86_REG_RIP))
        assert acc.instructions == expected

    again(1 + 3 * 3 + 1)
    decoded = acc.table_stats()["decodes"]
    again(2 * (1 + 3 * 3 + 1))  # the same bytes: restored, not decoded
    assert acc.table_stats()["restores"] == decoded and acc.table_stats()["decodes"] == decoded
    uc.mem_write(CODE, asm("mov rcx, 3; L: nop; nop; nop; dec rcx; jnz L; hlt"))  # same blocks, new instructions
    again(2 * (1 + 3 * 3 + 1) + 1 + 5 * 3 + 1)
    # the two blocks holding `inc rax` are decoded again (into new slots: they now have more
    # instructions than their old slots hold); `hlt` is unchanged
    assert decoded == 3 and acc.table_stats()["decodes"] == 3 + 2 and acc.table_stats()["blocks"] == 3 + 2


def test_limits_only_before_the_first_block():
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, RAM)
    acc = CycleAccounting(uc)
    with pytest.raises(CycleModelError):
        acc.limit_table(0, 10)
    acc.limit_table(4, 4)
    uc.mem_write(CODE, asm("inc rax; hlt"))
    acc.attach()
    uc.emu_start(CODE, CODE + 0x100)
    acc.finish(uc.reg_read(x.UC_X86_REG_RIP))
    assert acc.instructions == 2
    with pytest.raises(CycleModelError):
        acc.limit_table(8, 8)
