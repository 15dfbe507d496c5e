"""A standard ELF64 ET_EXEC writer for the kernel: what readelf, objdump, gdb and QEMU expect.

The file mirrors memory: each loaded section sits at `0x1000 + (address - base)`, so file
offsets are congruent to addresses modulo the page size, as PT_LOAD requires.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from emulator.layout import PAGE_SIZE as PAGE
from emulator.layout import PVH_NOTE_NAME, XEN_ELFNOTE_PHYS32_ENTRY

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_NOBITS = 1, 2, 3, 7, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
SHN_ABS = 0xFFF1


@dataclass(frozen=True)
class Section:
    name: str
    address: int
    data: bytes  # empty for NOBITS
    size: int  # memory size
    flags: int  # SHF_*
    kind: int = SHT_PROGBITS
    align: int = 16


@dataclass(frozen=True)
class ElfSymbol:
    name: str
    value: int
    size: int
    kind: int  # STT_*
    bind: int  # STB_*


@dataclass(frozen=True)
class ProgramHeader:
    start: int  # address
    file_size: int
    mem_size: int
    flags: int  # PF_*


def xen_note(entry: int) -> bytes:
    return struct.pack("<III", 4, 8, XEN_ELFNOTE_PHYS32_ENTRY) + PVH_NOTE_NAME + b"\0" + struct.pack("<Q", entry)


class _StringTable:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self._index: dict[str, int] = {"": 0}

    def add(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.data)
            self.data += text.encode() + b"\0"
        return self._index[text]


def write_elf(base: int, entry: int, sections: list[Section], segments: list[ProgramHeader],
              note: Section, symbols: list[ElfSymbol]) -> bytes:
    """Sections must be in address order; `note` is one of them (inside a loaded segment)."""
    top = max(s.address + len(s.data) for s in sections)
    image = bytearray(PAGE + (top - base))
    for s in sections:
        if s.kind != SHT_NOBITS:
            offset = PAGE + s.address - base
            image[offset : offset + len(s.data)] = s.data

    def section_index(address: int) -> int:
        for i, s in enumerate(sections, 1):
            if s.address <= address < s.address + max(s.size, 1):
                return i
        last = sections[-1]
        return len(sections) if address == last.address + last.size else SHN_ABS

    # .symtab: the null symbol, locals, then globals (ELF requires locals first).
    strtab = _StringTable()
    ordered = sorted(symbols, key=lambda s: (s.bind != STB_LOCAL, s.value, s.name))
    symtab = bytearray(24)
    for sym in ordered:
        symtab += struct.pack("<IBBHQQ", strtab.add(sym.name), (sym.bind << 4) | sym.kind, 0,
                              section_index(sym.value), sym.value, sym.size)
    first_global = 1 + sum(1 for s in ordered if s.bind == STB_LOCAL)

    shstrtab = _StringTable()
    names = [shstrtab.add(s.name) for s in sections]
    symtab_name, strtab_name, shstr_name = shstrtab.add(".symtab"), shstrtab.add(".strtab"), shstrtab.add(".shstrtab")

    def append(blob: bytes, align: int = 8) -> int:
        image.extend(b"\0" * (-len(image) % align))
        offset = len(image)
        image.extend(blob)
        return offset

    symtab_off = append(bytes(symtab))
    strtab_off = append(bytes(strtab.data), 1)
    shstr_off = append(bytes(shstrtab.data), 1)
    shoff = append(b"", 8)

    headers = bytearray(64)  # the null section
    for s, name in zip(sections, names):
        offset = PAGE + s.address - base
        headers += struct.pack("<IIQQQQIIQQ", name, s.kind, s.flags, s.address, offset,
                               s.size, 0, 0, s.align, 0)
    strtab_index = len(sections) + 2
    headers += struct.pack("<IIQQQQIIQQ", symtab_name, SHT_SYMTAB, 0, 0, symtab_off, len(symtab),
                           strtab_index, first_global, 8, 24)
    headers += struct.pack("<IIQQQQIIQQ", strtab_name, SHT_STRTAB, 0, 0, strtab_off, len(strtab.data), 0, 0, 1, 0)
    headers += struct.pack("<IIQQQQIIQQ", shstr_name, SHT_STRTAB, 0, 0, shstr_off, len(shstrtab.data), 0, 0, 1, 0)
    image += headers
    shnum = len(sections) + 4

    phdrs = bytearray()
    for seg in segments:
        phdrs += struct.pack("<IIQQQQQQ", PT_LOAD, seg.flags, PAGE + seg.start - base, seg.start, seg.start,
                             seg.file_size, seg.mem_size, PAGE)
    phdrs += struct.pack("<IIQQQQQQ", PT_NOTE, PF_R, PAGE + note.address - base, note.address, note.address,
                         len(note.data), len(note.data), 4)
    phnum = len(segments) + 1
    if 64 + len(phdrs) > PAGE:
        raise ValueError("too many program headers for the first page")
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, shoff, 0, 64, 56, phnum, 64, shnum,
                                 shnum - 1)
    image[0:64] = header
    image[64 : 64 + len(phdrs)] = phdrs
    return bytes(image)
