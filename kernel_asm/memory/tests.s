; In-kernel tests for phases 1.1 (frames) and 1.2 (paging). Run with cmdline `test`.

.equ TEST_VA, 0x555555550000
.equ FRAMES, 64                                 ; test_unique_aligned's frames

; expect_distinct COUNT: the first COUNT addresses in frame_scratch are pairwise distinct
; (it uses rbx and r12, which the test saves)
.macro expect_distinct count
    xor ebx, ebx
.Louter\@:
    lea r12d, [rbx + 1]
.Linner\@:
    cmp r12d, \count
    jae .Louter_next\@
    lea rcx, [rip + frame_scratch]
    mov rax, qword ptr [rcx + rbx * 8]
    xor edi, edi
    cmp rax, qword ptr [rcx + r12 * 8]
    setne dil
    call_here assert_true, rsi
    inc r12d
    jmp .Linner\@
.Louter_next\@:
    inc ebx
    cmp ebx, \count
    jne .Louter\@
.endm

; map_test_page VA, FRAME: map_page(VA, FRAME, RW- NX)
.macro map_test_page va, frame
    mov rdi, \va
    mov rsi, \frame
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
.endm

; define_expect NAME, RUST_PATH, FUNCTION: NAME(va, expected, location) asserts FUNCTION(va) == expected
.macro define_expect name, path, function
.function \name, \path
\name:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rsi
    mov r12, rdx
    call \function
    mov rdi, rax
    mov rsi, rbx
    mov rdx, r12
    call assert_eq
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction
.endm

.section text
.function test_pool_fully_usable, aetherion::memory::frame::tests::test_pool_fully_usable
test_pool_fully_usable:
    push rbp
    mov rbp, rsp
    call total_frames
    mov rdi, rax
    mov esi, POOL_FRAMES
    call_here assert_eq, rdx
    pop rbp
    ret
.endfunction

; free + (allocated usable frames, counted from the bitmap) == total
.function test_stats_consistent, aetherion::memory::frame::tests::test_stats_consistent
test_stats_consistent:
    push rbp
    mov rbp, rsp
    lea r8, [rip + FRAME_ALLOCATOR]
    xor ecx, ecx
    xor edx, edx
.Lbit:
    bt qword ptr [r8 + FrameAllocator.usable], rcx
    jnc .Lnext
    bt qword ptr [r8 + FrameAllocator.used], rcx
    adc rdx, 0
.Lnext:
    inc ecx
    cmp ecx, POOL_FRAMES
    jne .Lbit
    call free_frames
    lea rdi, [rax + rdx]
    push rdi
    sub rsp, 8
    call total_frames
    add rsp, 8
    pop rdi
    mov rsi, rax
    call_here assert_eq, rdx
    pop rbp
    ret
.endfunction

.function test_unique_aligned, aetherion::memory::frame::tests::test_unique_aligned
test_unique_aligned:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    xor ebx, ebx
.Lalloc:
    call allocate_frame
    lea rcx, [rip + frame_scratch]
    mov qword ptr [rcx + rbx * 8], rax
    mov rdi, rax
    and edi, PAGE_SIZE - 1
    xor esi, esi
    call_here assert_eq, rdx
    lea rcx, [rip + frame_scratch]
    mov rax, qword ptr [rcx + rbx * 8]
    xor edi, edi
    cmp rax, POOL_START
    setae dil
    cmp rax, POOL_END
    setb al
    and dil, al
    call_here assert_true, rsi
    inc ebx
    cmp ebx, FRAMES
    jne .Lalloc
    expect_distinct FRAMES
    xor ebx, ebx
.Lfree:
    lea rcx, [rip + frame_scratch]
    mov rdi, qword ptr [rcx + rbx * 8]
    call deallocate_frame
    inc ebx
    cmp ebx, FRAMES
    jne .Lfree
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function test_free_count_tracks, aetherion::memory::frame::tests::test_free_count_tracks
test_free_count_tracks:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    call free_frames
    mov r12, rax
    call allocate_frame
    mov rbx, rax
    call free_frames
    mov rdi, rax
    lea rsi, [r12 - 1]
    call_here assert_eq, rdx
    mov rdi, rbx
    call deallocate_frame
    call free_frames
    mov rdi, rax
    mov rsi, r12
    call_here assert_eq, rdx
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function test_free_then_allocate_reuses, aetherion::memory::frame::tests::test_free_then_allocate_reuses
test_free_then_allocate_reuses:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call allocate_frame
    mov rbx, rax
    mov rdi, rax
    call deallocate_frame
    call allocate_frame
    mov rdi, rax
    mov rsi, rbx
    call_here assert_eq, rdx
    mov rdi, rbx
    call deallocate_frame
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

.function test_lowest_address_first, aetherion::memory::frame::tests::test_lowest_address_first
test_lowest_address_first:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    call allocate_frame
    mov rbx, rax
    call allocate_frame
    mov r12, rax
    mov rdi, r12
    lea rsi, [rbx + PAGE_SIZE]
    call_here assert_eq, rdx
    mov rdi, r12
    call deallocate_frame
    mov rdi, rbx
    call deallocate_frame
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; Allocation fails after exactly the free count, then everything goes back.
.function test_exhaustion, aetherion::memory::frame::tests::test_exhaustion
test_exhaustion:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    call free_frames
    mov r12, rax
    xor ebx, ebx
.Ltake:
    call allocate_frame
    test rax, rax
    jz .Lempty
    lea rcx, [rip + frame_scratch]
    mov qword ptr [rcx + rbx * 8], rax
    inc rbx
    jmp .Ltake
.Lempty:
    mov rdi, rbx
    mov rsi, r12
    call_here assert_eq, rdx
    call allocate_frame
    mov rdi, rax
    xor esi, esi
    call_here assert_eq, rdx
.Lgive:
    test rbx, rbx
    jz .Lback
    dec rbx
    lea rcx, [rip + frame_scratch]
    mov rdi, qword ptr [rcx + rbx * 8]
    call deallocate_frame
    jmp .Lgive
.Lback:
    call free_frames
    mov rdi, rax
    mov rsi, r12
    call_here assert_eq, rdx
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function test_double_free_detected, aetherion::memory::frame::tests::test_double_free_detected
test_double_free_detected:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call allocate_frame
    mov rbx, rax
    mov rdi, rax
    call check_deallocate
    mov edi, eax
    xor esi, esi
    call_here assert_eq, rdx
    mov rdi, rbx
    call deallocate_frame
    mov rdi, rbx
    call check_deallocate
    mov edi, eax
    mov esi, 4
    call_here assert_eq, rdx
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

.function test_foreign_free_detected, aetherion::memory::frame::tests::test_foreign_free_detected
test_foreign_free_detected:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + __text_start]
    call check_deallocate
    mov edi, eax
    mov esi, 1
    call_here assert_eq, rdx
    mov edi, 0xFF000
    call check_deallocate
    mov edi, eax
    mov esi, 1
    call_here assert_eq, rdx
    pop rbp
    ret
.endfunction

.function test_unaligned_free_detected, aetherion::memory::frame::tests::test_unaligned_free_detected
test_unaligned_free_detected:
    push rbp
    mov rbp, rsp
    mov edi, POOL_START + 8
    call check_deallocate
    mov edi, eax
    mov esi, 2
    call_here assert_eq, rdx
    pop rbp
    ret
.endfunction

.function test_page_tables_from_pool, aetherion::memory::frame::tests::test_page_tables_from_pool
test_page_tables_from_pool:
    push rbp
    mov rbp, rsp
    mov rdi, qword ptr [rip + PML4]
    call check_deallocate                       ; 0: an allocated pool frame
    mov edi, eax
    xor esi, esi
    call_here assert_eq, rdx
    mov rax, cr3
    mov rdi, rax
    mov rsi, qword ptr [rip + PML4]
    call_here assert_eq, rdx
    pop rbp
    ret
.endfunction

; expect_translation(va, expected, location): translate(va) == expected
define_expect expect_translation, aetherion::memory::paging::tests::expect_translation, translate

; expect_unmapped(va, location)
.function expect_unmapped, aetherion::memory::paging::tests::expect_unmapped
expect_unmapped:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rsi
    call translate
    mov rdi, rdx
    xor esi, esi
    mov rdx, rbx
    call assert_eq
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; expect_flags(va, flags, location): the effective writable/NX bits of va's mapping
define_expect expect_flags, aetherion::memory::paging::tests::expect_flags, page_flags

.function test_translate_identity, aetherion::memory::paging::tests::test_translate_identity
test_translate_identity:
    push rbp
    mov rbp, rsp
    mov edi, 0x100000
    mov esi, 0x100000
    call_here expect_translation, rdx
    mov edi, 0x1234567
    mov esi, 0x1234567
    call_here expect_translation, rdx
    mov edi, 0x1000
    mov esi, 0x1000
    call_here expect_translation, rdx
    pop rbp
    ret
.endfunction

.function test_translate_kernel_text, aetherion::memory::paging::tests::test_translate_kernel_text
test_translate_kernel_text:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + kmain]
    mov rsi, rdi
    call_here expect_translation, rdx
    pop rbp
    ret
.endfunction

.function test_null_page_unmapped, aetherion::memory::paging::tests::test_null_page_unmapped
test_null_page_unmapped:
    push rbp
    mov rbp, rsp
    xor edi, edi
    call_here expect_unmapped, rsi
    mov edi, 0xFFF
    call_here expect_unmapped, rsi
    pop rbp
    ret
.endfunction

.function test_heap_guard_pages, aetherion::memory::paging::tests::test_heap_guard_pages
test_heap_guard_pages:
    push rbp
    mov rbp, rsp
    mov rdi, HEAP_START - 1
    call_here expect_unmapped, rsi
    mov rdi, HEAP_START - PAGE_SIZE
    call_here expect_unmapped, rsi
    mov rdi, HEAP_START + HEAP_SIZE
    call_here expect_unmapped, rsi
    pop rbp
    ret
.endfunction

; The heap's 256 pages map to 256 distinct, allocated pool frames.
.function test_heap_frames_distinct, aetherion::memory::paging::tests::test_heap_frames_distinct
test_heap_frames_distinct:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    xor ebx, ebx
.Lcollect:
    mov rdi, rbx
    shl rdi, 12
    mov rax, HEAP_START
    add rdi, rax
    call translate
    lea rcx, [rip + frame_scratch]
    mov qword ptr [rcx + rbx * 8], rax
    mov rdi, rax
    call check_deallocate
    mov edi, eax
    xor esi, esi
    call_here assert_eq, rdx
    inc ebx
    cmp ebx, HEAP_PAGES
    jne .Lcollect
    expect_distinct HEAP_PAGES
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function test_map_unmap_round_trip, aetherion::memory::paging::tests::test_map_unmap_round_trip
test_map_unmap_round_trip:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call allocate_frame
    mov rbx, rax
    map_test_page TEST_VA, rbx
    mov rdi, TEST_VA + 0x123
    lea rsi, [rbx + 0x123]
    call_here expect_translation, rdx
    mov rdi, TEST_VA
    call unmap_page
    mov rdi, rax
    mov rsi, rbx
    call_here assert_eq, rdx
    mov rdi, TEST_VA
    call_here expect_unmapped, rsi
    mov rdi, rbx
    call deallocate_frame
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; A write through a fresh mapping lands in the frame (read back at its identity address).
.function test_write_through_mapping, aetherion::memory::paging::tests::test_write_through_mapping
test_write_through_mapping:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call allocate_frame
    mov rbx, rax
    map_test_page TEST_VA, rbx
    mov rax, TEST_VA
    mov rcx, 0xDEADBEEFCAFE
    mov qword ptr [rax + 8], rcx
    mov rdi, qword ptr [rbx + 8]
    mov rsi, rcx
    call_here assert_eq, rdx
    mov rdi, TEST_VA
    call unmap_page
    mov rdi, rbx
    call deallocate_frame
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; After unmap (invlpg), a remap of the same page to another frame is seen at once.
.function test_unmap_flushes_tlb, aetherion::memory::paging::tests::test_unmap_flushes_tlb
test_unmap_flushes_tlb:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    call allocate_frame
    mov rbx, rax
    call allocate_frame
    mov r12, rax
    mov qword ptr [rbx], 1
    mov qword ptr [r12], 2
    map_test_page TEST_VA, rbx
    mov rax, TEST_VA
    mov rdi, qword ptr [rax]
    mov esi, 1
    call_here assert_eq, rdx
    mov rdi, TEST_VA
    call unmap_page
    map_test_page TEST_VA, r12
    mov rax, TEST_VA
    mov rdi, qword ptr [rax]
    mov esi, 2
    call_here assert_eq, rdx
    mov rdi, TEST_VA
    call unmap_page
    mov rdi, rbx
    call deallocate_frame
    mov rdi, r12
    call deallocate_frame
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function test_text_not_writable, aetherion::memory::paging::tests::test_text_not_writable
test_text_not_writable:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + kmain]
    mov esi, PTE_PRESENT                        ; R-X
    call_here expect_flags, rdx
    pop rbp
    ret
.endfunction

.function test_rodata_read_only, aetherion::memory::paging::tests::test_rodata_read_only
test_rodata_read_only:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + __rodata_start]
    mov rsi, PTE_NX | PTE_PRESENT               ; R--
    call_here expect_flags, rdx
    pop rbp
    ret
.endfunction

.function test_data_not_executable, aetherion::memory::paging::tests::test_data_not_executable
test_data_not_executable:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + CONFIG]
    mov rsi, PTE_NX | PTE_WRITABLE | PTE_PRESENT ; RW-
    call_here expect_flags, rdx
    lea rdi, [rip + FRAME_ALLOCATOR]            ; bss
    mov rsi, PTE_NX | PTE_WRITABLE | PTE_PRESENT
    call_here expect_flags, rdx
    pop rbp
    ret
.endfunction

.function test_heap_not_executable, aetherion::memory::paging::tests::test_heap_not_executable
test_heap_not_executable:
    push rbp
    mov rbp, rsp
    mov rdi, HEAP_START + HEAP_SIZE - 1
    mov rsi, PTE_NX | PTE_WRITABLE | PTE_PRESENT
    call_here expect_flags, rdx
    pop rbp
    ret
.endfunction

.function test_rom_read_only, aetherion::memory::paging::tests::test_rom_read_only
test_rom_read_only:
    push rbp
    mov rbp, rsp
    mov edi, 0xFFFF0
    mov rsi, PTE_NX | PTE_PRESENT
    call_here expect_flags, rdx
    pop rbp
    ret
.endfunction

; The heap's last page is zeroed: nothing but the allocator has written there yet.
.function test_heap_pages_zeroed, aetherion::memory::paging::tests::test_heap_pages_zeroed
test_heap_pages_zeroed:
    push rbp
    mov rbp, rsp
    mov rax, HEAP_START + HEAP_SIZE - PAGE_SIZE
    xor edi, edi
    xor ecx, ecx
.Lscan:
    or rdi, qword ptr [rax + rcx * 8]
    inc ecx
    cmp ecx, PAGE_SIZE / 8
    jne .Lscan
    xor esi, esi
    call_here assert_eq, rdx
    pop rbp
    ret
.endfunction

; Two mappings of one frame see each other's writes (aliasing through the page tables).
.function test_alias_mapping, aetherion::memory::paging::tests::test_alias_mapping
test_alias_mapping:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call allocate_frame
    mov rbx, rax
    map_test_page TEST_VA, rbx
    map_test_page TEST_VA + PAGE_SIZE, rbx
    mov rax, TEST_VA
    mov qword ptr [rax + 16], 77
    mov rdi, qword ptr [rax + PAGE_SIZE + 16]
    mov esi, 77
    call_here assert_eq, rdx
    mov rdi, TEST_VA
    call unmap_page
    mov rdi, TEST_VA + PAGE_SIZE
    call unmap_page
    mov rdi, rbx
    call deallocate_frame
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

.section bss
frame_scratch: .zero POOL_FRAMES * 8                 ; room for an address per pool frame

; The test table (the test_case macro is in test_runner.s)
test_case test_pool_fully_usable, "memory::frame::test_pool_fully_usable"
test_case test_stats_consistent, "memory::frame::test_stats_consistent"
test_case test_unique_aligned, "memory::frame::test_unique_aligned"
test_case test_free_count_tracks, "memory::frame::test_free_count_tracks"
test_case test_free_then_allocate_reuses, "memory::frame::test_free_then_allocate_reuses"
test_case test_lowest_address_first, "memory::frame::test_lowest_address_first"
test_case test_exhaustion, "memory::frame::test_exhaustion"
test_case test_double_free_detected, "memory::frame::test_double_free_detected"
test_case test_foreign_free_detected, "memory::frame::test_foreign_free_detected"
test_case test_unaligned_free_detected, "memory::frame::test_unaligned_free_detected"
test_case test_page_tables_from_pool, "memory::frame::test_page_tables_from_pool"
test_case test_translate_identity, "memory::paging::test_translate_identity"
test_case test_translate_kernel_text, "memory::paging::test_translate_kernel_text"
test_case test_null_page_unmapped, "memory::paging::test_null_page_unmapped"
test_case test_heap_guard_pages, "memory::paging::test_heap_guard_pages"
test_case test_heap_frames_distinct, "memory::paging::test_heap_frames_distinct"
test_case test_map_unmap_round_trip, "memory::paging::test_map_unmap_round_trip"
test_case test_write_through_mapping, "memory::paging::test_write_through_mapping"
test_case test_unmap_flushes_tlb, "memory::paging::test_unmap_flushes_tlb"
test_case test_text_not_writable, "memory::paging::test_text_not_writable"
test_case test_rodata_read_only, "memory::paging::test_rodata_read_only"
test_case test_data_not_executable, "memory::paging::test_data_not_executable"
test_case test_heap_not_executable, "memory::paging::test_heap_not_executable"
test_case test_rom_read_only, "memory::paging::test_rom_read_only"
test_case test_heap_pages_zeroed, "memory::paging::test_heap_pages_zeroed"
test_case test_alias_mapping, "memory::paging::test_alias_mapping"
