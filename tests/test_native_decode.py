"""Blocks are decoded and costed in native code (emulator/cycles/native/cyclemodel.c) exactly as
the Python decoder did (tests/support/reference_decoder.py): the same width, instruction
offsets, per-instruction costs, closing-branch kind, rep flags and front-end cost for every block
of our kernel's boots (firmware included) and of hand-built 16-, 32- and 64-bit guests. And the
caches are physical, the DTLBs virtual and tagged by address space (docs/cycle-model.md)."""

from __future__ import annotations

import struct

import pytest
from keystone import KS_ARCH_X86, KS_MODE_16, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_16, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn import x86_const as x

import emulator.machine.board as board
from emulator.cycles.accounting import K_COND, K_JMP, CycleAccounting
from emulator.cycles.native import INSN_CLASSES
from emulator.cycles.params import load_params, millicycles
from tests.support.paths import KERNEL
from tests.support.reference_decoder import CheckedAccounting

P = load_params()


# -- our kernel's boots -------------------------------------------------------------------------

@pytest.mark.boot
@pytest.mark.parametrize("cmdline", ["", "test", "allocator=bump test", "churn=10000 seed=1"])
def test_every_block_of_a_boot_decodes_as_the_reference(monkeypatch, cmdline):
    from emulator import boot

    CheckedAccounting.made = []
    monkeypatch.setattr(board, "CycleAccounting", CheckedAccounting)
    run = boot(KERNEL, cmdline=cmdline)  # traced and checked, host calls included, as the tests boot it
    assert run.exit_code == 0
    firmware, kernel = CheckedAccounting.made
    for acc in (firmware, kernel):
        assert acc.mismatches == []
    # real mode and the firmware's 32-bit protected mode; the kernel's 32-bit entry and long mode
    assert firmware.widths == {16, 32} and kernel.widths == {32, 64}
    assert firmware.compared >= 20 and kernel.compared >= 250


# -- hand-built guests -------------------------------------------------------------------------

# Every instruction class, with operands that run on a bare CPU (SI/DI point at scratch memory).
ZOO = """
    xor eax, eax; sub ecx, ecx; xor ebx, ebx
    mov eax, dword ptr [{si}]; mov dword ptr [{di}], eax; add eax, dword ptr [{si}]; add dword ptr [{di}], eax
    movzx eax, byte ptr [{si}]; movsx eax, word ptr [{si}]
    lea ecx, [eax + ebx*2 + 8]; shl eax, 3; sar eax, cl; rol eax, 1; shld eax, ebx, 4; rcr ebx, 1
    imul eax, ebx; imul eax, ebx, 7; mov ebx, 3; mul ebx
    mov ecx, 3; xor edx, edx; mov eax, 100; div ecx; xor edx, edx; idiv ecx
    push {ax}; pop {ax}; {pushf}; {popf}; push {word} ptr [{si}]; pop {word} ptr [{di}]
    lock add dword ptr [{di}], 1; lock cmpxchg dword ptr [{di}], ecx; lock xadd dword ptr [{di}], eax
    lock inc dword ptr [{di}]; xchg dword ptr [{di}], eax; xchg eax, ebx
    mfence; lfence; sfence; pause; xor eax, eax; cpuid; rdtsc; rdtscp
    cld; mov ecx, 8; rep movsb; mov ecx, 4; rep stosd; movsb; lodsb; stosb; scasb; cmpsb
    mov ecx, 3; repne scasb; mov ecx, 2; repe cmpsw
    nop; nop dword ptr [eax]; prefetcht0 [{si}]
    fld1; fldz; faddp st(1); fstp st(0)
    pxor xmm0, xmm0; xorps xmm1, xmm1; addps xmm0, xmm1; paddd xmm0, xmm1; movd xmm2, eax; movd eax, xmm2
    movq mm0, mm1
    mov ecx, 5
L1: add eax, ebx; imul eax, eax; dec ecx; jnz L1
    cmp eax, ebx; jne L2
L2: test eax, eax; jz L3
L3: and eax, 1; jnz L4
L4: cmovz eax, ebx; setnz al; bt eax, 3; bsf eax, ebx; neg eax; not eax; adc eax, 1; sbb eax, 1; inc eax; dec eax
    call F; jmp G
F:  ret
G:  mov ax, ds; mov ds, ax; cli; sti; sgdt [{di}]; sidt [{di}]; mov {ax}, cr0
    in al, 0x80; out 0x80, al
    mov ecx, 2
L5: loop L5
    jmp H
H:  sahf; lahf; cwd; cdq; clc; stc; cmc; bswap eax; mov ebx, {si32}; xlatb
"""
ZOO_TAIL = {
    16: "hlt",
    32: "mov eax, cr3; mov cr3, eax; mov ecx, 0xC0000080; rdmsr; lea eax, [F]; call eax; hlt",
    64: "movabs rax, 0x1122334455667788; movsxd rax, dword ptr [rsi]; mov rax, qword ptr [rsi]; mov rdi, 0x100800; "
        "lock cmpxchg16b [rdi]; mov rcx, 2; rep movsq; mov rax, cr3; mov cr3, rax; mov ecx, 0xC0000080; rdmsr; "
        "lea rax, [rip + F]; call rax; lea rax, [rip + Z]; jmp rax; Z: swapgs; swapgs; hlt",
}
MODES = {16: (KS_MODE_16, UC_MODE_16, x.UC_X86_REG_EIP), 32: (KS_MODE_32, UC_MODE_32, x.UC_X86_REG_EIP),
         64: (KS_MODE_64, UC_MODE_64, x.UC_X86_REG_RIP)}
BASE = 0x1000


def zoo(bits: int) -> bytes:
    regs = {16: dict(si="esi", di="edi", ax="eax", pushf="pushfd", popf="popfd", word="dword"),
            32: dict(si="esi", di="edi", ax="eax", pushf="pushfd", popf="popfd", word="dword"),
            64: dict(si="rsi", di="rdi", ax="rax", pushf="pushfq", popf="popfq", word="qword")}[bits]
    stack, data = (0x8000, 0x6000) if bits == 16 else (0x80000, 0x100000)
    src = (f"mov esp, {stack}; mov esi, {data}; mov edi, {data + 0x800};" + ZOO.format(**regs, si32="esi") +
           "; " + ZOO_TAIL[bits])
    if bits == 64:
        src = src.replace("mov esp,", "mov rsp,").replace("mov esi,", "mov rsi,").replace("mov edi,", "mov rdi,")
    return bytes(Ks(KS_ARCH_X86, MODES[bits][0]).asm(src, BASE)[0])


def run_checked(bits: int, code: bytes) -> tuple[CheckedAccounting, Uc, UcError | None]:
    uc = Uc(UC_ARCH_X86, MODES[bits][1])
    uc.mem_map(0, 0x800000)
    uc.mem_write(BASE, code)
    uc.reg_write(x.UC_X86_REG_CR4, uc.reg_read(x.UC_X86_REG_CR4) | 0x600)  # OSFXSR, OSXMMEXCPT: SSE runs
    acc = CheckedAccounting(uc)
    acc.attach()
    error = None
    try:
        uc.emu_start(BASE, BASE + len(code) + 0x10000)
    except UcError as exc:
        error = exc
    acc.finish(uc.reg_read(MODES[bits][2]))
    return acc, uc, error


@pytest.mark.unit
@pytest.mark.parametrize("bits", [16, 32, 64])
def test_every_class_decodes_as_the_reference(bits):
    code = zoo(bits)
    acc, uc, error = run_checked(bits, code)
    assert error is None and uc.reg_read(MODES[bits][2]) == BASE + len(code)  # it ran to its hlt
    assert acc.mismatches == [] and acc.widths == {bits} and acc.compared >= 20
    assert acc.classes() == set(INSN_CLASSES) - {"other"}  # `other` is for bytes capstone cannot decode


@pytest.mark.unit
@pytest.mark.parametrize("bits", [16, 32, 64])
def test_undecodable_bytes_decode_as_the_reference(bits):
    # `inc eax; jmp +0` then 0F 0A, which no mode decodes: a block of it alone, one instruction of
    # class `other`
    acc, _, error = run_checked(bits, bytes.fromhex("ffc0eb000f0a"))
    assert error is not None and acc.mismatches == [] and acc.compared == 2
    alone = acc.block(BASE + 4, 2)
    assert alone is not None and alone.offsets == (0,) and alone.costs == (millicycles(P.classes["other"].throughput),)
    # at the end of a block: capstone decodes `inc` and stops, the block is that instruction
    acc, _, error = run_checked(bits, bytes.fromhex("ffc00f0a"))
    assert error is not None and acc.mismatches == [] and acc.compared == 1
    assert acc.block(BASE, 4).offsets == (0,)


@pytest.mark.unit
def test_a_decoded_block_reads_back():
    acc, _, _ = run_checked(64, bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm("mov ecx, 3; L: inc eax; dec ecx; jnz L; jmp E; E: hlt", BASE)[0]))
    loop = acc.block(BASE + 5, 6)
    assert loop is not None and loop.bits == 64 and loop.offsets == (0, 2, 4) and loop.kind == K_COND and loop.live
    assert sum(loop.costs) > 0 and not loop.rep_last and not loop.first_rep
    first = acc.block(BASE, 11)  # `mov ecx, 3` and the loop's first iteration, one block
    assert first is not None and first.offsets == (0, 5, 7, 9) and first.kind == K_COND
    assert acc.block(BASE + 11, 2).kind == K_JMP and acc.block(BASE, 5) is None


# -- addresses: physical caches, virtual DTLBs --------------------------------------------------

class PagedCpu:
    """A bare 64-bit CPU with 4-level paging: the first 2 MiB identity-mapped, the rest as mapped."""

    def __init__(self, ram: int = 64 << 20) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map(0, ram)
        self.free = 0x10000
        self.root = self._table()
        for va in range(0x1000, 0x200000, 0x1000):
            self.map(va, va)

    def _table(self) -> int:
        self.free += 0x1000
        return self.free - 0x1000

    def map(self, va: int, pa: int) -> None:
        table = self.root
        for shift in (39, 30, 21):
            slot = table + ((va >> shift) & 511) * 8
            entry = struct.unpack("<Q", self.uc.mem_read(slot, 8))[0]
            if not entry & 1:
                entry = self._table() | 3
                self.uc.mem_write(slot, struct.pack("<Q", entry))
            table = entry & ~0xFFF
        self.uc.mem_write(table + ((va >> 12) & 511) * 8, struct.pack("<Q", pa | 3))

    def run(self, src: str, at: int = 0x1000, frame: int | None = None) -> CycleAccounting:
        uc = self.uc
        code = bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(src, at)[0])
        uc.mem_write(at if frame is None else frame, code)
        uc.reg_write(x.UC_X86_REG_CR3, self.root)
        uc.reg_write(x.UC_X86_REG_CR4, uc.reg_read(x.UC_X86_REG_CR4) | 0x20)
        uc.reg_write(x.UC_X86_REG_CR0, uc.reg_read(x.UC_X86_REG_CR0) | 0x80000001)
        uc.reg_write(x.UC_X86_REG_RSP, 0x80000)
        acc = CycleAccounting(uc)
        acc.attach()
        uc.emu_start(at, at + len(code) + 0x100000)
        acc.finish(uc.reg_read(x.UC_X86_REG_RIP))
        return acc


# 3 sweeps over 100 pages (more than the 72-entry L1 DTLB holds: every access misses it)
SWEEP = ("mov rcx, 3; L0: mov rsi, 0x40000000; mov rdx, 100; L1: mov rax, qword ptr [rsi]; add rsi, {stride}; "
         "dec rdx; jnz L1; dec rcx; jnz L0; hlt")


@pytest.mark.unit
def test_the_l2_dtlb_is_indexed_by_virtual_page():
    # Virtual pages 128 apart (one L2 DTLB set of 24 ways) on consecutive frames: every sweep
    # walks; consecutive virtual pages on frames 128 apart: only the first sweep does.
    one_set = PagedCpu()
    for i in range(100):
        one_set.map(0x40000000 + i * 0x80000, 0x200000 + i * 0x1000)
    spread = PagedCpu()
    for i in range(100):
        spread.map(0x40000000 + i * 0x1000, 0x200000 + i * 0x80000)
    walks_one = one_set.run(SWEEP.format(stride=0x80000)).breakdown()
    walks_spread = spread.run(SWEEP.format(stride=0x1000)).breakdown()
    assert walks_one["dtlb_misses"] == walks_spread["dtlb_misses"] == 300
    assert walks_one["page_walks"] == 300 and walks_spread["page_walks"] == 100


@pytest.mark.unit
@pytest.mark.parametrize("write_cr3", [True, False])
def test_a_cr3_write_starts_a_new_address_space(write_cr3):
    cpu = PagedCpu()
    for i in range(10):
        cpu.map(0x40000000 + i * 0x1000, 0x200000 + i * 0x1000)
    touch = "mov rsi, 0x40000000; mov rdx, 10; {0}: mov rax, qword ptr [rsi]; add rsi, 0x1000; dec rdx; jnz {0};"
    acc = cpu.run(touch.format("A") + f"mov rax, cr3; {'mov cr3, rax' if write_cr3 else 'mov rbx, rax'}; jmp M; M: " +
                  touch.format("B") + "hlt")
    assert acc.breakdown()["dtlb_misses"] == (20 if write_cr3 else 10)


@pytest.mark.unit
def test_code_rewritten_through_another_virtual_alias_is_decoded_again():
    # The code runs at virtual 0x40000000 (frame 0x300000) and rewrites B through 0x50000000,
    # another mapping of the same frame: B's block is forgotten (the line index is physical).
    ks = Ks(KS_ARCH_X86, KS_MODE_64)
    new = int.from_bytes(bytes(ks.asm("nop;" * 6 + "ret", 0)[0]), "little")
    src = "call B; mov rdx, {alias}; mov rbx, 0x%x; mov qword ptr [rdx], rbx; call B; hlt; B: inc rax; inc rax; ret" % new
    b = 0x40000000 + len(bytes(ks.asm(src.format(alias=0x50000000), 0x40000000)[0])) - 7
    cpu = PagedCpu()
    cpu.map(0x40000000, 0x300000)
    cpu.map(0x50000000, 0x300000)
    acc = cpu.run(src.format(alias=b - 0x40000000 + 0x50000000), at=0x40000000, frame=0x300000)
    assert cpu.uc.reg_read(x.UC_X86_REG_RAX) == 2
    assert acc.instructions == 1 + 3 + 3 + 1 + 7 + 1
