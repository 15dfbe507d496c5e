; The global allocator: a LockedAllocator behind rustc's `__rust_*` allocator entry points
; (System V ABI), its inner allocator chosen at boot by `allocator=`.

.equ KIND_BUMP, 0
.equ KIND_LINKED_LIST, 1

; ALLOCATOR, read by the host's heap views (emulator/layout.py: LOCK_OFFSET, KIND_OFFSET, INNER_OFFSET)
.struct LockedAllocator
    lock: .quad                                 ; the spin lock: 0 free, 1 held
    kind: .quad                                 ; KIND_BUMP or KIND_LINKED_LIST: which inner allocator
    inner: BumpAllocator | LinkedListAllocator
.endstruct

; What heap_stats() returns (through a hidden pointer: it is over 16 bytes)
.struct HeapStats
    heap_size: .quad
    used: .quad
    free: .quad
.endstruct

.section text
; init(kind): the whole heap to the chosen allocator
.function allocator_init, aetherion::allocator::init
allocator_init:
    push rbp
    mov rbp, rsp
    lea rax, [rip + ALLOCATOR]
    mov qword ptr [rax + LockedAllocator.lock], 0
    mov qword ptr [rax + LockedAllocator.kind], rdi
    lea rdi, [rax + LockedAllocator.inner]
    mov rsi, HEAP_START
    mov edx, HEAP_SIZE
    cmp qword ptr [rax + LockedAllocator.kind], KIND_BUMP
    jne .Llinked
    call bump_init
    jmp .Lout
.Llinked:
    call ll_init
.Lout:
    pop rbp
    ret
.endfunction

; The spin lock: test-and-test-and-set with xchg, pausing while another holder has it. Taken
; with interrupts disabled (blog_os's `without_interrupts`), so an interrupt handler that
; allocates can never find it held by the code it interrupted: lock() -> the RFLAGS from before,
; which unlock(flags) restores IF from.
.function lock_acquire, aetherion::allocator::Locked::lock
lock_acquire:
    push rbp
    mov rbp, rsp
    call interrupts_disable
    mov r8, rax
    lea rdx, [rip + ALLOCATOR + LockedAllocator.lock]
.Ltry:
    mov eax, 1
    xchg qword ptr [rdx], rax
    test rax, rax
    jz .Lheld
.Lspin:
    pause
    cmp qword ptr [rdx], 0
    jne .Lspin
    jmp .Ltry
.Lheld:
    mov rax, r8
    pop rbp
    ret
.endfunction

; unlock(flags): free, then interrupts back on if they were on when lock() was called
.function lock_release, aetherion::allocator::Locked::unlock
lock_release:
    push rbp
    mov rbp, rsp
    lea rdx, [rip + ALLOCATOR + LockedAllocator.lock]
    mov qword ptr [rdx], 0
    call interrupts_restore
    pop rbp
    ret
.endfunction

; GlobalAlloc::alloc(size, align) -> pointer or 0
.function global_alloc, aetherion::allocator::LockedAllocator::alloc
global_alloc:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    call lock_acquire
    mov r13, rax                                ; the flags to restore
    lea rdi, [rip + ALLOCATOR + LockedAllocator.inner]
    mov rsi, rbx
    mov rdx, r12
    cmp qword ptr [rip + ALLOCATOR + LockedAllocator.kind], KIND_BUMP
    jne .Llinked
    call bump_alloc
    jmp .Lunlock
.Llinked:
    call ll_alloc
.Lunlock:
    mov rbx, rax
    mov rdi, r13
    call lock_release
    mov rax, rbx
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; GlobalAlloc::dealloc(ptr, size, align)
.function global_dealloc, aetherion::allocator::LockedAllocator::dealloc
global_dealloc:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    call lock_acquire
    mov r14, rax                                ; the flags to restore
    lea rdi, [rip + ALLOCATOR + LockedAllocator.inner]
    mov rsi, rbx
    mov rdx, r12
    mov rcx, r13
    cmp qword ptr [rip + ALLOCATOR + LockedAllocator.kind], KIND_BUMP
    jne .Llinked
    call bump_dealloc
    jmp .Lunlock
.Llinked:
    call ll_dealloc
.Lunlock:
    mov rdi, r14
    call lock_release
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; heap_stats(out: *mut HeapStats) -> out (HeapStats is 24 bytes, so it is returned through a
; hidden pointer in rdi, as the System V ABI does for structs over 16 bytes)
.function heap_stats, aetherion::allocator::heap_stats
heap_stats:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    call lock_acquire
    mov r12, rax                                ; the flags to restore
    lea rdi, [rip + ALLOCATOR + LockedAllocator.inner]
    cmp qword ptr [rip + ALLOCATOR + LockedAllocator.kind], KIND_BUMP
    jne .Llinked
    call bump_stats
    jmp .Lstore
.Llinked:
    call ll_free_bytes
    mov rcx, rax                                ; free
    mov eax, HEAP_SIZE
    mov rdx, rax
    sub rdx, rcx                                ; used = heap_size - free
.Lstore:
    mov qword ptr [rbx + HeapStats.heap_size], rax
    mov qword ptr [rbx + HeapStats.used], rdx
    mov qword ptr [rbx + HeapStats.free], rcx
    mov rdi, r12
    call lock_release
    mov rax, rbx
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; --- rustc's allocator entry points ---

.function __rust_alloc
__rust_alloc:
    push rbp
    mov rbp, rsp
    call global_alloc
    pop rbp
    ret
.endfunction

.function __rust_dealloc
__rust_dealloc:
    push rbp
    mov rbp, rsp
    call global_dealloc
    pop rbp
    ret
.endfunction

; __rust_realloc(ptr, old_size, align, new_size): in place when the bump allocator's last block
; can grow or shrink where it is; otherwise GlobalAlloc's default, allocate, copy, free
.function __rust_realloc
__rust_realloc:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov r14, rcx
    call bump_realloc_in_place
    test rax, rax
    jnz .Lout
    mov rdi, r14
    mov rsi, r13
    call global_alloc
    test rax, rax
    jz .Lout                                    ; the old block stays valid, as GlobalAlloc says
    mov rdi, rax
    mov rsi, rbx
    mov rcx, r12
    cmp rcx, r14
    cmova rcx, r14                              ; copy min(old_size, new_size)
    mov r14, rax
    rep movsb
    mov rdi, rbx
    mov rsi, r12
    mov rdx, r13
    call global_dealloc
    mov rax, r14
.Lout:
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; bump_realloc_in_place(ptr, old_size, align, new_size) -> ptr if resized in place, else 0:
; only under the bump allocator, only the most recent block (ptr + old_size == next)
.function bump_realloc_in_place, aetherion::allocator::LockedAllocator::realloc_in_place
bump_realloc_in_place:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rcx
    mov r14, rsi
    call lock_acquire
    mov r13, rax                                ; the flags to restore
    mov r8, r14
    xor eax, eax
    cmp qword ptr [rip + ALLOCATOR + LockedAllocator.kind], KIND_BUMP
    jne .Ldone
    lea rcx, [rbx + r8]
    cmp rcx, qword ptr [rip + ALLOCATOR + LockedAllocator.inner.next]   ; the block is the last one
    jne .Ldone
    mov rcx, rbx
    add rcx, r12
    jc .Ldone
    cmp rcx, qword ptr [rip + ALLOCATOR + LockedAllocator.inner.heap_end]
    ja .Ldone
    mov qword ptr [rip + ALLOCATOR + LockedAllocator.inner.next], rcx
    mov rax, rbx
.Ldone:
    mov rbx, rax
    mov rdi, r13
    call lock_release
    mov rax, rbx
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function __rust_alloc_zeroed
__rust_alloc_zeroed:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    call global_alloc
    test rax, rax
    jz .Lout
    mov r12, rax
    mov rdi, rax
    mov rcx, rbx
    xor eax, eax
    rep stosb
    mov rax, r12
.Lout:
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; __rust_alloc_error_handler(size, align) -> !:
; panics with `Heap allocation failed: Layout { size: N, align: A (1 << K) }`
.function __rust_alloc_error_handler
__rust_alloc_error_handler:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    mov r12, rsi
    call_here panic_header, rdi
    lea rdi, [rip + layout_text]
    call serial_write_cstr
    mov rdi, rbx
    call write_u64
    lea rdi, [rip + align_text]
    call serial_write_cstr
    mov rdi, r12
    call write_u64
    lea rdi, [rip + shift_text]
    call serial_write_cstr
    bsf rdi, r12
    call write_u64
    lea rdi, [rip + close_text]
    call serial_write_cstr
    call panic_finish
.endfunction

.section rodata
layout_text: .asciz "Heap allocation failed: Layout { size: "
align_text: .asciz ", align: "
shift_text: .asciz " (1 << "
close_text: .asciz ") }\n"

.section data
.object ALLOCATOR, aetherion::allocator::ALLOCATOR
ALLOCATOR:
    .quad 0, KIND_LINKED_LIST                   ; lock, kind
    .zero LockedAllocator.SIZE - LockedAllocator.inner
.endobject
