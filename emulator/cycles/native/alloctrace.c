/* Allocator calls captured in native code, with exact instruction and cycle stamps.
 *
 * Part of the cycle model's extension (it reads the model's counts through cm_stamp). A native
 * UC_HOOK_CODE on the first instruction of each allocator entry point records the call: its
 * arguments, stack pointer, return address and a frame-pointer backtrace; a hook on each return
 * address (added the first time that address is seen) pairs the return by address and stack
 * pointer, so nested calls stay paired. Stamps are exact: the instructions retired, and the
 * model's clock, before the entry's first instruction and before the instruction at the return
 * address (the model counts a block when it starts; cm_stamp takes back the rest of it).
 *
 * Everything per call happens here, none of it in Python: after a call returns, the guest's own
 * heap is walked and its free list's change recorded (heap/native/guestwalk.c), the call is
 * checked and applied to the live blocks (heap/native/liveset.c), and its trace line is written
 * (trace/native/v2lines.c). Finished calls go into a growable buffer that Python drains in
 * batches (when it holds `batch` calls, at stops and at the end), with the batch's trace text,
 * free-list changes, violations and the addresses it has not named yet (emulator/trace/tracer.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../heap/native/guestwalk.h"
#include "../../heap/native/liveset.h"
#include "../../trace/native/v2lines.h"

typedef void uc_engine;
typedef int (*uc_reg_rw_t)(uc_engine *, int, void *);
typedef int (*uc_vmem_read_t)(uc_engine *, uint64_t, int, void *, size_t);
typedef int (*uc_hook_add_t)(uc_engine *, size_t *, int, void *, void *, uint64_t, uint64_t, ...);
typedef int (*uc_ctl_t)(uc_engine *, int, ...);
typedef int (*batch_cb_t)(void);

int cm_stamp(void *model, uint64_t pc, uint64_t *insns, uint64_t *mc);
uint64_t dl_current_vector(void *delivery);

#define UC_HOOK_CODE 4
#define UC_PROT_READ 1
#define UC_X86_REG_RAX 35
#define UC_X86_REG_RBP 36
#define UC_X86_REG_RCX 38
#define UC_X86_REG_RDI 39
#define UC_X86_REG_RDX 40
#define UC_X86_REG_RSI 43
#define UC_X86_REG_RSP 44
#define UC_X86_REG_CR0 50
#define UC_X86_REG_CR3 53
#define UC_CTL_TB_REMOVE_CACHE_W ((1 << 30) | (2 << 26) | 9)

#define MAX_ENTRIES 8
#define MAX_KINDS 8
#define MAX_PENDING 64
#define MAX_DEPTH 64
#define NO_VECTOR UINT64_MAX
#define NO_SLOT 255

enum { F_RETURNED = 1, F_HOST_CALL = 2 };

/* One allocator call. All fields u64 so Python unpacks it with one struct format. */
typedef struct {
    uint64_t seq, kind, depth, flags;
    uint64_t a0, a1, a2, a3;          /* rdi, rsi, rdx, rcx at entry */
    uint64_t result;                  /* rax at return */
    uint64_t rsp, ret;                /* rsp at entry (the return address is at [rsp]) */
    uint64_t insn_entry, insn_return; /* instructions of this CPU instance, exact */
    uint64_t mc_entry, mc_return;     /* the model's clock, millicycles */
    uint64_t bt_at, bt_len;           /* outer return addresses, in the backtrace array */
    uint64_t vector;                  /* interrupt in progress (none yet: NO_VECTOR) */
    uint64_t heap_kind, heap_size, heap_used, heap_free, heap_blocks, heap_problems, heap_largest;
    uint64_t live_blocks, live_bytes; /* the event view after this call */
    uint64_t changes;                 /* free-list changes recorded up to and with this call's walk */
} at_event;

typedef struct at_tracer at_tracer;
typedef struct { at_tracer *t; uint64_t kind, address; } at_entry;
typedef struct { uint64_t *slots; size_t n, cap; } addrset; /* open-addressed, address + 1; 0 = empty */
/* where a kind's ptr, size, align and old_size are among rdi, rsi, rdx, rcx (NO_SLOT: it has none) */
typedef struct { uint8_t ptr, size, align, old_size; char name[24]; } kind_spec;

struct at_tracer {
    void *model;
    uc_reg_rw_t reg_read;
    uc_vmem_read_t vmem_read;
    uc_hook_add_t hook_add;
    uc_ctl_t ctl;
    void *hook_return_fn;
    uint64_t host_return;             /* the return address of calls made from the host */
    uint64_t insn_base;               /* instructions before this CPU instance (the firmware's) */
    uint32_t depth;                   /* backtrace frames to record (1 = the call site only) */
    at_entry entries[MAX_ENTRIES];
    int nentries;
    kind_spec kinds[MAX_KINDS];
    at_event pending[MAX_PENDING];
    int npending;
    uint64_t seq;
    at_event *events;
    size_t nevents, cap_events, batch;
    uint64_t *frames;
    size_t nframes, cap_frames;
    addrset hooked;                   /* return addresses with a hook */
    addrset named;                    /* addresses handed to Python to name */
    uint64_t *unnamed;                /* ... of which these are new since the last drain */
    size_t nunnamed, cap_unnamed;
    batch_cb_t on_batch;
    int error;
    guestwalk *walker;                /* our kernel's heap, when Python configured it */
    uint64_t changes_before;          /* free-list changes drained before the walker's buffer */
    liveset *live;
    void *delivery;                   /* the CPU's exception delivery: which handler is running */
    v2_buffer text;
    int write_text;
};

static int grow(void **buf, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    void *p = realloc(*buf, cap2 * item);
    if (!p) return -1;
    *buf = p;
    *cap = cap2;
    return 0;
}

static uint64_t reg(at_tracer *t, uc_engine *uc, int id) {
    uint64_t v = 0;
    t->reg_read(uc, id, &v);
    return v;
}

static int read_u64(at_tracer *t, uc_engine *uc, uint64_t va, uint64_t *out) {
    return t->vmem_read(uc, va, UC_PROT_READ, out, 8) == 0 ? 0 : -1;
}

/* ---- address sets ---------------------------------------------------------------------------- */

static int set_has(const addrset *s, uint64_t address) {
    if (!s->cap) return 0;
    for (size_t i = (address * 0x9E3779B97F4A7C15ull) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->slots[i] == address + 1) return 1;
        if (!s->slots[i]) return 0;
    }
}

static int set_add(addrset *s, uint64_t address) {
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256, oldcap = s->cap;
        uint64_t *old = s->slots, *fresh = calloc(cap, sizeof *fresh);
        if (!fresh) return -1;
        s->slots = fresh;
        s->cap = cap;
        s->n = 0;
        for (size_t i = 0; i < oldcap; i++) if (old[i]) set_add(s, old[i] - 1);
        free(old);
    }
    size_t i = (address * 0x9E3779B97F4A7C15ull) & (s->cap - 1);
    while (s->slots[i]) i = (i + 1) & (s->cap - 1);
    s->slots[i] = address + 1;
    s->n++;
    return 0;
}

static void name_later(at_tracer *t, uint64_t address) {
    if (set_has(&t->named, address)) return;
    if (set_add(&t->named, address) ||
        grow((void **)&t->unnamed, &t->cap_unnamed, t->nunnamed + 1, sizeof *t->unnamed)) { t->error = 1; return; }
    t->unnamed[t->nunnamed++] = address;
}

/* ---- one finished call: walk, check, write ---------------------------------------------------- */

static uint64_t slot(const uint64_t *regs, uint8_t i) { return i == NO_SLOT ? 0 : regs[i]; }

static void write_line(at_tracer *t, const at_event *e, const kind_spec *k, const gw_change *change) {
    const uint64_t regs[4] = {e->a0, e->a1, e->a2, e->a3};
    int returned = (e->flags & F_RETURNED) != 0, known = returned && (e->heap_kind == H_BUMP || e->heap_kind == H_LINKED_LIST);
    v2_field f[V2_EVENT_FIELDS] = {
        {e->seq, 1}, {0, 0}, {slot(regs, k->size), 1}, {slot(regs, k->align), 1},
        {slot(regs, k->ptr), k->ptr != NO_SLOT}, {slot(regs, k->old_size), k->old_size != NO_SLOT},
        {e->result, returned && e->kind != LK_DEALLOC}, {(uint64_t)returned, 1},
        {t->insn_base + e->insn_entry, 1}, {t->insn_base + e->insn_return, returned},
        {e->mc_entry / 1000, 1}, {e->mc_return / 1000, returned}, {e->ret, 1}, {e->depth, 1},
    };
    v2_field h[V2_HEAP_FIELDS] = {
        {e->heap_used, known}, {e->heap_free, known}, {e->heap_blocks, known}, {e->live_blocks, 1}, {e->live_bytes, 1},
    };
    uint64_t c[3];
    if (change) { c[0] = change->keep; c[1] = change->drop; c[2] = change->len; }
    v2_field vector = {e->vector, e->vector != NO_VECTOR};
    v2_event(&t->text, f, k->name, t->frames + e->bt_at, e->bt_len, &vector, h, change ? c : NULL,
             change ? gw_entries(t->walker) + 2 * change->at : NULL);
}

static void emit(at_tracer *t, uc_engine *uc, at_event *e) {
    if (grow((void **)&t->events, &t->cap_events, t->nevents + 1, sizeof *e)) { t->error = 1; return; }
    const kind_spec *k = &t->kinds[e->kind < MAX_KINDS ? e->kind : 0];
    const gw_change *change = NULL;
    if (uc && t->walker) {
        gw_summary s;
        size_t before = gw_nchanges(t->walker);
        if (gw_walk(t->walker, reg(t, uc, UC_X86_REG_CR0), reg(t, uc, UC_X86_REG_CR3), e->seq, &s)) t->error = 1;
        if (gw_nchanges(t->walker) > before) change = &gw_changes(t->walker)[before];
        e->heap_kind = s.kind; e->heap_size = s.size; e->heap_used = s.used; e->heap_free = s.free;
        e->heap_blocks = s.blocks; e->heap_problems = s.problems; e->heap_largest = s.largest;
    }
    e->changes = t->changes_before + (t->walker ? gw_nchanges(t->walker) : 0);
    const uint64_t regs[4] = {e->a0, e->a1, e->a2, e->a3};
    int returned = (e->flags & F_RETURNED) != 0;
    ls_call c = {e->seq, e->kind, (uint64_t)returned, slot(regs, k->ptr), slot(regs, k->size),
                 slot(regs, k->old_size), slot(regs, k->align), returned ? e->result : 0, e->ret};
    if (ls_apply(t->live, &c)) t->error = 1;
    if (returned && e->heap_problems)
        for (uint64_t bit = 1; bit <= e->heap_problems; bit <<= 1)
            if (e->heap_problems & bit) ls_guest_problem(t->live, &c, bit);
    const ls_stats *st = ls_stats_of(t->live);
    e->live_blocks = st->live_blocks;
    e->live_bytes = st->live_bytes;
    name_later(t, e->ret);
    for (uint64_t i = 0; i < e->bt_len; i++) name_later(t, t->frames[e->bt_at + i]);
    if (t->write_text) write_line(t, e, k, change);
    t->events[t->nevents++] = *e;
    if (t->on_batch && t->nevents >= t->batch) t->on_batch();
}

/* ---- calls and returns ------------------------------------------------------------------- */

static void hook_return(uc_engine *uc, uint64_t address, uint32_t size, void *user);

static void hook_entry(uc_engine *uc, uint64_t address, uint32_t size, void *user) {
    at_entry *en = user;
    at_tracer *t = en->t;
    (void)size;
    at_event e;
    memset(&e, 0, sizeof e);
    e.seq = t->seq++;
    e.kind = en->kind;
    e.vector = t->delivery ? dl_current_vector(t->delivery) : NO_VECTOR;
    e.a0 = reg(t, uc, UC_X86_REG_RDI); e.a1 = reg(t, uc, UC_X86_REG_RSI);
    e.a2 = reg(t, uc, UC_X86_REG_RDX); e.a3 = reg(t, uc, UC_X86_REG_RCX);
    e.rsp = reg(t, uc, UC_X86_REG_RSP);
    if (read_u64(t, uc, e.rsp, &e.ret)) e.ret = 0;
    cm_stamp(t->model, address, &e.insn_entry, &e.mc_entry);
    e.depth = (uint64_t)t->npending;
    if (e.ret == t->host_return) e.flags |= F_HOST_CALL;
    /* outer frames: [rbp] is the caller's rbp, [rbp + 8] its return address */
    e.bt_at = t->nframes;
    uint64_t rbp = reg(t, uc, UC_X86_REG_RBP);
    for (uint32_t i = 1; i < t->depth && rbp && !(rbp & 7); i++) {
        uint64_t saved, ret;
        if (read_u64(t, uc, rbp, &saved) || read_u64(t, uc, rbp + 8, &ret) || !ret) break;
        if (grow((void **)&t->frames, &t->cap_frames, t->nframes + 1, sizeof *t->frames)) { t->error = 1; break; }
        t->frames[t->nframes++] = ret;
        if (saved <= rbp) break;
        rbp = saved;
    }
    e.bt_len = t->nframes - e.bt_at;
    if (e.kind == LK_ALLOC_ERROR) { emit(t, uc, &e); return; } /* diverges: no return to wait for */
    if (t->npending == MAX_PENDING) { t->error = 2; return; }
    t->pending[t->npending++] = e;
    if (e.ret && !(e.flags & F_HOST_CALL) && !set_has(&t->hooked, e.ret)) {
        size_t handle = 0;
        if (set_add(&t->hooked, e.ret) || t->hook_add(uc, &handle, UC_HOOK_CODE, t->hook_return_fn, t, e.ret, e.ret)) {
            t->error = 3;
            return;
        }
        t->ctl(uc, UC_CTL_TB_REMOVE_CACHE_W, e.ret, e.ret + 1); /* the hook takes effect in translated code */
    }
}

static void finish_call(at_tracer *t, uc_engine *uc, int i, uint64_t result, uint64_t insns, uint64_t mc) {
    /* anything deeper never returned normally (unwound past): it ends without a return */
    for (int j = i + 1; j < t->npending; j++) emit(t, NULL, &t->pending[j]);
    at_event e = t->pending[i];
    t->npending = i;
    e.flags |= F_RETURNED;
    e.result = result;
    e.insn_return = insns;
    e.mc_return = mc;
    emit(t, uc, &e);
}

static void hook_return(uc_engine *uc, uint64_t address, uint32_t size, void *user) {
    at_tracer *t = user;
    (void)size;
    if (!t->npending) return;
    uint64_t rsp = reg(t, uc, UC_X86_REG_RSP);
    for (int i = t->npending - 1; i >= 0; i--) {
        at_event *p = &t->pending[i];
        if (p->ret == address && p->rsp + 8 == rsp) {
            uint64_t insns = 0, mc = 0;
            cm_stamp(t->model, address, &insns, &mc);
            finish_call(t, uc, i, reg(t, uc, UC_X86_REG_RAX), insns, mc);
            return;
        }
    }
}

/* ---- Python's side ------------------------------------------------------------------------ */

at_tracer *at_new(void *model, void *reg_read, void *vmem_read, void *hook_add, void *ctl, uint64_t host_return,
                  uint32_t depth, uint64_t batch, void *on_batch) {
    at_tracer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->model = model;
    t->reg_read = (uc_reg_rw_t)reg_read;
    t->vmem_read = (uc_vmem_read_t)vmem_read;
    t->hook_add = (uc_hook_add_t)hook_add;
    t->ctl = (uc_ctl_t)ctl;
    t->hook_return_fn = (void *)hook_return;
    t->host_return = host_return;
    t->depth = depth < 1 ? 1 : depth > MAX_DEPTH ? MAX_DEPTH : depth;
    t->batch = batch ? batch : 4096;
    t->on_batch = (batch_cb_t)on_batch;
    for (int i = 0; i < MAX_KINDS; i++) t->kinds[i] = (kind_spec){NO_SLOT, NO_SLOT, NO_SLOT, NO_SLOT, "unknown"};
    return t;
}

void at_free(at_tracer *t) {
    if (!t) return;
    free(t->events);
    free(t->frames);
    free(t->hooked.slots);
    free(t->named.slots);
    free(t->unnamed);
    gw_free(t->walker);
    ls_free(t->live);
    v2_free(&t->text);
    free(t);
}

/* A kind's name and where its arguments are (the one home of both is emulator/trace/events.py). */
int at_set_kind(at_tracer *t, uint64_t code, const char *name, uint32_t ptr, uint32_t size, uint32_t align,
                uint32_t old_size) {
    if (code >= MAX_KINDS || strlen(name) >= sizeof t->kinds[0].name) return -1;
    kind_spec *k = &t->kinds[code];
    k->ptr = (uint8_t)ptr; k->size = (uint8_t)size; k->align = (uint8_t)align; k->old_size = (uint8_t)old_size;
    strcpy(k->name, name);
    return 0;
}

/* An entry point: returns the user-data pointer to register hook_entry with, or NULL. */
void *at_add_entry(at_tracer *t, uint64_t address, uint64_t kind) {
    if (t->nentries == MAX_ENTRIES) return NULL;
    at_entry *en = &t->entries[t->nentries++];
    en->t = t; en->kind = kind; en->address = address;
    return en;
}

/* The live blocks and the checks (heap range [lo, hi), or 0, 0 when unknown); must be set. */
int at_set_events(at_tracer *t, uint64_t lo, uint64_t hi, int check, uint64_t max_kept, uint64_t insn_base,
                  int write_text) {
    ls_free(t->live);
    t->live = ls_new(lo, hi, check, max_kept);
    t->insn_base = insn_base;
    t->write_text = write_text;
    return t->live ? 0 : -1;
}

/* Where the CPU's handlers are tracked (emulator/machine/native/delivery.c). */
void at_set_delivery(at_tracer *t, void *delivery) { t->delivery = delivery; }

/* Our kernel's heap, to walk after every call. */
int at_set_heap(at_tracer *t, uint64_t alloc_va, uint64_t lo, uint64_t hi, uint64_t min_block, void *ram,
                uint64_t ram_size) {
    gw_free(t->walker);
    t->walker = gw_new(alloc_va, lo, hi, min_block, ram, ram_size);
    return t->walker ? 0 : -1;
}

/* A call made from the host returned (the machine saw the fetch of host_return). */
int at_host_return(at_tracer *t, uc_engine *uc, uint64_t rsp, uint64_t result, uint64_t insns, uint64_t mc) {
    for (int i = t->npending - 1; i >= 0; i--) {
        if ((t->pending[i].flags & F_HOST_CALL) && t->pending[i].rsp + 8 == rsp) {
            finish_call(t, uc, i, result, insns, mc);
            return 1;
        }
    }
    return 0;
}

/* A call from the host faulted or ran away: its open calls (the first host call and all above
 * it) never return; they end without a return. */
void at_abandon_host_calls(at_tracer *t) {
    for (int i = 0; i < t->npending; i++) {
        if (t->pending[i].flags & F_HOST_CALL) {
            for (int j = i; j < t->npending; j++) emit(t, NULL, &t->pending[j]);
            t->npending = i;
            return;
        }
    }
}

/* The run is over: calls still open never returned (a fault, a stop or a signal inside them). */
void at_finish(at_tracer *t) {
    for (int i = 0; i < t->npending; i++) emit(t, NULL, &t->pending[i]);
    t->npending = 0;
}

size_t at_nevents(at_tracer *t) { return t->nevents; }
size_t at_nframes(at_tracer *t) { return t->nframes; }
int at_error(at_tracer *t) { return t->error ? t->error : t->text.failed; }
const at_event *at_events(at_tracer *t) { return t->events; }
const uint64_t *at_frames(at_tracer *t) { return t->frames; }
size_t at_event_size(void) { return sizeof(at_event); }
liveset *at_liveset(at_tracer *t) { return t->live; }
guestwalk *at_walker(at_tracer *t) { return t->walker; }
const char *at_text(at_tracer *t, size_t *len) { *len = t->text.len; return t->text.text; }
const uint64_t *at_unnamed(at_tracer *t, size_t *n) { *n = t->nunnamed; return t->unnamed; }

/* After Python took a batch (events, text, new addresses, free-list changes, violations): forget
 * it. Backtrace frames that open calls still refer to stay, rebased. */
void at_clear_batch(at_tracer *t) {
    t->nevents = 0;
    t->nunnamed = 0;
    v2_clear(&t->text);
    ls_clear_violations(t->live);
    if (t->walker) {
        t->changes_before += gw_nchanges(t->walker);
        gw_clear_changes(t->walker);
    }
    size_t n = t->nframes;
    for (int i = 0; i < t->npending; i++) if (t->pending[i].bt_at < n) n = t->pending[i].bt_at;
    memmove(t->frames, t->frames + n, (t->nframes - n) * sizeof *t->frames);
    t->nframes -= n;
    for (int i = 0; i < t->npending; i++) t->pending[i].bt_at -= n;
}
void *at_hook_entry(void) { return (void *)hook_entry; }
