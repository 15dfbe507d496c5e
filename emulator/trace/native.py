"""ctypes glue to the native allocator-call capture (emulator/cycles/native/alloctrace.c, part of
the cycle model's extension, whose counts give the exact stamps) and to the heap code it drives
per call (emulator/heap/native/: the live blocks and checks, the guest heap's walk)."""

from __future__ import annotations

import ctypes
import struct

from emulator.cycles.native import OUT_OF_DATE, bind, extension
from emulator.errors import NativeError

FIELDS = ("seq", "kind", "depth", "flags", "a0", "a1", "a2", "a3", "result", "rsp", "ret", "insn_entry",
          "insn_return", "mc_entry", "mc_return", "bt_at", "bt_len", "vector", "heap_kind", "heap_size",
          "heap_used", "heap_free", "heap_blocks", "heap_problems", "heap_largest", "live_blocks", "live_bytes",
          "changes")
RECORD = struct.Struct("<" + "Q" * len(FIELDS))
INDEX = {name: i for i, name in enumerate(FIELDS)}
KIND_CODES = {"alloc": 0, "dealloc": 1, "realloc": 2, "alloc_zeroed": 3, "alloc_error": 4}
NO_SLOT = 255
F_RETURNED, F_HOST_CALL = 1, 2
H_NONE, H_BUMP, H_LINKED_LIST, H_UNKNOWN = range(4)
HEAP_KINDS = {H_BUMP: "bump", H_LINKED_LIST: "linked_list", H_UNKNOWN: "unknown"}
PROBLEMS = {1: "free list has a cycle", 2: "free list longer than the heap can hold",
            4: "a free-list node is not mapped", 8: "a free block lies outside the heap",
            16: "a free block's size is below the minimum block or not a multiple of 8",
            32: "free-list neighbours overlap", 64: "bump next is outside [heap_start, heap_end]",
            128: "ALLOCATOR.kind is neither bump nor linked_list"}
BATCH_CB = ctypes.CFUNCTYPE(ctypes.c_int)

u64 = ctypes.c_uint64


class Stats(ctypes.Structure):  # ls_stats
    _fields_ = [("counts", u64 * 5)] + [(name, u64) for name in (
        "live_blocks", "live_bytes", "peak_live_blocks", "peak_live_bytes", "bytes_requested", "violations",
        "dropped")]


class Block(ctypes.Structure):  # ls_block
    _fields_ = [(name, u64) for name in ("ptr", "size", "align", "seq", "ret")]


class Call(ctypes.Structure):  # ls_call
    _fields_ = [(name, u64) for name in ("seq", "kind", "returned", "ptr", "size", "old_size", "align", "result",
                                         "ret")]


VIOLATION_FIELDS = ("seq", "kind", "ptr", "size", "align", "ret", "other_seq", "other_ptr", "other_size",
                    "other_align", "other_ret", "code")
VIOLATION = struct.Struct("<" + "Q" * len(VIOLATION_FIELDS))


def load() -> ctypes.CDLL:
    lib = extension()
    p, u32, size, i = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_int
    psize = ctypes.POINTER(size)
    sigs = {
        "at_new": (p, [p, p, p, p, p, u64, u32, u64, BATCH_CB]), "at_free": (None, [p]),
        "at_set_kind": (i, [p, u64, ctypes.c_char_p, u32, u32, u32, u32]),
        "at_add_entry": (p, [p, u64, u64]), "at_set_heap": (i, [p, u64, u64, u64, u64, p, u64]),
        "at_set_events": (i, [p, u64, u64, i, u64, u64, i]), "at_set_delivery": (None, [p, p]),
        "at_host_return": (i, [p, p, u64, u64, u64, u64]), "at_finish": (None, [p]),
        "at_abandon_host_calls": (None, [p]),
        "at_nevents": (size, [p]), "at_nframes": (size, [p]), "at_error": (i, [p]),
        "at_events": (p, [p]), "at_frames": (p, [p]), "at_event_size": (size, []),
        "at_liveset": (p, [p]), "at_walker": (p, [p]), "at_text": (p, [p, psize]), "at_unnamed": (p, [p, psize]),
        "at_clear_batch": (None, [p]), "at_hook_entry": (p, []),
        "ls_new": (p, [u64, u64, i, u64]), "ls_free": (None, [p]), "ls_apply": (i, [p, ctypes.POINTER(Call)]),
        "ls_stats_of": (ctypes.POINTER(Stats), [p]), "ls_nviolations": (size, [p]), "ls_violations": (p, [p]),
        "ls_clear_violations": (None, [p]), "ls_blocks": (size, [p, ctypes.POINTER(Block), size]),
        "ls_get": (i, [p, u64, ctypes.POINTER(Block)]), "ls_overlapping": (i, [p, u64, u64, ctypes.POINTER(Block)]),
        "gw_nchanges": (size, [p]), "gw_changes": (p, [p]), "gw_nentries": (size, [p]), "gw_entries": (p, [p]),
    }
    bind(lib, sigs)
    if lib.at_event_size() != RECORD.size:
        raise NativeError(OUT_OF_DATE)
    return lib
