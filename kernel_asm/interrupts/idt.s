; The IDT, the entry stubs and the dispatch to each handler.
;
; Every stub leaves the same InterruptFrame on the stack (an error code of 0 for the vectors
; whose CPU pushes none), so one entry path saves the registers, calls interrupt_dispatch with
; the frame and returns with iretq. A handler may change the frame's RIP and RSP (a caught
; exception resumes elsewhere) and its saved registers.

.equ IDT_ENTRIES, 256
.equ GATE_INTERRUPT, 0x8E                       ; present, DPL 0, 64-bit interrupt gate: IF cleared
.equ GATE_PRESENT, 0x80
.equ RFLAGS_IF, 0x200

.equ VECTOR_DIVIDE_ERROR, 0
.equ VECTOR_BREAKPOINT, 3
.equ VECTOR_INVALID_OPCODE, 6
.equ VECTOR_DOUBLE_FAULT, 8
.equ VECTOR_GENERAL_PROTECTION, 13
.equ VECTOR_PAGE_FAULT, 14
.equ VECTOR_IRQ_BASE, 32                        ; the master PIC's IRQ0, after pic_init's remap
.equ VECTOR_TIMER, VECTOR_IRQ_BASE
.equ VECTOR_SPURIOUS_MASTER, VECTOR_IRQ_BASE + 7
.equ VECTOR_SPURIOUS_SLAVE, VECTOR_IRQ_BASE + 15

; A 64-bit gate descriptor (Intel SDM vol. 3, figure 6-8)
.struct IdtGate
    offset_low: .word
    selector: .word
    ist: .byte
    type_attr: .byte
    offset_mid: .word
    offset_high: .long
    reserved: .long
.endstruct

; What interrupt_common leaves on the stack, lowest address first: the saved registers, the
; stub's vector and error code, then what the CPU pushed
.struct InterruptFrame
    r15: .quad
    r14: .quad
    r13: .quad
    r12: .quad
    r11: .quad
    r10: .quad
    r9: .quad
    r8: .quad
    rbp: .quad
    rdi: .quad
    rsi: .quad
    rdx: .quad
    rcx: .quad
    rbx: .quad
    rax: .quad
    vector: .quad
    error_code: .quad
    rip: .quad
    cs: .quad
    rflags: .quad
    rsp: .quad
    ss: .quad
.endstruct

; A record of idt_gates: the gate for `vector` enters `handler` on IST stack `ist` (0: none)
.struct GateSpec
    vector: .quad
    handler: .quad
    ist: .quad
.endstruct

; interrupt_stub NAME, VECTOR: an entry for a vector whose CPU pushes no error code
.macro interrupt_stub name, vector
.function \name, aetherion::interrupts::\name
\name:
    push 0
    push \vector
    jmp interrupt_common
.endfunction
.endm

; interrupt_stub_with_error NAME, VECTOR: an entry for a vector whose CPU pushes one
.macro interrupt_stub_with_error name, vector
.function \name, aetherion::interrupts::\name
\name:
    push \vector
    jmp interrupt_common
.endfunction
.endm

.section text
interrupt_stub divide_error_entry, VECTOR_DIVIDE_ERROR
interrupt_stub breakpoint_entry, VECTOR_BREAKPOINT
interrupt_stub invalid_opcode_entry, VECTOR_INVALID_OPCODE
interrupt_stub_with_error double_fault_entry, VECTOR_DOUBLE_FAULT
interrupt_stub_with_error general_protection_entry, VECTOR_GENERAL_PROTECTION
interrupt_stub_with_error page_fault_entry, VECTOR_PAGE_FAULT
interrupt_stub timer_entry, VECTOR_TIMER
interrupt_stub spurious_master_entry, VECTOR_SPURIOUS_MASTER
interrupt_stub spurious_slave_entry, VECTOR_SPURIOUS_SLAVE

; The CPU aligned RSP to 16 before its 5 pushes; with the stub's 2 and these 15 the frame is
; 22 quads, so the call below keeps the System V alignment.
.function interrupt_common, aetherion::interrupts::entry
interrupt_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    cld
    mov rdi, rsp
    call interrupt_dispatch
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16                                 ; the vector and the error code
    iretq
.endfunction

; dispatch(frame): a test's caught exception first, then the vector's handler
.function interrupt_dispatch, aetherion::interrupts::dispatch
interrupt_dispatch:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    mov rax, qword ptr [rbx + InterruptFrame.vector]
    cmp rax, VECTOR_IRQ_BASE
    jae .Lirq
    cmp rax, qword ptr [rip + EXCEPTION_CATCH + ExceptionCatch.vector]
    jne .Lexception
    call catch_exception_here
    jmp .Lout
.Lexception:
    cmp rax, VECTOR_BREAKPOINT
    jne .Lnot_breakpoint
    call breakpoint_handler
    jmp .Lout
.Lnot_breakpoint:
    cmp rax, VECTOR_PAGE_FAULT
    jne .Lfatal
    call page_fault_handler
    jmp .Lout
.Lfatal:
    call fatal_exception                        ; never returns
.Lirq:
    cmp rax, VECTOR_TIMER
    jne .Lnot_timer
    call timer_handler
    jmp .Lout
.Lnot_timer:
    call spurious_handler
.Lout:
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; set_gate(vector, handler, ist, type_attr)
.function idt_set_gate, aetherion::interrupts::set_gate
idt_set_gate:
    push rbp
    mov rbp, rsp
    shl rdi, 4                                  ; * IdtGate.SIZE
    lea rax, [rip + IDT]
    add rax, rdi
    mov word ptr [rax + IdtGate.offset_low], si
    mov word ptr [rax + IdtGate.selector], KERNEL_CS
    mov byte ptr [rax + IdtGate.ist], dl
    mov byte ptr [rax + IdtGate.type_attr], cl
    shr rsi, 16
    mov word ptr [rax + IdtGate.offset_mid], si
    shr rsi, 16
    mov dword ptr [rax + IdtGate.offset_high], esi
    mov dword ptr [rax + IdtGate.reserved], 0
    pop rbp
    ret
.endfunction

; init(): the GDT's TSS, a gate for each of idt_gates, lidt, and the PICs remapped and masked.
; Interrupts stay disabled: whoever wants the timer enables them.
.function interrupts_init, aetherion::interrupts::init
interrupts_init:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call gdt_init
    lea rbx, [rip + idt_gates]
.Lgate:
    mov rsi, qword ptr [rbx + GateSpec.handler]
    test rsi, rsi
    jz .Lgates_done
    mov rdi, qword ptr [rbx + GateSpec.vector]
    mov rdx, qword ptr [rbx + GateSpec.ist]
    mov ecx, GATE_INTERRUPT
    call idt_set_gate
    add rbx, GateSpec.SIZE
    jmp .Lgate
.Lgates_done:
    lea rax, [rip + idt_pointer]
    lidt [rax]
    call pic_init
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; without_interrupts() -> the RFLAGS from before, interrupts now off
.function interrupts_disable, aetherion::interrupts::disable
interrupts_disable:
    pushfq
    pop rax
    cli
    ret
.endfunction

; restore(flags): interrupts back on if they were on in flags
.function interrupts_restore, aetherion::interrupts::restore
interrupts_restore:
    test edi, RFLAGS_IF
    jz .Loff
    sti
.Loff:
    ret
.endfunction

.section rodata
.align 8
idt_gates:                                      ; GateSpec records, ended by a 0 handler
    .quad VECTOR_DIVIDE_ERROR, divide_error_entry, 0
    .quad VECTOR_BREAKPOINT, breakpoint_entry, 0
    .quad VECTOR_INVALID_OPCODE, invalid_opcode_entry, 0
    .quad VECTOR_DOUBLE_FAULT, double_fault_entry, DOUBLE_FAULT_IST
    .quad VECTOR_GENERAL_PROTECTION, general_protection_entry, 0
    .quad VECTOR_PAGE_FAULT, page_fault_entry, 0
    .quad VECTOR_TIMER, timer_entry, 0
    .quad VECTOR_SPURIOUS_MASTER, spurious_master_entry, 0
    .quad VECTOR_SPURIOUS_SLAVE, spurious_slave_entry, 0
    .quad 0, 0, 0
idt_pointer:
    .word IDT_ENTRIES * IdtGate.SIZE - 1
    .quad IDT

.section bss
.align 16
.object IDT, aetherion::interrupts::IDT
IDT: .zero IDT_ENTRIES * IdtGate.SIZE
.endobject
