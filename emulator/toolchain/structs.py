"""Structures (docs/assembly-dialect.md): `.struct NAME` … `.endstruct` names field offsets.

    .struct ListNode
        size: .quad
        next: .quad
    .endstruct

defines the constants `ListNode.size` = 0, `ListNode.next` = 8 and `ListNode.SIZE` = 16.
A field's type is a data width with an optional element count (`.quad`, `.long 4`), a byte
count (`.zero N`), another structure (`head: ListNode`, which also defines
`LinkedListAllocator.head.next`), or a union of structures (`inner: A | B`: as large as the
largest, with the fields of each). There is no implicit padding: `.align N` pads the offset.
Structures are resolved after every file is read, so they may be used before their definition.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .dialect import DATA_SIZES, Expr, Line, Where

SIZE = "SIZE"  # `Name.SIZE`: the structure's size in bytes
_NAME = re.compile(r"[A-Za-z_]\w*")
Lookup = Callable[[str], int | None]


@dataclass(frozen=True)
class Field:
    name: str | None  # None for `.align`
    where: Where
    kind: str  # "data": (width, count), "bytes": count, "types": struct names, "align": boundary
    payload: object


@dataclass
class StructDef:
    name: str
    where: Where
    scope: str  # where the count expressions' names resolve
    fields: list[Field] = field(default_factory=list)
    size: int | None = None  # set once resolved
    members: dict[str, int] = field(default_factory=dict)  # "field" and "field.sub" -> offset


def check_struct_name(name: str, where: Where) -> None:
    if not _NAME.fullmatch(name):
        raise where.error(f"bad struct name {name!r} (a global identifier without dots)")


def parse_field(line: Line, struct: StructDef) -> Field:
    """One line of a `.struct` body: `name: TYPE` or `.align N`."""
    where = line.where
    if not line.labels:
        if line.directive in (".align", ".balign"):
            return Field(None, where, "align", Expr(line.args, where))
        raise where.error(f"in .struct {struct.name}: expected a field `name: TYPE` or .align N")
    if len(line.labels) > 1:
        raise where.error(f"in .struct {struct.name}: one field a line")
    name = line.labels[0]
    if not _NAME.fullmatch(name):
        raise where.error(f"bad field name {name!r} in .struct {struct.name}")
    if name == SIZE:
        raise where.error(f"a field cannot be named {SIZE}: {struct.name}.{SIZE} is the struct's size")
    if any(f.name == name for f in struct.fields):
        first = next(f.where for f in struct.fields if f.name == name)
        raise where.error(f"field {name!r} of {struct.name} already defined at {first.file}:{first.line}")
    d, args = line.directive, line.args
    if d in DATA_SIZES:
        return Field(name, where, "data", (DATA_SIZES[d], Expr(args, where) if args else None))
    if d in (".zero", ".space", ".skip"):
        return Field(name, where, "bytes", Expr(args, where))
    if line.is_instruction:
        types = [t.strip() for t in args.split("|")]
        if not all(_NAME.fullmatch(t) for t in types):
            raise where.error(f"field {name}: bad type {args!r} (a struct name, or names joined by |)")
        return Field(name, where, "types", tuple(types))
    if d is None:
        raise where.error(f"field {name} of {struct.name} needs a type (.quad, .zero N, a struct name)")
    raise where.error(f"field {name}: {d} is not a field type (.byte .word .long .quad [COUNT], .zero N, a struct)")


class Structs:
    """Every structure of one image, resolved on demand (a field may use a later one)."""

    def __init__(self, lookup: Callable[[str], Lookup]) -> None:
        self.defs: dict[str, StructDef] = {}
        self._lookup = lookup  # scope -> the image's strict lookup, for count expressions
        self._resolving: list[str] = []

    def add(self, struct: StructDef) -> None:
        self.defs[struct.name] = struct

    def resolve_all(self) -> None:
        for struct in self.defs.values():
            self.resolve(struct)

    def value(self, name: str) -> int | None:
        """`Name.SIZE`, `Name.field` or `Name.field.sub` (resolving Name first), else None."""
        head, _, rest = name.partition(".")
        struct = self.defs.get(head)
        if struct is None or not rest:
            return None
        self.resolve(struct)
        return struct.size if rest == SIZE else struct.members.get(rest)

    def resolve(self, struct: StructDef) -> None:
        if struct.size is not None:
            return
        if struct.name in self._resolving:
            chain = " -> ".join(self._resolving[self._resolving.index(struct.name):] + [struct.name])
            raise struct.where.error(f"struct {struct.name} depends on its own size ({chain})")
        self._resolving.append(struct.name)
        offset = 0
        for f in struct.fields:
            value = self._value(struct, f)
            if f.kind == "align":
                if value <= 0 or value & (value - 1):
                    raise f.where.error(f"alignment {value} is not a power of two")
                offset += -offset % value
                continue
            assert f.name is not None
            struct.members[f.name] = offset
            if f.kind == "types":
                for sub, at in self._nested(f).items():
                    struct.members[f"{f.name}.{sub}"] = offset + at
            offset += value
        struct.size = offset
        self._resolving.pop()

    def _value(self, struct: StructDef, f: Field) -> int:
        """A field's size in bytes, or an `.align` line's boundary."""
        if f.kind == "types":
            sizes = []
            for name in f.payload:  # type: ignore[union-attr]
                inner = self.defs.get(name)
                if inner is None:
                    raise f.where.error(f"field {f.name}: unknown struct type {name!r}")
                self.resolve(inner)
                assert inner.size is not None
                sizes.append(inner.size)
            return max(sizes)
        if f.kind == "data":
            width, count = f.payload  # type: ignore[misc]
            n = 1 if count is None else count.value(self._lookup(struct.scope))
        else:
            width, n = 1, f.payload.value(self._lookup(struct.scope))  # type: ignore[union-attr]
        if n < 0:
            raise f.where.error(f"field {f.name}: negative size {n}")
        return width * n

    def _nested(self, f: Field) -> dict[str, int]:
        """The fields of a struct-typed field's type(s), by name, relative to the field."""
        out: dict[str, int] = {}
        owner: dict[str, str] = {}
        for name in f.payload:  # type: ignore[union-attr]
            for sub, at in self.defs[name].members.items():
                if sub in out and out[sub] != at:
                    raise f.where.error(f"field {f.name}: {owner[sub]}.{sub} and {name}.{sub} are at different "
                                        f"offsets ({out[sub]}, {at}) in this union")
                out[sub], owner[sub] = at, name
        return out

    def constants(self) -> dict[str, tuple[int, Where]]:
        """`Name.field`, `Name.field.sub` and `Name.SIZE` with their values and definitions."""
        out: dict[str, tuple[int, Where]] = {}
        for struct in self.defs.values():
            assert struct.size is not None
            wheres = {f.name: f.where for f in struct.fields if f.name}
            for member, at in struct.members.items():
                out[f"{struct.name}.{member}"] = (at, wheres[member.split(".", 1)[0]])
            out[f"{struct.name}.{SIZE}"] = (struct.size, struct.where)
        return out

    def missing(self, name: str) -> str | None:
        """What to say about `Struct.nosuch`, or None when `name` does not start with a struct."""
        head, _, rest = name.partition(".")
        struct = self.defs.get(head)
        if struct is None or not rest:
            return None
        known = ", ".join(list(struct.members) + [SIZE])
        return f"struct {head} has no field {rest!r} (it has {known})"
