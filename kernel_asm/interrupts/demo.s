; demo=interrupts: a breakpoint, a page fault that maps a page, TICK_DEMO_TICKS timer ticks
; with an allocation in each. demo=deadlock: the timer handler allocates while the main code
; holds the allocator's lock with interrupts enabled, the classic single-CPU deadlock: on a
; CPU it hangs; the emulator stops it with a `deadlock` report.

.equ TICK_DEMO_TICKS, 20
.equ DEMAND_DEMO_VALUE, 42
.equ DEADLOCK_WORK, 100000000                   ; loop turns the lock is held for: many ticks' worth

.section text
.function interrupts_demo, aetherion::demo::interrupts
interrupts_demo:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    lea rdi, [rip + interrupts_title]
    call serial_write_cstr
    int3
    lea rdi, [rip + breakpoint_done]
    call serial_write_cstr
    ; the page fault: the first touch of the demand window
    mov rbx, DEMAND_START
    mov qword ptr [rbx + 8], DEMAND_DEMO_VALUE
    lea rdi, [rip + demand_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbx + 8]
    call write_u64
    lea rdi, [rip + demand_at]
    call serial_write_cstr
    lea rdi, [rbx + 8]
    call write_hex
    call write_newline
    ; the ticks
    mov edi, TICK_DEMO_TICKS
    call record_ticks
    mov rbx, rax
    lea rdi, [rip + ticks_text]
    call serial_write_cstr
    mov rdi, qword ptr [rbx + TickLog.ticks]
    call write_u64
    lea rdi, [rip + ticks_at]
    call serial_write_cstr
    mov edi, TIMER_HZ
    call write_u64
    lea rdi, [rip + ticks_records]
    call serial_write_cstr
    mov rdi, rbx
    call tick_log_check
    lea rdi, [rip + in_order_text]
    test eax, eax
    jnz .Lorder
    lea rdi, [rip + out_of_order_text]
.Lorder:
    call serial_write_cstr
    lea rdi, [rip + live_used]
    call print_heap_used
    mov rdi, rbx
    call tick_log_drop
    lea rdi, [rip + dropped_used]
    call print_heap_used
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction

; print_heap_used(label): LABEL, then heap_stats()'s `used` and " bytes"
.function print_heap_used, aetherion::demo::print_heap_used
print_heap_used:
    push rbp
    mov rbp, rsp
    sub rsp, 32
.equ .Lstats, -32                               ; HeapStats
    call serial_write_cstr
    lea rdi, [rbp + .Lstats]
    call heap_stats
    mov rdi, qword ptr [rbp + .Lstats + HeapStats.used]
    call write_u64
    lea rdi, [rip + bytes_text]
    call serial_write_cstr
    add rsp, 32
    pop rbp
    ret
.endfunction

.function deadlock_demo, aetherion::demo::deadlock
deadlock_demo:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    lea rdi, [rip + deadlock_title]
    call serial_write_cstr
    mov edi, 1
    call tick_log_arm
    mov rbx, rax
    call timer_start
    call lock_keeping_interrupts
    sti
    mov ecx, DEADLOCK_WORK
.Lwork:                                         ; the timer's handler allocates in here and spins
    dec ecx
    jnz .Lwork
    cli
    lea rdi, [rip + no_deadlock_text]           ; not reached on a single CPU
    call serial_write_cstr
    mov edi, EXIT_FAILURE
    call exit
.endfunction

; The allocator's lock taken as a spin::Mutex takes it: no without_interrupts
.function lock_keeping_interrupts, aetherion::demo::deadlock::lock_keeping_interrupts
lock_keeping_interrupts:
    push rbp
    mov rbp, rsp
    lea rdx, [rip + ALLOCATOR + LockedAllocator.lock]
.Ltry:
    mov eax, 1
    xchg qword ptr [rdx], rax
    test rax, rax
    jnz .Ltry
    pop rbp
    ret
.endfunction

.section rodata
interrupts_title: .asciz "demo=interrupts: a breakpoint, a page fault that maps a page, 20 timer ticks\n"
breakpoint_done: .asciz "It did not crash: the breakpoint handler returned\n"
demand_text: .asciz "demand page: read back "
demand_at: .asciz " at "
ticks_text: .asciz "timer: "
ticks_at: .asciz " ticks at "
ticks_records: .asciz " Hz, each recorded by the handler in a TickRecord on the heap: "
in_order_text: .asciz "in order\n"
out_of_order_text: .asciz "OUT OF ORDER\n"
live_used: .asciz "with the records live, Used: "
dropped_used: .asciz "after dropping them, Used: "
deadlock_title: .asciz "demo=deadlock: the main code holds the allocator's lock with interrupts enabled; the timer handler allocates\n"
no_deadlock_text: .asciz "demo=deadlock: no deadlock (the handler never ran?)\n"
