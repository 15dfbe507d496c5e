"""Stepping through a boot's allocations, one event per step.

Commands: Enter or `n` next, `p` previous, `c EXPR` continue to the next event matching EXPR,
`g N` go to event N, `q` quit. EXPR is a kind (`dealloc`), a size (`64`, `size>=1024`), or
text found in the call site or backtrace (`Vec`). In a terminal the view is drawn with rich;
with piped input and output it is plain text, so sessions can be scripted.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from emulator.heap.event_view import EventHeap
from emulator.image.symbols import SymbolTable
from emulator.trace.events import KINDS, AllocEvent
from emulator.trace.freelists import HeapAt

MAP_CELLS = 64
_COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq, "==": operator.eq,
            "!=": operator.ne}


FIELDS = ("size", "align", "seq", "depth")
_COMPARISON = re.compile(r"(\w+)\s*(>=|<=|==|!=|=|>|<)\s*(\S+)")
_SYMBOL_TEXT = re.compile(r"[\w:<>$.@-]+")  # what a Rust path or symbol fragment is made of
MAX_SHOWN = 60


def shown(text: str) -> str:
    """User input echoed back, cut to a readable length."""
    text = text.strip()
    return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…")


def matcher(expr: str) -> Callable[[AllocEvent], bool]:
    """Parse a `c EXPR` condition: a kind (`dealloc`, `kind=realloc`), a size (`64`), a comparison
    of size, align, seq or depth (`size>=1024`), or text of a call site or backtrace frame
    (`Vec`, `alloc::raw_vec`). Raises ValueError with a hint when it is none of these."""
    expr = expr.strip()
    if not expr:
        raise ValueError("continue needs a condition: a kind, a size (64, size>=1024) or a symbol")
    m = _COMPARISON.fullmatch(expr)
    if m:
        name, op, value = m.groups()
        if name == "kind":
            if op not in ("=", "==") or value not in KINDS:
                raise ValueError(f"a kind is one of {', '.join(KINDS)} (kind=realloc)")
            return lambda e: e.kind == value
        if name not in FIELDS:
            raise ValueError(f"cannot compare {shown(name)}: the fields are kind, {', '.join(FIELDS)}")
        try:
            number = int(value, 0)
        except ValueError:
            raise ValueError(f"{shown(value)} is not a number") from None
        compare = _COMPARE[op]
        return lambda e: compare(getattr(e, name), number)
    if re.fullmatch(r"\d+|0x[0-9a-fA-F]+", expr):
        value = int(expr, 0)
        return lambda e: e.size == value
    if expr in KINDS:
        return lambda e: e.kind == expr
    if not _SYMBOL_TEXT.fullmatch(expr) or any(op in expr for op in "=!"):
        raise ValueError(f"cannot parse {shown(expr)}: use a kind, a size, a comparison such as size>=1024, "
                         f"or text of a symbol")
    return lambda e: expr in e.caller or any(expr in frame for frame in e.backtrace)


@dataclass
class CodeView:
    """Disassembly around a call site, from the kernel image's loaded segments."""

    segments: list[tuple[int, bytes]]  # (virtual address, bytes)
    symbols: SymbolTable

    def around(self, address: int, before: int = 3, after: int = 2) -> list[tuple[bool, str]]:
        for base, data in self.segments:
            if base <= address < base + len(data):
                break
        else:
            return [(True, f"0x{address:x}: (code not in the image)")]
        found = self.symbols.lookup(address)
        start = found[0].address if found and found[0].kind == "func" else max(base, address - 64)
        cs = Cs(CS_ARCH_X86, CS_MODE_64)
        insns = list(cs.disasm(data[start - base : address - base + 32], start))
        index = next((i for i, insn in enumerate(insns) if insn.address == address), None)
        if index is None:
            return [(True, f"0x{address:x}: (not an instruction boundary)")]
        rows = []
        for insn in insns[max(0, index - before) : index + after + 1]:
            text = f"{insn.mnemonic} {insn.op_str}".strip()
            if insn.mnemonic.startswith(("call", "j")) and insn.op_str.startswith("0x"):
                text = f"{insn.mnemonic} {self.symbols.describe(int(insn.op_str, 16))}"
            rows.append((insn.address == address, f"{self.symbols.describe(insn.address):<48} {text}"))
        return rows


class Stepper:
    def __init__(self, events: Sequence[AllocEvent], console: Console, code: CodeView | None = None,
                 heap_range: tuple[int, int] | None = None, heap_at: Callable[[int], HeapAt] | None = None) -> None:
        self.events = events
        self.console = console
        self.code = code
        self.heap_range = heap_range
        self.heap_at = heap_at  # seq -> the heap after it (the guest's free list then)
        self.position = -1
        self.plain = not console.is_terminal
        self._replayed: tuple[int, EventHeap] = (-1, EventHeap())

    # -- state at a position ---------------------------------------------------------------

    def _heap_at(self, position: int) -> EventHeap:
        """The live blocks after `position`: replayed forward from the last position shown."""
        at, heap = self._replayed
        if position < at:
            at, heap = -1, EventHeap()
        for event in self.events[at + 1 : position + 1]:
            heap.apply(event)
        self._replayed = (position, heap)
        return heap

    def _free_list(self, event: AllocEvent) -> tuple[tuple[int, int], ...]:
        return self.heap_at(event.seq).free_list if self.heap_at is not None else event.heap.free_list

    def heap_map(self, heap: EventHeap, free_list) -> str:
        """One row of cells over the heap's touched span: `#` used, `.` free-list, space neither."""
        free = list(free_list)
        used = [(b.ptr, b.ptr + max(b.size, 1)) for b in heap.blocks()]
        if not used and not free:
            return "(heap empty)"
        # Zoom to the touched part: live blocks, and free blocks up to their start (the last
        # free block usually runs to the end of the heap and would shrink everything else).
        low = self.heap_range[0] if self.heap_range else min(a for a, _ in used + free)
        high = max([b for _, b in used] + [a + min(s, 64) for a, s in free])
        cell = max(1, -(-(high - low) // MAP_CELLS))
        cells = [" "] * MAP_CELLS
        for mark, ranges in ((".", [(a, a + s) for a, s in free]), ("#", [(b.ptr, b.ptr + max(b.size, 1)) for b in heap.blocks()])):
            for a, b in ranges:
                for i in range(max(0, (a - low) // cell), min(MAP_CELLS, -(-(b - low) // cell))):
                    cells[i] = mark
        return f"0x{low:x} [{''.join(cells)}] 0x{low + cell * MAP_CELLS:x}  ({cell} bytes a cell)"

    # -- drawing ---------------------------------------------------------------------------

    def show(self) -> None:
        event = self.events[self.position]
        heap = self._heap_at(self.position)
        header = f"event {self.position + 1}/{len(self.events)}  {event.describe()}"
        timing = f"instructions {event.insn_entry}" + (f"..{event.insn_return}" if event.insn_return is not None else "")
        if event.cycles_entry:
            timing += f"  cycles {event.cycles_entry}" + (f"..{event.cycles_return}" if event.cycles_return else "")
        code = self.code.around(event.call_site) if self.code else []
        stats = event.heap
        free_blocks = self._free_list(event)
        stat_line = (f"live {stats.live_blocks} blocks / {stats.live_bytes} bytes (events)"
                     + (f"; guest used {stats.used} free {stats.free} in {stats.free_blocks} free blocks"
                        if stats.used is not None else ""))
        free_list = ", ".join(f"0x{a:x}+{s}" for a, s in free_blocks[:8])
        if len(free_blocks) > 8:
            free_list += f", … ({len(free_blocks)} in all)"
        if not free_list:
            count = stats.free_blocks
            free_list = f"{count} block{'' if count == 1 else 's'} (not recorded per event)" if count else "(none)"
        if self.plain:
            out = [header, f"  {timing}", "  backtrace: " + " <- ".join(event.backtrace)]
            out += [("  => " if here else "     ") + line for here, line in code]
            out += [f"  heap: {self.heap_map(heap, free_blocks)}", f"  free list: {free_list}", f"  stats: {stat_line}"]
            self.console.print("\n".join(out), markup=False, highlight=False, soft_wrap=True)
            return
        table = Table.grid(padding=(0, 1))
        table.add_row(Text(timing, style="dim"))
        table.add_row(Text("backtrace: " + " <- ".join(event.backtrace)))
        for here, line in code:
            table.add_row(Text(("=> " if here else "   ") + line, style="bold yellow" if here else ""))
        table.add_row(Text("heap " + self.heap_map(heap, free_blocks), style="cyan"))
        table.add_row(Text("free list: " + free_list))
        table.add_row(Text(stat_line, style="green"))
        self.console.print(Panel(table, title=header, title_align="left"))

    # -- commands --------------------------------------------------------------------------

    def step(self, command: str) -> bool:
        """Apply one command; returns False to quit."""
        command = command.strip()
        word, _, rest = command.partition(" ")
        if word in ("q", "quit"):
            return False
        if not self.events:
            self.console.print("the trace has no allocation events")
            return False
        if word in ("", "n", "next"):
            return self._go(self.position + 1)
        if word in ("p", "prev"):
            return self._go(self.position - 1)
        if word in ("g", "go"):
            try:
                return self._go(int(rest, 0) - 1)
            except ValueError:
                self.console.print(f"g needs an event number from 1 to {len(self.events)}")
                return True
        if word in ("c", "continue"):
            try:
                match = matcher(rest)
            except ValueError as exc:
                self.console.print(str(exc))
                return True
            for i in range(self.position + 1, len(self.events)):
                if match(self.events[i]):
                    return self._go(i)
            self.console.print(f"no later event matches {shown(rest)}")
            return True
        self.console.print("commands: Enter/n next, p previous, c EXPR continue, g N go to event N, q quit")
        return True

    def _go(self, position: int) -> bool:
        if position >= len(self.events):
            self.console.print(f"end of trace ({len(self.events)} events)")
            return True
        if position < 0:
            self.console.print("at the first event")
            position = 0
        self.position = position
        self.show()
        return True

    def run(self, commands: Iterable[str], prompt: Callable[[], None] | None = None) -> None:
        self.step("n")
        for command in commands:
            if not self.step(command):
                break
            if prompt:
                prompt()
