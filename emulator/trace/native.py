"""ctypes glue to the native allocator-call capture (emulator/cycles/native/alloctrace.c, part of
the cycle model's extension, whose counts give the exact stamps)."""

from __future__ import annotations

import ctypes
import struct

from emulator.cycles.native import extension
from emulator.errors import NativeError

FIELDS = ("seq", "kind", "depth", "flags", "a0", "a1", "a2", "a3", "result", "rsp", "ret", "insn_entry",
          "insn_return", "mc_entry", "mc_return", "bt_at", "bt_len", "vector", "heap_kind", "heap_size",
          "heap_used", "heap_free", "heap_blocks", "heap_problems", "heap_largest")
RECORD = struct.Struct("<" + "Q" * len(FIELDS))
KIND_CODES = {"alloc": 0, "dealloc": 1, "realloc": 2, "alloc_zeroed": 3, "alloc_error": 4}
F_RETURNED, F_HOST_CALL = 1, 2
H_NONE, H_BUMP, H_LINKED_LIST, H_UNKNOWN = range(4)
PROBLEMS = {1: "free list has a cycle", 2: "free list longer than the heap can hold",
            4: "a free-list node is not mapped", 8: "a free block lies outside the heap",
            16: "a free block's size is below the minimum block or not a multiple of 8",
            32: "free-list neighbours overlap", 64: "bump next is outside [heap_start, heap_end]",
            128: "ALLOCATOR.kind is neither bump nor linked_list"}
BATCH_CB = ctypes.CFUNCTYPE(ctypes.c_int)


def load() -> ctypes.CDLL:
    lib = extension()
    p, u64, u32, size = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_size_t
    sigs = {
        "at_new": (p, [p, p, p, p, p, u64, u32, u64, BATCH_CB]), "at_free": (None, [p]),
        "at_add_entry": (p, [p, u64, u64]), "at_set_heap": (None, [p, u64, u64, u64, u64, p, u64]),
        "at_host_return": (ctypes.c_int, [p, p, u64, u64, u64, u64]), "at_finish": (None, [p]),
        "at_abandon_host_calls": (None, [p]),
        "at_nevents": (size, [p]), "at_nframes": (size, [p]), "at_error": (ctypes.c_int, [p]),
        "at_events": (p, [p]), "at_frames": (p, [p]), "at_event_size": (size, []),
        "at_clear_events": (None, [p]), "at_clear_frames": (None, [p]), "at_hook_entry": (p, []),
    }
    try:
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
    except AttributeError:
        raise NativeError("emulator.cycles._cyclemodel is out of date: run `pip install -e .` again") from None
    if lib.at_event_size() != RECORD.size:
        raise NativeError("emulator.cycles._cyclemodel is out of date: run `pip install -e .` again")
    return lib
