"""emulator/image/elf.py against pyelftools: the loader built on it reads every committed image,
and every mutation of one, exactly as the pyelftools loader did (tests/support/reference_loader.py).

It may accept a file pyelftools rejected only for a fault in a section it never reads; whatever
both accept loads identically, and it never rejects what pyelftools accepted.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.errors import ImageError
from emulator.image.elf import ElfFile
from emulator.image.loader import load_image
from tests.support.elfcraft import Elf
from tests.support.paths import KERNEL, ROOT
from tests.support.reference_loader import reference_load_image

pytestmark = pytest.mark.unit

RAM = 128 << 20
REAL = KERNEL.read_bytes()
IMAGES = sorted((ROOT / "images").glob("*.elf")) + sorted((ROOT / "tests" / "corpus").glob("*.elf"))


def outcome(load, path: Path):
    try:
        image = load(path, RAM)
    except ImageError as exc:
        return "rejected", str(exc)
    return "loaded", (image.path, image.sha256, image.entry, image.segments,
                      [(s.name, s.raw, s.address, s.size, s.kind) for s in image.symbols])


def same_as_reference(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "image.elf"
    path.write_bytes(data)
    ours, theirs = outcome(load_image, path), outcome(reference_load_image, path)
    if theirs[0] == "loaded":
        assert ours == theirs
    else:
        assert ours[0] == "rejected" or "malformed ELF" in theirs[1], (ours, theirs)  # a section it never reads
    return ours[0]


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_committed_images_load_as_with_pyelftools(path):
    ours, theirs = outcome(load_image, path), outcome(reference_load_image, path)
    assert ours == theirs if theirs[0] == "loaded" else ours[0] == "rejected"  # in its own words
    if path == KERNEL:
        assert ours[0] == "loaded" and len(ours[1][4]) > 100  # the kernel's symbols, all of them


def test_the_kernel_as_pyelftools_sees_it():
    theirs = ELFFile(io.BytesIO(REAL))
    ours = ElfFile(REAL)
    assert ours.num_segments() == theirs.num_segments()
    for n in range(ours.num_segments()):
        ph, ref = ours.segment(n), theirs.get_segment(n).header
        assert (ph.p_offset, ph.p_vaddr, ph.p_paddr, ph.p_filesz, ph.p_memsz, ph.p_flags) == \
            (ref.p_offset, ref.p_vaddr, ref.p_paddr, ref.p_filesz, ref.p_memsz, ref.p_flags)
    symtab = ours.section_by_name(".symtab")
    ref_symbols = [(s.name, s["st_value"], s["st_size"]) for s in theirs.get_section_by_name(".symtab").iter_symbols()]
    assert [(name, value, size) for name, _, _, value, size in ours.symbols(symtab, ".symtab")] == ref_symbols


@pytest.mark.parametrize("data, words", [
    (Elf(machine=183).build(), "machine is EM_AARCH64,"),
    (Elf(machine=0x7777).build(), "machine is 30583,"),
    (Elf(etype=3).build(), "ELF type is ET_DYN,"),
])
def test_header_values_are_named_as_before(tmp_path, data, words):
    path = tmp_path / "bad.elf"
    path.write_bytes(data)
    ours, theirs = outcome(load_image, path), outcome(reference_load_image, path)
    assert ours == theirs and words in ours[1]


fuzz = settings(max_examples=int(__import__("os").environ.get("AETH_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
SHOFF = struct.unpack_from("<Q", REAL, 40)[0]
SYMTAB = ELFFile(io.BytesIO(REAL)).get_section_by_name(".symtab")


@fuzz
@given(flips=st.lists(st.tuples(st.sampled_from(["headers", "sections", "symbols"]), st.integers(0, 1 << 16),
                                st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips_read_as_pyelftools_reads_them(tmp_path, flips):
    data = bytearray(REAL)
    for region, offset, value in flips:
        start, size = {"headers": (0, 64 + 56 * 4), "sections": (SHOFF, 64 * 10), "symbols": (SYMTAB["sh_offset"], SYMTAB["sh_size"])}[region]
        data[start + offset % size] = value
    same_as_reference(tmp_path, bytes(data))


@fuzz
@given(field=st.sampled_from(["sh_type", "sh_flags", "sh_offset", "sh_size", "sh_link", "sh_entsize", "sh_name"]),
       index=st.integers(0, 9), value=st.one_of(st.integers(0, 1 << 16), st.integers(0, (1 << 32) - 1)))
def test_section_header_fields_that_lie(tmp_path, field, index, value):
    at, fmt = {"sh_name": (0, "<I"), "sh_type": (4, "<I"), "sh_flags": (8, "<Q"), "sh_offset": (24, "<Q"),
               "sh_size": (32, "<Q"), "sh_link": (40, "<I"), "sh_entsize": (56, "<Q")}[field]
    data = bytearray(REAL)
    struct.pack_into(fmt, data, SHOFF + 64 * index + at, value)
    same_as_reference(tmp_path, bytes(data))


@fuzz
@given(phnum=st.integers(0, 65535), shnum=st.integers(0, 65535), shstrndx=st.integers(0, 65535),
       shentsize=st.integers(0, 128), phentsize=st.integers(0, 128))
def test_header_counts_read_as_pyelftools_reads_them(tmp_path, phnum, shnum, shstrndx, shentsize, phentsize):
    data = bytearray(REAL)
    struct.pack_into("<HHHHH", data, 54, phentsize, phnum, shentsize, shnum, shstrndx)
    same_as_reference(tmp_path, bytes(data))
