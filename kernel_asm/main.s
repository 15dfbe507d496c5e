; kmain: the kernel's Rust-style main, and the command line (DESIGN.md §4).

.equ START_INFO_CMDLINE, 24
.equ START_INFO_MEMMAP, 40
.equ START_INFO_MEMMAP_ENTRIES, 48

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
    cmp qword ptr [rip + CONFIG + 48], 0        ; quiet
    jne .Lbanner_done
    lea rdi, [rip + banner]
    call serial_write_cstr
    call print_cmdline
.Lbanner_done:
    call report_unknown_keys
    cmp qword ptr [rip + CONFIG + 40], 0        ; verbose
    je .Lmemory
    call print_memory_map
.Lmemory:
    mov rdi, qword ptr [rip + START_INFO]
    call frame_init
    call paging_init
    mov rdi, qword ptr [rip + CONFIG]
    call allocator_init
    cmp qword ptr [rip + CONFIG + 8], 0         ; test
    je .Lnot_test
    call run_tests
    jmp .Lexit
.Lnot_test:
    cmp qword ptr [rip + CONFIG + 32], 0        ; bench
    je .Ldemo
    call bench_run
    mov eax, 0x10
    jmp .Lexit
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
    mov rax, qword ptr [rax + START_INFO_CMDLINE]
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
    mov qword ptr [rip + CONFIG], 1             ; allocator=linked_list unless told otherwise
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

; handle_word(ptr, len): one key of the command line into CONFIG (config_keys), or test=SUBSTRING
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
    mov rcx, qword ptr [r13 + 8]                ; key length; 0 ends the table
    test rcx, rcx
    jz .Lnot_a_key
    cmp rcx, r12
    jne .Lnext_key
    mov rdi, rbx
    mov rsi, qword ptr [r13]
    mov rdx, rcx
    call mem_eq
    test eax, eax
    jz .Lnext_key
    mov rax, qword ptr [r13 + 16]               ; the CONFIG field
    mov rcx, qword ptr [r13 + 24]               ; its value
    lea rdx, [rip + CONFIG]
    mov qword ptr [rdx + rax], rcx
    jmp .Lout
.Lnext_key:
    add r13, 32
    jmp .Lkey
.Lnot_a_key:
    cmp r12, 5
    jb .Lunknown
    mov rdi, rbx
    lea rsi, [rip + key_test_eq]
    mov edx, 5
    call mem_eq
    test eax, eax
    jz .Lunknown
    mov qword ptr [rip + CONFIG + 8], 1         ; test=SUBSTRING
    lea rax, [rbx + 5]
    mov qword ptr [rip + CONFIG + 16], rax
    lea rax, [r12 - 5]
    mov qword ptr [rip + CONFIG + 24], rax
    jmp .Lout
.Lunknown:
    ; remembered and reported after the banner, so the banner stays the first line
    mov rax, qword ptr [rip + unknown_count]
    cmp rax, 16
    jae .Lout
    shl rax, 4
    lea rcx, [rip + unknown_words]
    mov qword ptr [rcx + rax], rbx
    mov qword ptr [rcx + rax + 8], r12
    inc qword ptr [rip + unknown_count]
.Lout:
    add rsp, 8
    pop r13
    pop r12
    pop rbx
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
    shl rax, 4
    lea r12, [rip + unknown_words]
    mov rdi, qword ptr [r12 + rax]
    mov rsi, qword ptr [r12 + rax + 8]
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
    mov rbx, qword ptr [rax + START_INFO_MEMMAP]
    mov r12d, dword ptr [rax + START_INFO_MEMMAP_ENTRIES]
    xor r14d, r14d                              ; RAM bytes
.Lentry:
    test r12, r12
    jz .Ldone
    lea rdi, [rip + map_open]
    call serial_write_cstr
    mov rdi, qword ptr [rbx]
    call write_hex
    lea rdi, [rip + map_comma]
    call serial_write_cstr
    mov rdi, qword ptr [rbx]
    add rdi, qword ptr [rbx + 8]
    call write_hex
    lea rdi, [rip + map_type]
    call serial_write_cstr
    mov edi, dword ptr [rbx + 16]
    call write_u64
    call write_newline
    cmp dword ptr [rbx + 16], 1
    jne .Lnot_ram
    add r14, qword ptr [rbx + 8]
.Lnot_ram:
    add rbx, 24
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
key_test_eq: .ascii "test="
.align 8
; {key, key length, CONFIG field offset, value}
config_keys:
    .quad key_bump, 14, 0, 0
    .quad key_linked_list, 21, 0, 1
    .quad key_test, 4, 8, 1
    .quad key_bench, 5, 32, 1
    .quad key_verbose, 7, 40, 1
    .quad key_quiet, 5, 48, 1
    .quad key_oom, 8, 56, 1
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
; CONFIG: allocator @0 (0 bump, 1 linked_list), test @8, test_filter_ptr @16, test_filter_len @24,
; bench @32, verbose @40, quiet @48, demo_oom @56
.object CONFIG, aetherion::config::CONFIG
CONFIG: .quad 1, 0, 0, 0, 0, 0, 0, 0
.endobject
unknown_count: .quad 0

.section bss
unknown_words: .zero 256
