; Vec<T>, String and Box as Rust's alloc crate grows and frees them. Generic over T by
; (elem_size, elem_align) arguments. Everything allocates through the `__rust_*` entry
; points, so a trace of this kernel reads like a trace of a Rust kernel.

; Vec<T> (a RawVec's pointer and capacity, then the length); String is a Vec<u8>
.struct Vec
    ptr: .quad                                  ; dangling (= the alignment) while cap is 0
    cap: .quad                                  ; in elements
    len: .quad
.endstruct

.section text
; vec_new(vec, elem_align): empty, dangling pointer (= the alignment), no allocation
.function vec_new, alloc::vec::Vec::new
vec_new:
    push rbp
    mov rbp, rsp
    mov qword ptr [rdi + Vec.ptr], rsi
    mov qword ptr [rdi + Vec.cap], 0
    mov qword ptr [rdi + Vec.len], 0
    pop rbp
    ret
.endfunction

; grow_amortized(vec, required_cap, elem_size, elem_align): RawVec's rule,
; cap = max(cap * 2, required, MIN_NON_ZERO_CAP) with 8 for 1-byte, 4 for <= 1024-byte, else 1
.function raw_vec_grow, alloc::raw_vec::RawVec::grow_amortized
raw_vec_grow:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov rbx, rdi
    mov r12, rdx                                ; elem_size
    mov r13, rcx                                ; elem_align
    mov rax, qword ptr [rbx + Vec.cap]
    add rax, rax
    cmp rax, rsi
    cmovb rax, rsi
    mov ecx, 8
    cmp r12, 1
    je .Lmin
    mov ecx, 4
    cmp r12, 1024
    jbe .Lmin
    mov ecx, 1
.Lmin:
    cmp rax, rcx
    cmovb rax, rcx
    mov r14, rax                                ; new capacity
    imul rax, r12
    mov r15, rax                                ; new size in bytes
    mov rcx, qword ptr [rbx + Vec.cap]
    test rcx, rcx
    jnz .Lrealloc
    mov rdi, r15
    mov rsi, r13
    call __rust_alloc
    jmp .Lcheck
.Lrealloc:
    mov rdi, qword ptr [rbx + Vec.ptr]
    mov rsi, rcx
    imul rsi, r12
    mov rdx, r13
    mov rcx, r15
    call __rust_realloc
.Lcheck:
    test rax, rax
    jnz .Lstore
    mov rdi, r15
    mov rsi, r13
    call __rust_alloc_error_handler
.Lstore:
    mov qword ptr [rbx + Vec.ptr], rax
    mov qword ptr [rbx + Vec.cap], r14
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; reserve(vec, additional, elem_size, elem_align)
.function vec_reserve, alloc::vec::Vec::reserve
vec_reserve:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rdi + Vec.cap]
    sub rax, qword ptr [rdi + Vec.len]
    cmp rax, rsi
    jae .Lenough
    add rsi, qword ptr [rdi + Vec.len]
    call raw_vec_grow
.Lenough:
    pop rbp
    ret
.endfunction

; define_vec_push NAME, T, SIZE, WIDTH, REG: NAME(vec, value) is Vec<T>::push for a T of SIZE
; bytes (its alignment too), stored as a WIDTH from REG (r12's part that holds a T)
.macro define_vec_push name, type, size, width, reg
.function \name, alloc::vec::Vec::push_\type
\name:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    mov r12, rsi
    mov rax, qword ptr [rbx + Vec.len]
    cmp rax, qword ptr [rbx + Vec.cap]
    jne .Lroom
    lea rsi, [rax + 1]
    mov edx, \size
    mov ecx, \size
    call raw_vec_grow
.Lroom:
    mov rax, qword ptr [rbx + Vec.ptr]
    mov rcx, qword ptr [rbx + Vec.len]
    mov \width ptr [rax + rcx * \size], \reg
    inc qword ptr [rbx + Vec.len]
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction
.endm

; push_i32(vec, value): Vec<i32>::push
define_vec_push vec_push_i32, i32, 4, dword, r12d

; push_u64(vec, value): Vec<u64>::push
define_vec_push vec_push_u64, u64, 8, qword, r12

; drop(vec, elem_size, elem_align): give the buffer back with its exact layout
.function vec_drop, core::ptr::drop_in_place::Vec
vec_drop:
    push rbp
    mov rbp, rsp
    mov rcx, qword ptr [rdi + Vec.cap]
    test rcx, rcx
    jz .Lnothing
    mov rax, rdi
    mov rdi, qword ptr [rax + Vec.ptr]
    imul rsi, rcx
    call __rust_dealloc
.Lnothing:
    pop rbp
    ret
.endfunction

; string_from(string, ptr, len): String::from, exactly len bytes (none for "")
.function string_from, alloc::string::String::from
string_from:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov qword ptr [rbx + Vec.ptr], 1
    mov qword ptr [rbx + Vec.cap], 0
    mov qword ptr [rbx + Vec.len], 0
    test r13, r13
    jz .Lout
    mov rdi, r13
    mov esi, 1
    call __rust_alloc
    test rax, rax
    jnz .Lcopy
    mov rdi, r13
    mov esi, 1
    call __rust_alloc_error_handler
.Lcopy:
    mov qword ptr [rbx + Vec.ptr], rax
    mov qword ptr [rbx + Vec.cap], r13
    mov qword ptr [rbx + Vec.len], r13
    mov rdi, rax
    mov rsi, r12
    mov rcx, r13
    rep movsb
.Lout:
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; push_str(string, ptr, len): grows like Vec<u8>
.function string_push_str, alloc::string::String::push_str
string_push_str:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov rsi, rdx
    mov edx, 1
    mov ecx, 1
    call vec_reserve
    mov rdi, qword ptr [rbx + Vec.ptr]
    add rdi, qword ptr [rbx + Vec.len]
    mov rsi, r12
    mov rcx, r13
    rep movsb
    add qword ptr [rbx + Vec.len], r13
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; box_new_i32(value) -> Box<i32>: the value's own size and alignment (4, 4)
.function box_new_i32, alloc::boxed::Box::new_i32
box_new_i32:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    mov edi, 4
    mov esi, 4
    call __rust_alloc
    test rax, rax
    jnz .Lstore
    mov edi, 4
    mov esi, 4
    call __rust_alloc_error_handler
.Lstore:
    mov dword ptr [rax], ebx
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; box_new_bytes(size, align) -> Box<[u8; size]>, its contents uninitialised (as Box::new_uninit)
.function box_new_bytes, alloc::boxed::Box::new_bytes
box_new_bytes:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    mov r12, rsi
    call __rust_alloc
    test rax, rax
    jnz .Lok
    mov rdi, rbx
    mov rsi, r12
    call __rust_alloc_error_handler
.Lok:
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; box_drop(ptr, size, align)
.function box_drop, core::ptr::drop_in_place::Box
box_drop:
    push rbp
    mov rbp, rsp
    call __rust_dealloc
    pop rbp
    ret
.endfunction
