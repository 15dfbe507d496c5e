; COM1, polled: the kernel's only output.

.equ COM1, 0x3F8

; The 16550 UART's registers, as offsets from its base port
.equ UART_DATA, 0                               ; with LCR.DLAB set: the divisor's low byte
.equ UART_IER, 1                                ; interrupt enable; with DLAB: the divisor's high byte
.equ UART_FCR, 2                                ; FIFO control
.equ UART_LCR, 3                                ; line control
.equ UART_MCR, 4                                ; modem control
.equ UART_LSR, 5                                ; line status

.section text
.function serial_init, aetherion::serial::init
serial_init:
    push rbp
    mov rbp, rsp
    mov dx, COM1 + UART_IER
    xor al, al
    out dx, al                      ; no interrupts
    mov dx, COM1 + UART_LCR
    mov al, 0x80
    out dx, al                      ; DLAB
    mov dx, COM1 + UART_DATA
    mov al, 1
    out dx, al                      ; divisor 1: 115200 baud
    mov dx, COM1 + UART_IER
    xor al, al
    out dx, al
    mov dx, COM1 + UART_LCR
    mov al, 0x03
    out dx, al                      ; 8N1
    mov dx, COM1 + UART_FCR
    mov al, 0xC7
    out dx, al                      ; FIFOs on, cleared
    mov dx, COM1 + UART_MCR
    mov al, 0x0B
    out dx, al
    pop rbp
    ret
.endfunction

; write_byte(byte: u8 in dil)
.function serial_write_byte, aetherion::serial::write_byte
serial_write_byte:
    push rbp
    mov rbp, rsp
    mov dx, COM1 + UART_LSR
.Lwait:
    in al, dx
    test al, 0x20                   ; transmit holding register empty
    jnz .Lready
    pause
    jmp .Lwait
.Lready:
    mov dx, COM1 + UART_DATA
    mov eax, edi
    out dx, al
    pop rbp
    ret
.endfunction

; write_str(ptr, len)
.function serial_write_str, aetherion::serial::write_str
serial_write_str:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    lea r12, [rdi + rsi]
.Lnext:
    cmp rbx, r12
    jae .Ldone
    movzx edi, byte ptr [rbx]
    call serial_write_byte
    inc rbx
    jmp .Lnext
.Ldone:
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; write_cstr(ptr): up to the NUL
.function serial_write_cstr, aetherion::serial::write_cstr
serial_write_cstr:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
.Lloop:
    movzx edi, byte ptr [rbx]
    test edi, edi
    jz .Lend
    call serial_write_byte
    inc rbx
    jmp .Lloop
.Lend:
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction
