"""The few parts of an ELF64 little-endian file the loader reads: the header, the program headers,
the section headers and their names, and one symbol table.

Reads follow pyelftools' rules where it would parse (the loader used it; tests/test_elf_reader.py
compares the two): a structure that does not fit in the file, an entry size too small for its
structure, a symbol table without a string table, an unterminated name (read as empty). Sections
the loader does not use are not parsed at all, so their faults cannot reject an image.
"""

from __future__ import annotations

import struct

PHDR_SIZE, SHDR_SIZE = 56, 64
PN_XNUM = 0xFFFF  # e_phnum's escape: the count is section 0's sh_info
SHN_XINDEX = 0xFFFF  # e_shstrndx's escape: the index is section 0's sh_link
SHT_STRTAB = 3
SYMBOL_TABLE_TYPES = (2, 11, 0x6FFFFFF3)  # SHT_SYMTAB, SHT_DYNSYM, SHT_SUNW_LDYNSYM
SHF_COMPRESSED = 0x800

_EHDR = struct.Struct("<HHIQQQIHHHHHH")  # after e_ident
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_CHDR = struct.Struct("<IIQQ")
_SECTION_TYPES = {0: "SHT_NULL", 1: "SHT_PROGBITS", 2: "SHT_SYMTAB", 3: "SHT_STRTAB", 4: "SHT_RELA", 5: "SHT_HASH",
                  6: "SHT_DYNAMIC", 7: "SHT_NOTE", 8: "SHT_NOBITS", 9: "SHT_REL", 11: "SHT_DYNSYM"}  # for messages


class ElfFormatError(ValueError):
    """The file's structures contradict each other or the file's size."""


class ProgramHeader:
    __slots__ = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz")

    def __init__(self, fields: tuple[int, ...]) -> None:
        (self.p_type, self.p_flags, self.p_offset, self.p_vaddr, self.p_paddr, self.p_filesz,
         self.p_memsz) = fields[:7]


class SectionHeader:
    __slots__ = ("sh_name", "sh_type", "sh_flags", "sh_offset", "sh_size", "sh_link", "sh_info", "sh_entsize")

    def __init__(self, fields: tuple[int, ...]) -> None:
        (self.sh_name, self.sh_type, self.sh_flags, _, self.sh_offset, self.sh_size, self.sh_link,
         self.sh_info, _, self.sh_entsize) = fields


class ElfFile:
    """An ELF64 little-endian image in memory (the caller has checked e_ident's class and data)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        (self.e_type, self.e_machine, _, _, self.e_phoff, self.e_shoff, _, _, self.e_phentsize, self.e_phnum,
         self.e_shentsize, self.e_shnum, self.e_shstrndx) = self._unpack(_EHDR, 16)

    def _unpack(self, layout: struct.Struct, offset: int) -> tuple[int, ...]:
        available = max(len(self.data) - offset, 0)
        if available < layout.size:
            raise ElfFormatError(f"expected {layout.size}, found {available}")
        return layout.unpack_from(self.data, offset)

    # -- segments --

    def num_segments(self) -> int:
        return self.e_phnum if self.e_phnum < PN_XNUM else self._section_with_name_table(0).sh_info

    def segment(self, n: int) -> ProgramHeader:
        if self.e_phoff > 0 and self.e_phentsize < PHDR_SIZE:
            raise ElfFormatError(f"Too small e_phentsize: {self.e_phentsize}")
        return ProgramHeader(self._unpack(_PHDR, self.e_phoff + n * self.e_phentsize))

    # -- sections --

    def section(self, n: int) -> SectionHeader:
        if self.e_shoff > 0 and self.e_shentsize < SHDR_SIZE:
            raise ElfFormatError(f"Too small e_shentsize: {self.e_shentsize}")
        at = self.e_shoff + n * self.e_shentsize
        if at > len(self.data):
            raise ElfFormatError(f"Reading section {n} at offset {at} past EOF {len(self.data)}")
        return self._checked(SectionHeader(self._unpack(_SHDR, at)))

    def _checked(self, sh: SectionHeader) -> SectionHeader:
        if sh.sh_flags & SHF_COMPRESSED:
            self._unpack(_CHDR, sh.sh_offset)  # its compression header must be there
        return sh

    def num_sections(self) -> int:
        if self.e_shoff == 0:
            return 0
        return self.e_shnum if self.e_shnum else self.section(0).sh_size

    def _name_table(self) -> SectionHeader:
        index = self.e_shstrndx if self.e_shstrndx != SHN_XINDEX else self.section(0).sh_link
        try:
            return self.section(index)
        except ElfFormatError as exc:
            if str(exc).startswith("Reading section"):
                raise ElfFormatError("String Table not found") from None
            raise

    def _section_with_name_table(self, n: int) -> SectionHeader:
        sh = self.section(n)
        self._name_table()  # a section is known with its name, so the names must be there
        return sh

    def string(self, table: SectionHeader, offset: int) -> str:
        """A NUL-terminated string; one that runs to the end of the file reads as empty."""
        at = table.sh_offset + offset
        end = self.data.find(b"\0", at) if at <= len(self.data) else -1
        return self.data[at:end].decode("utf-8", errors="replace") if end > at else ""

    def section_by_name(self, name: str) -> SectionHeader | None:
        """The last section of that name (as pyelftools' name map has it), or None."""
        names = found = None
        for n in range(self.num_sections()):
            sh = self.section(n)
            names = names or self._name_table()
            if self.string(names, sh.sh_name) == name:
                found = sh
        return found

    # -- symbols --

    def symbols(self, table: SectionHeader, name: str) -> list[tuple[str, int, int, int, int]]:
        """(name, st_info type, st_shndx, st_value, st_size) of each entry of the symbol table `name`."""
        link = self.section(table.sh_link)
        if link.sh_type != SHT_STRTAB:
            raise ElfFormatError(f"SHT_SYMTAB section points at section {table.sh_link} of type "
                                 f"{_SECTION_TYPES.get(link.sh_type, link.sh_type)}, expected SHT_STRTAB")
        if table.sh_entsize == 0:
            raise ElfFormatError(f"Expected entry size of section {name!r} to be > 0")
        if table.sh_size % table.sh_entsize:
            raise ElfFormatError(f"Expected section size to be a multiple of entry size in section {name!r}")
        result = []
        for n in range(table.sh_size // table.sh_entsize):
            st_name, st_info, _, st_shndx, st_value, st_size = self._unpack(_SYM, table.sh_offset + n * table.sh_entsize)
            result.append((self.string(link, st_name), st_info & 0xF, st_shndx, st_value, st_size))
        return result
