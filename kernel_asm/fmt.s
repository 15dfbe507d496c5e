; Number formatting for serial output, and small string helpers.

.section text
; write_u64(value): decimal
.function write_u64, aetherion::fmt::write_u64
write_u64:
    push rbp
    mov rbp, rsp
    sub rsp, 32
    mov rax, rdi
    lea rsi, [rbp - 1]
    mov byte ptr [rsi], 0
    mov ecx, 10
.Ldigit:
    xor edx, edx
    div rcx
    add dl, '0'
    dec rsi
    mov byte ptr [rsi], dl
    test rax, rax
    jnz .Ldigit
    mov rdi, rsi
    call serial_write_cstr
    leave
    ret
.endfunction

; write_hex(value): 0x and lower-case hex digits, no leading zeros
.function write_hex, aetherion::fmt::write_hex
write_hex:
    push rbp
    mov rbp, rsp
    sub rsp, 32
    mov rax, rdi
    lea rsi, [rbp - 1]
    mov byte ptr [rsi], 0
.Lnibble:
    mov edx, eax
    and edx, 15
    lea rcx, [rip + hex_digits]
    mov dl, byte ptr [rcx + rdx]
    dec rsi
    mov byte ptr [rsi], dl
    shr rax, 4
    jnz .Lnibble
    dec rsi
    mov byte ptr [rsi], 'x'
    dec rsi
    mov byte ptr [rsi], '0'
    mov rdi, rsi
    call serial_write_cstr
    leave
    ret
.endfunction

.function write_newline, aetherion::fmt::write_newline
write_newline:
    push rbp
    mov rbp, rsp
    mov edi, 10
    call serial_write_byte
    pop rbp
    ret
.endfunction

; cstr_len(ptr) -> length up to the NUL
.function cstr_len, aetherion::fmt::cstr_len
cstr_len:
    push rbp
    mov rbp, rsp
    mov rax, rdi
.Lscan:
    cmp byte ptr [rax], 0
    je .Lfound
    inc rax
    jmp .Lscan
.Lfound:
    sub rax, rdi
    pop rbp
    ret
.endfunction

; mem_eq(a, b, len) -> 1 if the bytes are equal
.function mem_eq, aetherion::fmt::mem_eq
mem_eq:
    push rbp
    mov rbp, rsp
    xor eax, eax
    xor ecx, ecx
.Lcompare:
    cmp rcx, rdx
    jae .Lequal
    mov r8b, byte ptr [rdi + rcx]
    cmp r8b, byte ptr [rsi + rcx]
    jne .Lout
    inc rcx
    jmp .Lcompare
.Lequal:
    mov eax, 1
.Lout:
    pop rbp
    ret
.endfunction

; contains(haystack, haystack_len, needle, needle_len) -> 1 if needle occurs in haystack
.function contains, aetherion::fmt::contains
contains:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov r14, rcx
.Ltry:
    cmp r12, r14
    jb .Lno
    mov rdi, rbx
    mov rsi, r13
    mov rdx, r14
    call mem_eq
    test eax, eax
    jnz .Lyes
    inc rbx
    dec r12
    jmp .Ltry
.Lyes:
    mov eax, 1
    jmp .Lend
.Lno:
    xor eax, eax
.Lend:
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
hex_digits: .ascii "0123456789abcdef"
