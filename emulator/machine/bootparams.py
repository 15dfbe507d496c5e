"""The boot-parameter block the loader leaves at BOOT_PARAMS for the firmware (docs/boot-protocol.md)."""

from __future__ import annotations

import struct

from emulator.errors import UsageError
from emulator.layout import (
    BOOT_PARAMS_HAS_CMDLINE,
    BOOT_PARAMS_HEADER,
    BOOT_PARAMS_MAGIC,
    BOOT_PARAMS_VERSION,
    MAX_CMDLINE,
)

# magic u32, version u32, PVH entry u32, flags u32, RAM size u64, command-line length u32, reserved u32
_HEADER = struct.Struct("<IIIIQII")
assert _HEADER.size == BOOT_PARAMS_HEADER


def encode_cmdline(cmdline: str | None) -> bytes | None:
    """The command line's bytes, checked against what the block can carry (None: no command line)."""
    if cmdline is None:
        return None
    try:
        raw = cmdline.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the kernel command line is not valid UTF-8 text") from None
    if len(raw) > MAX_CMDLINE or b"\0" in raw:
        raise UsageError(f"the kernel command line must be at most {MAX_CMDLINE} bytes with no NUL byte")
    return raw


def boot_parameter_block(entry: int, ram_size: int, cmdline: str | None) -> bytes:
    raw = encode_cmdline(cmdline)
    flags = 0 if raw is None else BOOT_PARAMS_HAS_CMDLINE
    body = b"" if raw is None else raw
    header = _HEADER.pack(BOOT_PARAMS_MAGIC, BOOT_PARAMS_VERSION, entry, flags, ram_size, len(body), 0)
    return header + body + b"\0"
