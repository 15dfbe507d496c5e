; The linked-list allocator: first fit over a singly linked free list, as blog_os's
; allocator: a block is at least 16 bytes (a ListNode) and its size a multiple of its
; alignment (at least 8); the part of a region after an allocation is split off when it can
; hold a ListNode; the part before an aligned start is not given back; dealloc pushes the
; block at the head; no coalescing.

; A free block's header (emulator/layout.py: LIST_NODE_SIZE_OFFSET, LIST_NODE_NEXT_OFFSET)
.struct ListNode
    size: .quad                                 ; the block's size, this header included
    next: .quad                                 ; the next free block, or 0
.endstruct

.struct LinkedListAllocator
    head: ListNode                              ; a dummy node: head.next is the first free block
.endstruct

.equ MIN_BLOCK, ListNode.SIZE
.equ NODE_ALIGN, 8

.section text
; init(self, heap_start, heap_size)
.function ll_init, aetherion::allocator::linked_list::LinkedListAllocator::init
ll_init:
    push rbp
    mov rbp, rsp
    mov qword ptr [rdi + LinkedListAllocator.head.size], 0
    mov qword ptr [rdi + LinkedListAllocator.head.next], 0
    call ll_add_free_region
    pop rbp
    ret
.endfunction

; add_free_region(self, addr, size): push a node at the head
.function ll_add_free_region, aetherion::allocator::linked_list::LinkedListAllocator::add_free_region
ll_add_free_region:
    push rbp
    mov rbp, rsp
    mov qword ptr [rsi + ListNode.size], rdx
    mov rax, qword ptr [rdi + LinkedListAllocator.head.next]
    mov qword ptr [rsi + ListNode.next], rax
    mov qword ptr [rdi + LinkedListAllocator.head.next], rsi
    pop rbp
    ret
.endfunction

; size_align(size, align) -> rax = block size, rdx = block alignment
.function ll_size_align, aetherion::allocator::linked_list::LinkedListAllocator::size_align
ll_size_align:
    push rbp
    mov rbp, rsp
    mov rdx, rsi
    mov eax, NODE_ALIGN
    cmp rdx, rax
    cmovb rdx, rax                              ; align = max(align, align_of ListNode)
    lea rax, [rdi + rdx - 1]
    mov rcx, rdx
    neg rcx
    and rax, rcx                                ; pad_to_align
    mov ecx, MIN_BLOCK
    cmp rax, rcx
    cmovb rax, rcx
    pop rbp
    ret
.endfunction

; alloc_from_region(region, size, align) -> rax = aligned start, or 0 if the block does not fit
.function ll_alloc_from_region, aetherion::allocator::linked_list::LinkedListAllocator::alloc_from_region
ll_alloc_from_region:
    push rbp
    mov rbp, rsp
    mov rax, rdi
    add rax, rdx
    jc .Lno
    dec rax
    neg rdx
    and rax, rdx                                ; alloc_start
    mov rcx, rax
    add rcx, rsi
    jc .Lno                                     ; alloc_end
    mov r8, rdi
    add r8, qword ptr [rdi + ListNode.size]     ; region end
    cmp rcx, r8
    ja .Lno
    sub r8, rcx                                 ; excess
    jz .Lyes
    cmp r8, MIN_BLOCK
    jb .Lno                                     ; the rest could not hold a ListNode
.Lyes:
    pop rbp
    ret
.Lno:
    xor eax, eax
    pop rbp
    ret
.endfunction

; alloc(self, size, align) -> pointer or 0
.function ll_alloc, aetherion::allocator::linked_list::LinkedListAllocator::alloc
ll_alloc:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov rbx, rdi
    mov rdi, rsi
    mov rsi, rdx
    call ll_size_align
    mov r12, rax                                ; size
    mov r13, rdx                                ; align
    mov r14, rbx                                ; current node (the head is a ListNode too)
.Lfind:
    mov r15, qword ptr [r14 + ListNode.next]    ; region = current.next
    test r15, r15
    jz .Lnone
    mov rdi, r15
    mov rsi, r12
    mov rdx, r13
    call ll_alloc_from_region
    test rax, rax
    jnz .Lfound
    mov r14, r15
    jmp .Lfind
.Lfound:
    mov rcx, qword ptr [r15 + ListNode.next]
    mov qword ptr [r14 + ListNode.next], rcx    ; unlink the region
    lea rsi, [rax + r12]                        ; alloc_end
    mov rdx, r15
    add rdx, qword ptr [r15 + ListNode.size]
    sub rdx, rsi                                ; excess
    jz .Ldone
    mov r12, rax
    mov rdi, rbx
    call ll_add_free_region
    mov rax, r12
    jmp .Ldone
.Lnone:
    xor eax, eax
.Ldone:
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; dealloc(self, ptr, size, align): the block goes back at the head of the list
.function ll_dealloc, aetherion::allocator::linked_list::LinkedListAllocator::dealloc
ll_dealloc:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    mov r12, rsi
    mov rdi, rdx
    mov rsi, rcx
    call ll_size_align
    mov rdi, rbx
    mov rsi, r12
    mov rdx, rax
    call ll_add_free_region
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; free_bytes(self) -> rax = sum of free block sizes, rdx = number of free blocks,
; rcx = the largest free block
.function ll_free_bytes, aetherion::allocator::linked_list::LinkedListAllocator::free_bytes
ll_free_bytes:
    push rbp
    mov rbp, rsp
    xor eax, eax
    xor edx, edx
    xor ecx, ecx
    mov r8, qword ptr [rdi + LinkedListAllocator.head.next]
.Lnode:
    test r8, r8
    jz .Lout
    mov r9, qword ptr [r8 + ListNode.size]
    add rax, r9
    inc rdx
    cmp r9, rcx
    cmova rcx, r9
    mov r8, qword ptr [r8 + ListNode.next]
    jmp .Lnode
.Lout:
    pop rbp
    ret
.endfunction
