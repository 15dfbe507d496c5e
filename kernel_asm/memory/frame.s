; Phase 1.1: the physical frame allocator over the 32 MiB pool, a bitmap.
; Frame i is the physical page POOL_START + i * 4096. Allocation is lowest-address first.

; FRAME_ALLOCATOR, read by the host's frame-pool view (emulator/layout.py: FRAME_*)
.struct FrameAllocator
    pool_start: .quad
    pool_end: .quad
    total: .quad                                ; usable frames
    free: .quad
    search_from: .quad                          ; the frame index where a search starts
    used: .quad FRAME_BITMAP_WORDS              ; bit set = allocated, or not RAM
    usable: .quad FRAME_BITMAP_WORDS            ; bit set = RAM according to the E820 map
.endstruct

.section text
; init(start_info): usable = pool frames lying wholly inside an E820 RAM range
.function frame_init, aetherion::memory::frame::init
frame_init:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    lea rbx, [rip + FRAME_ALLOCATOR]
    mov qword ptr [rbx + FrameAllocator.pool_start], POOL_START
    mov qword ptr [rbx + FrameAllocator.pool_end], POOL_END
    xor ecx, ecx
.Lall_used:
    mov qword ptr [rbx + FrameAllocator.used + rcx*8], -1
    mov qword ptr [rbx + FrameAllocator.usable + rcx*8], 0
    inc ecx
    cmp ecx, FRAME_BITMAP_WORDS
    jne .Lall_used
    mov r12, qword ptr [rdi + HvmStartInfo.memmap_paddr]
    mov r13d, dword ptr [rdi + HvmStartInfo.memmap_entries]
    xor r14d, r14d                              ; frames found
.Lentry:
    test r13, r13
    jz .Ldone
    cmp dword ptr [r12 + HvmMemmapEntry.type], E820_RAM
    jne .Lskip
    mov rax, qword ptr [r12 + HvmMemmapEntry.addr]  ; first frame: max(align_up(addr), POOL_START)
    add rax, PAGE_SIZE - 1
    and rax, -PAGE_SIZE
    mov ecx, POOL_START
    cmp rax, rcx
    cmovb rax, rcx
    mov rdx, qword ptr [r12 + HvmMemmapEntry.addr]  ; end: min(align_down(addr + size), POOL_END)
    add rdx, qword ptr [r12 + HvmMemmapEntry.size]
    and rdx, -PAGE_SIZE
    mov ecx, POOL_END
    cmp rdx, rcx
    cmova rdx, rcx
.Lframe:
    cmp rax, rdx
    jae .Lskip
    mov rcx, rax
    sub rcx, POOL_START
    shr rcx, 12
    btr qword ptr [rbx + FrameAllocator.used], rcx  ; bit string ops: rcx indexes bits from the base
    bts qword ptr [rbx + FrameAllocator.usable], rcx
    jc .Lseen                                   ; overlapping E820 entries: count a frame once
    inc r14
.Lseen:
    add rax, PAGE_SIZE
    jmp .Lframe
.Lskip:
    add r12, HvmMemmapEntry.SIZE
    dec r13
    jmp .Lentry
.Ldone:
    mov qword ptr [rbx + FrameAllocator.total], r14
    mov qword ptr [rbx + FrameAllocator.free], r14
    mov qword ptr [rbx + FrameAllocator.search_from], 0
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; allocate_frame() -> physical address of a free frame, or 0 when none is left
.function allocate_frame, aetherion::memory::frame::allocate_frame
allocate_frame:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + FRAME_ALLOCATOR]
    mov rcx, qword ptr [rdi + FrameAllocator.search_from]
.Lsearch:
    cmp rcx, POOL_FRAMES
    jae .Lnone
    mov rdx, rcx
    shr rdx, 6
    mov rax, qword ptr [rdi + FrameAllocator.used + rdx*8]
    not rax
    mov r9, rcx
    and ecx, 63
    shr rax, cl                                 ; drop the bits below the search start
    mov rcx, r9
    test rax, rax
    jz .Lnext_word
    bsf rax, rax
    add rcx, rax                                ; the frame index
    bts qword ptr [rdi + FrameAllocator.used], rcx
    dec qword ptr [rdi + FrameAllocator.free]
    lea rax, [rcx + 1]
    mov qword ptr [rdi + FrameAllocator.search_from], rax
    shl rcx, 12
    lea rax, [rcx + POOL_START]
    pop rbp
    ret
.Lnext_word:
    or rcx, 63
    inc rcx
    jmp .Lsearch
.Lnone:
    xor eax, eax
    pop rbp
    ret
.endfunction

; check_deallocate(phys) -> 0 ok, 1 outside the pool, 2 not 4 KiB aligned, 3 not RAM, 4 already free
.function check_deallocate, aetherion::memory::frame::check_deallocate
check_deallocate:
    push rbp
    mov rbp, rsp
    mov eax, 1
    cmp rdi, POOL_START
    jb .Lout
    cmp rdi, POOL_END
    jae .Lout
    mov eax, 2
    test rdi, PAGE_SIZE - 1
    jnz .Lout
    lea rdx, [rip + FRAME_ALLOCATOR]
    mov rcx, rdi
    sub rcx, POOL_START
    shr rcx, 12
    mov eax, 3
    bt qword ptr [rdx + FrameAllocator.usable], rcx
    jnc .Lout
    mov eax, 4
    bt qword ptr [rdx + FrameAllocator.used], rcx
    jnc .Lout
    xor eax, eax
.Lout:
    pop rbp
    ret
.endfunction

; deallocate_frame(phys): panics naming the address when it is not an allocated pool frame
.function deallocate_frame, aetherion::memory::frame::deallocate_frame
deallocate_frame:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    call check_deallocate
    test eax, eax
    jnz .Lbad
    lea rdx, [rip + FRAME_ALLOCATOR]
    mov rcx, rbx
    sub rcx, POOL_START
    shr rcx, 12
    btr qword ptr [rdx + FrameAllocator.used], rcx
    inc qword ptr [rdx + FrameAllocator.free]
    cmp rcx, qword ptr [rdx + FrameAllocator.search_from]
    jae .Ldone
    mov qword ptr [rdx + FrameAllocator.search_from], rcx
.Ldone:
    add rsp, 8
    pop rbx
    pop rbp
    ret
.Lbad:
    lea rcx, [rip + dealloc_reasons]
    mov rdx, qword ptr [rcx + rax*8 - 8]
    lea rdi, [rip + dealloc_prefix]
    mov rsi, rbx
    call_here panic_address, rcx
.endfunction

; free_frames() -> free frame count; total_frames() -> usable frame count
.function free_frames, aetherion::memory::frame::free_frames
free_frames:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + FRAME_ALLOCATOR + FrameAllocator.free]
    pop rbp
    ret
.endfunction

.function total_frames, aetherion::memory::frame::total_frames
total_frames:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + FRAME_ALLOCATOR + FrameAllocator.total]
    pop rbp
    ret
.endfunction

.section rodata
dealloc_prefix: .asciz "deallocate_frame("
.Lr1: .asciz "): outside the frame pool"
.Lr2: .asciz "): not 4 KiB aligned"
.Lr3: .asciz "): not RAM according to the memory map"
.Lr4: .asciz "): already free (double free)"
.align 8
dealloc_reasons: .quad .Lr1, .Lr2, .Lr3, .Lr4

.section bss
.object FRAME_ALLOCATOR, aetherion::memory::frame::FRAME_ALLOCATOR
FRAME_ALLOCATOR: .zero FrameAllocator.SIZE
.endobject
