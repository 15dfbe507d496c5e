"""Instruction operands as the source asks for them, evaluated, and rendered for keystone.

Symbols are replaced by their values before keystone sees a line, because keystone's own
symbol resolver gets relative targets wrong; a RIP-relative operand's displacement is
computed here from the instruction's final length.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from .dialect import Expr, Where, split_args

_cs = Cs(CS_ARCH_X86, CS_MODE_64)
REGISTERS = frozenset(filter(None, (_cs.reg_name(i) for i in range(1, 400))))
SIZES = {"byte": 1, "word": 2, "dword": 4, "fword": 6, "qword": 8, "tbyte": 10, "xmmword": 16, "ymmword": 32, "zmmword": 64}
SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss")
PREFIXES = ("lock", "rep", "repe", "repz", "repne", "repnz")
_MEM = re.compile(r"^(?:(\w+)\s+ptr\s+)?(?:(\w\w)\s*:\s*)?\[(.*)\]$", re.IGNORECASE | re.DOTALL)
_FAR = re.compile(r"^([^:\[\]'\"]+):([^:\[\]'\"]+)$")


@dataclass(frozen=True)
class Reg:
    name: str

    def render(self, here: int, length: int) -> str:
        return self.name


@dataclass(frozen=True)
class Imm:
    value: int

    def render(self, here: int, length: int) -> str:
        return hex(self.value) if self.value >= 0 else f"-{hex(-self.value)}"


@dataclass(frozen=True)
class Far:
    selector: int
    offset: int

    def render(self, here: int, length: int) -> str:
        return f"{hex(self.selector)}:{hex(self.offset)}"


@dataclass(frozen=True)
class Mem:
    size: int | None
    segment: str | None
    base: str | None
    index: str | None
    scale: int
    disp: int  # for base == "rip": the absolute target address

    def render(self, here: int, length: int) -> str:
        parts = []
        if self.base:
            parts.append(self.base)
        if self.index:
            parts.append(f"{self.index}*{self.scale}")
        disp = self.disp - (here + length) if self.base == "rip" else self.disp
        text = " + ".join(parts)
        if disp or not parts:
            if text:
                text += f" + {hex(disp)}" if disp >= 0 else f" - {hex(-disp)}"
            else:
                text = hex(disp & 0xFFFFFFFFFFFFFFFF) if disp < 0 else hex(disp)
        size = next((name for name, n in SIZES.items() if n == self.size), None)
        out = f"[{text}]"
        if self.segment:
            out = f"{self.segment}:{out}"
        return f"{size} ptr {out}" if size else out


Operand = Reg | Imm | Far | Mem


@dataclass(frozen=True)
class Instruction:
    where: Where
    mnemonic: str  # with prefixes, lower case, single spaces: "lock cmpxchg"
    operands: tuple[Operand, ...]

    @property
    def rip_relative(self) -> bool:
        return any(isinstance(op, Mem) and op.base == "rip" for op in self.operands)

    def render(self, here: int, length: int = 0) -> str:
        ops = ", ".join(op.render(here, length) for op in self.operands)
        return f"{self.mnemonic} {ops}".strip()


def _split_mnemonic(text: str) -> tuple[str, str]:
    words = text.split(None, 1)
    mnemonic = [words[0].lower()]
    rest = words[1] if len(words) > 1 else ""
    while mnemonic[-1] in PREFIXES and rest:
        word, _, rest = rest.partition(" ")
        mnemonic.append(word.lower())
        rest = rest.strip()
    return " ".join(mnemonic), rest


def parse_instruction(text: str, where: Where, lookup: Callable[[str], int | None]) -> Instruction:
    mnemonic, rest = _split_mnemonic(text)
    operands = tuple(_operand(arg, where, lookup) for arg in split_args(rest)) if rest else ()
    return Instruction(where, mnemonic, operands)


def _value(text: str, where: Where, lookup: Callable[[str], int | None]) -> int:
    return Expr(text, where).value(lookup)


def _operand(text: str, where: Where, lookup: Callable[[str], int | None]) -> Operand:
    low = text.strip().lower()
    if low in REGISTERS:
        return Reg(low)
    m = _MEM.match(text.strip())
    if m:
        size_word, segment, inside = m.group(1), m.group(2), m.group(3)
        size = None
        if size_word:
            if size_word.lower() not in SIZES:
                raise where.error(f"unknown operand size {size_word!r}")
            size = SIZES[size_word.lower()]
        if segment and segment.lower() not in SEGMENTS:
            raise where.error(f"unknown segment {segment!r}")
        return _memory(inside, size, segment.lower() if segment else None, where, lookup)
    far = _FAR.match(text.strip())
    if far:
        return Far(_value(far.group(1), where, lookup), _value(far.group(2), where, lookup))
    if re.match(r"^\w+\s+ptr\b", low):
        raise where.error(f"memory operand {text!r} needs brackets")
    return Imm(_value(text, where, lookup))


def _memory(inside: str, size: int | None, segment: str | None, where: Where, lookup) -> Mem:
    base = index = None
    scale = 1
    disp_terms: list[str] = []
    # Split into signed terms at top-level + and -.
    terms, depth, current, sign = [], 0, [], "+"
    for ch in inside + "+":
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch in "+-" and depth == 0 and "".join(current).strip():
            terms.append((sign, "".join(current).strip()))
            current, sign = [], ch
        elif ch in "+-" and depth == 0:
            sign = "-" if (sign == "-") != (ch == "-") else "+"
        else:
            current.append(ch)
    for sign, term in terms:
        low = term.lower().replace(" ", "")
        if low in REGISTERS and sign == "+":
            if base is None:
                base = low
            elif index is None:
                index = low
            else:
                raise where.error(f"too many registers in [{inside}]")
            continue
        m = re.fullmatch(r"(\w+)\*(\d+)|(\d+)\*(\w+)", low)
        if m and sign == "+":
            reg, factor = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
            if reg in REGISTERS:
                if index is not None:
                    raise where.error(f"two index registers in [{inside}]")
                index, scale = reg, int(factor)
                if scale not in (1, 2, 4, 8):
                    raise where.error(f"scale {scale} must be 1, 2, 4 or 8")
                continue
        if low in REGISTERS:
            raise where.error(f"a register cannot be subtracted in [{inside}]")
        disp_terms.append(f"{sign}({term})")
    disp = _value("".join(disp_terms), where, lookup) if disp_terms else 0
    return Mem(size, segment, base, index, scale, disp)
