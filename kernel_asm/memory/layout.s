; The fixed memory layout: the same figures as emulator/layout.py (tests/test_images.py
; checks that they agree).
.equ PAGE_SIZE, 0x1000
.equ HUGE_PAGE_SIZE, 0x200000
.equ POOL_START, 0x100000
.equ POOL_END, 0x2100000
.equ POOL_FRAMES, (POOL_END - POOL_START) / PAGE_SIZE
.equ FRAME_BITMAP_WORDS, POOL_FRAMES / 64
.equ HEAP_START, 0x444444440000
.equ HEAP_SIZE, 0x100000
.equ HEAP_PAGES, HEAP_SIZE / PAGE_SIZE
.equ PTE_PRESENT, 1
.equ PTE_WRITABLE, 2
.equ PTE_HUGE, 0x80
.equ PTE_NX, 0x8000000000000000
.equ PTE_ADDRESS, 0x000FFFFFFFFFF000
.equ E820_RAM, 1
.equ ROM_BASE, 0xF0000
.equ ROM_END, 0x100000
.equ DEMAND_START, 0x666666660000               ; the page-fault handler maps frames here on demand
.equ DEMAND_PAGES, 16
.equ DEMAND_END, DEMAND_START + DEMAND_PAGES * PAGE_SIZE
