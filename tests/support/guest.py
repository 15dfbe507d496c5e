"""Purpose-built test kernels, assembled by our toolchain inside the tests.

`long_mode_kernel(body)` wraps 64-bit code in a minimal PVH kernel: it identity-maps the
first GiB with 2 MiB pages (page 0 included, writable, executable), enters long mode and
calls `main`; when `main` returns it exits with success through isa-debug-exit.
"""

from __future__ import annotations

from pathlib import Path

from emulator.layout import COM1, DEBUG_EXIT_PORT, DEBUG_EXIT_SUCCESS, ROM_BASE
from emulator.toolchain.build import assemble_kernel

# The fixed layout's names, for test kernels to use instead of numbers.
LAYOUT_EQUS = (f".equ COM1, {COM1:#x}\n.equ DEBUG_EXIT_PORT, {DEBUG_EXIT_PORT:#x}\n"
               f".equ DEBUG_EXIT_SUCCESS, {DEBUG_EXIT_SUCCESS:#x}\n.equ ROM_BASE, {ROM_BASE:#x}\n")

PROLOGUE = """
.code32
.section text
.pvh_entry start
start:
    mov esp, stack_top
    mov edi, boot_pd
    xor ecx, ecx
.Lfill:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [edi + ecx*8], eax
    mov dword ptr [edi + ecx*8 + 4], 0
    inc ecx
    cmp ecx, 512
    jne .Lfill
    mov eax, boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt], eax
    mov eax, boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x900
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    ; lgdt [gdt_ptr] and ljmp 0x08:start64, as bytes: keystone adds a bogus 0x66 to both
    .byte 0x0F, 0x01, 0x15
    .long gdt_ptr
    .byte 0xEA
    .long start64
    .word 0x08
.code64
start64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, stack_top
    xor ebp, ebp
    call main
    mov eax, DEBUG_EXIT_SUCCESS
    out DEBUG_EXIT_PORT, eax
.Lhalt:
    cli
    hlt
    jmp .Lhalt

.section rodata
gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
gdt_ptr:
    .word 23
    .long gdt

.section bss
.align 4096
boot_pml4: .zero 4096
boot_pdpt: .zero 4096
boot_pd: .zero 4096
stack: .zero 16384
stack_top:
"""


def long_mode_kernel(body: str) -> str:
    """Source of a test kernel whose 64-bit `main` is `body` (which must define `main`)."""
    return LAYOUT_EQUS + PROLOGUE + "\n.code64\n.section text\n" + body


def build(tmp_path: Path, body: str, name: str = "test.elf", raw: bool = False) -> Path:
    """Assemble a test kernel into `tmp_path/name`; `raw` takes `body` as the whole source."""
    source = LAYOUT_EQUS + body if raw else long_mode_kernel(body)
    image = assemble_kernel([(name.replace(".elf", ".s"), source)])
    path = tmp_path / name
    path.write_bytes(image.elf)
    return path


# A fake allocator for test kernels: a bump pointer from 16 MiB, `step` bytes a block (0: always
# the same block), and a dealloc that does nothing; test kernels then call it as they please.
FAKE_ALLOCATOR = """
.function __rust_alloc
__rust_alloc:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + next_block]
    add qword ptr [rip + next_block], {step}
    pop rbp
    ret
.endfunction
.function __rust_dealloc
__rust_dealloc:
    push rbp
    mov rbp, rsp
    pop rbp
    ret
.endfunction
.section data
next_block: .quad 0x1000000
.section text
"""


def fake_allocator(step: int) -> str:
    return FAKE_ALLOCATOR.format(step=step)
