"""The capstone round trip: every assembled instruction must decode to what its line asked for.

keystone 0.9.2 mis-assembles some instructions without complaint: a spurious
operand-size prefix on 32-bit `ljmp`/`lgdt`, an absolute memory operand turned RIP-relative
in 64-bit code, and wrong relative targets through its symbol resolver. Comparing the decoded
instruction with the parsed source line catches all of them, naming the line.
"""

from __future__ import annotations

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_OP_REG

from .operands import Far, Imm, Instruction, Mem, Reg

_MODES = {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}
_DISASSEMBLERS: dict[int, Cs] = {}

# Source spelling -> capstone spelling, for mnemonics with more than one name.
ALIASES = {
    "jz": "je", "jnz": "jne", "jc": "jb", "jnae": "jb", "jnc": "jae", "jnb": "jae", "jna": "jbe", "jnbe": "ja",
    "jnge": "jl", "jnl": "jge", "jng": "jle", "jnle": "jg", "jpe": "jp", "jpo": "jnp",
    "setz": "sete", "setnz": "setne", "setc": "setb", "setnc": "setae", "setnae": "setb", "setnb": "setae",
    "setna": "setbe", "setnbe": "seta", "setnge": "setl", "setnl": "setge", "setng": "setle", "setnle": "setg",
    "cmovz": "cmove", "cmovnz": "cmovne", "cmovc": "cmovb", "cmovnc": "cmovae", "cmovnae": "cmovb",
    "cmovnb": "cmovae", "cmovna": "cmovbe", "cmovnbe": "cmova", "cmovnge": "cmovl", "cmovnl": "cmovge",
    "cmovng": "cmovle", "cmovnle": "cmovg", "sal": "shl", "retq": "ret", "movabs": "mov", "repz": "repe",
    "repnz": "repne", "xlatb": "xlatb", "ljmp": "ljmp", "iretq": "iretq",
}
BRANCHES = {"jmp", "call", "loop", "loope", "loopne", "jrcxz", "jecxz", "jcxz"} | {
    m for m in ALIASES.values() if m.startswith("j")} | {"ja", "jae", "jb", "jbe", "je", "jne", "jg", "jge", "jl",
                                                         "jle", "jo", "jno", "js", "jns", "jp", "jnp"}
COMMUTATIVE = {"xchg", "test"}
SIXTEEN_BIT_REGS = {"ax", "bx", "cx", "dx", "si", "di", "bp", "sp", "cs", "ds", "es", "fs", "gs", "ss"} | {
    f"r{i}w" for i in range(8, 16)}


def _cs(mode: int) -> Cs:
    if mode not in _DISASSEMBLERS:
        cs = Cs(CS_ARCH_X86, _MODES[mode])
        cs.detail = True
        _DISASSEMBLERS[mode] = cs
    return _DISASSEMBLERS[mode]


def canonical(mnemonic: str) -> str:
    """A mnemonic (with prefixes) as capstone spells it: `jz` -> `je`."""
    return " ".join(ALIASES.get(word, word) for word in mnemonic.split())


def verify(insn: Instruction, code: bytes, address: int, mode: int) -> None:
    """Raise AssemblyError (naming the source line) unless `code` is exactly `insn`."""
    where = insn.where
    decoded = list(_cs(mode).disasm(code, address))
    if len(decoded) != 1 or decoded[0].size != len(code):
        shown = "; ".join(f"{d.mnemonic} {d.op_str}" for d in decoded) or "nothing"
        raise where.error(f"keystone emitted {code.hex()} for {insn.render(address)!r}, which decodes as {shown}")
    d = decoded[0]
    got = f"{d.mnemonic} {d.op_str}".strip()
    if canonical(d.mnemonic) != canonical(insn.mnemonic) and not _equivalent_mnemonic(insn, d):
        raise where.error(f"asked for {insn.mnemonic!r}, keystone's bytes {code.hex()} decode as {got!r}")
    _check_prefixes(insn, d, mode, code, got)
    if not insn.operands:
        return  # nothing asked for: implicit operands (rep stosb's [rdi], al) are the mnemonic's
    ops = list(d.operands)
    if isinstance(insn.operands[0], Far):
        far = insn.operands[0]
        imms = [op.imm for op in ops if op.type == X86_OP_IMM]
        if imms != [far.selector, far.offset]:
            raise where.error(f"far pointer {far.selector:#x}:{far.offset:#x} decodes as {got!r} ({code.hex()})")
        return
    if len(ops) != len(insn.operands):
        raise where.error(f"asked for {len(insn.operands)} operands, {got!r} has {len(ops)} ({code.hex()})")
    pairs = list(zip(insn.operands, ops))
    if not all(_same(src, op, d, mode) for src, op in pairs):
        if not (d.mnemonic in COMMUTATIVE and len(ops) == 2 and
                _same(insn.operands[0], ops[1], d, mode) and _same(insn.operands[1], ops[0], d, mode)):
            raise where.error(_explain(insn, d, code, got, mode))


def _equivalent_mnemonic(insn: Instruction, d) -> bool:
    # keystone spells some forms differently from capstone without changing the instruction.
    pairs = {("movsxd", "movsxd"), ("movsx", "movsxd"), ("shl", "sal")}
    return (insn.mnemonic, d.mnemonic) in pairs


def _check_prefixes(insn: Instruction, d, mode: int, code: bytes, got: str) -> None:
    if 0x66 not in d.prefix:
        return
    wants_16 = any((isinstance(op, Reg) and op.name in SIXTEEN_BIT_REGS) or (isinstance(op, Mem) and op.size == 2)
                   for op in insn.operands)
    wants_32 = any(isinstance(op, Reg) and (op.name.startswith("e") or op.name.startswith("cr")) for op in insn.operands)
    uses_sse = any(isinstance(op, Reg) and op.name.startswith(("xmm", "ymm")) for op in insn.operands)
    if uses_sse or (mode == 16 and canonical(d.mnemonic) in BRANCHES):
        return  # SSE: 0x66 is part of the opcode; a 16-bit rel32 branch: its target is checked below
    if mode in (32, 64) and not wants_16:
        raise insn.where.error(f"keystone added an operand-size prefix (0x66) to {insn.mnemonic!r}: {code.hex()} "
                               f"decodes as {got!r} with 16-bit operands; write the bytes by hand (.byte)")
    if mode == 16 and not wants_32 and not any(isinstance(op, Mem) and op.size in (4, 8) for op in insn.operands):
        raise insn.where.error(f"keystone added an operand-size prefix (0x66) to {insn.mnemonic!r} in 16-bit code: "
                               f"{code.hex()} decodes as {got!r}; write the bytes by hand (.byte)")


def _mask(mode: int) -> int:
    return (1 << (16 if mode == 16 else 32 if mode == 32 else 64)) - 1


def _same(src, op, d, mode: int) -> bool:
    if isinstance(src, Reg):
        return op.type == X86_OP_REG and d.reg_name(op.reg) == src.name
    if isinstance(src, Imm):
        if op.type != X86_OP_IMM:
            return False
        if canonical(d.mnemonic) in BRANCHES:
            return (op.imm - src.value) & _mask(mode) == 0
        bits = 8 * (op.size or 8)
        return (op.imm - src.value) % (1 << bits) == 0 or (op.imm - src.value) % (1 << 64) == 0
    if isinstance(src, Mem):
        if op.type != X86_OP_MEM:
            return False
        m = op.mem
        base = d.reg_name(m.base) if m.base else None
        index = d.reg_name(m.index) if m.index else None
        segment = d.reg_name(m.segment) if m.segment else None
        if src.size is not None and op.size != src.size:
            return False
        if (src.segment or None) != segment:
            return False
        if src.base == "rip" or base == "rip":
            return base == src.base == "rip" and (d.address + d.size + m.disp) & _mask(mode) == src.disp & _mask(mode)
        if (base, index) != (src.base, src.index):
            return False
        if index is not None and m.scale != src.scale:
            return False
        return (m.disp - src.disp) & _mask(mode) == 0
    return False


def _explain(insn: Instruction, d, code: bytes, got: str, mode: int) -> str:
    for src, op in zip(insn.operands, d.operands):
        if isinstance(src, Mem) and op.type == X86_OP_MEM and src.base is None and src.index is None \
                and op.mem.base and d.reg_name(op.mem.base) == "rip":
            return (f"the absolute memory operand [{src.disp:#x}] was assembled RIP-relative by keystone "
                    f"({got!r}, {code.hex()}); load the address into a register and use [reg]")
    return f"asked for {insn.render(d.address)!r}, keystone's bytes {code.hex()} decode as {got!r}"
