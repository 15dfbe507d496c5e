"""Block costing: a decoded block of instructions -> per-instruction millicycle costs.

The back end takes the time of its busiest resource pool or its longest loop-carried register
dependency, whichever is longer; the front end delivers one fetch window a cycle (see
docs/cycle-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from capstone import Cs, CsError
from capstone import x86_const as cx

from emulator.cycles.classify import K_COND, MEASURED_WHOLE, Decoded, canonical_registers, classify
from emulator.cycles.params import CycleParams, millicycles
from emulator.errors import CycleModelError


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

