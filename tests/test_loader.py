"""The loader accepts a well-formed PVH ELF64 and rejects each kind of bad image with one line."""

from __future__ import annotations

import pytest

from emulator.errors import ImageError
from emulator.image.loader import load_image
from tests.support.elfcraft import PF_R, PF_W, Elf, Seg, pvh_note

pytestmark = pytest.mark.unit

RAM = 128 << 20


def write(tmp_path, data: bytes, name: str = "k.elf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_good_image_loads_segments_entry_and_hash(tmp_path):
    code = b"\x90\x90\xf4"
    path = write(tmp_path, Elf(entry=0x0220_0001, segments=[Seg(data=code, memsz=0x2000)]).build())
    image = load_image(path, RAM)
    assert image.entry == 0x0220_0001
    assert len(image.segments) == 1
    seg = image.segments[0]
    assert (seg.paddr, seg.memsz, seg.data, seg.flags) == (0x0220_0000, 0x2000, code, "r-x")
    assert image.end == 0x0220_2000
    assert len(image.sha256) == 64


def test_four_byte_pvh_note_is_accepted(tmp_path):
    path = write(tmp_path, Elf(note=pvh_note(0x0220_0000, desc_size=4)).build())
    assert load_image(path, RAM).entry == 0x0220_0000


BAD_IMAGES = {
    "not an ELF file": lambda: b"MZ\x90\x00" + b"\0" * 100,
    "truncated ELF header": lambda: b"\x7fELF\x02\x01\x01",
    "ELF32 image": lambda: Elf(ei_class=1).build(),
    "not x86-64": lambda: Elf(machine=183).build(),  # EM_AARCH64
    "expected an executable": lambda: Elf(etype=3).build(),  # ET_DYN
    "no Xen PVH entry note": lambda: Elf(note=b"").build(),
    "overlaps the BIOS ROM": lambda: Elf(entry=0xF8000, segments=[Seg(paddr=0xF8000, memsz=0x10000)]).build(),
    "overlaps low memory": lambda: Elf(entry=0x8000, segments=[Seg(paddr=0x8000)]).build(),
    "lies beyond RAM end": lambda: Elf(segments=[Seg(memsz=200 << 20)]).build(),
    "is truncated": lambda: Elf(segments=[Seg(filesz=0x100000, memsz=0x100000)]).build(),
    "larger than p_memsz": lambda: Elf(segments=[Seg(data=b"\x90" * 32, memsz=16)]).build(),
    "overlaps another segment": lambda: Elf(segments=[Seg(memsz=0x2000), Seg(paddr=0x0220_1000, flags=PF_R | PF_W)]).build(),
    "runs past the end of the file": lambda: Elf(phnum=60000).build(),
    "not inside an executable PT_LOAD": lambda: Elf(entry=0x0300_0000).build(),
}


@pytest.mark.parametrize("expected", sorted(BAD_IMAGES))
def test_bad_image_is_one_clear_error(tmp_path, expected):
    path = write(tmp_path, BAD_IMAGES[expected]())
    with pytest.raises(ImageError) as err:
        load_image(path, RAM)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message and message.startswith(str(path))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.elf", RAM)
    with pytest.raises(ImageError, match="empty file"):
        load_image(write(tmp_path, b""), RAM)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path, RAM)


def test_entry_in_non_executable_segment_is_rejected(tmp_path):
    path = write(tmp_path, Elf(segments=[Seg(flags=PF_R | PF_W)]).build())
    with pytest.raises(ImageError, match="executable"):
        load_image(path, RAM)
