; Phase 1.2: the kernel's own 4-level page tables, built from pool frames.
;
; Identity map of RAM: 2 MiB pages where one permission fits the whole 2 MiB, 4 KiB pages in
; the first 2 MiB (page 0 stays unmapped: the null guard), around the kernel image (text R-X,
; rodata R--, data and bss RW- NX) and at a RAM end that is not 2 MiB aligned. The heap is
; 256 fresh pool frames at HEAP_START, RW- NX, with unmapped guard pages on both sides.

.section text
; alloc_table() -> physical address of a zeroed pool frame (panics when the pool is empty)
.function alloc_table, aetherion::memory::paging::alloc_table
alloc_table:
    push rbp
    mov rbp, rsp
    call allocate_frame
    test rax, rax
    jz .Lempty
    mov rdi, rax
    mov rdx, rax
    xor eax, eax
    mov ecx, PAGE_SIZE / 8
    rep stosq
    mov rax, rdx
    pop rbp
    ret
.Lempty:
    lea rdi, [rip + pool_empty]
    mov esi, 41
    call_here panic, rdx
.endfunction

; entry_for(va, level) -> pointer to the entry that maps va at level (4 = PML4 … 1 = PT),
; creating missing tables on the way; rdx = 0 when a huge page is in the way.
.function entry_for, aetherion::memory::paging::entry_for
entry_for:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rsi
    mov r13, qword ptr [rip + PML4]
    mov r14d, 4
.Llevel:
    lea ecx, [r14 * 8 + r14]                    ; shift = 12 + 9 * (level - 1) = 9 * level + 3
    add ecx, 3
    mov rax, rbx
    shr rax, cl
    and eax, 0x1FF
    lea rax, [r13 + rax * 8]
    cmp r14, r12
    je .Lfound
    mov rdx, qword ptr [rax]
    test rdx, PTE_PRESENT
    jnz .Lpresent
    push rax
    sub rsp, 8
    call alloc_table
    add rsp, 8
    pop rdx
    mov rcx, rax
    or rcx, PTE_PRESENT | PTE_WRITABLE
    mov qword ptr [rdx], rcx
    mov r13, rax
    dec r14
    jmp .Llevel
.Lpresent:
    test rdx, PTE_HUGE
    jnz .Lhuge
    mov rcx, PTE_ADDRESS
    and rdx, rcx
    mov r13, rdx
    dec r14
    jmp .Llevel
.Lhuge:
    xor eax, eax
    xor edx, edx
    jmp .Lout
.Lfound:
    mov edx, 1
.Lout:
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; map_page(va, frame, flags): a 4 KiB mapping; flags are PTE bits (present is added)
.function map_page, aetherion::memory::paging::map_page
map_page:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov esi, 1
    call entry_for
    test rdx, rdx
    jz .Lhuge
    or r12, r13
    or r12, PTE_PRESENT
    mov qword ptr [rax], r12
    invlpg byte ptr [rbx]
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.Lhuge:
    lea rdi, [rip + huge_in_way]
    mov rsi, rbx
    lea rdx, [rip + huge_in_way_end]
    call_here panic_address, rcx
.endfunction

; map_huge(va): a 2 MiB identity mapping, RW- NX
.function map_huge, aetherion::memory::paging::map_huge
map_huge:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    mov esi, 2
    call entry_for
    mov rcx, PTE_NX | PTE_HUGE | PTE_WRITABLE | PTE_PRESENT
    or rcx, rbx
    mov qword ptr [rax], rcx
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; walk(va) -> rax = pointer to the leaf entry (0 if not mapped), rdx = its level (1, 2 or 3),
; rcx = effective flags: bit 1 set only if writable at every level, bit 63 set if NX at any.
.function walk, aetherion::memory::paging::walk
walk:
    push rbp
    mov rbp, rsp
    mov r8, qword ptr [rip + PML4]
    mov r9d, 4
    mov r10, PTE_WRITABLE                       ; writable so far
    xor r11d, r11d                              ; NX so far
.Llevel:
    lea ecx, [r9 * 8 + r9]
    add ecx, 3
    mov rax, rdi
    shr rax, cl
    and eax, 0x1FF
    lea rax, [r8 + rax * 8]
    mov rdx, qword ptr [rax]
    test rdx, PTE_PRESENT
    jz .Lunmapped
    and r10, rdx
    mov rcx, PTE_NX
    and rcx, rdx
    or r11, rcx
    cmp r9d, 1
    je .Lleaf
    test rdx, PTE_HUGE
    jnz .Lleaf
    mov rcx, PTE_ADDRESS
    and rdx, rcx
    mov r8, rdx
    dec r9d
    jmp .Llevel
.Lleaf:
    mov edx, r9d
    mov rcx, r10
    or rcx, r11
    or rcx, PTE_PRESENT
    pop rbp
    ret
.Lunmapped:
    xor eax, eax
    xor edx, edx
    xor ecx, ecx
    pop rbp
    ret
.endfunction

; translate(va) -> rax = physical address, rdx = 1; or rax = 0, rdx = 0 when va is not mapped
.function translate, aetherion::memory::paging::translate
translate:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    call walk
    test rax, rax
    jz .Lnone
    lea ecx, [rdx * 8 + rdx]                    ; page offset bits: 9 * level + 3
    add ecx, 3
    mov r8, 1
    shl r8, cl
    dec r8                                      ; offset mask
    mov rax, qword ptr [rax]
    mov r9, PTE_ADDRESS
    and rax, r9
    mov r9, r8
    not r9
    and rax, r9
    and rbx, r8
    or rax, rbx
    mov edx, 1
    jmp .Lout
.Lnone:
    xor eax, eax
    xor edx, edx
.Lout:
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; page_flags(va) -> effective flags (see walk), 0 when not mapped
.function page_flags, aetherion::memory::paging::page_flags
page_flags:
    push rbp
    mov rbp, rsp
    call walk
    mov rax, rcx
    pop rbp
    ret
.endfunction

; unmap_page(va) -> the frame that was mapped there (0 if none); flushes the TLB entry
.function unmap_page, aetherion::memory::paging::unmap_page
unmap_page:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    call walk
    test rax, rax
    jz .Lnone
    cmp edx, 1
    jne .Lnone                                  ; 2 MiB identity pages are not unmapped one by one
    mov rdx, qword ptr [rax]
    mov qword ptr [rax], 0
    invlpg byte ptr [rbx]
    mov rax, PTE_ADDRESS
    and rax, rdx
    jmp .Lout
.Lnone:
    xor eax, eax
.Lout:
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; identity_flags(address) -> PTE flags for a 4 KiB identity page: by kernel section, else RW- NX
.function identity_flags, aetherion::memory::paging::identity_flags
identity_flags:
    push rbp
    mov rbp, rsp
    lea rax, [rip + __text_start]
    cmp rdi, rax
    jb .Ldata
    lea rax, [rip + __text_end]
    cmp rdi, rax
    jae .Lnot_text
    xor eax, eax                                ; R-X
    jmp .Lout
.Lnot_text:
    lea rax, [rip + __rodata_end]
    cmp rdi, rax
    jae .Ldata
    mov rax, PTE_NX                             ; R--
    jmp .Lout
.Ldata:
    cmp rdi, ROM_BASE
    jb .Lrw
    cmp rdi, ROM_END
    jae .Lrw
    mov rax, PTE_NX                             ; the BIOS ROM: read-only
    jmp .Lout
.Lrw:
    mov rax, PTE_NX | PTE_WRITABLE
.Lout:
    pop rbp
    ret
.endfunction

; init(): build the tables, map RAM and the heap, switch CR3
.function paging_init, aetherion::memory::paging::init
paging_init:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    call alloc_table
    mov qword ptr [rip + PML4], rax
    ; RAM end: the highest end of an E820 RAM range
    mov rax, qword ptr [rip + START_INFO]
    mov rbx, qword ptr [rax + HvmStartInfo.memmap_paddr]
    mov ecx, dword ptr [rax + HvmStartInfo.memmap_entries]
    xor r12d, r12d
.Lram:
    test ecx, ecx
    jz .Lram_done
    cmp dword ptr [rbx + HvmMemmapEntry.type], E820_RAM
    jne .Lram_next
    mov rax, qword ptr [rbx + HvmMemmapEntry.addr]
    add rax, qword ptr [rbx + HvmMemmapEntry.size]
    cmp rax, r12
    cmova r12, rax
.Lram_next:
    add rbx, HvmMemmapEntry.SIZE
    dec ecx
    jmp .Lram
.Lram_done:
    and r12, -PAGE_SIZE
    mov qword ptr [rip + RAM_END], r12
    ; identity map, one 2 MiB region at a time
    xor ebx, ebx
.Lregion:
    cmp rbx, r12
    jae .Lidentity_done
    lea r13, [rbx + HUGE_PAGE_SIZE]
    test rbx, rbx
    jz .Lsmall                                  ; the first 2 MiB: page 0 stays unmapped
    cmp r13, r12
    ja .Lsmall                                  ; RAM ends inside this region
    lea rax, [rip + __text_start]
    cmp r13, rax
    jbe .Lbig
    lea rax, [rip + __kernel_end]
    cmp rbx, rax
    jae .Lbig
.Lsmall:
    mov r14, rbx
    test r14, r14
    jnz .Lpage
    mov r14d, PAGE_SIZE
.Lpage:
    cmp r14, r13
    jae .Lregion_done
    cmp r14, r12
    jae .Lregion_done
    mov rdi, r14
    call identity_flags
    mov rdi, r14
    mov rsi, r14
    mov rdx, rax
    call map_page
    add r14, PAGE_SIZE
    jmp .Lpage
.Lbig:
    mov rdi, rbx
    call map_huge
.Lregion_done:
    mov rbx, r13
    jmp .Lregion
.Lidentity_done:
    ; the heap: fresh zeroed pool frames
    xor ebx, ebx
.Lheap:
    cmp ebx, HEAP_PAGES
    jae .Lheap_done
    call alloc_table
    mov rsi, rax
    mov rdi, rbx
    shl rdi, 12
    mov rax, HEAP_START
    add rdi, rax
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
    inc ebx
    jmp .Lheap
.Lheap_done:
    mov rax, qword ptr [rip + PML4]
    mov cr3, rax
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; With `test verbose`: the guest's own translations of interesting addresses, for host tests.
.function print_translations, aetherion::memory::paging::print_translations
print_translations:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    lea rdi, [rip + probe_list]
    mov rax, rsp
    mov qword ptr [rdi + .Lprobe_stack - probe_list], rax
    mov rax, qword ptr [rip + RAM_END]
    dec rax
    mov qword ptr [rdi + .Lprobe_ram_end - probe_list], rax
    xor ebx, ebx
.Lprobe:
    cmp ebx, PROBES
    jae .Ldone
    lea rax, [rip + probe_list]
    mov r12, qword ptr [rax + rbx * 8]
    lea rdi, [rip + translate_text]
    call serial_write_cstr
    mov rdi, r12
    call write_hex
    lea rdi, [rip + arrow]
    call serial_write_cstr
    mov rdi, r12
    call translate
    test rdx, rdx
    jz .Lnone
    mov rdi, rax
    call write_hex
    jmp .Lline
.Lnone:
    lea rdi, [rip + none_text]
    call serial_write_cstr
.Lline:
    call write_newline
    inc ebx
    jmp .Lprobe
.Ldone:
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
pool_empty: .asciz "out of physical frames for a page table"
huge_in_way: .asciz "map_page("
huge_in_way_end: .asciz "): a 2 MiB page is in the way"
translate_text: .asciz "translate "
arrow: .asciz " -> "
none_text: .asciz "none"

.section data
.object PML4, aetherion::memory::paging::PML4
PML4: .quad 0
.endobject
.object RAM_END, aetherion::memory::RAM_END
RAM_END: .quad 0
.endobject
; The addresses print_translations translates (two are filled in when it runs)
probe_list:
    .quad 0, __text_start, __rodata_start, __data_start, __bss_start
.Lprobe_stack:
    .quad 0                                     ; the current stack
    .quad HEAP_START, HEAP_START + HEAP_SIZE - 1
    .quad HEAP_START - 1, HEAP_START + HEAP_SIZE ; the guard pages
    .quad POOL_START
.Lprobe_ram_end:
    .quad 0                                     ; RAM end - 1
.Lprobes_end:
.equ PROBES, (.Lprobes_end - probe_list) / 8
