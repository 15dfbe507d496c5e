"""The interrupt-context deadlock, described: an interrupt handler running with interrupts off
spins on a word that only the code it interrupted can release (native/delivery.c finds the spin
from the guest's behaviour: the same block, every register unchanged, over and over).

The report names the word (the memory the spinning block reads), the spinner (the handler, where
it spins) and the holder (the interrupted code), each with a frame-pointer backtrace."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from capstone import CS_AC_READ, CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from capstone.x86 import X86_OP_MEM, X86_REG_RIP
from unicorn import Uc

from emulator.errors import GuestMemoryError
from emulator.guestmem.paging import ReadPhys
from emulator.guestmem.virtual import VirtualMemory
from emulator.image.symbols import SymbolTable
from emulator.machine import cpu
from emulator.machine.faults import frame_backtrace, vector_name

BLOCK_BYTES = 64  # enough for any spin loop's block


@dataclass(frozen=True)
class DeadlockReport:
    summary: str
    vector: int  # the interrupt whose handler spins
    lock: int | None  # the word it spins on (None: the block reads no memory we could name)
    lock_name: str | None
    spinner_backtrace: list[str]
    holder_backtrace: list[str]

    def to_json(self) -> dict:
        data = asdict(self)
        data["lock"] = None if self.lock is None else f"0x{self.lock:x}"
        data["vector"] = f"0x{self.vector:02x}"
        return data

    def render(self) -> str:
        lines = [f"deadlock: {self.summary}", "  spinning (the handler):"]
        lines += [f"    {frame}" for frame in self.spinner_backtrace]
        lines += ["  holding it (the interrupted code):"] + [f"    {frame}" for frame in self.holder_backtrace]
        return "\n".join(lines)


def describe_deadlock(uc: Uc, read_phys: ReadPhys, symbols: SymbolTable, vector: int, spin_pc: int,
                      holder: tuple[int, int]) -> DeadlockReport:
    """`holder`: the interrupted code's RIP and RBP, as the handler was entered."""
    vm = VirtualMemory(read_phys, cpu.paging_root(uc))
    regs = cpu.snapshot_64(uc)
    bits = cpu.code_bits(uc, vm.read)  # the spinning code's width: a 32-bit guest's too
    lock = _word_read(vm, spin_pc, regs, bits)
    lock_name = symbols.describe(lock) if lock is not None else None
    what = f"the word at 0x{lock:x} ({lock_name})" if lock is not None else "memory"
    summary = (f"the handler of {vector_name(vector)} spins at {symbols.describe(spin_pc)} with interrupts off, "
               f"waiting on {what}, which only the code it interrupted, at {symbols.describe(holder[0])}, can release")
    word = 8 if bits == 64 else 4
    return DeadlockReport(summary, vector, lock, lock_name, frame_backtrace(vm, symbols, spin_pc, regs["rbp"], word),
                          frame_backtrace(vm, symbols, holder[0], holder[1], word))


def _word_read(vm: VirtualMemory, pc: int, regs: dict[str, int], bits: int) -> int | None:
    """The first memory operand the block at `pc` reads, at its address for these registers."""
    try:
        code = vm.read(pc, BLOCK_BYTES)
    except GuestMemoryError:
        return None
    cs = Cs(CS_ARCH_X86, {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}[bits])
    cs.detail = True
    for insn in cs.disasm(code, pc):
        for op in insn.operands:
            if op.type == X86_OP_MEM and op.access & CS_AC_READ:
                mem = op.mem
                base = insn.address + insn.size if mem.base == X86_REG_RIP else _reg(insn, mem.base, regs)
                index = _reg(insn, mem.index, regs) * mem.scale if mem.index else 0
                return (base + index + mem.disp) & ((1 << (64 if bits == 64 else 32)) - 1)
        if insn.group(1) or insn.group(7):  # a jump or a relative branch ends the block
            break
    return None


def _reg(insn, reg: int, regs: dict[str, int]) -> int:
    if not reg:
        return 0
    name = insn.reg_name(reg)
    if name not in regs and name.startswith("e") and "r" + name[1:] in regs:
        return regs["r" + name[1:]] & 0xFFFF_FFFF  # a 32-bit guest's eax is rax's low half
    return regs.get(name, 0)
