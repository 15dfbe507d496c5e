"""Fault reports: what went wrong in the guest, where, and how it got there.

Unicorn delivers exceptions to the host, not to the guest's IDT, and does not say a page
fault's error code; the report recovers the access kind from the faulting instruction and
the missing level or permission from the guest's own page tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from capstone import CS_AC_WRITE, CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from capstone.x86 import X86_OP_MEM
from unicorn import UC_MEM_FETCH_PROT, UC_MEM_FETCH_UNMAPPED, UC_MEM_WRITE_PROT, UC_MEM_WRITE_UNMAPPED, Uc

from emulator.errors import GuestMemoryError
from emulator.guestmem.pagefault import describe_page_fault
from emulator.guestmem.paging import ReadPhys
from emulator.guestmem.virtual import VirtualMemory
from emulator.image.symbols import SymbolTable
from emulator.layout import HEAP_GUARD_ABOVE, HEAP_GUARD_BELOW, NULL_PAGE_END, PAGE_SIZE
from emulator.machine import cpu

EXCEPTIONS = {
    0: ("#DE", "divide error"), 1: ("#DB", "debug exception"), 2: ("NMI", "non-maskable interrupt"),
    3: ("#BP", "breakpoint"), 4: ("#OF", "overflow"), 5: ("#BR", "bound range exceeded"),
    6: ("#UD", "invalid opcode"), 7: ("#NM", "device not available"), 8: ("#DF", "double fault"),
    10: ("#TS", "invalid TSS"), 11: ("#NP", "segment not present"), 12: ("#SS", "stack-segment fault"),
    13: ("#GP", "general protection fault"), 14: ("#PF", "page fault"), 16: ("#MF", "x87 floating-point error"),
    17: ("#AC", "alignment check"), 18: ("#MC", "machine check"), 19: ("#XM", "SIMD floating-point exception"),
    20: ("#VE", "virtualization exception"), 21: ("#CP", "control protection exception"),
}
BACKTRACE_DEPTH = 32


def vector_name(vector: int) -> str:
    """`page fault (#PF)` for an exception, `interrupt 0x20` for any other vector."""
    if vector in EXCEPTIONS:
        short, long = EXCEPTIONS[vector]
        return f"{long} ({short})"
    return f"interrupt 0x{vector:x}"


def exception_name(vector: int) -> str:
    """The vector as a fault report names it: one outside the exceptions had no handler."""
    return vector_name(vector) if vector in EXCEPTIONS else f"{vector_name(vector)} with no handler"


@dataclass(frozen=True)
class FaultReport:
    exception: str
    vector: int | None
    summary: str
    rip: int
    location: str
    instruction: str
    registers: dict[str, int]
    backtrace: list[str] = field(default_factory=list)
    cr2: int | None = None
    page_walk: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["rip"] = f"0x{self.rip:x}"
        data["registers"] = {k: f"0x{v:x}" for k, v in self.registers.items()}
        if self.cr2 is not None:
            data["cr2"] = f"0x{self.cr2:x}"
        return data

    def render(self) -> str:
        lines = [f"guest fault: {self.summary}", f"  at {self.location} (0x{self.rip:x}): {self.instruction}"]
        if self.cr2 is not None:
            lines.append(f"  cr2 0x{self.cr2:x}")
        if self.page_walk:
            lines.append(f"  page walk: {self.page_walk}")
        regs = list(self.registers.items())
        for i in range(0, len(regs), 4):
            lines.append("  " + "  ".join(f"{k:>6} {v:#018x}" for k, v in regs[i : i + 4]))
        if self.backtrace:
            lines.append("  backtrace:")
            lines.extend(f"    #{i} {frame}" for i, frame in enumerate(self.backtrace))
        return "\n".join(lines)


_CS_MODES = {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}


def build_fault_report(
    uc: Uc, read_phys: ReadPhys, symbols: SymbolTable, vector: int | None, detail: str,
    access: int | None = None, address: int | None = None, at: int | None = None, cause: str | None = None,
    cr2: int | None = None,
) -> FaultReport:
    """The report of a fault from the CPU's state, guest physical memory and the image's symbols.
    `at`: the instruction that trapped, when RIP is already past it; `cause`: why the CPU raised it;
    `cr2`: the page fault's address, when later faults (a failed delivery) have changed CR2 since."""
    bits = cpu.instance_bits(uc)
    regs = cpu.snapshot_64(uc) if bits == 64 else cpu.snapshot_16(uc)
    rip = cpu.linear_pc(uc) if at is None else at
    vm = VirtualMemory(read_phys, cpu.paging_root(uc))
    cs = Cs(CS_ARCH_X86, _CS_MODES[cpu.code_bits(uc, vm.read)])
    cs.detail = True
    insn = None
    try:
        insn = next(cs.disasm(vm.read(rip, 15), rip), None)
    except GuestMemoryError:
        pass
    text = f"{insn.mnemonic} {insn.op_str}".strip() if insn else "(instruction not readable)"
    name = exception_name(vector) if vector is not None else detail
    walk = None
    if vector == 14:
        cr2 = regs["cr2"] if cr2 is None else cr2
        kind = _access_kind(insn, rip, cr2)
        walk = describe_page_fault(read_phys, regs["cr3"], cr2, kind)
        summary = f"page fault (#PF) on {kind} of 0x{cr2:x}{_region_name(cr2)}: {walk}"
    elif access in (UC_MEM_WRITE_PROT, UC_MEM_WRITE_UNMAPPED, UC_MEM_FETCH_PROT, UC_MEM_FETCH_UNMAPPED) or address is not None:
        summary = detail
    else:
        summary = name if vector is not None else detail
    if vector != 14:
        cr2 = None
    if cause:
        summary = f"{summary}: {cause}"
    return FaultReport(
        exception=EXCEPTIONS.get(vector, ("", ""))[0] if vector is not None else "machine",
        vector=vector,
        summary=summary,
        rip=rip,
        location=symbols.describe(rip),
        instruction=text,
        registers=regs,
        backtrace=frame_backtrace(vm, symbols, rip, regs.get("rbp", regs.get("ebp", 0)), 8 if bits == 64 else 4),
        cr2=cr2,
        page_walk=walk,
    )


def _region_name(address: int) -> str:
    """Names for the unmapped pages of the fixed layout, so a report says what was hit."""
    if address < NULL_PAGE_END:
        return " (the null page)"
    if HEAP_GUARD_BELOW <= address < HEAP_GUARD_BELOW + PAGE_SIZE:
        return " (the heap guard page below the heap)"
    if HEAP_GUARD_ABOVE <= address < HEAP_GUARD_ABOVE + PAGE_SIZE:
        return " (the heap guard page above the heap)"
    return ""


def _access_kind(insn, rip: int, cr2: int) -> str:
    if insn is None:
        # The instruction itself could not be read: an execute only if the fault is at RIP
        return "execute" if rip <= cr2 < rip + 15 else "access"
    if rip <= cr2 < rip + insn.size:
        return "execute"
    for op in insn.operands:
        if op.type == X86_OP_MEM and op.access & CS_AC_WRITE:
            return "write"
    if insn.mnemonic in ("push", "call") or insn.mnemonic.startswith(("stos", "movs")):
        return "write"
    return "read"


def frame_backtrace(vm, symbols, rip: int, rbp: int, word: int = 8) -> list[str]:
    """Walk saved frame pointers: [rbp] is the caller's rbp, [rbp+word] the return address."""
    frames = [f"{symbols.describe(rip)} (0x{rip:x})"]
    seen = set()
    for _ in range(BACKTRACE_DEPTH):
        if rbp == 0 or rbp in seen or rbp % word:
            break
        seen.add(rbp)
        try:
            saved = int.from_bytes(vm.read(rbp, word), "little")
            ret = int.from_bytes(vm.read(rbp + word, word), "little")
        except GuestMemoryError:
            break
        if ret == 0:
            break
        frames.append(f"{symbols.describe(ret)} (0x{ret:x})")
        if saved <= rbp:
            break  # frames grow towards higher addresses as we unwind
        rbp = saved
    return frames
