"""ctypes glue to the native cycle model (native/cyclemodel.c, built as emulator.cycles._cyclemodel)."""

from __future__ import annotations

import ctypes

from unicorn.unicorn_py3.unicorn import uclib

from emulator.errors import CycleModelError

COUNTERS = ("base_mc", "l1_misses", "l2_misses", "l3_misses", "l1i_misses", "dtlb_misses", "page_walks",
             "branch_mispredicts", "btb_misses", "rep_iterations", "memory_mc", "tlb_mc", "branch_mc", "fetch_mc",
             "loads", "stores", "branches", "frontend_mc")
# cm_table_stats, in order.
TABLE_STATS = ("blocks", "memory_bytes", "flushes", "decodes", "restores", "folded_rows")


class CParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in (
        "l1d_sets", "l1d_ways", "l1i_sets", "l1i_ways", "l2_sets", "l2_ways", "l3_sets", "l3_ways",
        "l2_hit", "l3_hit", "dram", "store_miss_permille", "dtlb1_entries", "dtlb2_sets", "dtlb2_ways",
        "dtlb2_hit", "page_walk", "bp_table_bits", "bp_history_bits", "btb_bits", "ras_entries",
        "mispredict", "btb_miss", "taken_jump", "taken_call", "taken_ret", "fe_window", "mode")]


def extension() -> ctypes.CDLL:
    """The built extension (the cycle model and the allocation tracer), not yet typed."""
    try:
        from emulator.cycles import _cyclemodel
    except ImportError as exc:
        raise CycleModelError("the native cycle model is not built: run `pip install -e .` in the project "
                              "(it compiles emulator/cycles/native/cyclemodel.c; a C compiler is needed)") from exc
    return ctypes.CDLL(_cyclemodel.__file__)


def load_native() -> ctypes.CDLL:
    lib = extension()
    p, u64, u32, i32, i = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int32, ctypes.c_int
    sigs = {
        "cm_new": (p, [ctypes.POINTER(CParams), p, p, p, p, p]), "cm_free": (None, [p]),
        "cm_add_block": (i, [p, u64, u32, u32, ctypes.POINTER(u32), ctypes.POINTER(u32), i, u64, i, i, u64, u64,
                             ctypes.c_char_p]),
        "cm_set_budget": (None, [p, i, u64]), "cm_finish": (None, [p, u64]),
        "cm_instructions": (u64, [p]), "cm_cycles": (u64, [p]), "cm_millicycles": (u64, [p]),
        "cm_error": (i, [p]), "cm_counters": (None, [p, ctypes.POINTER(u64)]), "cm_ncounters": (i, []),
        "cm_nblocks": (i32, [p]), "cm_nprofile": (i32, [p]),
        "cm_profile_rows": (i32, [p, ctypes.POINTER(u64), i32]), "cm_set_limits": (i, [p, i32, i32]),
        "cm_table_stats": (None, [p, ctypes.POINTER(u64)]), "cm_invalidate": (None, [p, u64, u64]),
    }
    for name, (res, args) in sigs.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise CycleModelError("emulator.cycles._cyclemodel is out of date: run `pip install -e .` again") from None
        fn.restype, fn.argtypes = res, args
    for name in ("cm_hook_block", "cm_hook_mem", "cm_hook_mem_nop", "cm_hook_rdtsc", "cm_hook_rdtscp", "cm_hook_intr", "cm_hook_out",
                 "cm_hook_invalid", "cm_hook_mem_invalid"):
        getattr(lib, name).restype = p
    if lib.cm_ncounters() != len(COUNTERS):
        raise CycleModelError("emulator.cycles._cyclemodel is out of date: run `pip install -e .` again")
    return lib


def uc_function(name: str) -> int:
    """A libunicorn function from the library the unicorn package loaded, as a raw address."""
    return ctypes.cast(getattr(uclib, name), ctypes.c_void_p).value


DECODE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32)
VMEM_READ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p,
                              ctypes.c_size_t)(("uc_vmem_read", uclib))
