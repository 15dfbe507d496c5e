; The task state segment: its IST1 is the double-fault handler's own stack, so a fault that
; leaves the kernel stack unusable (an overflow into the guard page) still reaches a handler.
; The GDT itself is boot.s's gdt64; its descriptor at TSS_SELECTOR is written here.

.equ KERNEL_CS, 0x08
.equ KERNEL_DS, 0x10
.equ TSS_SELECTOR, 0x18
.equ DOUBLE_FAULT_IST, 1                        ; the IST index the #DF gate names
.equ IST_STACK_SIZE, 0x4000
.equ TSS_DESCRIPTOR_TYPE, 0x89                  ; present, DPL 0, available 64-bit TSS

; The 64-bit TSS (Intel SDM vol. 3, figure 8-11): no implicit padding, so offsets are the SDM's
.struct TaskStateSegment
    reserved0: .long
    rsp: .quad 3                                ; RSP0-2: stacks for a change to rings 0-2
    reserved1: .quad
    ist: .quad 7                                ; IST1-7
    reserved2: .quad
    reserved3: .word
    iomap_base: .word
.endstruct

.section text
; init(): IST1 -> double_fault_stack, the TSS descriptor into gdt64, ltr
.function gdt_init, aetherion::gdt::init
gdt_init:
    push rbp
    mov rbp, rsp
    lea rax, [rip + double_fault_stack_top]
    mov qword ptr [rip + TSS + TaskStateSegment.ist], rax           ; ist[0] is IST1
    mov word ptr [rip + TSS + TaskStateSegment.iomap_base], TaskStateSegment.SIZE  ; no I/O bitmap
    ; a 16-byte system descriptor: limit 15:0, base 23:0, type, limit 19:16, base 31:24; base 63:32
    lea rax, [rip + TSS]
    mov rcx, rax
    and ecx, 0xFFFFFF
    shl rcx, 16
    or rcx, TaskStateSegment.SIZE - 1
    mov rdx, TSS_DESCRIPTOR_TYPE
    shl rdx, 40
    or rcx, rdx
    mov rdx, rax
    shr rdx, 24
    and edx, 0xFF
    shl rdx, 56
    or rcx, rdx
    lea rdx, [rip + gdt64]
    mov qword ptr [rdx + TSS_SELECTOR], rcx
    shr rax, 32
    mov qword ptr [rdx + TSS_SELECTOR + 8], rax
    mov ax, TSS_SELECTOR
    ltr ax
    pop rbp
    ret
.endfunction

.section data
.align 16
.object TSS, aetherion::gdt::TSS
TSS: .zero TaskStateSegment.SIZE
.endobject

.section bss
.align 16
.object double_fault_stack, aetherion::gdt::DOUBLE_FAULT_STACK
double_fault_stack: .zero IST_STACK_SIZE
double_fault_stack_top:
.endobject
