; In-guest benchmarks (cmdline `bench`), timed with rdtsc (under aeth-emu: the cycle model's count).
; One line each, parsed by `aeth-emu bench`:
;   bench NAME ops=N cycles=C                       cycles for all N operations
;   bench NAME used=U overhead=O fragmentation_permille=F
; The specification's cases: bump 1000 allocations, linked list 1000 allocations and 1000
; deallocations, and 100 KB in 1 KB chunks on each allocator (private heaps, not the global one).

.equ OPS, 1000
.equ CHUNKS, 100
.equ CHUNK, 1024
.equ BENCH_HEAP, 0x100000

.section text
.function rdtsc64, aetherion::bench::rdtsc
rdtsc64:
    push rbp
    mov rbp, rsp
    rdtsc
    shl rdx, 32
    or rax, rdx
    pop rbp
    ret
.endfunction

; report_ops(name_cstr, cycles)
.function report_ops, aetherion::bench::report_ops
report_ops:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    mov r12, rsi
    lea rdi, [rip + bench_prefix]
    call serial_write_cstr
    mov rdi, rbx
    call serial_write_cstr
    lea rdi, [rip + ops_text]
    call serial_write_cstr
    mov edi, OPS
    call write_u64
    lea rdi, [rip + cycles_text]
    call serial_write_cstr
    mov rdi, r12
    call write_u64
    call write_newline
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; report_memory(name_cstr, used, largest_free_block, free)
.function report_memory, aetherion::bench::report_memory
report_memory:
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
    lea rdi, [rip + bench_prefix]
    call serial_write_cstr
    mov rdi, rbx
    call serial_write_cstr
    lea rdi, [rip + bench_used_text]
    call serial_write_cstr
    mov rdi, r12
    call write_u64
    lea rdi, [rip + overhead_text]
    call serial_write_cstr
    lea rdi, [r12 - CHUNKS * CHUNK]
    call write_u64
    lea rdi, [rip + fragmentation_text]
    call serial_write_cstr
    ; 1000 * (1 - largest / free) = 1000 - 1000 * largest / free
    xor edi, edi
    test r14, r14
    jz .Lprint
    imul rax, r13, 1000
    xor edx, edx
    div r14
    mov edi, 1000
    sub rdi, rax
.Lprint:
    call write_u64
    call write_newline
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function bench_run, aetherion::bench::run
bench_run:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    ; bump: 1000 allocations of 32 bytes
    lea rdi, [rip + bench_bump]
    lea rsi, [rip + bench_region]
    mov edx, BENCH_HEAP
    call bump_init
    call rdtsc64
    mov r12, rax
    xor ebx, ebx
.Lbump:
    lea rdi, [rip + bench_bump]
    mov esi, 32
    mov edx, 8
    call bump_alloc
    inc ebx
    cmp ebx, OPS
    jne .Lbump
    call rdtsc64
    sub rax, r12
    lea rdi, [rip + bump_alloc_name]
    mov rsi, rax
    call report_ops
    ; linked list: 1000 allocations, then 1000 deallocations
    lea rdi, [rip + bench_ll]
    lea rsi, [rip + bench_region]
    mov edx, BENCH_HEAP
    call ll_init
    call rdtsc64
    mov r12, rax
    xor ebx, ebx
.Lll_alloc:
    lea rdi, [rip + bench_ll]
    mov esi, 32
    mov edx, 8
    call ll_alloc
    lea rcx, [rip + bench_ptrs]
    mov qword ptr [rcx + rbx * 8], rax
    inc ebx
    cmp ebx, OPS
    jne .Lll_alloc
    call rdtsc64
    sub rax, r12
    lea rdi, [rip + ll_alloc_name]
    mov rsi, rax
    call report_ops
    call rdtsc64
    mov r12, rax
    xor ebx, ebx
.Lll_free:
    lea rdi, [rip + bench_ll]
    lea rcx, [rip + bench_ptrs]
    mov rsi, qword ptr [rcx + rbx * 8]
    mov edx, 32
    mov ecx, 8
    call ll_dealloc
    inc ebx
    cmp ebx, OPS
    jne .Lll_free
    call rdtsc64
    sub rax, r12
    lea rdi, [rip + ll_dealloc_name]
    mov rsi, rax
    call report_ops
    ; memory test, bump: 100 KB in 1 KB chunks
    lea rdi, [rip + bench_bump]
    lea rsi, [rip + bench_region]
    mov edx, BENCH_HEAP
    call bump_init
    xor ebx, ebx
.Lbump_chunks:
    lea rdi, [rip + bench_bump]
    mov esi, CHUNK
    mov edx, 8
    call bump_alloc
    inc ebx
    cmp ebx, CHUNKS
    jne .Lbump_chunks
    lea rdi, [rip + bench_bump]
    call bump_stats                             ; rax heap_size, rdx used, rcx free
    lea rdi, [rip + memory_bump_name]
    mov rsi, rdx
    mov rdx, rcx                                ; the free space is one block
    call report_memory
    ; memory test, linked list
    lea rdi, [rip + bench_ll]
    lea rsi, [rip + bench_region]
    mov edx, BENCH_HEAP
    call ll_init
    xor ebx, ebx
.Lll_chunks:
    lea rdi, [rip + bench_ll]
    mov esi, CHUNK
    mov edx, 8
    call ll_alloc
    inc ebx
    cmp ebx, CHUNKS
    jne .Lll_chunks
    lea rdi, [rip + bench_ll]
    call ll_free_bytes                          ; rax free, rdx blocks, rcx largest
    mov r13, rax
    mov r14, rcx
    lea rdi, [rip + memory_ll_name]
    mov esi, BENCH_HEAP
    sub rsi, r13
    mov rdx, r14
    mov rcx, r13
    call report_memory
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
bench_prefix: .asciz "bench "
ops_text: .asciz " ops="
cycles_text: .asciz " cycles="
bench_used_text: .asciz " used="
overhead_text: .asciz " overhead="
fragmentation_text: .asciz " fragmentation_permille="
bump_alloc_name: .asciz "bump_alloc"
ll_alloc_name: .asciz "linked_list_alloc"
ll_dealloc_name: .asciz "linked_list_dealloc"
memory_bump_name: .asciz "memory_bump"
memory_ll_name: .asciz "memory_linked_list"

.section bss
.align 4096
bench_region: .zero 0x100000
bench_bump: .zero 32
bench_ll: .zero 16
bench_ptrs: .zero 8000
