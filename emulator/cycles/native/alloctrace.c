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
 * After every call returns, the guest's own heap (our kernel's LockedAllocator, when Python
 * configured one) is summarised: used, free, free blocks and whether the free list is well
 * formed, walked here through the guest's page tables over the host's copy of guest RAM.
 *
 * Finished calls go into a growable buffer that Python drains in batches (when it holds
 * `batch` events, at stops and at the end), never per event. Python configures, drains and
 * turns records into events (emulator/trace/native.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void uc_engine;
typedef int (*uc_reg_rw_t)(uc_engine *, int, void *);
typedef int (*uc_vmem_read_t)(uc_engine *, uint64_t, int, void *, size_t);
typedef int (*uc_hook_add_t)(uc_engine *, size_t *, int, void *, void *, uint64_t, uint64_t, ...);
typedef int (*uc_ctl_t)(uc_engine *, int, ...);
typedef int (*batch_cb_t)(void);

int cm_stamp(void *model, uint64_t pc, uint64_t *insns, uint64_t *mc);

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
#define MAX_PENDING 64
#define MAX_DEPTH 64
#define NO_VECTOR UINT64_MAX

enum { K_ALLOC, K_DEALLOC, K_REALLOC, K_ALLOC_ZEROED, K_ALLOC_ERROR };
enum { F_RETURNED = 1, F_HOST_CALL = 2 };
enum { H_NONE, H_BUMP, H_LINKED_LIST, H_UNKNOWN };
enum { P_CYCLE = 1, P_TOO_LONG = 2, P_UNMAPPED = 4, P_OUTSIDE = 8, P_BAD_SIZE = 16, P_OVERLAP = 32, P_BUMP_NEXT = 64,
       P_KIND = 128 };

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
} at_event;

typedef struct at_tracer at_tracer;
typedef struct { at_tracer *t; uint64_t kind, address; } at_entry;

struct at_tracer {
    void *model;
    uc_reg_rw_t reg_read;
    uc_vmem_read_t vmem_read;
    uc_hook_add_t hook_add;
    uc_ctl_t ctl;
    void *hook_return_fn;
    uint64_t host_return;             /* the return address of calls made from the host */
    uint32_t depth;                   /* backtrace frames to record (1 = the call site only) */
    at_entry entries[MAX_ENTRIES];
    int nentries;
    at_event pending[MAX_PENDING];
    int npending;
    uint64_t seq;
    at_event *events;
    size_t nevents, cap_events, batch;
    uint64_t *frames;
    size_t nframes, cap_frames;
    uint64_t *sites;                  /* open-addressed set of return addresses with a hook */
    size_t nsites, cap_sites;
    batch_cb_t on_batch;
    int error;
    /* the guest heap to summarise (our kernel's LockedAllocator) */
    uint64_t alloc_va, heap_lo, heap_hi, min_block;
    uint8_t *ram;
    uint64_t ram_size;
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

/* ---- the guest heap, read from host RAM through the guest's page tables ---------------- */

typedef struct { uint64_t cr3, page_va[16], page_pa[16]; int paging; } walk_t;

static int phys_u64(at_tracer *t, uint64_t pa, uint64_t *out) {
    if (pa + 8 > t->ram_size || pa + 8 < pa) return -1;
    memcpy(out, t->ram + pa, 8);
    return 0;
}

static int translate(at_tracer *t, walk_t *w, uint64_t va, uint64_t *pa) {
    if (!w->paging) { *pa = va; return 0; }
    uint64_t page = va >> 12, slot = page & 15;
    if (w->page_va[slot] == page + 1) { *pa = w->page_pa[slot] | (va & 0xFFF); return 0; }
    uint64_t table = w->cr3 & 0x000FFFFFFFFFF000ull, e = 0;
    for (int level = 0; level < 4; level++) {
        int shift = 39 - 9 * level;
        if (phys_u64(t, table + ((va >> shift) & 0x1FF) * 8, &e) || !(e & 1)) return -1;
        if (level == 3 || (level > 0 && (e & 0x80))) {
            uint64_t size = 1ull << shift;
            uint64_t base = e & 0x000FFFFFFFFFF000ull & ~(size - 1);
            *pa = base | (va & (size - 1));
            w->page_va[slot] = page + 1;
            w->page_pa[slot] = *pa & ~0xFFFull;
            return 0;
        }
        table = e & 0x000FFFFFFFFFF000ull;
    }
    return -1;
}

static int virt_u64(at_tracer *t, walk_t *w, uint64_t va, uint64_t *out) {
    uint64_t pa;
    if ((va & 0xFFF) > 0xFF8) return -1; /* our structures never straddle a page */
    return translate(t, w, va, &pa) || phys_u64(t, pa, out) ? -1 : 0;
}

/* used, free, free blocks and problems of our kernel's allocator (docs/kernel-structures.md). */
static void summarise_heap(at_tracer *t, uc_engine *uc, at_event *e) {
    e->heap_kind = H_NONE;
    if (!t->alloc_va || !t->ram) return;
    walk_t w;
    memset(&w, 0, sizeof w);
    w.paging = (reg(t, uc, UC_X86_REG_CR0) >> 31) & 1;
    w.cr3 = reg(t, uc, UC_X86_REG_CR3);
    uint64_t kind, v[4];
    if (virt_u64(t, &w, t->alloc_va + 8, &kind)) return;
    uint64_t inner = t->alloc_va + 16;
    if (kind == 0) { /* BumpAllocator { heap_start, heap_end, next, allocations } */
        for (int i = 0; i < 4; i++) if (virt_u64(t, &w, inner + 8 * (uint64_t)i, &v[i])) return;
        e->heap_kind = H_BUMP;
        if (v[0] == 0 && v[1] == 0) return;
        if (!(v[0] <= v[2] && v[2] <= v[1])) { e->heap_problems |= P_BUMP_NEXT; return; }
        e->heap_size = v[1] - v[0];
        e->heap_used = v[2] - v[0];
        e->heap_free = v[1] - v[2];
        e->heap_blocks = e->heap_free ? 1 : 0;
        e->heap_largest = e->heap_free;
        return;
    }
    if (kind != 1) { e->heap_kind = H_UNKNOWN; e->heap_problems |= P_KIND; return; }
    /* LinkedListAllocator { head: ListNode { size, next } }: first fit, address order is not
     * promised, so overlap is checked against the previous node only when it is in order. */
    e->heap_kind = H_LINKED_LIST;
    e->heap_size = t->heap_hi - t->heap_lo;
    uint64_t node = 0, free = 0, blocks = 0, largest = 0, limit = (t->heap_hi - t->heap_lo) / t->min_block + 1;
    uint64_t prev_lo = 0, prev_hi = 0;
    if (virt_u64(t, &w, inner + 8, &node)) { e->heap_problems |= P_UNMAPPED; return; }
    uint64_t slow = node; /* Floyd: a cycle is found without remembering the nodes */
    int step = 0;
    while (node) {
        uint64_t size, next;
        if (blocks > limit) { e->heap_problems |= P_TOO_LONG; break; }
        if (virt_u64(t, &w, node, &size) || virt_u64(t, &w, node + 8, &next)) { e->heap_problems |= P_UNMAPPED; break; }
        if (node < t->heap_lo || node + size > t->heap_hi || node + size < node) e->heap_problems |= P_OUTSIDE;
        if (size < t->min_block || size % 8) e->heap_problems |= P_BAD_SIZE;
        if (prev_hi && node < prev_hi && node + size > prev_lo) e->heap_problems |= P_OVERLAP; /* list neighbours */
        prev_lo = node;
        prev_hi = node + size > node ? node + size : node;
        free += size;
        blocks++;
        if (size > largest) largest = size;
        node = next;
        if (step++ & 1) {
            uint64_t s2 = 0;
            if (virt_u64(t, &w, slow + 8, &s2)) break;
            slow = s2;
            if (slow && slow == node) { e->heap_problems |= P_CYCLE; break; }
        }
    }
    if (free > e->heap_size) { e->heap_problems |= P_OVERLAP; free = e->heap_size; } /* blocks counted twice */
    e->heap_free = free;
    e->heap_used = e->heap_size - free;
    e->heap_blocks = blocks;
    e->heap_largest = largest;
}

/* ---- calls and returns ------------------------------------------------------------------- */

static void emit(at_tracer *t, uc_engine *uc, at_event *e) {
    if (grow((void **)&t->events, &t->cap_events, t->nevents + 1, sizeof *e)) { t->error = 1; return; }
    if (uc) summarise_heap(t, uc, e);
    t->events[t->nevents++] = *e;
    if (t->on_batch && t->nevents >= t->batch) t->on_batch();
}

static int site_known(at_tracer *t, uint64_t address) {
    if (!t->cap_sites) return 0;
    for (size_t i = (address * 0x9E3779B97F4A7C15ull) & (t->cap_sites - 1);; i = (i + 1) & (t->cap_sites - 1)) {
        if (t->sites[i] == address + 1) return 1;
        if (!t->sites[i]) return 0;
    }
}

static int site_add(at_tracer *t, uint64_t address) {
    if ((t->nsites + 1) * 2 > t->cap_sites) {
        size_t cap = t->cap_sites ? t->cap_sites * 2 : 256;
        uint64_t *old = t->sites, *fresh = calloc(cap, sizeof *fresh);
        if (!fresh) return -1;
        size_t oldcap = t->cap_sites;
        t->sites = fresh;
        t->cap_sites = cap;
        t->nsites = 0;
        for (size_t i = 0; i < oldcap; i++) if (old[i]) site_add(t, old[i] - 1);
        free(old);
    }
    size_t i = (address * 0x9E3779B97F4A7C15ull) & (t->cap_sites - 1);
    while (t->sites[i]) i = (i + 1) & (t->cap_sites - 1);
    t->sites[i] = address + 1;
    t->nsites++;
    return 0;
}

static void hook_return(uc_engine *uc, uint64_t address, uint32_t size, void *user);

static void hook_entry(uc_engine *uc, uint64_t address, uint32_t size, void *user) {
    at_entry *en = user;
    at_tracer *t = en->t;
    (void)size;
    at_event e;
    memset(&e, 0, sizeof e);
    e.seq = t->seq++;
    e.kind = en->kind;
    e.vector = NO_VECTOR;
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
    if (e.kind == K_ALLOC_ERROR) { emit(t, uc, &e); return; } /* diverges: no return to wait for */
    if (t->npending == MAX_PENDING) { t->error = 2; return; }
    t->pending[t->npending++] = e;
    if (e.ret && !(e.flags & F_HOST_CALL) && !site_known(t, e.ret)) {
        size_t handle = 0;
        if (site_add(t, e.ret) || t->hook_add(uc, &handle, UC_HOOK_CODE, t->hook_return_fn, t, e.ret, e.ret)) {
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
    return t;
}

void at_free(at_tracer *t) {
    if (!t) return;
    free(t->events);
    free(t->frames);
    free(t->sites);
    free(t);
}

/* An entry point: returns the user-data pointer to register hook_entry with, or NULL. */
void *at_add_entry(at_tracer *t, uint64_t address, uint64_t kind) {
    if (t->nentries == MAX_ENTRIES) return NULL;
    at_entry *en = &t->entries[t->nentries++];
    en->t = t; en->kind = kind; en->address = address;
    return en;
}

void at_set_heap(at_tracer *t, uint64_t alloc_va, uint64_t lo, uint64_t hi, uint64_t min_block, void *ram,
                 uint64_t ram_size) {
    t->alloc_va = alloc_va; t->heap_lo = lo; t->heap_hi = hi; t->min_block = min_block ? min_block : 16;
    t->ram = ram; t->ram_size = ram_size;
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
int at_error(at_tracer *t) { return t->error; }
const at_event *at_events(at_tracer *t) { return t->events; }
const uint64_t *at_frames(at_tracer *t) { return t->frames; }
size_t at_event_size(void) { return sizeof(at_event); }
/* After Python copied the events out: forget them (backtrace frames stay, events index them). */
void at_clear_events(at_tracer *t) { t->nevents = 0; }
/* After Python copied the frames out: drop those no open call still refers to, rebase the rest. */
void at_clear_frames(at_tracer *t) {
    size_t n = t->nframes;
    for (int i = 0; i < t->npending; i++) if (t->pending[i].bt_at < n) n = t->pending[i].bt_at;
    memmove(t->frames, t->frames + n, (t->nframes - n) * sizeof *t->frames);
    t->nframes -= n;
    for (int i = 0; i < t->npending; i++) t->pending[i].bt_at -= n;
}
void *at_hook_entry(void) { return (void *)hook_entry; }
