"""The Python block decoder the cycle model used before decoding moved into native code
(emulator/cycles/native/cyclemodel.c), kept as the reference that tests/test_native_decode.py
compares the native decoder with, block by block: the same classes, costs, counts and flags.

`ReferenceDecoder(uc, params).block(address, size)` decodes a block as CycleAccounting did when
the block hook met it: the CPU's code width (CR0, EFER, the CS descriptor), the block's shape
when a 16- or 32-bit guess cannot be it, capstone with details, classify() and
BlockCoster.cost(). `CheckedAccounting` runs it next to the native decoder on every new block.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs, CsError
from capstone import x86_const as cx
from unicorn import UC_HOOK_BLOCK, UC_PROT_EXEC, Uc
from unicorn.unicorn_py3.unicorn import uclib

from emulator.cycles.accounting import CycleAccounting
from emulator.cycles.native import TABLE_STATS
from emulator.cycles.params import CycleParams, millicycles
from emulator.errors import CycleModelError
from emulator.machine import cpu

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



@dataclass(frozen=True)
class InsnFacts:
    """What the model needs of one instruction encoding (independent of its address)."""
    d: Decoded
    pools: tuple[tuple[str, float], ...]  # (resource pool, cycles of it this instruction takes)
    latency: float
    reads: frozenset[str]
    writes: frozenset[str]
    rel_target: int  # direct branch target minus the instruction's address
    fuses_with_jcc: bool  # a following conditional jump joins it in one macro-op


_MEMORY_POOLS = ("load", "store", "serial", "none")


class BlockCoster:
    """Turns a decoded block into per-instruction millicycle costs (see the module docstring).
    Instruction encodings repeat a lot, so each is analysed once (per CPU mode)."""

    def __init__(self, params: CycleParams) -> None:
        self.p = params
        missing = {"other", "alu", "mov", "load", "store", "branch"} - params.classes.keys()
        if missing:
            raise CycleModelError(f"cycle model parameters lack instruction classes {sorted(missing)}")
        self._facts: dict[tuple[int, bytes], InsnFacts] = {}

    def facts(self, cs: Cs, bits: int, raw: bytes, address: int) -> InsnFacts | None:
        key = (bits, raw)
        f = self._facts.get(key)
        if f is None:
            insn = next(cs.disasm(raw, address), None)
            if insn is None:
                return None
            f = self._facts[key] = self._analyse(insn)
        return f

    def _analyse(self, insn) -> InsnFacts:
        classes = self.p.classes
        d = classify(insn)
        c = classes.get(d.cls, classes["other"])
        pools: dict[str, float] = {c.pool: c.throughput}
        writes_mem = d.writes_mem or d.cls == "call"  # a call pushes its return address
        if c.pool not in _MEMORY_POOLS:  # a memory operand adds its load and/or store
            if d.reads_mem:
                pools["load"] = pools.get("load", 0.0) + classes["load"].throughput
            if writes_mem:
                pools["store"] = pools.get("store", 0.0) + classes["store"].throughput
        if c.pool == "branch":  # branch units are ALU pipes
            pools["alu"] = pools.get("alu", 0.0) + classes["alu"].throughput
        if d.reads_mem or writes_mem or d.cls == "push":
            pools["agu"] = 1 / 3
        try:
            r, w = insn.regs_access()
            reads, writes = canonical_registers(insn, r), canonical_registers(insn, w)
        except CsError:
            reads, writes = set(), set()
        if d.cls in ("push", "pop", "call", "ret"):
            reads.discard("rsp")
            writes.discard("rsp")  # the stack engine tracks rsp without a dependency
        ops = insn.operands
        if insn.mnemonic in ("xor", "sub", "pxor", "xorps", "vpxor") and len(ops) == 2 and \
                all(o.type == cx.X86_OP_REG for o in ops) and ops[0].reg == ops[1].reg:
            reads = set()  # zero idiom: no input dependency
        lat = c.latency + (self.p.l1_latency if d.reads_mem and d.cls not in MEASURED_WHOLE else 0.0)
        fuses = insn.mnemonic in self.p.fusion_first and d.cls == "alu"
        return InsnFacts(d, tuple(pools.items()), lat, frozenset(reads), frozenset(writes),
                      d.target - insn.address if d.target else 0, fuses)

    def cost(self, facts: list[InsnFacts]) -> tuple[list[int], int, bool, bool, int, int, int]:
        """(costs, kind, rep_last, first_rep, rep_iteration mc, relative target, front-end mc)."""
        # reg -> {register at block entry: longest latency path from it to reg's current value}
        deps: dict[str, dict[str, float]] = {}
        for f in facts:
            paths: dict[str, float] = {}
            for r in f.reads:
                for src, length in deps.get(r, {r: 0.0}).items():
                    if length > paths.get(src, -1.0):
                        paths[src] = length
            paths = {src: length + f.latency for src, length in paths.items()}
            for r in f.writes:
                deps[r] = paths
        # The loop-carried bound: a value that depends on its own value at block entry cannot
        # be ready sooner than that path's latency after the previous execution's.
        chain = max((paths.get(r, 0.0) for r, paths in deps.items()), default=0.0)
        # Resource pools: each instruction's cycles in each; a Jcc fused into the ALU op
        # before it is no macro-op of its own.
        totals: dict[str, float] = {}
        weights, macro_ops = [], 0
        for i, f in enumerate(facts):
            fused = f.d.kind == K_COND and i > 0 and facts[i - 1].fuses_with_jcc
            own = [(pool, t) for pool, t in f.pools if not (fused and pool == "alu")]
            if not fused:
                own.append(("dispatch", 1 / self.p.dispatch_width))
                macro_ops += 1
            for pool, t in own:
                if pool != "none":
                    totals[pool] = totals.get(pool, 0.0) + t
            weights.append(millicycles(sum(t for _, t in own)))
        busiest = max(totals.values(), default=0.0)
        total_mc, sum_w = millicycles(max(busiest, chain)), sum(weights)
        costs, acc = [], 0
        for i, w in enumerate(weights):  # each instruction's share, in proportion to its weight
            share = total_mc - acc if i == len(weights) - 1 else \
                (total_mc * w // sum_w if sum_w else total_mc // len(weights))
            costs.append(share)
            acc += share
        last = facts[-1].d
        rep_mc = 0
        if last.rep is not None:
            rate = self.p.rep_iteration.get(last.rep, 1.0)
            rep_mc = millicycles(rate * last.rep_bytes if last.rep in ("movs", "stos") else rate)
        fe_mc = millicycles(macro_ops / self.p.op_cache_width)
        return costs, last.kind, last.rep is not None, facts[0].d.rep is not None, rep_mc, facts[-1].rel_target, fe_mc



# -- the decode path of CycleAccounting._decode --------------------------------------------------

_ENDS_BLOCK = ("j", "call", "ret", "iret", "loop", "int", "hlt", "syscall", "sysret", "ljmp", "lcall")
_VMEM_READ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p,
                              ctypes.c_size_t)(("uc_vmem_read", uclib))


def _tiles_block(insns: list, size: int) -> bool:
    """(address, size, mnemonic, op_str) tuples: whole instructions, a control transfer only last."""
    if not insns or sum(i[1] for i in insns) != size:
        return False
    return not any(i[2].startswith(_ENDS_BLOCK) for i in insns[:-1])


def _read(uc: Uc, address: int, size: int, prot: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    if size and _VMEM_READ(uc._uch, address, prot, buf, size) == 0:
        return buf.raw
    return bytes(uc.mem_read(address, size))


@dataclass(frozen=True)
class ReferenceBlock:
    """What the native decoder's DecodedBlock holds (without `live`)."""
    bits: int
    offsets: tuple[int, ...]
    costs: tuple[int, ...]
    kind: int
    rep_last: bool
    first_rep: bool
    rep_iteration_mc: int
    frontend_mc: int


class ReferenceDecoder:
    """Decodes blocks of one Unicorn instance as the Python path did."""

    def __init__(self, uc: Uc, params: CycleParams) -> None:
        self.uc, self.params = uc, params
        self.mode = cpu.instance_bits(uc)
        self.coster = BlockCoster(params)
        self.cs = {bits: Cs(CS_ARCH_X86, m) for bits, m in ((16, CS_MODE_16), (32, CS_MODE_32), (64, CS_MODE_64))}
        for handle in self.cs.values():
            handle.detail = True

    def block(self, address: int, size: int) -> ReferenceBlock:
        uc = self.uc
        code = _read(uc, address, size, UC_PROT_EXEC)
        bits = cpu.code_bits(uc, lambda a, n: _read(uc, a, n, 1))
        if bits in (16, 32) and self.mode != 64 and size:
            if not _tiles_block(list(self.cs[bits].disasm_lite(code, address)), size):
                if _tiles_block(list(self.cs[48 - bits].disasm_lite(code, address)), size):
                    bits = 48 - bits
        cs = self.cs[bits]
        facts, offs = [], []
        for at, length, _, _ in cs.disasm_lite(code, address):
            f = self.coster.facts(cs, bits, code[at - address:at - address + length], at)
            if f is None:
                break
            facts.append(f)
            offs.append(at - address)
        if not size:
            offs, costs, kind, rep_last, first_rep, rep_mc, fe = [], [], K_NONE, False, False, 0, 0
        elif not facts:  # bytes capstone cannot decode: one instruction of class `other`
            offs, costs = [0], [millicycles(self.params.classes["other"].throughput)]
            kind, rep_last, first_rep, rep_mc, fe = K_NONE, False, False, 0, 0
        else:
            costs, kind, rep_last, first_rep, rep_mc, _, fe = self.coster.cost(facts)
        return ReferenceBlock(bits, tuple(offs), tuple(c % 2**32 for c in costs), kind, bool(rep_last),
                              bool(first_rep), rep_mc % 2**64, fe % 2**64)


# -- comparing the native decoder with the reference, block by block ------------------------------


class CheckedAccounting(CycleAccounting):
    """CycleAccounting that decodes every block the native model decodes with the reference too,
    at the same moment (a Python block hook after the native one, so the CPU state is the one the
    native decoder saw), and keeps what differed. `made` lists every instance, for tests that
    put this class in the machine's place."""

    made: list[CheckedAccounting] = []

    def attach(self, memory: bool = True) -> None:
        super().attach(memory)
        CheckedAccounting.made.append(self)
        self.reference = ReferenceDecoder(self._uc, self.params)
        self.compared = 0
        self.mismatches: list[tuple] = []
        self.widths: set[int] = set()
        self._decoded = 0
        stats = (ctypes.c_uint64 * len(TABLE_STATS))()
        decodes = TABLE_STATS.index("decodes")

        def compare(uc, address, size, _):
            self._lib.cm_table_stats(self._state, stats)
            if stats[decodes] == self._decoded:
                return  # no block decoded since the last one: nothing new to compare
            self._decoded = stats[decodes]
            native, want = self.block(address, size), self.reference.block(address, size)
            got = None if native is None else ReferenceBlock(
                native.bits, native.offsets, native.costs, native.kind, native.rep_last, native.first_rep,
                native.rep_iteration_mc, native.frontend_mc)
            self.compared += 1
            self.widths.add(want.bits)
            if got != want:
                self.mismatches.append((address, size, got, want))

        self._uc.hook_add(UC_HOOK_BLOCK, compare)

    def classes(self) -> set[str]:
        """The instruction classes of every instruction the reference decoded."""
        return {f.d.cls for f in self.reference.coster._facts.values()}
