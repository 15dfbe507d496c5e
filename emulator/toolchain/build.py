"""Building images: `python -m emulator.toolchain.build` writes images/kernel.elf and images/firmware.bin.

The kernel is linked at KERNEL_BASE with every section on its own 4 KiB page (so paging can
give each its permissions): text, then `.note.Xen` + rodata + custom sections, then data,
then bss. The firmware is a flat ROM of ROM_SIZE bytes at ROM_BASE (emulator/layout.py).
Sources are the `.s` files under a directory, linked in path order (docs/assembly-dialect.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emulator.layout import KERNEL_BASE, ROM_BASE, ROM_SIZE

from .assembler import STANDARD_SECTIONS, Assembler
from .dialect import AssemblyError
from .elfwriter import (
    PAGE,
    PF_R,
    PF_W,
    PF_X,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHT_NOBITS,
    SHT_NOTE,
    STB_GLOBAL,
    STB_LOCAL,
    STT_FUNC,
    STT_NOTYPE,
    STT_OBJECT,
    ElfSymbol,
    ProgramHeader,
    Section,
    write_elf,
    xen_note,
)
from .rustnames import mangle

NOTE_SIZE = len(xen_note(0))
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LinkedKernel:
    elf: bytes
    symbols: dict[str, int]  # global labels and linker symbols
    entry: int
    constants: dict[str, int] = field(default_factory=dict)  # global .equ names and struct members


@dataclass(frozen=True)
class FlatImage:
    data: bytes
    symbols: dict[str, int]
    constants: dict[str, int] = field(default_factory=dict)


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def assemble_kernel(sources: Sequence[tuple[str, str]], base: int = KERNEL_BASE) -> LinkedKernel:
    asm = Assembler(sources, flat=False, default_mode=64)
    program = asm.program
    customs = [name for name in program.sections if name not in STANDARD_SECTIONS]
    starts: dict[str, int] = {}

    def place(sizes: dict[str, int]) -> dict[str, int]:
        text = base
        ro_start = _align(text + sizes.get("text", 0), PAGE)
        address = _align(ro_start + NOTE_SIZE, 16)
        starts.update(text=text, note=ro_start, rodata=address)
        address += sizes.get("rodata", 0)
        for name in customs:
            address = _align(address, 16)
            starts[name] = address
            address += sizes[name]
        data = _align(address, PAGE)
        bss = _align(data + sizes.get("data", 0), PAGE)
        starts.update(data=data, bss=bss, end=_align(bss + sizes.get("bss", 0), PAGE))
        linker = {
            "__text_start": text, "__text_end": ro_start, "__rodata_start": ro_start, "__rodata_end": data,
            "__data_start": data, "__data_end": bss, "__bss_start": bss, "__bss_end": starts["end"],
            "__kernel_end": starts["end"],
        }
        for name in customs:
            linker[f"__start_{name}"] = starts[name]
            linker[f"__stop_{name}"] = starts[name] + sizes[name]
        program.labels.update(linker)
        return {name: starts[name] for name in program.sections}

    asm.layout(place)
    asm.undefined_check()
    entry = _entry(asm)
    sections: list[Section] = []
    code = asm.emit("text", 0x90)
    sections.append(Section(".text", starts["text"], code, len(code), SHF_ALLOC | SHF_EXECINSTR))
    note = Section(".note.Xen", starts["note"], xen_note(entry), NOTE_SIZE, SHF_ALLOC, SHT_NOTE, 4)
    sections.append(note)
    rodata = asm.emit("rodata", 0)
    sections.append(Section(".rodata", starts["rodata"], rodata, len(rodata), SHF_ALLOC))
    for name in customs:
        blob = asm.emit(name, 0)
        sections.append(Section(f".{name}", starts[name], blob, len(blob), SHF_ALLOC))
    data = asm.emit("data", 0)
    sections.append(Section(".data", starts["data"], data, len(data), SHF_ALLOC | SHF_WRITE))
    bss_size = sum(s.size for s in program.sections.get("bss", []))
    sections.append(Section(".bss", starts["bss"], b"", bss_size, SHF_ALLOC | SHF_WRITE, SHT_NOBITS, PAGE))
    ro_end = max(s.address + s.size for s in sections if s.flags == SHF_ALLOC)
    segments = [
        ProgramHeader(starts["text"], len(code), len(code), PF_R | PF_X),
        ProgramHeader(starts["note"], ro_end - starts["note"], ro_end - starts["note"], PF_R),
        ProgramHeader(starts["data"], len(data), starts["bss"] + bss_size - starts["data"], PF_R | PF_W),
    ]
    segments = [s for s in segments if s.mem_size]
    symbols = _elf_symbols(asm)
    elf = write_elf(base, entry, sections, segments, note, symbols)
    return LinkedKernel(elf, _public_labels(asm), entry, _public_constants(asm))


def _entry(asm: Assembler) -> int:
    program = asm.program
    if program.pvh_entry is not None:
        name, where = program.pvh_entry
        if name not in program.labels:
            raise where.error(f".pvh_entry names {name!r}, which is not a label")
        return program.labels[name]
    for stmt in program.sections.get("text", []):
        if stmt.labels:
            return stmt.address
    raise AssemblyError("the kernel has no code: no label in the text section to enter at")


def _public_labels(asm: Assembler) -> dict[str, int]:
    return {name: value for name, value in asm.program.labels.items() if ":" not in name}


def _public_constants(asm: Assembler) -> dict[str, int]:
    return {name: expr.value(asm.lookup(scope, strict=True))
            for name, (expr, scope) in asm.program.constants.items() if ":" not in name}


def _elf_symbols(asm: Assembler) -> list[ElfSymbol]:
    program = asm.program
    out, declared = [], set()
    for info in program.symbols:
        if info.start not in program.labels:
            raise AssemblyError(f".{info.kind} {info.start}: no label of that name")
        start = program.labels[info.start]
        assert info.end_mark is not None
        try:
            name = mangle(info.rust_path) if info.rust_path else info.start
        except ValueError as exc:
            where = program.label_where[info.start]
            raise where.error(str(exc)) from None
        out.append(ElfSymbol(name, start, info.end_mark.address - start, STT_FUNC if info.kind == "func" else STT_OBJECT,
                             STB_GLOBAL))
        declared.add(info.start)
    linker = {n for n in program.labels if n.startswith("__") and (n.endswith(("_start", "_end")) or n.startswith(("__start_", "__stop_")))}
    for name in program.label_order:
        if ":" in name or name in declared or name in program.constants:
            continue
        out.append(ElfSymbol(name, program.labels[name], 0, STT_NOTYPE, STB_LOCAL))
    for name in sorted(linker - set(program.label_order)):
        out.append(ElfSymbol(name, program.labels[name], 0, STT_NOTYPE, STB_GLOBAL))
    return out


def assemble_flat(sources: Sequence[tuple[str, str]], base: int, size: int, default_mode: int = 16) -> FlatImage:
    asm = Assembler(sources, flat=True, default_mode=default_mode)
    asm.layout(lambda sizes: {"text": base})
    asm.undefined_check()
    data = asm.emit("text", 0xFF)
    if len(data) > size:
        raise AssemblyError(f"the image is {len(data)} bytes, more than its {size}")
    return FlatImage(data + b"\xff" * (size - len(data)), _public_labels(asm), _public_constants(asm))


def _read_sources(src_dir: Path) -> list[tuple[str, str]]:
    files = sorted(p for p in src_dir.rglob("*.s") if p.is_file())
    return [(str(p.relative_to(src_dir.parent)), p.read_text()) for p in files]


def build_kernel(src_dir: Path = ROOT / "kernel_asm") -> LinkedKernel:
    return assemble_kernel(_read_sources(src_dir))


def build_firmware(src_dir: Path = ROOT / "firmware") -> FlatImage:
    return assemble_flat(_read_sources(src_dir), ROM_BASE, ROM_SIZE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.toolchain.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "images", help="output directory (default images/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for name, src, build, blob in (("kernel.elf", ROOT / "kernel_asm", build_kernel, "elf"),
                                       ("firmware.bin", ROOT / "firmware", build_firmware, "data")):
            if not any(src.rglob("*.s")):
                print(f"{src.name}/ has no sources yet: {name} not built", file=sys.stderr)
                continue
            image = getattr(build(src), blob)
            (args.out / name).write_bytes(image)
            print(f"{args.out / name}: {len(image)} bytes")
    except AssemblyError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
