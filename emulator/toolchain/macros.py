"""Macros (docs/assembly-dialect.md): `.macro NAME PARAMS` … `.endm`, expanded before assembly.

Every file of an image is scanned for definitions first, so a macro may be used in any file
of the image, before or after the one that defines it. An expansion's lines carry the
invoking line's file and line (a `.srcloc` in a macro names the line that uses the macro)
and, for error messages, the macro's own line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from capstone.x86_const import X86_INS_ENDING

from .dialect import Line, Where, parse_line, split_args, strip_comment
from .operands import PREFIXES
from .roundtrip import ALIASES

MAX_DEPTH = 64  # nested expansions: a macro that (indirectly) uses itself stops here
_NAME = re.compile(r"[A-Za-z_]\w*")
# A string or character literal (left alone), or a backslash sequence: \param, \@ or \().
_SUBSTITUTION = re.compile(r"""("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')|\\(\w+|@|\(\))""")
_cs = Cs(CS_ARCH_X86, CS_MODE_64)
MNEMONICS = frozenset({_cs.insn_name(i) for i in range(1, X86_INS_ENDING)} | set(ALIASES) | set(PREFIXES))


@dataclass(frozen=True)
class Macro:
    name: str
    params: tuple[str, ...]
    defaults: tuple[str | None, ...]  # a parameter's default text, or None when it is required
    body: tuple[tuple[int, str], ...]  # (line number, text without its comment)
    where: Where

    def arity(self) -> str:
        required = sum(d is None for d in self.defaults)
        count = f"{required}" if required == len(self.params) else f"{required} to {len(self.params)}"
        names = ", ".join(self.params)
        return f"{count} argument{'s' if len(self.params) != 1 else ''}" + (f" ({names})" if names else "")


def expand_sources(sources: Sequence[tuple[str, str]]) -> list[tuple[str, list[Line]]]:
    """Each file's lines with macro definitions taken out and invocations expanded."""
    macros: dict[str, Macro] = {}
    files = [(file, _collect(file, text, macros)) for file, text in sources]
    counter = [0]
    return [(file, [out for line in lines for out in _expand(line, macros, counter, 0)]) for file, lines in files]


def _collect(file: str, text: str, macros: dict[str, Macro]) -> list[Line]:
    """The file's lines outside macro definitions; each definition goes into `macros`."""
    lines: list[Line] = []
    pending: Macro | None = None  # the definition being read; its body is in `body`
    body: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        where = Where(file, number)
        stripped = strip_comment(raw)
        line = parse_line(where, stripped)
        if line is None:
            continue
        if line.directive == ".macro":
            if pending is not None:
                raise where.error(f".macro inside the definition of macro {pending.name} (started at line "
                                  f"{pending.where.line}): definitions do not nest")
            if line.labels:
                raise where.error("a label cannot stand on a .macro line")
            name, params, defaults = _signature(line.args, where, macros)
            pending, body = Macro(name, params, defaults, (), where), []
        elif line.directive == ".endm":
            if pending is None:
                raise where.error(".endm without .macro")
            if line.labels or line.args:
                raise where.error(".endm stands alone on its line")
            for body_number, body_text in body:
                _check_parameters(body_text, pending, Where(file, body_number))
            macros[pending.name] = replace(pending, body=tuple(body))
            pending = None
        elif pending is not None:
            body.append((number, stripped))
        else:
            lines.append(line)
    if pending is not None:
        raise pending.where.error(f".macro {pending.name} is never ended (no .endm)")
    return lines


def _signature(args: str, where: Where,
               macros: dict[str, Macro]) -> tuple[str, tuple[str, ...], tuple[str | None, ...]]:
    """`NAME P1, P2=DEFAULT, …` -> (name, parameters, defaults or None)."""
    name, *more = args.split(None, 1)
    rest = more[0] if more else ""
    if not _NAME.fullmatch(name):
        raise where.error(f"bad macro name {name!r}")
    if name.lower() in MNEMONICS:
        raise where.error(f"macro name {name!r} is an x86 mnemonic")
    if name in macros:
        first = macros[name].where
        raise where.error(f"macro {name} already defined at {first.file}:{first.line}")
    params: list[str] = []
    defaults: list[str | None] = []
    for part in split_args(rest):
        param, eq, default = part.partition("=")
        param = param.strip()
        if not _NAME.fullmatch(param):
            raise where.error(f"bad parameter name {param!r} for macro {name}")
        if param in params:
            raise where.error(f"macro {name} has two parameters named {param}")
        if defaults and defaults[-1] is not None and not eq:
            raise where.error(f"macro {name}: parameter {param} without a default follows one with a default")
        params.append(param)
        defaults.append(default.strip() if eq else None)
    return name, tuple(params), tuple(defaults)


def _check_parameters(text: str, macro: Macro, where: Where) -> None:
    for m in _SUBSTITUTION.finditer(text):
        word = m.group(2)
        if word is not None and word not in ("@", "()") and word not in macro.params:
            raise where.error(f"macro {macro.name} has no parameter \\{word}")


def _expand(line: Line, macros: dict[str, Macro], counter: list[int], depth: int) -> list[Line]:
    if not line.is_instruction:
        return [line]
    name, *rest = line.args.split(None, 1)
    macro = macros.get(name)
    if macro is None:
        return [line]
    where = line.where
    if depth >= MAX_DEPTH:
        message = f"macro expansions nested deeper than {MAX_DEPTH} (does {name} use itself?)"
        raise Where(where.file, where.line).error(message)
    args = split_args(rest[0]) if rest else []
    if len(args) > len(macro.params):
        raise where.error(f"macro {name} takes {macro.arity()}, got {len(args)}")
    for i, arg in enumerate(args):
        if not arg:
            raise where.error(f"argument {i + 1} ({macro.params[i]}) of macro {name} is empty")
    values: dict[str, str] = {}
    for i, (param, default) in enumerate(zip(macro.params, macro.defaults)):
        if i < len(args):
            values[param] = args[i]
        elif default is not None:
            values[param] = default
        else:
            raise where.error(f"macro {name} takes {macro.arity()}, got {len(args)}")
    counter[0] += 1
    unique = str(counter[0])

    def substitute(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return m.group(1)  # parameters are not replaced inside string literals
        word = m.group(2)
        return unique if word == "@" else "" if word == "()" else values[word]

    out: list[Line] = []
    if line.labels:  # labels on the invoking line: the address where the expansion begins
        out.append(Line(where, line.labels, None, "", False))
    for number, text in macro.body:
        trace = f"in macro {name} at {macro.where.file}:{number}" + (f", {where.macro}" if where.macro else "")
        inner = Where(where.file, where.line, trace)
        parsed = parse_line(inner, _SUBSTITUTION.sub(substitute, text).strip())
        if parsed is not None:
            out.extend(_expand(parsed, macros, counter, depth + 1))
    return out

