"""Hostile images: every mutated ELF either loads or is one clear ImageError, quickly.

Mutations of the real kernel image (byte flips in the headers, truncations, field values
that lie) and of hand-built ELF files. Inputs that once broke the loader live in
tests/corpus/ and are replayed as regression tests.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.errors import ImageError
from emulator.image.loader import load_image
from tests.support.elfcraft import PF_R, PF_W, Elf, Seg, pvh_note
from tests.support.paths import KERNEL

pytestmark = pytest.mark.unit

RAM = 128 << 20
REAL = KERNEL.read_bytes()
CORPUS = Path(__file__).parent / "corpus"
HEADERS = 64 + 56 * 8  # the ELF header and the program headers: where lies matter most


def load_or_reject(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "fuzz.elf"
    path.write_bytes(data)
    started = time.monotonic()
    try:
        load_image(path, RAM)
        outcome = "loaded"
    except ImageError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(path)), message
        outcome = "rejected"
    assert time.monotonic() - started < 2.0
    return outcome


fuzz = settings(max_examples=int(__import__("os").environ.get("AETH_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(flips=st.lists(st.tuples(st.integers(0, HEADERS - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips_in_the_headers(tmp_path, flips):
    data = bytearray(REAL)
    for offset, value in flips:
        data[offset] = value
    load_or_reject(tmp_path, bytes(data))


@fuzz
@given(length=st.integers(0, len(REAL) - 1))
def test_truncated_anywhere(tmp_path, length):
    assert load_or_reject(tmp_path, REAL[:length]) == "rejected"


U64 = st.one_of(st.integers(0, 1 << 16), st.integers(0, (1 << 64) - 1), st.sampled_from([0, 1, (1 << 64) - 1, 1 << 63]))


@fuzz
@given(field=st.sampled_from(["p_offset", "p_filesz", "p_memsz", "p_paddr"]), value=U64, index=st.integers(0, 3))
def test_program_header_fields_that_lie(tmp_path, field, value, index):
    phoff = struct.unpack_from("<Q", REAL, 32)[0]
    at = phoff + 56 * index + {"p_offset": 8, "p_paddr": 24, "p_filesz": 32, "p_memsz": 40}[field]
    data = bytearray(REAL)
    struct.pack_into("<Q", data, at, value)
    load_or_reject(tmp_path, bytes(data))


@fuzz
@given(phnum=st.integers(0, 65535), shnum=st.integers(0, 65535), shstrndx=st.integers(0, 65535),
       shoff=U64, phentsize=st.integers(0, 65535))
def test_header_counts_and_offsets(tmp_path, phnum, shnum, shstrndx, shoff, phentsize):
    data = bytearray(REAL)
    struct.pack_into("<Q", data, 40, shoff)
    struct.pack_into("<H", data, 54, phentsize)
    struct.pack_into("<H", data, 56, phnum)
    struct.pack_into("<H", data, 60, shnum)
    struct.pack_into("<H", data, 62, shstrndx)
    load_or_reject(tmp_path, bytes(data))


@fuzz
@given(note=st.binary(max_size=64), namesz=st.integers(0, 1 << 32 - 1), descsz=st.integers(0, 1 << 32 - 1))
def test_bad_or_lying_notes(tmp_path, note, namesz, descsz):
    lying = struct.pack("<III", namesz, descsz, 18) + b"Xen\0" + note
    assert load_or_reject(tmp_path, Elf(note=lying).build()) == "rejected"
    load_or_reject(tmp_path, Elf(note=note).build())


@pytest.mark.parametrize("segments", [
    [Seg(paddr=0x0220_0000, memsz=0), Seg(paddr=0x0230_0000)],                # a zero-length segment, ignored
    [Seg(paddr=0x0220_0001)],                                                  # misaligned: allowed, loaded as is
    [Seg(paddr=0x0220_0000, memsz=0x2000), Seg(paddr=0x0220_1000, flags=PF_R | PF_W)],  # overlap
    [Seg(paddr=(1 << 64) - 0x1000, memsz=0x2000)],                             # wraps around
])
def test_odd_segments(tmp_path, segments):
    entry = segments[-1].paddr if segments[-1].memsz != 0 else 0x0230_0000
    load_or_reject(tmp_path, Elf(entry=entry, segments=segments, note=pvh_note(entry)).build())


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.elf")), ids=lambda p: p.name)
def test_corpus_of_inputs_that_once_failed(tmp_path, path):
    load_or_reject(tmp_path, path.read_bytes())
