"""Exact retired-instruction counts and a deterministic AMD Zen 4 cycle model for a Unicorn CPU.

Hook design (why it looks like this): Unicorn has no instruction counter, and a Python hook per
block, instruction or memory access slows it 10–50× (docs/unicorn-notes.md). So every per-block and
per-access callback is C (`emulator/cycles/native/cyclemodel.c`, built by `pip install` as
`emulator.cycles._cyclemodel` and loaded with ctypes by `native.py`), registered directly with libunicorn's
`uc_hook_add` from the same library the `unicorn` package loaded:

* `UC_HOOK_BLOCK` counts each executed block's instructions, adds its base cost, touches its
  code lines in the L1I, evaluates the branch that ended the *previous* block (gshare direction,
  BTB, return stack) against the address actually reached, and enforces the instruction budget.
* `UC_HOOK_MEM_READ|WRITE` feeds the L1D/L2/L3 caches (physical lines) and the L1/L2 DTLB
  (virtual pages, found back from the physical address through the guest's page tables) and
  notices writes into lines that hold decoded code (self-modifying code: those blocks are
  forgotten and decoded again when Unicorn re-translates them).
* `UC_HOOK_INSN` for `rdtsc`/`rdtscp` (the Python binding refuses these; the C API accepts them)
  makes guest time the model's cycle count.
* `UC_HOOK_INTR`, `UC_HOOK_INSN_INVALID` and the invalid-memory hooks only note that the current
  block stopped early (they never handle anything; the machine's hooks still decide).

A block the hook has not seen (keyed by address and size) is decoded natively too, with
capstone's C library: each instruction classified, the block costed from cycle_model.toml's
figures (handed down once, when the accounting is made). No Python runs per new block. Costs
are millicycles internally; `cycles` is the integer part.

The native table of decoded blocks is bounded for any guest (code that rewrites itself or runs
ever-fresh memory meets a new block at every turn): a block forgotten because its code was
written comes back without decoding when it runs again with the same bytes, and a full table is
flushed (every block decoded again on its next execution, as QEMU flushes its translation cache).
Counts never depend on it. The profile keeps the counts of flushed blocks by start address, up to
a bound; past it they are reported under `UNATTRIBUTED`. `table_stats()` shows the table and
`block()` one decoded block.

The counting rules, what guest `rdtsc` reads, how a block is costed (two clocks, resource
pools, caches, TLBs, branch prediction) and the model's known limits are in docs/cycle-model.md.
"""

from __future__ import annotations

import ctypes
import weakref
from dataclasses import dataclass

from unicorn import (
    UC_HOOK_BLOCK,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_HOOK_MEM_INVALID,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    Uc,
)
from unicorn import x86_const as ux
from unicorn.unicorn_py3.unicorn import uclib

from emulator.cycles.native import (
    COUNTERS,
    TABLE_STATS,
    X86_REG_ENDING,
    CParams,
    add_native_hook,
    costs,
    functions,
    load_native,
)
from emulator.cycles.params import CycleParams, load_params, millicycles
from emulator.errors import CycleModelError
from emulator.machine import cpu

# The profile's address for the counts of flushed blocks past its bound (CM_UNATTRIBUTED in
# native/cyclemodel.c): not canonical in 64-bit mode and above 4 GiB, so no block starts there.
UNATTRIBUTED = 1 << 63

# Control-transfer kinds of a block's last instruction (DecodedBlock.kind; K_* in native/cyclemodel.c).
K_NONE, K_COND, K_JMP, K_JMP_IND, K_CALL, K_CALL_IND, K_RET = range(7)

_REFUSED = {1: "the native cycle model refused its parameters (check cycle_model.toml: cache and L2 TLB "
               "sets must be powers of two, l1_entries at most 128)",
            2: "the native cycle model could not open capstone's x86 decoder",
            3: "out of memory for the native cycle model"}


@dataclass(frozen=True)
class DecodedBlock:
    """One block as the model decoded it: the width it was decoded in (16, 32 or 64), each
    instruction's offset in the block and base cost (millicycles), the kind of its closing
    control transfer (K_*), whether it ends / starts with a rep string instruction, what a
    further rep iteration costs and the front end's millicycles to deliver it."""
    bits: int
    offsets: tuple[int, ...]
    costs: tuple[int, ...]
    kind: int
    rep_last: bool
    first_rep: bool
    rep_iteration_mc: int
    frontend_mc: int
    live: bool  # False: forgotten (its code was written) until it runs again with the same bytes


# -- the accounting object ---------------------------------------------------------------------


def _free_state(lib, state) -> None:
    # Runs when the Unicorn instance is collected: no emulation can call the hooks any more,
    # and the engine closes by itself, so freeing the model's state is all there is to do.
    lib.cm_free(state)


class CycleAccounting:
    """Native instruction counting and Zen 4 cycle accounting for one Unicorn x86 instance."""

    def __init__(self, uc: Uc, params: CycleParams | None = None) -> None:
        self._uc = uc
        self._mode = mode = cpu.instance_bits(uc)
        self.params = p = params or load_params()
        self._lib = load_native()

        def sets(size_ways):
            size, ways = size_ways
            return size // p.line // ways, ways
        cp = CParams()
        cp.l1d_sets, cp.l1d_ways = sets(p.l1d)
        cp.l1i_sets, cp.l1i_ways = sets(p.l1i)
        cp.l2_sets, cp.l2_ways = sets(p.l2)
        cp.l3_sets, cp.l3_ways = sets(p.l3)
        cp.l2_hit = millicycles(p.l2_latency - p.l1_latency)
        cp.l3_hit = millicycles(p.l3_latency - p.l1_latency)
        cp.dram = millicycles(p.dram_latency - p.l1_latency)
        cp.store_miss_permille = int(round(p.store_miss_fraction * 1000))
        cp.dtlb1_entries = p.dtlb1_entries
        cp.dtlb2_sets, cp.dtlb2_ways = p.dtlb2_entries // p.dtlb2_ways, p.dtlb2_ways
        cp.dtlb2_hit, cp.page_walk = millicycles(p.dtlb2_hit), millicycles(p.page_walk)
        cp.bp_table_bits, cp.bp_history_bits, cp.btb_bits = p.bp_table_bits, p.bp_history_bits, p.btb_bits
        cp.ras_entries = p.ras_entries
        cp.mispredict, cp.btb_miss = millicycles(p.mispredict), millicycles(p.btb_miss)
        cp.taken_jump, cp.taken_call, cp.taken_ret = millicycles(p.taken_jump), millicycles(p.taken_call), millicycles(p.taken_ret)
        cp.fe_window = millicycles(p.frontend_window)
        cp.mode = 64 if mode == 64 else 16
        cp.bits = mode
        why = ctypes.c_int()
        # The native state lives exactly as long as the Unicorn instance it hooks (it is freed with it).
        self._state = self._lib.cm_new(ctypes.byref(cp), ctypes.byref(costs(p)), ctypes.byref(functions()),
                                       X86_REG_ENDING, ctypes.byref(why))
        if not self._state:
            raise CycleModelError(_REFUSED.get(why.value, _REFUSED[1]))
        self._handles: list[int] = []
        weakref.finalize(uc, _free_state, self._lib, self._state)

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
        self._handles.append(add_native_hook(self._uc, kind, fn, st, *extra, error=CycleModelError))

    def detach(self) -> None:
        """Remove the native hooks; the counts stay readable."""
        for h in self._handles:
            uclib.uc_hook_del(self._uc._uch, h)
        self._handles.clear()

    # -- control --

    def set_budget(self, n: int | None) -> None:
        """Stop emulation at the first block boundary where `n` instructions have retired."""
        self._lib.cm_set_budget(self._state, 0 if n is None else 1, 0 if n is None else max(n, 0))

    def finish(self, stop_pc: int) -> None:
        """Call after emu_start returns, with the PC where execution stopped (in real mode,
        the linear address or IP: IP is converted with CS)."""
        if self._mode == 16 and stop_pc <= 0xFFFF and not cpu.read(self._uc, "cr0") & cpu.CR0_PE:
            stop_pc += (cpu.read(self._uc, "cs") & 0xFFFF) << 4
        self._lib.cm_finish(self._state, stop_pc & (2**64 - 1))
        self._raise_decode_error()

    def limit_table(self, blocks: int, profile_rows: int) -> None:
        """Bound the native block table to `blocks` blocks (its pool, line index and code bytes in
        proportion) and the profile of flushed blocks to `profile_rows` rows, instead of the
        defaults of native/cyclemodel.c. For tests that force flushes; only before the first block."""
        if self._lib.cm_set_limits(self._state, blocks, profile_rows) != 0:
            raise CycleModelError(f"cannot bound the block table to {blocks} blocks, {profile_rows} profile rows "
                                  "(only positive bounds, before the first block)")

    def forget_code(self, address: int, size: int) -> None:
        """The host rewrote guest code at virtual [address, address+size): those blocks are checked
        against their bytes when they run again (and decoded again if the bytes changed)."""
        self._lib.cm_invalidate(self._state, self._uc._uch, address, address + size)

    def _raise_decode_error(self) -> None:
        error = self._lib.cm_error(self._state)
        if error:
            what = "its code is unreadable" if error == 1 else "out of memory for decoded blocks"
            raise CycleModelError(f"the cycle model could not decode a guest block: {what}")

    # -- results --

    @property
    def instructions(self) -> int:
        return self._lib.cm_instructions(self._state)

    @property
    def cycles(self) -> int:
        return self._lib.cm_cycles(self._state)

    @property
    def millicycles(self) -> int:
        return self._lib.cm_millicycles(self._state)

    @property
    def native_state(self) -> int:
        """The model's native state, for native code that reads its counts (the allocation tracer)."""
        return self._state

    def _counters(self) -> dict[str, int]:
        out = (ctypes.c_uint64 * len(COUNTERS))()
        self._lib.cm_counters(self._state, out)
        return dict(zip(COUNTERS, out))

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

    def table_stats(self) -> dict[str, int]:
        """The native block table: blocks in it, bytes it (and the profile of flushed blocks) holds,
        flushes, blocks decoded, forgotten blocks restored unchanged, folded profile rows, and walks
        of the guest's page tables (to find the virtual pages of accesses)."""
        out = (ctypes.c_uint64 * len(TABLE_STATS))()
        self._lib.cm_table_stats(self._state, out)
        return dict(zip(TABLE_STATS, out))

    def profile_millicycles(self) -> dict[int, tuple[int, int]]:
        """Block start address -> (instructions, millicycles) spent in blocks starting there; the
        counts of flushed blocks past the profile's bound are under UNATTRIBUTED. The rows add up
        to exactly `instructions` and the run's millicycles."""
        n = self._lib.cm_nprofile(self._state)
        rows = (ctypes.c_uint64 * (3 * max(n, 1)))()
        n = self._lib.cm_profile_rows(self._state, rows, n)
        acc: dict[int, list[int]] = {}
        for i in range(0, 3 * n, 3):
            if rows[i + 1] or rows[i + 2]:
                entry = acc.setdefault(rows[i], [0, 0])
                entry[0] += rows[i + 1]
                entry[1] += rows[i + 2]
        return {addr: (insns, mc) for addr, (insns, mc) in sorted(acc.items())}

    def profile(self) -> dict[int, tuple[int, int]]:
        """Block start address -> (instructions, cycles) spent in blocks starting there (the
        counts of flushed blocks past the profile's bound are under UNATTRIBUTED)."""
        return {addr: (n, mc // 1000) for addr, (n, mc) in self.profile_millicycles().items()}

    def block(self, address: int, size: int) -> DecodedBlock | None:
        """The block keyed (address, size) as the model decoded it, while its table holds it."""
        head = (ctypes.c_uint64 * 8)()
        n = self._lib.cm_block(self._state, address, size, head, None, None, 0)
        if n < 0:
            return None
        offs, mcs = (ctypes.c_uint32 * max(n, 1))(), (ctypes.c_uint32 * max(n, 1))()
        self._lib.cm_block(self._state, address, size, head, offs, mcs, n)
        return DecodedBlock(int(head[0]), tuple(offs[:n]), tuple(mcs[:n]), int(head[2]), bool(head[3]),
                            bool(head[4]), int(head[5]), int(head[6]), head[7] == 1)
