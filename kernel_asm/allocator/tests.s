; In-kernel tests for phase 1.3: the specification's nine, each on a private heap region, and
; heap integration tests through the global allocator.

.equ REGION_SIZE, 65536
.equ BOXES, 2048                                ; 2048 KiB of 1 KiB boxes: twice the heap

.section text
.function test_align_up, aetherion::allocator::bump::tests::test_align_up
test_align_up:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    lea rbx, [rip + align_cases]
.Lcase:
    mov rdi, qword ptr [rbx]
    cmp rdi, -1
    je .Ldone
    mov rsi, qword ptr [rbx + 8]
    call align_up
    mov rdi, rax
    mov rsi, qword ptr [rbx + 16]
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
    add rbx, 24
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
    mov rdi, qword ptr [rbx]
    lea rsi, [rip + test_region]
    .srcloc .Lstart
    lea rdx, [rip + .Lstart]
    call assert_eq
    mov rdi, qword ptr [rbx + 8]
    lea rsi, [rip + test_region + REGION_SIZE]
    .srcloc .Lend
    lea rdx, [rip + .Lend]
    call assert_eq
    mov rdi, qword ptr [rbx + 16]
    lea rsi, [rip + test_region]
    .srcloc .Lnext
    lea rdx, [rip + .Lnext]
    call assert_eq
    mov rdi, qword ptr [rbx + 24]
    xor esi, esi
    .srcloc .Lcount
    lea rdx, [rip + .Lcount]
    call assert_eq
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
    .srcloc .La
    lea rcx, [rip + .La]
    call bump_expect
    mov edi, 8
    mov esi, 8
    mov edx, 16
    .srcloc .Lb
    lea rcx, [rip + .Lb]
    call bump_expect
    mov edi, 1
    mov esi, 1
    mov edx, 24
    .srcloc .Lc
    lea rcx, [rip + .Lc]
    call bump_expect
    mov edi, 8
    mov esi, 64
    mov edx, 64                                 ; 25 rounded up to 64
    .srcloc .Ld
    lea rcx, [rip + .Ld]
    call bump_expect
    mov rdi, qword ptr [rip + test_bump + 24]
    mov esi, 4
    .srcloc .Lcount
    lea rdx, [rip + .Lcount]
    call assert_eq
    mov rdi, qword ptr [rip + test_bump + 16]
    lea rsi, [rip + test_region + 72]
    .srcloc .Lnext
    lea rdx, [rip + .Lnext]
    call assert_eq
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
    .srcloc .Ltoo_big
    lea rcx, [rip + .Ltoo_big]
    call bump_expect
    mov edi, REGION_SIZE
    mov esi, 1
    xor edx, edx
    .srcloc .Lexact
    lea rcx, [rip + .Lexact]
    call bump_expect
    mov edi, 1
    mov esi, 1
    mov rdx, -1
    .srcloc .Lfull
    lea rcx, [rip + .Lfull]
    call bump_expect
    call fresh_bump
    mov edi, 8
    mov rsi, 0x4000000000000000                 ; alignment far beyond the heap
    mov rdx, -1
    .srcloc .Lalign
    lea rcx, [rip + .Lalign]
    call bump_expect
    mov rdi, -8                                 ; size that overflows the address space
    mov esi, 8
    mov rdx, -1
    .srcloc .Loverflow
    lea rcx, [rip + .Loverflow]
    call bump_expect
    mov edi, 8
    mov esi, 3                                  ; not a power of two
    mov rdx, -1
    .srcloc .Lbad_align
    lea rcx, [rip + .Lbad_align]
    call bump_expect
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
    mov rdi, qword ptr [rip + test_bump + 16]
    lea rsi, [rip + test_region]
    .srcloc .Lnext
    lea rdx, [rip + .Lnext]
    call assert_eq
    mov rdi, qword ptr [rip + test_bump + 24]
    xor esi, esi
    .srcloc .Lcount
    lea rdx, [rip + .Lcount]
    call assert_eq
    mov edi, 16
    mov esi, 8
    xor edx, edx
    .srcloc .Lagain
    lea rcx, [rip + .Lagain]
    call bump_expect
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
    mov rdi, qword ptr [rip + test_ll + 8]
    lea rsi, [rip + test_region]
    .srcloc .Lhead
    lea rdx, [rip + .Lhead]
    call assert_eq
    mov rdi, qword ptr [rip + test_region]
    mov esi, REGION_SIZE
    .srcloc .Lsize
    lea rdx, [rip + .Lsize]
    call assert_eq
    mov rdi, qword ptr [rip + test_region + 8]
    xor esi, esi
    .srcloc .Lend
    lea rdx, [rip + .Lend]
    call assert_eq
    mov edi, REGION_SIZE
    mov esi, 1
    .srcloc .Lfree
    lea rdx, [rip + .Lfree]
    call ll_expect_free
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
    .srcloc .Lfirst
    lea rdx, [rip + .Lfirst]
    call assert_eq
    mov edi, REGION_SIZE - 64
    mov esi, 1
    .srcloc .Ltaken
    lea rdx, [rip + .Ltaken]
    call ll_expect_free
    lea rdi, [rip + test_ll]
    mov rsi, rbx
    mov edx, 64
    mov ecx, 8
    call ll_dealloc
    mov edi, REGION_SIZE
    mov esi, 2                                  ; no coalescing: two blocks now
    .srcloc .Lback
    lea rdx, [rip + .Lback]
    call ll_expect_free
    lea rdi, [rip + test_ll]
    mov esi, 64
    mov edx, 8
    call ll_alloc
    mov rdi, rax
    mov rsi, rbx
    .srcloc .Lreused
    lea rdx, [rip + .Lreused]
    call assert_eq
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
    .srcloc .Lplace
    lea rdx, [rip + .Lplace]
    call assert_eq
    lea rcx, [rip + test_ptrs]
    mov rdi, qword ptr [rcx + rbx * 8]
    mov eax, ebx
    mov ecx, 100
    rep stosb                                   ; fill block i with byte i
    inc ebx
    cmp ebx, 10
    jne .Lalloc
    xor ebx, ebx
.Lcheck:
    lea rcx, [rip + test_ptrs]
    mov rax, qword ptr [rcx + rbx * 8]
    movzx edi, byte ptr [rax + 99]
    mov esi, ebx
    .srcloc .Lintact
    lea rdx, [rip + .Lintact]
    call assert_eq
    lea rdi, [rip + test_ll]
    lea rcx, [rip + test_ptrs]
    mov rsi, qword ptr [rcx + rbx * 8]
    mov edx, 100
    mov ecx, 8
    call ll_dealloc
    inc ebx
    cmp ebx, 10
    jne .Lcheck
    mov edi, REGION_SIZE
    mov esi, 11
    .srcloc .Lall_back
    lea rdx, [rip + .Lall_back]
    call ll_expect_free
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
    sub rsp, 48
    lea rdi, [rbp - 64]
    call heap_stats
    mov rdi, qword ptr [rbp - 64]
    mov esi, HEAP_SIZE
    .srcloc .Lsize
    lea rdx, [rip + .Lsize]
    call assert_eq
    mov rdi, qword ptr [rbp - 56]
    add rdi, qword ptr [rbp - 48]
    mov esi, HEAP_SIZE
    .srcloc .Lsum
    lea rdx, [rip + .Lsum]
    call assert_eq
    mov rbx, qword ptr [rbp - 56]
    mov edi, 100
    mov esi, 8
    call __rust_alloc
    mov r12, rax
    lea rdi, [rbp - 40]
    call heap_stats
    mov rax, qword ptr [rbp - 32]
    sub rax, rbx
    xor edi, edi
    cmp rax, 100
    jb .Lverdict
    cmp rax, 112
    setb dil
.Lverdict:
    .srcloc .Lgrew
    lea rsi, [rip + .Lgrew]
    call assert_true
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
    mov edi, dword ptr [r12]
    mov esi, 13
    .srcloc .Lb
    lea rdx, [rip + .Lb]
    call assert_eq
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
    sub rsp, 24
    lea rdi, [rbp - 32]
    mov esi, 8
    call vec_new
    xor ebx, ebx
.Lpush:
    lea rdi, [rbp - 32]
    mov rsi, rbx
    call vec_push_u64
    inc ebx
    cmp ebx, 1000
    jne .Lpush
    xor edi, edi
    xor ecx, ecx
    mov rax, qword ptr [rbp - 32]
.Lsum:
    add rdi, qword ptr [rax + rcx * 8]
    inc ecx
    cmp ecx, 1000
    jne .Lsum
    mov esi, 499500                             ; (n - 1) * n / 2
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
    lea rdi, [rbp - 32]
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
    mov edi, 1024
    mov esi, 8
    call box_new_bytes
    mov r12, rax
    mov qword ptr [r12], rbx
    mov qword ptr [r12 + 1016], rbx
    mov rdi, qword ptr [r12 + 1016]
    mov rsi, rbx
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
    mov rdi, r12
    mov esi, 1024
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
    .srcloc .Lhead
    lea rdx, [rip + .Lhead]
    call assert_eq
    mov edi, 512
    mov esi, 8
    call __rust_alloc
    mov rdi, rax
    lea rsi, [rbx + 512]
    .srcloc .Lexcess
    lea rdx, [rip + .Lexcess]
    call assert_eq
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
; align_up cases: {addr, align, expected}, ended by -1
align_cases:
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
test_region: .zero 65536
test_bump: .zero 32
test_ll: .zero 16
test_ptrs: .zero 80

.section testtable
    .quad .Lname0, .Lname0_end - .Lname0, test_align_up, 0
    .quad .Lname1, .Lname1_end - .Lname1, test_bump_allocator, 0
    .quad .Lname2, .Lname2_end - .Lname2, test_allocation, 0
    .quad .Lname3, .Lname3_end - .Lname3, test_out_of_memory, 0
    .quad .Lname4, .Lname4_end - .Lname4, test_reset, 0
    .quad .Lname5, .Lname5_end - .Lname5, test_linked_list_allocator, 0
    .quad .Lname6, .Lname6_end - .Lname6, test_alloc_dealloc, 0
    .quad .Lname7, .Lname7_end - .Lname7, test_multiple_allocs, 0
    .quad .Lname8, .Lname8_end - .Lname8, test_heap_stats, 0
    .quad .Lname9, .Lname9_end - .Lname9, simple_allocation, 0
    .quad .Lname10, .Lname10_end - .Lname10, large_vec, 0
    .quad .Lname11, .Lname11_end - .Lname11, many_boxes, reuse_reason
    .quad .Lname12, .Lname12_end - .Lname12, many_boxes_long_lived, reuse_reason
    .quad .Lname13, .Lname13_end - .Lname13, head_excess_reuse, reuse_reason
.section rodata
.Lname0: .ascii "allocator::bump::test_align_up"
.Lname0_end:
.Lname1: .ascii "allocator::bump::test_bump_allocator"
.Lname1_end:
.Lname2: .ascii "allocator::bump::test_allocation"
.Lname2_end:
.Lname3: .ascii "allocator::bump::test_out_of_memory"
.Lname3_end:
.Lname4: .ascii "allocator::bump::test_reset"
.Lname4_end:
.Lname5: .ascii "allocator::linked_list::test_linked_list_allocator"
.Lname5_end:
.Lname6: .ascii "allocator::linked_list::test_alloc_dealloc"
.Lname6_end:
.Lname7: .ascii "allocator::linked_list::test_multiple_allocs"
.Lname7_end:
.Lname8: .ascii "allocator::test_heap_stats"
.Lname8_end:
.Lname9: .ascii "heap_allocation::simple_allocation"
.Lname9_end:
.Lname10: .ascii "heap_allocation::large_vec"
.Lname10_end:
.Lname11: .ascii "heap_allocation::many_boxes"
.Lname11_end:
.Lname12: .ascii "heap_allocation::many_boxes_long_lived"
.Lname12_end:
.Lname13: .ascii "heap_allocation::head_excess_reuse"
.Lname13_end:
