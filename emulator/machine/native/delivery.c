/* Exceptions and interrupts delivered through the guest's own IDT (or, in real mode, its IVT).
 *
 * Unicorn raises exceptions exactly as QEMU does — the checks, CR2, the error code, the fault or
 * trap return address, the escalation to #DF and the triple fault (check_exception) — but then
 * calls UC_HOOK_INTR (UC_HOOK_INSN_INVALID for #UD) instead of delivering them. These hooks
 * deliver them with QEMU's own x86_cpu_do_interrupt (seg_helper.c, exported by libunicorn): gate
 * types, DPL checks for `int n`, IST stacks, the 16-byte stack alignment, error codes, `iretq`'s
 * frame, in every CPU mode. A fault during delivery is raised by QEMU from inside that call and
 * comes back here as the next exception (#NP, #GP, then #DF), as on a CPU; a fault delivering #DF
 * stops the CPU (QEMU's triple fault), which Python sees as a delivery that never finished.
 *
 * A guest that cannot handle an exception at all (no present gate for it, nor for any of #NP, #GP
 * and #DF that a failed delivery leads to) is stopped instead, with the exception left for the
 * machine's fault report. So is the return of a call made from the host (its fetch at the null
 * return address faults). Part of the cycle model's extension: the model is told (cm_finish) that
 * the block stopped at the exception, so the instructions after it are not counted. */
#include <stdint.h>
#include <string.h>

typedef void uc_engine;
typedef int (*uc_reg_rw_t)(uc_engine *, int, void *);
typedef int (*uc_vmem_read_t)(uc_engine *, uint64_t, int, void *, size_t);
typedef int (*uc_emu_stop_t)(uc_engine *);
typedef void *(*get_cpu_t)(uc_engine *, int);
typedef void (*do_interrupt_t)(void *);
typedef void (*raise_exception_t)(void *, int);
typedef void (*raise_interrupt_t)(void *, int, int, int, int);
typedef int (*device_cb_t)(uint64_t);
typedef int (*msr_cb_t)(uint32_t msr, int write, uint64_t *value); /* nonzero: the device owns the MSR */
typedef void (*cpuid_t)(void *, uint32_t, uint32_t, uint32_t *, uint32_t *, uint32_t *, uint32_t *);

void cm_finish(void *model, uint64_t stop_pc);
int cm_stamp(void *model, uint64_t pc, uint64_t *insns, uint64_t *mc);
uint64_t cm_millicycles(void *model);

#define UC_PROT_READ 1
#define UC_X86_REG_CR0 50
#define UC_X86_REG_CR2 52
#define UC_X86_REG_CS 11
#define UC_X86_REG_EIP 26
#define UC_X86_REG_EFLAGS 25
#define UC_X86_REG_RIP 41
#define UC_X86_REG_IDTR 242
#define UC_X86_REG_MSR 248
#define MSR_EFER 0xC0000080u
#define EFER_SCE 1u
#define EFER_LMA (1u << 10)

enum { STOP_NONE, STOP_HOST_RETURN, STOP_UNHANDLED, STOP_SYSCALL, STOP_DEADLOCK };
#define NO_VECTOR UINT64_MAX
#define NEVER UINT64_MAX
#define RFLAGS_IF 0x200u
#define ENV_EIP 16            /* CPUX86State: regs[16], then eip (target/i386/cpu.h) */
#define ENV_HFLAGS_AT 176     /* ... eip, eflags, cc_dst, cc_src, cc_src2, cc_op, df, then hflags */
#define HF_INHIBIT_IRQ 8u     /* the instruction after `sti` or `mov ss` takes no interrupt */
#define HF_CPL_MASK 3u        /* hflags: the current privilege level */
#define HF_LMA (1u << 14)     /* hflags: long mode active */
#define RECENT 8
#define CHAIN 8
#define NEST 16
#define SPINS 4
#define SPIN_LIMIT 20000 /* visits of one block with the whole register state unchanged */
#define UC_X86_REG_RBP 36
#define UC_X86_REG_RSP 44

typedef struct { uint16_t selector; uint64_t base; uint32_t limit; uint32_t flags; } uc_x86_mmr;
typedef struct { uint32_t rid; uint64_t value; } uc_x86_msr;

typedef struct { uint64_t vector, pc, cr2, insns; } dl_exception;
typedef struct { uint64_t vector, rip, rsp, rbp; } dl_handler; /* a handler running; rip..rbp: what it interrupted */
typedef struct { uint64_t address, state, count; } dl_spin;   /* a block seen in a handler with IF clear */

typedef struct {
    void *model;
    uc_reg_rw_t reg_read;
    uc_vmem_read_t vmem_read;
    uc_emu_stop_t emu_stop;
    get_cpu_t get_cpu;
    do_interrupt_t do_interrupt;
    raise_exception_t raise_exception;
    uint64_t (*instructions)(void *model);
    int bits;                          /* the instance's mode: 16 or 64 */
    void *cpu;                         /* the instance's CPU object (QEMU's CPUState) */
    size_t env_offset;                 /* CPUX86State within it (found at set-up) */
    int calling;                       /* a host call is running: its return faults at call_return */
    uint64_t call_return;
    /* why the hooks stopped the CPU (read by Python after emu_start) */
    int stop;
    dl_exception stopped;
    /* the delivery in progress: a fault during it comes back as the next entry */
    int delivering;
    dl_exception chain[CHAIN];
    int nchain;
    /* device interrupts (the machine's interrupt controller, in Python, called only at events) */
    raise_interrupt_t raise_interrupt;
    device_cb_t on_time;               /* the clock reached next_event: devices catch up */
    device_cb_t acknowledge;           /* the CPU takes the interrupt: its vector, or -1 */
    uint64_t next_event;               /* millicycles; NEVER: no device has one */
    int irq_line;                      /* the interrupt controller's output to the CPU */
    int check_now;                     /* call on_time at the next block whatever the clock says */
    cpuid_t cpuid;                     /* QEMU's own CPUID (cpu_x86_cpuid) */
    msr_cb_t msr;                      /* the device MSRs (IA32_TSC_DEADLINE); 0: none (stock Unicorn) */
    /* handlers running, innermost last (64-bit): each ends when its iretq restores the interrupted RSP */
    dl_handler nest[NEST];
    int depth;
    dl_spin spins[SPINS];              /* loops of the innermost handler while IF is clear */
    int next_spin;
    /* what was handled */
    uint64_t delivered[256];
    uint64_t exceptions;               /* CPU exceptions (vectors 0-31) handled */
    dl_exception recent[RECENT];       /* ring: the last RECENT of them (a timer's ticks never push them out) */
} dl_state;

static uint64_t reg(dl_state *d, uc_engine *uc, int id) {
    uint64_t v = 0;
    d->reg_read(uc, id, &v);
    return v;
}

/* The program counter as a linear address, the way the model and the fault report count it. */
static uint64_t linear_pc(dl_state *d, uc_engine *uc) {
    if (d->bits == 64) return reg(d, uc, UC_X86_REG_RIP);
    uint64_t pc = reg(d, uc, UC_X86_REG_EIP) & 0xFFFFFFFFu;
    if (!(reg(d, uc, UC_X86_REG_CR0) & 1)) pc += (reg(d, uc, UC_X86_REG_CS) & 0xFFFF) << 4;
    return pc;
}

/* Is there a gate (or, in real mode, a non-zero IVT entry) for `vector`? */
static int gate_present(dl_state *d, uc_engine *uc, uint64_t vector) {
    uc_x86_mmr idtr;
    memset(&idtr, 0, sizeof idtr);
    d->reg_read(uc, UC_X86_REG_IDTR, &idtr);
    uint64_t cr0 = reg(d, uc, UC_X86_REG_CR0);
    uint8_t gate[16];
    if (!(cr0 & 1)) { /* real mode: 4-byte IVT entries; an empty one is taken as no handler */
        if (vector * 4 + 3 > idtr.limit || d->vmem_read(uc, idtr.base + vector * 4, UC_PROT_READ, gate, 4)) return 0;
        return gate[0] | gate[1] | gate[2] | gate[3];
    }
    uc_x86_msr efer = {MSR_EFER, 0};
    d->reg_read(uc, UC_X86_REG_MSR, &efer);
    uint64_t size = efer.value & EFER_LMA ? 16 : 8;
    if (vector * size + size - 1 > idtr.limit) return 0;
    if (d->vmem_read(uc, idtr.base + vector * size, UC_PROT_READ, gate, (size_t)size)) return 0;
    return (gate[5] & 0x80) != 0; /* P */
}

/* Could delivering `vector` end anywhere but in a triple fault? A failed delivery goes on to #NP
 * (a not-present gate), #GP (past the limit, a bad type or DPL) or #DF. */
static int can_handle(dl_state *d, uc_engine *uc, uint64_t vector) {
    return gate_present(d, uc, vector) || gate_present(d, uc, 8) || gate_present(d, uc, 11) || gate_present(d, uc, 13);
}

static void stop_unhandled(dl_state *d, uc_engine *uc, uint64_t vector, int why) {
    if (d->stop) return;
    d->stop = why;
    d->stopped = (dl_exception){vector, linear_pc(d, uc), reg(d, uc, UC_X86_REG_CR2), d->instructions(d->model)};
    d->emu_stop(uc);
}

static void enter_handler(dl_state *d, uc_engine *uc, uint64_t vector, uint64_t pc);

/* Deliver the exception Unicorn is raising (cs->exception_index) through the guest's gate. */
static void deliver(dl_state *d, uc_engine *uc, uint64_t vector) {
    uint64_t pc = linear_pc(d, uc);
    cm_finish(d->model, pc); /* the block stopped here: what follows the exception did not run */
    dl_exception e = {vector, pc, vector == 14 ? reg(d, uc, UC_X86_REG_CR2) : 0, d->instructions(d->model)};
    if (!d->delivering) d->nchain = 0;
    if (d->nchain < CHAIN) d->chain[d->nchain++] = e;
    d->delivering = 1;
    d->do_interrupt(d->cpu); /* may not return: a fault while delivering comes back here */
    d->delivering = 0;
    if (d->bits == 64) enter_handler(d, uc, vector, pc);
    d->delivered[vector & 255]++;
    if (vector < 32) d->recent[d->exceptions++ % RECENT] = e;
}

/* The handler just entered: its frame (below an error code, if the CPU pushed one) holds the RIP
 * we know and the RSP its iretq will restore. In long mode the frame is 8-byte words and always
 * holds RSP; in legacy protected mode it is 4-byte words, with ESP and SS only when the handler
 * runs at another privilege level: otherwise its iret leaves ESP just above EIP, CS and EFLAGS. */
static void enter_handler(dl_state *d, uc_engine *uc, uint64_t vector, uint64_t pc) {
    uint64_t rsp = reg(d, uc, UC_X86_REG_RSP), ret_rsp;
    uint32_t hflags = d->env_offset ? *(uint32_t *)((char *)d->cpu + d->env_offset + ENV_HFLAGS_AT) : HF_LMA;
    int at;
    if (hflags & HF_LMA) {
        uint64_t frame[6];
        if (d->vmem_read(uc, rsp, UC_PROT_READ, frame, sizeof frame)) return;
        at = frame[0] == pc ? 0 : frame[1] == pc ? 1 : -1; /* [error code,] RIP, CS, RFLAGS, RSP, SS */
        if (at < 0) return;
        ret_rsp = frame[at + 3];
    } else {
        uint32_t frame[5];
        if (d->vmem_read(uc, rsp, UC_PROT_READ, frame, sizeof frame)) return;
        at = frame[0] == (uint32_t)pc ? 0 : frame[1] == (uint32_t)pc ? 1 : -1; /* [error code,] EIP, CS, EFLAGS[, ESP, SS] */
        if (at < 0) return;
        int outer = (frame[at + 1] & 3) != (hflags & HF_CPL_MASK); /* the interrupted code's RPL is not the handler's CPL */
        ret_rsp = outer ? frame[at + 3] : rsp + 4 * (uint64_t)(at + 3);
    }
    if (d->depth == NEST) { memmove(d->nest, d->nest + 1, (NEST - 1) * sizeof *d->nest); d->depth--; }
    d->nest[d->depth++] = (dl_handler){vector, pc, ret_rsp, reg(d, uc, UC_X86_REG_RBP)};
    memset(d->spins, 0, sizeof d->spins);
}

static void hook_intr(uc_engine *uc, uint32_t intno, void *user) {
    dl_state *d = user;
    if (d->stop) return; /* the CPU is stopping: nothing more happens */
    if (d->calling && intno == 14 && linear_pc(d, uc) == d->call_return) {
        d->stop = STOP_HOST_RETURN; /* a function called from the host returned to our null address */
        d->emu_stop(uc);
        return;
    }
    if (!d->delivering && !can_handle(d, uc, intno)) { stop_unhandled(d, uc, intno, STOP_UNHANDLED); return; }
    deliver(d, uc, intno);
}

static int hook_invalid(uc_engine *uc, void *user) { /* #UD: Unicorn asks these hooks first */
    dl_state *d = user;
    if (d->stop) return 0;
    if (!d->delivering && !can_handle(d, uc, 6)) { stop_unhandled(d, uc, 6, STOP_UNHANDLED); return 0; }
    deliver(d, uc, 6);
    return 1;
}

/* `syscall`: Unicorn only calls hooks. With EFER.SCE clear a CPU raises #UD (raised here, from
 * inside the instruction's helper, where QEMU itself raises it); with it set, entering the
 * kernel at LSTAR is not modelled, and the machine stops with a report. */
static void hook_syscall(uc_engine *uc, void *user) {
    dl_state *d = user;
    if (d->stop) return;
    uc_x86_msr efer = {MSR_EFER, 0};
    d->reg_read(uc, UC_X86_REG_MSR, &efer);
    if (!(efer.value & EFER_SCE) && can_handle(d, uc, 6) && d->env_offset) {
        d->raise_exception((char *)d->cpu + d->env_offset, 6); /* does not return */
    }
    stop_unhandled(d, uc, efer.value & EFER_SCE ? NO_VECTOR : 6, STOP_SYSCALL); /* pc: the syscall */
}

/* ---- the interrupt-context deadlock ---------------------------------------------------------- */

/* A handler running with interrupts off is alone on the CPU: nothing else can change memory. If it
 * comes back to the same block again and again with every register unchanged, it waits for
 * something only the code it interrupted can do (release a lock, typically): it never ends. */
static int spinning(dl_state *d, uc_engine *uc, uint64_t address) {
    static const int gprs[] = {35, 37, 38, 40, 36, 39, 43, 44, 106, 107, 108, 109, 110, 111, 112, 113, 25};
    uint64_t state = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof gprs / sizeof *gprs; i++) state = (state ^ reg(d, uc, gprs[i])) * 1099511628211ull;
    for (int i = 0; i < SPINS; i++) {
        dl_spin *s = &d->spins[i];
        if (s->address != address) continue;
        if (s->state == state) return ++s->count >= SPIN_LIMIT;
        s->state = state;
        s->count = 0;
        return 0;
    }
    d->spins[d->next_spin] = (dl_spin){address, state, 0};
    d->next_spin = (d->next_spin + 1) % SPINS;
    return 0;
}

/* ---- device interrupts ------------------------------------------------------------------------ */

/* At the start of every block, before it runs: a device whose time has come catches up, and an
 * interrupt the controller asserts is taken if RFLAGS.IF allows it and the previous instruction
 * was not `sti` or `mov ss`. Taken here, between blocks, it interrupts at an exact, reproducible
 * instruction boundary: the block is not run and the interrupt returns to its first instruction.
 * It is raised as QEMU raises it (raise_interrupt, a jump back into the CPU loop) and delivered
 * by hook_intr like any exception. */
static void hook_block(uc_engine *uc, uint64_t address, uint32_t size, void *user) {
    dl_state *d = user;
    (void)size;
    if (d->stop) return;
    /* a handler has returned once the stack pointer is back where its iretq puts it (the handler
     * runs below its frame, or on an IST stack; it may change the frame's RIP, as fix-ups do) */
    if (d->depth) {
        uint64_t rsp = reg(d, uc, UC_X86_REG_RSP);
        while (d->depth && rsp == d->nest[d->depth - 1].rsp) d->depth--;
        if (d->depth && !(reg(d, uc, UC_X86_REG_EFLAGS) & RFLAGS_IF) && spinning(d, uc, address)) {
            d->stop = STOP_DEADLOCK;
            d->stopped = (dl_exception){d->nest[d->depth - 1].vector, address, 0, d->instructions(d->model)};
            d->emu_stop(uc);
            return;
        }
    }
    if (d->check_now || cm_millicycles(d->model) >= d->next_event) { /* the clock after this block: cheap */
        uint64_t insns, now;
        cm_stamp(d->model, address, &insns, &now); /* the clock before it */
        if (d->check_now || now >= d->next_event) {
            d->check_now = 0;
            d->on_time(now);
        }
    }
    if (!d->irq_line || !(reg(d, uc, UC_X86_REG_EFLAGS) & RFLAGS_IF)) return;
    char *env = (char *)d->cpu + d->env_offset;
    if (*(uint32_t *)(env + ENV_HFLAGS_AT) & HF_INHIBIT_IRQ) return;
    int vector = d->acknowledge(0);
    if (vector < 0) return;
    ((uint64_t *)env)[ENV_EIP] = address; /* the instance is 64-bit with a flat CS: EIP is the address */
    d->raise_interrupt(env, vector, 0, 0, 0); /* does not return */
}

/* ---- CPUID -------------------------------------------------------------------------------- */

/* CPUID as QEMU's qemu64 model answers it, less what this machine does not model: x2APIC (leaf 1
 * ECX bit 21), and the TSC-deadline timer (ECX bit 24) unless its MSR reaches the device model
 * (a libunicorn with RDMSR/WRMSR hooks). The xAPIC (EDX bit 9) is modelled. */
#define CPUID1_ECX_X2APIC (1u << 21)
#define CPUID1_ECX_TSC_DEADLINE (1u << 24)
static int hook_cpuid(uc_engine *uc, void *user) {
    dl_state *d = user;
    (void)uc;
    uint64_t *regs = (uint64_t *)((char *)d->cpu + d->env_offset); /* regs[]: EAX, ECX, EDX, EBX */
    uint32_t leaf = (uint32_t)regs[0], sub = (uint32_t)regs[1], a, b, c, dx;
    d->cpuid((char *)d->cpu + d->env_offset, leaf, sub, &a, &b, &c, &dx);
    if (leaf == 1) {
        c &= ~CPUID1_ECX_X2APIC;
        if (d->msr) c |= CPUID1_ECX_TSC_DEADLINE;
        else c &= ~CPUID1_ECX_TSC_DEADLINE;
    }
    regs[0] = a; regs[3] = b; regs[1] = c; regs[2] = dx;
    return 1; /* answered: Unicorn skips its own */
}

/* ---- MSRs that belong to devices ------------------------------------------------------------- */

/* uc_cb_insn_cpuid_t, for RDMSR and WRMSR (third_party/unicorn/patches/0006): ECX names the MSR,
 * EDX:EAX the value. An MSR the devices own is answered by them, and the instruction's own effect
 * skipped; any other is left to QEMU. Translated code has already raised #GP at CPL > 0. */
static int hook_rdmsr(uc_engine *uc, void *user) {
    dl_state *d = user;
    (void)uc;
    uint64_t *regs = (uint64_t *)((char *)d->cpu + d->env_offset), value = 0;
    if (!d->msr || !d->msr((uint32_t)regs[1], 0, &value)) return 0;
    regs[0] = (uint32_t)value;
    regs[2] = value >> 32;
    return 1;
}
static int hook_wrmsr(uc_engine *uc, void *user) {
    dl_state *d = user;
    (void)uc;
    uint64_t *regs = (uint64_t *)((char *)d->cpu + d->env_offset);
    uint64_t value = (uint32_t)regs[0] | (uint64_t)(uint32_t)regs[2] << 32;
    return d->msr && d->msr((uint32_t)regs[1], 1, &value);
}

/* ---- Python's side ------------------------------------------------------------------------ */

size_t dl_size(void) { return sizeof(dl_state); }
size_t dl_exception_size(void) { return sizeof(dl_exception); }

void dl_init(dl_state *d, void *model, void *reg_read, void *vmem_read, void *emu_stop, void *get_cpu,
             void *do_interrupt, void *raise_exception, void *instructions, int bits, uint64_t call_return) {
    memset(d, 0, sizeof *d);
    d->model = model;
    d->reg_read = (uc_reg_rw_t)reg_read;
    d->vmem_read = (uc_vmem_read_t)vmem_read;
    d->emu_stop = (uc_emu_stop_t)emu_stop;
    d->get_cpu = (get_cpu_t)get_cpu;
    d->do_interrupt = (do_interrupt_t)do_interrupt;
    d->raise_exception = (raise_exception_t)raise_exception;
    d->instructions = (uint64_t (*)(void *))instructions;
    d->bits = bits;
    d->call_return = call_return;
    d->next_event = NEVER;
}

/* The CPU object of the engine: Unicorn never numbers its one CPU, so it is index -1 there. */
int dl_attach(dl_state *d, uc_engine *uc) {
    d->cpu = d->get_cpu(uc, 0);
    if (!d->cpu) d->cpu = d->get_cpu(uc, -1);
    return d->cpu ? 0 : -1;
}

/* Where CPUX86State lies in the CPU object: its first fields are the general registers, so the
 * two values Python just wrote to RAX and RCX are found side by side (regs[R_EAX], regs[R_ECX]). */
int dl_find_env(dl_state *d, uint64_t rax, uint64_t rcx, size_t span) {
    const uint64_t *p = d->cpu;
    if (!p) return -1;
    for (size_t i = 0; i + 1 < span / 8; i++) {
        if (p[i] == rax && p[i + 1] == rcx) { d->env_offset = i * 8; return 0; }
    }
    return -1;
}

int dl_stop(dl_state *d, dl_exception *out) { *out = d->stopped; return d->stop; }
int dl_delivering(dl_state *d, dl_exception *chain, int max) { /* a delivery that never finished */
    int n = d->nchain < max ? d->nchain : max;
    memcpy(chain, d->chain, (size_t)n * sizeof *chain);
    return d->delivering ? n : 0;
}
const uint64_t *dl_delivered(dl_state *d) { return d->delivered; }
/* the last handled exceptions, oldest first; returns how many */
int dl_recent(dl_state *d, dl_exception *out) {
    int n = d->exceptions < RECENT ? (int)d->exceptions : RECENT;
    for (int i = 0; i < n; i++) out[i] = d->recent[(d->exceptions - (uint64_t)n + (uint64_t)i) % RECENT];
    return n;
}
void dl_set_devices(dl_state *d, void *raise_interrupt, void *on_time, void *acknowledge) {
    d->raise_interrupt = (raise_interrupt_t)raise_interrupt;
    d->on_time = (device_cb_t)on_time;
    d->acknowledge = (device_cb_t)acknowledge;
}
void dl_set_next_event(dl_state *d, uint64_t mc) { d->next_event = mc; }
void dl_set_irq_line(dl_state *d, int asserted) { d->irq_line = asserted; }
void dl_check_now(dl_state *d) { d->check_now = 1; }
/* The innermost handler running: what it interrupted (0: none). */
int dl_innermost(dl_state *d, dl_handler *out) {
    if (!d->depth) return 0;
    *out = d->nest[d->depth - 1];
    return 1;
}
/* The vector of the innermost handler running (NO_VECTOR: none): what an allocator call runs under. */
uint64_t dl_current_vector(dl_state *d) { return d && d->depth ? d->nest[d->depth - 1].vector : NO_VECTOR; }
void *dl_hook_block(void) { return (void *)hook_block; }
void dl_set_cpuid(dl_state *d, void *cpuid) { d->cpuid = (cpuid_t)cpuid; }
void *dl_hook_cpuid(void) { return (void *)hook_cpuid; }
void dl_set_msr(dl_state *d, void *msr) { d->msr = (msr_cb_t)msr; }
void *dl_hook_rdmsr(void) { return (void *)hook_rdmsr; }
void *dl_hook_wrmsr(void) { return (void *)hook_wrmsr; }
void dl_set_calling(dl_state *d, int calling) { d->calling = calling; if (calling) d->stop = STOP_NONE; }
void dl_clear_stop(dl_state *d) { d->stop = STOP_NONE; d->delivering = 0; }
void *dl_hook_intr(void) { return (void *)hook_intr; }
void *dl_hook_invalid(void) { return (void *)hook_invalid; }
void *dl_hook_syscall(void) { return (void *)hook_syscall; }
