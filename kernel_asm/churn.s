; The churn workload (cmdline `churn=N`, optional `seed=S`): N calls into the global allocator's
; `__rust_*` entry points, with varied sizes and alignments, for benchmarks and tracing. At the
; end one line: `churn: calls=N allocs=A deallocs=D reallocs=R zeroed=Z peak_live=P checksum=0xH`.
;
; A table of 512 slots {ptr, size, align, tag}; a xorshift64 PRNG, its state splitmix64(S).
; The linked-list allocator never coalesces, and its first fit over a LIFO list finds the heap's
; untouched tail right behind the block freed last: a block that a request does not fit exactly
; is split for good, or buried behind that tail. Random sizes freed and asked for independently
; exhaust the 1 MiB heap within about 9,000 calls. So the workload, after filling 256 slots
; ("warm-up"), works in chains that hand each freed block on to a request it fits exactly:
;
;   dealloc a random live block: it is now the pending block (its block size and address).
;   Then, while a block is pending, a random slot (probing on to the next slot that qualifies):
;     an empty slot: __rust_alloc (or, one time in four, __rust_alloc_zeroed) of a random
;       alignment and a random size whose linked-list block is exactly the pending block:
;       the chain ends;
;     a live block whose alignment the pending block can take: __rust_realloc to such a size
;       (a grow or a shrink); its old block becomes the pending block.
;
; Sizes and alignments are drawn as the warm-up draws them (sizes: 70 % 1-64, 27 % 65-1024,
; 3 % 1025-8192; alignments 1, 2, 4, 8, 16, 32, 64 and, one time in 64, 4096), then fitted to
; the pending block: the alignment is lowered to what its address and size allow, the size
; chosen among those that round to it. Under the linked-list allocator every call then reuses
; the block just freed and the free list stays the heap's tail plus at most one block, for any
; N. Under the bump allocator the calls are chosen the same way (nothing is reused there): the
; workload stops early, before the final frees, once heap_stats() shows less than 16 KiB free
; (more than one request can take: 8 KiB and 4 KiB of alignment padding), and the line's calls=
; says how many it made. Every call counts as one of N, the final frees too: the run ends so
; that exactly N calls free every block (N = 1 makes none).
;
; Checks (a failure panics): every pointer is non-null and aligned; a zeroed block's first and
; last bytes are 0; each block carries its slot's tag byte at its first and last byte, checked
; before its dealloc or realloc; a realloc keeps the first byte and, when it grows, the old last
; byte. The checksum (FNV-1a over 64-bit words) mixes every call's size and every returned
; pointer's offset from the heap start; peak_live is the most requested bytes live at once.

.equ CHURN_SLOTS, 512                           ; a power of two: slot = (random + k) & (CHURN_SLOTS - 1)
.equ CHURN_TARGET_LIVE, 256                     ; live blocks after the warm-up
.equ CHURN_BUMP_RESERVE, 16384                  ; bump: stop before the free heap falls below this
.equ CHURN_FNV_BASIS, 0xCBF29CE484222325
.equ CHURN_FNV_PRIME, 0x100000001B3

; churn_probe's modes
.equ PROBE_EMPTY, 0
.equ PROBE_FULL, 1
.equ PROBE_EMPTY_OR_FITS, 2                     ; an empty slot, or a live block the pending block can take
.equ PROBE_FITS, 3                              ; a live block the pending block can take

.struct ChurnSlot
    ptr: .quad                                  ; 0: the slot is empty
    size: .quad
    align: .quad
    tag: .quad                                  ; the byte at the block's first and last byte
.endstruct

.struct Churn
    rng: .quad                                  ; xorshift64 state
    budget: .quad                               ; N
    made: .quad                                 ; calls made
    live: .quad                                 ; live blocks
    live_bytes: .quad                           ; their requested sizes
    peak: .quad                                 ; the most live_bytes after any call
    allocs: .quad
    deallocs: .quad
    reallocs: .quad
    zeroed: .quad
    checksum: .quad
    pending_ptr: .quad                          ; the block freed last, not yet reused; 0: none
    pending_block: .quad                        ; its linked-list block size
.endstruct

.section text
; splitmix64(seed) -> the PRNG's first state (never 0)
.function churn_seed, aetherion::churn::Rng::new
churn_seed:
    push rbp
    mov rbp, rsp
    mov rax, 0x9E3779B97F4A7C15
    add rax, rdi
    mov rdx, rax
    shr rdx, 30
    xor rax, rdx
    mov rcx, 0xBF58476D1CE4E5B9
    imul rax, rcx
    mov rdx, rax
    shr rdx, 27
    xor rax, rdx
    mov rcx, 0x94D049BB133111EB
    imul rax, rcx
    mov rdx, rax
    shr rdx, 31
    xor rax, rdx
    mov ecx, 1
    test rax, rax
    cmovz rax, rcx                              ; xorshift64 must not start at 0
    pop rbp
    ret
.endfunction

; next() -> the next xorshift64 (13, 7, 17) value
.function churn_next, aetherion::churn::Rng::next
churn_next:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + CHURN + Churn.rng]
    mov rdx, rax
    shl rdx, 13
    xor rax, rdx
    mov rdx, rax
    shr rdx, 7
    xor rax, rdx
    mov rdx, rax
    shl rdx, 17
    xor rax, rdx
    mov qword ptr [rip + CHURN + Churn.rng], rax
    pop rbp
    ret
.endfunction

; mix(value): checksum = (checksum ^ value) * FNV prime
.function churn_mix, aetherion::churn::Checksum::mix
churn_mix:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + CHURN + Churn.checksum]
    xor rax, rdi
    mov rcx, CHURN_FNV_PRIME
    imul rax, rcx
    mov qword ptr [rip + CHURN + Churn.checksum], rax
    pop rbp
    ret
.endfunction

; random_align(r) -> bits 8-13 of r: 0 gives 4096, k > 0 gives 1 << (k % 7)
.function churn_align, aetherion::churn::random_align
churn_align:
    push rbp
    mov rbp, rsp
    mov rax, rdi
    shr rax, 8
    and eax, 63
    jz .Lpage
    xor edx, edx
    mov ecx, 7
    div rcx
    mov ecx, edx
    mov eax, 1
    shl rax, cl
    pop rbp
    ret
.Lpage:
    mov eax, 4096
    pop rbp
    ret
.endfunction

; random_layout() -> rax = size, rdx = align, from one draw r: bits 0-5 pick the band
; (0-44 small 1-64, 45-61 medium 65-1024, 62-63 large 1025-8192), r >> 16 the size in it
.function churn_layout, aetherion::churn::random_layout
churn_layout:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    call churn_next
    mov rbx, rax
    mov rdi, rax
    call churn_align
    mov r12, rax
    mov ecx, ebx
    and ecx, 63
    mov rax, rbx
    shr rax, 16
    cmp ecx, 45
    jb .Lsmall
    cmp ecx, 62
    jb .Lmedium
    xor edx, edx
    mov ecx, 8192 - 1024
    div rcx
    lea rax, [rdx + 1025]
    jmp .Lout
.Lmedium:
    xor edx, edx
    mov ecx, 1024 - 64
    div rcx
    lea rax, [rdx + 65]
    jmp .Lout
.Lsmall:
    and eax, 63
    inc rax
.Lout:
    mov rdx, r12
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; limit() -> the largest block alignment the pending block can serve exactly: the lowest set bit
; of its address and of its size, at least 8
.function churn_limit, aetherion::churn::pending_limit
churn_limit:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + CHURN + Churn.pending_ptr]
    mov rcx, rax
    neg rcx
    and rax, rcx
    mov rdx, qword ptr [rip + CHURN + Churn.pending_block]
    mov rcx, rdx
    neg rcx
    and rdx, rcx
    cmp rax, rdx
    cmova rax, rdx
    mov ecx, NODE_ALIGN
    cmp rax, rcx
    cmovb rax, rcx
    pop rbp
    ret
.endfunction

; clamp(align, limit) -> align, or when it is above limit: 64 for 4096, halved until it is not
.function churn_clamp, aetherion::churn::clamp_align
churn_clamp:
    push rbp
    mov rbp, rsp
    mov rax, rdi
    cmp rax, rsi
    jbe .Lout
    cmp rax, 4096
    jne .Lhalve
    mov eax, 64
.Lhalve:
    cmp rax, rsi
    jbe .Lout
    shr rax, 1
    jmp .Lhalve
.Lout:
    pop rbp
    ret
.endfunction

; fit(align) -> a random size whose linked-list block, at this alignment, is the pending block:
; in [C - max(align, 8) + 1, C] for the block size C (in [1, 16] when C is the minimum block)
.function churn_fit, aetherion::churn::fit_size
churn_fit:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, qword ptr [rip + CHURN + Churn.pending_block]
    mov eax, NODE_ALIGN
    cmp rdi, rax
    cmovb rdi, rax
    mov r12, rbx
    sub r12, rdi
    inc r12                                     ; lowest size
    mov eax, 1
    cmp rbx, MIN_BLOCK
    cmove r12, rax
    call churn_next
    mov rcx, rbx
    sub rcx, r12
    inc rcx                                     ; how many sizes
    xor edx, edx
    div rcx
    lea rax, [rdx + r12]
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; slot(index) -> its ChurnSlot
.function churn_slot, aetherion::churn::slot
churn_slot:
    push rbp
    mov rbp, rsp
    mov rax, rdi
    shl rax, 5                                  ; * ChurnSlot.SIZE
    lea rcx, [rip + CHURN_TABLE]
    add rax, rcx
    pop rbp
    ret
.endfunction

; probe(r, mode, limit) -> the first slot from r % 512 on (wrapping) that mode accepts, or -1
.function churn_probe, aetherion::churn::probe
churn_probe:
    push rbp
    mov rbp, rsp
    xor r8d, r8d
    lea r9, [rip + CHURN_TABLE]
.Lslot:
    cmp r8, CHURN_SLOTS
    jae .Lnone
    lea rax, [rdi + r8]
    and eax, CHURN_SLOTS - 1
    mov rcx, rax
    shl rcx, 5                                  ; * ChurnSlot.SIZE
    cmp qword ptr [r9 + rcx + ChurnSlot.ptr], 0
    je .Lempty
    cmp esi, PROBE_FULL
    je .Lfound
    cmp esi, PROBE_EMPTY
    je .Lskip
    mov r10, qword ptr [r9 + rcx + ChurnSlot.align]
    mov r11d, NODE_ALIGN
    cmp r10, r11
    cmovb r10, r11                              ; its block alignment
    cmp r10, rdx
    jbe .Lfound
    jmp .Lskip
.Lempty:
    cmp esi, PROBE_EMPTY
    je .Lfound
    cmp esi, PROBE_EMPTY_OR_FITS
    je .Lfound
.Lskip:
    inc r8
    jmp .Lslot
.Lnone:
    mov rax, -1
.Lfound:
    pop rbp
    ret
.endfunction

; check_pointer(ptr, align): panics unless ptr is non-null and aligned
.function churn_check_pointer, aetherion::churn::check_pointer
churn_check_pointer:
    push rbp
    mov rbp, rsp
    test rdi, rdi
    jz .Lnull
    lea rax, [rsi - 1]
    test rdi, rax
    jnz .Lmisaligned
    pop rbp
    ret
.Lnull:
    lea rdi, [rip + null_text]
    mov esi, NULL_TEXT_LEN
    call_here panic, rdx
.Lmisaligned:
    mov rsi, rdi
    lea rdi, [rip + pointer_text]
    lea rdx, [rip + misaligned_text]
    call_here panic_address, rcx
.endfunction

; check_tag(slot): panics unless the block's first and last bytes are the slot's tag
.function churn_check_tag, aetherion::churn::check_tag
churn_check_tag:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rdi + ChurnSlot.ptr]
    mov rcx, qword ptr [rdi + ChurnSlot.tag]
    cmp byte ptr [rax], cl
    jne .Lbad
    mov rdx, qword ptr [rdi + ChurnSlot.size]
    cmp byte ptr [rax + rdx - 1], cl
    jne .Lbad
    pop rbp
    ret
.Lbad:
    mov rsi, rax
    lea rdi, [rip + block_text]
    lea rdx, [rip + pattern_text]
    call_here panic_address, rcx
.endfunction

; write_tag(slot): the slot's tag into the block's first and last bytes
.function churn_write_tag, aetherion::churn::write_tag
churn_write_tag:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rdi + ChurnSlot.ptr]
    mov rcx, qword ptr [rdi + ChurnSlot.tag]
    mov rdx, qword ptr [rdi + ChurnSlot.size]
    mov byte ptr [rax + rdx - 1], cl
    mov byte ptr [rax], cl
    pop rbp
    ret
.endfunction

; counted(): one more call made; the peak of live bytes
.function churn_counted, aetherion::churn::counted
churn_counted:
    push rbp
    mov rbp, rsp
    inc qword ptr [rip + CHURN + Churn.made]
    mov rax, qword ptr [rip + CHURN + Churn.live_bytes]
    cmp rax, qword ptr [rip + CHURN + Churn.peak]
    jbe .Lout
    mov qword ptr [rip + CHURN + Churn.peak], rax
.Lout:
    pop rbp
    ret
.endfunction

; alloc_block(slot_index, size, align, zeroed): a new block for an empty slot
.function churn_alloc, aetherion::churn::alloc_block
churn_alloc:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    mov r13, rdx
    mov r14, rcx
    mov rdi, r12
    mov rsi, r13
    test r14, r14
    jnz .Lzeroed
    call __rust_alloc
    mov r15, rax
    inc qword ptr [rip + CHURN + Churn.allocs]
    mov rdi, r15
    mov rsi, r13
    call churn_check_pointer
    jmp .Lkeep
.Lzeroed:
    call __rust_alloc_zeroed
    mov r15, rax
    inc qword ptr [rip + CHURN + Churn.zeroed]
    mov rdi, r15
    mov rsi, r13
    call churn_check_pointer
    cmp byte ptr [r15], 0
    jne .Lnot_zero
    cmp byte ptr [r15 + r12 - 1], 0
    jne .Lnot_zero
.Lkeep:
    ; tag = (slot ^ seed ^ calls made) & 0xFF | 1
    mov rax, rbx
    xor rax, qword ptr [rip + CONFIG + Config.seed]
    xor rax, qword ptr [rip + CHURN + Churn.made]
    and eax, 0xFF
    or eax, 1
    mov r14, rax
    mov rdi, rbx
    call churn_slot
    mov rbx, rax
    mov qword ptr [rbx + ChurnSlot.ptr], r15
    mov qword ptr [rbx + ChurnSlot.size], r12
    mov qword ptr [rbx + ChurnSlot.align], r13
    mov qword ptr [rbx + ChurnSlot.tag], r14
    mov rdi, rbx
    call churn_write_tag
    inc qword ptr [rip + CHURN + Churn.live]
    add qword ptr [rip + CHURN + Churn.live_bytes], r12
    mov rdi, r12
    call churn_mix
    mov rdi, r15
    mov rax, HEAP_START
    sub rdi, rax
    call churn_mix
    call churn_counted
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.Lnot_zero:
    mov rsi, r15
    lea rdi, [rip + zeroed_text]
    lea rdx, [rip + not_zero_text]
    call_here panic_address, rcx
.endfunction

; realloc_block(slot_index, new_size) -> rax = the old block's address, rdx = its linked-list
; block size (the new pending block)
.function churn_realloc, aetherion::churn::realloc_block
churn_realloc:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov r12, rsi
    call churn_slot
    mov rbx, rax
    mov rdi, rbx
    call churn_check_tag
    mov r13, qword ptr [rbx + ChurnSlot.ptr]    ; the old block
    mov rdi, r13
    mov rsi, qword ptr [rbx + ChurnSlot.size]
    mov rdx, qword ptr [rbx + ChurnSlot.align]
    mov rcx, r12
    call __rust_realloc
    mov r14, rax
    mov rdi, r14
    mov rsi, qword ptr [rbx + ChurnSlot.align]
    call churn_check_pointer
    ; the contents moved: the first byte, and the old last byte when the block grew
    mov rcx, qword ptr [rbx + ChurnSlot.tag]
    cmp byte ptr [r14], cl
    jne .Llost
    mov rdx, qword ptr [rbx + ChurnSlot.size]
    cmp r12, rdx
    jb .Lmoved
    cmp byte ptr [r14 + rdx - 1], cl
    jne .Llost
.Lmoved:
    mov r15, qword ptr [rbx + ChurnSlot.size]   ; the old size
    mov qword ptr [rbx + ChurnSlot.ptr], r14
    mov qword ptr [rbx + ChurnSlot.size], r12
    mov rdi, rbx
    call churn_write_tag
    inc qword ptr [rip + CHURN + Churn.reallocs]
    add qword ptr [rip + CHURN + Churn.live_bytes], r12
    sub qword ptr [rip + CHURN + Churn.live_bytes], r15
    mov rdi, r12
    call churn_mix
    mov rdi, r14
    mov rax, HEAP_START
    sub rdi, rax
    call churn_mix
    call churn_counted
    mov rdi, r15
    mov rsi, qword ptr [rbx + ChurnSlot.align]
    call ll_size_align
    mov rdx, rax
    mov rax, r13
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.Llost:
    mov rsi, r14
    lea rdi, [rip + realloc_text]
    lea rdx, [rip + contents_text]
    call_here panic_address, rcx
.endfunction

; forget(slot): the slot's block was freed: empty the slot, count the dealloc
.function churn_forget, aetherion::churn::forget
churn_forget:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    mov qword ptr [rbx + ChurnSlot.ptr], 0
    dec qword ptr [rip + CHURN + Churn.live]
    mov rax, qword ptr [rbx + ChurnSlot.size]
    sub qword ptr [rip + CHURN + Churn.live_bytes], rax
    inc qword ptr [rip + CHURN + Churn.deallocs]
    mov rdi, rax
    call churn_mix
    call churn_counted
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; dealloc_block(slot_index) -> rax = the block's address, rdx = its linked-list block size
.function churn_dealloc, aetherion::churn::dealloc_block
churn_dealloc:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    call churn_slot
    mov rbx, rax
    mov rdi, rbx
    call churn_check_tag
    mov r12, qword ptr [rbx + ChurnSlot.ptr]
    mov rdi, r12
    mov rsi, qword ptr [rbx + ChurnSlot.size]
    mov rdx, qword ptr [rbx + ChurnSlot.align]
    call __rust_dealloc
    mov rdi, rbx
    call churn_forget
    mov rdi, qword ptr [rbx + ChurnSlot.size]
    mov rsi, qword ptr [rbx + ChurnSlot.align]
    call ll_size_align
    mov rdx, rax
    mov rax, r12
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; set_pending(ptr, block_size)
.function churn_set_pending, aetherion::churn::set_pending
churn_set_pending:
    push rbp
    mov rbp, rsp
    mov qword ptr [rip + CHURN + Churn.pending_ptr], rdi
    mov qword ptr [rip + CHURN + Churn.pending_block], rsi
    pop rbp
    ret
.endfunction

; run(): the workload of CONFIG.churn_calls calls with CONFIG.seed, then its line
.function churn_run, aetherion::churn::run
churn_run:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    push r15
    sub rsp, 40
.equ .Lstats, -80                               ; HeapStats
    mov rdi, qword ptr [rip + CONFIG + Config.seed]
    call churn_seed
    mov qword ptr [rip + CHURN + Churn.rng], rax
    mov rax, qword ptr [rip + CONFIG + Config.churn_calls]
    mov qword ptr [rip + CHURN + Churn.budget], rax
    mov rax, CHURN_FNV_BASIS
    mov qword ptr [rip + CHURN + Churn.checksum], rax
.Lstep:
    mov rax, qword ptr [rip + CHURN + Churn.budget]
    sub rax, qword ptr [rip + CHURN + Churn.made]   ; calls left
    cmp rax, qword ptr [rip + CHURN + Churn.live]
    jbe .Lfinish                                ; just enough left to free every block
    sub rax, qword ptr [rip + CHURN + Churn.live]
    mov r12, rax                                ; calls to spare beyond the final frees
    cmp qword ptr [rip + CONFIG + Config.allocator], KIND_BUMP
    jne .Lheap_ok
    lea rdi, [rbp + .Lstats]
    call heap_stats
    cmp qword ptr [rbp + .Lstats + HeapStats.free], CHURN_BUMP_RESERVE
    jb .Lfinish                                 ; bump: the heap is nearly used up
.Lheap_ok:
    cmp qword ptr [rip + CHURN + Churn.pending_ptr], 0
    je .Lno_pending
    call churn_limit
    mov r13, rax
    cmp r12, 1
    jne .Lchain
    ; one call to spare: a realloc into the pending block
    call churn_next
    mov rdi, rax
    mov esi, PROBE_FITS
    mov rdx, r13
    call churn_probe
    mov rbx, rax
    cmp rbx, -1
    jne .Lrealloc_into_pending
    xor edi, edi
    xor esi, esi
    call churn_set_pending                      ; no block fits it: forget it
    jmp .Lstep
.Lchain:
    call churn_next
    mov r14, rax
    mov rdi, rax
    mov esi, PROBE_EMPTY_OR_FITS
    mov rdx, r13
    call churn_probe
    mov rbx, rax
    mov rdi, rbx
    call churn_slot
    cmp qword ptr [rax + ChurnSlot.ptr], 0
    jne .Lrealloc_into_pending
    ; an empty slot: a new block, exactly the pending one
    mov rdi, r14
    call churn_align
    mov rdi, rax
    mov rsi, r13
    call churn_clamp
    mov r15, rax
    mov rdi, r15
    call churn_fit
    mov r13, rax
    xor edi, edi
    xor esi, esi
    call churn_set_pending
    xor ecx, ecx
    test r14d, 3 << 20
    sete cl                                     ; one in four zeroed
    mov rdi, rbx
    mov rsi, r13
    mov rdx, r15
    call churn_alloc
    jmp .Lstep
.Lrealloc_into_pending:
    mov rdi, rbx
    call churn_slot
    mov rdi, qword ptr [rax + ChurnSlot.align]
    call churn_fit
    mov rdi, rbx
    mov rsi, rax
    call churn_realloc
    mov rdi, rax
    mov rsi, rdx
    call churn_set_pending
    jmp .Lstep
.Lno_pending:
    cmp qword ptr [rip + CHURN + Churn.live], CHURN_TARGET_LIVE
    jae .Lsteady
    cmp r12, 2
    jb .Lsteady
    ; warm-up: a random layout into an empty slot
    call churn_next
    mov r14, rax
    mov rdi, rax
    mov esi, PROBE_EMPTY
    call churn_probe
    mov rbx, rax
    call churn_layout
    xor ecx, ecx
    test r14d, 3 << 20
    sete cl
    mov rdi, rbx
    mov rsi, rax
    call churn_alloc
    jmp .Lstep
.Lsteady:
    cmp r12, 1
    jne .Lstart_chain
    ; one call to spare and nothing pending: a realloc of a random block to a random size
    cmp qword ptr [rip + CHURN + Churn.live], 0
    je .Lfinish
    call churn_next
    mov rdi, rax
    mov esi, PROBE_FULL
    call churn_probe
    mov rbx, rax
    call churn_layout
    mov rdi, rbx
    mov rsi, rax
    call churn_realloc
    jmp .Lstep
.Lstart_chain:
    call churn_next
    mov rdi, rax
    mov esi, PROBE_FULL
    call churn_probe
    mov rdi, rax
    call churn_dealloc
    mov rdi, rax
    mov rsi, rdx
    call churn_set_pending
    jmp .Lstep
.Lfinish:
    ; free every block left, in slot order
    xor r12d, r12d
.Lfree:
    cmp r12, CHURN_SLOTS
    jae .Lreport
    mov rdi, r12
    call churn_slot
    mov rbx, rax
    cmp qword ptr [rbx + ChurnSlot.ptr], 0
    je .Lfree_next
    mov rdi, rbx
    call churn_check_tag
    mov rdi, qword ptr [rbx + ChurnSlot.ptr]
    mov rsi, qword ptr [rbx + ChurnSlot.size]
    mov rdx, qword ptr [rbx + ChurnSlot.align]
    call __rust_dealloc
    mov rdi, rbx
    call churn_forget
.Lfree_next:
    inc r12
    jmp .Lfree
.Lreport:
    call churn_report
    add rsp, 40
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; report(): `churn: calls=… allocs=… deallocs=… reallocs=… zeroed=… peak_live=… checksum=0x…`
.function churn_report, aetherion::churn::report
churn_report:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    lea rbx, [rip + churn_fields]
.Lfield:
    mov rdi, qword ptr [rbx]
    test rdi, rdi
    jz .Lchecksum
    call serial_write_cstr
    mov rax, qword ptr [rbx + 8]
    lea rcx, [rip + CHURN]
    mov rdi, qword ptr [rcx + rax]
    call write_u64
    add rbx, 16
    jmp .Lfield
.Lchecksum:
    lea rdi, [rip + checksum_text]
    call serial_write_cstr
    mov rdi, qword ptr [rip + CHURN + Churn.checksum]
    call write_hex
    call write_newline
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section rodata
calls_text: .asciz "churn: calls="
allocs_text: .asciz " allocs="
deallocs_text: .asciz " deallocs="
reallocs_text: .asciz " reallocs="
zeroed_count_text: .asciz " zeroed="
peak_text: .asciz " peak_live="
checksum_text: .asciz " checksum="
null_text: .ascii "churn: the allocator returned a null pointer"
.Lnull_text_end:
.equ NULL_TEXT_LEN, .Lnull_text_end - null_text
pointer_text: .asciz "churn: pointer "
misaligned_text: .asciz " is not aligned as asked"
block_text: .asciz "churn: block "
pattern_text: .asciz " lost its tag byte (first or last byte overwritten)"
zeroed_text: .asciz "churn: zeroed block "
not_zero_text: .asciz " is not zeroed"
realloc_text: .asciz "churn: realloc to "
contents_text: .asciz " did not keep the block's contents"
.align 8
churn_fields:                                   ; (label, offset in Churn) of each count printed
    .quad calls_text, Churn.made
    .quad allocs_text, Churn.allocs
    .quad deallocs_text, Churn.deallocs
    .quad reallocs_text, Churn.reallocs
    .quad zeroed_count_text, Churn.zeroed
    .quad peak_text, Churn.peak
    .quad 0, 0

.section bss
.align 8
.object CHURN, aetherion::churn::STATE
CHURN: .zero Churn.SIZE
.endobject
.object CHURN_TABLE, aetherion::churn::SLOTS
CHURN_TABLE: .zero CHURN_SLOTS * ChurnSlot.SIZE
.endobject
