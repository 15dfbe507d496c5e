/* Native instruction counter and Zen 4 cycle model behind emulator/cycles/ (accounting.py).
 *
 * Unicorn calls the hooks below directly (registered from Python with uc_hook_add through
 * ctypes), so nothing runs in Python per instruction or per memory access.  Python is called
 * back only when a block is seen for the first time (it decodes the block with capstone and
 * hands per-instruction data down with cm_add_block).  The Unicorn functions the hooks need
 * (uc_reg_read, uc_reg_write, uc_emu_stop) are passed in as addresses from the libunicorn that
 * the Python package loaded, so this object links against nothing but libc.
 *
 * Costs are kept in millicycles (1/1000 cycle) so that throughput-bound instructions can cost
 * a fraction of a cycle; reported cycles are the integer part.  Every decision depends only on
 * guest addresses and guest behaviour, never on host addresses or host time.
 *
 * The table of decoded blocks is bounded, whatever the guest does (code that rewrites itself,
 * or runs ever-fresh memory, meets a new block at every turn).  A block is keyed by (address,
 * size) and is in one of three states: live (decoded, used by the block hook), forgotten (a
 * guest or host write touched its code: it keeps its bytes, and when the same key runs again
 * with the same bytes it is live again without calling Python; with other bytes it is decoded
 * again into its own slot) and dead (a slot that only holds profile counts: the new decoding
 * did not fit in it, or the hooks still referred to it).  Blocks are found for a
 * write through a per-code-line index, so a write costs the blocks on its lines, not all blocks.
 * When the table (blocks, offset/cost pool, line index or code bytes) is full, it is flushed,
 * as QEMU flushes its translation cache: every block is forgotten for good and decoded again on
 * its next execution, and the profile counts of the flushed blocks are folded into a bounded
 * table keyed by start address (past its size, into one unattributed row, CM_UNATTRIBUTED).
 * None of this changes a count: a block is the same whether restored, kept or decoded again.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Unicorn ABI pieces (unicorn/unicorn.h, x86.h of 2.1.4). */
typedef void uc_engine;
typedef int (*uc_reg_rw_t)(uc_engine *, int, void *);
typedef int (*uc_emu_stop_t)(uc_engine *);
typedef int (*uc_vmem_read_t)(uc_engine *, uint64_t, int, void *, size_t);
#define UC_PROT_EXEC 4
#define UC_MEM_READ 16
#define UC_MEM_WRITE 17
#define UC_X86_REG_CS 11
#define UC_X86_REG_EAX 19
#define UC_X86_REG_ECX 22
#define UC_X86_REG_EDX 24
#define UC_X86_REG_EIP 26
#define UC_X86_REG_RIP 41
#define UC_X86_REG_CR0 50

/* Control-transfer kind of a block's last instruction (mirrored in emulator/cycles/classify.py). */
enum { K_NONE = 0, K_COND = 1, K_JMP = 2, K_JMP_IND = 3, K_CALL = 4, K_CALL_IND = 5, K_RET = 6 };

/* Model parameters, all int64, same order as CParams in emulator/cycles/native.py. */
typedef struct {
    int64_t l1d_sets, l1d_ways, l1i_sets, l1i_ways, l2_sets, l2_ways, l3_sets, l3_ways;
    int64_t l2_hit, l3_hit, dram;              /* penalties over an L1 hit, millicycles */
    int64_t store_miss_permille;               /* share of a miss penalty a store pays */
    int64_t dtlb1_entries, dtlb2_sets, dtlb2_ways;
    int64_t dtlb2_hit, page_walk;              /* millicycles */
    int64_t bp_table_bits, bp_history_bits, btb_bits, ras_entries;
    int64_t mispredict, btb_miss;              /* millicycles */
    int64_t taken_jump, taken_call, taken_ret; /* front-end bubble after a taken transfer, mc */
    int64_t fe_window;                         /* how far the front end may lag the back end, mc */
    int64_t mode;                              /* 16 or 64 */
} cm_params;

/* Block states (see the top of the file). */
enum { B_DEAD = 0, B_LIVE = 1, B_FORGOTTEN = 2 };

typedef struct {
    uint64_t addr, target, last_pc;
    uint64_t line0, line1;     /* first and last 64-byte code line */
    uint64_t base;             /* back-end millicycles of all instructions (L1 hits, predicted branches) */
    uint64_t fe;               /* front-end millicycles to deliver its macro-ops */
    uint64_t rep_iter;         /* millicycles per further iteration of a trailing rep instruction */
    uint64_t prof_insns, prof_mc;
    uint32_t size, n, pool;    /* pool: index of n offsets and n+1 cost prefixes */
    uint32_t code;             /* index of its `size` bytes in s->code */
    uint32_t pool_len;         /* length of its region of the pool (at least 2 n + 1) */
    int32_t next;              /* hash chain (live and forgotten blocks; -1 ends it) */
    int32_t lnode;             /* index of its line-index nodes, one per code line */
    uint8_t kind, rep_last, first_rep, state;
} block_t;

/* Line index: node k of block b stands for code line b->line0 + (k - b->lnode).  Links are
 * node index + 1 (0: none), so a calloc'd head table is empty; an unlinked node has next < 0. */
typedef struct { int32_t block, next, prev; } lnode_t;

typedef struct {
    uint64_t *tag;             /* per set, most recent first; tag = line + 1, 0 = empty */
    int64_t sets, ways;
} cache_t;

enum { C_BASE, C_L1D_MISS, C_L2_MISS, C_L3_MISS, C_L1I_MISS, C_DTLB1_MISS, C_DTLB2_MISS,
       C_MISPREDICT, C_BTB_MISS, C_REP_ITER, C_MEM_MC, C_TLB_MC, C_BRANCH_MC, C_FETCH_MC,
       C_LOADS, C_STORES, C_BRANCHES, C_FRONTEND_MC, C_NCOUNTERS };

#define HASH_BITS 16
#define FAST_BITS 12
#define CODE_BITS 20
#define TLB1_BUCKETS 256

/* Default bounds of the block table (cm_set_limits changes them, for tests).  The pool, line
 * index and code-byte caps are in proportion to the block cap; one block always fits (an empty
 * table grows to hold it: QEMU's blocks are at most 512 instructions and two pages). */
#define MAX_BLOCKS (1 << 18)
#define POOL_PER_BLOCK 16      /* uint32 offsets and cost prefixes */
#define LINES_PER_BLOCK 4      /* line-index nodes */
#define BYTES_PER_BLOCK 64     /* code bytes */
#define MAX_PROFILE_ROWS (1 << 16)
/* The address of the profile row that holds flushed blocks past MAX_PROFILE_ROWS: not canonical
 * in 64-bit mode and above 4 GiB, so no block starts there (UNATTRIBUTED in accounting.py). */
#define CM_UNATTRIBUTED (1ull << 63)

typedef int (*decode_cb_t)(uint64_t addr, uint32_t size);

typedef struct {
    cm_params p;
    uc_reg_rw_t reg_read, reg_write;
    uc_emu_stop_t emu_stop;
    uc_vmem_read_t vmem_read;
    decode_cb_t decode;

    block_t *blocks;
    int32_t nblocks, cap_blocks, max_blocks;
    uint32_t *pool;
    uint32_t npool, cap_pool, max_pool;
    lnode_t *lnodes;
    int32_t nlnodes, cap_lnodes, max_lnodes;
    uint8_t *code;             /* the bytes of every block, to recognise a forgotten block unchanged */
    uint32_t ncode, cap_code, max_code;
    uint8_t *scratch;          /* the current bytes of a forgotten block, read to compare */
    uint32_t cap_scratch;
    int32_t buckets[1 << HASH_BITS];
    int32_t fast[1 << FAST_BITS];
    int32_t *line_head;        /* per hashed 64-byte line: first node of the live blocks on it, + 1 */

    /* Profile of flushed blocks: rows (address, instructions, millicycles), found through an
     * open-addressing index (row + 1), and the row past max_prof. */
    uint64_t (*prof)[3];
    int32_t nprof, cap_prof, max_prof;
    int32_t *prof_index;
    uint32_t prof_mask;
    uint64_t unattr_insns, unattr_mc;
    uint64_t flushes, decodes, restores;

    uint64_t insns, mc;        /* retired instructions, millicycles (the back end's clock) */
    uint64_t fe, fe_line;      /* the front end's clock; the 64-byte line of its open fetch window */
    uint64_t budget;
    int budget_on, budget_stop, error;
    int cur_cont;              /* the current block is a rep continuation (counted nothing) */
    int32_t cur, prev;
    uint64_t seq, fault_seq, active_seq; /* block serial; last block that faulted / did an `out` */
    uint64_t mem_at_block;     /* loads + stores when the current block started */

    cache_t l1d, l1i, l2, l3;
    uint64_t clock;            /* L1 DTLB LRU stamps */
    uint64_t last_line, last_fetch_line, last_page, last_wline;

    uint64_t tlb1_page[128], tlb1_stamp[128];
    int32_t tlb1_next[128], tlb1_head[TLB1_BUCKETS];
    int32_t tlb1_n;
    cache_t tlb2;

    uint8_t *bp;
    uint64_t ghist, bp_mask, hist_mask;
    uint64_t *btb_tag, *btb_target, btb_mask;
    uint64_t *ras;
    int64_t ras_top, ras_depth;

    uint64_t counters[C_NCOUNTERS];
    uint64_t halted_mc;                /* clock advanced while the CPU waited in `hlt` for an interrupt */
} cm_state;

static inline uint32_t hash_key(uint64_t addr, uint32_t size) {
    uint64_t h = (addr ^ ((uint64_t)size << 48)) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> (64 - HASH_BITS));
}
static inline uint32_t fast_key(uint64_t addr) {
    return (uint32_t)((addr * 0x9E3779B97F4A7C15ull) >> (64 - FAST_BITS));
}
static inline uint32_t code_key(uint64_t line) {
    return (uint32_t)((line * 0x9E3779B97F4A7C15ull) >> (64 - CODE_BITS));
}

static int cache_init(cache_t *c, int64_t sets, int64_t ways) {
    c->sets = sets;
    c->ways = ways;
    c->tag = sets > 0 && ways > 0 ? calloc((size_t)(sets * ways), sizeof(uint64_t)) : NULL;
    return c->tag ? 0 : -1;
}
static void cache_free(cache_t *c) { free(c->tag); c->tag = NULL; }

/* Look up `key` in a set-associative LRU structure; fill on a miss.  Returns 1 on a hit.
 * Each set keeps its tags in recency order (most recent first), which is exact LRU and makes
 * the common hit on the most recent way one compare. */
static inline int cache_access(cm_state *s, cache_t *c, uint64_t key) {
    (void)s;
    uint64_t *tag = c->tag + (key % (uint64_t)c->sets) * (uint64_t)c->ways;
    uint64_t want = key + 1;
    if (tag[0] == want) return 1;
    for (int64_t w = 1; w < c->ways; w++) {
        if (tag[w] == want) {
            memmove(tag + 1, tag, (size_t)w * sizeof *tag);
            tag[0] = want;
            return 1;
        }
    }
    memmove(tag + 1, tag, (size_t)(c->ways - 1) * sizeof *tag);
    tag[0] = want;
    return 0;
}

/* A line missed its L1: look in L2, L3, DRAM; returns the penalty in millicycles. */
static inline uint64_t outer_access(cm_state *s, uint64_t line) {
    if (cache_access(s, &s->l2, line)) return (uint64_t)s->p.l2_hit;
    s->counters[C_L2_MISS]++;
    if (cache_access(s, &s->l3, line)) return (uint64_t)s->p.l3_hit;
    s->counters[C_L3_MISS]++;
    return (uint64_t)s->p.dram;
}

static inline void charge(cm_state *s, uint64_t mc) {
    s->mc += mc;
    if (s->cur >= 0) s->blocks[s->cur].prof_mc += mc;
}

static inline uint64_t data_line(cm_state *s, uint64_t line) {
    if (line == s->last_line) return 0;
    s->last_line = line;
    if (cache_access(s, &s->l1d, line)) return 0;
    s->counters[C_L1D_MISS]++;
    return outer_access(s, line);
}

/* L1 DTLB: fully associative LRU, found through a small chained hash so a hit costs O(1). */
static void tlb1_unlink(cm_state *s, int32_t slot) {
    int32_t *pp = &s->tlb1_head[s->tlb1_page[slot] % TLB1_BUCKETS];
    while (*pp != slot) pp = &s->tlb1_next[*pp];
    *pp = s->tlb1_next[slot];
}
static inline uint64_t tlb_access(cm_state *s, uint64_t page) {
    for (int32_t i = s->tlb1_head[page % TLB1_BUCKETS]; i >= 0; i = s->tlb1_next[i])
        if (s->tlb1_page[i] == page) { s->tlb1_stamp[i] = ++s->clock; return 0; }
    s->counters[C_DTLB1_MISS]++;
    int32_t slot;
    if (s->tlb1_n < s->p.dtlb1_entries) {
        slot = s->tlb1_n++;
    } else {
        slot = 0;
        for (int32_t i = 1; i < s->p.dtlb1_entries; i++)
            if (s->tlb1_stamp[i] < s->tlb1_stamp[slot]) slot = i;
        tlb1_unlink(s, slot);
    }
    s->tlb1_page[slot] = page;
    s->tlb1_stamp[slot] = ++s->clock;
    s->tlb1_next[slot] = s->tlb1_head[page % TLB1_BUCKETS];
    s->tlb1_head[page % TLB1_BUCKETS] = slot;
    if (cache_access(s, &s->tlb2, page)) return (uint64_t)s->p.dtlb2_hit;
    s->counters[C_DTLB2_MISS]++;
    return (uint64_t)s->p.page_walk;
}

static inline uint32_t block_lines(const block_t *b) {
    return b->size ? (uint32_t)(b->line1 - b->line0 + 1) : 0;
}

/* Put a live block's nodes at the head of its lines' lists. */
static void link_lines(cm_state *s, int32_t i) {
    block_t *b = &s->blocks[i];
    uint32_t nl = block_lines(b);
    for (uint32_t j = 0; j < nl; j++) {
        int32_t k = b->lnode + (int32_t)j;
        uint32_t h = code_key(b->line0 + j);
        lnode_t *nd = &s->lnodes[k];
        nd->block = i;
        nd->prev = 0;
        nd->next = s->line_head[h];
        if (nd->next) s->lnodes[nd->next - 1].prev = k + 1;
        s->line_head[h] = k + 1;
    }
}

static void unlink_lines(cm_state *s, const block_t *b) {
    uint32_t nl = block_lines(b);
    for (uint32_t j = 0; j < nl; j++) {
        lnode_t *nd = &s->lnodes[b->lnode + (int32_t)j];
        if (nd->next < 0) continue;
        if (nd->prev) s->lnodes[nd->prev - 1].next = nd->next;
        else s->line_head[code_key(b->line0 + j)] = nd->next;
        if (nd->next) s->lnodes[nd->next - 1].prev = nd->prev;
        nd->next = nd->prev = -1;
    }
}

/* The block keyed (addr, size), live or forgotten; there is at most one. */
static int32_t find_block(cm_state *s, uint64_t addr, uint32_t size) {
    for (int32_t i = s->buckets[hash_key(addr, size)]; i >= 0; i = s->blocks[i].next)
        if (s->blocks[i].addr == addr && s->blocks[i].size == size) return i;
    return -1;
}

static void unhash(cm_state *s, int32_t i) {
    block_t *b = &s->blocks[i];
    int32_t *pp = &s->buckets[hash_key(b->addr, b->size)];
    while (*pp != i) pp = &s->blocks[*pp].next;
    *pp = b->next;
    b->next = -1;
}

/* Live -> forgotten: out of the line index and the fast map, still findable by its key. */
static void forget_block(cm_state *s, int32_t i) {
    block_t *b = &s->blocks[i];
    b->state = B_FORGOTTEN;
    unlink_lines(s, b);
    if (s->fast[fast_key(b->addr)] == i) s->fast[fast_key(b->addr)] = -1;
}

/* A guest write touched a line that holds decoded code: forget the blocks there, so the
 * next execution (which Unicorn re-translates) is checked against the new bytes. */
static void invalidate_code(cm_state *s, uint64_t lo, uint64_t hi) {
    if (hi <= lo) return;
    if (((hi - lo) >> 6) > (uint64_t)s->nblocks) { /* a wide range (the host's): scan the table */
        for (int32_t i = 0; i < s->nblocks; i++) {
            block_t *b = &s->blocks[i];
            if (b->state == B_LIVE && b->size && b->addr < hi && b->addr + b->size > lo) forget_block(s, i);
        }
        return;
    }
    for (uint64_t l = lo >> 6; l <= (hi - 1) >> 6; l++) {
        uint32_t h = code_key(l);
    restart:
        for (int32_t k = s->line_head[h]; k; ) {
            const lnode_t *nd = &s->lnodes[k - 1];
            int32_t next = nd->next, i = nd->block;
            const block_t *b = &s->blocks[i];
            if (b->addr < hi && b->addr + b->size > lo) {
                forget_block(s, i);
                /* Two lines of one block can share a bucket: its other node may have been next. */
                if (next && s->lnodes[next - 1].next < 0) goto restart;
            }
            k = next;
        }
    }
}

/* A forgotten block runs again: live again if its bytes are what they were. */
static int restore_block(cm_state *s, uc_engine *uc, int32_t i) {
    block_t *b = &s->blocks[i];
    if (!s->vmem_read || b->size > s->cap_scratch) return 0;
    if (b->size && (s->vmem_read(uc, b->addr, UC_PROT_EXEC, s->scratch, b->size) != 0 ||
                    memcmp(s->scratch, s->code + b->code, b->size) != 0))
        return 0;
    b->state = B_LIVE;
    link_lines(s, i);
    s->last_wline = UINT64_MAX;
    s->restores++;
    return 1;
}

/* ---- profile of flushed blocks ----------------------------------------------------------- */

static inline uint32_t prof_key(uint64_t addr) {
    return (uint32_t)((addr * 0x9E3779B97F4A7C15ull) >> 32);
}

/* Add a flushed block's counts to its address's row; past max_prof rows (or out of memory),
 * to the unattributed row, so the profile's totals stay the run's. */
static void fold_profile(cm_state *s, uint64_t addr, uint64_t insns, uint64_t mc) {
    if (!insns && !mc) return;
    if (!s->prof_index && s->max_prof > 0) {
        uint32_t size = 2;
        while (size < 2 * (uint32_t)s->max_prof) size *= 2;
        if ((s->prof_index = calloc(size, sizeof *s->prof_index))) s->prof_mask = size - 1;
    }
    if (!s->prof_index) goto unattributed;
    uint32_t h = prof_key(addr) & s->prof_mask;
    while (s->prof_index[h]) {
        uint64_t *row = s->prof[s->prof_index[h] - 1];
        if (row[0] == addr) { row[1] += insns; row[2] += mc; return; }
        h = (h + 1) & s->prof_mask;
    }
    if (s->nprof == s->max_prof) goto unattributed;
    if (s->nprof == s->cap_prof) {
        int32_t cap = s->cap_prof ? s->cap_prof * 2 : 1024;
        if (cap > s->max_prof) cap = s->max_prof;
        uint64_t (*np)[3] = realloc(s->prof, (size_t)cap * sizeof *np);
        if (!np) goto unattributed;
        s->prof = np;
        s->cap_prof = cap;
    }
    uint64_t *row = s->prof[s->nprof++];
    row[0] = addr; row[1] = insns; row[2] = mc;
    s->prof_index[h] = s->nprof;
    return;
unattributed:
    s->unattr_insns += insns;
    s->unattr_mc += mc;
}

static inline uint64_t read_pc(cm_state *s, uc_engine *uc) {
    uint64_t v = 0;
    if (s->p.mode == 64) {
        s->reg_read(uc, UC_X86_REG_RIP, &v);
        return v;
    }
    uint64_t ip = 0, cs = 0, cr0 = 0;
    s->reg_read(uc, UC_X86_REG_EIP, &ip);
    s->reg_read(uc, UC_X86_REG_CR0, &cr0);
    if (cr0 & 1) return ip & 0xFFFFFFFFull; /* the firmware's protected mode is flat */
    s->reg_read(uc, UC_X86_REG_CS, &cs);
    return ((cs & 0xFFFF) << 4) + (ip & 0xFFFF);
}

/* Index of the instruction at `pc` in block b, or -1 if pc is not an instruction start. */
static int32_t insn_index(cm_state *s, const block_t *b, uint64_t pc) {
    if (pc < b->addr || pc >= b->addr + b->size) return -1;
    uint32_t off = (uint32_t)(pc - b->addr);
    for (uint32_t i = 0; i < b->n; i++)
        if (s->pool[b->pool + i] == off) return (int32_t)i;
    return -1;
}

static inline void predict(cm_state *s, const block_t *pb, uint64_t next) {
    uint64_t fall = pb->addr + pb->size, pc = pb->last_pc, pen = 0;
    uint64_t bslot = (pc ^ (pc >> 17)) & s->btb_mask;
    s->counters[C_BRANCHES]++;
    switch (pb->kind) {
    case K_COND: {
        int taken = next != fall;
        uint64_t i = (pc ^ s->ghist) & s->bp_mask;
        uint8_t ctr = s->bp[i];
        if ((ctr >= 2) != taken) { s->counters[C_MISPREDICT]++; pen += (uint64_t)s->p.mispredict; }
        else if (taken && !(s->btb_tag[bslot] == pc + 1 && s->btb_target[bslot] == next)) {
            s->counters[C_BTB_MISS]++; pen += (uint64_t)s->p.btb_miss;
        }
        /* Stores only when something changes: in a steady loop nothing does, and unconditional
         * read-modify-writes would chain every block hook call through store forwarding. */
        uint8_t nctr = taken ? (ctr < 3 ? ctr + 1 : 3) : (ctr > 0 ? ctr - 1 : 0);
        if (nctr != ctr) s->bp[i] = nctr;
        uint64_t nh = ((s->ghist << 1) | (uint64_t)taken) & s->hist_mask;
        if (nh != s->ghist) s->ghist = nh;
        if (taken && (s->btb_tag[bslot] != pc + 1 || s->btb_target[bslot] != next)) {
            s->btb_tag[bslot] = pc + 1; s->btb_target[bslot] = next;
        }
        break;
    }
    case K_JMP: case K_CALL:
        if (!(s->btb_tag[bslot] == pc + 1 && s->btb_target[bslot] == next)) {
            s->counters[C_BTB_MISS]++; pen += (uint64_t)s->p.btb_miss;
            s->btb_tag[bslot] = pc + 1; s->btb_target[bslot] = next;
        }
        break;
    case K_JMP_IND: case K_CALL_IND:
        if (!(s->btb_tag[bslot] == pc + 1 && s->btb_target[bslot] == next)) {
            s->counters[C_MISPREDICT]++; pen += (uint64_t)s->p.mispredict;
            s->btb_tag[bslot] = pc + 1; s->btb_target[bslot] = next;
        }
        break;
    case K_RET: {
        uint64_t want = 0;
        int have = s->ras_depth > 0;
        if (have) {
            want = s->ras[s->ras_top];
            s->ras_top = (s->ras_top + s->p.ras_entries - 1) % s->p.ras_entries;
            s->ras_depth--;
        }
        if (!have || want != next) { s->counters[C_MISPREDICT]++; pen += (uint64_t)s->p.mispredict; }
        break;
    }
    default: break;
    }
    if (pb->kind == K_CALL || pb->kind == K_CALL_IND) {
        s->ras_top = (s->ras_top + 1) % s->p.ras_entries;
        s->ras[s->ras_top] = fall;
        if (s->ras_depth < s->p.ras_entries) s->ras_depth++;
    }
    /* A taken transfer closes the fetch window; calls and returns add a bubble (measured). */
    if (!(pb->kind == K_COND && next == fall)) {
        s->fe_line = UINT64_MAX;
        s->fe += (uint64_t)(pb->kind == K_CALL || pb->kind == K_CALL_IND ? s->p.taken_call
                            : pb->kind == K_RET ? s->p.taken_ret : s->p.taken_jump);
    }
    if (pen) {
        s->counters[C_BRANCH_MC] += pen;
        charge(s, pen);
        if (s->fe < s->mc) s->fe = s->mc; /* a mispredict restarts the front end */
        s->fe_line = UINT64_MAX;
    }
}

/* ---- hooks ------------------------------------------------------------------------------ */

static void hook_block(uc_engine *uc, uint64_t addr, uint32_t size, void *user) {
    cm_state *s = user;
    if (s->budget_on && s->insns >= s->budget) {
        /* Stopping from the block hook takes effect before this block runs (measured). */
        s->budget_stop = 1;
        s->emu_stop(uc);
        return;
    }
    int32_t idx = s->fast[fast_key(addr)];
    if (idx < 0 || s->blocks[idx].addr != addr || s->blocks[idx].size != size) {
        idx = find_block(s, addr, size);
        if (idx >= 0 && s->blocks[idx].state != B_LIVE && !restore_block(s, uc, idx))
            idx = -1; /* its bytes changed: decoded again (cm_add_block reuses or retires the slot) */
        if (idx < 0) {
            s->decodes++;
            if (s->decode(addr, size) != 0 || (idx = find_block(s, addr, size)) < 0) {
                s->error = 1;
                s->emu_stop(uc);
                return;
            }
        }
        s->fast[fast_key(addr)] = idx;
    }
    block_t *b = &s->blocks[idx];
    s->seq++;
    if (b->first_rep && s->prev >= 0 && s->blocks[s->prev].rep_last && s->blocks[s->prev].last_pc == addr) {
        /* QEMU runs one iteration of a rep string instruction per execution of a block that
         * starts at it: the instruction was counted when its first iteration began. */
        s->cur = idx;
        s->prev = idx;
        s->cur_cont = 1;
        s->counters[C_REP_ITER]++;
        charge(s, b->rep_iter);
        return;
    }
    if (s->prev >= 0 && s->blocks[s->prev].kind != K_NONE) predict(s, &s->blocks[s->prev], addr);
    s->cur = idx;
    s->prev = idx;
    s->cur_cont = 0;
    s->mem_at_block = s->counters[C_LOADS] + s->counters[C_STORES];
    s->insns += b->n;
    b->prof_insns += b->n;
    /* Two clocks: the front end delivers one fetch window per cycle (the macro-ops of one
     * 64-byte line, up to a taken transfer; op-cache width permitting); the back end executes
     * the block in `base`, not before it arrives. The front end runs ahead while the back end
     * is busy, but lags by at most fe_window. */
    if (s->fe + (uint64_t)s->p.fe_window < s->mc) s->fe = s->mc - (uint64_t)s->p.fe_window;
    uint64_t windows = (b->line0 != s->fe_line) + (b->line1 - b->line0);
    s->fe += windows * 1000 > b->fe ? windows * 1000 : b->fe;
    s->fe_line = b->line1;
    uint64_t done = s->mc + b->base;
    if (done < s->fe) {
        s->counters[C_FRONTEND_MC] += s->fe - done;
        done = s->fe;
    }
    charge(s, done - s->mc);
    if (size && !(b->line0 == b->line1 && b->line0 == s->last_fetch_line)) {
        uint64_t pen = 0;
        for (uint64_t l = b->line0; l <= b->line1; l++) {
            if (l == s->last_fetch_line) continue;
            s->last_fetch_line = l;
            if (!cache_access(s, &s->l1i, l)) { s->counters[C_L1I_MISS]++; pen += outer_access(s, l); }
        }
        if (pen) { s->counters[C_FETCH_MC] += pen; charge(s, pen); }
    }
}

static void hook_mem(uc_engine *uc, int type, uint64_t addr, int size, int64_t value, void *user) {
    cm_state *s = user;
    (void)uc; (void)value;
    uint64_t line = addr >> 6, end_line = (addr + (uint64_t)size - 1) >> 6;
    int write = type == UC_MEM_WRITE;
    if (write) {
        s->counters[C_STORES]++;
        /* Self-modifying code: a write into a line that holds decoded code (checked once per
         * run of writes to the same line; a block made live resets last_wline). */
        if (line != s->last_wline || end_line != line) {
            s->last_wline = line;
            if (s->line_head[code_key(line)] || s->line_head[code_key(end_line)])
                invalidate_code(s, addr & ~63ull, (end_line + 1) << 6);
        }
    } else {
        s->counters[C_LOADS]++;
    }
    if (line == s->last_line && end_line == line && (addr >> 12) == s->last_page) return; /* L1 + DTLB hit */
    uint64_t pen = data_line(s, line), tpen = 0;
    if (end_line != line) pen += data_line(s, end_line);
    uint64_t page = addr >> 12;
    if (page != s->last_page) {
        s->last_page = page;
        tpen = tlb_access(s, page);
    }
    if (write && pen) pen = pen * (uint64_t)s->p.store_miss_permille / 1000;
    if (pen) { s->counters[C_MEM_MC] += pen; charge(s, pen); }
    if (tpen) { s->counters[C_TLB_MC] += tpen; charge(s, tpen); }
}

/* Instructions retired and millicycles spent before the instruction at `pc` of the current
 * block executes: a block is counted when it starts, so the rest of it is taken back. This is
 * guest time "at" an instruction (what rdtsc there reads) and the tracer's exact stamps.
 * Returns -1, with the plain counts, when pc is not an instruction of the current block. */
int cm_stamp(cm_state *s, uint64_t pc, uint64_t *insns, uint64_t *mc) {
    *insns = s->insns;
    *mc = s->mc;
    if (s->cur < 0 || s->cur_cont) return -1;
    block_t *b = &s->blocks[s->cur];
    int32_t i = insn_index(s, b, pc);
    if (i < 0) return -1;
    *insns -= b->n - (uint32_t)i;
    *mc -= b->base - s->pool[b->pool + b->n + (uint32_t)i];
    return 0;
}

static uint64_t cycles_at(cm_state *s, uint64_t pc) {
    uint64_t insns, mc;
    cm_stamp(s, pc, &insns, &mc);
    return mc / 1000;
}

static void write_tsc(cm_state *s, uc_engine *uc, int with_aux) {
    uint64_t c = cycles_at(s, read_pc(s, uc));
    uint64_t lo = c & 0xFFFFFFFFull, hi = c >> 32, zero = 0;
    s->reg_write(uc, UC_X86_REG_EAX, &lo);
    s->reg_write(uc, UC_X86_REG_EDX, &hi);
    if (with_aux) s->reg_write(uc, UC_X86_REG_ECX, &zero);
}
/* uc_cb_insn_cpuid_t: a nonzero return skips the instruction's own (host TSC) behaviour. */
static int hook_rdtsc(uc_engine *uc, void *user) { write_tsc(user, uc, 0); return 1; }
static int hook_rdtscp(uc_engine *uc, void *user) { write_tsc(user, uc, 1); return 1; }

/* Faults: remember that the current block stopped early, so finish() can tell a block that
 * faulted on its first instruction from one that ran to its end and jumped back to itself. */
static void hook_intr(uc_engine *uc, uint32_t intno, void *user) {
    cm_state *s = user; (void)uc; (void)intno;
    s->fault_seq = s->seq;
}
static void hook_out(uc_engine *uc, uint32_t port, int size, uint32_t value, void *user) {
    cm_state *s = user; (void)uc; (void)port; (void)size; (void)value;
    s->active_seq = s->seq;
}
static int hook_invalid(uc_engine *uc, void *user) {
    cm_state *s = user; (void)uc;
    s->fault_seq = s->seq;
    return 0; /* not handled: later hooks (the machine's) decide */
}
static int hook_mem_invalid(uc_engine *uc, int type, uint64_t addr, int size, int64_t value, void *user) {
    cm_state *s = user; (void)uc; (void)type; (void)addr; (void)size; (void)value;
    s->fault_seq = s->seq;
    return 0;
}

/* ---- API called from emulator/cycles/ through ctypes ---------------------------------------- */

void cm_free(cm_state *s);

static void reset_state(cm_state *s) {
    s->insns = s->mc = s->fe = 0;
    s->fe_line = UINT64_MAX;
    s->cur = s->prev = -1;
    s->seq = 1;
    s->fault_seq = s->active_seq = 0;
    s->budget_stop = s->error = 0;
    s->last_line = s->last_fetch_line = s->last_page = s->last_wline = UINT64_MAX;
    s->clock = 0;
    s->tlb1_n = 0;
    for (int i = 0; i < TLB1_BUCKETS; i++) s->tlb1_head[i] = -1;
    s->ghist = 0;
    s->ras_top = s->ras_depth = 0;
    memset(s->counters, 0, sizeof s->counters);
}

static void set_limits(cm_state *s, int32_t max_blocks, int32_t max_prof) {
    s->max_blocks = max_blocks;
    s->max_pool = (uint32_t)max_blocks * POOL_PER_BLOCK;
    s->max_lnodes = max_blocks * LINES_PER_BLOCK;
    s->max_code = (uint32_t)max_blocks * BYTES_PER_BLOCK;
    s->max_prof = max_prof;
}

cm_state *cm_new(const cm_params *p, void *reg_read, void *reg_write, void *emu_stop, void *vmem_read,
                 void *decode) {
    cm_state *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->reg_read = (uc_reg_rw_t)reg_read;
    s->reg_write = (uc_reg_rw_t)reg_write;
    s->emu_stop = (uc_emu_stop_t)emu_stop;
    s->vmem_read = (uc_vmem_read_t)vmem_read;
    s->decode = (decode_cb_t)decode;
    set_limits(s, MAX_BLOCKS, MAX_PROFILE_ROWS);
    if (p->dtlb1_entries < 1 || p->dtlb1_entries > 128 || p->ras_entries < 1 || p->bp_table_bits > 28 ||
        p->btb_bits > 28 || p->bp_history_bits > 63)
        goto fail;
    for (int i = 0; i < (1 << HASH_BITS); i++) s->buckets[i] = -1;
    for (int i = 0; i < (1 << FAST_BITS); i++) s->fast[i] = -1;
    s->line_head = calloc((size_t)1 << CODE_BITS, sizeof *s->line_head);
    s->bp = malloc((size_t)1 << p->bp_table_bits);
    s->btb_tag = calloc((size_t)1 << p->btb_bits, sizeof(uint64_t));
    s->btb_target = calloc((size_t)1 << p->btb_bits, sizeof(uint64_t));
    s->ras = calloc((size_t)p->ras_entries, sizeof(uint64_t));
    if (!s->line_head || !s->bp || !s->btb_tag || !s->btb_target || !s->ras) goto fail;
    memset(s->bp, 1, (size_t)1 << p->bp_table_bits); /* weakly not taken */
    s->bp_mask = ((uint64_t)1 << p->bp_table_bits) - 1;
    s->hist_mask = ((uint64_t)1 << p->bp_history_bits) - 1;
    s->btb_mask = ((uint64_t)1 << p->btb_bits) - 1;
    if (cache_init(&s->l1d, p->l1d_sets, p->l1d_ways) || cache_init(&s->l1i, p->l1i_sets, p->l1i_ways) ||
        cache_init(&s->l2, p->l2_sets, p->l2_ways) || cache_init(&s->l3, p->l3_sets, p->l3_ways) ||
        cache_init(&s->tlb2, p->dtlb2_sets, p->dtlb2_ways))
        goto fail;
    reset_state(s);
    return s;
fail:
    cm_free(s);
    return NULL;
}

void cm_free(cm_state *s) {
    if (!s) return;
    cache_free(&s->l1d); cache_free(&s->l1i); cache_free(&s->l2); cache_free(&s->l3); cache_free(&s->tlb2);
    free(s->line_head); free(s->bp); free(s->btb_tag); free(s->btb_target); free(s->ras);
    free(s->blocks); free(s->pool); free(s->lnodes); free(s->code); free(s->scratch);
    free(s->prof); free(s->prof_index);
    free(s);
}

/* Grow *buf (cap elements of `elem` bytes) to hold `need`, doubling up to `limit` (and to
 * `need` if that is more: one block always fits). */
static int grow(void **buf, uint32_t *cap, uint64_t need, uint32_t limit, size_t elem, uint32_t first) {
    if (need <= *cap) return 0;
    if (need > UINT32_MAX / 2) return -1;
    uint64_t c = *cap ? *cap : first;
    while (c < need) c *= 2;
    if (c > limit) c = limit;
    if (c < need) c = need;
    void *nb = realloc(*buf, (size_t)c * elem);
    if (!nb) return -1;
    *buf = nb;
    *cap = (uint32_t)c;
    return 0;
}

/* The table is full: forget every block but the one the hooks still refer to (the block that
 * ran last: its closing branch is still to be predicted, and cm_finish may take back the part of
 * it that did not run, from its own counts), and fold the profile counts of the others into the
 * profile of flushed blocks. */
static void flush_table(cm_state *s) {
    int32_t keep = s->prev >= 0 ? s->prev : s->cur; /* the hooks set both together (or clear both) */
    for (int32_t i = 0; i < s->nblocks; i++) {
        block_t *b = &s->blocks[i];
        if (i != keep) fold_profile(s, b->addr, b->prof_insns, b->prof_mc);
    }
    for (int i = 0; i < (1 << HASH_BITS); i++) s->buckets[i] = -1;
    for (int i = 0; i < (1 << FAST_BITS); i++) s->fast[i] = -1;
    memset(s->line_head, 0, ((size_t)1 << CODE_BITS) * sizeof *s->line_head);
    s->nblocks = 0;
    s->npool = s->ncode = 0;
    s->nlnodes = 0;
    if (keep >= 0) {
        /* Move it to the front: its data is at or past where it goes. */
        block_t b = s->blocks[keep];
        uint32_t nl = block_lines(&b);
        memmove(s->pool, s->pool + b.pool, (size_t)b.pool_len * sizeof *s->pool);
        if (b.size) memmove(s->code, s->code + b.code, b.size);
        b.pool = b.code = 0;
        b.lnode = 0;
        b.next = -1;
        s->blocks[0] = b;
        s->npool = b.pool_len;
        s->ncode = b.size;
        s->nlnodes = (int32_t)nl;
        s->nblocks = 1;
        if (b.state != B_DEAD) {
            uint32_t h = hash_key(b.addr, b.size);
            s->blocks[0].next = s->buckets[h];
            s->buckets[h] = 0;
        }
        if (b.state == B_LIVE) link_lines(s, 0);
        else for (uint32_t j = 0; j < nl; j++) s->lnodes[j].next = s->lnodes[j].prev = -1;
    }
    if (s->cur >= 0) s->cur = 0;
    if (s->prev >= 0) s->prev = 0;
    s->last_wline = UINT64_MAX;
    s->flushes++;
}

/* Fill slot idx, whose pool, code and line-node regions are set, with a decoded block. */
static void fill_block(cm_state *s, int32_t idx, uint64_t addr, uint32_t size, uint32_t n, const uint32_t *offs,
                       const uint32_t *costs, int kind, uint64_t target, int rep_last, int first_rep,
                       uint64_t rep_iter, uint64_t fe, const uint8_t *bytes) {
    block_t *b = &s->blocks[idx];
    b->addr = addr; b->size = size; b->n = n;
    b->kind = (uint8_t)kind; b->target = target; b->rep_last = (uint8_t)rep_last;
    b->first_rep = (uint8_t)first_rep; b->rep_iter = rep_iter; b->state = B_LIVE;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        s->pool[b->pool + i] = offs[i];
        s->pool[b->pool + n + i] = (uint32_t)sum;
        sum += costs[i];
    }
    s->pool[b->pool + 2 * n] = (uint32_t)sum;
    if (size) memcpy(s->code + b->code, bytes, size);
    b->base = sum;
    b->fe = fe;
    b->last_pc = n ? addr + offs[n - 1] : addr;
    b->line0 = addr >> 6;
    b->line1 = size ? (addr + size - 1) >> 6 : addr >> 6;
    link_lines(s, idx);
    s->last_wline = UINT64_MAX;
}

/* offs[n]: offset of each instruction; costs[n]: base millicycles of each; bytes: the block's
 * `size` bytes as decoded. */
int cm_add_block(cm_state *s, uint64_t addr, uint32_t size, uint32_t n, const uint32_t *offs,
                 const uint32_t *costs, int kind, uint64_t target, int rep_last, int first_rep,
                 uint64_t rep_iter, uint64_t fe, const uint8_t *bytes) {
    int32_t old = find_block(s, addr, size); /* one block per key: a forgotten one whose bytes changed */
    if (old >= 0) {
        block_t *o = &s->blocks[old];
        if (o->state == B_LIVE) forget_block(s, old);
        /* Same address and size: its code bytes and lines fit; the pool may not.  The block that
         * ran last is still read by the hooks (its closing branch, cm_finish), so it stays. */
        if (old != s->prev && old != s->cur && 2 * (uint64_t)n + 1 <= o->pool_len) {
            fill_block(s, old, addr, size, n, offs, costs, kind, target, rep_last, first_rep, rep_iter, fe, bytes);
            return old;
        }
        unhash(s, old);
        o->state = B_DEAD;
    }
    uint64_t lines = size ? ((addr + size - 1) >> 6) - (addr >> 6) + 1 : 0;
    int32_t kept = s->prev >= 0 || s->cur >= 0;
    if (s->nblocks > kept &&
        (s->nblocks >= s->max_blocks || (uint64_t)s->npool + 2 * n + 1 > s->max_pool ||
         (uint64_t)s->nlnodes + lines > (uint64_t)s->max_lnodes || (uint64_t)s->ncode + size > s->max_code))
        flush_table(s);
    uint32_t cap_blocks = (uint32_t)s->cap_blocks, cap_lnodes = (uint32_t)s->cap_lnodes;
    int failed =
        grow((void **)&s->blocks, &cap_blocks, (uint64_t)s->nblocks + 1, (uint32_t)s->max_blocks, sizeof *s->blocks, 1024) ||
        grow((void **)&s->pool, &s->cap_pool, (uint64_t)s->npool + 2 * n + 1, s->max_pool, sizeof *s->pool, 8192) ||
        grow((void **)&s->lnodes, &cap_lnodes, (uint64_t)s->nlnodes + lines, (uint32_t)s->max_lnodes, sizeof *s->lnodes, 2048) ||
        grow((void **)&s->code, &s->cap_code, (uint64_t)s->ncode + size, s->max_code, 1, 32768) ||
        grow((void **)&s->scratch, &s->cap_scratch, size, UINT32_MAX / 2, 1, 4096);
    s->cap_blocks = (int32_t)cap_blocks;
    s->cap_lnodes = (int32_t)cap_lnodes;
    if (failed) return -1;
    int32_t idx = s->nblocks++;
    block_t *b = &s->blocks[idx];
    memset(b, 0, sizeof *b);
    b->pool = s->npool;
    b->pool_len = 2 * n + 1;
    s->npool += 2 * n + 1;
    b->code = s->ncode;
    s->ncode += size;
    b->lnode = s->nlnodes;
    s->nlnodes += (int32_t)lines;
    uint32_t h = hash_key(addr, size);
    b->next = s->buckets[h];
    s->buckets[h] = idx;
    fill_block(s, idx, addr, size, n, offs, costs, kind, target, rep_last, first_rep, rep_iter, fe, bytes);
    return idx;
}

void cm_set_budget(cm_state *s, int on, uint64_t n) { s->budget_on = on; s->budget = n; s->budget_stop = 0; }

/* Correct the count of the last block for an early stop at stop_pc. */
void cm_finish(cm_state *s, uint64_t stop_pc) {
    int32_t c = s->cur;
    int budget_stop = s->budget_stop;
    s->budget_stop = 0;
    s->prev = -1; /* the next emu_start does not continue from this block's closing branch */
    if (c < 0 || budget_stop) { s->cur = -1; return; }
    block_t *b = &s->blocks[c];
    int32_t i = insn_index(s, b, stop_pc);
    if (i < 0 || s->cur_cont) { s->cur = -1; return; }
    /* Stopped at the block's start: either it never ran (a precise stop before its first
     * instruction, or a fault there) or it ran to its end and jumped back to its own start (a
     * stop between blocks).  Only the second leaves traces: a memory access or an `out`. */
    int active = s->active_seq == s->seq || s->counters[C_LOADS] + s->counters[C_STORES] != s->mem_at_block;
    if (i == 0 && s->fault_seq != s->seq && active) { s->cur = -1; return; }
    uint64_t undone = b->base - s->pool[b->pool + b->n + (uint32_t)i];
    s->insns -= b->n - (uint32_t)i;
    b->prof_insns -= b->n - (uint32_t)i;
    s->mc -= undone;
    b->prof_mc -= undone;
    if (s->fe > s->mc) s->fe = s->mc;
    s->cur = -1;
}

uint64_t cm_instructions(cm_state *s) { return s->insns; }
uint64_t cm_cycles(cm_state *s) { return s->mc / 1000; }
uint64_t cm_millicycles(cm_state *s) { return s->mc; }
int cm_error(cm_state *s) { return s->error; }
int cm_budget_stopped(cm_state *s) { return s->budget_stop; }
void cm_counters(cm_state *s, uint64_t *out) {
    memcpy(out, s->counters, sizeof s->counters);
    /* base = everything that is not a penalty (not counted per block: it is the hot path) */
    out[C_BASE] = s->mc - s->counters[C_MEM_MC] - s->counters[C_TLB_MC] - s->counters[C_BRANCH_MC] -
                  s->counters[C_FETCH_MC] - s->counters[C_FRONTEND_MC] - s->halted_mc;
}
int cm_ncounters(void) { return C_NCOUNTERS; }
int32_t cm_nblocks(cm_state *s) { return s->nblocks; }
/* Rows of the flat profile: the blocks in the table, then the folded rows of flushed blocks,
 * then the unattributed row (at CM_UNATTRIBUTED) if it counted anything. */
int32_t cm_nprofile(cm_state *s) { return s->nblocks + s->nprof + (s->unattr_insns || s->unattr_mc); }
/* Copy up to `max` rows (address, instructions, millicycles) into out[3 * max]; returns how many. */
int32_t cm_profile_rows(cm_state *s, uint64_t *out, int32_t max) {
    int32_t r = 0;
    for (int32_t i = 0; i < s->nblocks && r < max; i++, r++) {
        out[3 * r] = s->blocks[i].addr; out[3 * r + 1] = s->blocks[i].prof_insns; out[3 * r + 2] = s->blocks[i].prof_mc;
    }
    for (int32_t i = 0; i < s->nprof && r < max; i++, r++) memcpy(out + 3 * r, s->prof[i], sizeof s->prof[i]);
    if ((s->unattr_insns || s->unattr_mc) && r < max) {
        out[3 * r] = CM_UNATTRIBUTED; out[3 * r + 1] = s->unattr_insns; out[3 * r + 2] = s->unattr_mc;
        r++;
    }
    return r;
}
/* Bounds of the block table (for tests: the defaults are MAX_BLOCKS, MAX_PROFILE_ROWS).  Only
 * before the first block; returns -1 after it or for a bound below 1. */
int cm_set_limits(cm_state *s, int32_t max_blocks, int32_t max_profile_rows) {
    if (s->nblocks || s->flushes || max_blocks < 1 || max_profile_rows < 1 || max_blocks > (1 << 24)) return -1;
    set_limits(s, max_blocks, max_profile_rows);
    return 0;
}
/* out[6]: blocks in the table, bytes allocated for the table and the profile of flushed blocks,
 * flushes, blocks decoded by Python, forgotten blocks restored unchanged, folded profile rows. */
void cm_table_stats(cm_state *s, uint64_t *out) {
    out[0] = (uint64_t)s->nblocks;
    out[1] = (uint64_t)s->cap_blocks * sizeof *s->blocks + (uint64_t)s->cap_pool * sizeof *s->pool +
             (uint64_t)s->cap_lnodes * sizeof *s->lnodes + s->cap_code + s->cap_scratch +
             ((uint64_t)1 << CODE_BITS) * sizeof *s->line_head + (uint64_t)s->cap_prof * sizeof *s->prof +
             (s->prof_index ? ((uint64_t)s->prof_mask + 1) * sizeof *s->prof_index : 0);
    out[2] = s->flushes;
    out[3] = s->decodes;
    out[4] = s->restores;
    out[5] = (uint64_t)s->nprof;
}
/* Forget decoded blocks overlapping [lo, hi) (the host rewrote guest code). */
void cm_invalidate(cm_state *s, uint64_t lo, uint64_t hi) { invalidate_code(s, lo, hi); }

/* An empty memory hook: the benchmark's measure of what Unicorn's hook dispatch alone costs. */
static void hook_mem_nop(uc_engine *uc, int type, uint64_t addr, int size, int64_t value, void *user) {
    (void)uc; (void)type; (void)addr; (void)size; (void)value; (void)user;
}
void *cm_hook_mem_nop(void) { return (void *)hook_mem_nop; }
void *cm_hook_block(void) { return (void *)hook_block; }
void *cm_hook_mem(void) { return (void *)hook_mem; }
void *cm_hook_rdtsc(void) { return (void *)hook_rdtsc; }
void *cm_hook_rdtscp(void) { return (void *)hook_rdtscp; }
/* The CPU halted (`hlt` with interrupts on) until a device's event at `until_mc`: the clock
 * jumps there. Nothing else moves: no instruction retired and no cache was touched. */
void cm_idle(cm_state *s, uint64_t until_mc) {
    if (until_mc <= s->mc) return;
    s->halted_mc += until_mc - s->mc;
    s->mc = until_mc;
    if (s->fe < s->mc) s->fe = s->mc;
}
uint64_t cm_halted_mc(cm_state *s) { return s->halted_mc; }

void *cm_hook_intr(void) { return (void *)hook_intr; }
void *cm_hook_out(void) { return (void *)hook_out; }
void *cm_hook_invalid(void) { return (void *)hook_invalid; }
void *cm_hook_mem_invalid(void) { return (void *)hook_mem_invalid; }

/* setuptools builds this as a Python extension; emulator/cycles/native.py loads it with ctypes. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cyclemodel",
                                    "Native hooks of the cycle model (used through ctypes).", -1,
                                    NULL, NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__cyclemodel(void) { return PyModule_Create(&module); }
