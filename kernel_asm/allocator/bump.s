; The bump allocator. Allocation bumps `next`; dealloc only counts down (no reuse, as the
; specification says); reset() frees everything at once.

; emulator/layout.py: BUMP_FIELDS
.struct BumpAllocator
    heap_start: .quad
    heap_end: .quad
    next: .quad                                 ; where the next allocation starts (before aligning)
    allocations: .quad                          ; live allocations
.endstruct

.section text
; align_up(addr, align) -> addr rounded up to align (a power of two)
.function align_up, aetherion::allocator::align_up
align_up:
    push rbp
    mov rbp, rsp
    lea rax, [rdi + rsi - 1]
    neg rsi
    and rax, rsi
    pop rbp
    ret
.endfunction

; init(self, heap_start, heap_size)
.function bump_init, aetherion::allocator::bump::BumpAllocator::init
bump_init:
    push rbp
    mov rbp, rsp
    mov qword ptr [rdi + BumpAllocator.heap_start], rsi
    lea rax, [rsi + rdx]
    mov qword ptr [rdi + BumpAllocator.heap_end], rax
    mov qword ptr [rdi + BumpAllocator.next], rsi
    mov qword ptr [rdi + BumpAllocator.allocations], 0
    pop rbp
    ret
.endfunction

; alloc(self, size, align) -> pointer, or 0 when the heap cannot hold it (also on overflow
; and on an alignment that is not a power of two)
.function bump_alloc, aetherion::allocator::bump::BumpAllocator::alloc
bump_alloc:
    push rbp
    mov rbp, rsp
    test rdx, rdx
    jz .Lnull
    lea rax, [rdx - 1]
    test rax, rdx
    jnz .Lnull                                  ; not a power of two
    mov rax, qword ptr [rdi + BumpAllocator.next]
    add rax, rdx
    jc .Lnull
    dec rax
    neg rdx
    and rax, rdx                                ; alloc_start = align_up(next, align)
    mov rcx, rax
    add rcx, rsi
    jc .Lnull                                   ; alloc_end overflows
    cmp rcx, qword ptr [rdi + BumpAllocator.heap_end]
    ja .Lnull
    mov qword ptr [rdi + BumpAllocator.next], rcx
    inc qword ptr [rdi + BumpAllocator.allocations]
    pop rbp
    ret
.Lnull:
    xor eax, eax
    pop rbp
    ret
.endfunction

; dealloc(self, ptr, size, align): counts down; the memory comes back only with reset()
.function bump_dealloc, aetherion::allocator::bump::BumpAllocator::dealloc
bump_dealloc:
    push rbp
    mov rbp, rsp
    cmp qword ptr [rdi + BumpAllocator.allocations], 0
    je .Lout
    dec qword ptr [rdi + BumpAllocator.allocations]
.Lout:
    pop rbp
    ret
.endfunction

; reset(self): everything free again
.function bump_reset, aetherion::allocator::bump::BumpAllocator::reset
bump_reset:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rdi + BumpAllocator.heap_start]
    mov qword ptr [rdi + BumpAllocator.next], rax
    mov qword ptr [rdi + BumpAllocator.allocations], 0
    pop rbp
    ret
.endfunction

; stats(self) -> rax = heap_size, rdx = used, rcx = free
.function bump_stats, aetherion::allocator::bump::BumpAllocator::stats
bump_stats:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rdi + BumpAllocator.heap_end]
    sub rax, qword ptr [rdi + BumpAllocator.heap_start]
    mov rdx, qword ptr [rdi + BumpAllocator.next]
    sub rdx, qword ptr [rdi + BumpAllocator.heap_start]
    mov rcx, rax
    sub rcx, rdx
    pop rbp
    ret
.endfunction
