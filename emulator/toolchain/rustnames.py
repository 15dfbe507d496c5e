"""Rust legacy symbol mangling, so host tools show paths like `aetherion::kmain`."""

from __future__ import annotations

import hashlib
import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def mangle(path: str) -> str:
    """`aetherion::kmain` -> `_ZN9aetherion5kmain17h<16 hex>E`; a plain name stays as it is."""
    if "::" not in path:
        return path
    parts = path.split("::")
    for part in parts:
        if not _IDENT.fullmatch(part):
            raise ValueError(f"{part!r} in {path!r} is not an identifier")
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]  # stands in for rustc's crate hash
    return "_ZN" + "".join(f"{len(p)}{p}" for p in parts) + f"17h{digest}E"
