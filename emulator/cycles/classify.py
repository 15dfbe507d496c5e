"""Instruction classification: what the model needs to know of one decoded x86 instruction."""

from __future__ import annotations

from dataclasses import dataclass

from capstone import x86_const as cx

K_NONE, K_COND, K_JMP, K_JMP_IND, K_CALL, K_CALL_IND, K_RET = range(7)


_GPR = {}
for _full, _names in {
    "rax": "eax ax al ah", "rbx": "ebx bx bl bh", "rcx": "ecx cx cl ch", "rdx": "edx dx dl dh",
    "rsi": "esi si sil", "rdi": "edi di dil", "rbp": "ebp bp bpl", "rsp": "esp sp spl",
    "rflags": "eflags flags",
}.items():
    for _n in [_full, *_names.split()]:
        _GPR[_n] = _full
for _k in range(8, 16):
    for _suffix in ("", "d", "w", "b"):
        _GPR[f"r{_k}{_suffix}"] = f"r{_k}"

_STRING = ("movs", "stos", "lods", "cmps", "scas")
_SYSTEM = {"lgdt", "lidt", "lldt", "ltr", "sgdt", "sidt", "wrmsr", "rdmsr", "invlpg", "cli", "sti", "hlt",
           "iret", "iretd", "iretq", "ljmp", "lcall", "retf", "retfq", "int", "int3", "into", "int1", "syscall",
           "sysret", "sysretq", "swapgs", "wbinvd", "invd", "clts", "lmsw", "sysenter", "sysexit", "xsetbv",
           "xgetbv", "rsm", "ud2", "pushf", "popf", "pushfd", "popfd", "pushfq", "popfq"}
_SEGMENT = {"cs", "ds", "es", "fs", "gs", "ss"}
MEASURED_WHOLE = {"lock_rmw", "lock_cmpxchg", "xchg_mem"}  # the measured host figures (docs/cycle-model.md) include the memory access
_SHIFTS = {"shl", "shr", "sar", "sal", "rol", "ror", "rcl", "rcr", "shld", "shrd", "shlx", "shrx", "sarx",
           "rorx"}


@dataclass
class Decoded:
    cls: str
    kind: int = K_NONE
    target: int = 0
    rep: str | None = None   # string kind of a rep-prefixed string instruction
    rep_bytes: int = 1
    reads_mem: bool = False
    writes_mem: bool = False


def classify(insn) -> Decoded:
    words = insn.mnemonic.split()
    m = words[-1]
    prefixes = set(insn.prefix)
    ops = insn.operands
    mem_ops = [o for o in ops if o.type == cx.X86_OP_MEM]
    touches_mem = bool(mem_ops) and m not in ("lea", "nop") and not m.startswith("prefetch")
    reads_mem = touches_mem and (any(o.access & 1 for o in mem_ops) or m.startswith(("pop", "ret")))
    writes_mem = touches_mem and any(o.access & 2 for o in mem_ops)
    reg_names = {insn.reg_name(o.reg) for o in ops if o.type == cx.X86_OP_REG}
    groups = set(insn.groups)
    d = Decoded("other", reads_mem=reads_mem or m.startswith(("pop", "ret")), writes_mem=writes_mem)

    if cx.X86_GRP_JUMP in groups and m != "ljmp":
        imm = ops and ops[0].type == cx.X86_OP_IMM
        d.cls = "branch"
        d.kind = (K_JMP if imm else K_JMP_IND) if m == "jmp" else K_COND
        d.target = ops[0].imm if imm else 0
        return d
    if cx.X86_GRP_CALL in groups and m == "call":
        imm = ops and ops[0].type == cx.X86_OP_IMM
        d.cls, d.kind, d.target = "call", K_CALL if imm else K_CALL_IND, ops[0].imm if imm else 0
        return d
    if m == "ret":
        d.cls, d.kind = "ret", K_RET
        return d
    if 0xF0 in prefixes:
        d.cls = "lock_cmpxchg" if m.startswith("cmpxchg") else "lock_rmw"
    elif m == "xchg" and mem_ops:
        d.cls = "xchg_mem"
    elif m in ("mfence", "lfence", "sfence", "cpuid", "pause"):
        d.cls = m
    elif m in ("rdtsc", "rdtscp"):
        d.cls = "rdtsc"
    elif m.startswith(_STRING) and not (reg_names & {"xmm0"}) and m[:4] in _STRING and len(m) == 5:
        if prefixes & {0xF2, 0xF3}:
            d.cls, d.rep = "rep_string", m[:4]
            d.rep_bytes = {"b": 1, "w": 2, "d": 4, "q": 8}.get(m[4], 1)
        else:
            d.cls = "string"
    elif m in ("in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd"):
        d.cls = "io"
    elif m in _SYSTEM or any(r.startswith(("cr", "dr")) for r in reg_names) or \
            (m == "mov" and ops and ops[0].type == cx.X86_OP_REG and insn.reg_name(ops[0].reg) in _SEGMENT):
        d.cls = "system"
    elif m.startswith("push"):
        d.cls = "push"
    elif m.startswith("pop"):
        d.cls = "pop"
    elif m in ("div", "idiv"):
        d.cls = "div"
    elif m in ("mul", "imul", "mulx"):
        d.cls = "imul"
    elif m in ("nop", "endbr64", "endbr32") or m.startswith("prefetch"):
        d.cls = "nop"
    elif cx.X86_GRP_FPU in groups:
        d.cls = "x87"
    elif any(r.startswith(("xmm", "ymm", "zmm", "mm")) for r in reg_names):
        d.cls = "simd"
    elif m in ("mov", "movabs", "movzx", "movsx", "movsxd"):
        d.cls = "load" if reads_mem else "store" if writes_mem else "mov"
    elif m == "lea":
        d.cls = "lea"
    elif m in _SHIFTS:
        d.cls = "shift"
    else:
        d.cls = "alu"
    return d

def canonical_registers(insn, regs) -> set[str]:
    out = set()
    for r in regs:
        name = insn.reg_name(r)
        if name in ("rip", "eip", "ip"):
            continue
        out.add(_GPR.get(name, name))
    return out

