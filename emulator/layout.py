"""The fixed layout of the Aetherion PC and its kernel: one home for every constant that the
toolchain, the firmware hand-off, the loader, the heap views and the tests share.

`docs/memory-map.md`, `docs/boot-protocol.md` and `docs/kernel-structures.md` describe the
same figures in prose; a change here is a change to that contract (and to `kernel_asm/`,
`firmware/` and the committed images with it).
"""

from __future__ import annotations

PAGE_SIZE = 0x1000

# -- physical memory map -------------------------------------------------------------------
IVT = 0x0000  # real-mode interrupt vector table, 256 vectors
BDA = 0x0400  # BIOS data area
BOOT_PARAMS = 0x6000  # boot-parameter block: the loader writes it, the firmware reads it
START_INFO = 0x7000  # PVH hvm_start_info, built by the firmware
START_INFO_MEMMAP = 0x7040  # its E820-style memory map
START_INFO_CMDLINE = 0x7100  # its copy of the command line
EBDA_BASE = 0x9FC00
VGA_WINDOW = 0xA0000
VGA_TEXT = 0xB8000  # 80x25 text cells of (character, attribute)
ROM_BASE = 0xF0000  # the BIOS ROM, images/firmware.bin
ROM_SIZE = 0x10000
RESET_VECTOR = 0xFFFF0  # F000:FFF0
LOW_MEMORY_END = 0x100000  # kernels load at or above this
FRAME_POOL_START = 0x100000  # the frame allocator's pool: 32 MiB of 4 KiB frames
FRAME_POOL_END = 0x2100000
KERNEL_BASE = 0x2200000  # the kernel's link and load address

DEFAULT_RAM_MIB = 128
MIN_RAM_MIB = 64
MAX_RAM_MIB = 4096 - 256  # RAM stays below the 32-bit MMIO hole

# -- the kernel's virtual memory -----------------------------------------------------------
NULL_PAGE_END = 0x1000  # page 0 is never mapped
HEAP_START = 0x4444_4444_0000
HEAP_SIZE = 0x10_0000  # 1 MiB = 256 pages, RW- NX, backed by pool frames
HEAP_END = HEAP_START + HEAP_SIZE
HEAP_GUARD_BELOW = HEAP_START - PAGE_SIZE  # not present
HEAP_GUARD_ABOVE = HEAP_END  # not present
DEMAND_START = 0x6666_6666_0000  # the kernel's page-fault handler maps frames here on first touch
DEMAND_SIZE = 0x1_0000  # 16 pages

# -- boot-parameter block (docs/boot-protocol.md) ------------------------------------------
BOOT_PARAMS_MAGIC = 0x50424541  # "AEBP"
BOOT_PARAMS_VERSION = 1
BOOT_PARAMS_HEADER = 0x20  # the command line follows the header
BOOT_PARAMS_HAS_CMDLINE = 1  # flags bit 0
MAX_CMDLINE = 3839  # bytes, without the NUL: the block is one page

# -- Xen PVH (docs/boot-protocol.md) -------------------------------------------------------
PVH_NOTE_NAME = b"Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18
HVM_START_MAGIC = 0x336EC578

# -- I/O ports -----------------------------------------------------------------------------
COM1 = 0x3F8
COM1_PORTS = 8
POST_PORT = 0x80
A20_PORT = 0x92
PIC_MASTER_PORT, PIC_SLAVE_PORT = 0x20, 0xA0  # 8259A pair: command, then data (+1)
PIT_PORT, PIT_PORTS = 0x40, 4  # 8254: counters 0-2, then the control word
PORT_B = 0x61  # system control port B: PIT channel 2's gate, the speaker, refresh
RTC_PORT, RTC_PORTS = 0x70, 2  # CMOS RTC: index (bit 7 = NMI disable), data
APIC_BASE, APIC_SIZE = 0xFEE0_0000, 0x1000  # the local APIC's registers (xAPIC), memory-mapped
DEBUG_EXIT_PORT = 0xF4  # isa-debug-exit, as QEMU's
DEBUG_EXIT_PORTS = 4
DEBUG_EXIT_SUCCESS = 0x10

# -- the allocator entry points rustc's alloc crate calls (System V ABI) -------------------
ALLOC_ENTRY_POINTS = ("__rust_alloc", "__rust_dealloc", "__rust_realloc", "__rust_alloc_zeroed",
                      "__rust_alloc_error_handler")
RUSTC_SHIM_PREFIX = "__rustc::"  # rustc's v0 spelling of the same shims

# -- our kernel's structures that host views read by symbol (docs/kernel-structures.md) ----
ALLOCATOR_SYMBOL = "aetherion::allocator::ALLOCATOR"
HEAP_STATS_SYMBOL = "aetherion::allocator::heap_stats"
FRAME_ALLOCATOR_SYMBOL = "aetherion::memory::frame::FRAME_ALLOCATOR"

# LockedAllocator { lock: u64, kind: u64, inner }
LOCK_OFFSET, KIND_OFFSET, INNER_OFFSET = 0, 8, 16
ALLOCATOR_KINDS = {0: "bump", 1: "linked_list"}
# BumpAllocator { heap_start, heap_end, next, allocations }
BUMP_FIELDS = ("heap_start", "heap_end", "next", "allocations")
# LinkedListAllocator { head: ListNode }; ListNode { size, next }
LIST_NODE_SIZE_OFFSET, LIST_NODE_NEXT_OFFSET = 0, 8
MIN_BLOCK = 16  # the smallest free block: one ListNode
HEAP_STATS_SIZE = 24  # HeapStats { heap_size, used, free }, returned through a hidden pointer

# FrameAllocator { pool_start, pool_end, total, free, search_from, used[128], usable[128] }
FRAME_BITMAP_WORDS = 128
FRAME_USED_OFFSET = 40
FRAME_USABLE_OFFSET = FRAME_USED_OFFSET + 8 * FRAME_BITMAP_WORDS
