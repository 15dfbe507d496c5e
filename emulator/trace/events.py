"""Allocation events: one record per call into the allocator's `__rust_*` entry points."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

KINDS = ("alloc", "dealloc", "realloc", "alloc_zeroed", "alloc_error")

# Entry point -> event kind and the names of its System V arguments (rdi, rsi, rdx, rcx).
ENTRY_POINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "__rust_alloc": ("alloc", ("size", "align")),
    "__rust_dealloc": ("dealloc", ("ptr", "size", "align")),
    "__rust_realloc": ("realloc", ("ptr", "old_size", "align", "size")),
    "__rust_alloc_zeroed": ("alloc_zeroed", ("size", "align")),
    "__rust_alloc_error_handler": ("alloc_error", ("size", "align")),
}
_ADDRESS_FIELDS = ("ptr", "result", "call_site", "return_address")


@dataclass(frozen=True)
class HeapState:
    """The heap right after an event: from the guest's structures where they can be read."""

    used: int | None = None
    free: int | None = None
    free_blocks: int | None = None
    live_blocks: int = 0  # from events
    live_bytes: int = 0  # requested bytes of live blocks, from events
    free_list: tuple[tuple[int, int], ...] = ()  # (address, size) in list order: in version 1 traces only

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["free_list"] = [[f"0x{a:x}", s] for a, s in self.free_list]
        return data


@dataclass(frozen=True)
class AllocEvent:
    seq: int
    kind: str
    size: int  # requested size (realloc: the new size)
    align: int
    ptr: int | None = None  # dealloc/realloc: the block given back
    old_size: int | None = None  # realloc only
    result: int | None = None  # alloc/realloc/alloc_zeroed: the pointer returned (0 = null)
    returned: bool = False  # False: the call never returned (alloc_error, or the run ended inside it)
    insn_entry: int = 0
    insn_return: int | None = None
    cycles_entry: int = 0
    cycles_return: int | None = None
    call_site: int = 0  # address of the call instruction
    return_address: int = 0
    caller: str = ""  # call site as demangled symbol+offset
    backtrace: tuple[str, ...] = ()  # the call site, then each outer frame's call, as symbol+offset
    frames: tuple[int, ...] = ()  # the outer frames' return addresses (backtrace[1:] names their calls)
    depth: int = 0  # nesting: a realloc that calls __rust_alloc makes the alloc depth 1
    heap: HeapState = field(default_factory=HeapState)
    vector: int | None = None  # the interrupt or exception whose handler made the call (None: not in one)

    @property
    def allocates(self) -> bool:
        return self.kind in ("alloc", "alloc_zeroed", "realloc") and self.returned and bool(self.result)

    @property
    def frees(self) -> bool:
        return self.kind == "dealloc" or (self.kind == "realloc" and self.returned and bool(self.result))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _ADDRESS_FIELDS and value is not None:
                value = f"0x{value:x}"
            elif f.name == "heap":
                value = value.to_json()
            elif f.name in ("backtrace", "frames"):
                value = list(value)
            data[f.name] = value
        return data

    def describe(self) -> str:
        """One line, as the stepper and the stats show it."""
        if self.kind == "dealloc":
            what = f"dealloc(0x{self.ptr:x}, size={self.size}, align={self.align})"
        elif self.kind == "realloc":
            what = f"realloc(0x{self.ptr:x}, old_size={self.old_size}, align={self.align}, new_size={self.size})"
        else:
            what = f"{self.kind}(size={self.size}, align={self.align})"
        if self.kind not in ("dealloc", "alloc_error"):
            what += f" -> 0x{self.result:x}" if self.returned and self.result is not None else " -> (no return)"
        where = f" in the handler of vector 0x{self.vector:02x}" if self.vector is not None else ""
        return f"#{self.seq} {what} from {self.caller}{where}"
