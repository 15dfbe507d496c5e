; Panics and the machine exit (isa-debug-exit, as QEMU's device).
;
; panic(msg_ptr, msg_len, location_cstr) prints Rust's panic text and exits with failure;
; while the test runner runs a test, it fails that test instead (see test_runner.s).

.equ EXIT_SUCCESS, 0x10
.equ EXIT_FAILURE, 0x11

; call_here FUNCTION, REG: call FUNCTION with REG = this line's location, a `.srcloc` string
; naming the line that uses the macro: the location argument of panic, assert_eq, assert_true,
; panic_address, panic_header and the tests' expect helpers
.macro call_here function, location
    .srcloc .Lhere\@
    lea \location, [rip + .Lhere\@]
    call \function
.endm

.section text
; exit(code) -> !
.function exit, aetherion::exit
exit:
    push rbp
    mov rbp, rsp
    mov eax, edi
    out 0xF4, eax
.Lhalt:
    cli
    hlt
    jmp .Lhalt
.endfunction

.function panic, aetherion::panic::panic
panic:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov rdi, r13
    call panic_header
    mov rdi, rbx
    mov rsi, r12
    call serial_write_str
    call write_newline
    call panic_finish
.endfunction

; panic_finish() -> !: the end of every panic: fail the running test, or exit with failure
.function panic_finish, aetherion::panic::finish
panic_finish:
    cmp qword ptr [rip + test_recovery_rsp], 0
    jne test_failed                 ; inside a test: the runner takes over
    mov edi, EXIT_FAILURE
    call exit
.endfunction

; panic_header(location_cstr): `panicked at LOCATION:` (after `FAILED` when a test is running)
.function panic_header, aetherion::panic::header
panic_header:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    cmp qword ptr [rip + test_recovery_rsp], 0
    je .Lplain
    lea rdi, [rip + failed_text]
    call serial_write_cstr
.Lplain:
    lea rdi, [rip + panicked_at]
    call serial_write_cstr
    mov rdi, rbx
    call serial_write_cstr
    mov edi, ':'
    call serial_write_byte
    call write_newline
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; assert_eq(left, right, location_cstr): panics with Rust's text unless left == right
.function assert_eq, aetherion::panic::assert_eq
assert_eq:
    push rbp
    mov rbp, rsp
    cmp rdi, rsi
    jne .Lfail
    pop rbp
    ret
.Lfail:
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov rdi, r13
    call panic_header
    lea rdi, [rip + assertion_failed]
    call serial_write_cstr
    mov rdi, rbx
    call write_u64
    lea rdi, [rip + right_is]
    call serial_write_cstr
    mov rdi, r12
    call write_u64
    call write_newline
    call panic_finish
.endfunction

; panic_address(prefix_cstr, address, suffix_cstr, location_cstr): a message naming an address
.function panic_address, aetherion::panic::panic_address
panic_address:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov rdi, rcx
    call panic_header
    mov rdi, rbx
    call serial_write_cstr
    mov rdi, r12
    call write_hex
    mov rdi, r13
    call serial_write_cstr
    call write_newline
    call panic_finish
.endfunction

; assert_true(condition, location_cstr)
.function assert_true, aetherion::panic::assert_true
assert_true:
    push rbp
    mov rbp, rsp
    mov rdx, rsi
    test rdi, rdi
    setnz al
    movzx edi, al
    mov esi, 1
    call assert_eq
    pop rbp
    ret
.endfunction

.section rodata
failed_text: .asciz "FAILED\n"
panicked_at: .asciz "panicked at "
assertion_failed: .asciz "assertion `left == right` failed\n  left: "
right_is: .asciz "\n right: "
