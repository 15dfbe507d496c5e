; In-kernel tests for phases 1.1 (frames) and 1.2 (paging). Run with cmdline `test`.

.equ TEST_VA, 0x555555550000

.section text
.function test_pool_fully_usable, aetherion::memory::frame::tests::test_pool_fully_usable
test_pool_fully_usable:
    push rbp
    mov rbp, rsp
    call total_frames
    mov rdi, rax
    mov esi, POOL_FRAMES
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
    bt qword ptr [r8 + 1064], rcx
    jnc .Lnext
    bt qword ptr [r8 + 40], rcx
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
    .srcloc .Laligned
    lea rdx, [rip + .Laligned]
    call assert_eq
    lea rcx, [rip + frame_scratch]
    mov rax, qword ptr [rcx + rbx * 8]
    xor edi, edi
    cmp rax, POOL_START
    setae dil
    cmp rax, POOL_END
    setb al
    and dil, al
    .srcloc .Linside
    lea rsi, [rip + .Linside]
    call assert_true
    inc ebx
    cmp ebx, 64
    jne .Lalloc
    ; pairwise distinct
    xor ebx, ebx
.Louter:
    lea r12d, [rbx + 1]
.Linner:
    cmp r12d, 64
    jae .Louter_next
    lea rcx, [rip + frame_scratch]
    mov rax, qword ptr [rcx + rbx * 8]
    xor edi, edi
    cmp rax, qword ptr [rcx + r12 * 8]
    setne dil
    .srcloc .Ldistinct
    lea rsi, [rip + .Ldistinct]
    call assert_true
    inc r12d
    jmp .Linner
.Louter_next:
    inc ebx
    cmp ebx, 64
    jne .Louter
    xor ebx, ebx
.Lfree:
    lea rcx, [rip + frame_scratch]
    mov rdi, qword ptr [rcx + rbx * 8]
    call deallocate_frame
    inc ebx
    cmp ebx, 64
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
    mov rdi, rbx
    call deallocate_frame
    call free_frames
    mov rdi, rax
    mov rsi, r12
    .srcloc .Lb
    lea rdx, [rip + .Lb]
    call assert_eq
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
    .srcloc .Lcount
    lea rdx, [rip + .Lcount]
    call assert_eq
    call allocate_frame
    mov rdi, rax
    xor esi, esi
    .srcloc .Lstill
    lea rdx, [rip + .Lstill]
    call assert_eq
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
    .srcloc .Lrestored
    lea rdx, [rip + .Lrestored]
    call assert_eq
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
    .srcloc .Lok
    lea rdx, [rip + .Lok]
    call assert_eq
    mov rdi, rbx
    call deallocate_frame
    mov rdi, rbx
    call check_deallocate
    mov edi, eax
    mov esi, 4
    .srcloc .Lagain
    lea rdx, [rip + .Lagain]
    call assert_eq
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
    mov edi, 0xFF000
    call check_deallocate
    mov edi, eax
    mov esi, 1
    .srcloc .Lb
    lea rdx, [rip + .Lb]
    call assert_eq
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
    mov rax, cr3
    mov rdi, rax
    mov rsi, qword ptr [rip + PML4]
    .srcloc .Lb
    lea rdx, [rip + .Lb]
    call assert_eq
    pop rbp
    ret
.endfunction

; translate(va) == expected, as a helper: expect_translation(va, expected, location)
.function expect_translation, aetherion::memory::paging::tests::expect_translation
expect_translation:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rsi
    mov r12, rdx
    call translate
    mov rdi, rax
    mov rsi, rbx
    mov rdx, r12
    call assert_eq
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

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

; expect_flags(va, flags, location): effective writable/NX bits
.function expect_flags, aetherion::memory::paging::tests::expect_flags
expect_flags:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rsi
    mov r12, rdx
    call page_flags
    mov rdi, rax
    mov rsi, rbx
    mov rdx, r12
    call assert_eq
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.function test_translate_identity, aetherion::memory::paging::tests::test_translate_identity
test_translate_identity:
    push rbp
    mov rbp, rsp
    mov edi, 0x100000
    mov esi, 0x100000
    .srcloc .La
    lea rdx, [rip + .La]
    call expect_translation
    mov edi, 0x1234567
    mov esi, 0x1234567
    .srcloc .Lb
    lea rdx, [rip + .Lb]
    call expect_translation
    mov edi, 0x1000
    mov esi, 0x1000
    .srcloc .Lc
    lea rdx, [rip + .Lc]
    call expect_translation
    pop rbp
    ret
.endfunction

.function test_translate_kernel_text, aetherion::memory::paging::tests::test_translate_kernel_text
test_translate_kernel_text:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + kmain]
    mov rsi, rdi
    .srcloc .La
    lea rdx, [rip + .La]
    call expect_translation
    pop rbp
    ret
.endfunction

.function test_null_page_unmapped, aetherion::memory::paging::tests::test_null_page_unmapped
test_null_page_unmapped:
    push rbp
    mov rbp, rsp
    xor edi, edi
    .srcloc .La
    lea rsi, [rip + .La]
    call expect_unmapped
    mov edi, 0xFFF
    .srcloc .Lb
    lea rsi, [rip + .Lb]
    call expect_unmapped
    pop rbp
    ret
.endfunction

.function test_heap_guard_pages, aetherion::memory::paging::tests::test_heap_guard_pages
test_heap_guard_pages:
    push rbp
    mov rbp, rsp
    mov rdi, HEAP_START - 1
    .srcloc .La
    lea rsi, [rip + .La]
    call expect_unmapped
    mov rdi, HEAP_START - PAGE_SIZE
    .srcloc .Lb
    lea rsi, [rip + .Lb]
    call expect_unmapped
    mov rdi, HEAP_START + HEAP_SIZE
    .srcloc .Lc
    lea rsi, [rip + .Lc]
    call expect_unmapped
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
    .srcloc .Lallocated
    lea rdx, [rip + .Lallocated]
    call assert_eq
    inc ebx
    cmp ebx, HEAP_PAGES
    jne .Lcollect
    xor ebx, ebx
.Louter:
    lea r12d, [rbx + 1]
.Linner:
    cmp r12d, HEAP_PAGES
    jae .Louter_next
    lea rcx, [rip + frame_scratch]
    mov rax, qword ptr [rcx + rbx * 8]
    xor edi, edi
    cmp rax, qword ptr [rcx + r12 * 8]
    setne dil
    .srcloc .Ldistinct
    lea rsi, [rip + .Ldistinct]
    call assert_true
    inc r12d
    jmp .Linner
.Louter_next:
    inc ebx
    cmp ebx, HEAP_PAGES
    jne .Louter
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
    mov rdi, TEST_VA
    mov rsi, rbx
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
    mov rdi, TEST_VA + 0x123
    lea rsi, [rbx + 0x123]
    .srcloc .Lmapped
    lea rdx, [rip + .Lmapped]
    call expect_translation
    mov rdi, TEST_VA
    call unmap_page
    mov rdi, rax
    mov rsi, rbx
    .srcloc .Lreturned
    lea rdx, [rip + .Lreturned]
    call assert_eq
    mov rdi, TEST_VA
    .srcloc .Lgone
    lea rsi, [rip + .Lgone]
    call expect_unmapped
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
    mov rdi, TEST_VA
    mov rsi, rbx
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
    mov rax, TEST_VA
    mov rcx, 0xDEADBEEFCAFE
    mov qword ptr [rax + 8], rcx
    mov rdi, qword ptr [rbx + 8]
    mov rsi, rcx
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
    mov rdi, TEST_VA
    mov rsi, rbx
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
    mov rax, TEST_VA
    mov rdi, qword ptr [rax]
    mov esi, 1
    .srcloc .Lfirst
    lea rdx, [rip + .Lfirst]
    call assert_eq
    mov rdi, TEST_VA
    call unmap_page
    mov rdi, TEST_VA
    mov rsi, r12
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
    mov rax, TEST_VA
    mov rdi, qword ptr [rax]
    mov esi, 2
    .srcloc .Lsecond
    lea rdx, [rip + .Lsecond]
    call assert_eq
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
    .srcloc .La
    lea rdx, [rip + .La]
    call expect_flags
    pop rbp
    ret
.endfunction

.function test_rodata_read_only, aetherion::memory::paging::tests::test_rodata_read_only
test_rodata_read_only:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + __rodata_start]
    mov rsi, PTE_NX | PTE_PRESENT               ; R--
    .srcloc .La
    lea rdx, [rip + .La]
    call expect_flags
    pop rbp
    ret
.endfunction

.function test_data_not_executable, aetherion::memory::paging::tests::test_data_not_executable
test_data_not_executable:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + CONFIG]
    mov rsi, PTE_NX | PTE_WRITABLE | PTE_PRESENT ; RW-
    .srcloc .La
    lea rdx, [rip + .La]
    call expect_flags
    lea rdi, [rip + FRAME_ALLOCATOR]            ; bss
    mov rsi, PTE_NX | PTE_WRITABLE | PTE_PRESENT
    .srcloc .Lb
    lea rdx, [rip + .Lb]
    call expect_flags
    pop rbp
    ret
.endfunction

.function test_heap_not_executable, aetherion::memory::paging::tests::test_heap_not_executable
test_heap_not_executable:
    push rbp
    mov rbp, rsp
    mov rdi, HEAP_START + HEAP_SIZE - 1
    mov rsi, PTE_NX | PTE_WRITABLE | PTE_PRESENT
    .srcloc .La
    lea rdx, [rip + .La]
    call expect_flags
    pop rbp
    ret
.endfunction

.function test_rom_read_only, aetherion::memory::paging::tests::test_rom_read_only
test_rom_read_only:
    push rbp
    mov rbp, rsp
    mov edi, 0xFFFF0
    mov rsi, PTE_NX | PTE_PRESENT
    .srcloc .La
    lea rdx, [rip + .La]
    call expect_flags
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
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
    mov rdi, TEST_VA
    mov rsi, rbx
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
    mov rdi, TEST_VA + PAGE_SIZE
    mov rsi, rbx
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
    mov rax, TEST_VA
    mov qword ptr [rax + 16], 77
    mov rdi, qword ptr [rax + PAGE_SIZE + 16]
    mov esi, 77
    .srcloc .La
    lea rdx, [rip + .La]
    call assert_eq
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
frame_scratch: .zero 65536

; The test table: {name_ptr, name_len, fn, ignore_reason}
.section testtable
    .quad .Lname0, .Lname0_end - .Lname0, test_pool_fully_usable, 0
    .quad .Lname1, .Lname1_end - .Lname1, test_stats_consistent, 0
    .quad .Lname2, .Lname2_end - .Lname2, test_unique_aligned, 0
    .quad .Lname3, .Lname3_end - .Lname3, test_free_count_tracks, 0
    .quad .Lname4, .Lname4_end - .Lname4, test_free_then_allocate_reuses, 0
    .quad .Lname5, .Lname5_end - .Lname5, test_lowest_address_first, 0
    .quad .Lname6, .Lname6_end - .Lname6, test_exhaustion, 0
    .quad .Lname7, .Lname7_end - .Lname7, test_double_free_detected, 0
    .quad .Lname8, .Lname8_end - .Lname8, test_foreign_free_detected, 0
    .quad .Lname9, .Lname9_end - .Lname9, test_unaligned_free_detected, 0
    .quad .Lname10, .Lname10_end - .Lname10, test_page_tables_from_pool, 0
    .quad .Lname11, .Lname11_end - .Lname11, test_translate_identity, 0
    .quad .Lname12, .Lname12_end - .Lname12, test_translate_kernel_text, 0
    .quad .Lname13, .Lname13_end - .Lname13, test_null_page_unmapped, 0
    .quad .Lname14, .Lname14_end - .Lname14, test_heap_guard_pages, 0
    .quad .Lname15, .Lname15_end - .Lname15, test_heap_frames_distinct, 0
    .quad .Lname16, .Lname16_end - .Lname16, test_map_unmap_round_trip, 0
    .quad .Lname17, .Lname17_end - .Lname17, test_write_through_mapping, 0
    .quad .Lname18, .Lname18_end - .Lname18, test_unmap_flushes_tlb, 0
    .quad .Lname19, .Lname19_end - .Lname19, test_text_not_writable, 0
    .quad .Lname20, .Lname20_end - .Lname20, test_rodata_read_only, 0
    .quad .Lname21, .Lname21_end - .Lname21, test_data_not_executable, 0
    .quad .Lname22, .Lname22_end - .Lname22, test_heap_not_executable, 0
    .quad .Lname23, .Lname23_end - .Lname23, test_rom_read_only, 0
    .quad .Lname24, .Lname24_end - .Lname24, test_heap_pages_zeroed, 0
    .quad .Lname25, .Lname25_end - .Lname25, test_alias_mapping, 0
.section rodata
.Lname0: .ascii "memory::frame::test_pool_fully_usable"
.Lname0_end:
.Lname1: .ascii "memory::frame::test_stats_consistent"
.Lname1_end:
.Lname2: .ascii "memory::frame::test_unique_aligned"
.Lname2_end:
.Lname3: .ascii "memory::frame::test_free_count_tracks"
.Lname3_end:
.Lname4: .ascii "memory::frame::test_free_then_allocate_reuses"
.Lname4_end:
.Lname5: .ascii "memory::frame::test_lowest_address_first"
.Lname5_end:
.Lname6: .ascii "memory::frame::test_exhaustion"
.Lname6_end:
.Lname7: .ascii "memory::frame::test_double_free_detected"
.Lname7_end:
.Lname8: .ascii "memory::frame::test_foreign_free_detected"
.Lname8_end:
.Lname9: .ascii "memory::frame::test_unaligned_free_detected"
.Lname9_end:
.Lname10: .ascii "memory::frame::test_page_tables_from_pool"
.Lname10_end:
.Lname11: .ascii "memory::paging::test_translate_identity"
.Lname11_end:
.Lname12: .ascii "memory::paging::test_translate_kernel_text"
.Lname12_end:
.Lname13: .ascii "memory::paging::test_null_page_unmapped"
.Lname13_end:
.Lname14: .ascii "memory::paging::test_heap_guard_pages"
.Lname14_end:
.Lname15: .ascii "memory::paging::test_heap_frames_distinct"
.Lname15_end:
.Lname16: .ascii "memory::paging::test_map_unmap_round_trip"
.Lname16_end:
.Lname17: .ascii "memory::paging::test_write_through_mapping"
.Lname17_end:
.Lname18: .ascii "memory::paging::test_unmap_flushes_tlb"
.Lname18_end:
.Lname19: .ascii "memory::paging::test_text_not_writable"
.Lname19_end:
.Lname20: .ascii "memory::paging::test_rodata_read_only"
.Lname20_end:
.Lname21: .ascii "memory::paging::test_data_not_executable"
.Lname21_end:
.Lname22: .ascii "memory::paging::test_heap_not_executable"
.Lname22_end:
.Lname23: .ascii "memory::paging::test_rom_read_only"
.Lname23_end:
.Lname24: .ascii "memory::paging::test_heap_pages_zeroed"
.Lname24_end:
.Lname25: .ascii "memory::paging::test_alias_mapping"
.Lname25_end:
