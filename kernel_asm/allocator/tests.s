; In-kernel tests for phase 1.3: the specification's nine, each on a private heap region, and
; heap integration tests through the global allocator.

.equ REGION_SIZE, 65536
.equ BOX_SIZE, 1024
.equ BOXES, 2048                                ; 2048 KiB of 1 KiB boxes: twice the heap
.equ BLOCKS, 10                                 ; test_multiple_allocs' blocks

; A record of align_cases
.struct AlignCase
    addr: .quad                                 ; -1 ends the table
    align: .quad
    expected: .quad
.endstruct

.section text
.function test_align_up, aetherion::allocator::bump::tests::test_align_up
test_align_up:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    lea rbx, [rip + align_cases]
.Lcase:
    mov rdi, qword ptr [rbx + AlignCase.addr]
    cmp rdi, -1
    je .Ldone
    mov rsi, qword ptr [rbx + AlignCase.align]
    call align_up
    mov rdi, rax
    mov rsi, qword ptr [rbx + AlignCase.expected]
    call_here assert_eq, rdx
    add rbx, AlignCase.SIZE
    jmp .Lcase
.Ldone:
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; A fresh private bump allocator over test_region: rax = the allocator
.function fresh_bump, aetherion::allocator::bump::tests::fresh
fresh_bump:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + test_bump]
    lea rsi, [rip + test_region]
    mov edx, REGION_SIZE
    call bump_init
    lea rax, [rip + test_bump]
    pop rbp
    ret
.endfunction

.function test_bump_allocator, aetherion::allocator::bump::tests::test_bump_allocator
test_bump_allocator:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call fresh_bump
    mov rbx, rax
    mov rdi, qword ptr [rbx + BumpAllocator.heap_start]
    lea rsi, [rip + test_region]
    call_here assert_eq, rdx
    mov rdi, qword ptr [rbx + BumpAllocator.heap_end]
    lea rsi, [rip + test_region + REGION_SIZE]
    call_here assert_eq, rdx
    mov rdi, qword ptr [rbx + BumpAllocator.next]
    lea rsi, [rip + test_region]
    call_here assert_eq, rdx
    mov rdi, qword ptr [rbx + BumpAllocator.allocations]
    xor esi, esi
    call_here assert_eq, rdx
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; bump_expect(size, align, expected_offset_or_-1, location): alloc on test_bump, check the offset
.function bump_expect, aetherion::allocator::bump::tests::expect
bump_expect:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdx
    mov r12, rcx
    mov rax, rdi
    lea rdi, [rip + test_bump]
    xchg rsi, rax
    mov rdx, rax
    call bump_alloc
    mov rdi, rax
    lea rsi, [rip + test_region]
    add rsi, rbx
    cmp rbx, -1
    jne .Lcompare
    xor esi, esi                                ; expected: null
.Lcompare:
    mov rdx, r12
    call assert_eq
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function test_allocation, aetherion::allocator::bump::tests::test_allocation
test_allocation:
    push rbp
    mov rbp, rsp
    call fresh_bump
    mov edi, 16
    mov esi, 8
    xor edx, edx
    call_here bump_expect, rcx
    mov edi, 8
    mov esi, 8
    mov edx, 16
    call_here bump_expect, rcx
    mov edi, 1
    mov esi, 1
    mov edx, 24
    call_here bump_expect, rcx
    mov edi, 8
    mov esi, 64
    mov edx, 64                                 ; 25 rounded up to 64
    call_here bump_expect, rcx
    mov rdi, qword ptr [rip + test_bump + BumpAllocator.allocations]
    mov esi, 4
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + test_bump + BumpAllocator.next]
    lea rsi, [rip + test_region + 72]
    call_here assert_eq, rdx
    pop rbp
    ret
.endfunction

.function test_out_of_memory, aetherion::allocator::bump::tests::test_out_of_memory
test_out_of_memory:
    push rbp
    mov rbp, rsp
    call fresh_bump
    mov edi, REGION_SIZE + 1
    mov esi, 1
    mov rdx, -1
    call_here bump_expect, rcx
    mov edi, REGION_SIZE
    mov esi, 1
    xor edx, edx
    call_here bump_expect, rcx
    mov edi, 1
    mov esi, 1
    mov rdx, -1
    call_here bump_expect, rcx
    call fresh_bump
    mov edi, 8
    mov rsi, 0x4000000000000000                 ; alignment far beyond the heap
    mov rdx, -1
    call_here bump_expect, rcx
    mov rdi, -8                                 ; size that overflows the address space
    mov esi, 8
    mov rdx, -1
    call_here bump_expect, rcx
    mov edi, 8
    mov esi, 3                                  ; not a power of two
    mov rdx, -1
    call_here bump_expect, rcx
    pop rbp
    ret
.endfunction

.function test_reset, aetherion::allocator::bump::tests::test_reset
test_reset:
    push rbp
    mov rbp, rsp
    call fresh_bump
    lea rdi, [rip + test_bump]
    mov esi, 100
    mov edx, 8
    call bump_alloc
    lea rdi, [rip + test_bump]
    mov esi, 200
    mov edx, 8
    call bump_alloc
    lea rdi, [rip + test_bump]
    call bump_reset
    mov rdi, qword ptr [rip + test_bump + BumpAllocator.next]
    lea rsi, [rip + test_region]
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + test_bump + BumpAllocator.allocations]
    xor esi, esi
    call_here assert_eq, rdx
    mov edi, 16
    mov esi, 8
    xor edx, edx
    call_here bump_expect, rcx
    pop rbp
    ret
.endfunction

.function fresh_ll, aetherion::allocator::linked_list::tests::fresh
fresh_ll:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + test_ll]
    lea rsi, [rip + test_region]
    mov edx, REGION_SIZE
    call ll_init
    pop rbp
    ret
.endfunction

; ll_expect_free(bytes, blocks, location)
.function ll_expect_free, aetherion::allocator::linked_list::tests::expect_free
ll_expect_free:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    lea rdi, [rip + test_ll]
    call ll_free_bytes
    mov r14, rdx
    mov rdi, rax
    mov rsi, rbx
    mov rdx, r13
    call assert_eq
    mov rdi, r14
    mov rsi, r12
    mov rdx, r13
    call assert_eq
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function test_linked_list_allocator, aetherion::allocator::linked_list::tests::test_linked_list_allocator
test_linked_list_allocator:
    push rbp
    mov rbp, rsp
    call fresh_ll
    mov rdi, qword ptr [rip + test_ll + LinkedListAllocator.head.next]
    lea rsi, [rip + test_region]                ; the whole region is one free block
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + test_region + ListNode.size]
    mov esi, REGION_SIZE
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + test_region + ListNode.next]
    xor esi, esi
    call_here assert_eq, rdx
    mov edi, REGION_SIZE
    mov esi, 1
    call_here ll_expect_free, rdx
    pop rbp
    ret
.endfunction

.function test_alloc_dealloc, aetherion::allocator::linked_list::tests::test_alloc_dealloc
test_alloc_dealloc:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call fresh_ll
    lea rdi, [rip + test_ll]
    mov esi, 64
    mov edx, 8
    call ll_alloc
    mov rbx, rax
    mov rdi, rax
    lea rsi, [rip + test_region]
    call_here assert_eq, rdx
    mov edi, REGION_SIZE - 64
    mov esi, 1
    call_here ll_expect_free, rdx
    lea rdi, [rip + test_ll]
    mov rsi, rbx
    mov edx, 64
    mov ecx, 8
    call ll_dealloc
    mov edi, REGION_SIZE
    mov esi, 2                                  ; no coalescing: two blocks now
    call_here ll_expect_free, rdx
    lea rdi, [rip + test_ll]
    mov esi, 64
    mov edx, 8
    call ll_alloc
    mov rdi, rax
    mov rsi, rbx
    call_here assert_eq, rdx
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; Ten 100-byte blocks (104 after rounding) side by side; each keeps its own contents.
.function test_multiple_allocs, aetherion::allocator::linked_list::tests::test_multiple_allocs
test_multiple_allocs:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    call fresh_ll
    xor ebx, ebx
.Lalloc:
    lea rdi, [rip + test_ll]
    mov esi, 100
    mov edx, 8
    call ll_alloc
    lea rcx, [rip + test_ptrs]
    mov qword ptr [rcx + rbx * 8], rax
    imul rsi, rbx, 104
    lea rcx, [rip + test_region]
    add rsi, rcx
    mov rdi, rax
    call_here assert_eq, rdx
    lea rcx, [rip + test_ptrs]
    mov rdi, qword ptr [rcx + rbx * 8]
    mov eax, ebx
    mov ecx, 100
    rep stosb                                   ; fill block i with byte i
    inc ebx
    cmp ebx, BLOCKS
    jne .Lalloc
    xor ebx, ebx
.Lcheck:
    lea rcx, [rip + test_ptrs]
    mov rax, qword ptr [rcx + rbx * 8]
    movzx edi, byte ptr [rax + 99]
    mov esi, ebx
    call_here assert_eq, rdx
    lea rdi, [rip + test_ll]
    lea rcx, [rip + test_ptrs]
    mov rsi, qword ptr [rcx + rbx * 8]
    mov edx, 100
    mov ecx, 8
    call ll_dealloc
    inc ebx
    cmp ebx, BLOCKS
    jne .Lcheck
    mov edi, REGION_SIZE
    mov esi, BLOCKS + 1
    call_here ll_expect_free, rdx
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; Through the global allocator: heap_size is 1 MiB, used + free == heap_size, an allocation
; of 100 bytes costs 100 (bump, plus alignment) or 104 (linked list) bytes.
.function test_heap_stats, aetherion::allocator::tests::test_heap_stats
test_heap_stats:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    sub rsp, 48                                 ; two HeapStats, below the saved rbx and r12:
.equ .Lbefore, -64
.equ .Lafter, -40
    lea rdi, [rbp + .Lbefore]
    call heap_stats
    mov rdi, qword ptr [rbp + .Lbefore + HeapStats.heap_size]
    mov esi, HEAP_SIZE
    call_here assert_eq, rdx
    mov rdi, qword ptr [rbp + .Lbefore + HeapStats.used]
    add rdi, qword ptr [rbp + .Lbefore + HeapStats.free]
    mov esi, HEAP_SIZE
    call_here assert_eq, rdx
    mov rbx, qword ptr [rbp + .Lbefore + HeapStats.used]
    mov edi, 100
    mov esi, 8
    call __rust_alloc
    mov r12, rax
    lea rdi, [rbp + .Lafter]
    call heap_stats
    mov rax, qword ptr [rbp + .Lafter + HeapStats.used]
    sub rax, rbx
    xor edi, edi
    cmp rax, 100
    jb .Lverdict
    cmp rax, 112
    setb dil
.Lverdict:
    call_here assert_true, rsi
    mov rdi, r12
    mov esi, 100
    mov edx, 8
    call __rust_dealloc
    add rsp, 48
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function simple_allocation, aetherion::heap_allocation::simple_allocation
simple_allocation:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov edi, 41
    call box_new_i32
    mov rbx, rax
    mov edi, 13
    call box_new_i32
    mov r12, rax
    mov edi, dword ptr [rbx]
    mov esi, 41
    call_here assert_eq, rdx
    mov edi, dword ptr [r12]
    mov esi, 13
    call_here assert_eq, rdx
    mov rdi, r12
    mov esi, 4
    mov edx, 4
    call box_drop
    mov rdi, rbx
    mov esi, 4
    mov edx, 4
    call box_drop
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function large_vec, aetherion::heap_allocation::large_vec
large_vec:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 24                                 ; a Vec<u64>, below the saved rbx
.equ .Lvec, -32
    lea rdi, [rbp + .Lvec]
    mov esi, 8
    call vec_new
    xor ebx, ebx
.Lpush:
    lea rdi, [rbp + .Lvec]
    mov rsi, rbx
    call vec_push_u64
    inc ebx
    cmp ebx, 1000
    jne .Lpush
    xor edi, edi
    xor ecx, ecx
    mov rax, qword ptr [rbp + .Lvec + Vec.ptr]
.Lsum:
    add rdi, qword ptr [rax + rcx * 8]
    inc ecx
    cmp ecx, 1000
    jne .Lsum
    mov esi, 499500                             ; (n - 1) * n / 2
    call_here assert_eq, rdx
    lea rdi, [rbp + .Lvec]
    mov esi, 8
    mov edx, 8
    call vec_drop
    add rsp, 24
    pop rbx
    pop rbp
    ret
.endfunction

; box_churn(): BOXES short-lived 1 KiB boxes, each written and checked before it is dropped
.function box_churn, aetherion::heap_allocation::box_churn
box_churn:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    xor ebx, ebx
.Lbox:
    mov edi, BOX_SIZE
    mov esi, 8
    call box_new_bytes
    mov r12, rax
    mov qword ptr [r12], rbx                    ; the first and the last u64
    mov qword ptr [r12 + BOX_SIZE - 8], rbx
    mov rdi, qword ptr [r12 + BOX_SIZE - 8]
    mov rsi, rbx
    call_here assert_eq, rdx
    mov rdi, r12
    mov esi, BOX_SIZE
    mov edx, 8
    call box_drop
    inc ebx
    cmp ebx, BOXES
    jne .Lbox
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function many_boxes, aetherion::heap_allocation::many_boxes
many_boxes:
    push rbp
    mov rbp, rsp
    call box_churn
    pop rbp
    ret
.endfunction

.function many_boxes_long_lived, aetherion::heap_allocation::many_boxes_long_lived
many_boxes_long_lived:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov edi, 1
    call box_new_i32
    mov rbx, rax
    call box_churn
    mov edi, dword ptr [rbx]
    mov esi, 1
    call_here assert_eq, rdx
    mov rdi, rbx
    mov esi, 4
    mov edx, 4
    call box_drop
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; A freed block at the head is reused first, and its excess after a smaller block next.
.function head_excess_reuse, aetherion::heap_allocation::head_excess_reuse
head_excess_reuse:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov edi, 1024
    mov esi, 8
    call __rust_alloc
    mov rbx, rax
    mov rdi, rax
    mov esi, 1024
    mov edx, 8
    call __rust_dealloc
    mov edi, 512
    mov esi, 8
    call __rust_alloc
    mov r12, rax
    mov rdi, rax
    mov rsi, rbx
    call_here assert_eq, rdx
    mov edi, 512
    mov esi, 8
    call __rust_alloc
    mov rdi, rax
    lea rsi, [rbx + 512]
    call_here assert_eq, rdx
    lea rdi, [rbx + 512]
    mov esi, 512
    mov edx, 8
    call __rust_dealloc
    mov rdi, r12
    mov esi, 512
    mov edx, 8
    call __rust_dealloc
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
.align 8
align_cases:                                    ; AlignCase records
    .quad 0, 8, 0
    .quad 1, 8, 8
    .quad 8, 8, 8
    .quad 9, 16, 16
    .quad 4097, 4096, 8192
    .quad 0x444444440001, 0x1000, 0x444444441000
    .quad -1
reuse_reason: .asciz "the bump allocator never reuses freed memory"

.section bss
.align 4096
test_region: .zero REGION_SIZE
test_bump: .zero BumpAllocator.SIZE
test_ll: .zero LinkedListAllocator.SIZE
test_ptrs: .zero BLOCKS * 8

; The test table (the test_case macro is in test_runner.s)
test_case test_align_up, "allocator::bump::test_align_up"
test_case test_bump_allocator, "allocator::bump::test_bump_allocator"
test_case test_allocation, "allocator::bump::test_allocation"
test_case test_out_of_memory, "allocator::bump::test_out_of_memory"
test_case test_reset, "allocator::bump::test_reset"
test_case test_linked_list_allocator, "allocator::linked_list::test_linked_list_allocator"
test_case test_alloc_dealloc, "allocator::linked_list::test_alloc_dealloc"
test_case test_multiple_allocs, "allocator::linked_list::test_multiple_allocs"
test_case test_heap_stats, "allocator::test_heap_stats"
test_case simple_allocation, "heap_allocation::simple_allocation"
test_case large_vec, "heap_allocation::large_vec"
test_case many_boxes, "heap_allocation::many_boxes", reuse_reason
test_case many_boxes_long_lived, "heap_allocation::many_boxes_long_lived", reuse_reason
test_case head_excess_reuse, "heap_allocation::head_excess_reuse", reuse_reason
