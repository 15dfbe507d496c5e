; The boot demo (default command line): the specification's four usage examples.
;
;   let mut vec = Vec::new(); vec.push(1); vec.push(2); vec.push(3);   // Vec<i32>
;   let mut s = String::from("Aetherion"); s.push_str(" OS");
;   let boxed_value = Box::new(42);
;   heap_stats()
; then the locals drop in reverse order. `demo=oom` asks for more than the heap instead.

.section text
.function demo_run, aetherion::demo::run
demo_run:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    sub rsp, 96                                 ; the locals, below the saved rbx and r12:
.equ .Lstats, -112                              ; HeapStats
.equ .Lvec, -80                                 ; Vec<i32>
.equ .Lstring, -56                              ; String
    cmp qword ptr [rip + CONFIG + Config.demo_oom], 0
    je .Lnormal
    lea rdi, [rip + oom_text]
    call serial_write_cstr
    mov edi, HEAP_SIZE * 2
    mov esi, 8
    call box_new_bytes                          ; never returns: the allocation-failure panic
.Lnormal:
    lea rdi, [rip + heap_text]
    call serial_write_cstr
    lea rdi, [rip + bump_name]
    cmp qword ptr [rip + CONFIG + Config.allocator], KIND_BUMP
    je .Lname
    lea rdi, [rip + linked_list_name]
.Lname:
    call serial_write_cstr
    lea rdi, [rip + allocator_text]
    call serial_write_cstr
    ; Example 1: Vec
    lea rdi, [rbp + .Lvec]
    mov esi, 4
    call vec_new
    lea rdi, [rbp + .Lvec]
    mov esi, 1
    call vec_push_i32
    lea rdi, [rbp + .Lvec]
    mov esi, 2
    call vec_push_i32
    lea rdi, [rbp + .Lvec]
    mov esi, 3
    call vec_push_i32
    lea rdi, [rip + vec_text]
    call serial_write_cstr
    xor ebx, ebx
.Lelement:
    cmp rbx, qword ptr [rbp + .Lvec + Vec.len]
    jae .Lelements_done
    test rbx, rbx
    jz .Lfirst
    lea rdi, [rip + comma]
    call serial_write_cstr
.Lfirst:
    mov rax, qword ptr [rbp + .Lvec + Vec.ptr]
    mov edi, dword ptr [rax + rbx * 4]
    call write_u64
    inc rbx
    jmp .Lelement
.Lelements_done:
    lea rdi, [rip + len_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbp + .Lvec + Vec.len]
    call write_u64
    lea rdi, [rip + close_paren]
    call serial_write_cstr
    ; Example 2: String
    lea rdi, [rbp + .Lstring]
    lea rsi, [rip + aetherion]
    mov edx, 9
    call string_from
    lea rdi, [rbp + .Lstring]
    lea rsi, [rip + os_suffix]
    mov edx, 3
    call string_push_str
    lea rdi, [rip + string_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbp + .Lstring + Vec.ptr]
    mov rsi, qword ptr [rbp + .Lstring + Vec.len]
    call serial_write_str
    lea rdi, [rip + equals_text]
    call serial_write_cstr
    lea rdi, [rip + false_text]
    cmp qword ptr [rbp + .Lstring + Vec.len], 12
    jne .Lverdict
    mov rdi, qword ptr [rbp + .Lstring + Vec.ptr]
    lea rsi, [rip + expected]
    mov edx, 12
    call mem_eq
    lea rdi, [rip + false_text]
    test eax, eax
    jz .Lverdict
    lea rdi, [rip + true_text]
.Lverdict:
    call serial_write_cstr
    ; Example 3: Box
    mov edi, 42
    call box_new_i32
    mov r12, rax
    lea rdi, [rip + box_text]
    call serial_write_cstr
    mov edi, dword ptr [r12]
    call write_u64
    call write_newline
    ; Example 4: heap statistics
    lea rdi, [rbp + .Lstats]
    call heap_stats
    lea rdi, [rip + size_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbp + .Lstats + HeapStats.heap_size]
    call write_u64
    lea rdi, [rip + bytes_text]
    call serial_write_cstr
    lea rdi, [rip + used_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbp + .Lstats + HeapStats.used]
    call write_u64
    lea rdi, [rip + bytes_text]
    call serial_write_cstr
    lea rdi, [rip + free_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbp + .Lstats + HeapStats.free]
    call write_u64
    lea rdi, [rip + bytes_text]
    call serial_write_cstr
    ; drops, in reverse order of declaration
    mov rdi, r12
    mov esi, 4
    mov edx, 4
    call box_drop
    lea rdi, [rbp + .Lstring]
    mov esi, 1
    mov edx, 1
    call vec_drop
    lea rdi, [rbp + .Lvec]
    mov esi, 4
    mov edx, 4
    call vec_drop
    add rsp, 96
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
oom_text: .asciz "demo=oom: Box::new of 2 MiB on a 1 MiB heap\n"
heap_text: .asciz "heap: "
bump_name: .asciz "bump"
linked_list_name: .asciz "linked_list"
allocator_text: .asciz " allocator, 1 MiB at 0x444444440000\n"
vec_text: .asciz "vec: ["
comma: .asciz ", "
len_text: .asciz "] len="
close_paren: .asciz "\n"
aetherion: .ascii "Aetherion"
os_suffix: .ascii " OS"
expected: .ascii "Aetherion OS"
string_text: .asciz "string: \""
equals_text: .asciz "\" == \"Aetherion OS\": "
true_text: .asciz "true\n"
false_text: .asciz "false\n"
box_text: .asciz "box: "
size_text: .asciz "Heap size: "
used_text: .asciz "Used: "
free_text: .asciz "Free: "
bytes_text: .asciz " bytes\n"
