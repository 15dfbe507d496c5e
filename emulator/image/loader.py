"""Kernel image loader: checks a PVH ELF64 against the machine's memory map.

Everything a hostile or broken file can get wrong ends in one `ImageError` line; `elf.py`
does the parsing (pyelftools' import alone cost a boot tens of ms), and every size is checked
against the file before it is trusted, so a header that claims gigabytes costs nothing.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from emulator.errors import ImageError
from emulator.image.elf import SYMBOL_TABLE_TYPES, ElfFile, ElfFormatError
from emulator.image.symbols import Symbol, SymbolTable, demangle
from emulator.layout import LOW_MEMORY_END, PVH_NOTE_NAME, ROM_BASE, XEN_ELFNOTE_PHYS32_ENTRY

MAX_IMAGE_BYTES = 1 << 30
_SYMBOL_KINDS = {2: "func", 1: "object", 0: "notype"}  # STT_FUNC, STT_OBJECT, STT_NOTYPE
EM_X86_64, ET_EXEC, PT_LOAD, PT_NOTE = 62, 2, 1, 4
PF_X, PF_W, PF_R = 1, 2, 4


@dataclass(frozen=True)
class Segment:
    paddr: int
    vaddr: int
    memsz: int
    data: bytes  # p_filesz bytes; the rest up to memsz is zero
    flags: str  # "r-x" style


@dataclass(frozen=True)
class KernelImage:
    path: str
    sha256: str
    entry: int  # PVH 32-bit entry, physical
    segments: tuple[Segment, ...]
    symbols: SymbolTable

    @property
    def end(self) -> int:
        return max(s.paddr + s.memsz for s in self.segments)


def load_image(path: str | Path, ram_size: int) -> KernelImage:
    """Read and check `path`; raises ImageError with a message naming what is wrong."""
    path = Path(path)
    data = _read(path)
    if len(data) < 4 or data[:4] != b"\x7fELF":
        raise ImageError(f"{path}: not an ELF file")
    if len(data) < 64:
        raise ImageError(f"{path}: truncated ELF header ({len(data)} bytes)")
    if data[4] != 2:
        raise ImageError(f"{path}: ELF32 image; aeth-emu boots ELF64 x86-64 kernels")
    if data[5] != 1:
        raise ImageError(f"{path}: big-endian ELF; x86-64 kernels are little-endian")
    try:
        elf = ElfFile(data)
        if elf.e_machine != EM_X86_64:
            raise ImageError(f"{path}: machine is {_enum_name('ENUM_E_MACHINE', elf.e_machine)}, not x86-64 (EM_X86_64)")
        if elf.e_type != ET_EXEC:
            raise ImageError(f"{path}: ELF type is {_enum_name('ENUM_E_TYPE', elf.e_type)}, expected an executable (ET_EXEC)")
        _check_table(path, len(data), elf.e_phoff, elf.e_phnum, elf.e_phentsize, "program header")
        segments = _segments(path, elf, len(data), ram_size)
        entry = _pvh_entry(path, elf, len(data))
        symbols = _symbols(path, elf, len(data))
    except ElfFormatError as exc:
        raise ImageError(f"{path}: malformed ELF ({exc})") from None
    if not any(s.paddr <= entry < s.paddr + s.memsz and "x" in s.flags for s in segments):
        raise ImageError(f"{path}: PVH entry 0x{entry:x} is not inside an executable PT_LOAD segment")
    return KernelImage(str(path), hashlib.sha256(data).hexdigest(), entry, segments, symbols)


def _enum_name(table: str, value: int) -> str | int:
    """pyelftools' name for an ELF header value, as messages have always given it (only on this error path)."""
    from elftools.elf import enums

    names = {v: k for k, v in getattr(enums, table).items() if isinstance(v, int)}
    return names.get(value, value)


def _read(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{path}: empty file")
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"{path}: {size} bytes is larger than any kernel the machine can hold")
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None


def _check_table(path: Path, file_size: int, offset: int, count: int, entsize: int, what: str) -> None:
    if count and (entsize < 1 or offset + count * entsize > file_size):
        raise ImageError(f"{path}: {what} table ({count} entries at 0x{offset:x}) runs past the end of the file")


def _flags(p_flags: int) -> str:
    return (
        ("r" if p_flags & PF_R else "-")
        + ("w" if p_flags & PF_W else "-")
        + ("x" if p_flags & PF_X else "-")
    )


def _segments(path: Path, elf: ElfFile, file_size: int, ram_size: int) -> tuple[Segment, ...]:
    loads: list[Segment] = []
    for index in range(elf.num_segments()):
        ph = elf.segment(index)
        if ph.p_type != PT_LOAD or ph.p_memsz == 0:
            continue
        where = f"{path}: PT_LOAD segment {index}"
        paddr, memsz, filesz, offset = ph.p_paddr, ph.p_memsz, ph.p_filesz, ph.p_offset
        if filesz > memsz:
            raise ImageError(f"{where} has p_filesz 0x{filesz:x} larger than p_memsz 0x{memsz:x}")
        if offset + filesz > file_size:
            raise ImageError(f"{where} is truncated: its data ends at 0x{offset + filesz:x}, the file at 0x{file_size:x}")
        if paddr < LOW_MEMORY_END:
            region = "the BIOS ROM" if paddr + memsz > ROM_BASE else "low memory"
            raise ImageError(f"{where} at 0x{paddr:x} overlaps {region}; kernels load at or above 0x100000")
        if paddr + memsz > ram_size:
            raise ImageError(
                f"{where} [0x{paddr:x}, 0x{paddr + memsz:x}) lies beyond RAM end 0x{ram_size:x} "
                f"(give the machine more RAM)"
            )
        for other in loads:
            if paddr < other.paddr + other.memsz and other.paddr < paddr + memsz:
                raise ImageError(f"{where} [0x{paddr:x}, 0x{paddr + memsz:x}) overlaps another segment at 0x{other.paddr:x}")
        loads.append(Segment(paddr, ph.p_vaddr, memsz, elf.data[offset : offset + filesz], _flags(ph.p_flags)))
    if not loads:
        raise ImageError(f"{path}: no PT_LOAD segments")
    return tuple(loads)


def _pvh_entry(path: Path, elf: ElfFile, file_size: int) -> int:
    for index in range(elf.num_segments()):
        ph = elf.segment(index)
        if ph.p_type != PT_NOTE:
            continue
        offset, size = ph.p_offset, ph.p_filesz
        if offset + size > file_size:
            raise ImageError(f"{path}: PT_NOTE segment {index} runs past the end of the file")
        entry = _find_pvh_note(elf.data[offset : offset + size])
        if entry is not None:
            return entry
    raise ImageError(f"{path}: no Xen PVH entry note (PT_NOTE 'Xen' type 18); not a PVH kernel")


def _find_pvh_note(blob: bytes) -> int | None:
    # Parsed by hand so that a note with lying sizes stops at the blob's end.
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + ((descsz + 3) & ~3)
        if end > len(blob):
            return None
        name = blob[name_at : name_at + namesz].rstrip(b"\0")
        if name == PVH_NOTE_NAME and ntype == XEN_ELFNOTE_PHYS32_ENTRY and descsz in (4, 8):
            return int.from_bytes(blob[desc_at : desc_at + descsz], "little")
        pos = end
    return None


def _symbols(path: Path, elf: ElfFile, file_size: int) -> SymbolTable:
    if elf.e_shoff == 0 or elf.e_shnum == 0:
        return SymbolTable([])
    _check_table(path, file_size, elf.e_shoff, elf.e_shnum, elf.e_shentsize, "section header")
    symtab = elf.section_by_name(".symtab")
    if symtab is None or symtab.sh_type not in SYMBOL_TABLE_TYPES:
        return SymbolTable([])
    result = []
    for name, kind_code, shndx, value, size in elf.symbols(symtab, ".symtab"):
        kind = _SYMBOL_KINDS.get(kind_code)
        if kind is None or not name or shndx == 0:  # SHN_UNDEF
            continue
        result.append(Symbol(demangle(name), name, value, size, kind))
    return SymbolTable(result)
