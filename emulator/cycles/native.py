"""ctypes glue to the native cycle model (native/cyclemodel.c, built as emulator.cycles._cyclemodel).

The model decodes blocks with capstone's C library, the one the capstone package loaded: its
functions are handed to the model as addresses (as libunicorn's are), after checking that the
package's library has the structure layout the model reads (`capstone_functions`)."""

from __future__ import annotations

import ctypes

import capstone
from capstone import x86 as cs_x86
from capstone import x86_const as cs_x86_const
from unicorn import UcError
from unicorn.unicorn_py3.unicorn import uclib

from emulator.cycles.params import CycleParams
from emulator.errors import CycleModelError, NativeError

OUT_OF_DATE = "emulator.cycles._cyclemodel is out of date: run `pip install -e .` again"


def bind(lib: ctypes.CDLL, sigs: dict, error: type[NativeError] = NativeError) -> None:
    """Give each named function of the extension its (restype, argtypes); a missing one is an old build."""
    for name, (res, args) in sigs.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise error(OUT_OF_DATE) from None
        fn.restype, fn.argtypes = res, args


def add_native_hook(uc, kind: int, fn: int, user, *extra: int, begin: int = 1, end: int = 0, what: str = "a native",
                    error: type[NativeError] = NativeError) -> int:
    """Register the C function at `fn` as a Unicorn hook of `kind` (the C API: the Python binding
    would put Python in between); `extra` are the instruction ids of UC_HOOK_INSN. Returns the handle."""
    handle = ctypes.c_size_t()
    err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), kind, ctypes.c_void_p(fn), user, ctypes.c_uint64(begin),
                            ctypes.c_uint64(end), *(ctypes.c_int(e) for e in extra))
    if err:
        raise error(f"Unicorn refused {what} hook (type {kind}): {UcError(err)}")
    return handle.value

COUNTERS = ("base_mc", "l1_misses", "l2_misses", "l3_misses", "l1i_misses", "dtlb_misses", "page_walks",
             "branch_mispredicts", "btb_misses", "rep_iterations", "memory_mc", "tlb_mc", "branch_mc", "fetch_mc",
             "loads", "stores", "branches", "frontend_mc")
# cm_table_stats, in order.
TABLE_STATS = ("blocks", "memory_bytes", "flushes", "decodes", "restores", "folded_rows", "table_walks")
# The instruction classes the native classifier knows (the IC_* order in native/cyclemodel.c);
# cycle_model.toml gives each its pool, latency and throughput (a missing one has `other`'s).
INSN_CLASSES = ("other", "nop", "mov", "alu", "lea", "shift", "imul", "div", "load", "store", "push", "pop",
                "branch", "call", "ret", "lock_rmw", "lock_cmpxchg", "xchg_mem", "mfence", "lfence", "sfence",
                "rdtsc", "cpuid", "pause", "string", "rep_string", "system", "io", "simd", "x87")
# Resource pools with a fixed meaning to the model (the P_* ids); a parameter file's other pools follow.
POOLS = ("none", "alu", "load", "store", "branch", "serial", "agu", "dispatch")
MAX_POOLS = 32
REP_STRINGS = ("", "movs", "stos", "lods", "cmps", "scas")  # the R_* order
FUSION_BYTES = 512


class CParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in (
        "l1d_sets", "l1d_ways", "l1i_sets", "l1i_ways", "l2_sets", "l2_ways", "l3_sets", "l3_ways",
        "l2_hit", "l3_hit", "dram", "store_miss_permille", "dtlb1_entries", "dtlb2_sets", "dtlb2_ways",
        "dtlb2_hit", "page_walk", "bp_table_bits", "bp_history_bits", "btb_bits", "ras_entries",
        "mispredict", "btb_miss", "taken_jump", "taken_call", "taken_ret", "fe_window", "mode", "bits")]


class CCosts(ctypes.Structure):
    n = len(INSN_CLASSES)
    _fields_ = [("cls_pool", ctypes.c_int64 * n), ("cls_latency", ctypes.c_double * n),
                ("cls_throughput", ctypes.c_double * n), ("npools", ctypes.c_int64),
                ("l1_latency", ctypes.c_double), ("dispatch_width", ctypes.c_double),
                ("op_cache_width", ctypes.c_double), ("rep_rate", ctypes.c_double * len(REP_STRINGS)),
                ("fusion", ctypes.c_char * FUSION_BYTES)]


class CFuncs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "reg_read", "reg_write", "emu_stop", "vmem_read", "mem_read", "vmem_translate",
        "cs_open", "cs_option", "cs_close", "cs_malloc", "cs_free", "cs_disasm_iter", "cs_reg_name",
        "cs_regs_access")]


def costs(p: CycleParams) -> CCosts:
    """The figures a block's cost is computed from, for the native decoder."""
    missing = {"other", "alu", "mov", "load", "store", "branch"} - p.classes.keys()
    if missing:
        raise CycleModelError(f"cycle model parameters lack instruction classes {sorted(missing)}")
    pools = list(POOLS)
    for cls in p.classes.values():
        if cls.pool not in pools:
            pools.append(cls.pool)
    if len(pools) > MAX_POOLS:
        raise CycleModelError(f"cycle model parameters name {len(pools)} resource pools; at most {MAX_POOLS}")
    fusion = b"".join(name.encode() + b"\0" for name in sorted(p.fusion_first)) + b"\0"
    if len(fusion) > FUSION_BYTES - 1 or not all(name.isascii() for name in p.fusion_first):
        raise CycleModelError("core.fusion.first is too long (or not ASCII) for the native model")
    c = CCosts()
    for i, name in enumerate(INSN_CLASSES):
        cls = p.classes.get(name, p.classes["other"])
        c.cls_pool[i], c.cls_latency[i], c.cls_throughput[i] = pools.index(cls.pool), cls.latency, cls.throughput
    c.npools = len(pools)
    c.l1_latency, c.dispatch_width, c.op_cache_width = p.l1_latency, p.dispatch_width, p.op_cache_width
    for i, name in enumerate(REP_STRINGS):
        c.rep_rate[i] = p.rep_iteration.get(name, 1.0)
    ctypes.memmove(ctypes.addressof(c) + CCosts.fusion.offset, fusion, len(fusion))  # NULs inside: not `c.fusion =`
    return c


def extension() -> ctypes.CDLL:
    """The built extension (the cycle model and the allocation tracer), not yet typed."""
    try:
        from emulator.cycles import _cyclemodel
    except ImportError as exc:
        raise CycleModelError("the native cycle model is not built: run `pip install -e .` in the project "
                              "(it compiles emulator/cycles/native/cyclemodel.c; a C compiler is needed)") from exc
    return ctypes.CDLL(_cyclemodel.__file__)


_LIB: ctypes.CDLL | None = None


def load_native() -> ctypes.CDLL:
    global _LIB
    if _LIB is not None:
        return _LIB
    lib = extension()
    p, u64, u32, i32, i = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int32, ctypes.c_int
    sigs = {
        "cm_new": (p, [ctypes.POINTER(CParams), ctypes.POINTER(CCosts), ctypes.POINTER(CFuncs), ctypes.c_int64,
                       ctypes.POINTER(i)]),
        "cm_free": (None, [p]), "cm_capstone_abi": (i, [ctypes.POINTER(ctypes.c_int64)]),
        "cm_set_budget": (None, [p, i, u64]), "cm_finish": (None, [p, u64]),
        "cm_instructions": (u64, [p]), "cm_cycles": (u64, [p]), "cm_millicycles": (u64, [p]),
        "cm_error": (i, [p]), "cm_counters": (None, [p, ctypes.POINTER(u64)]), "cm_ncounters": (i, []),
        "cm_nblocks": (i32, [p]), "cm_nprofile": (i32, [p]),
        "cm_profile_rows": (i32, [p, ctypes.POINTER(u64), i32]), "cm_set_limits": (i, [p, i32, i32]),
        "cm_table_stats": (None, [p, ctypes.POINTER(u64)]), "cm_invalidate": (None, [p, p, u64, u64]),
        "cm_block": (i32, [p, u64, u32, ctypes.POINTER(u64), ctypes.POINTER(u32), ctypes.POINTER(u32), u32]),
    }
    bind(lib, sigs, CycleModelError)
    for name in ("cm_hook_block", "cm_hook_mem", "cm_hook_mem_nop", "cm_hook_rdtsc", "cm_hook_rdtscp", "cm_hook_intr", "cm_hook_out",
                 "cm_hook_invalid", "cm_hook_mem_invalid"):
        getattr(lib, name).restype = p
    if lib.cm_ncounters() != len(COUNTERS):
        raise CycleModelError(OUT_OF_DATE)
    _check_capstone(lib)
    _LIB = lib
    return lib


def _check_capstone(lib: ctypes.CDLL) -> None:
    """The capstone package's library must have the layout native/cyclemodel.c reads."""
    insn, detail, x86, op = capstone._cs_insn, capstone._cs_detail, cs_x86.CsX86, cs_x86.X86Op
    theirs = [insn.address.offset, insn.size.offset, insn.mnemonic.offset, insn.detail.offset,
              detail.groups.offset, detail.groups_count.offset, detail.arch.offset,
              x86.prefix.offset, x86.op_count.offset, x86.operands.offset, ctypes.sizeof(op),
              op.value.offset, op.access.offset]
    n = lib.cm_capstone_abi(None)
    ours = (ctypes.c_int64 * n)()
    lib.cm_capstone_abi(ours)
    consts = (capstone.CS_ARCH_X86, capstone.CS_MODE_16, capstone.CS_MODE_32, capstone.CS_MODE_64,
              capstone.CS_OPT_DETAIL, capstone.CS_OPT_ON, capstone.CS_AC_READ, capstone.CS_AC_WRITE,
              cs_x86_const.X86_OP_REG, cs_x86_const.X86_OP_IMM, cs_x86_const.X86_OP_MEM,
              cs_x86_const.X86_GRP_JUMP, cs_x86_const.X86_GRP_CALL, cs_x86_const.X86_GRP_FPU)
    if list(ours) != theirs or consts != (3, 2, 4, 8, 2, 3, 1, 2, 1, 2, 3, 1, 2, 169) or \
            capstone.cs_version()[0] != 5:
        raise CycleModelError(f"capstone {capstone.__version__} is not the capstone 5 ABI the native cycle "
                              "model was written for (pyproject.toml pins capstone>=5.0,<6)")


def uc_function(name: str) -> int:
    """A libunicorn function from the library the unicorn package loaded, as a raw address."""
    return ctypes.cast(getattr(uclib, name), ctypes.c_void_p).value


def functions() -> CFuncs:
    """The libunicorn and libcapstone functions the model calls."""
    f = CFuncs()
    for name in ("reg_read", "reg_write", "emu_stop", "vmem_read", "mem_read", "vmem_translate"):
        setattr(f, name, uc_function("uc_" + name))
    for name in ("cs_open", "cs_option", "cs_close", "cs_malloc", "cs_free", "cs_disasm_iter", "cs_reg_name",
                 "cs_regs_access"):
        setattr(f, name, ctypes.cast(getattr(capstone._cs, name), ctypes.c_void_p).value)
    return f


X86_REG_ENDING = cs_x86_const.X86_REG_ENDING
