; The exception handlers: #BP reports and returns; #PF maps a zeroed frame under a fault in the
; demand-paged window and reports every fault with a backtrace collected into a heap Vec (the
; specification's phase 2: exception handling that allocates its error context on the heap);
; any other exception is fatal, a panic naming it. A test may catch one exception instead
; (catch_exception), to check what the CPU delivered.

.equ PF_PRESENT, 1                              ; the page-fault error code's bits (SDM vol. 3, 4.7)
.equ PF_WRITE, 2
.equ PF_USER, 4
.equ PF_RESERVED, 8
.equ PF_INSTRUCTION, 0x10
.equ MAX_BACKTRACE, 32
.equ NO_CATCH, -1

; EXCEPTION_CATCH: armed by catch_exception, filled in when the exception arrives
.struct ExceptionCatch
    vector: .quad                               ; the vector to catch, NO_CATCH when none is armed
    resume_rip: .quad                           ; where the caught exception resumes...
    resume_rsp: .quad                           ; ...with this stack
    caught: .quad                               ; times caught since armed (catching disarms)
    error_code: .quad
    fault_rip: .quad                            ; the RIP the CPU pushed
    cr2: .quad
    frame: .quad                                ; the handler's InterruptFrame: on the IST stack for #DF
.endstruct

; The last page fault, for the tests: what the handler saw and the backtrace it collected
.struct PageFaultRecord
    address: .quad                              ; CR2
    error_code: .quad
    frames: .quad                               ; the backtrace Vec's length
    frame0: .quad
    frame1: .quad
.endstruct

; A record of frame_fields: print `text` then the frame's quad at `offset`
.struct FrameField
    text: .quad
    offset: .quad
.endstruct

; A record of pf_bits: `set` (or `clear`, when not 0 and no bit of `clear_unless` is set) names
; the error code's `bit`
.struct ErrorBit
    bit: .quad
    set: .quad
    clear: .quad
    clear_unless: .quad
.endstruct

; catch_exception VECTOR, RESUME: the next exception VECTOR resumes at label RESUME with this
; RSP, recording what the CPU delivered in EXCEPTION_CATCH (clobbers rax)
.macro catch_exception vector, resume
    mov qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.vector], \vector
    lea rax, [rip + \resume]
    mov qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.resume_rip], rax
    mov qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.resume_rsp], rsp
    mov qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.caught], 0
.endm

.section text
; catch_exception_here(frame): record the caught exception and resume where the test asked
.function catch_exception_here, aetherion::interrupts::catch_here
catch_exception_here:
    push rbp
    mov rbp, rsp
    lea rcx, [rip + EXCEPTION_CATCH]
    mov rax, qword ptr [rdi + InterruptFrame.error_code]
    mov qword ptr [rcx + ExceptionCatch.error_code], rax
    mov rax, qword ptr [rdi + InterruptFrame.rip]
    mov qword ptr [rcx + ExceptionCatch.fault_rip], rax
    mov rax, cr2
    mov qword ptr [rcx + ExceptionCatch.cr2], rax
    mov qword ptr [rcx + ExceptionCatch.frame], rdi
    mov rax, qword ptr [rcx + ExceptionCatch.resume_rip]
    mov qword ptr [rdi + InterruptFrame.rip], rax
    mov rax, qword ptr [rcx + ExceptionCatch.resume_rsp]
    mov qword ptr [rdi + InterruptFrame.rsp], rax
    mov qword ptr [rcx + ExceptionCatch.vector], NO_CATCH
    inc qword ptr [rcx + ExceptionCatch.caught]
    pop rbp
    ret
.endfunction

; breakpoint(frame): `int3` is a trap, so returning resumes after it
.function breakpoint_handler, aetherion::interrupts::breakpoint_handler
breakpoint_handler:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    inc qword ptr [rip + BREAKPOINTS]
    cmp qword ptr [rip + CONFIG + Config.test], 0       ; tests count it quietly
    jne .Lquiet
    call print_exception_title
    mov rdi, rbx
    call print_interrupt_frame
.Lquiet:
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; fatal(frame) -> !: a panic naming the exception, its frame and error code
.function fatal_exception, aetherion::interrupts::fatal_exception
fatal_exception:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    call_here panic_header, rdi
    mov rdi, rbx
    call print_exception_title
    mov rdi, rbx
    call print_interrupt_frame
    lea rdi, [rip + error_code_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbx + InterruptFrame.error_code]
    call write_hex
    call write_newline
    call panic_finish
.endfunction

; page_fault(frame): map a zeroed frame under a not-present fault in the demand window and
; resume; any other page fault is fatal. Either way the backtrace goes into a heap Vec first.
.function page_fault_handler, aetherion::interrupts::page_fault_handler
page_fault_handler:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    sub rsp, 32
.equ .Lframes, -64                              ; Vec<u64>: the backtrace
    mov rbx, rdi
    mov r12, cr2
    lea rdi, [rbp + .Lframes]
    mov esi, 8
    call vec_new
    lea rdi, [rbp + .Lframes]
    mov rsi, qword ptr [rbx + InterruptFrame.rip]
    mov rdx, qword ptr [rbx + InterruptFrame.rbp]
    call collect_backtrace
    lea rcx, [rip + LAST_PAGE_FAULT]
    mov qword ptr [rcx + PageFaultRecord.address], r12
    mov rax, qword ptr [rbx + InterruptFrame.error_code]
    mov qword ptr [rcx + PageFaultRecord.error_code], rax
    mov rax, qword ptr [rbp + .Lframes + Vec.len]
    mov qword ptr [rcx + PageFaultRecord.frames], rax
    mov rdx, qword ptr [rbp + .Lframes + Vec.ptr]
    mov rax, qword ptr [rdx]
    mov qword ptr [rcx + PageFaultRecord.frame0], rax
    xor eax, eax
    cmp qword ptr [rbp + .Lframes + Vec.len], 2
    jb .Lone_frame
    mov rax, qword ptr [rdx + 8]
.Lone_frame:
    mov qword ptr [rcx + PageFaultRecord.frame1], rax
    ; a demand fault: not present, in [DEMAND_START, DEMAND_END)
    xor r13d, r13d
    test qword ptr [rbx + InterruptFrame.error_code], PF_PRESENT
    jnz .Lclassified
    mov rax, DEMAND_START
    cmp r12, rax
    jb .Lclassified
    mov rax, DEMAND_END
    cmp r12, rax
    jae .Lclassified
    mov r13d, 1
.Lclassified:
    test r13, r13
    jnz .Lreport
    call_here panic_header, rdi                 ; fatal: the report is the panic's message
.Lreport:
    mov r14, qword ptr [rip + CONFIG + Config.test]     ; tests handle their faults quietly
    test r13, r13
    jz .Lprint
    test r14, r14
    jnz .Lhandle
.Lprint:
    mov rdi, rbx
    call print_exception_title
    lea rdi, [rip + accessed_text]
    call serial_write_cstr
    mov rdi, r12
    call write_hex
    call write_newline
    mov rdi, qword ptr [rbx + InterruptFrame.error_code]
    call print_page_fault_error
    mov rdi, rbx
    call print_interrupt_frame
    lea rdi, [rbp + .Lframes]
    call print_backtrace
    test r13, r13
    jz .Lfatal
.Lhandle:
    mov rdi, r12
    call map_demand_page
    test r14, r14
    jnz .Ldone
    lea rdi, [rip + mapped_text]
    call serial_write_cstr
    mov rdi, r12
    and rdi, -PAGE_SIZE
    call write_hex
    lea rdi, [rip + resuming_text]
    call serial_write_cstr
.Ldone:
    lea rdi, [rbp + .Lframes]
    mov esi, 8
    mov edx, 8
    call vec_drop
    add rsp, 32
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.Lfatal:
    call panic_finish
.endfunction

; map_demand_page(va): a zeroed pool frame, RW- NX, at va's page
.function map_demand_page, aetherion::interrupts::map_demand_page
map_demand_page:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    and rbx, -PAGE_SIZE
    mov esi, 1                                  ; the tables first: the page's frame, allocated
    call entry_for                              ; last, is the one a later unmap gives back
    call allocate_frame
    test rax, rax
    jnz .Lframe
    lea rdi, [rip + no_frame_text]
    mov esi, NO_FRAME_LEN
    call_here panic, rdx
.Lframe:
    mov r12, rax
    mov rdi, rbx
    mov rsi, r12
    mov rdx, PTE_NX | PTE_WRITABLE
    call map_page
    mov rdi, rbx
    xor eax, eax
    mov ecx, PAGE_SIZE / 8
    rep stosq
    inc qword ptr [rip + DEMAND_FAULTS]
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; collect_backtrace(vec, rip, rbp): rip, then each return address up the frame-pointer chain
; while it stays on the kernel stack (boot.s sets rbp to 0 at its base)
.function collect_backtrace, aetherion::interrupts::collect_backtrace
collect_backtrace:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    mov r12, rdx
    call vec_push_u64
.Lnext:
    cmp qword ptr [rbx + Vec.len], MAX_BACKTRACE
    jae .Ldone
    test r12, 7
    jnz .Ldone
    lea rax, [rip + boot_stack]
    cmp r12, rax
    jb .Ldone
    lea rax, [rip + boot_stack_top - 16]
    cmp r12, rax
    ja .Ldone
    mov rsi, qword ptr [r12 + 8]
    mov rdi, rbx
    call vec_push_u64
    mov r12, qword ptr [r12]
    jmp .Lnext
.Ldone:
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; print_backtrace(vec): `backtrace (N frames in a heap Vec):` then a frame a line
.function print_backtrace, aetherion::interrupts::print_backtrace
print_backtrace:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    lea rdi, [rip + backtrace_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbx + Vec.len]
    call write_u64
    lea rdi, [rip + frames_text]
    call serial_write_cstr
    xor r12d, r12d
.Lframe:
    cmp r12, qword ptr [rbx + Vec.len]
    jae .Ldone
    lea rdi, [rip + frame_indent]
    call serial_write_cstr
    mov rdi, r12
    call write_u64
    lea rdi, [rip + colon_space]
    call serial_write_cstr
    mov rax, qword ptr [rbx + Vec.ptr]
    mov rdi, qword ptr [rax + r12 * 8]
    call write_hex
    call write_newline
    inc r12
    jmp .Lframe
.Ldone:
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; print_exception_title(frame): `EXCEPTION: NAME`
.function print_exception_title, aetherion::interrupts::print_title
print_exception_title:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, qword ptr [rdi + InterruptFrame.vector]
    lea rdi, [rip + exception_text]
    call serial_write_cstr
    lea rax, [rip + exception_names]
.Lname:
    mov rdi, qword ptr [rax + 8]
    test rdi, rdi
    jz .Lunnamed
    cmp qword ptr [rax], rbx
    je .Lprint
    add rax, 16
    jmp .Lname
.Lunnamed:
    lea rdi, [rip + vector_text]
    call serial_write_cstr
    mov rdi, rbx
    call write_u64
    jmp .Lend
.Lprint:
    call serial_write_cstr
.Lend:
    call write_newline
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; print_interrupt_frame(frame): what the CPU pushed, as x86_64's InterruptStackFrame prints
.function print_interrupt_frame, aetherion::interrupts::print_frame
print_interrupt_frame:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    lea r12, [rip + frame_fields]
.Lfield:
    mov rdi, qword ptr [r12 + FrameField.text]
    test rdi, rdi
    jz .Ldone
    call serial_write_cstr
    mov rax, qword ptr [r12 + FrameField.offset]
    mov rdi, qword ptr [rbx + rax]
    call write_hex
    add r12, FrameField.SIZE
    jmp .Lfield
.Ldone:
    lea rdi, [rip + frame_close]
    call serial_write_cstr
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; print_page_fault_error(code): `Error Code: 0x2 (not present | write | supervisor)`
.function print_page_fault_error, aetherion::interrupts::print_page_fault_error
print_page_fault_error:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    lea rdi, [rip + error_code_text]
    call serial_write_cstr
    mov rdi, rbx
    call write_hex
    mov edi, ' '
    call serial_write_byte
    mov edi, '('
    call serial_write_byte
    lea r12, [rip + pf_bits]
    xor r13d, r13d                              ; names written so far
.Lbit:
    mov rax, qword ptr [r12 + ErrorBit.set]
    test rax, rax
    jz .Ldone
    mov rdi, rax
    mov rcx, qword ptr [r12 + ErrorBit.bit]
    test rbx, rcx
    jnz .Lname
    test rbx, qword ptr [r12 + ErrorBit.clear_unless]
    jnz .Lnext
    mov rdi, qword ptr [r12 + ErrorBit.clear]
    test rdi, rdi
    jz .Lnext
.Lname:
    test r13, r13
    jz .Lfirst
    push rdi
    sub rsp, 8
    lea rdi, [rip + separator]
    call serial_write_cstr
    add rsp, 8
    pop rdi
.Lfirst:
    call serial_write_cstr
    inc r13
.Lnext:
    add r12, ErrorBit.SIZE
    jmp .Lbit
.Ldone:
    mov edi, ')'
    call serial_write_byte
    call write_newline
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
exception_text: .asciz "EXCEPTION: "
vector_text: .asciz "vector "
error_code_text: .asciz "Error Code: "
accessed_text: .asciz "Accessed Address: "
backtrace_text: .asciz "backtrace ("
frames_text: .asciz " frames in a heap Vec):\n"
frame_indent: .asciz "  "
colon_space: .asciz ": "
mapped_text: .asciz "demand paging: mapped a zeroed frame at "
resuming_text: .asciz ", resuming\n"
separator: .asciz " | "
no_frame_text: .ascii "demand paging: no free frame"
.Lno_frame_end:
.equ NO_FRAME_LEN, .Lno_frame_end - no_frame_text
name_de: .asciz "DIVIDE ERROR"
name_bp: .asciz "BREAKPOINT"
name_ud: .asciz "INVALID OPCODE"
name_df: .asciz "DOUBLE FAULT"
name_gp: .asciz "GENERAL PROTECTION FAULT"
name_pf: .asciz "PAGE FAULT"
field_ip: .asciz "InterruptStackFrame { instruction_pointer: "
field_cs: .asciz ", code_segment: "
field_flags: .asciz ", cpu_flags: "
field_sp: .asciz ", stack_pointer: "
field_ss: .asciz ", stack_segment: "
frame_close: .asciz " }\n"
bit_protection: .asciz "protection violation"
bit_not_present: .asciz "not present"
bit_write: .asciz "write"
bit_read: .asciz "read"
bit_user: .asciz "user"
bit_supervisor: .asciz "supervisor"
bit_reserved: .asciz "reserved bit set"
bit_fetch: .asciz "instruction fetch"
.align 8
exception_names:                                ; (vector, name) pairs, ended by a 0 name
    .quad VECTOR_DIVIDE_ERROR, name_de
    .quad VECTOR_BREAKPOINT, name_bp
    .quad VECTOR_INVALID_OPCODE, name_ud
    .quad VECTOR_DOUBLE_FAULT, name_df
    .quad VECTOR_GENERAL_PROTECTION, name_gp
    .quad VECTOR_PAGE_FAULT, name_pf
    .quad 0, 0
frame_fields:                                   ; FrameField records, ended by a 0 text
    .quad field_ip, InterruptFrame.rip
    .quad field_cs, InterruptFrame.cs
    .quad field_flags, InterruptFrame.rflags
    .quad field_sp, InterruptFrame.rsp
    .quad field_ss, InterruptFrame.ss
    .quad 0, 0
pf_bits:                                        ; ErrorBit records, ended by a 0 `set`
    .quad PF_PRESENT, bit_protection, bit_not_present, 0
    .quad PF_WRITE, bit_write, bit_read, PF_INSTRUCTION ; a fetch is no data read
    .quad PF_USER, bit_user, bit_supervisor, 0
    .quad PF_RESERVED, bit_reserved, 0, 0
    .quad PF_INSTRUCTION, bit_fetch, 0, 0
    .quad 0, 0, 0, 0

.section data
.object EXCEPTION_CATCH, aetherion::interrupts::EXCEPTION_CATCH
EXCEPTION_CATCH:
    .quad NO_CATCH
    .zero ExceptionCatch.SIZE - 8
.endobject
.object LAST_PAGE_FAULT, aetherion::interrupts::LAST_PAGE_FAULT
LAST_PAGE_FAULT: .zero PageFaultRecord.SIZE
.endobject
.object BREAKPOINTS, aetherion::interrupts::BREAKPOINTS
BREAKPOINTS: .quad 0
.endobject
.object DEMAND_FAULTS, aetherion::interrupts::DEMAND_FAULTS
DEMAND_FAULTS: .quad 0
.endobject
