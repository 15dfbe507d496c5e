"""Exact retired-instruction counts and a deterministic AMD Zen 4 cycle model for a Unicorn CPU.

Hook design (why it looks like this): Unicorn has no instruction counter, and a Python hook per
block, instruction or memory access slows it 10–50× (DESIGN.md §6). So every per-block and
per-access callback is C (`emulator/native/cyclemodel.c`, built by `pip install` as
`emulator._cyclemodel` and loaded with ctypes), registered directly with libunicorn's
`uc_hook_add` from the same library the `unicorn` package loaded:

* `UC_HOOK_BLOCK` counts each executed block's instructions, adds its base cost, touches its
  code lines in the L1I, evaluates the branch that ended the *previous* block (gshare direction,
  BTB, return stack) against the address actually reached, and enforces the instruction budget.
* `UC_HOOK_MEM_READ|WRITE` feeds the L1D/L2/L3 caches and the L1/L2 DTLB (virtual pages) and
  notices writes into lines that hold decoded code (self-modifying code: those blocks are
  forgotten and decoded again when Unicorn re-translates them).
* `UC_HOOK_INSN` for `rdtsc`/`rdtscp` (the Python binding refuses these; the C API accepts them)
  makes guest time the model's cycle count.
* `UC_HOOK_INTR`, `UC_HOOK_INSN_INVALID` and the invalid-memory hooks only note that the current
  block stopped early (they never handle anything; the machine's hooks still decide).

Measured with `measure_mips()` on this host (best of 3, one run; 2 shared cores): load/add/
store loop — plain Unicorn 164–177 MIPS, empty native block+memory hooks 73–76, counting only
128–132, full accounting 65–66 (37–40 % of plain; Unicorn's memory-hook dispatch alone leaves
43–44 %); ALU loop — plain ≈2700, empty hooks ≈1680, counting ≈535, full ≈540 (20 %: without
hooks QEMU chains these six-instruction blocks; the block hook's own work is what costs here).

Python runs only when the block hook meets a block it has not seen (keyed by address and size):
it decodes the block with capstone, classifies each instruction, computes the block's cost and
hands it down (`cm_add_block`). Costs are millicycles internally; `cycles` is the integer part.

Counting rules: a block is counted when it starts; `finish(stop_pc)` takes back the
instructions from `stop_pc` on when execution stopped inside the last block (fault, `hlt`,
`emu_stop` from a hook). QEMU runs one iteration of a `rep` string instruction per execution of
a block that starts at it, so such re-executions count no instruction (a `rep` instruction
counts once, when its first iteration begins) and cost `rep_iteration`. With a budget,
execution stops at the first block boundary where the count has reached it (the count may pass
it by less than one block).

Guest time: `rdtsc` at instruction I returns the model's cycle count *at I*, defined as the
value `cycles` would have if execution stopped at I and `finish(I)` were called (as after a
fault at I): the integer part of the base costs of every instruction before I plus every
penalty charged so far, which includes the cache/TLB penalties of the earlier instructions of
I's block and the branch and instruction-fetch penalties of entering I's block (a block's
fetch is charged, for all its lines, when it starts). It excludes I itself (its 35-cycle cost
comes after the read). `rdtscp` does the same and sets ECX (TSC_AUX) to 0. Successive reads
are strictly increasing whenever anything costing a cycle ran in between.

Two clocks. The back end: a block takes the time of its busiest resource pool (4 ALUs, 3
loads, 2 stores, 3 AGUs, 2 branch units, the multiplier, the divider, 6-wide dispatch, and a
"serial" pool for locked, serialising and microcoded work; each pool's time is the sum of its
instructions' reciprocal throughputs, a Jcc fused with the ALU op before it being no macro-op of
its own) or its longest loop-carried register dependency — a path from a register's value at
block entry to its value at block exit, e.g. 4 cycles for `mov rax, [rax]`, with the L1D latency
on memory reads — whichever is longer. The front end: one fetch window per cycle, i.e. the
macro-ops of one 64-byte line up to a taken transfer (at most the op cache's 9); calls and
returns add a cycle's bubble; a mispredict restarts it behind the back end. A block finishes
no sooner than the front end delivered it; the front end runs ahead of a busy back end and
falls behind a stalled one by at most `frontend_window`; the difference is the breakdown's
`frontend_stall`. An instruction's share of its block's back-end time is proportional to what
it adds to the pools. Caches are LRU, 64-byte lines, indexed by guest virtual address; a miss
costs the serving level's latency minus the L1D latency. All parameters, with sources, are in
`cycle_model.toml`; the figures measured on the host come from `aeth-emu validate --probes`.

Known limits: a stop exactly at the start of the last counted block is read as "it never ran"
(a precise stop or a fault there) unless the block left a trace (a memory access or an `out`),
so an asynchronous stop (timeout) right after a memory-free block that jumped to its own start
undercounts that block; 2 MiB mappings are modelled as 4 KiB pages; caches are indexed by
virtual address; code rewritten through another virtual alias, or the same bytes run in another
CPU mode at the same address and size, is not decoded again (`forget_code` does it by hand);
dependency chains across blocks, memory-carried dependencies (store-to-load forwarding) and
the overlap of independent cache misses are not modelled.
"""

from __future__ import annotations

import ctypes
import tomllib
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs, CsError
from capstone import x86_const as cx
from unicorn import UC_HOOK_BLOCK, UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_HOOK_INTR, UC_HOOK_MEM_READ, \
    UC_HOOK_MEM_WRITE, UC_HOOK_MEM_INVALID, UC_PROT_EXEC, Uc, UcError
from unicorn import x86_const as ux
from unicorn.unicorn_py3.unicorn import uclib

DEFAULT_PARAMS = Path(__file__).with_name("cycle_model.toml")

K_NONE, K_COND, K_JMP, K_JMP_IND, K_CALL, K_CALL_IND, K_RET = range(7)
_COUNTERS = ("base_mc", "l1_misses", "l2_misses", "l3_misses", "l1i_misses", "dtlb_misses", "page_walks",
             "branch_mispredicts", "btb_misses", "rep_iterations", "memory_mc", "tlb_mc", "branch_mc", "fetch_mc",
             "loads", "stores", "branches", "frontend_mc")


class CycleModelError(RuntimeError):
    """The native cycle model is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class InsnClass:
    latency: float
    throughput: float
    pool: str = "serial"  # the resource its throughput is spent on (cycle_model.toml, [classes])


@dataclass(frozen=True)
class CycleParams:
    """The Zen 4 model's figures (cycles unless named otherwise); see cycle_model.toml."""
    clock_ghz: float
    line: int
    l1d: tuple[int, int]   # size, ways
    l1i: tuple[int, int]
    l2: tuple[int, int]
    l3: tuple[int, int]
    l1_latency: float
    l2_latency: float
    l3_latency: float
    dram_latency: float
    store_miss_fraction: float
    dtlb1_entries: int
    dtlb2_entries: int
    dtlb2_ways: int
    dtlb2_hit: float
    page_walk: float
    mispredict: float
    btb_miss: float
    bp_table_bits: int
    bp_history_bits: int
    btb_bits: int
    ras_entries: int
    dispatch_width: float
    op_cache_width: float
    frontend_window: float
    taken_jump: float        # front-end bubble after a taken jump, call, return
    taken_call: float
    taken_ret: float
    fusion_first: frozenset[str]  # mnemonics a following Jcc fuses with
    classes: dict[str, InsnClass] = field(default_factory=dict)
    rep_iteration: dict[str, float] = field(default_factory=dict)  # movs/stos per byte, others per element


def load_params(path: str | Path | None = None) -> CycleParams:
    """Read the model's parameters (default: emulator/cycle_model.toml)."""
    path = Path(path) if path is not None else DEFAULT_PARAMS
    try:
        d = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CycleModelError(f"cannot read the cycle model parameters {path}: {exc}") from exc
    try:
        c, t, b, core = d["cache"], d["tlb"], d["branch"], d["core"]
        classes = {name: InsnClass(float(v["latency"]), float(v["throughput"]), str(v["pool"]))
                   for name, v in d["classes"].items() if isinstance(v, dict)}
        return CycleParams(
            clock_ghz=float(d["clock"]["ghz"]), line=int(c["line"]),
            l1d=(int(c["l1d"]["size"]), int(c["l1d"]["ways"])), l1i=(int(c["l1i"]["size"]), int(c["l1i"]["ways"])),
            l2=(int(c["l2"]["size"]), int(c["l2"]["ways"])), l3=(int(c["l3"]["size"]), int(c["l3"]["ways"])),
            l1_latency=float(c["l1d"]["latency"]), l2_latency=float(c["l2"]["latency"]),
            l3_latency=float(c["l3"]["latency"]), dram_latency=float(c["dram"]["latency"]),
            store_miss_fraction=float(c["store"]["miss_fraction"]),
            dtlb1_entries=int(t["l1_entries"]), dtlb2_entries=int(t["l2_entries"]), dtlb2_ways=int(t["l2_ways"]),
            dtlb2_hit=float(t["l2_hit"]), page_walk=float(t["page_walk"]),
            mispredict=float(b["mispredict"]), btb_miss=float(b["btb_miss"]), bp_table_bits=int(b["table_bits"]),
            bp_history_bits=int(b["history_bits"]), btb_bits=int(b["btb_bits"]), ras_entries=int(b["ras_entries"]),
            dispatch_width=float(core["dispatch_width"]), op_cache_width=float(core["op_cache_width"]),
            frontend_window=float(core["frontend_window"]), taken_jump=float(core["taken"]["jump"]),
            taken_call=float(core["taken"]["call"]), taken_ret=float(core["taken"]["ret"]),
            fusion_first=frozenset(core["fusion"]["first"]),
            classes=classes,
            rep_iteration={k: float(v) for k, v in d["rep_iteration"].items() if not isinstance(v, str)},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CycleModelError(f"{path}: missing or malformed cycle model parameter {exc}") from exc


def _mc(cycles: float) -> int:
    return int(round(cycles * 1000))


class _CParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in (
        "l1d_sets", "l1d_ways", "l1i_sets", "l1i_ways", "l2_sets", "l2_ways", "l3_sets", "l3_ways",
        "l2_hit", "l3_hit", "dram", "store_miss_permille", "dtlb1_entries", "dtlb2_sets", "dtlb2_ways",
        "dtlb2_hit", "page_walk", "bp_table_bits", "bp_history_bits", "btb_bits", "ras_entries",
        "mispredict", "btb_miss", "taken_jump", "taken_call", "taken_ret", "fe_window", "mode")]


def _native() -> ctypes.CDLL:
    try:
        from . import _cyclemodel
    except ImportError as exc:
        raise CycleModelError("the native cycle model is not built: run `pip install -e .` in the project "
                              "(it compiles emulator/native/cyclemodel.c; a C compiler is needed)") from exc
    lib = ctypes.CDLL(_cyclemodel.__file__)
    p, u64, u32, i32, i = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int32, ctypes.c_int
    sigs = {
        "cm_new": (p, [ctypes.POINTER(_CParams), p, p, p, p]), "cm_free": (None, [p]),
        "cm_add_block": (i, [p, u64, u32, u32, ctypes.POINTER(u32), ctypes.POINTER(u32), i, u64, i, i, u64, u64]),
        "cm_set_budget": (None, [p, i, u64]), "cm_finish": (None, [p, u64]),
        "cm_instructions": (u64, [p]), "cm_cycles": (u64, [p]), "cm_millicycles": (u64, [p]),
        "cm_error": (i, [p]), "cm_counters": (None, [p, ctypes.POINTER(u64)]), "cm_ncounters": (i, []),
        "cm_nblocks": (i32, [p]), "cm_block_profile": (None, [p, i32, ctypes.POINTER(u64)]),
        "cm_invalidate": (None, [p, u64, u64]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    for name in ("cm_hook_block", "cm_hook_mem", "cm_hook_mem_nop", "cm_hook_rdtsc", "cm_hook_rdtscp", "cm_hook_intr", "cm_hook_out",
                 "cm_hook_invalid", "cm_hook_mem_invalid"):
        getattr(lib, name).restype = p
    if lib.cm_ncounters() != len(_COUNTERS):
        raise CycleModelError("emulator._cyclemodel is out of date: run `pip install -e .` again")
    return lib


def _uc_fn(name: str) -> int:
    """A libunicorn function from the library the unicorn package loaded, as a raw address."""
    return ctypes.cast(getattr(uclib, name), ctypes.c_void_p).value


_DECODE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32)
_VMEM_READ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p,
                              ctypes.c_size_t)(("uc_vmem_read", uclib))

# -- instruction classification --------------------------------------------------------------

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
_MEASURED_WHOLE = {"lock_rmw", "lock_cmpxchg", "xchg_mem"}  # DESIGN §5 figures include the memory access
_SHIFTS = {"shl", "shr", "sar", "sal", "rol", "ror", "rcl", "rcr", "shld", "shrd", "shlx", "shrx", "sarx",
           "rorx"}


@dataclass
class _Decoded:
    cls: str
    kind: int = K_NONE
    target: int = 0
    rep: str | None = None   # string kind of a rep-prefixed string instruction
    rep_bytes: int = 1
    reads_mem: bool = False
    writes_mem: bool = False


def _classify(insn) -> _Decoded:
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
    d = _Decoded("other", reads_mem=reads_mem or m.startswith(("pop", "ret")), writes_mem=writes_mem)

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


def _canon(insn, regs) -> set[str]:
    out = set()
    for r in regs:
        name = insn.reg_name(r)
        if name in ("rip", "eip", "ip"):
            continue
        out.add(_GPR.get(name, name))
    return out


@dataclass(frozen=True)
class _Facts:
    """What the model needs of one instruction encoding (independent of its address)."""
    d: _Decoded
    pools: tuple[tuple[str, float], ...]  # (resource pool, cycles of it this instruction takes)
    latency: float
    reads: frozenset[str]
    writes: frozenset[str]
    rel_target: int  # direct branch target minus the instruction's address
    fuses_with_jcc: bool  # a following conditional jump joins it in one macro-op


_MEMORY_POOLS = ("load", "store", "serial", "none")


class _BlockCoster:
    """Turns a decoded block into per-instruction millicycle costs (see the module docstring).
    Instruction encodings repeat a lot, so each is analysed once (per CPU mode)."""

    def __init__(self, params: CycleParams) -> None:
        self.p = params
        missing = {"other", "alu", "mov", "load", "store", "branch"} - params.classes.keys()
        if missing:
            raise CycleModelError(f"cycle model parameters lack instruction classes {sorted(missing)}")
        self._facts: dict[tuple[int, bytes], _Facts] = {}

    def facts(self, cs: Cs, bits: int, raw: bytes, address: int) -> _Facts | None:
        key = (bits, raw)
        f = self._facts.get(key)
        if f is None:
            insn = next(cs.disasm(raw, address), None)
            if insn is None:
                return None
            f = self._facts[key] = self._analyse(insn)
        return f

    def _analyse(self, insn) -> _Facts:
        classes = self.p.classes
        d = _classify(insn)
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
            reads, writes = _canon(insn, r), _canon(insn, w)
        except CsError:
            reads, writes = set(), set()
        if d.cls in ("push", "pop", "call", "ret"):
            reads.discard("rsp")
            writes.discard("rsp")  # the stack engine tracks rsp without a dependency
        ops = insn.operands
        if insn.mnemonic in ("xor", "sub", "pxor", "xorps", "vpxor") and len(ops) == 2 and \
                all(o.type == cx.X86_OP_REG for o in ops) and ops[0].reg == ops[1].reg:
            reads = set()  # zero idiom: no input dependency
        lat = c.latency + (self.p.l1_latency if d.reads_mem and d.cls not in _MEASURED_WHOLE else 0.0)
        fuses = insn.mnemonic in self.p.fusion_first and d.cls == "alu"
        return _Facts(d, tuple(pools.items()), lat, frozenset(reads), frozenset(writes),
                      d.target - insn.address if d.target else 0, fuses)

    def cost(self, facts: list[_Facts]) -> tuple[list[int], int, bool, bool, int, int, int]:
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
            weights.append(_mc(sum(t for _, t in own)))
        busiest = max(totals.values(), default=0.0)
        total_mc, sum_w = _mc(max(busiest, chain)), sum(weights)
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
            rep_mc = _mc(rate * last.rep_bytes if last.rep in ("movs", "stos") else rate)
        fe_mc = _mc(macro_ops / self.p.op_cache_width)
        return costs, last.kind, last.rep is not None, facts[0].d.rep is not None, rep_mc, facts[-1].rel_target, fe_mc


# -- the accounting object ---------------------------------------------------------------------

_ENDS_BLOCK = ("j", "call", "ret", "iret", "loop", "int", "hlt", "syscall", "sysret", "ljmp", "lcall")


def _tiles_block(insns: list, size: int) -> bool:
    """(address, size, mnemonic, op_str) tuples: whole instructions, a control transfer only last."""
    if not insns or sum(i[1] for i in insns) != size:
        return False
    return not any(i[2].startswith(_ENDS_BLOCK) for i in insns[:-1])


def _release(lib, uc, handles, state) -> None:
    # Holding `uc` keeps the engine open until its hooks are gone and the state is freed.
    for h in handles:
        uclib.uc_hook_del(uc._uch, h)
    handles.clear()
    lib.cm_free(state)


class CycleAccounting:
    """Native instruction counting and Zen 4 cycle accounting for one Unicorn x86 instance."""

    def __init__(self, uc: Uc, params: CycleParams | None = None, mode: int = 64) -> None:
        if mode not in (16, 32, 64):
            raise ValueError(f"mode must be 16, 32 or 64 (the Unicorn instance's mode), not {mode}")
        self._uc = uc
        self._mode = mode
        self.params = params or load_params()
        self._coster = _BlockCoster(self.params)
        self._lib = _native()
        self._cs = {bits: Cs(CS_ARCH_X86, m) for bits, m in ((16, CS_MODE_16), (32, CS_MODE_32), (64, CS_MODE_64))}
        for cs in self._cs.values():
            cs.detail = True
        self._decode_cb = _DECODE_CB(self._decode)
        self._decode_error: BaseException | None = None
        p = self.params

        def sets(size_ways):
            size, ways = size_ways
            return size // p.line // ways, ways
        cp = _CParams()
        cp.l1d_sets, cp.l1d_ways = sets(p.l1d)
        cp.l1i_sets, cp.l1i_ways = sets(p.l1i)
        cp.l2_sets, cp.l2_ways = sets(p.l2)
        cp.l3_sets, cp.l3_ways = sets(p.l3)
        cp.l2_hit = _mc(p.l2_latency - p.l1_latency)
        cp.l3_hit = _mc(p.l3_latency - p.l1_latency)
        cp.dram = _mc(p.dram_latency - p.l1_latency)
        cp.store_miss_permille = int(round(p.store_miss_fraction * 1000))
        cp.dtlb1_entries = p.dtlb1_entries
        cp.dtlb2_sets, cp.dtlb2_ways = p.dtlb2_entries // p.dtlb2_ways, p.dtlb2_ways
        cp.dtlb2_hit, cp.page_walk = _mc(p.dtlb2_hit), _mc(p.page_walk)
        cp.bp_table_bits, cp.bp_history_bits, cp.btb_bits = p.bp_table_bits, p.bp_history_bits, p.btb_bits
        cp.ras_entries = p.ras_entries
        cp.mispredict, cp.btb_miss = _mc(p.mispredict), _mc(p.btb_miss)
        cp.taken_jump, cp.taken_call, cp.taken_ret = _mc(p.taken_jump), _mc(p.taken_call), _mc(p.taken_ret)
        cp.fe_window = _mc(p.frontend_window)
        cp.mode = 64 if mode == 64 else 16
        self._state = self._lib.cm_new(ctypes.byref(cp), _uc_fn("uc_reg_read"), _uc_fn("uc_reg_write"),
                                       _uc_fn("uc_emu_stop"), ctypes.cast(self._decode_cb, ctypes.c_void_p))
        if not self._state:
            raise CycleModelError("the native cycle model refused its parameters (check cycle_model.toml)")
        self._handles: list[int] = []
        self._finalizer = weakref.finalize(self, _release, self._lib, uc, self._handles, self._state)

    # -- hooks --

    def attach(self, memory: bool = True) -> None:
        """Register the native hooks (memory=False: count instructions and blocks only)."""
        if self._handles:
            return
        lib, st = self._lib, ctypes.c_void_p(self._state)
        self._add(UC_HOOK_BLOCK, lib.cm_hook_block(), st)
        if memory:
            self._add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, lib.cm_hook_mem(), st)
        self._add(UC_HOOK_INSN, lib.cm_hook_rdtsc(), st, ux.UC_X86_INS_RDTSC)
        self._add(UC_HOOK_INSN, lib.cm_hook_rdtscp(), st, ux.UC_X86_INS_RDTSCP)
        self._add(UC_HOOK_INSN, lib.cm_hook_out(), st, ux.UC_X86_INS_OUT)  # never IN: its value would win
        self._add(UC_HOOK_INTR, lib.cm_hook_intr(), st)
        self._add(UC_HOOK_INSN_INVALID, lib.cm_hook_invalid(), st)
        self._add(UC_HOOK_MEM_INVALID, lib.cm_hook_mem_invalid(), st)

    def _add(self, kind: int, fn: int, st, *extra) -> None:
        handle = ctypes.c_size_t()
        args = [ctypes.c_int(e) for e in extra]
        err = uclib.uc_hook_add(self._uc._uch, ctypes.byref(handle), kind, ctypes.c_void_p(fn), st,
                                ctypes.c_uint64(1), ctypes.c_uint64(0), *args)
        if err != 0:
            raise CycleModelError(f"Unicorn refused a native hook (type {kind}): {UcError(err)}")
        self._handles.append(handle.value)

    def detach(self) -> None:
        """Remove the native hooks; the counts stay readable."""
        for h in self._handles:
            uclib.uc_hook_del(self._uc._uch, h)
        self._handles.clear()

    def _decode(self, address: int, size: int) -> int:
        try:
            code = self._read_code(address, size)
            bits = self._code_bits()
            if bits in (16, 32) and self._mode != 64 and size:
                # Between setting CR0.PE and the far jump, CS keeps real-mode (16-bit) attributes
                # that no register shows: when the width guessed from the GDT cannot be this
                # translated block, the block's own shape decides.
                if not _tiles_block(list(self._cs[bits].disasm_lite(code, address)), size):
                    if _tiles_block(list(self._cs[48 - bits].disasm_lite(code, address)), size):
                        bits = 48 - bits
            cs = self._cs[bits]
            facts, offs = [], []
            for at, length, _, _ in cs.disasm_lite(code, address):
                f = self._coster.facts(cs, bits, code[at - address:at - address + length], at)
                if f is None:
                    break
                facts.append(f)
                offs.append(at - address)
            if not size:
                offs, costs, kind, rep_last, first_rep, rep_mc, target, fe = [], [], K_NONE, 0, 0, 0, 0, 0
            elif not facts:  # bytes capstone cannot decode: one instruction of class `other`
                offs, costs = [0], [_mc(self.params.classes["other"].throughput)]
                kind, rep_last, first_rep, rep_mc, target, fe = K_NONE, 0, 0, 0, 0, 0
            else:
                costs, kind, rep_last, first_rep, rep_mc, rel, fe = self._coster.cost(facts)
                target = address + offs[-1] + rel if rel else 0
            n = len(offs)
            arr = ctypes.c_uint32 * max(n, 1)
            if self._lib.cm_add_block(self._state, address, size, n, arr(*offs), arr(*costs), kind, target & (2**64 - 1),
                                      int(rep_last), int(first_rep), rep_mc, fe) < 0:
                raise CycleModelError("out of memory for decoded blocks")
            return 0
        except BaseException as exc:  # never let an exception unwind into Unicorn's C frames
            self._decode_error = exc
            return 1

    def _read_code(self, address: int, size: int) -> bytes:
        buf = ctypes.create_string_buffer(size)
        if size and _VMEM_READ(self._uc._uch, address, UC_PROT_EXEC, buf, size) == 0:
            return buf.raw
        return bytes(self._uc.mem_read(address, size))

    def _code_bits(self) -> int:
        """16, 32 or 64: the current code segment's size, read from the CPU and its GDT."""
        uc = self._uc
        if not uc.reg_read(ux.UC_X86_REG_CR0) & 1:
            return 16
        default = 64 if self._mode == 64 else 32
        try:
            sel = uc.reg_read(ux.UC_X86_REG_CS) & 0xFFF8
            if not sel:
                return default  # Unicorn's initial long-mode state: CS = 0 with 64-bit attributes
            _, base, _, _ = uc.reg_read(ux.UC_X86_REG_GDTR)
            flags = self._read_desc(base + sel)[6]
            long_mode = self._mode == 64 and uc.msr_read(0xC0000080) & (1 << 10)
            if flags & 0x20 and long_mode:
                return 64
            return 32 if flags & 0x40 else 16
        except (UcError, IndexError, ValueError):
            return default

    def _read_desc(self, address: int) -> bytes:
        buf = ctypes.create_string_buffer(8)
        if _VMEM_READ(self._uc._uch, address, 1, buf, 8) == 0:
            return buf.raw
        return bytes(self._uc.mem_read(address, 8))

    # -- control --

    def set_budget(self, n: int | None) -> None:
        """Stop emulation at the first block boundary where `n` instructions have retired."""
        self._lib.cm_set_budget(self._state, 0 if n is None else 1, 0 if n is None else max(n, 0))

    def finish(self, stop_pc: int) -> None:
        """Call after emu_start returns, with the PC where execution stopped (in real mode,
        the linear address or IP: IP is converted with CS)."""
        if self._mode == 16 and stop_pc <= 0xFFFF and not self._uc.reg_read(ux.UC_X86_REG_CR0) & 1:
            stop_pc += (self._uc.reg_read(ux.UC_X86_REG_CS) & 0xFFFF) << 4
        self._lib.cm_finish(self._state, stop_pc & (2**64 - 1))
        self._raise_decode_error()

    def forget_code(self, address: int, size: int) -> None:
        """The host rewrote guest code at [address, address+size): decode those blocks again."""
        self._lib.cm_invalidate(self._state, address, address + size)

    def _raise_decode_error(self) -> None:
        if self._decode_error is not None or self._lib.cm_error(self._state):
            exc, self._decode_error = self._decode_error, None
            raise CycleModelError(f"the cycle model could not decode a guest block: {exc}") from exc

    # -- results --

    @property
    def instructions(self) -> int:
        return self._lib.cm_instructions(self._state)

    @property
    def cycles(self) -> int:
        return self._lib.cm_cycles(self._state)

    def _counters(self) -> dict[str, int]:
        out = (ctypes.c_uint64 * len(_COUNTERS))()
        self._lib.cm_counters(self._state, out)
        return dict(zip(_COUNTERS, out))

    def breakdown(self) -> dict[str, int]:
        """Where the cycles went (cycle figures are whole cycles; the rest are event counts)."""
        c = self._counters()
        out = {"base": c["base_mc"] // 1000, "memory_stall": c["memory_mc"] // 1000,
               "tlb_stall": c["tlb_mc"] // 1000, "branch_stall": c["branch_mc"] // 1000,
               "fetch_stall": c["fetch_mc"] // 1000, "frontend_stall": c["frontend_mc"] // 1000}
        for key in ("l1_misses", "l2_misses", "l3_misses", "l1i_misses", "dtlb_misses", "page_walks",
                    "branch_mispredicts", "btb_misses", "rep_iterations", "loads", "stores", "branches"):
            out[key] = c[key]
        return out

    def profile(self) -> dict[int, tuple[int, int]]:
        """Block start address -> (instructions, cycles) spent in blocks starting there."""
        acc: dict[int, list[int]] = {}
        row = (ctypes.c_uint64 * 3)()
        for i in range(self._lib.cm_nblocks(self._state)):
            self._lib.cm_block_profile(self._state, i, row)
            if row[1] or row[2]:
                entry = acc.setdefault(row[0], [0, 0])
                entry[0] += row[1]
                entry[1] += row[2]
        return {addr: (n, mc // 1000) for addr, (n, mc) in sorted(acc.items())}


# -- host speed ------------------------------------------------------------------------------------

SPEED_WORKLOADS = {
    "load/add/store": "mov rcx, {n}; mov rsi, 0x100000; L: mov rax, qword ptr [rsi]; add rax, rcx; "
                      "mov qword ptr [rsi + 8], rax; add rsi, 16; and rsi, 0x10fff0; dec rcx; jnz L; hlt",
    "alu": "mov rcx, {n}; L: add rax, rcx; xor rbx, rax; add rdx, rbx; inc r8; dec rcx; jnz L; hlt",
}


def measure_mips(iterations: int = 2_000_000, repeat: int = 3) -> dict[str, dict[str, float]]:
    """Host MIPS on synthetic loops, in one run: plain Unicorn, empty native block and memory
    hooks (Unicorn's hook dispatch alone), instruction counting only (block hook), full accounting.
    Each figure is the best of `repeat` interleaved rounds, so a busy host skews them less."""
    import time

    from keystone import KS_ARCH_X86, KS_MODE_64, Ks
    from unicorn import UC_ARCH_X86, UC_MODE_64
    out: dict[str, dict[str, float]] = {}
    for name, src in SPEED_WORKLOADS.items():
        code = bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(src.format(n=iterations), 0x1000)[0])
        row: dict[str, float] = {}
        variants = ("plain", "empty_hooks", "counting", "full")
        # rotated each round: the first run in a process tends to be the fastest
        for variant in [variants[(i + r) % 4] for r in range(repeat) for i in range(4)]:
            uc = Uc(UC_ARCH_X86, UC_MODE_64)
            uc.mem_map(0, 0x200000)
            uc.mem_write(0x1000, code)
            acc = CycleAccounting(uc)
            if variant == "full":
                acc.attach()
            elif variant == "counting":
                acc.attach(memory=False)
            elif variant == "empty_hooks":  # no work at all: what Unicorn's hook dispatch costs
                nop, st = acc._lib.cm_hook_mem_nop(), ctypes.c_void_p(acc._state)
                acc._add(UC_HOOK_BLOCK, nop, st)  # the extra arguments of a memory hook are ignored
                acc._add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, nop, st)
            started = time.perf_counter()
            uc.emu_start(0x1000, 0x100000)
            elapsed = time.perf_counter() - started
            acc.finish(uc.reg_read(ux.UC_X86_REG_RIP))
            body = 7 if name == "load/add/store" else 6
            insns = (2 if name == "load/add/store" else 1) + body * iterations + 1
            if variant in ("counting", "full") and acc.instructions != insns:
                raise CycleModelError(f"speed check miscounted {name}: {acc.instructions} != {insns}")
            row[variant] = max(row.get(variant, 0.0), insns / elapsed / 1e6)
        row["full_vs_plain"] = row["full"] / row["plain"]
        out[name] = row
    return out
