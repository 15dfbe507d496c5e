"""The assembly dialect (docs/assembly-dialect.md): lines, labels, directives and expressions."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class AssemblyError(Exception):
    """A problem in a source file; the message starts with `file:line: `."""


DATA_SIZES = {".byte": 1, ".word": 2, ".short": 2, ".long": 4, ".int": 4, ".quad": 8}


class UnknownName(Exception):
    """Raised by a symbol lookup that can say more than "undefined symbol" (a struct without
    that field); the expression turns it into an AssemblyError naming its line."""


@dataclass(frozen=True)
class Where:
    file: str
    line: int
    macro: str = ""  # for a line a macro expansion made: "in macro NAME at FILE:LINE", innermost first

    def error(self, message: str) -> AssemblyError:
        suffix = f" ({self.macro})" if self.macro else ""
        return AssemblyError(f"{self.file}:{self.line}: {message}{suffix}")


@dataclass(frozen=True)
class Line:
    where: Where
    labels: tuple[str, ...]
    directive: str | None  # ".byte", ".section", …
    args: str  # the directive's arguments, or the instruction text
    is_instruction: bool


_LABEL = re.compile(r"\s*([A-Za-z_.][\w.$]*)\s*:(?!:)")


def _unquoted(text: str):
    """(index, char, depth) for each character outside string and character literals, where
    depth counts the open brackets and parentheses; quoted characters are skipped."""
    depth, quote, escaped = 0, None, False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
            continue
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        yield i, ch, depth


def strip_comment(text: str) -> str:
    for i, ch, _ in _unquoted(text):
        if ch == ";":
            return text[:i].strip()
    return text.strip()


def parse_line(where: Where, body: str) -> Line | None:
    """One line without its comment: labels, then a directive or an instruction (None if empty)."""
    labels = []
    while True:
        m = _LABEL.match(body)
        if not m:
            break
        labels.append(m.group(1))
        body = body[m.end():].strip()
    if not body:
        return Line(where, tuple(labels), None, "", False) if labels else None
    if body.startswith("."):
        name, _, args = body.partition(" ")
        return Line(where, tuple(labels), name.lower(), args.strip(), False)
    return Line(where, tuple(labels), None, body, True)


def parse_lines(file: str, text: str) -> list[Line]:
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = parse_line(Where(file, number), strip_comment(raw))
        if line is not None:
            lines.append(line)
    return lines


def split_args(text: str) -> list[str]:
    """Split on commas outside brackets, parentheses and quotes."""
    parts, begin = [], 0
    for i, ch, depth in _unquoted(text):
        if ch == "," and depth == 0:
            parts.append(text[begin:i].strip())
            begin = i + 1
    if text.strip() or parts:
        parts.append(text[begin:].strip())
    return parts


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


def parse_string(text: str, where: Where) -> bytes:
    text = text.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise where.error(f"expected a quoted string, got {text!r}")
    out = bytearray()
    body = text[1:-1]
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "x":
                out.append(int(body[i + 2 : i + 4], 16))
                i += 4
                continue
            if nxt not in _ESCAPES:
                raise where.error(f"unknown escape \\{nxt}")
            out += _ESCAPES[nxt].encode()
            i += 2
            continue
        out += ch.encode()
        i += 1
    return bytes(out)


# -- expressions ------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(0x[0-9a-fA-F]+|0b[01]+|\d+|'(?:\\.|[^'])'|<<|>>|[A-Za-z_.][\w.$]*|\$|[-+*/%&|^~()])")
_BINARY = [("|",), ("^",), ("&",), ("<<", ">>"), ("+", "-"), ("*", "/", "%")]


class Expr:
    """A parsed expression; `value(lookup)` evaluates it."""

    def __init__(self, text: str, where: Where) -> None:
        self.text = text
        self.where = where
        self.tokens = self._tokenize(text)

    def _tokenize(self, text: str) -> list[str]:
        tokens, pos = [], 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise self.where.error(f"cannot parse expression {text!r} at {text[pos:]!r}")
            tokens.append(m.group(1))
            pos = m.end()
        if not tokens:
            raise self.where.error("empty expression")
        return tokens

    def value(self, lookup: Callable[[str], int | None]) -> int:
        self._pos = 0
        self._lookup = lookup
        result = self._binary(0)
        if self._pos != len(self.tokens):
            raise self.where.error(f"unexpected {self.tokens[self._pos]!r} in {self.text!r}")
        return result

    def _binary(self, level: int) -> int:
        if level == len(_BINARY):
            return self._unary()
        left = self._binary(level + 1)
        while self._pos < len(self.tokens) and self.tokens[self._pos] in _BINARY[level]:
            op = self.tokens[self._pos]
            self._pos += 1
            right = self._binary(level + 1)
            if op in ("/", "%") and right == 0:
                raise self.where.error(f"division by zero in {self.text!r}")
            left = {"|": left | right, "^": left ^ right, "&": left & right, "<<": left << right, ">>": left >> right,
                    "+": left + right, "-": left - right, "*": left * right,
                    "/": left // right if op == "/" else 0, "%": left % right if op == "%" else 0}[op]
        return left

    def _unary(self) -> int:
        if self._pos >= len(self.tokens):
            raise self.where.error(f"expression {self.text!r} ends too early")
        tok = self.tokens[self._pos]
        self._pos += 1
        if tok == "-":
            return -self._unary()
        if tok == "+":
            return self._unary()
        if tok == "~":
            return ~self._unary()
        if tok == "(":
            value = self._binary(0)
            if self._pos >= len(self.tokens) or self.tokens[self._pos] != ")":
                raise self.where.error(f"missing ')' in {self.text!r}")
            self._pos += 1
            return value
        if tok.startswith("0x"):
            return int(tok, 16)
        if tok.startswith("0b"):
            return int(tok, 2)
        if tok.isdigit():
            return int(tok)
        if tok.startswith("'"):
            inner = tok[1:-1]
            return ord(_ESCAPES.get(inner[1], inner[1]) if inner.startswith("\\") else inner)
        try:
            value = self._lookup(tok)
        except UnknownName as exc:
            raise self.where.error(str(exc)) from None
        if value is None:
            raise self.where.error(f"undefined symbol {tok!r}")
        return value


def evaluate(text: str, where: Where, symbols: Mapping[str, int], here: int | None = None) -> int:
    def lookup(name: str) -> int | None:
        if name == "$":
            return here
        return symbols.get(name)

    return Expr(text, where).value(lookup)
