"""The kernel image loader as it was on pyelftools (before emulator/image/elf.py): the reference
tests/test_elf_reader.py holds the loader to. Only the parsing differs; the checks are the loader's."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emulator.errors import ImageError
from emulator.image.loader import KernelImage, Segment, _find_pvh_note, _read
from emulator.image.symbols import Symbol, SymbolTable, demangle
from emulator.layout import LOW_MEMORY_END, ROM_BASE

_SYMBOL_KINDS = {"STT_FUNC": "func", "STT_OBJECT": "object", "STT_NOTYPE": "notype"}


def reference_load_image(path: str | Path, ram_size: int) -> KernelImage:
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
        elf = ELFFile(io.BytesIO(data))
        header = elf.header
        if header["e_machine"] != "EM_X86_64":
            raise ImageError(f"{path}: machine is {header['e_machine']}, not x86-64 (EM_X86_64)")
        if header["e_type"] != "ET_EXEC":
            raise ImageError(f"{path}: ELF type is {header['e_type']}, expected an executable (ET_EXEC)")
        _check_table(path, len(data), header["e_phoff"], header["e_phnum"], header["e_phentsize"], "program header")
        segments = _segments(path, elf, len(data), ram_size)
        entry = _pvh_entry(path, elf, len(data))
        symbols = _symbols(path, elf, len(data))
    except ImageError:
        raise
    except ELFError as exc:
        raise ImageError(f"{path}: malformed ELF ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - pyelftools on hostile input raises anything (seek overflows, bad enums)
        raise ImageError(f"{path}: malformed ELF ({type(exc).__name__}: {exc})") from None
    if not any(s.paddr <= entry < s.paddr + s.memsz and "x" in s.flags for s in segments):
        raise ImageError(f"{path}: PVH entry 0x{entry:x} is not inside an executable PT_LOAD segment")
    return KernelImage(str(path), hashlib.sha256(data).hexdigest(), entry, segments, symbols)


def _check_table(path: Path, file_size: int, offset: int, count: int, entsize: int, what: str) -> None:
    if count and (entsize < 1 or offset + count * entsize > file_size):
        raise ImageError(f"{path}: {what} table ({count} entries at 0x{offset:x}) runs past the end of the file")


def _flags(p_flags: int) -> str:
    return (
        ("r" if p_flags & P_FLAGS.PF_R else "-")
        + ("w" if p_flags & P_FLAGS.PF_W else "-")
        + ("x" if p_flags & P_FLAGS.PF_X else "-")
    )


def _segments(path: Path, elf: ELFFile, file_size: int, ram_size: int) -> tuple[Segment, ...]:
    loads: list[Segment] = []
    for index in range(elf.num_segments()):
        ph = elf.get_segment(index).header
        if ph["p_type"] != "PT_LOAD" or ph["p_memsz"] == 0:
            continue
        where = f"{path}: PT_LOAD segment {index}"
        paddr, memsz, filesz, offset = ph["p_paddr"], ph["p_memsz"], ph["p_filesz"], ph["p_offset"]
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
        data = elf.stream.getvalue()[offset : offset + filesz]  # type: ignore[attr-defined]
        loads.append(Segment(paddr, ph["p_vaddr"], memsz, data, _flags(ph["p_flags"])))
    if not loads:
        raise ImageError(f"{path}: no PT_LOAD segments")
    return tuple(loads)


def _pvh_entry(path: Path, elf: ELFFile, file_size: int) -> int:
    for index in range(elf.num_segments()):
        segment = elf.get_segment(index)
        if segment.header["p_type"] != "PT_NOTE":
            continue
        offset, size = segment.header["p_offset"], segment.header["p_filesz"]
        if offset + size > file_size:
            raise ImageError(f"{path}: PT_NOTE segment {index} runs past the end of the file")
        entry = _find_pvh_note(elf.stream.getvalue()[offset : offset + size])  # type: ignore[attr-defined]
        if entry is not None:
            return entry
    raise ImageError(f"{path}: no Xen PVH entry note (PT_NOTE 'Xen' type 18); not a PVH kernel")


def _symbols(path: Path, elf: ELFFile, file_size: int) -> SymbolTable:
    header = elf.header
    if header["e_shoff"] == 0 or header["e_shnum"] == 0:
        return SymbolTable([])
    _check_table(path, file_size, header["e_shoff"], header["e_shnum"], header["e_shentsize"], "section header")
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        return SymbolTable([])
    result = []
    for sym in symtab.iter_symbols():
        kind = _SYMBOL_KINDS.get(sym["st_info"]["type"])
        if kind is None or not sym.name or sym["st_shndx"] == "SHN_UNDEF":
            continue
        result.append(Symbol(demangle(sym.name), sym.name, sym["st_value"], sym["st_size"], kind))
    return SymbolTable(result)
