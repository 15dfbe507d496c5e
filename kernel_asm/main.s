; kmain: the kernel's Rust-style main, and the command line.

; aetherion::config::CONFIG: what the command line asked for
.struct Config
    allocator: .quad                            ; KIND_BUMP or KIND_LINKED_LIST
    test: .quad                                 ; run the in-kernel tests
    test_filter_ptr: .quad                      ; test=SUBSTRING: only tests whose name contains it
    test_filter_len: .quad
    bench: .quad
    verbose: .quad
    quiet: .quad
    demo_oom: .quad
    churn: .quad                                ; 1 with churn=N: run the churn workload
    churn_calls: .quad                          ; its N
    seed: .quad                                 ; seed=S: the churn workload's seed, 1 unless given
    demo_interrupts: .quad                      ; demo=interrupts
    demo_deadlock: .quad                        ; demo=deadlock
.endstruct

; A record of config_keys: the key `key_len` bytes at key_ptr sets CONFIG's `field` to `value`
.struct ConfigKey
    key_ptr: .quad
    key_len: .quad                              ; 0 ends the table
    field: .quad                                ; an offset in Config
    value: .quad
.endstruct

; A command-line word that is not a key, kept to be reported after the banner
.struct CmdlineWord
    ptr: .quad
    len: .quad
.endstruct
.equ MAX_UNKNOWN_WORDS, 16

.section text
; kmain(start_info: *const HvmStartInfo) -> exit code
.function kmain, aetherion::kmain
kmain:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov qword ptr [rip + START_INFO], rdi
    call serial_init
    call parse_cmdline
    cmp qword ptr [rip + CONFIG + Config.quiet], 0
    jne .Lbanner_done
    lea rdi, [rip + banner]
    call serial_write_cstr
    call print_cmdline
.Lbanner_done:
    call report_unknown_keys
    cmp qword ptr [rip + CONFIG + Config.verbose], 0
    je .Lmemory
    call print_memory_map
.Lmemory:
    mov rdi, qword ptr [rip + START_INFO]
    call frame_init
    call paging_init
    mov rdi, qword ptr [rip + CONFIG + Config.allocator]
    call allocator_init
    call interrupts_init
    cmp qword ptr [rip + CONFIG + Config.test], 0
    je .Lnot_test
    call run_tests
    jmp .Lexit
.Lnot_test:
    cmp qword ptr [rip + CONFIG + Config.bench], 0
    je .Lnot_bench
    call bench_run
    mov eax, 0x10
    jmp .Lexit
.Lnot_bench:
    cmp qword ptr [rip + CONFIG + Config.churn], 0
    je .Lnot_churn
    call churn_run
    mov eax, 0x10
    jmp .Lexit
.Lnot_churn:
    cmp qword ptr [rip + CONFIG + Config.demo_interrupts], 0
    je .Lnot_interrupts
    call interrupts_demo
    mov eax, 0x10
    jmp .Lexit
.Lnot_interrupts:
    cmp qword ptr [rip + CONFIG + Config.demo_deadlock], 0
    je .Ldemo
    call deadlock_demo
.Ldemo:
    call demo_run
    mov eax, 0x10
.Lexit:
    mov edi, eax
    call exit
.endfunction

; The command line as (ptr, len) in rax/rdx; ptr 0 when there is none.
.function cmdline, aetherion::cmdline
cmdline:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + START_INFO]
    mov rax, qword ptr [rax + HvmStartInfo.cmdline_paddr]
    xor edx, edx
    test rax, rax
    jz .Lnone
    mov rdi, rax
    call cstr_len
    mov rdx, rax
    mov rax, rdi
.Lnone:
    pop rbp
    ret
.endfunction

.function print_cmdline, aetherion::print_cmdline
print_cmdline:
    push rbp
    mov rbp, rsp
    lea rdi, [rip + cmdline_prefix]
    call serial_write_cstr
    call cmdline
    test rax, rax
    jnz .Lhave
    lea rdi, [rip + no_cmdline]
    call serial_write_cstr
    jmp .Lend
.Lhave:
    mov rdi, rax
    mov rsi, rdx
    call serial_write_str
.Lend:
    call write_newline
    pop rbp
    ret
.endfunction

; Walks the words of the command line, calling handle_word(ptr, len) for each.
.function parse_cmdline, aetherion::config::parse
parse_cmdline:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov qword ptr [rip + CONFIG + Config.allocator], KIND_LINKED_LIST   ; unless told otherwise
    mov qword ptr [rip + CONFIG + Config.seed], 1
    call cmdline
    test rax, rax
    jz .Ldone
    mov rbx, rax
    lea r12, [rax + rdx]
.Lskip_spaces:
    cmp rbx, r12
    jae .Ldone
    cmp byte ptr [rbx], ' '
    jne .Lword
    inc rbx
    jmp .Lskip_spaces
.Lword:
    mov rdi, rbx
.Lword_end:
    cmp rbx, r12
    jae .Lhandle
    cmp byte ptr [rbx], ' '
    je .Lhandle
    inc rbx
    jmp .Lword_end
.Lhandle:
    mov rsi, rbx
    sub rsi, rdi
    call handle_word
    jmp .Lskip_spaces
.Ldone:
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; handle_word(ptr, len): one key of the command line into CONFIG (config_keys), churn=N, seed=S
; or test=SUBSTRING
.function handle_word, aetherion::config::handle_word
handle_word:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    lea r13, [rip + config_keys]
.Lkey:
    mov rcx, qword ptr [r13 + ConfigKey.key_len]
    test rcx, rcx
    jz .Lnot_a_key
    cmp rcx, r12
    jne .Lnext_key
    mov rdi, rbx
    mov rsi, qword ptr [r13 + ConfigKey.key_ptr]
    mov rdx, rcx
    call mem_eq
    test eax, eax
    jz .Lnext_key
    mov rax, qword ptr [r13 + ConfigKey.field]
    mov rcx, qword ptr [r13 + ConfigKey.value]
    lea rdx, [rip + CONFIG]
    mov qword ptr [rdx + rax], rcx
    jmp .Lout
.Lnext_key:
    add r13, ConfigKey.SIZE
    jmp .Lkey
.Lnot_a_key:
    mov rdi, rbx
    mov rsi, r12
    lea rdx, [rip + key_churn_eq]
    mov ecx, CHURN_EQ_LEN
    call value_key
    test edx, edx
    jz .Lnot_churn
    mov qword ptr [rip + CONFIG + Config.churn_calls], rax
    mov qword ptr [rip + CONFIG + Config.churn], 1
    jmp .Lout
.Lnot_churn:
    mov rdi, rbx
    mov rsi, r12
    lea rdx, [rip + key_seed_eq]
    mov ecx, SEED_EQ_LEN
    call value_key
    test edx, edx
    jz .Lnot_seed
    mov qword ptr [rip + CONFIG + Config.seed], rax
    jmp .Lout
.Lnot_seed:
    cmp r12, TEST_EQ_LEN
    jb .Lunknown
    mov rdi, rbx
    lea rsi, [rip + key_test_eq]
    mov edx, TEST_EQ_LEN
    call mem_eq
    test eax, eax
    jz .Lunknown
    mov qword ptr [rip + CONFIG + Config.test], 1   ; test=SUBSTRING
    lea rax, [rbx + TEST_EQ_LEN]
    mov qword ptr [rip + CONFIG + Config.test_filter_ptr], rax
    lea rax, [r12 - TEST_EQ_LEN]
    mov qword ptr [rip + CONFIG + Config.test_filter_len], rax
    jmp .Lout
.Lunknown:
    ; remembered and reported after the banner, so the banner stays the first line
    mov rax, qword ptr [rip + unknown_count]
    cmp rax, MAX_UNKNOWN_WORDS
    jae .Lout
    shl rax, 4                                  ; * CmdlineWord.SIZE
    lea rcx, [rip + unknown_words]
    mov qword ptr [rcx + rax + CmdlineWord.ptr], rbx
    mov qword ptr [rcx + rax + CmdlineWord.len], r12
    inc qword ptr [rip + unknown_count]
.Lout:
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; value_key(word, word_len, key, key_len) -> rax = N, rdx = 1 when the word is KEY followed by a
; decimal N (digits only, below 2^64); rdx = 0 otherwise
.function value_key, aetherion::config::value_key
value_key:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    mov r13, rcx
    cmp r12, r13
    jb .Lno
    mov rsi, rdx
    mov rdx, r13
    call mem_eq
    test eax, eax
    jz .Lno
    lea rdi, [rbx + r13]
    mov rsi, r12
    sub rsi, r13
    call parse_u64
    jmp .Lout
.Lno:
    xor eax, eax
    xor edx, edx
.Lout:
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; parse_u64(ptr, len) -> rax = the decimal number, rdx = 1; rdx = 0 (and rax 0) when the text is
; empty, has a character other than a digit, or overflows 64 bits
.function parse_u64, aetherion::config::parse_u64
parse_u64:
    push rbp
    mov rbp, rsp
    xor eax, eax
    test rsi, rsi
    jz .Lbad
    xor ecx, ecx
    mov r9d, 10
.Ldigit:
    cmp rcx, rsi
    jae .Lgood
    movzx r8d, byte ptr [rdi + rcx]
    sub r8d, '0'
    cmp r8d, 9
    ja .Lbad
    mul r9
    jc .Lbad                                    ; value * 10 overflows
    add rax, r8
    jc .Lbad
    inc rcx
    jmp .Ldigit
.Lgood:
    mov edx, 1
    pop rbp
    ret
.Lbad:
    xor eax, eax
    xor edx, edx
    pop rbp
    ret
.endfunction

.function report_unknown_keys, aetherion::config::report_unknown
report_unknown_keys:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    xor ebx, ebx
.Lnext:
    cmp rbx, qword ptr [rip + unknown_count]
    jae .Ldone
    lea rdi, [rip + unknown_before]
    call serial_write_cstr
    mov rax, rbx
    shl rax, 4                                  ; * CmdlineWord.SIZE
    lea r12, [rip + unknown_words]
    mov rdi, qword ptr [r12 + rax + CmdlineWord.ptr]
    mov rsi, qword ptr [r12 + rax + CmdlineWord.len]
    call serial_write_str
    lea rdi, [rip + unknown_after]
    call serial_write_cstr
    inc rbx
    jmp .Lnext
.Ldone:
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; With `verbose`: the memory map the firmware (or QEMU) gave us, and the RAM size.
.function print_memory_map, aetherion::print_memory_map
print_memory_map:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    lea rdi, [rip + map_title]
    call serial_write_cstr
    mov rax, qword ptr [rip + START_INFO]
    mov rbx, qword ptr [rax + HvmStartInfo.memmap_paddr]
    mov r12d, dword ptr [rax + HvmStartInfo.memmap_entries]
    xor r14d, r14d                              ; RAM bytes
.Lentry:
    test r12, r12
    jz .Ldone
    lea rdi, [rip + map_open]
    call serial_write_cstr
    mov rdi, qword ptr [rbx + HvmMemmapEntry.addr]
    call write_hex
    lea rdi, [rip + map_comma]
    call serial_write_cstr
    mov rdi, qword ptr [rbx + HvmMemmapEntry.addr]
    add rdi, qword ptr [rbx + HvmMemmapEntry.size]
    call write_hex
    lea rdi, [rip + map_type]
    call serial_write_cstr
    mov edi, dword ptr [rbx + HvmMemmapEntry.type]
    call write_u64
    call write_newline
    cmp dword ptr [rbx + HvmMemmapEntry.type], E820_RAM
    jne .Lnot_ram
    add r14, qword ptr [rbx + HvmMemmapEntry.size]
.Lnot_ram:
    add rbx, HvmMemmapEntry.SIZE
    dec r12
    jmp .Lentry
.Ldone:
    lea rdi, [rip + ram_title]
    call serial_write_cstr
    mov rdi, r14
    shr rdi, 10
    call write_u64
    lea rdi, [rip + kib]
    call serial_write_cstr
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
banner: .asciz "Aetherion OS\n"
cmdline_prefix: .asciz "cmdline: "
no_cmdline: .asciz "(none)"
key_bump: .ascii "allocator=bump"
key_linked_list: .ascii "allocator=linked_list"
key_test: .ascii "test"
key_bench: .ascii "bench"
key_verbose: .ascii "verbose"
key_quiet: .ascii "quiet"
key_oom: .ascii "demo=oom"
key_interrupts: .ascii "demo=interrupts"
key_deadlock: .ascii "demo=deadlock"
key_test_eq: .ascii "test="
.Ltest_eq_end:
.equ TEST_EQ_LEN, .Ltest_eq_end - key_test_eq
key_churn_eq: .ascii "churn="
.Lchurn_eq_end:
.equ CHURN_EQ_LEN, .Lchurn_eq_end - key_churn_eq
key_seed_eq: .ascii "seed="
.Lseed_eq_end:
.equ SEED_EQ_LEN, .Lseed_eq_end - key_seed_eq
.align 8
config_keys:                                    ; ConfigKey records
    .quad key_bump, 14, Config.allocator, KIND_BUMP
    .quad key_linked_list, 21, Config.allocator, KIND_LINKED_LIST
    .quad key_test, 4, Config.test, 1
    .quad key_bench, 5, Config.bench, 1
    .quad key_verbose, 7, Config.verbose, 1
    .quad key_quiet, 5, Config.quiet, 1
    .quad key_oom, 8, Config.demo_oom, 1
    .quad key_interrupts, 15, Config.demo_interrupts, 1
    .quad key_deadlock, 13, Config.demo_deadlock, 1
    .quad 0, 0, 0, 0
unknown_before: .asciz "unknown command-line key '"
unknown_after: .asciz "' ignored\n"
map_title: .asciz "memory map:\n"
map_open: .asciz "  ["
map_comma: .asciz ", "
map_type: .asciz ") type "
ram_title: .asciz "RAM: "
kib: .asciz " KiB\n"

.section data
.object START_INFO, aetherion::START_INFO
START_INFO: .quad 0
.endobject
.object CONFIG, aetherion::config::CONFIG
CONFIG:
    .quad KIND_LINKED_LIST                      ; allocator
    .zero Config.seed - Config.test
    .quad 1                                     ; seed
    .zero Config.SIZE - Config.demo_interrupts
.endobject
unknown_count: .quad 0

.section bss
unknown_words: .zero MAX_UNKNOWN_WORDS * CmdlineWord.SIZE
