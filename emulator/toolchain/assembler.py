"""Assembling sources into sections: layout iterated to a fixpoint, every instruction verified.

Instruction sizes depend on symbol values (a short or a near jump) and symbol values on sizes,
so layout repeats until no size changes. Each instruction is assembled alone by keystone with
every symbol already replaced by its value, then decoded by capstone and compared with the
source line (roundtrip.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from keystone import KS_ARCH_X86, KS_MODE_16, KS_MODE_32, KS_MODE_64, Ks, KsError

from .dialect import DATA_SIZES, AssemblyError, Expr, Line, UnknownName, Where, parse_string, split_args
from .macros import expand_sources
from .operands import parse_instruction
from .roundtrip import BRANCHES, canonical, verify
from .structs import StructDef, Structs, check_struct_name, parse_field

STANDARD_SECTIONS = ("text", "rodata", "data", "bss")
MAX_PASSES = 16
_KS_MODES = {16: KS_MODE_16, 32: KS_MODE_32, 64: KS_MODE_64}


@dataclass
class Stmt:
    where: Where
    kind: str  # "insn", "data", "bytes", "zero", "align", "org", "mark"
    section: str
    mode: int
    payload: object = None
    size: int = 0
    address: int = 0
    labels: tuple[str, ...] = ()  # qualified names bound to this statement's address
    scope: str = ""  # where `.L` names resolve: "file#function", falling back to "file#"


@dataclass
class SymbolInfo:
    name: str  # qualified label
    kind: str  # "func" or "object"
    rust_path: str | None
    start: str  # label
    end_mark: Stmt | None = None


@dataclass
class Program:
    sections: dict[str, list[Stmt]]
    labels: dict[str, int] = field(default_factory=dict)
    constants: dict[str, tuple[Expr, str]] = field(default_factory=dict)  # name -> (expr, file)
    symbols: list[SymbolInfo] = field(default_factory=list)
    pvh_entry: tuple[str, Where] | None = None
    label_order: list[str] = field(default_factory=list)
    label_where: dict[str, Where] = field(default_factory=dict)


def qualify(name: str, scope: str) -> str:
    """`.L` names are local to their function (scope `file#function`) or, outside one, the file."""
    return f"{scope}:{name}" if name.startswith(".L") else name


def file_scope(scope: str) -> str:
    return scope.split("#", 1)[0] + "#"


class Assembler:
    """One image's worth of sources. `flat` images have one stream and allow `.org`."""

    def __init__(self, sources: Sequence[tuple[str, str]], flat: bool, default_mode: int) -> None:
        self.flat = flat
        self.default_mode = default_mode
        self._ks: dict[int, Ks] = {}
        self._cache: dict[tuple[str, int, int], bytes] = {}
        # Layout state: labels not yet placed in this pass that lie later in the section being
        # placed are estimated as last pass's address plus how far this pass has moved so far.
        self._ahead: set[str] = set()
        self._shift = 0
        self.program = Program(sections={})
        self.structs = Structs(lambda scope: self.lookup(scope, strict=True))
        self._parse(sources)

    # -- parsing --------------------------------------------------------------------------

    def _parse(self, sources: Sequence[tuple[str, str]]) -> None:
        program = self.program
        for file, lines in expand_sources(sources):
            section, mode = "text", self.default_mode
            pending_labels: list[str] = []
            open_symbol: SymbolInfo | None = None
            open_struct: StructDef | None = None
            for line in lines:
                if open_struct is not None or line.directive in (".struct", ".endstruct"):
                    open_struct = self._struct_line(line, open_struct)
                    continue
                scope = f"{file}#{open_symbol.start if open_symbol else ''}"
                if line.directive in (".function", ".object"):
                    scope = f"{file}#{split_args(line.args)[0]}"
                for label in line.labels:
                    name = qualify(label, scope)
                    if name in program.label_where:
                        first = program.label_where[name]
                        raise line.where.error(f"label {label!r} already defined at {first.file}:{first.line}")
                    program.label_where[name] = line.where
                    program.label_order.append(name)
                    pending_labels.append(name)
                stmt: Stmt | None = None
                d, args, where = line.directive, line.args, line.where
                if line.is_instruction:
                    if section == "bss":
                        raise where.error("instructions are not allowed in bss")
                    stmt = Stmt(where, "insn", section, mode, args)
                elif d is None:
                    pass
                elif d in (".code16", ".code32", ".code64"):
                    mode = int(d[5:])
                elif d == ".section":
                    name = args.strip().lstrip(".")
                    if not name or not name.replace("_", "").isalnum():
                        raise where.error(f"bad section name {args!r}")
                    if self.flat and name != "text":
                        raise where.error("flat images (the firmware) have one section: use .org to place code and data")
                    if pending_labels:  # labels at a section's end belong to that section
                        program.sections.setdefault(section, []).append(
                            Stmt(where, "mark", section, mode, labels=tuple(pending_labels), scope=scope))
                        pending_labels = []
                    section = name
                    program.sections.setdefault(name, [])  # an empty custom section still gets __start/__stop
                elif d in DATA_SIZES:
                    values = [Expr(a, where) for a in split_args(args)]
                    stmt = Stmt(where, "data", section, mode, (DATA_SIZES[d], values), DATA_SIZES[d] * len(values))
                elif d in (".ascii", ".asciz", ".string"):
                    data = parse_string(args, where) + (b"\0" if d != ".ascii" else b"")
                    stmt = Stmt(where, "bytes", section, mode, data, len(data))
                elif d in (".zero", ".space", ".skip"):
                    stmt = Stmt(where, "zero", section, mode, Expr(args, where))
                elif d in (".align", ".balign", ".p2align"):
                    parts = split_args(args)
                    stmt = Stmt(where, "align", section, mode, (Expr(parts[0], where), d == ".p2align"))
                elif d == ".org":
                    if not self.flat:
                        raise where.error(".org is only for flat images (the firmware)")
                    stmt = Stmt(where, "org", section, mode, Expr(args, where))
                elif d in (".equ", ".set"):
                    parts = split_args(args)
                    if len(parts) != 2:
                        raise where.error(f"{d} takes NAME, EXPR")
                    name = qualify(parts[0], scope)  # a `.L` constant is local, as a `.L` label
                    if name in program.constants or name in program.label_where:
                        raise where.error(f"symbol {parts[0]!r} already defined")
                    program.constants[name] = (Expr(parts[1], where), scope)
                    program.label_where[name] = where
                elif d in (".function", ".object"):
                    if open_symbol is not None:
                        raise where.error(f"{d} inside an unfinished .{open_symbol.kind}")
                    parts = split_args(args)
                    open_symbol = SymbolInfo(parts[0], "func" if d == ".function" else "object",
                                             parts[1].strip() if len(parts) > 1 else None, parts[0])
                    program.symbols.append(open_symbol)
                elif d in (".endfunction", ".endobject"):
                    if open_symbol is None or (d == ".endfunction") != (open_symbol.kind == "func"):
                        raise where.error(f"{d} without a matching start")
                    stmt = Stmt(where, "mark", section, mode)
                    open_symbol.end_mark = stmt
                    open_symbol.start = qualify(open_symbol.start, f"{file}#")
                    open_symbol = None
                elif d == ".srcloc":
                    # A `file:line:col` string in rodata naming this line, for panic locations.
                    name = qualify(args.strip(), scope)
                    if name in program.label_where:
                        raise where.error(f"label {args.strip()!r} already defined")
                    program.label_where[name] = where
                    program.label_order.append(name)
                    text = f"{file}:{where.line}:5".encode() + b"\0"
                    program.sections.setdefault("rodata", []).append(
                        Stmt(where, "bytes", "rodata", mode, text, len(text), labels=(name,), scope=scope))
                elif d == ".pvh_entry":
                    program.pvh_entry = (qualify(args.strip(), f"{file}#"), where)
                elif d in (".global", ".globl", ".text", ".intel_syntax"):
                    pass  # every non-.L label is global already
                else:
                    raise where.error(f"unknown directive {d}")
                if stmt is not None:
                    stmt.scope = scope
                    if section == "bss" and stmt.kind not in ("zero", "align", "mark"):
                        raise where.error("bss holds only .zero (it is not in the file)")
                    stmt.labels = tuple(pending_labels)
                    pending_labels = []
                    program.sections.setdefault(section, []).append(stmt)
            if pending_labels:
                tail = Stmt(Where(file, 0), "mark", section, mode, labels=tuple(pending_labels), scope=f"{file}#")
                program.sections.setdefault(section, []).append(tail)
            if open_symbol is not None:
                raise AssemblyError(f"{file}: .{open_symbol.kind} {open_symbol.start} is never ended")
            if open_struct is not None:
                raise open_struct.where.error(f".struct {open_struct.name} is never ended (no .endstruct)")
        self._define_struct_constants()

    def _struct_line(self, line: Line, open_struct: StructDef | None) -> StructDef | None:
        """A line that opens, continues or ends a `.struct`: the definition still open after it."""
        where = line.where
        if line.directive == ".struct":
            if open_struct is not None:
                raise where.error(f".struct inside .struct {open_struct.name}: define it outside, then use "
                                  f"it as a field's type")
            name = line.args.strip()
            check_struct_name(name, where)
            if line.labels:
                raise where.error("a label cannot stand on a .struct line")
            if name in self.structs.defs:
                first = self.structs.defs[name].where
                raise where.error(f"struct {name} already defined at {first.file}:{first.line}")
            return StructDef(name, where, f"{where.file}#")
        if open_struct is None:
            raise where.error(".endstruct without .struct")
        if line.directive == ".endstruct":
            if line.labels or line.args:
                raise where.error(".endstruct stands alone on its line")
            self.structs.add(open_struct)
            return None
        open_struct.fields.append(parse_field(line, open_struct))
        return open_struct

    def _define_struct_constants(self) -> None:
        program = self.program
        self.structs.resolve_all()
        for name, (value, where) in self.structs.constants().items():
            if name in program.constants or name in program.label_where:
                first = program.label_where[name]
                raise where.error(f"{name!r} (a struct member) already defined at {first.file}:{first.line}")
            program.constants[name] = (Expr(str(value), where), f"{where.file}#")
            program.label_where[name] = where

    # -- layout ---------------------------------------------------------------------------

    def lookup(self, scope: str, strict: bool) -> Callable[[str], int | None]:
        labels, constants = self.program.labels, self.program.constants

        def get(name: str) -> int | None:
            for key in (qualify(name, scope), qualify(name, file_scope(scope))):
                if key in labels:
                    return labels[key] + (self._shift if key in self._ahead else 0)
                if key in constants:
                    expr, cscope = constants[key]
                    return expr.value(self.lookup(cscope, strict))
            member = self.structs.value(name)
            if member is not None:
                return member
            if strict:
                message = self.structs.missing(name)
                if message:
                    raise UnknownName(message)
                return None
            return 0

        return get

    def layout(self, place: Callable[[dict[str, int]], dict[str, int]]) -> None:
        """`place(sizes)` returns each section's start address given the sections' sizes."""
        moved: Stmt | None = None
        for attempt in range(MAX_PASSES):
            sizes = {name: sum(s.size for s in stmts) for name, stmts in self.program.sections.items()}
            starts = place(sizes)
            moved = None
            for name, stmts in self.program.sections.items():
                address = starts[name]
                self._ahead = {label for stmt in stmts for label in stmt.labels}
                for stmt in stmts:
                    self._shift = address - stmt.address if attempt else 0
                    stmt.address = address
                    for label in stmt.labels:
                        self.program.labels[label] = address
                        self._ahead.discard(label)
                    new = self._size(stmt, address)
                    if new != stmt.size and moved is None:
                        moved = stmt
                    stmt.size = new
                    address += new
            self._ahead, self._shift = set(), 0
            if moved is None:
                return
        where = moved.where if moved is not None else Where("?", 0)
        raise where.error(f"layout did not settle after {MAX_PASSES} passes (this statement's size keeps changing)")

    def _size(self, stmt: Stmt, address: int) -> int:
        if stmt.kind == "insn":
            return len(self._encode(stmt, address, strict=False))
        if stmt.kind == "zero":
            n = stmt.payload.value(self.lookup(stmt.scope, strict=False))  # type: ignore[union-attr]
            if n < 0:
                raise stmt.where.error(f".zero {n}: negative size")
            return n
        if stmt.kind == "align":
            expr, power = stmt.payload  # type: ignore[misc]
            n = expr.value(self.lookup(stmt.scope, strict=True))
            n = 1 << n if power else n
            if n <= 0 or n & (n - 1):
                raise stmt.where.error(f"alignment {n} is not a power of two")
            return -address % n
        if stmt.kind == "org":
            target = stmt.payload.value(self.lookup(stmt.scope, strict=False))  # type: ignore[union-attr]
            return max(target - address, 0)  # checked once layout settles, in _emit
        return stmt.size

    # -- encoding -------------------------------------------------------------------------

    def _keystone(self, mode: int) -> Ks:
        if mode not in self._ks:
            self._ks[mode] = Ks(KS_ARCH_X86, _KS_MODES[mode])
        return self._ks[mode]

    def _encode(self, stmt: Stmt, address: int, strict: bool) -> bytes:
        insn = parse_instruction(str(stmt.payload), stmt.where, self.lookup(stmt.scope, strict))
        length = 0
        if insn.rip_relative:
            length = len(self._keystone_asm(insn.render(address, 0), stmt, address))
        text = insn.render(address, length)
        code = self._keystone_asm(text, stmt, address)
        if strict:
            verify(insn, code, address, stmt.mode)
        return code

    def _keystone_asm(self, text: str, stmt: Stmt, address: int) -> bytes:
        mnemonic = canonical(text.split(None, 1)[0])
        relative = mnemonic in BRANCHES or "rip" in text
        key = (text, stmt.mode, address if relative else 0)
        code = self._cache.get(key)
        if code is None:
            try:
                encoding, _ = self._keystone(stmt.mode).asm(text, address)
            except KsError as exc:
                raise stmt.where.error(f"keystone cannot assemble {text!r}: {exc}") from None
            if not encoding:
                raise stmt.where.error(f"keystone produced nothing for {text!r}")
            code = bytes(encoding)
            self._cache[key] = code
        return code

    def emit(self, section: str, fill: int) -> bytes:
        out = bytearray()
        for stmt in self.program.sections.get(section, []):
            out += self._emit(stmt, fill)
        return bytes(out)

    def _emit(self, stmt: Stmt, fill: int) -> bytes:
        lookup = self.lookup(stmt.scope, strict=True)
        if stmt.kind == "insn":
            code = self._encode(stmt, stmt.address, strict=True)
            if len(code) != stmt.size:
                raise stmt.where.error("instruction size changed after layout settled")
            return code
        if stmt.kind == "data":
            width, exprs = stmt.payload  # type: ignore[misc]
            out = bytearray()
            for expr in exprs:
                value = expr.value(lookup)
                if not -(1 << (8 * width - 1)) <= value < (1 << (8 * width)):
                    raise stmt.where.error(f"value {value:#x} does not fit in {width} bytes")
                out += (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
            return bytes(out)
        if stmt.kind == "bytes":
            return stmt.payload  # type: ignore[return-value]
        if stmt.kind == "align":
            return bytes([0x90 if stmt.section == "text" and not self.flat else fill]) * stmt.size
        if stmt.kind == "org":
            target = stmt.payload.value(lookup)  # type: ignore[union-attr]
            if stmt.address + stmt.size != target:
                raise stmt.where.error(f".org 0x{target:x} is behind the location counter 0x{stmt.address:x}")
            return bytes([fill]) * stmt.size
        if stmt.kind == "zero":
            return bytes(stmt.size)
        return b""

    def undefined_check(self) -> None:
        """Evaluate every constant once in strict mode, so an undefined name is reported."""
        for name, (expr, scope) in self.program.constants.items():
            expr.value(self.lookup(scope, strict=True))
