"""Kernel symbols: demangled Rust names, address lookup and name lookup.

Host views show Rust paths (`aetherion::allocator::bump::BumpAllocator::alloc`), so every
name is demangled once when the table is built. Lookups accept the demangled path, the raw
`.symtab` name, and rustc's v0 shim spelling (`__rustc::__rust_alloc`) for `__rust_*` names.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

import rust_demangler

_LEGACY_HASH = re.compile(r"::h[0-9a-f]{16}$")


@dataclass(frozen=True)
class Symbol:
    name: str  # demangled, without the legacy hash
    raw: str  # as in .symtab
    address: int
    size: int
    kind: str  # "func", "object" or "notype"


def demangle(raw: str) -> str:
    """Rust legacy or v0 name -> path without hash; anything else unchanged."""
    if not (raw.startswith("_ZN") or raw.startswith("_R")):
        return raw
    try:
        name = rust_demangler.demangle(raw)
    except Exception:  # the demangler raises assorted errors on names it does not know
        return raw
    return _LEGACY_HASH.sub("", name)


def _aliases(name: str) -> list[str]:
    # rustc emits the allocator shims as `__rustc::__rust_alloc` (v0); our kernel plainly.
    if name.startswith("__rustc::"):
        return [name, name.removeprefix("__rustc::")]
    return [name]


class SymbolTable:
    """Immutable view over a kernel's symbols."""

    def __init__(self, symbols: list[Symbol]) -> None:
        self._all = tuple(sorted(symbols, key=lambda s: (s.address, s.kind != "func", s.name)))
        self._by_name: dict[str, Symbol] = {}
        for sym in self._all:
            for alias in (*_aliases(sym.name), sym.raw):
                existing = self._by_name.get(alias)
                if existing is None or (existing.kind != "func" and sym.kind == "func"):
                    self._by_name[alias] = sym
        # Address lookup prefers sized function/object symbols; plain labels fill the gaps.
        self._ranked = [s for s in self._all if s.kind in ("func", "object")] or list(self._all)
        self._starts = [s.address for s in self._ranked]

    def __iter__(self):
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Symbol | None:
        return self._by_name.get(name)

    def address(self, name: str) -> int:
        sym = self._by_name.get(name)
        if sym is None:
            raise KeyError(f"no symbol named {name!r}")
        return sym.address

    def lookup(self, address: int) -> tuple[Symbol, int] | None:
        """The symbol containing `address` and the offset into it, or None."""
        i = bisect.bisect_right(self._starts, address) - 1
        while i >= 0:
            sym = self._ranked[i]
            if sym.size == 0 or address < sym.address + sym.size:
                return sym, address - sym.address
            if sym.kind == "func":
                return None
            i -= 1
        return None

    def describe(self, address: int) -> str:
        """`symbol+0xoff` as shown in reports, or the bare address."""
        found = self.lookup(address)
        if found is None:
            return f"0x{address:x}"
        sym, off = found
        return f"{sym.name}+0x{off:x}" if off else sym.name
