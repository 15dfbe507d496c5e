; The timer handler and the heap-allocated TickLog it records into: with a log armed, each
; tick up to the log's limit allocates a TickRecord (Box::new from interrupt context). That is
; safe only because every allocator lock is taken with interrupts disabled (allocator/mod.s);
; demo=deadlock shows what happens when it is not.

.struct TickLog
    limit: .quad                                ; ticks to record; later ones only count in TICKS
    ticks: .quad                                ; ticks recorded
    head: .quad                                 ; the newest TickRecord, a singly linked list
.endstruct

.struct TickRecord
    tick: .quad                                 ; 1 for the log's first tick
    next: .quad
.endstruct

.section text
; timer(frame): count, record into the armed log, end of interrupt
.function timer_handler, aetherion::interrupts::timer::handler
timer_handler:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    inc qword ptr [rip + TICKS]
    mov rbx, qword ptr [rip + TICK_LOG]
    test rbx, rbx
    jz .Leoi
    mov rax, qword ptr [rbx + TickLog.ticks]
    cmp rax, qword ptr [rbx + TickLog.limit]
    jae .Leoi
    mov edi, TickRecord.SIZE
    mov esi, 8
    call __rust_alloc
    test rax, rax
    jnz .Lrecord
    mov edi, TickRecord.SIZE
    mov esi, 8
    call __rust_alloc_error_handler
.Lrecord:
    mov rcx, qword ptr [rbx + TickLog.ticks]
    inc rcx
    mov qword ptr [rbx + TickLog.ticks], rcx
    mov qword ptr [rax + TickRecord.tick], rcx
    mov rcx, qword ptr [rbx + TickLog.head]
    mov qword ptr [rax + TickRecord.next], rcx
    mov qword ptr [rbx + TickLog.head], rax
.Leoi:
    mov edi, VECTOR_TIMER
    call pic_end_of_interrupt
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; tick_log_arm(limit) -> the new TickLog, on the heap, now TICK_LOG
.function tick_log_arm, aetherion::interrupts::timer::TickLog::arm
tick_log_arm:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    mov edi, TickLog.SIZE
    mov esi, 8
    call box_new_bytes
    mov qword ptr [rax + TickLog.limit], rbx
    mov qword ptr [rax + TickLog.ticks], 0
    mov qword ptr [rax + TickLog.head], 0
    mov qword ptr [rip + TICK_LOG], rax
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; wait_ticks(log): idle in hlt until the log has recorded its limit. `sti; hlt` cannot lose a
; wake-up: an interrupt is held for the instruction after sti.
.function wait_ticks, aetherion::interrupts::timer::wait_ticks
wait_ticks:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    call interrupts_disable
    mov qword ptr [rbp - 16], rax
.Lcheck:
    mov rax, qword ptr [rbx + TickLog.ticks]
    cmp rax, qword ptr [rbx + TickLog.limit]
    jae .Ldone
    sti
    hlt
    cli
    jmp .Lcheck
.Ldone:
    mov rdi, qword ptr [rbp - 16]
    call interrupts_restore
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; tick_log_disarm() -> the log, no longer TICK_LOG (the handler cannot be in it: IF is off here)
.function tick_log_disarm, aetherion::interrupts::timer::TickLog::disarm
tick_log_disarm:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call interrupts_disable
    mov rdi, rax
    mov rbx, qword ptr [rip + TICK_LOG]
    mov qword ptr [rip + TICK_LOG], 0
    call interrupts_restore
    mov rax, rbx
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; record_ticks(limit) -> a TickLog of `limit` ticks: armed, the timer on, idle until it is full,
; the timer off and the log disarmed (the caller drops it)
.function record_ticks, aetherion::interrupts::timer::record_ticks
record_ticks:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    call tick_log_arm
    mov rbx, rax
    call timer_start
    mov rdi, rbx
    call wait_ticks
    call timer_stop
    call tick_log_disarm
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction

; tick_log_check(log) -> 1 when its records count down from `ticks` to 1, one each
.function tick_log_check, aetherion::interrupts::timer::TickLog::check
tick_log_check:
    push rbp
    mov rbp, rsp
    mov rcx, qword ptr [rdi + TickLog.ticks]
    mov rax, qword ptr [rdi + TickLog.head]
.Lrecord:
    test rax, rax
    jz .Lend
    cmp qword ptr [rax + TickRecord.tick], rcx
    jne .Lbad
    dec rcx
    mov rax, qword ptr [rax + TickRecord.next]
    jmp .Lrecord
.Lend:
    xor eax, eax
    test rcx, rcx
    sete al
    pop rbp
    ret
.Lbad:
    xor eax, eax
    pop rbp
    ret
.endfunction

; tick_log_drop(log): its records, then the log
.function tick_log_drop, aetherion::interrupts::timer::TickLog::drop
tick_log_drop:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov r12, rdi
    mov rbx, qword ptr [r12 + TickLog.head]
.Lrecord:
    test rbx, rbx
    jz .Llog
    mov rdi, rbx
    mov rbx, qword ptr [rbx + TickRecord.next]
    mov esi, TickRecord.SIZE
    mov edx, 8
    call box_drop
    jmp .Lrecord
.Llog:
    mov rdi, r12
    mov esi, TickLog.SIZE
    mov edx, 8
    call box_drop
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

.section data
.object TICKS, aetherion::interrupts::timer::TICKS
TICKS: .quad 0                                  ; every timer interrupt taken
.endobject
.object TICK_LOG, aetherion::interrupts::timer::TICK_LOG
TICK_LOG: .quad 0                               ; the armed TickLog, or 0
.endobject
