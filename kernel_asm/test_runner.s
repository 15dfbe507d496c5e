; The in-kernel test runner, in libtest's format (cmdline `test` or `test=SUBSTRING`).
;
; Tests are TestRecords in `.section testtable` (the test_case macro writes them). A non-zero
; ignore_reason marks a test whose premise needs memory reuse: under the bump allocator it is
; reported `ignored, REASON`. A panic inside a test prints FAILED and its message, then
; resumes here with the stack as it was before the test (test_recovery_rsp).

.struct TestRecord
    name_ptr: .quad
    name_len: .quad
    function: .quad
    ignore_reason: .quad                        ; a NUL-terminated reason, or 0
.endstruct

; test_case FUNCTION, "NAME"[, IGNORE_REASON]: a TestRecord for FUNCTION, run as test NAME
.macro test_case function, name, ignore_reason=0
.section testtable
    .quad .Ltest_name\@, .Ltest_name_end\@ - .Ltest_name\@, \function, \ignore_reason
.section rodata
.Ltest_name\@: .ascii \name
.Ltest_name_end\@:
.endm

.section text
; run_tests() -> exit code (0x10 all passed, 0x11 otherwise)
.function run_tests, aetherion::test_runner::run
run_tests:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    ; count the tests that pass the filter
    xor r12d, r12d
    lea rbx, [rip + __start_testtable]
.Lcount:
    lea rax, [rip + __stop_testtable]
    cmp rbx, rax
    jae .Lcounted
    mov rdi, rbx
    call test_selected
    add r12, rax
    add rbx, TestRecord.SIZE
    jmp .Lcount
.Lcounted:
    lea rdi, [rip + running_text]
    call serial_write_cstr
    mov rdi, r12
    call write_u64
    lea rdi, [rip + tests_text]
    cmp r12, 1
    jne .Lplural
    lea rdi, [rip + test_text]
.Lplural:
    call serial_write_cstr
    lea rax, [rip + __start_testtable]
    mov qword ptr [rip + current_test], rax
.Lnext:
    mov rbx, qword ptr [rip + current_test]
    lea rax, [rip + __stop_testtable]
    cmp rbx, rax
    jae .Lsummary
    mov rdi, rbx
    call test_selected
    test rax, rax
    jnz .Lselected
    inc qword ptr [rip + filtered_count]
    jmp .Ladvance
.Lselected:
    lea rdi, [rip + test_prefix]
    call serial_write_cstr
    mov rdi, qword ptr [rbx + TestRecord.name_ptr]
    mov rsi, qword ptr [rbx + TestRecord.name_len]
    call serial_write_str
    lea rdi, [rip + dots]
    call serial_write_cstr
    cmp qword ptr [rbx + TestRecord.ignore_reason], 0
    je .Lrun
    cmp qword ptr [rip + CONFIG + Config.allocator], KIND_BUMP  ; no reuse: the premise does not hold
    jne .Lrun
    lea rdi, [rip + ignored_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbx + TestRecord.ignore_reason]
    call serial_write_cstr
    call write_newline
    inc qword ptr [rip + ignored_count]
    jmp .Ladvance
.Lrun:
    mov qword ptr [rip + test_recovery_rsp], rsp
    call qword ptr [rbx + TestRecord.function]
    mov qword ptr [rip + test_recovery_rsp], 0
    lea rdi, [rip + ok_text]
    call serial_write_cstr
    inc qword ptr [rip + passed_count]
.Ladvance:
test_runner_advance:                            ; test_failed resumes here
    add qword ptr [rip + current_test], TestRecord.SIZE
    jmp .Lnext
.Lsummary:
    cmp qword ptr [rip + CONFIG + Config.verbose], 0    ; verbose: the guest's own translations
    je .Lresult
    call print_translations
.Lresult:
    lea rdi, [rip + result_text]
    call serial_write_cstr
    lea rdi, [rip + ok_word]
    cmp qword ptr [rip + failed_count], 0
    je .Lverdict
    lea rdi, [rip + failed_word]
.Lverdict:
    call serial_write_cstr
    mov rdi, qword ptr [rip + passed_count]
    call write_u64
    lea rdi, [rip + passed_text]
    call serial_write_cstr
    mov rdi, qword ptr [rip + failed_count]
    call write_u64
    lea rdi, [rip + failed_text2]
    call serial_write_cstr
    mov rdi, qword ptr [rip + ignored_count]
    call write_u64
    lea rdi, [rip + ignored_text2]
    call serial_write_cstr
    mov rdi, qword ptr [rip + filtered_count]
    call write_u64
    lea rdi, [rip + filtered_text]
    call serial_write_cstr
    mov eax, 0x10
    cmp qword ptr [rip + failed_count], 0
    je .Lout
    mov eax, 0x11
.Lout:
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; Reached by a jump from panic/assert_eq while a test runs: the test failed; resume the loop.
.function test_failed, aetherion::test_runner::test_failed
test_failed:
    mov rsp, qword ptr [rip + test_recovery_rsp]
    mov qword ptr [rip + test_recovery_rsp], 0
    lea rbp, [rsp + 32]                         ; run_tests' frame: rbp is above its 4 saved registers
    inc qword ptr [rip + failed_count]
    jmp test_runner_advance
.endfunction

; test_selected(record) -> 1 if the record's name contains the filter (or there is none)
.function test_selected, aetherion::test_runner::selected
test_selected:
    push rbp
    mov rbp, rsp
    mov rcx, qword ptr [rip + CONFIG + Config.test_filter_len]
    mov eax, 1
    test rcx, rcx
    jz .Lyes
    mov rdx, qword ptr [rip + CONFIG + Config.test_filter_ptr]
    mov rsi, qword ptr [rdi + TestRecord.name_len]
    mov rdi, qword ptr [rdi + TestRecord.name_ptr]
    call contains
.Lyes:
    pop rbp
    ret
.endfunction

.section rodata
running_text: .asciz "\nrunning "
tests_text: .asciz " tests\n"
test_text: .asciz " test\n"
test_prefix: .asciz "test "
dots: .asciz " ... "
ok_text: .asciz "ok\n"
ignored_text: .asciz "ignored, "
result_text: .asciz "\ntest result: "
ok_word: .asciz "ok. "
failed_word: .asciz "FAILED. "
passed_text: .asciz " passed; "
failed_text2: .asciz " failed; "
ignored_text2: .asciz " ignored; 0 measured; "
filtered_text: .asciz " filtered out\n\n"

.section data
.object test_recovery_rsp, aetherion::test_runner::RECOVERY_RSP
test_recovery_rsp: .quad 0
.endobject
current_test: .quad 0
passed_count: .quad 0
failed_count: .quad 0
ignored_count: .quad 0
filtered_count: .quad 0
