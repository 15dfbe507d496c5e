"""Hand-built ELF files for loader tests: valid by default, each field overridable.

Built with struct rather than the toolchain so that malformed variants (which no assembler
would write) are as easy to make as good ones.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4


@dataclass
class Seg:
    type: int = PT_LOAD
    flags: int = PF_R | PF_X
    paddr: int = 0x0220_0000
    data: bytes = b"\xf4"  # hlt
    memsz: int | None = None
    filesz: int | None = None
    offset: int | None = None
    align: int = 0x1000


def pvh_note(entry: int, name: bytes = b"Xen\0", ntype: int = 18, desc_size: int = 8) -> bytes:
    desc = entry.to_bytes(8, "little")[:desc_size]
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


@dataclass
class Elf:
    entry: int = 0x0220_0000
    segments: list[Seg] = field(default_factory=list)
    ei_class: int = 2
    machine: int = 62  # EM_X86_64
    etype: int = 2  # ET_EXEC
    phnum: int | None = None
    note: bytes | None = None  # None: a PVH note for `entry`

    def build(self) -> bytes:
        segs = list(self.segments) or [Seg()]
        note = pvh_note(self.entry) if self.note is None else self.note
        if note:
            segs.append(Seg(type=PT_NOTE, flags=PF_R, paddr=0, data=note, memsz=len(note), align=4))
        phoff = 64
        body_at = 0x1000
        body = bytearray()
        headers = b""
        for seg in segs:
            offset = seg.offset if seg.offset is not None else body_at + len(body)
            if seg.offset is None:
                body += seg.data
                body += b"\0" * (-len(body) % 16)
            filesz = seg.filesz if seg.filesz is not None else len(seg.data)
            memsz = seg.memsz if seg.memsz is not None else max(filesz, len(seg.data))
            headers += struct.pack("<IIQQQQQQ", seg.type, seg.flags, offset, seg.paddr, seg.paddr, filesz, memsz, seg.align)
        phnum = self.phnum if self.phnum is not None else len(segs)
        ident = b"\x7fELF" + bytes([self.ei_class, 1, 1, 0]) + b"\0" * 8
        ehdr = ident + struct.pack("<HHIQQQIHHHHHH", self.etype, self.machine, 1, self.entry, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
        image = bytearray(ehdr + headers)
        image += b"\0" * (body_at - len(image))
        return bytes(image + body)
