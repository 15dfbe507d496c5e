; The 8259A PIC pair remapped to vectors 32-47 (the CPU's exceptions own 0-31), and the 8254
; PIT's channel 0 as the timer on IRQ0. Ports as emulator/layout.py has them.

.equ PIC_MASTER, 0x20                           ; command; data (the mask) at +1
.equ PIC_SLAVE, 0xA0
.equ PIC_MASTER_DATA, PIC_MASTER + 1
.equ PIC_SLAVE_DATA, PIC_SLAVE + 1
.equ PIC_ICW1_INIT, 0x11                        ; init, edge-triggered, cascade, ICW4 follows
.equ PIC_ICW4_8086, 0x01
.equ PIC_CASCADE_IRQ, 2                         ; the slave's INT on the master's IR2
.equ PIC_EOI, 0x20                              ; OCW2: non-specific end of interrupt
.equ PIC_READ_ISR, 0x0B                         ; OCW3: the next command-port read is the ISR
.equ IRQ_TIMER, 0
.equ PIT_CHANNEL0, 0x40
.equ PIT_COMMAND, 0x43
.equ PIT_CHANNEL0_RATE, 0x34                    ; channel 0, low then high byte, mode 2 (rate generator)
.equ PIT_INPUT_HZ, 1193182
.equ TIMER_HZ, 1000

.section text
; init(): ICW1-4 on both, vectors 32 and 40, every line masked but the cascade
.function pic_init, aetherion::interrupts::pic::init
pic_init:
    push rbp
    mov rbp, rsp
    mov al, PIC_ICW1_INIT
    out PIC_MASTER, al
    out PIC_SLAVE, al
    mov al, VECTOR_IRQ_BASE                     ; ICW2: the vector of IR0
    out PIC_MASTER_DATA, al
    mov al, VECTOR_IRQ_BASE + 8
    out PIC_SLAVE_DATA, al
    mov al, 1 << PIC_CASCADE_IRQ                ; ICW3: the master's slave input, the slave's id
    out PIC_MASTER_DATA, al
    mov al, PIC_CASCADE_IRQ
    out PIC_SLAVE_DATA, al
    mov al, PIC_ICW4_8086
    out PIC_MASTER_DATA, al
    out PIC_SLAVE_DATA, al
    mov al, ~(1 << PIC_CASCADE_IRQ) & 0xFF
    out PIC_MASTER_DATA, al
    mov al, 0xFF
    out PIC_SLAVE_DATA, al
    pop rbp
    ret
.endfunction

; set_masked(irq, masked): one master line (IRQ 0-7) masked or unmasked
.function pic_set_masked, aetherion::interrupts::pic::set_masked
pic_set_masked:
    push rbp
    mov rbp, rsp
    mov ecx, edi
    mov edx, 1
    shl edx, cl
    in al, PIC_MASTER_DATA
    or al, dl
    test esi, esi
    jnz .Lwrite
    not dl
    and al, dl
.Lwrite:
    out PIC_MASTER_DATA, al
    pop rbp
    ret
.endfunction

; end_of_interrupt(vector): to the slave too for its lines, then to the master
.function pic_end_of_interrupt, aetherion::interrupts::pic::end_of_interrupt
pic_end_of_interrupt:
    push rbp
    mov rbp, rsp
    mov al, PIC_EOI
    cmp edi, VECTOR_IRQ_BASE + 8
    jb .Lmaster
    out PIC_SLAVE, al
.Lmaster:
    out PIC_MASTER, al
    pop rbp
    ret
.endfunction

; spurious(frame): IRQ7 or IRQ15 whose bit is clear in its chip's ISR was spurious: no EOI to
; that chip (a spurious IRQ15 still took the master's IR2, which gets its EOI)
.function spurious_handler, aetherion::interrupts::pic::spurious_handler
spurious_handler:
    push rbp
    mov rbp, rsp
    mov rdi, qword ptr [rdi + InterruptFrame.vector]
    mov al, PIC_READ_ISR
    cmp edi, VECTOR_SPURIOUS_SLAVE
    je .Lslave
    out PIC_MASTER, al
    in al, PIC_MASTER
    test al, 0x80
    jnz .Lreal
    inc qword ptr [rip + SPURIOUS_IRQS]
    jmp .Lout
.Lslave:
    out PIC_SLAVE, al
    in al, PIC_SLAVE
    test al, 0x80
    jnz .Lreal
    inc qword ptr [rip + SPURIOUS_IRQS]
    mov al, PIC_EOI
    out PIC_MASTER, al
    jmp .Lout
.Lreal:
    call pic_end_of_interrupt                   ; nothing is on IRQ7 or IRQ15: acknowledge it
.Lout:
    pop rbp
    ret
.endfunction

; timer_start(): PIT channel 0 at TIMER_HZ, IRQ0 unmasked (interrupts stay as they are)
.function timer_start, aetherion::interrupts::timer::start
timer_start:
    push rbp
    mov rbp, rsp
    mov al, PIT_CHANNEL0_RATE
    out PIT_COMMAND, al
    mov eax, PIT_INPUT_HZ / TIMER_HZ
    out PIT_CHANNEL0, al
    mov al, ah
    out PIT_CHANNEL0, al
    mov edi, IRQ_TIMER
    xor esi, esi
    call pic_set_masked
    pop rbp
    ret
.endfunction

; timer_stop(): IRQ0 masked
.function timer_stop, aetherion::interrupts::timer::stop
timer_stop:
    push rbp
    mov rbp, rsp
    mov edi, IRQ_TIMER
    mov esi, 1
    call pic_set_masked
    pop rbp
    ret
.endfunction

.section data
.object SPURIOUS_IRQS, aetherion::interrupts::pic::SPURIOUS_IRQS
SPURIOUS_IRQS: .quad 0
.endobject
