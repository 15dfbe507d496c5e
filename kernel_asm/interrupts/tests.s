; In-kernel tests for phase 2: each handler, what the CPU delivers to it, and the timer.

.equ UNMAPPED_VA, 0x777777770000                ; mapped by nothing
.equ NON_CANONICAL, 0x8000000000000000
.equ BAD_SELECTOR, 0x40                         ; past gdt64's limit
.equ TEST_DEMAND_PAGE, DEMAND_START + 3 * PAGE_SIZE
.equ TEST_TICKS, 3

; expect_caught VECTOR_IGNORED, FAULT_LABEL, ERROR: the armed catch fired once, at FAULT_LABEL,
; with error code ERROR (clobbers rax, rdi, rsi, rdx)
.macro expect_caught fault, error
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.caught]
    mov esi, 1
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.fault_rip]
    lea rsi, [rip + \fault]
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.error_code]
    mov rsi, \error
    call_here assert_eq, rdx
.endm

; expect_page_fault ADDRESS, ERROR: the caught #PF had CR2 = ADDRESS and error code ERROR
.macro expect_page_fault address, error
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.caught]
    mov esi, 1
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.cr2]
    mov rsi, \address
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.error_code]
    mov rsi, \error
    call_here assert_eq, rdx
.endm

.section text
; #BP through its handler: counted, and `int3` (a trap) resumes after itself
.function test_breakpoint_resumes, aetherion::interrupts::tests::test_breakpoint_resumes
test_breakpoint_resumes:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, qword ptr [rip + BREAKPOINTS]
    int3
    int3
    mov rdi, qword ptr [rip + BREAKPOINTS]
    lea rsi, [rbx + 2]
    call_here assert_eq, rdx
    ; the pushed RIP is the next instruction's
    catch_exception VECTOR_BREAKPOINT, .Lafter
    int3
.Lafter:
    expect_caught .Lafter, 0
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; #DE is a fault: the pushed RIP is the div's own, with no error code
.function test_divide_error, aetherion::interrupts::tests::test_divide_error
test_divide_error:
    push rbp
    mov rbp, rsp
    catch_exception VECTOR_DIVIDE_ERROR, .Lresume
    xor ecx, ecx
    mov eax, 1
    xor edx, edx
.Ldiv:
    div rcx
.Lresume:
    expect_caught .Ldiv, 0
    pop rbp
    ret
.endfunction

.function test_invalid_opcode, aetherion::interrupts::tests::test_invalid_opcode
test_invalid_opcode:
    push rbp
    mov rbp, rsp
    catch_exception VECTOR_INVALID_OPCODE, .Lresume
.Lud:
    ud2
.Lresume:
    expect_caught .Lud, 0
    pop rbp
    ret
.endfunction

; #GP: a selector past the GDT's limit is its error code; a non-canonical address gives 0
.function test_general_protection, aetherion::interrupts::tests::test_general_protection
test_general_protection:
    push rbp
    mov rbp, rsp
    catch_exception VECTOR_GENERAL_PROTECTION, .Lresume_selector
    mov ax, BAD_SELECTOR
.Lload:
    mov es, ax
.Lresume_selector:
    expect_caught .Lload, BAD_SELECTOR
    catch_exception VECTOR_GENERAL_PROTECTION, .Lresume_address
    mov rax, NON_CANONICAL
.Lread:
    mov rax, qword ptr [rax]
.Lresume_address:
    expect_caught .Lread, 0
    pop rbp
    ret
.endfunction

; #PF: CR2 and the error code for a write and a read of an unmapped page, a write to
; read-only data and an instruction fetch from the NX heap
.function test_page_fault_error_codes, aetherion::interrupts::tests::test_page_fault_error_codes
test_page_fault_error_codes:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, UNMAPPED_VA
    catch_exception VECTOR_PAGE_FAULT, .Lwritten
    mov qword ptr [rbx + 8], 1
.Lwritten:
    expect_page_fault UNMAPPED_VA + 8, PF_WRITE
    catch_exception VECTOR_PAGE_FAULT, .Lread
    mov rax, qword ptr [rbx + 16]
.Lread:
    expect_page_fault UNMAPPED_VA + 16, 0
    lea rbx, [rip + read_only_word]
    catch_exception VECTOR_PAGE_FAULT, .Lread_only
    mov qword ptr [rbx], 1
.Lread_only:
    expect_page_fault rbx, PF_PRESENT | PF_WRITE
    mov edi, 16
    mov esi, 16
    call box_new_bytes
    mov rbx, rax
    catch_exception VECTOR_PAGE_FAULT, .Lfetched
    call rbx
.Lfetched:
    expect_page_fault rbx, PF_PRESENT | PF_INSTRUCTION
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.fault_rip]
    mov rsi, rbx
    call_here assert_eq, rdx
    mov rdi, rbx
    mov esi, 16
    mov edx, 16
    call box_drop
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; touch_demand(va): writes va's address to it, faulting there the first time (the backtrace test's
; faulting frame)
.function touch_demand, aetherion::interrupts::tests::touch_demand
touch_demand:
    push rbp
    mov rbp, rsp
touch_demand_store:
    mov qword ptr [rdi], rdi
    pop rbp
    ret
.endfunction

; #PF through its handler: a demand page is mapped once, zeroed, on a pool frame; the backtrace
; it collected on the heap names the faulting store and this test, and is freed again
.function test_page_fault_maps_a_demand_page, aetherion::interrupts::tests::test_page_fault_maps_a_demand_page
test_page_fault_maps_a_demand_page:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    sub rsp, 32
.equ .Lstats, -64                               ; HeapStats
    lea rdi, [rbp + .Lstats]
    call heap_stats
    mov r14, qword ptr [rbp + .Lstats + HeapStats.used]
    call free_frames
    mov rbx, rax
    mov r12, qword ptr [rip + DEMAND_FAULTS]
    mov r13, TEST_DEMAND_PAGE
    lea rdi, [r13 + 0x10]
    call touch_demand
.Lreturned:
    mov rdi, qword ptr [r13 + 0x10]
    lea rsi, [r13 + 0x10]
    call_here assert_eq, rdx
    mov rdi, qword ptr [r13 + 0x18]             ; the rest of the page is zeroed
    xor esi, esi
    call_here assert_eq, rdx
    lea rdi, [r13 + 0x20]
    call touch_demand                           ; mapped now: no second fault
    mov rdi, qword ptr [rip + DEMAND_FAULTS]
    lea rsi, [r12 + 1]
    call_here assert_eq, rdx
    call free_frames                            ; the page's frame, and any table frames
    mov rdi, rbx
    sub rdi, rax
    xor esi, esi
    cmp rdi, 1
    setae sil
    mov rdi, rsi
    call_here assert_true, rsi
    lea rcx, [rip + LAST_PAGE_FAULT]
    mov rdi, qword ptr [rcx + PageFaultRecord.address]
    lea rsi, [r13 + 0x10]
    call_here assert_eq, rdx
    lea rcx, [rip + LAST_PAGE_FAULT]
    mov rdi, qword ptr [rcx + PageFaultRecord.error_code]
    mov esi, PF_WRITE
    call_here assert_eq, rdx
    lea rcx, [rip + LAST_PAGE_FAULT]
    mov rdi, qword ptr [rcx + PageFaultRecord.frame0]
    lea rsi, [rip + touch_demand_store]
    call_here assert_eq, rdx
    lea rcx, [rip + LAST_PAGE_FAULT]
    mov rdi, qword ptr [rcx + PageFaultRecord.frame1]
    lea rsi, [rip + .Lreturned]
    call_here assert_eq, rdx
    lea rcx, [rip + LAST_PAGE_FAULT]            ; the store, this test, the runner, kmain, long_mode
    mov rdi, qword ptr [rcx + PageFaultRecord.frames]
    mov esi, 5
    call_here assert_eq, rdx
    cmp qword ptr [rip + CONFIG + Config.allocator], KIND_BUMP   ; it never gives memory back
    je .Lfreed
    lea rdi, [rbp + .Lstats]
    call heap_stats
    mov rdi, qword ptr [rbp + .Lstats + HeapStats.used]
    mov rsi, r14                                ; the Vec was freed
    call_here assert_eq, rdx
.Lfreed:
    mov rdi, r13                                ; the frame goes back
    call unmap_page
    mov rdi, rax
    call deallocate_frame
    add rsp, 32
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; #DF: a #PF whose gate is not present raises #NP, a contributory fault, hence #DF (SDM vol. 3,
; table 6-5), delivered on IST1 with error code 0
.function test_double_fault_on_its_ist_stack, aetherion::interrupts::tests::test_double_fault_on_its_ist_stack
test_double_fault_on_its_ist_stack:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    lea rbx, [rip + IDT + VECTOR_PAGE_FAULT * IdtGate.SIZE + IdtGate.type_attr]
    and byte ptr [rbx], ~GATE_PRESENT & 0xFF
    catch_exception VECTOR_DOUBLE_FAULT, .Lresume
    mov rax, UNMAPPED_VA
    mov qword ptr [rax], 1
.Lresume:
    or byte ptr [rbx], GATE_PRESENT
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.caught]
    mov esi, 1
    call_here assert_eq, rdx
    mov rdi, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.error_code]
    xor esi, esi
    call_here assert_eq, rdx
    mov rax, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.frame]
    lea rcx, [rip + double_fault_stack]
    lea rdx, [rip + double_fault_stack_top]
    xor edi, edi
    cmp rax, rcx
    jb .Lcheck
    cmp rax, rdx
    jae .Lcheck
    mov edi, 1
.Lcheck:
    call_here assert_true, rsi
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; The timer through the PIC: the handler records TEST_TICKS ticks, a heap TickRecord each
.function test_timer_ticks_into_the_heap, aetherion::interrupts::tests::test_timer_ticks_into_the_heap
test_timer_ticks_into_the_heap:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov r12, qword ptr [rip + TICKS]
    mov edi, TEST_TICKS
    call record_ticks
    mov rbx, rax
    mov rdi, qword ptr [rip + TICK_LOG]         ; disarmed
    xor esi, esi
    call_here assert_eq, rdx
    mov rdi, qword ptr [rbx + TickLog.ticks]
    mov esi, TEST_TICKS
    call_here assert_eq, rdx
    mov rdi, rbx
    call tick_log_check
    mov rdi, rax
    call_here assert_true, rsi
    mov rdi, qword ptr [rip + TICKS]
    sub rdi, r12
    xor esi, esi
    cmp rdi, TEST_TICKS
    setae sil
    mov rdi, rsi
    call_here assert_true, rsi
    mov rdi, rbx
    call tick_log_drop
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; The allocator's lock is taken with interrupts off and gives back the IF it found
.function test_lock_disables_interrupts, aetherion::interrupts::tests::test_lock_disables_interrupts
test_lock_disables_interrupts:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov r12d, 1                                 ; first with IF set, then with it clear
.Lround:
    test r12d, r12d
    jz .Lcleared
    sti
    jmp .Llock
.Lcleared:
    cli
.Llock:
    call lock_acquire
    mov rbx, rax
    pushfq
    pop rdi
    and edi, RFLAGS_IF                          ; off while held
    xor esi, esi
    call_here assert_eq, rdx
    mov rdi, rbx
    call lock_release
    pushfq
    pop rdi
    and edi, RFLAGS_IF
    mov esi, r12d
    shl esi, 9                                  ; RFLAGS_IF as it was
    call_here assert_eq, rdx
    dec r12d
    jns .Lround
    cli
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
.align 8
read_only_word: .quad 0

; The test table (the test_case macro is in test_runner.s)
test_case test_breakpoint_resumes, "interrupts::test_breakpoint_resumes"
test_case test_divide_error, "interrupts::test_divide_error"
test_case test_invalid_opcode, "interrupts::test_invalid_opcode"
test_case test_general_protection, "interrupts::test_general_protection"
test_case test_page_fault_error_codes, "interrupts::test_page_fault_error_codes"
test_case test_page_fault_maps_a_demand_page, "interrupts::test_page_fault_maps_a_demand_page"
test_case test_double_fault_on_its_ist_stack, "interrupts::test_double_fault_on_its_ist_stack"
test_case test_timer_ticks_into_the_heap, "interrupts::test_timer_ticks_into_the_heap"
test_case test_lock_disables_interrupts, "interrupts::test_lock_disables_interrupts"
