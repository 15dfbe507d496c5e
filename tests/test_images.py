"""`make images` rebuilds the committed images byte for byte, and their sources agree with
emulator/layout.py on every figure the host reads."""

from __future__ import annotations

import io

import pytest
from elftools.elf.elffile import ELFFile

from emulator import layout
from emulator.toolchain.build import build_firmware, build_kernel
from emulator.toolchain.build import main as build_images
from emulator.toolchain.rustnames import mangle
from tests.support.paths import FIRMWARE

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def kernel_image():
    return build_kernel()


@pytest.fixture(scope="module")
def rom():
    return build_firmware()


def test_images_rebuild_identically(tmp_path, kernel):
    assert build_images(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "kernel.elf").read_bytes() == kernel.read_bytes()
    assert (tmp_path / "firmware.bin").read_bytes() == FIRMWARE.read_bytes()


def test_kernel_structures_have_the_layouts_host_views_read(kernel_image):
    c = kernel_image.constants
    assert (c["LockedAllocator.lock"], c["LockedAllocator.kind"], c["LockedAllocator.inner"]) == \
        (layout.LOCK_OFFSET, layout.KIND_OFFSET, layout.INNER_OFFSET)
    assert {c["KIND_BUMP"]: "bump", c["KIND_LINKED_LIST"]: "linked_list"} == layout.ALLOCATOR_KINDS
    assert [c[f"BumpAllocator.{name}"] for name in layout.BUMP_FIELDS] == [0, 8, 16, 24]
    assert c["BumpAllocator.SIZE"] == 8 * len(layout.BUMP_FIELDS)
    assert (c["ListNode.size"], c["ListNode.next"]) == (layout.LIST_NODE_SIZE_OFFSET, layout.LIST_NODE_NEXT_OFFSET)
    assert c["ListNode.SIZE"] == c["MIN_BLOCK"] == layout.MIN_BLOCK
    assert c["LinkedListAllocator.head"] == 0
    assert c["HeapStats.SIZE"] == layout.HEAP_STATS_SIZE
    assert c["FRAME_BITMAP_WORDS"] == layout.FRAME_BITMAP_WORDS
    assert c["FrameAllocator.used"] == layout.FRAME_USED_OFFSET
    assert c["FrameAllocator.usable"] == layout.FRAME_USABLE_OFFSET
    assert c["FrameAllocator.SIZE"] == layout.FRAME_USABLE_OFFSET + 8 * layout.FRAME_BITMAP_WORDS


def test_kernel_objects_are_as_large_as_their_structures(kernel_image):
    symbols = {s.name: s for s in ELFFile(io.BytesIO(kernel_image.elf)).get_section_by_name(".symtab").iter_symbols()}
    c = kernel_image.constants
    objects = ((layout.ALLOCATOR_SYMBOL, "LockedAllocator"), (layout.FRAME_ALLOCATOR_SYMBOL, "FrameAllocator"),
               ("aetherion::config::CONFIG", "Config"))
    for path, struct in objects:
        assert symbols[mangle(path)]["st_size"] == c[f"{struct}.SIZE"], path


def test_kernel_memory_constants_are_layouts(kernel_image):
    c = kernel_image.constants
    assert c["PAGE_SIZE"] == layout.PAGE_SIZE
    assert (c["POOL_START"], c["POOL_END"]) == (layout.FRAME_POOL_START, layout.FRAME_POOL_END)
    assert c["POOL_FRAMES"] == (layout.FRAME_POOL_END - layout.FRAME_POOL_START) // layout.PAGE_SIZE
    assert (c["HEAP_START"], c["HEAP_SIZE"]) == (layout.HEAP_START, layout.HEAP_SIZE)
    assert (c["DEMAND_START"], c["DEMAND_END"] - c["DEMAND_START"]) == (layout.DEMAND_START, layout.DEMAND_SIZE)
    assert (c["PIC_MASTER"], c["PIC_SLAVE"], c["PIT_CHANNEL0"]) == \
        (layout.PIC_MASTER_PORT, layout.PIC_SLAVE_PORT, layout.PIT_PORT)
    assert (c["ROM_BASE"], c["ROM_END"]) == (layout.ROM_BASE, layout.ROM_BASE + layout.ROM_SIZE)
    assert c["COM1"] == layout.COM1 and c["EXIT_SUCCESS"] == layout.DEBUG_EXIT_SUCCESS


def test_firmware_constants_are_layouts_and_agree_with_the_kernel(rom, kernel_image):
    f = rom.constants
    assert (f["ROM"], f["COM1"]) == (layout.ROM_BASE, layout.COM1)
    assert (f["BOOT_PARAMS"], f["BOOT_MAGIC"], f["BOOT_VERSION"]) == \
        (layout.BOOT_PARAMS, layout.BOOT_PARAMS_MAGIC, layout.BOOT_PARAMS_VERSION)
    assert (f["BootParams.SIZE"], f["BOOT_HAS_CMDLINE"], f["CMDLINE_MAX"]) == \
        (layout.BOOT_PARAMS_HEADER, layout.BOOT_PARAMS_HAS_CMDLINE, layout.MAX_CMDLINE)
    assert (f["START_INFO"], f["MEMMAP"], f["CMDLINE"], f["START_INFO_MAGIC"]) == \
        (layout.START_INFO, layout.START_INFO_MEMMAP, layout.START_INFO_CMDLINE, layout.HVM_START_MAGIC)
    shared = {name: value for name, value in f.items() if name.startswith(("HvmStartInfo.", "HvmMemmapEntry."))}
    assert shared and shared == {name: kernel_image.constants[name] for name in shared}
    assert len(shared) == sum(name.startswith(("HvmStartInfo.", "HvmMemmapEntry.")) for name in kernel_image.constants)
