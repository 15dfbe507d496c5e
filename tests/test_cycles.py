"""The native instruction counter and cycle model (emulator/cycles/) on synthetic code."""

from __future__ import annotations

import struct

import pytest
from keystone import KS_MODE_16
from unicorn import UC_ARCH_X86, UC_MODE_16, UC_MODE_64, Uc
from unicorn import x86_const as x

from emulator.cycles.accounting import CycleAccounting
from tests.support.cycle_harness import CODE, DATA, RAM, P, Run, asm, mc

pytestmark = pytest.mark.unit


# -- exact instruction counts -------------------------------------------------------------------

def test_straight_line():
    assert Run("inc rax;" * 50 + "hlt").n == 51


def test_loop_of_known_trip_count():
    r = Run("mov rcx, 1000; L: add rax, 2; dec rcx; jnz L; hlt")
    assert r.reg("rax") == 2000 and r.n == 1 + 3 * 1000 + 1


def test_rep_movsb_counts_once():
    setup = lambda uc: uc.mem_write(DATA, bytes(range(256)) * 4)
    r = Run(f"mov rsi, {DATA}; mov rdi, {DATA + 0x10000}; mov rcx, 1000; rep movsb; hlt", setup=setup)
    assert r.uc.mem_read(DATA + 0x10000, 1000) == (bytes(range(256)) * 4)[:1000]
    assert r.n == 5
    assert r.acc.breakdown()["rep_iterations"] >= 999


def test_rep_inside_a_loop_and_with_zero_count():
    r = Run(f"mov rbx, 7; L: mov rdi, {DATA}; mov rcx, 100; rep stosb; xor ecx, ecx; rep stosb; dec rbx; jnz L; hlt")
    assert r.n == 1 + 7 * 7 + 1


def test_fault_mid_block_counts_only_retired():
    r = Run("inc rax; inc rax; mov rbx, qword ptr [rcx]; inc rax; hlt", setup=lambda uc: uc.reg_write(x.UC_X86_REG_RCX, RAM + 0x1000))
    assert r.error is not None and r.reg("rax") == 2 and r.n == 2


def test_fault_on_first_instruction_of_a_block():
    r = Run("inc rax; jmp L; L: mov rbx, qword ptr [rcx]; inc rax; hlt",
            setup=lambda uc: uc.reg_write(x.UC_X86_REG_RCX, RAM + 0x1000))
    assert r.error is not None and r.n == 2


def test_hlt():
    r = Run("inc rax; inc rax; hlt; inc rax")
    assert r.reg("rax") == 2 and r.n == 3


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 11])
def test_stop_after_any_instruction(k):
    # emu_start(count=k) stops after exactly k instructions, inside or at the end of a block
    # that loops back to its own start (the ambiguous case finish() must get right).
    r = Run("mov rcx, 100; L: inc rax; dec rcx; jnz L; hlt", count=k)
    assert r.n == k


def test_budget_stops_at_a_block_boundary_past_it():
    r = Run("mov rcx, 100000; L: inc rax; dec rcx; jnz L; hlt", budget=1000)
    assert 1000 <= r.n < 1003
    assert r.n == 1 + 3 * r.reg("rax")  # the count matches what the guest did


def test_self_modifying_code_is_decoded_again():
    # B is 7 bytes: first `inc rax; inc rax; ret` (3 instructions), then rewritten by the guest
    # as six nops and `ret` (7 instructions): same address, same size, new instructions.
    new = int.from_bytes(asm("nop;" * 6 + "ret", 0), "little")
    src = "call B; mov rdx, {b}; mov rbx, 0x%x; mov qword ptr [rdx], rbx; call B; hlt; B: inc rax; inc rax; ret" % new
    b = CODE + len(asm(src.format(b=0x7000))) - 7
    r = Run(src.format(b=b))
    assert r.reg("rax") == 2
    assert r.n == 1 + 3 + 3 + 1 + 7 + 1


def test_real_mode_instance():
    code = asm("mov cx, 10; L: inc ax; loop L; hlt", 0x7C00, KS_MODE_16)
    uc = Uc(UC_ARCH_X86, UC_MODE_16)
    uc.mem_map(0, 0x100000)
    uc.mem_write(0x7C00, code)
    acc = CycleAccounting(uc)
    acc.attach()
    uc.emu_start(0x7C00, 0x7C00 + len(code) + 100)
    acc.finish(uc.reg_read(x.UC_X86_REG_EIP))
    assert uc.reg_read(x.UC_X86_REG_AX) == 10 and acc.instructions == 1 + 2 * 10 + 1


def test_paging_on_with_code_at_a_virtual_address():
    # Code at physical 0x1000 runs at virtual 0x400000: decoding must read through the page tables.
    def setup(uc):
        pml4, pdpt, pd, pt = 0x10000, 0x11000, 0x12000, 0x13000
        uc.mem_write(pml4, struct.pack("<Q", pdpt | 3))
        uc.mem_write(pdpt, struct.pack("<Q", pd | 3))
        uc.mem_write(pd, struct.pack("<QQQ", 0x83, pt | 3, 0))  # 0-2 MiB identity (2 MiB page), then a table
        uc.mem_write(pt, struct.pack("<Q", CODE | 3))           # 0x200000 -> CODE
        uc.reg_write(x.UC_X86_REG_CR3, pml4)
        uc.reg_write(x.UC_X86_REG_CR4, 0x20)
        uc.msr_write(0xC0000080, 0x500)
        uc.reg_write(x.UC_X86_REG_CR0, 0x80000011)
    src = "mov rcx, 5; L: inc rax; dec rcx; jnz L; hlt"
    code = asm(src, 0x200000)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, RAM)
    uc.mem_write(CODE, code)
    uc.mem_write(0x200000, b"\xf4" * 16)  # what a physical read at the virtual address would see
    setup(uc)
    acc = CycleAccounting(uc)
    acc.attach()
    uc.emu_start(0x200000, 0x200000 + 0x1000)
    acc.finish(uc.reg_read(x.UC_X86_REG_RIP))
    assert uc.reg_read(x.UC_X86_REG_RAX) == 5 and acc.instructions == 1 + 15 + 1


# -- determinism and the model's components ----------------------------------------------------

WORKLOAD = f"""mov rsi, {DATA}; mov rcx, 3000;
L: mov rax, qword ptr [rsi]; add rax, rcx; mov qword ptr [rsi + 8], rax; add rsi, 4160; and rsi, 0x3fffff;
   or rsi, {DATA}; test rcx, 3; jz S; inc rbx; S: call F; dec rcx; jnz L; rdtsc; hlt;
F: push rbp; mov rbp, rsp; imul rax, rbx; pop rbp; ret"""


def test_cycles_identical_across_runs():
    a, b = Run(WORKLOAD), Run(WORKLOAD)
    assert a.n == b.n and a.acc.cycles == b.acc.cycles > a.n
    assert a.acc.breakdown() == b.acc.breakdown()
    assert a.acc.profile() == b.acc.profile()
    assert sum(n for n, _ in a.acc.profile().values()) == a.n


def _line_walk(lines: int, passes: int, stride: int = 64) -> Run:
    return Run(f"mov rdx, {passes}; P: mov rsi, {DATA}; mov rcx, {lines}; "
               f"L: mov rax, qword ptr [rsi]; add rsi, {stride}; dec rcx; jnz L; dec rdx; jnz P; hlt")


def test_cache_first_pass_misses_second_hits():
    one, two = _line_walk(64, 1), _line_walk(64, 2)  # 64 lines = 4 KiB, one page
    for r in (one, two):
        b = r.acc.breakdown()
        assert b["l1_misses"] == 64 and b["loads"] == 64 * (r is one and 1 or 2)
        assert b["memory_stall"] == 64 * (mc(P.dram_latency - P.l1_latency)) // 1000
        assert b["dtlb_misses"] == 1 and b["tlb_stall"] == mc(P.page_walk) // 1000


def test_cache_l2_hits_when_l1_overflows():
    lines = 1024  # 64 KiB: twice the L1D; every set sees 16 lines in turn, so LRU keeps none
    r = _line_walk(lines, 2)
    b = r.acc.breakdown()
    assert b["l1_misses"] == 2 * lines
    first = lines * mc(P.dram_latency - P.l1_latency)
    second = lines * mc(P.l2_latency - P.l1_latency)
    assert b["memory_stall"] == (first + second) // 1000


def test_tlb_misses_on_a_page_stride():
    pages = 100  # more than the 72-entry L1 DTLB, fewer than the L2
    r = _line_walk(pages, 2, stride=4096)
    b = r.acc.breakdown()
    assert b["dtlb_misses"] == 2 * pages and b["page_walks"] == pages
    assert b["tlb_stall"] == (pages * mc(P.page_walk) + pages * mc(P.dtlb2_hit)) // 1000


def _gshare(stream, table_bits, history_bits) -> int:
    """Reference model of the direction predictor: mispredicts over (pc, taken) in order."""
    table, hist, wrong = [1] * (1 << table_bits), 0, 0
    for pc, taken in stream:
        i = (pc ^ hist) & ((1 << table_bits) - 1)
        wrong += (table[i] >= 2) != taken
        table[i] = min(table[i] + 1, 3) if taken else max(table[i] - 1, 0)
        hist = ((hist << 1) | taken) & ((1 << history_bits) - 1)
    return wrong


def _pattern_run(bits: list[int]) -> tuple[Run, int]:
    """A loop whose inner `jnz` follows `bits`; returns the run and the reference mispredicts."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    src = f"""mov rsi, {DATA}; mov rcx, {len(bits)};
              L: movzx eax, byte ptr [rsi]; inc rsi; test eax, eax; jnz T; inc rbx; T: dec rcx; jnz L; hlt"""
    jumps = [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(asm(src), CODE) if i.mnemonic == "jne"]
    stream = []
    for i, bit in enumerate(bits):
        stream.append((jumps[0], bool(bit)))
        stream.append((jumps[1], i != len(bits) - 1))
    r = Run(src, setup=lambda uc: uc.mem_write(DATA, bytes(bits)))
    return r, _gshare(stream, P.bp_table_bits, P.bp_history_bits)


def test_branch_predictor_against_reference_model():
    import random
    rng = random.Random(7)
    patterns = {"loop": [1] * 400, "alternating": [i & 1 for i in range(400)],
                "random": [rng.randrange(2) for _ in range(400)]}
    wrong = {}
    for name, bits in patterns.items():
        r, expected = _pattern_run(bits)
        wrong[name] = r.acc.breakdown()["branch_mispredicts"]
        assert wrong[name] == expected, name
        assert r.acc.breakdown()["branch_stall"] >= wrong[name] * mc(P.mispredict) // 1000
    assert wrong["loop"] < 30 and wrong["alternating"] < 40 and wrong["random"] > 150


def test_return_stack_predicts_nested_calls():
    r = Run("mov rcx, 200; L: call A; dec rcx; jnz L; hlt; A: call B; ret; B: call C; ret; C: ret")
    b = r.acc.breakdown()
    assert b["branch_mispredicts"] < 20  # the loop's warm-up only: every ret is predicted


def test_locked_and_serialising_costs():
    lock = Run("mov rcx, 100; L: lock add qword ptr [rsp], 1; dec rcx; jnz L; hlt")
    plain = Run("mov rcx, 100; L: add qword ptr [rsp], 1; dec rcx; jnz L; hlt")
    fence = Run("mov rcx, 100; L: mfence; dec rcx; jnz L; hlt")
    per_lock = (lock.acc.breakdown()["base"] - plain.acc.breakdown()["base"]) / 100
    assert per_lock >= P.classes["lock_rmw"].throughput - 2
    assert fence.acc.breakdown()["base"] >= 100 * P.classes["mfence"].throughput


# -- guest time ------------------------------------------------------------------------------------

# The loop starts on its own code line (0x1040) so that a run stopped at its first rdtsc
# fetches the same lines; the load is in an earlier block, so its miss is charged before.
RDTSC_PROGRAM = f"""mov rdi, {DATA}; mov rax, qword ptr [rdi + 0x2000]; {'nop; ' * 48} jmp L0;
L0: mov rcx, 20; L: mov r8, 1; mov r9, 2; mov r10, 3; rdtsc; mov dword ptr [rdi], eax;
   mov dword ptr [rdi + 4], edx; add rdi, 8; dec rcx; jnz L; rdtscp; hlt"""


def test_guest_rdtsc_is_monotonic_model_time():
    r = Run(RDTSC_PROGRAM)
    stamps = struct.unpack("<20Q", r.uc.mem_read(DATA, 160))
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert stamps[-1] < r.acc.cycles
    assert r.reg("rcx") == 0  # rdtscp's TSC_AUX
    # "at that instruction": the first rdtsc reads what `cycles` is after a run stopped there.
    first = CODE + asm(RDTSC_PROGRAM).index(b"\x0f\x31")
    assert first >> 6 == (CODE + 0x40) >> 6
    stopped = Run(RDTSC_PROGRAM, until=first)
    assert stopped.n == 3 + 48 + 4
    assert stamps[0] == stopped.acc.cycles > 0


def test_pvh_32bit_entry_in_a_64bit_instance_then_long_mode():
    """The kernel's path: 32-bit code (one-byte `inc` is a REX prefix in 64-bit mode, so decoding
    it in the wrong mode would miscount), then the guest turns on paging and long mode."""
    from keystone import KS_MODE_32
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, RAM)
    gdt = struct.pack("<4Q", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00AF9A000000FFFF)
    uc.mem_write(0x5000, gdt)
    uc.mem_write(0x10000, struct.pack("<Q", 0x11000 | 3))
    uc.mem_write(0x11000, struct.pack("<Q", 0x12000 | 3))
    uc.mem_write(0x12000, struct.pack("<Q", 0x83))  # 0-2 MiB, one large page
    code32 = asm("inc ebx; inc ebx; mov eax, cr4; or eax, 0x20; mov cr4, eax; mov eax, 0x10000; mov cr3, eax;"
                 "mov ecx, 0xC0000080; rdmsr; or eax, 0x100; wrmsr; mov eax, cr0; or eax, 0x80000000; mov cr0, eax",
                 CODE, KS_MODE_32) + b"\xea" + struct.pack("<IH", 0x2000, 0x18)
    uc.mem_write(CODE, code32)
    code64 = asm("inc rbx; mov rax, 0x123456789; hlt", 0x2000)
    uc.mem_write(0x2000, code64)
    for reg, value in ((x.UC_X86_REG_CR4, 0x20), (x.UC_X86_REG_CR0, 0x80000011), (x.UC_X86_REG_CR0, 0x11)):
        uc.reg_write(reg, value)
    uc.msr_write(0xC0000080, 0)
    uc.reg_write(x.UC_X86_REG_CR4, 0)
    uc.reg_write(x.UC_X86_REG_GDTR, (0, 0x5000, len(gdt) - 1, 0))
    uc.reg_write(x.UC_X86_REG_CS, 0x08)
    for seg in (x.UC_X86_REG_DS, x.UC_X86_REG_ES, x.UC_X86_REG_SS):
        uc.reg_write(seg, 0x10)
    acc = CycleAccounting(uc)
    acc.attach()
    uc.emu_start(CODE, 0x3000)
    acc.finish(uc.reg_read(x.UC_X86_REG_RIP))
    assert uc.reg_read(x.UC_X86_REG_RBX) == 3 and uc.reg_read(x.UC_X86_REG_RAX) == 0x123456789
    assert acc.instructions == 15 + 3


@pytest.mark.parametrize("code_hook", [False, True])
def test_stop_from_an_out_hook_counts_up_to_the_out(code_hook):
    # The machine's isa-debug-exit: emu_stop from the `out` hook, then finish(PC after the out);
    # without a code hook Unicorn finishes the block first, with one it stops right there.
    from unicorn import UC_HOOK_CODE, UC_HOOK_INSN
    src = "mov rcx, 3; L: dec rcx; jnz L; mov al, 0x10; out 0xf4, al; inc rbx; inc rbx; jmp M; M: hlt"
    code = asm(src)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, RAM)
    uc.mem_write(CODE, code)
    acc = CycleAccounting(uc)
    acc.attach()
    exit_pc = []

    def out(uc, port, size, value, user_data):
        exit_pc.append(uc.reg_read(x.UC_X86_REG_RIP) + 2)
        uc.emu_stop()
    uc.hook_add(UC_HOOK_INSN, out, None, 1, 0, x.UC_X86_INS_OUT)
    if code_hook:
        uc.hook_add(UC_HOOK_CODE, lambda *a: None)
    uc.emu_start(CODE, CODE + len(code))
    acc.finish(exit_pc[0])
    assert acc.instructions == 1 + 2 * 3 + 2


def test_detach_stops_counting_and_budget_none_runs_free():
    code = asm("mov rcx, 50; L: dec rcx; jnz L; hlt")
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, RAM)
    uc.mem_write(CODE, code)
    acc = CycleAccounting(uc)
    acc.attach()
    acc.set_budget(10)
    acc.set_budget(None)
    uc.emu_start(CODE, CODE + len(code))
    acc.finish(uc.reg_read(x.UC_X86_REG_RIP))
    counted, cycles = acc.instructions, acc.cycles
    assert counted == 1 + 2 * 50 + 1
    acc.detach()
    uc.emu_start(CODE, CODE + len(code))
    assert (acc.instructions, acc.cycles) == (counted, cycles)
