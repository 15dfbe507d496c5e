"""Heap invariant violations (`--check`) and their messages.

The checks run in native code after every allocator call (emulator/heap/native/liveset.c):
a result is aligned, inside the heap and disjoint from every live block; a block is given
back once, by a live pointer, with the size and alignment it was allocated with; and the
guest's own free list is well formed (emulator/heap/native/guestwalk.c). Here a native
violation record becomes a `Violation` with a message naming the call sites involved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_KEPT = 10_000  # violations kept (and written to a trace) per run; past it they are only counted
# liveset.h's V_* codes, in order
CODES = ("misaligned", "outside-heap", "overlap", "double-free", "invalid-free", "size-mismatch", "guest-heap")


@dataclass(frozen=True)
class Violation:
    seq: int
    kind: str  # one of CODES, or "views-disagree" (the end-of-run views, emulator/api.py)
    message: str

    def to_json(self) -> dict:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


def describe(record: dict[str, int], kind: str, name_of: Callable[[int], str], heap_range: tuple[int, int] | None,
             problems: dict[int, str]) -> Violation:
    """The violation a native record (native.VIOLATION_FIELDS) describes; `kind` is the event's kind,
    `name_of` names a return address's call site."""
    r = record
    code = CODES[r["code"]]
    seq, ptr, size, align = r["seq"], r["ptr"], r["size"], r["align"]
    caller = name_of(r["ret"])
    if code == "double-free":
        text = (f"#{seq} {kind} of 0x{ptr:x} from {caller}: already freed by #{r['other_seq']} from "
                f"{name_of(r['other_ret'])}")
    elif code == "invalid-free":
        text = f"#{seq} {kind} of 0x{ptr:x} from {caller}: not a live block"
    elif code == "size-mismatch":
        text = (f"#{seq} {kind} of 0x{ptr:x} from {caller} with size {size} align {align}, but "
                f"#{r['other_seq']} from {name_of(r['other_ret'])} allocated size {r['other_size']} "
                f"align {r['other_align']}")
    elif code == "misaligned":
        text = f"#{seq} {kind} returned 0x{ptr:x}, not aligned to {align}"
    elif code == "outside-heap":
        start, end = heap_range or (0, 0)
        text = (f"#{seq} {kind} returned [0x{ptr:x}, 0x{ptr + size:x}), outside the heap "
                f"[0x{start:x}, 0x{end:x})")
    elif code == "overlap":
        other = r["other_ptr"]
        text = (f"#{seq} {kind} from {caller} returned [0x{ptr:x}, 0x{ptr + size:x}), which overlaps live block "
                f"[0x{other:x}, 0x{other + r['other_size']:x}) from #{r['other_seq']} {name_of(r['other_ret'])}")
    else:  # guest-heap: other_seq holds the problem's bit
        text = f"after #{seq}: {problems.get(r['other_seq'], 'the guest heap is damaged')}"
    return Violation(seq, code, text)
