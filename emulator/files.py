"""Replacing a file the user named, whole or not at all."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def replace_atomically(target: str, write: Callable[[BinaryIO], None], mode: int | None) -> None:
    """Write through `write` into a file next to `target`, then rename it over `target`: an
    interrupted or failed write never leaves half a file, and the old one stays untouched. The
    file keeps `mode` (the old file's), or gets the usual permissions, not mkstemp's 0600."""
    folder = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask())
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException:  # a write error or Ctrl-C
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
