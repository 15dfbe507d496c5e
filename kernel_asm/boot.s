; PVH entry: from 32-bit protected mode (paging off, EBX = hvm_start_info) to long mode and kmain.
;
; Static boot page tables in .bss identity-map the first 1 GiB with 2 MiB pages; the kernel
; replaces them with its own tables built from pool frames (memory/paging.s) once it runs.

; Xen's hvm_start_info, version 1, as the firmware (or QEMU) builds it
.struct HvmStartInfo
    magic: .long                                ; 0x336EC578
    version: .long
    flags: .long
    nr_modules: .long
    modlist_paddr: .quad
    cmdline_paddr: .quad                        ; a NUL-terminated string, or 0
    rsdp_paddr: .quad
    memmap_paddr: .quad                         ; memmap_entries HvmMemmapEntry records
    memmap_entries: .long
    reserved: .long
.endstruct

; One entry of its memory map (E820 types: 1 RAM, 2 reserved)
.struct HvmMemmapEntry
    addr: .quad
    size: .quad
    type: .long
    reserved: .long
.endstruct

.code32
.section text
.pvh_entry pvh_start

.function pvh_start, aetherion::boot::pvh_start
pvh_start:
    cli
    mov esp, boot_stack_top
    mov esi, ebx                    ; hvm_start_info, kept for kmain
    mov edi, boot_pd
    xor ecx, ecx
.Lfill_pd:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83                    ; present, writable, 2 MiB page
    mov dword ptr [edi + ecx*8], eax
    mov dword ptr [edi + ecx*8 + 4], 0      ; the entry's high half
    inc ecx
    cmp ecx, 512
    jne .Lfill_pd
    mov eax, boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt], eax
    mov eax, boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20                    ; PAE
    mov cr4, eax
    mov ecx, 0xC0000080             ; EFER
    rdmsr
    or eax, 0x900                   ; LME | NXE
    wrmsr
    mov eax, cr0
    or eax, 0x80010001              ; PG | WP | PE: WP makes read-only pages read-only for the kernel too
    mov cr0, eax
    ; lgdt [gdt64_pointer] and ljmp 0x08:long_mode, as bytes: keystone adds a bogus 0x66 to both
    .byte 0x0F, 0x01, 0x15
    .long gdt64_pointer
    .byte 0xEA
    .long long_mode
    .word 0x08
.endfunction

.code64
.function long_mode, aetherion::boot::long_mode
long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rax, cr0                    ; SSE: no x87 emulation, monitor coprocessor
    and rax, -5
    or rax, 2
    mov cr0, rax
    mov rax, cr4
    or rax, 0x600                   ; OSFXSR | OSXMMEXCPT
    mov cr4, rax
    mov rsp, boot_stack_top
    xor ebp, ebp                    ; the end of every backtrace
    mov edi, esi
    call kmain
    mov edi, 0x10
    call exit
.endfunction

.section data
.align 16
gdt64:
    .quad 0
    .quad 0x00AF9B000000FFFF        ; 0x08: 64-bit code (Accessed preset)
    .quad 0x00CF93000000FFFF        ; 0x10: data
    .quad 0, 0                      ; 0x18: the TSS, filled in by gdt_init (interrupts/gdt.s)
gdt64_pointer:
    .word 39
    .quad gdt64

.section bss
.align 4096                     ; CR3 and table entries need page-aligned tables
boot_pml4: .zero 4096
boot_pdpt: .zero 4096
boot_pd: .zero 4096
boot_stack: .zero 65536
boot_stack_top:
