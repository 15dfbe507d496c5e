/* Native instruction counter and Zen 4 cycle model behind emulator/cycles/ (accounting.py).
 *
 * Unicorn calls the hooks below directly (registered from Python with uc_hook_add through
 * ctypes), so nothing runs in Python per instruction, per memory access or per new block.  A
 * block seen for the first time is decoded here with capstone's C library (the one the capstone
 * package ships), each instruction classified and the block costed from the parameters that
 * cycle_model.toml gives (handed down once, in cm_new).  The Unicorn and capstone functions this
 * needs are passed in as addresses from the libraries the Python packages loaded, so this object
 * links against nothing but libc.
 *
 * Costs are kept in millicycles (1/1000 cycle) so that throughput-bound instructions can cost
 * a fraction of a cycle; reported cycles are the integer part.  Every decision depends only on
 * guest addresses and guest behaviour, never on host addresses or host time.
 *
 * Addresses.  The block hook gets the guest's virtual PC; the memory hooks get physical
 * addresses (Unicorn 2.1.4 passes the translated address, docs/unicorn-notes.md).  The caches
 * (L1I, L1D, L2, L3) are indexed and tagged by physical address: a block's code lines are
 * translated when it is decoded, and the L1s' set index lies inside the page offset, so their
 * virtual and physical indexes agree.  The DTLBs are keyed by virtual page, tagged by address
 * space: the physical page of an access is mapped back to its virtual page through the guest's
 * page tables (walked here, the result cached per page) - see docs/cycle-model.md.
 *
 * The table of decoded blocks is bounded, whatever the guest does (code that rewrites itself,
 * or runs ever-fresh memory, meets a new block at every turn).  A block is keyed by (address,
 * size) and is in one of three states: live (decoded, used by the block hook), forgotten (a
 * guest or host write touched its code: it keeps its bytes, and when the same key runs again
 * with the same bytes it is live again without decoding; with other bytes it is decoded
 * again into its own slot) and dead (a slot that only holds profile counts: the new decoding
 * did not fit in it, or the hooks still referred to it).  Blocks are found for a write through
 * a per-page flag and a per-code-line index (by physical line), so a write costs the blocks on
 * its lines, not all blocks.  When the table (blocks, offset/cost pool, line index or code
 * bytes) is full, it is flushed, as QEMU flushes its translation cache: every block is forgotten
 * for good and decoded again on its next execution, and the profile counts of the flushed blocks
 * are folded into a bounded table keyed by start address (past its size, into one unattributed
 * row, CM_UNATTRIBUTED).  None of this changes a count: a block is the same whether restored,
 * kept or decoded again.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <dlfcn.h>

/* Unicorn ABI pieces (unicorn/unicorn.h, x86.h of 2.1.4). */
typedef void uc_engine;
typedef int (*uc_reg_rw_t)(uc_engine *, int, void *);
typedef int (*uc_emu_stop_t)(uc_engine *);
typedef int (*uc_vmem_read_t)(uc_engine *, uint64_t, int, void *, size_t);
typedef int (*uc_mem_read_t)(uc_engine *, uint64_t, void *, size_t);
typedef int (*uc_vmem_translate_t)(uc_engine *, uint64_t, int, uint64_t *);
/* uc_mem_hook_filter() of the patched build (third_party/unicorn patch 0014): while enabled (by
 * Unicorn), a load or store to line[0] / line[1] (physical address >> 6, set here) that the hook
 * would only count is counted in count[] by translated code, without calling it. */
typedef struct { uint64_t line[2], count[2], enabled[2]; } uc_mem_filter;
typedef int (*uc_mem_hook_filter_t)(uc_engine *, void *, void *, uc_mem_filter *);
typedef struct { uint16_t selector; uint64_t base; uint32_t limit, flags; } uc_x86_mmr;
typedef struct { uint32_t rid; uint64_t value; } uc_x86_msr;
#define UC_PROT_READ 1
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
#define UC_X86_REG_CR3 53
#define UC_X86_REG_CR4 54
#define UC_X86_REG_GDTR 243
#define UC_X86_REG_MSR 248
#define MSR_EFER 0xC0000080u
#define CR0_PE 1ull
#define CR0_PG (1ull << 31)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define CR4_LA57 (1ull << 12)
#define EFER_LMA (1ull << 10)
#define DESC_LONG 0x20
#define DESC_DB 0x40

/* Capstone ABI pieces (capstone/capstone.h and x86.h of 5.0): the fields the decoder reads.
 * native.py checks these offsets against the capstone package's own declarations before use
 * (cm_capstone_abi). */
typedef size_t csh;
typedef struct { uint32_t segment, base, index; int32_t scale; int64_t disp; } cs_x86_op_mem;
typedef struct {
    uint32_t type;
    union { uint32_t reg; int64_t imm; cs_x86_op_mem mem; };
    uint8_t size, access;
    uint32_t avx_bcast;
    uint8_t avx_zero_opmask;
} cs_x86_op;
typedef struct {
    uint8_t prefix[4], opcode[4], rex, addr_size, modrm, sib;
    int64_t disp;
    uint32_t sib_index;
    int8_t sib_scale;
    uint32_t sib_base, xop_cc, sse_cc, avx_cc;
    uint8_t avx_sae;
    uint32_t avx_rm;
    uint64_t flags;
    uint8_t op_count;
    cs_x86_op operands[8];
} cs_x86;
typedef struct {
    uint16_t regs_read[20];
    uint8_t regs_read_count;
    uint16_t regs_write[20];
    uint8_t regs_write_count;
    uint8_t groups[8];
    uint8_t groups_count;
    uint8_t writeback;
    cs_x86 x86;                /* the first member of the per-architecture union */
} cs_detail;
typedef struct {
    uint32_t id;
    uint64_t address;
    uint16_t size;
    uint8_t bytes[24];
    char mnemonic[32];
    char op_str[160];
    cs_detail *detail;
} cs_insn;
typedef int (*cs_open_t)(int arch, int mode, csh *handle);
typedef int (*cs_option_t)(csh handle, int type, size_t value);
typedef int (*cs_close_t)(csh *handle);
typedef cs_insn *(*cs_malloc_t)(csh handle);
typedef void (*cs_free_t)(cs_insn *insn, size_t count);
typedef _Bool (*cs_disasm_iter_t)(csh handle, const uint8_t **code, size_t *size, uint64_t *address, cs_insn *insn);
typedef const char *(*cs_reg_name_t)(csh handle, unsigned int reg_id);
typedef int (*cs_regs_access_t)(csh handle, const cs_insn *insn, uint16_t *regs_read, uint8_t *nread,
                                uint16_t *regs_write, uint8_t *nwrite);
#define CS_ARCH_X86 3
#define CS_MODE_16 2
#define CS_MODE_32 4
#define CS_MODE_64 8
#define CS_OPT_DETAIL 2
#define CS_OPT_ON 3
#define CS_AC_READ 1
#define CS_AC_WRITE 2
#define X86_OP_REG 1
#define X86_OP_IMM 2
#define X86_OP_MEM 3
#define X86_GRP_JUMP 1
#define X86_GRP_CALL 2
#define X86_GRP_FPU 169
#define MAX_REGS 256           /* capstone 5's X86_REG_ENDING is 246 */

/* The layout native.py compares with the capstone package's ctypes declarations. */
static const int64_t CAPSTONE_ABI[] = {
    offsetof(cs_insn, address), offsetof(cs_insn, size), offsetof(cs_insn, mnemonic), offsetof(cs_insn, detail),
    offsetof(cs_detail, groups), offsetof(cs_detail, groups_count), offsetof(cs_detail, x86),
    offsetof(cs_x86, prefix), offsetof(cs_x86, op_count), offsetof(cs_x86, operands), sizeof(cs_x86_op),
    offsetof(cs_x86_op, reg), offsetof(cs_x86_op, access),
};
#define CAPSTONE_ABI_N ((int)(sizeof CAPSTONE_ABI / sizeof CAPSTONE_ABI[0]))

/* Control-transfer kind of a block's last instruction. */
enum { K_NONE = 0, K_COND = 1, K_JMP = 2, K_JMP_IND = 3, K_CALL = 4, K_CALL_IND = 5, K_RET = 6 };

/* Instruction classes, in the order of INSN_CLASSES in emulator/cycles/native.py (the names of
 * cycle_model.toml's [classes]). */
enum { IC_OTHER, IC_NOP, IC_MOV, IC_ALU, IC_LEA, IC_SHIFT, IC_IMUL, IC_DIV, IC_LOAD, IC_STORE, IC_PUSH, IC_POP,
       IC_BRANCH, IC_CALL, IC_RET, IC_LOCK_RMW, IC_LOCK_CMPXCHG, IC_XCHG_MEM, IC_MFENCE, IC_LFENCE, IC_SFENCE,
       IC_RDTSC, IC_CPUID, IC_PAUSE, IC_STRING, IC_REP_STRING, IC_SYSTEM, IC_IO, IC_SIMD, IC_X87, IC_N };
/* Resource pools: these ids are fixed (POOLS in native.py); a parameter file's other pools follow. */
enum { P_NONE, P_ALU, P_LOAD, P_STORE, P_BRANCH, P_SERIAL, P_AGU, P_DISPATCH, P_FIXED };
#define MAX_POOLS 32
/* String instructions that take a rep prefix (rep_rate's order). */
enum { R_NONE, R_MOVS, R_STOS, R_LODS, R_CMPS, R_SCAS };

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
    int64_t mode;                              /* 16 or 64: how the PC reads (read_pc) */
    int64_t bits;                              /* the instance's mode: 16, 32 or 64 */
} cm_params;

/* What a block's cost is made of (CCosts in native.py): per class its pool, latency and
 * reciprocal throughput in cycles, as cycle_model.toml gives them (a class the file lacks has
 * `other`'s figures); the core's widths; rep iteration rates; the fusing mnemonics. */
typedef struct {
    int64_t cls_pool[IC_N];
    double cls_latency[IC_N], cls_throughput[IC_N];
    int64_t npools;
    double l1_latency, dispatch_width, op_cache_width;
    double rep_rate[6];                        /* by R_*: movs, stos per byte; the others per element */
    char fusion[512];                          /* NUL-separated mnemonics, ended by an empty one */
} cm_costs;

/* The library functions the model calls (CFuncs in native.py). */
typedef struct {
    void *reg_read, *reg_write, *emu_stop, *vmem_read, *mem_read, *vmem_translate;
    void *cs_open, *cs_option, *cs_close, *cs_malloc, *cs_free, *cs_disasm_iter, *cs_reg_name, *cs_regs_access;
} cm_funcs;

/* Block states (see the top of the file). */
enum { B_DEAD = 0, B_LIVE = 1, B_FORGOTTEN = 2 };
/* Block flags: it writes CR3 (a new address space for the DTLBs), or something else that can
 * change address translation (CR0/CR4, an MSR, invlpg, ...). */
enum { F_CR3 = 1, F_PAGING = 2 };

/* The fields the block hook reads on every execution come first (one host cache line). */
typedef struct {
    uint64_t addr;
    uint32_t size, n;
    uint64_t base;             /* back-end millicycles of all instructions (L1 hits, predicted branches) */
    uint64_t fe;               /* front-end millicycles to deliver its macro-ops */
    uint64_t line0, line1;     /* first and last 64-byte code line (virtual) */
    uint64_t pline0;           /* physical line of line0: its page is the block's first frame */
    uint8_t kind, rep_last, first_rep, state, bits, flags;
    uint64_t last_pc;
    uint64_t prof_insns, prof_mc;
    uint64_t frame1;           /* physical page of its last byte */
    uint64_t rep_iter;         /* millicycles per further iteration of a trailing rep instruction */
    uint32_t pool;             /* index of n offsets and n+1 cost prefixes */
    uint32_t code;             /* index of its `size` bytes in s->code */
    uint32_t pool_len;         /* length of its region of the pool (at least 2 n + 1) */
    int32_t next;              /* hash chain (live and forgotten blocks; -1 ends it) */
    int32_t lnode;             /* index of its line-index nodes, one per code line */
} block_t;

/* Line index: node k of block b stands for code line b->line0 + (k - b->lnode), filed under its
 * physical line.  Links are node index + 1 (0: none), so a calloc'd head table is empty; an
 * unlinked node has next < 0. */
typedef struct { int32_t block, next, prev; } lnode_t;

typedef struct {
    uint64_t *tag;             /* per set, most recent first; tag = line + 1, 0 = empty */
    uint64_t mask, ways;       /* sets - 1 (sets are a power of two) */
} cache_t;

enum { C_BASE, C_L1D_MISS, C_L2_MISS, C_L3_MISS, C_L1I_MISS, C_DTLB1_MISS, C_DTLB2_MISS,
       C_MISPREDICT, C_BTB_MISS, C_REP_ITER, C_MEM_MC, C_TLB_MC, C_BRANCH_MC, C_FETCH_MC,
       C_LOADS, C_STORES, C_BRANCHES, C_FRONTEND_MC, C_NCOUNTERS };

#define HASH_BITS 16
#define FAST_BITS 12
#define CODE_BITS 20           /* the line index's most buckets: 2^CODE_BITS */
#define CODE_BITS_MIN 12       /* its first: it grows (x4) while it links more than 2 nodes a bucket */
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

/* Per physical page below 4 GiB, one byte: it holds lines of decoded code (set when a block is
 * made live there, cleared when the table is flushed) or one of the guest's page tables (as of
 * the last walk).  A write to a page with neither costs one load. */
#define PAGEMAP_PAGES (1u << 20)
enum { PG_CODE = 1, PG_TABLE = 2 };

/* Reverse translation (physical page -> virtual page) for the DTLBs: the leaf mappings of the
 * last walk, merged into extents, and a direct-mapped cache of answers.  The walk is bounded. */
typedef struct { uint64_t vpage, ppage, npages; } extent_t;
typedef struct { uint64_t ppage, vpage; uint32_t gen; } rcache_t; /* one host line a lookup */
typedef struct { uint64_t tag, target; } btb_entry;
#define MAX_WALK_TABLES 4096
#define MAX_EXTENTS (1 << 16)
#define RCACHE_SLOTS 4096
/* The DTLBs' key: the virtual page, with the address-space tag above it (bits 52 and up). */
#define ASID_SHIFT 52

/* One decoded instruction: what costing it needs. */
typedef struct {
    uint32_t off, len;
    uint8_t cls, kind, rep, rep_bytes, reads_mem, writes_mem, fuses, npools, ends_block, flags;
    uint8_t pool[6];
    double t[6];               /* cycles of each pool it takes, in the order the model adds them */
    double latency;
    uint64_t reads[MAX_REGS / 64], writes[MAX_REGS / 64]; /* canonical registers */
} insn_t;

typedef struct {
    cm_params p;
    cm_costs c;
    uc_reg_rw_t reg_read, reg_write;
    uc_emu_stop_t emu_stop;
    uc_vmem_read_t vmem_read;
    uc_mem_read_t mem_read;
    uc_vmem_translate_t vmem_translate;

    /* capstone: one handle per decoding width (16, 32, 64), each with its instruction */
    cs_option_t cs_option;
    cs_close_t cs_close;
    cs_free_t cs_free;
    cs_disasm_iter_t cs_disasm_iter;
    cs_regs_access_t cs_regs_access;
    csh cs[3];
    int cs_open[3];
    cs_insn *ci[3];
    /* per capstone register id: its canonical register (RAX for AL, ...; CANON_NONE for the
     * instruction pointer) and what its name says (REGF_*) */
    uint16_t canon[MAX_REGS];
    uint8_t regf[MAX_REGS];
    uint16_t canon_rsp;
    /* decoding scratch: the block's bytes, two decodings (two widths), costing tables */
    uint8_t *dbuf;
    uint32_t cap_dbuf;
    insn_t *dec[2];
    uint32_t cap_dec;
    uint32_t *doffs, *dcosts;
    int64_t *dweights;
    double *deps;              /* local registers x local registers: longest paths */
    uint32_t cap_deps;

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
    int32_t *line_head;        /* per hashed physical 64-byte line: first node of the live blocks on it, + 1 */
    uint32_t line_bits;        /* line_head has 2^line_bits buckets */
    uint32_t nlinked;          /* nodes linked into it */
    uint8_t *pagemap;

    /* Profile of flushed blocks: rows (address, instructions, millicycles), found through an
     * open-addressing index (row + 1), and the row past max_prof. */
    uint64_t (*prof)[3];
    int32_t nprof, cap_prof, max_prof;
    int32_t *prof_index;
    uint32_t prof_mask;
    uint64_t unattr_insns, unattr_mc;
    uint64_t flushes, decodes, restores;

    /* Guest paging, as last read; the reverse map of its tables. */
    int paging_check;          /* read CR0/CR3/CR4/EFER again before the next translation */
    int paging;                /* 0 (off: virtual = physical), 2 (32-bit), 3 (PAE), 4 or 5 levels */
    uint64_t cr3, cr4;
    uint64_t asid;             /* address-space tag of DTLB entries: a new one at each CR3 write */
    int rmap_stale, pt_high;   /* pt_high: a table lies above 4 GiB (the page map does not cover it) */
    extent_t *ext;
    uint32_t next, cap_ext;
    uint64_t *pt_frames;
    uint32_t npt, cap_pt;
    rcache_t *rc;              /* reverse translations by physical page, valid for their walk (gen) */
    uint32_t gen;
    uint8_t *walkbuf;          /* one table per level */
    uint32_t walk_reads;       /* tables read by the current walk (a table reached twice counts twice) */
    uint64_t walks;

    uint64_t insns, mc;        /* retired instructions, millicycles (the back end's clock) */
    uint64_t fe, fe_line;      /* the front end's clock; the 64-byte line of its open fetch window */
    uint64_t budget_at;        /* stop at the block boundary where insns reaches it (UINT64_MAX: never) */
    int budget_stop, error;
    int cur_cont;              /* the current block is a rep continuation (counted nothing) */
    int32_t cur, prev;
    uint64_t seq, fault_seq, active_seq; /* block serial; last block that faulted / did an `out` */
    uint64_t mem_at_block;     /* loads + stores when the current block started */

    cache_t l1d, l1i, l2, l3;
    uint64_t clock;            /* L1 DTLB LRU stamps */
    uint64_t last_line, last_fetch_line, last_page, last_wline;
    uint64_t hit_line;         /* last_line when last_page is its page (an access there hits both), else UINT64_MAX */
    /* Unicorn counts the accesses hook_mem would only count (loads to hit_line; stores to it
     * while its page holds neither code nor a page table): filter_sync keeps the lines, the
     * counts are added to C_LOADS / C_STORES before those are read (filter_fold). */
    uc_mem_filter filter;
    uc_mem_hook_filter_t mem_hook_filter; /* NULL: a Unicorn without it */
    int filter_tried;

    uint64_t tlb1_page[128], tlb1_stamp[128];
    int32_t tlb1_next[128], tlb1_head[TLB1_BUCKETS];
    int32_t tlb1_n;
    cache_t tlb2;

    uint8_t *bp;
    uint64_t ghist, bp_mask, hist_mask;
    btb_entry *btb;            /* by slot: tag (pc + 1, 0 = empty) and target, one host line a lookup */
    uint64_t btb_mask;
    uint64_t *ras;
    int64_t ras_top, ras_depth;

    uint64_t counters[C_NCOUNTERS];
    uint64_t halted_mc;                /* clock advanced while the CPU waited in `hlt` for an interrupt */
} cm_state;

/* cm_error's codes (accounting.py words them). */
enum { E_NONE = 0, E_CODE = 1, E_MEMORY = 2 };

static inline uint32_t hash_key(uint64_t addr, uint32_t size) {
    uint64_t h = (addr ^ ((uint64_t)size << 48)) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> (64 - HASH_BITS));
}
static inline uint32_t fast_key(uint64_t addr) {
    return (uint32_t)((addr * 0x9E3779B97F4A7C15ull) >> (64 - FAST_BITS));
}
static inline uint32_t code_key(const cm_state *s, uint64_t line) {
    return (uint32_t)((line * 0x9E3779B97F4A7C15ull) >> (64 - s->line_bits));
}

/* Zeroed memory for a large table the model touches sparsely (the L3's tags, the line index, the
 * page map): mapped on its own, so it is zeroed as it is touched, not all at allocation (a heap
 * block is), and in 2 MiB pages where the kernel allows, so a run touching much of it takes a few
 * page faults, not one per 4 KiB. */
#define TABLE_MAP_BYTES (256u << 10)
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
static size_t table_bytes(size_t bytes) { return (bytes + 4095) & ~(size_t)4095; }
static void *table_alloc(size_t bytes) {
    if (bytes < TABLE_MAP_BYTES) return calloc(1, bytes);
    bytes = table_bytes(bytes);
    size_t len = bytes + (bytes >= HUGE_PAGE_BYTES ? HUGE_PAGE_BYTES : 0);
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (len == bytes) return p;
    uint8_t *q = (uint8_t *)(((uintptr_t)p + HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(HUGE_PAGE_BYTES - 1));
    if (q > p) munmap(p, (size_t)(q - p));
    if (p + len > q + bytes) munmap(q + bytes, (size_t)(p + len - (q + bytes)));
#ifdef MADV_HUGEPAGE
    madvise(q, bytes, MADV_HUGEPAGE);
#endif
    return q;
}
static void table_free(void *t, size_t bytes) {
    if (!t) return;
    if (bytes < TABLE_MAP_BYTES) free(t);
    else munmap(t, table_bytes(bytes));
}

static int cache_init(cache_t *c, int64_t sets, int64_t ways) {
    c->tag = NULL;
    if (sets <= 0 || ways <= 0 || (sets & (sets - 1))) return -1; /* sets: a power of two */
    c->mask = (uint64_t)sets - 1;
    c->ways = (uint64_t)ways;
    c->tag = table_alloc((size_t)(sets * ways) * sizeof(uint64_t));
    return c->tag ? 0 : -1;
}
static void cache_free(cache_t *c) {
    table_free(c->tag, (size_t)((c->mask + 1) * c->ways) * sizeof(uint64_t));
    c->tag = NULL;
}

/* Look up `key` in a set-associative LRU structure; fill on a miss.  Returns 1 on a hit.
 * Each set keeps its tags in recency order (most recent first), which is exact LRU and makes
 * the common hit on the most recent way one compare. */
static inline int cache_access(cache_t *c, uint64_t key) {
    uint64_t *tag = c->tag + (key & c->mask) * c->ways;
    uint64_t want = key + 1, moved = tag[0];
    if (moved == want) return 1;
    /* Each way moves down one until the key's way (a hit) or past the last (a miss, which drops
     * the least recent); the key goes first. A loop, not memmove: sets are a few ways. */
    for (uint64_t w = 1; w < c->ways; w++) {
        uint64_t t = tag[w];
        tag[w] = moved;
        if (t == want) {
            tag[0] = want;
            return 1;
        }
        moved = t;
    }
    tag[0] = want;
    return 0;
}

/* A line missed its L1: look in L2, L3, DRAM; returns the penalty in millicycles. */
__attribute__((noinline)) static uint64_t outer_access(cm_state *s, uint64_t line) {
    if (cache_access(&s->l2, line)) return (uint64_t)s->p.l2_hit;
    s->counters[C_L2_MISS]++;
    if (cache_access(&s->l3, line)) return (uint64_t)s->p.l3_hit;
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
    if (cache_access(&s->l1d, line)) return 0;
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
    if (cache_access(&s->tlb2, page)) return (uint64_t)s->p.dtlb2_hit;
    s->counters[C_DTLB2_MISS]++;
    return (uint64_t)s->p.page_walk;
}

/* ---- guest paging: physical pages back to virtual pages, for the DTLBs ------------------ */

static inline uint8_t page_flags(const cm_state *s, uint64_t page) {
    if (page < PAGEMAP_PAGES) return s->pagemap[page];
    return (uint8_t)(PG_CODE | (s->pt_high ? PG_TABLE : 0)); /* not covered: look further */
}

/* The filter's lines after hit_line (or a page's flags) changed: a load to hit_line only counts,
 * a store to it too while its page is not special (hook_mem's hit case). */
static inline void filter_sync(cm_state *s) {
    uint64_t line = s->hit_line;
    s->filter.line[0] = line;
    s->filter.line[1] = line != UINT64_MAX && !page_flags(s, line >> 6) ? line : UINT64_MAX;
}

/* The accesses Unicorn counted for hook_mem, into the counters. */
static inline void filter_fold(cm_state *s) {
    s->counters[C_LOADS] += s->filter.count[0];
    s->counters[C_STORES] += s->filter.count[1];
    s->filter.count[0] = s->filter.count[1] = 0;
}

/* Read CR0, CR3, CR4 and EFER; a change of translation makes the reverse map stale, a new CR3
 * a new address space. */
__attribute__((noinline)) static void paging_refresh(cm_state *s, uc_engine *uc) {
    uint64_t cr0 = 0, cr3 = 0, cr4 = 0;
    s->paging_check = 0;
    s->reg_read(uc, UC_X86_REG_CR0, &cr0);
    int paging = 0;
    if ((cr0 & CR0_PG) && (cr0 & CR0_PE)) {
        uc_x86_msr efer = {MSR_EFER, 0};
        s->reg_read(uc, UC_X86_REG_CR3, &cr3);
        s->reg_read(uc, UC_X86_REG_CR4, &cr4);
        s->reg_read(uc, UC_X86_REG_MSR, &efer);
        paging = (efer.value & EFER_LMA) ? ((cr4 & CR4_LA57) ? 5 : 4) : (cr4 & CR4_PAE) ? 3 : 2;
    }
    if (paging != s->paging || (paging && (cr3 != s->cr3 || ((cr4 ^ s->cr4) & CR4_PSE)))) {
        if (cr3 != s->cr3) s->asid++;
        s->paging = paging;
        s->cr3 = cr3;
        s->cr4 = cr4;
        s->rmap_stale = 1;
    }
}

static void note_table(cm_state *s, uint64_t paddr) {
    uint64_t frame = paddr >> 12;
    s->filter.line[1] = UINT64_MAX; /* its stores may be special now */
    if (frame >= PAGEMAP_PAGES) { s->pt_high = 1; return; }
    if (s->pagemap[frame] & PG_TABLE) return;
    if (s->npt == s->cap_pt) {
        uint32_t cap = s->cap_pt ? 2 * s->cap_pt : 256;
        uint64_t *np = realloc(s->pt_frames, cap * sizeof *np);
        if (!np) return; /* unflagged: its writes go unseen until the next walk */
        s->pt_frames = np;
        s->cap_pt = cap;
    }
    s->pt_frames[s->npt++] = frame;
    s->pagemap[frame] |= PG_TABLE;
}

static void add_extent(cm_state *s, uint64_t vaddr, uint64_t paddr, uint64_t bytes) {
    uint64_t vp = vaddr >> 12, pp = paddr >> 12, n = bytes >> 12;
    if (s->next) {
        extent_t *e = &s->ext[s->next - 1];
        if (e->vpage + e->npages == vp && e->ppage + e->npages == pp) { e->npages += n; return; }
    }
    if (s->next == MAX_EXTENTS) return;
    if (s->next == s->cap_ext) {
        uint32_t cap = s->cap_ext ? 2 * s->cap_ext : 256;
        extent_t *ne = realloc(s->ext, cap * sizeof *ne);
        if (!ne) return;
        s->ext = ne;
        s->cap_ext = cap;
    }
    s->ext[s->next++] = (extent_t){vp, pp, n};
}

/* A table of 64-bit entries at `level` (1 = page table) mapping from `vbase`: record its leaves. */
static void walk64(cm_state *s, uc_engine *uc, uint64_t table, int level, uint64_t vbase, int vbits) {
    if (s->walk_reads >= MAX_WALK_TABLES) return; /* a table may map itself: bound the reads, not the tables */
    s->walk_reads++;
    note_table(s, table);
    uint64_t *e = (uint64_t *)(s->walkbuf + 4096 * (size_t)(level - 1));
    if (s->mem_read(uc, table, e, 4096) != 0) return;
    int shift = 12 + 9 * (level - 1);
    for (uint64_t i = 0; i < 512; i++) {
        uint64_t v = e[i];
        if (!(v & 1)) continue;
        uint64_t va = vbase + (i << shift);
        if (level == 1 || (level <= 3 && (v & 0x80))) {
            uint64_t size = 1ull << shift;
            uint64_t pa = v & 0x000FFFFFFFFFF000ull & ~(size - 1);
            if (vbits < 64 && (va & (1ull << (vbits - 1)))) va |= ~0ull << vbits; /* canonical */
            add_extent(s, va, pa, size);
        } else {
            walk64(s, uc, v & 0x000FFFFFFFFFF000ull, level - 1, va, vbits);
        }
    }
}

/* Walk the guest's page tables from CR3 (bounded: MAX_WALK_TABLES tables, MAX_EXTENTS extents;
 * a page past the bounds stands for itself). */
__attribute__((noinline)) static void rmap_rebuild(cm_state *s, uc_engine *uc) {
    s->rmap_stale = 0;
    s->gen++;
    s->walks++;
    for (uint32_t i = 0; i < s->npt; i++) s->pagemap[s->pt_frames[i]] &= (uint8_t)~PG_TABLE;
    s->npt = 0;
    s->next = 0;
    s->pt_high = 0;
    s->walk_reads = 0;
    if (s->paging >= 4) {
        walk64(s, uc, s->cr3 & 0x000FFFFFFFFFF000ull, s->paging, 0, s->paging == 5 ? 57 : 48);
    } else if (s->paging == 3) {
        uint64_t pdpt[4];
        note_table(s, s->cr3 & 0xFFFFF000ull);
        if (s->mem_read(uc, s->cr3 & 0xFFFFFFE0ull, pdpt, sizeof pdpt) != 0) return;
        for (uint64_t i = 0; i < 4; i++)
            if (pdpt[i] & 1) walk64(s, uc, pdpt[i] & 0x000FFFFFFFFFF000ull, 2, i << 30, 64);
    } else if (s->paging == 2) {
        uint32_t *pd = (uint32_t *)(s->walkbuf + 4096), *pt = (uint32_t *)s->walkbuf;
        note_table(s, s->cr3 & 0xFFFFF000ull);
        if (s->mem_read(uc, s->cr3 & 0xFFFFF000ull, pd, 4096) != 0) return;
        for (uint64_t i = 0; i < 1024; i++) {
            uint32_t v = pd[i];
            if (!(v & 1)) continue;
            if ((v & 0x80) && (s->cr4 & CR4_PSE)) {
                add_extent(s, i << 22, (v & 0xFFC00000ull) | ((uint64_t)((v >> 13) & 0xFF) << 32), 1ull << 22);
                continue;
            }
            if (s->walk_reads >= MAX_WALK_TABLES) continue;
            s->walk_reads++;
            note_table(s, v & 0xFFFFF000ull);
            if (s->mem_read(uc, v & 0xFFFFF000ull, pt, 4096) != 0) continue;
            for (uint64_t j = 0; j < 1024; j++)
                if (pt[j] & 1) add_extent(s, (i << 22) | (j << 12), pt[j] & 0xFFFFF000ull, 4096);
        }
    }
}

/* The virtual page the guest reached physical page `ppage` through.  A page mapped at several
 * virtual pages is taken for the highest of them (the identity or direct map is usually the
 * lowest); a page the tables do not map stands for itself. */
__attribute__((noinline)) static uint64_t rmap_find(cm_state *s, uint64_t ppage) {
    uint64_t best = 0;
    int found = 0;
    for (uint32_t i = 0; i < s->next; i++) {
        const extent_t *e = &s->ext[i];
        if (ppage - e->ppage < e->npages) {
            uint64_t v = e->vpage + (ppage - e->ppage);
            if (!found || v > best) best = v;
            found = 1;
        }
    }
    return found ? best : ppage;
}

/* The DTLBs' key for an access to physical page `ppage`. */
static uint64_t dtlb_key(cm_state *s, uc_engine *uc, uint64_t ppage) {
    if (s->paging_check) paging_refresh(s, uc);
    uint64_t vpage = ppage;
    if (s->paging) {
        if (s->rmap_stale) rmap_rebuild(s, uc);
        uint32_t slot = (uint32_t)(ppage & (RCACHE_SLOTS - 1));
        rcache_t *rc = &s->rc[slot];
        if (rc->gen == s->gen && rc->ppage == ppage) {
            vpage = rc->vpage;
        } else {
            vpage = rmap_find(s, ppage);
            rc->gen = s->gen;
            rc->ppage = ppage;
            rc->vpage = vpage;
        }
    }
    return (vpage & ((1ull << ASID_SHIFT) - 1)) | (s->asid << ASID_SHIFT);
}

/* The physical page behind virtual address `vaddr` now (itself if it does not translate). */
static uint64_t frame_of(cm_state *s, uc_engine *uc, uint64_t vaddr) {
    uint64_t pa = 0;
    if (s->vmem_translate && s->vmem_translate(uc, vaddr, UC_PROT_EXEC, &pa) == 0) return pa >> 12;
    return vaddr >> 12;
}

/* ---- the line index ---------------------------------------------------------------------- */

static inline uint64_t block_frame0(const block_t *b) { return b->pline0 >> 6; }

static inline uint32_t block_lines(const block_t *b) {
    return b->size ? (uint32_t)(b->line1 - b->line0 + 1) : 0;
}

/* The physical line of a block's j-th code line (a block spans at most two pages). */
static inline uint64_t block_pline(const block_t *b, uint32_t j) {
    uint64_t l = b->line0 + j;
    uint64_t frame = (l >> 6) == (b->line0 >> 6) ? block_frame0(b) : b->frame1;
    return (frame << 6) | (l & 63);
}

static inline void mark_code_page(cm_state *s, uint64_t frame) {
    if (frame < PAGEMAP_PAGES) s->pagemap[frame] |= PG_CODE;
    s->filter.line[1] = UINT64_MAX; /* its stores may be special now */
}

static size_t line_index_bytes(uint32_t bits) { return ((size_t)1 << bits) * sizeof(int32_t); }

static void link_nodes(cm_state *s, int32_t i) {
    block_t *b = &s->blocks[i];
    uint32_t nl = block_lines(b);
    for (uint32_t j = 0; j < nl; j++) {
        int32_t k = b->lnode + (int32_t)j;
        uint32_t h = code_key(s, block_pline(b, j));
        lnode_t *nd = &s->lnodes[k];
        nd->block = i;
        nd->prev = 0;
        nd->next = s->line_head[h];
        if (nd->next) s->lnodes[nd->next - 1].prev = k + 1;
        s->line_head[h] = k + 1;
    }
    s->nlinked += nl;
}

/* More buckets for the line index: every live block's nodes filed again (the order within a
 * list changes, which changes nothing but the order blocks are forgotten in). Without memory
 * it stays as it is, with longer lists. */
__attribute__((noinline)) static void grow_line_index(cm_state *s) {
    uint32_t bits = s->line_bits + 2 > CODE_BITS ? CODE_BITS : s->line_bits + 2;
    int32_t *head = table_alloc(line_index_bytes(bits));
    if (!head) return;
    table_free(s->line_head, line_index_bytes(s->line_bits));
    s->line_head = head;
    s->line_bits = bits;
    s->nlinked = 0;
    for (int32_t i = 0; i < s->nblocks; i++)
        if (s->blocks[i].state == B_LIVE) link_nodes(s, i);
}

/* Put a live block's nodes at the head of their lines' lists. */
static void link_lines(cm_state *s, int32_t i) {
    block_t *b = &s->blocks[i];
    if (block_lines(b)) { mark_code_page(s, block_frame0(b)); mark_code_page(s, b->frame1); }
    link_nodes(s, i);
    if (s->nlinked > (2u << s->line_bits) && s->line_bits < CODE_BITS) grow_line_index(s);
}

static void unlink_lines(cm_state *s, const block_t *b) {
    uint32_t nl = block_lines(b);
    for (uint32_t j = 0; j < nl; j++) {
        lnode_t *nd = &s->lnodes[b->lnode + (int32_t)j];
        if (nd->next < 0) continue;
        if (nd->prev) s->lnodes[nd->prev - 1].next = nd->next;
        else s->line_head[code_key(s, block_pline(b, j))] = nd->next;
        if (nd->next) s->lnodes[nd->next - 1].prev = nd->prev;
        nd->next = nd->prev = -1;
        s->nlinked--;
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

/* A write touched physical lines [lo, hi) (64-byte aligned) that may hold decoded code: forget
 * the blocks there, so the next execution (which Unicorn re-translates) is checked against the
 * new bytes. */
__attribute__((noinline)) static void invalidate_code(cm_state *s, uint64_t lo, uint64_t hi) {
    if (hi <= lo) return;
    uint64_t l0 = lo >> 6, l1 = (hi - 1) >> 6;
    if (l1 - l0 + 1 > (uint64_t)s->nblocks) { /* a wide range: scan the table */
        for (int32_t i = 0; i < s->nblocks; i++) {
            block_t *b = &s->blocks[i];
            if (b->state != B_LIVE) continue;
            for (uint32_t j = 0, nl = block_lines(b); j < nl; j++) {
                uint64_t pl = block_pline(b, j);
                if (pl >= l0 && pl <= l1) { forget_block(s, i); break; }
            }
        }
        return;
    }
    for (uint64_t l = l0; l <= l1; l++) {
        uint32_t h = code_key(s, l);
    restart:
        for (int32_t k = s->line_head[h]; k; ) {
            const lnode_t *nd = &s->lnodes[k - 1];
            int32_t next = nd->next, i = nd->block;
            const block_t *b = &s->blocks[i];
            if (block_pline(b, (uint32_t)(k - 1 - b->lnode)) == l) {
                forget_block(s, i);
                /* Two lines of one block can share a bucket: its other node may have been next. */
                if (next && s->lnodes[next - 1].next < 0) goto restart;
            }
            k = next;
        }
    }
}

/* A forgotten block runs again: live again if its bytes are what they were. */
__attribute__((noinline)) static int restore_block(cm_state *s, uc_engine *uc, int32_t i) {
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

static inline __attribute__((always_inline)) void predict(cm_state *s, const block_t *pb, uint64_t next) {
    uint64_t fall = pb->addr + pb->size, pc = pb->last_pc, pen = 0;
    uint64_t bslot = (pc ^ (pc >> 17)) & s->btb_mask;
    s->counters[C_BRANCHES]++;
    switch (pb->kind) {
    case K_COND: {
        int taken = next != fall;
        uint64_t i = (pc ^ s->ghist) & s->bp_mask;
        uint8_t ctr = s->bp[i];
        if ((ctr >= 2) != taken) { s->counters[C_MISPREDICT]++; pen += (uint64_t)s->p.mispredict; }
        else if (taken && !(s->btb[bslot].tag == pc + 1 && s->btb[bslot].target == next)) {
            s->counters[C_BTB_MISS]++; pen += (uint64_t)s->p.btb_miss;
        }
        /* Stores only when something changes: in a steady loop nothing does, and unconditional
         * read-modify-writes would chain every block hook call through store forwarding. */
        uint8_t nctr = taken ? (ctr < 3 ? ctr + 1 : 3) : (ctr > 0 ? ctr - 1 : 0);
        if (nctr != ctr) s->bp[i] = nctr;
        uint64_t nh = ((s->ghist << 1) | (uint64_t)taken) & s->hist_mask;
        if (nh != s->ghist) s->ghist = nh;
        if (taken && (s->btb[bslot].tag != pc + 1 || s->btb[bslot].target != next)) {
            s->btb[bslot].tag = pc + 1; s->btb[bslot].target = next;
        }
        break;
    }
    case K_JMP: case K_CALL:
        if (!(s->btb[bslot].tag == pc + 1 && s->btb[bslot].target == next)) {
            s->counters[C_BTB_MISS]++; pen += (uint64_t)s->p.btb_miss;
            s->btb[bslot].tag = pc + 1; s->btb[bslot].target = next;
        }
        break;
    case K_JMP_IND: case K_CALL_IND:
        if (!(s->btb[bslot].tag == pc + 1 && s->btb[bslot].target == next)) {
            s->counters[C_MISPREDICT]++; pen += (uint64_t)s->p.mispredict;
            s->btb[bslot].tag = pc + 1; s->btb[bslot].target = next;
        }
        break;
    case K_RET: {
        uint64_t want = 0;
        int have = s->ras_depth > 0;
        if (have) {
            want = s->ras[s->ras_top];
            s->ras_top = s->ras_top ? s->ras_top - 1 : s->p.ras_entries - 1;
            s->ras_depth--;
        }
        if (!have || want != next) { s->counters[C_MISPREDICT]++; pen += (uint64_t)s->p.mispredict; }
        break;
    }
    default: break;
    }
    if (pb->kind == K_CALL || pb->kind == K_CALL_IND) {
        s->ras_top = s->ras_top + 1 == s->p.ras_entries ? 0 : s->ras_top + 1;
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

/* ---- decoding a block: capstone, classes, costs --------------------------------------------
 *
 * The rules are docs/cycle-model.md's "How a block is costed".  Costs are computed in double
 * precision in a fixed order and rounded to millicycles half to even, so they are the same
 * numbers on every host. */

enum { REGF_XMM0 = 1, REGF_CRDR = 2, REGF_SEG = 4, REGF_SIMD = 8, REGF_CR = 16, REGF_CR3 = 32 };
#define CANON_NONE 0xFFFF

/* (The first characters are compared first: most names differ there, and these run per decoded
 * instruction.) */
static int starts(const char *s, const char *prefix) {
    return s[0] == prefix[0] && strncmp(s, prefix, strlen(prefix)) == 0;
}
static int one_of(const char *s, const char *const *list) {
    for (; *list; list++)
        if (s[0] == (*list)[0] && !strcmp(s, *list)) return 1;
    return 0;
}
static int starts_one_of(const char *s, const char *const *list) {
    for (; *list; list++)
        if (starts(s, *list)) return 1;
    return 0;
}

static const char *const GPR_NAMES[] = {
    "rax eax ax al ah", "rbx ebx bx bl bh", "rcx ecx cx cl ch", "rdx edx dx dl dh", "rsi esi si sil",
    "rdi edi di dil", "rbp ebp bp bpl", "rsp esp sp spl", "rflags eflags flags", NULL};
static const char *const IP_NAMES[] = {"rip", "eip", "ip", NULL};
static const char *const SEGMENTS[] = {"cs", "ds", "es", "fs", "gs", "ss", NULL};
static const char *const SIMD_PREFIXES[] = {"xmm", "ymm", "zmm", "mm", NULL};
static const char *const ENDS_BLOCK[] = {"j", "call", "ret", "iret", "loop", "int", "hlt", "syscall", "sysret",
                                         "ljmp", "lcall", NULL};
static const char *const STRINGS[] = {"movs", "stos", "lods", "cmps", "scas", NULL}; /* R_MOVS... */
static const char *const SYSTEM[] = {
    "lgdt", "lidt", "lldt", "ltr", "sgdt", "sidt", "wrmsr", "rdmsr", "invlpg", "cli", "sti", "hlt", "iret", "iretd",
    "iretq", "ljmp", "lcall", "retf", "retfq", "int", "int3", "into", "int1", "syscall", "sysret", "sysretq",
    "swapgs", "wbinvd", "invd", "clts", "lmsw", "sysenter", "sysexit", "xsetbv", "xgetbv", "rsm", "ud2", "pushf",
    "popf", "pushfd", "popfd", "pushfq", "popfq", NULL};
static const char *const IO[] = {"in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd", NULL};
static const char *const SHIFTS[] = {"shl", "shr", "sar", "sal", "rol", "ror", "rcl", "rcr", "shld", "shrd", "shlx",
                                     "shrx", "sarx", "rorx", NULL};
static const char *const MOVES[] = {"mov", "movabs", "movzx", "movsx", "movsxd", NULL};
static const char *const ZERO_IDIOMS[] = {"xor", "sub", "pxor", "xorps", "vpxor", NULL};
static const char *const TRANSLATION[] = {"wrmsr", "invlpg", "invlpga", "invpcid", "lmsw", "rsm", NULL};

/* The register a name stands for in dependency chains: RAX for EAX, AX, AL and AH, ... */
static void canonical_name(const char *name, char out[16]) {
    for (int g = 0; GPR_NAMES[g]; g++) {
        const char *w = GPR_NAMES[g];
        size_t full = strcspn(w, " ");
        while (*w) {
            size_t len = strcspn(w, " ");
            if (len == strlen(name) && !strncmp(w, name, len)) {
                memcpy(out, GPR_NAMES[g], full);
                out[full] = 0;
                return;
            }
            w += len + (w[len] == ' ');
        }
    }
    int k;
    char suffix[4] = "";
    if (sscanf(name, "r%d%3s", &k, suffix) >= 1 && k >= 8 && k <= 15) {
        char again[16];
        snprintf(again, sizeof again, "r%d%s", k, suffix);
        if (!strcmp(again, name) && (!suffix[0] || !strcmp(suffix, "d") || !strcmp(suffix, "w") || !strcmp(suffix, "b"))) {
            snprintf(out, 16, "r%d", k);
            return;
        }
    }
    snprintf(out, 16, "%s", name);
}

/* Per capstone register id: canonical register and name flags (from the 64-bit handle). */
static void register_tables(cm_state *s, cs_reg_name_t reg_name, int64_t ending) {
    char names[MAX_REGS][16];
    int ncanon = 0;
    s->canon_rsp = CANON_NONE;
    for (int r = 0; r < MAX_REGS; r++) {
        s->canon[r] = CANON_NONE;
        s->regf[r] = 0;
        const char *name = r > 0 && r < ending ? reg_name(s->cs[2], (unsigned)r) : NULL;
        if (!name) continue;
        uint8_t f = 0;
        if (!strcmp(name, "xmm0")) f |= REGF_XMM0;
        if (starts(name, "cr") || starts(name, "dr")) f |= REGF_CRDR;
        if (starts(name, "cr")) f |= REGF_CR;
        if (!strcmp(name, "cr3")) f |= REGF_CR3;
        if (one_of(name, SEGMENTS)) f |= REGF_SEG;
        if (starts_one_of(name, SIMD_PREFIXES)) f |= REGF_SIMD;
        s->regf[r] = f;
        if (one_of(name, IP_NAMES)) continue;
        char cn[16];
        canonical_name(name, cn);
        int id = 0;
        while (id < ncanon && strcmp(names[id], cn)) id++;
        if (id == ncanon) snprintf(names[ncanon++], 16, "%s", cn);
        s->canon[r] = (uint16_t)id;
        if (!strcmp(cn, "rsp")) s->canon_rsp = (uint16_t)id;
    }
}

static inline void set_bit(uint64_t *set, unsigned i) { set[i >> 6] |= 1ull << (i & 63); }
static inline void clear_bit(uint64_t *set, unsigned i) { set[i >> 6] &= ~(1ull << (i & 63)); }

static int64_t millicycles(double cycles) { return (int64_t)nearbyint(cycles * 1000.0); }

/* An instruction's pools, in the order they are first added (a pool added again sums). */
static void pool_add(insn_t *d, int pool, double t) {
    for (int k = 0; k < d->npools; k++)
        if (d->pool[k] == pool) { d->t[k] += t; return; }
    d->pool[d->npools] = (uint8_t)pool;
    d->t[d->npools++] = 0.0 + t;
}
static void pool_set(insn_t *d, int pool, double t) {
    for (int k = 0; k < d->npools; k++)
        if (d->pool[k] == pool) { d->t[k] = t; return; }
    d->pool[d->npools] = (uint8_t)pool;
    d->t[d->npools++] = t;
}

/* What the model needs of one decoded instruction: its class and control-transfer kind, what
 * it takes of each pool, its latency and the registers it reads and writes. */
static void analyse(cm_state *s, csh h, const cs_insn *in, insn_t *d) {
    const cs_x86 *x = &in->detail->x86;
    const char *full = in->mnemonic;
    char m[32];
    { /* the mnemonic's last word (prefixes come first: "rep stosb", "lock add") */
        size_t end = strlen(full);
        while (end && full[end - 1] == ' ') end--;
        size_t start = end;
        while (start && full[start - 1] != ' ') start--;
        memcpy(m, full + start, end - start);
        m[end - start] = 0;
    }
    int lock = 0, rep = 0;
    for (int i = 0; i < 4; i++) {
        lock |= x->prefix[i] == 0xF0;
        rep |= x->prefix[i] == 0xF2 || x->prefix[i] == 0xF3;
    }
    int nops = x->op_count < 8 ? x->op_count : 8;
    int mem_ops = 0, mem_read = 0, mem_write = 0;
    uint8_t rf = 0;
    for (int i = 0; i < nops; i++) {
        const cs_x86_op *o = &x->operands[i];
        if (o->type == X86_OP_MEM) {
            mem_ops = 1;
            mem_read |= (o->access & CS_AC_READ) != 0;
            mem_write |= (o->access & CS_AC_WRITE) != 0;
        } else if (o->type == X86_OP_REG && o->reg < MAX_REGS) {
            rf |= s->regf[o->reg];
        }
    }
    int jump = 0, call = 0, fpu = 0;
    for (int i = 0; i < in->detail->groups_count && i < 8; i++) {
        jump |= in->detail->groups[i] == X86_GRP_JUMP;
        call |= in->detail->groups[i] == X86_GRP_CALL;
        fpu |= in->detail->groups[i] == X86_GRP_FPU;
    }
    int touches = mem_ops && strcmp(m, "lea") && strcmp(m, "nop") && !starts(m, "prefetch");
    int pop_or_ret = starts(m, "pop") || starts(m, "ret");
    int reads_mem = touches && (mem_read || pop_or_ret);
    int writes_mem = touches && mem_write;
    int imm0 = nops > 0 && x->operands[0].type == X86_OP_IMM;
    int reg0 = nops > 0 && x->operands[0].type == X86_OP_REG && x->operands[0].reg < MAX_REGS;
    uint8_t rf0 = reg0 ? s->regf[x->operands[0].reg] : 0;

    d->kind = K_NONE;
    d->rep = R_NONE;
    d->rep_bytes = 1;
    d->reads_mem = (uint8_t)(reads_mem || pop_or_ret);
    d->writes_mem = (uint8_t)writes_mem;
    d->ends_block = (uint8_t)starts_one_of(full, ENDS_BLOCK);
    d->flags = 0;
    if (!strcmp(m, "mov") && (rf0 & REGF_CR)) d->flags |= F_PAGING | ((rf0 & REGF_CR3) ? F_CR3 : 0);
    if (one_of(m, TRANSLATION)) d->flags |= F_PAGING;

    if (jump && strcmp(m, "ljmp")) {
        d->cls = IC_BRANCH;
        d->kind = !strcmp(m, "jmp") ? (imm0 ? K_JMP : K_JMP_IND) : K_COND;
    } else if (call && !strcmp(m, "call")) {
        d->cls = IC_CALL;
        d->kind = imm0 ? K_CALL : K_CALL_IND;
    } else if (!strcmp(m, "ret")) {
        d->cls = IC_RET;
        d->kind = K_RET;
    } else if (lock) {
        d->cls = starts(m, "cmpxchg") ? IC_LOCK_CMPXCHG : IC_LOCK_RMW;
    } else if (!strcmp(m, "xchg") && mem_ops) {
        d->cls = IC_XCHG_MEM;
    } else if (!strcmp(m, "mfence")) {
        d->cls = IC_MFENCE;
    } else if (!strcmp(m, "lfence")) {
        d->cls = IC_LFENCE;
    } else if (!strcmp(m, "sfence")) {
        d->cls = IC_SFENCE;
    } else if (!strcmp(m, "cpuid")) {
        d->cls = IC_CPUID;
    } else if (!strcmp(m, "pause")) {
        d->cls = IC_PAUSE;
    } else if (!strcmp(m, "rdtsc") || !strcmp(m, "rdtscp")) {
        d->cls = IC_RDTSC;
    } else if (strlen(m) == 5 && starts_one_of(m, STRINGS) && !(rf & REGF_XMM0)) {
        if (rep) {
            d->cls = IC_REP_STRING;
            for (int k = 0; STRINGS[k]; k++)
                if (starts(m, STRINGS[k])) d->rep = (uint8_t)(R_MOVS + k);
            d->rep_bytes = m[4] == 'w' ? 2 : m[4] == 'd' ? 4 : m[4] == 'q' ? 8 : 1;
        } else {
            d->cls = IC_STRING;
        }
    } else if (one_of(m, IO)) {
        d->cls = IC_IO;
    } else if (one_of(m, SYSTEM) || (rf & REGF_CRDR) || (!strcmp(m, "mov") && (rf0 & REGF_SEG))) {
        d->cls = IC_SYSTEM;
    } else if (starts(m, "push")) {
        d->cls = IC_PUSH;
    } else if (starts(m, "pop")) {
        d->cls = IC_POP;
    } else if (!strcmp(m, "div") || !strcmp(m, "idiv")) {
        d->cls = IC_DIV;
    } else if (!strcmp(m, "mul") || !strcmp(m, "imul") || !strcmp(m, "mulx")) {
        d->cls = IC_IMUL;
    } else if (!strcmp(m, "nop") || !strcmp(m, "endbr64") || !strcmp(m, "endbr32") || starts(m, "prefetch")) {
        d->cls = IC_NOP;
    } else if (fpu) {
        d->cls = IC_X87;
    } else if (rf & REGF_SIMD) {
        d->cls = IC_SIMD;
    } else if (one_of(m, MOVES)) {
        d->cls = reads_mem ? IC_LOAD : writes_mem ? IC_STORE : IC_MOV;
    } else if (!strcmp(m, "lea")) {
        d->cls = IC_LEA;
    } else if (one_of(m, SHIFTS)) {
        d->cls = IC_SHIFT;
    } else {
        d->cls = IC_ALU;
    }

    /* Pools: the class's own; a memory operand of a non-memory class adds a load and/or a store
     * (a call's push is a store); a branch takes an ALU slot; a memory access or push an AGU. */
    const cm_costs *c = &s->c;
    int pool = (int)c->cls_pool[d->cls];
    int writes = d->writes_mem || d->cls == IC_CALL;
    d->npools = 0;
    pool_add(d, pool, c->cls_throughput[d->cls]);
    if (pool != P_LOAD && pool != P_STORE && pool != P_SERIAL && pool != P_NONE) {
        if (d->reads_mem) pool_add(d, P_LOAD, c->cls_throughput[IC_LOAD]);
        if (writes) pool_add(d, P_STORE, c->cls_throughput[IC_STORE]);
    }
    if (pool == P_BRANCH) pool_add(d, P_ALU, c->cls_throughput[IC_ALU]);
    if (d->reads_mem || writes || d->cls == IC_PUSH) pool_set(d, P_AGU, 1.0 / 3.0);

    /* Registers: capstone's, canonical (no instruction pointer); none when it cannot tell. */
    memset(d->reads, 0, sizeof d->reads);
    memset(d->writes, 0, sizeof d->writes);
    uint16_t rr[64], ww[64];
    uint8_t nr = 0, nw = 0;
    if (s->cs_regs_access(h, in, rr, &nr, ww, &nw) == 0) {
        for (int i = 0; i < nr && i < 64; i++)
            if (rr[i] < MAX_REGS && s->canon[rr[i]] != CANON_NONE) set_bit(d->reads, s->canon[rr[i]]);
        for (int i = 0; i < nw && i < 64; i++)
            if (ww[i] < MAX_REGS && s->canon[ww[i]] != CANON_NONE) set_bit(d->writes, s->canon[ww[i]]);
    }
    if ((d->cls == IC_PUSH || d->cls == IC_POP || d->cls == IC_CALL || d->cls == IC_RET) && s->canon_rsp != CANON_NONE) {
        clear_bit(d->reads, s->canon_rsp); /* the stack engine tracks rsp without a dependency */
        clear_bit(d->writes, s->canon_rsp);
    }
    if (one_of(full, ZERO_IDIOMS) && x->op_count == 2 && x->operands[0].type == X86_OP_REG &&
        x->operands[1].type == X86_OP_REG && x->operands[0].reg == x->operands[1].reg)
        memset(d->reads, 0, sizeof d->reads); /* zero idiom: no input dependency */
    int whole = d->cls == IC_LOCK_RMW || d->cls == IC_LOCK_CMPXCHG || d->cls == IC_XCHG_MEM;
    d->latency = c->cls_latency[d->cls] + (d->reads_mem && !whole ? c->l1_latency : 0.0);
    d->fuses = 0;
    if (d->cls == IC_ALU)
        for (const char *f = c->fusion; *f; f += strlen(f) + 1)
            if (!strcmp(f, full)) { d->fuses = 1; break; }
}

/* Decode `size` bytes at `addr` with the handle for `bits` until capstone stops; returns the
 * instructions decoded and whether they tile the block (whole instructions, a control transfer
 * only last). */
static uint32_t decode_insns(cm_state *s, int bits, const uint8_t *code, uint32_t size, uint64_t addr,
                             insn_t *out, int *tiles) {
    int w = bits == 16 ? 0 : bits == 32 ? 1 : 2;
    csh h = s->cs[w];
    cs_insn *ci = s->ci[w];
    const uint8_t *p = code;
    size_t left = size;
    uint64_t at = addr, total = 0;
    uint32_t n = 0;
    int inner_transfer = 0;
    while (left && s->cs_disasm_iter(h, &p, &left, &at, ci)) {
        insn_t *d = &out[n];
        if (n && out[n - 1].ends_block) inner_transfer = 1;
        d->off = (uint32_t)(ci->address - addr);
        d->len = ci->size;
        analyse(s, h, ci, d);
        total += ci->size;
        n++;
    }
    *tiles = n && total == size && !inner_transfer;
    return n;
}

/* 16, 32 or 64: the width the CPU decodes the current code segment in, from CR0, EFER and the
 * CS descriptor in the GDT. */
static int code_bits(cm_state *s, uc_engine *uc) {
    uint64_t cr0 = 0, cs = 0;
    s->reg_read(uc, UC_X86_REG_CR0, &cr0);
    if (!(cr0 & CR0_PE)) return 16;
    int natural = s->p.bits == 64 ? 64 : 32;
    s->reg_read(uc, UC_X86_REG_CS, &cs);
    uint64_t selector = cs & 0xFFF8;
    if (!selector) return natural; /* Unicorn's initial long-mode state: CS = 0 with 64-bit attributes */
    uc_x86_mmr gdtr;
    memset(&gdtr, 0, sizeof gdtr);
    uint8_t desc[8];
    if (s->reg_read(uc, UC_X86_REG_GDTR, &gdtr) != 0) return natural;
    uint64_t at = gdtr.base + selector;
    if ((!s->vmem_read || s->vmem_read(uc, at, UC_PROT_READ, desc, 8) != 0) && s->mem_read(uc, at, desc, 8) != 0)
        return natural; /* an unreadable GDT: the instance's natural width */
    uint8_t flags = desc[6];
    if ((flags & DESC_LONG) && natural == 64) {
        uc_x86_msr efer = {MSR_EFER, 0};
        s->reg_read(uc, UC_X86_REG_MSR, &efer);
        if (efer.value & EFER_LMA) return 64;
    }
    return (flags & DESC_DB) ? 32 : 16;
}

static int grow_decode(cm_state *s, uint32_t size) {
    if (size <= s->cap_dec && size <= s->cap_dbuf) return 0;
    uint32_t cap = s->cap_dec ? s->cap_dec : 64;
    while (cap < size) cap *= 2;
    uint8_t *db = realloc(s->dbuf, cap);
    if (db) s->dbuf = db;
    insn_t *d0 = db ? realloc(s->dec[0], cap * sizeof *d0) : NULL;
    if (d0) s->dec[0] = d0;
    insn_t *d1 = d0 ? realloc(s->dec[1], cap * sizeof *d1) : NULL;
    if (d1) s->dec[1] = d1;
    uint32_t *o = d1 ? realloc(s->doffs, cap * sizeof *o) : NULL;
    if (o) s->doffs = o;
    uint32_t *c = o ? realloc(s->dcosts, cap * sizeof *c) : NULL;
    if (c) s->dcosts = c;
    int64_t *w = c ? realloc(s->dweights, cap * sizeof *w) : NULL;
    if (w) s->dweights = w;
    if (!w) return -1;
    s->cap_dec = s->cap_dbuf = cap;
    return 0;
}

#define ABSENT (-INFINITY)
static inline double held(double v) { return v == ABSENT ? -1.0 : v; }

typedef struct {
    uint32_t n;
    int kind, rep_last, first_rep;
    uint64_t rep_iter, fe;
} block_cost;

/* A decoded block -> each instruction's millicycles.  The back end takes the time of its busiest
 * resource pool or its longest loop-carried register dependency, whichever is longer; each
 * instruction's share is in proportion to what it adds to the pools; the front end delivers
 * op_cache_width macro-ops a cycle (a Jcc fused into the ALU op before it is none of its own). */
static int cost_block(cm_state *s, const insn_t *f, uint32_t n, uint32_t *costs, block_cost *out) {
    const cm_costs *c = &s->c;
    /* Registers of the block, numbered 0..L-1. */
    int16_t local[MAX_REGS];
    int L = 0;
    memset(local, -1, sizeof local);
    for (uint32_t i = 0; i < n; i++)
        for (int wd = 0; wd < MAX_REGS / 64; wd++) {
            uint64_t bits = f[i].reads[wd] | f[i].writes[wd];
            while (bits) {
                int r = wd * 64 + __builtin_ctzll(bits);
                bits &= bits - 1;
                if (local[r] < 0) local[r] = (int16_t)L++;
            }
        }
    uint32_t need = (uint32_t)((L + 1) * L + 1);
    if (need > s->cap_deps) {
        double *nd = realloc(s->deps, (size_t)need * sizeof *nd);
        if (!nd) return -1;
        s->deps = nd;
        s->cap_deps = need;
    }
    /* deps[r]: for each register at block entry, the longest latency path from it to r's
     * current value (ABSENT: none); present[r]: r was written in the block. */
    double *deps = s->deps, *paths = s->deps + (size_t)L * L;
    uint8_t present[MAX_REGS];
    memset(present, 0, (size_t)L);
    for (uint32_t i = 0; i < n; i++) {
        for (int k = 0; k < L; k++) paths[k] = ABSENT;
        for (int wd = 0; wd < MAX_REGS / 64; wd++) {
            uint64_t bits = f[i].reads[wd];
            while (bits) {
                int lr = local[wd * 64 + __builtin_ctzll(bits)];
                bits &= bits - 1;
                if (present[lr]) {
                    const double *row = deps + (size_t)lr * L;
                    for (int k = 0; k < L; k++)
                        if (row[k] != ABSENT && row[k] > held(paths[k])) paths[k] = row[k];
                } else if (0.0 > held(paths[lr])) {
                    paths[lr] = 0.0;
                }
            }
        }
        for (int k = 0; k < L; k++)
            if (paths[k] != ABSENT) paths[k] += f[i].latency;
        for (int wd = 0; wd < MAX_REGS / 64; wd++) {
            uint64_t bits = f[i].writes[wd];
            while (bits) {
                int lr = local[wd * 64 + __builtin_ctzll(bits)];
                bits &= bits - 1;
                memcpy(deps + (size_t)lr * L, paths, (size_t)L * sizeof *paths);
                present[lr] = 1;
            }
        }
    }
    /* The loop-carried bound: a value that depends on its own value at block entry cannot be
     * ready sooner than that path's latency after the previous execution's. */
    double chain = 0.0;
    int any = 0;
    for (int k = 0; k < L; k++) {
        if (!present[k]) continue;
        double v = deps[(size_t)k * L + k];
        if (v == ABSENT) v = 0.0;
        if (!any || v > chain) chain = v;
        any = 1;
    }
    /* Resource pools. */
    double totals[MAX_POOLS];
    uint8_t used[MAX_POOLS];
    memset(used, 0, sizeof used);
    int64_t *weights = s->dweights, sum_w = 0;
    uint32_t macro_ops = 0;
    for (uint32_t i = 0; i < n; i++) {
        int fused = f[i].kind == K_COND && i > 0 && f[i - 1].fuses;
        double w = 0.0;
        for (int k = 0; k < f[i].npools; k++) {
            int pool = f[i].pool[k];
            double t = f[i].t[k];
            if (fused && pool == P_ALU) continue;
            if (pool != P_NONE) {
                totals[pool] = used[pool] ? totals[pool] + t : 0.0 + t;
                used[pool] = 1;
            }
            w += t;
        }
        if (!fused) {
            double t = 1.0 / c->dispatch_width;
            totals[P_DISPATCH] = used[P_DISPATCH] ? totals[P_DISPATCH] + t : 0.0 + t;
            used[P_DISPATCH] = 1;
            w += t;
            macro_ops++;
        }
        weights[i] = millicycles(w);
        sum_w += weights[i];
    }
    double busiest = 0.0;
    int first = 1;
    for (int k = 0; k < MAX_POOLS; k++)
        if (used[k] && (first || totals[k] > busiest)) { busiest = totals[k]; first = 0; }
    int64_t total = millicycles(chain > busiest ? chain : busiest), acc = 0;
    for (uint32_t i = 0; i < n; i++) { /* each instruction's share, in proportion to its weight */
        int64_t share;
        if (i == n - 1) {
            share = total - acc;
        } else {
            __int128 num = sum_w ? (__int128)total * weights[i] : total;
            __int128 den = sum_w ? sum_w : (__int128)n;
            __int128 q = num / den;
            if ((num % den != 0) && ((num < 0) != (den < 0))) q--; /* floor division */
            share = (int64_t)q;
        }
        costs[i] = (uint32_t)share;
        acc += share;
    }
    const insn_t *last = &f[n - 1];
    out->n = n;
    out->kind = last->kind;
    out->rep_last = last->rep != R_NONE;
    out->first_rep = f[0].rep != R_NONE;
    out->rep_iter = 0;
    if (last->rep != R_NONE) {
        double rate = c->rep_rate[last->rep];
        int per_byte = last->rep == R_MOVS || last->rep == R_STOS;
        out->rep_iter = (uint64_t)millicycles(per_byte ? rate * (double)last->rep_bytes : rate);
    }
    out->fe = (uint64_t)millicycles((double)macro_ops / c->op_cache_width);
    return 0;
}

__attribute__((noinline)) static int32_t decode_block(cm_state *s, uc_engine *uc, uint64_t addr, uint32_t size);

/* ---- hooks ------------------------------------------------------------------------------ */

/* The instruction budget is reached: stopping from the block hook takes effect before this
 * block runs (measured). */
__attribute__((noinline)) static void budget_reached(cm_state *s, uc_engine *uc) {
    s->budget_stop = 1;
    s->emu_stop(uc);
}

/* A block the fast map does not hold: found in the table, restored or decoded (-1: the model
 * stopped the CPU). */
__attribute__((noinline)) static int32_t lookup_block(cm_state *s, uc_engine *uc, uint64_t addr, uint32_t size) {
    int32_t idx = find_block(s, addr, size);
    if (idx >= 0 && s->blocks[idx].state != B_LIVE && !restore_block(s, uc, idx))
        idx = -1; /* its bytes changed: decoded again (add_block reuses or retires the slot) */
    if (idx < 0) {
        s->decodes++;
        if ((idx = decode_block(s, uc, addr, size)) < 0) {
            if (!s->error) s->error = E_MEMORY;
            s->emu_stop(uc);
            return -1;
        }
    }
    s->fast[fast_key(addr)] = idx;
    return idx;
}

/* An instruction fetch that missed the L1I. */
__attribute__((noinline)) static void fetch_miss(cm_state *s, uint64_t line) {
    s->counters[C_L1I_MISS]++;
    uint64_t pen = outer_access(s, line);
    s->counters[C_FETCH_MC] += pen;
    charge(s, pen);
}

/* Instruction fetch of a block on more than one line: its physical lines in the L1I. */
__attribute__((noinline)) static void fetch_lines(cm_state *s, block_t *b) {
    uint64_t pen = 0;
    for (uint32_t j = 0, nl = block_lines(b); j < nl; j++) {
        uint64_t l = j ? block_pline(b, j) : b->pline0;
        if (l == s->last_fetch_line) continue;
        s->last_fetch_line = l;
        if (!cache_access(&s->l1i, l)) { s->counters[C_L1I_MISS]++; pen += outer_access(s, l); }
    }
    if (pen) { s->counters[C_FETCH_MC] += pen; charge(s, pen); }
}

/* The block hook's work once the block is known. */
static inline __attribute__((always_inline)) void run_block(cm_state *s, int32_t idx, uint64_t addr, uint32_t size) {
    block_t *b = &s->blocks[idx];
    int32_t prev = s->prev; /* read after the lookup: a decode may have flushed the table */
    s->seq++;
    if (prev < 0) {
        s->paging_check = 1;
    } else {
        const block_t *pb = &s->blocks[prev];
        /* The block before wrote a control register, an MSR or invalidated a page: translation
         * is looked at again before the next access (a CR3 write also starts a new address space). */
        if (__builtin_expect(pb->flags != 0, 0)) {
            if (pb->flags & F_CR3) s->asid++;
            s->paging_check = 1;
        }
        if (__builtin_expect(b->first_rep, 0) && pb->rep_last && pb->last_pc == addr) {
            /* QEMU runs one iteration of a rep string instruction per execution of a block that
             * starts at it: the instruction was counted when its first iteration began. */
            s->cur = idx;
            s->prev = idx;
            s->cur_cont = 1;
            s->counters[C_REP_ITER]++;
            s->mc += b->rep_iter;
            b->prof_mc += b->rep_iter;
            return;
        }
        if (pb->kind != K_NONE) predict(s, pb, addr);
    }
    s->cur = idx;
    s->prev = idx;
    s->cur_cont = 0;
    s->mem_at_block = s->counters[C_LOADS] + s->counters[C_STORES] + s->filter.count[0] + s->filter.count[1];
    s->insns += b->n;
    b->prof_insns += b->n;
    /* Two clocks: the front end delivers one fetch window per cycle (the macro-ops of one
     * 64-byte line, up to a taken transfer; op-cache width permitting); the back end executes
     * the block in `base`, not before it arrives. The front end runs ahead while the back end
     * is busy, but lags by at most fe_window. */
    uint64_t mc = s->mc, fe = s->fe, window = (uint64_t)s->p.fe_window;
    if (fe + window < mc) fe = mc - window;
    uint64_t windows = (b->line0 != s->fe_line) + (b->line1 - b->line0);
    fe += windows * 1000 > b->fe ? windows * 1000 : b->fe;
    s->fe_line = b->line1;
    s->fe = fe;
    uint64_t done = mc + b->base;
    if (done < fe) {
        s->counters[C_FRONTEND_MC] += fe - done;
        done = fe;
    }
    s->mc = done;
    b->prof_mc += done - mc;
    /* instruction fetch: nothing new while the block is the one line fetched last */
    if (!size) return;
    if (b->line0 != b->line1) {
        fetch_lines(s, b);
    } else if (b->pline0 != s->last_fetch_line) {
        s->last_fetch_line = b->pline0;
        if (!cache_access(&s->l1i, b->pline0)) fetch_miss(s, b->pline0);
    }
}

/* The block hook when the budget is reached or the fast map does not hold the block. */
static void hook_mem(uc_engine *uc, int type, uint64_t addr, int size, int64_t value, void *user);

__attribute__((noinline)) static void hook_block_slow(uc_engine *uc, uint64_t addr, uint32_t size, cm_state *s) {
    if (!s->filter_tried) { /* the first block: Unicorn counts the memory hook's hits, if it can */
        s->filter_tried = 1;
        if (s->mem_hook_filter) s->mem_hook_filter(uc, (void *)hook_mem, s, &s->filter);
    }
    if (s->insns >= s->budget_at) {
        budget_reached(s, uc);
        return;
    }
    int32_t idx = s->fast[fast_key(addr)];
    if ((idx < 0 || s->blocks[idx].addr != addr || s->blocks[idx].size != size) &&
        (idx = lookup_block(s, uc, addr, size)) < 0)
        return;
    run_block(s, idx, addr, size);
}

/* Every call in the common case is a tail call: it saves no registers. */
static void hook_block(uc_engine *uc, uint64_t addr, uint32_t size, void *user) {
    cm_state *s = user;
    int32_t idx = s->fast[fast_key(addr)];
    if (__builtin_expect(s->insns >= s->budget_at || idx < 0 || s->blocks[idx].addr != addr ||
                         s->blocks[idx].size != size, 0)) {
        hook_block_slow(uc, addr, size, s);
        return;
    }
    run_block(s, idx, addr, size);
}

/* An access's L1D / DTLB penalties (millicycles), charged. */
__attribute__((noinline)) static void charge_access(cm_state *s, uint64_t pen, uint64_t tpen, int write) {
    if (write && pen) pen = pen * (uint64_t)s->p.store_miss_permille / 1000;
    if (pen) { s->counters[C_MEM_MC] += pen; charge(s, pen); }
    if (tpen) { s->counters[C_TLB_MC] += tpen; charge(s, tpen); }
}

/* An access that is not to the line and page of the last one: the L1D (and beyond) and the DTLBs. */
__attribute__((noinline)) static void data_access(cm_state *s, uc_engine *uc, uint64_t addr, uint64_t line,
                                                  uint64_t end_line, int write) {
    uint64_t pen = data_line(s, line), tpen = 0;
    if (__builtin_expect(end_line != line, 0)) pen += data_line(s, end_line);
    uint64_t page = addr >> 12;
    if (__builtin_expect(page != s->last_page, 0)) {
        s->last_page = page;
        tpen = tlb_access(s, dtlb_key(s, uc, page));
    }
    s->hit_line = (s->last_line >> 6) == s->last_page ? s->last_line : UINT64_MAX;
    filter_sync(s);
    if (__builtin_expect((pen | tpen) != 0, 0)) charge_access(s, pen, tpen, write);
}

/* A line that missed the L1D, in a page the DTLBs just saw. */
__attribute__((noinline)) static void l1d_miss(cm_state *s, uint64_t line, int write) {
    s->counters[C_L1D_MISS]++;
    charge_access(s, outer_access(s, line), 0, write);
}

/* An access to one line of the last page: the L1D alone (data_access's common case, inline). */
static inline void line_access(cm_state *s, uint64_t line, int write) {
    s->last_line = s->hit_line = line;
    filter_sync(s);
    if (!cache_access(&s->l1d, line)) l1d_miss(s, line, write);
}

/* A write into a page that holds decoded code or a page table (page_flags said which), then the
 * access itself. */
__attribute__((noinline)) static void special_write(cm_state *s, uc_engine *uc, uint64_t addr, uint64_t line,
                                                    uint64_t end_line, uint8_t flags) {
    if (flags & PG_TABLE) s->rmap_stale = 1; /* the guest edits its page tables */
    /* Self-modifying code: a write into a line that holds decoded code (checked once per run of
     * writes to the same line; a block made live resets last_wline). */
    if ((flags & PG_CODE) && (line != s->last_wline || end_line != line)) {
        s->last_wline = line;
        if (s->line_head[code_key(s, line)] || s->line_head[code_key(s, end_line)])
            invalidate_code(s, addr & ~63ull, (end_line + 1) << 6);
    }
    if (line == s->hit_line && end_line == line) return;
    data_access(s, uc, addr, line, end_line, 1);
}

/* Every call below is a tail call: the common access (L1 and DTLB hit on the last line) saves
 * no registers. */
static void hook_mem(uc_engine *uc, int type, uint64_t addr, int size, int64_t value, void *user) {
    cm_state *s = user;
    (void)value;
    uint64_t line = addr >> 6, end_line = (addr + (uint64_t)size - 1) >> 6;
    if (type == UC_MEM_WRITE) {
        s->counters[C_STORES]++;
        uint8_t flags = page_flags(s, addr >> 12); /* one load says whether the page is special */
        if (end_line != line) flags |= page_flags(s, end_line >> 6);
        if (__builtin_expect(flags != 0, 0)) {
            special_write(s, uc, addr, line, end_line, flags);
            return;
        }
        if (end_line != line || (addr >> 12) != s->last_page) data_access(s, uc, addr, line, end_line, 1);
        else if (line != s->hit_line) line_access(s, line, 1);
        return; /* else the last line again: L1 + DTLB hit */
    }
    s->counters[C_LOADS]++;
    if (end_line != line || (addr >> 12) != s->last_page) data_access(s, uc, addr, line, end_line, 0);
    else if (line != s->hit_line) line_access(s, line, 0);
}

/* Instructions retired and millicycles spent before the instruction at `pc` of the current
 * block executes: a block is counted when it starts, so the rest of it is taken back. This is
 * guest time "at" an instruction (what rdtsc there reads) and the tracer's exact stamps.
 * Returns -1, with the plain counts, when pc is not an instruction of the current block. */
/* (Protected: the exception delivery's block hook in this extension calls it directly, not through
 * the PLT; ctypes still finds it.) */
__attribute__((visibility("protected"))) int cm_stamp(cm_state *s, uint64_t pc, uint64_t *insns, uint64_t *mc) {
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
    s->last_line = s->last_fetch_line = s->last_page = s->last_wline = s->hit_line = UINT64_MAX;
    s->filter.line[0] = s->filter.line[1] = UINT64_MAX;
    s->clock = 0;
    s->tlb1_n = 0;
    for (int i = 0; i < TLB1_BUCKETS; i++) s->tlb1_head[i] = -1;
    s->ghist = 0;
    s->ras_top = s->ras_depth = 0;
    s->paging_check = 1;
    memset(s->counters, 0, sizeof s->counters);
}

static void set_limits(cm_state *s, int32_t max_blocks, int32_t max_prof) {
    s->max_blocks = max_blocks;
    s->max_pool = (uint32_t)max_blocks * POOL_PER_BLOCK;
    s->max_lnodes = max_blocks * LINES_PER_BLOCK;
    s->max_code = (uint32_t)max_blocks * BYTES_PER_BLOCK;
    s->max_prof = max_prof;
}

/* The capstone layout this file reads (cm_capstone_abi(NULL) is its length). */
int cm_capstone_abi(int64_t *out) {
    if (out) memcpy(out, CAPSTONE_ABI, sizeof CAPSTONE_ABI);
    return CAPSTONE_ABI_N;
}

/* *why on failure: 1 a parameter is out of range, 2 capstone cannot be opened, 3 no memory. */
cm_state *cm_new(const cm_params *p, const cm_costs *c, const cm_funcs *f, int64_t reg_ending, int *why) {
    cm_state *s = calloc(1, sizeof *s);
    *why = 3;
    if (!s) return NULL;
    s->p = *p;
    s->c = *c;
    s->c.fusion[sizeof s->c.fusion - 2] = s->c.fusion[sizeof s->c.fusion - 1] = 0;
    s->reg_read = (uc_reg_rw_t)f->reg_read;
    s->reg_write = (uc_reg_rw_t)f->reg_write;
    s->emu_stop = (uc_emu_stop_t)f->emu_stop;
    s->vmem_read = (uc_vmem_read_t)f->vmem_read;
    s->mem_read = (uc_mem_read_t)f->mem_read;
    s->vmem_translate = (uc_vmem_translate_t)f->vmem_translate;
    { /* uc_mem_hook_filter, from the libunicorn the functions above come from, if it has one */
        Dl_info info;
        void *lib;
        if (f->reg_read && dladdr(f->reg_read, &info) && info.dli_fname &&
            (lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD))) {
            s->mem_hook_filter = (uc_mem_hook_filter_t)dlsym(lib, "uc_mem_hook_filter");
            dlclose(lib); /* the unicorn package keeps it loaded */
        }
    }
    s->cs_option = (cs_option_t)f->cs_option;
    s->cs_close = (cs_close_t)f->cs_close;
    s->cs_free = (cs_free_t)f->cs_free;
    s->cs_disasm_iter = (cs_disasm_iter_t)f->cs_disasm_iter;
    s->cs_regs_access = (cs_regs_access_t)f->cs_regs_access;
    set_limits(s, MAX_BLOCKS, MAX_PROFILE_ROWS);
    s->budget_at = UINT64_MAX;
    if (p->dtlb1_entries < 1 || p->dtlb1_entries > 128 || p->ras_entries < 1 || p->bp_table_bits > 28 ||
        p->btb_bits > 28 || p->bp_history_bits > 63 || c->npools < P_FIXED || c->npools > MAX_POOLS ||
        reg_ending < 1 || reg_ending > MAX_REGS || !(c->dispatch_width > 0) || !(c->op_cache_width > 0)) {
        *why = 1;
        goto fail;
    }
    for (int i = 0; i < IC_N; i++)
        if (c->cls_pool[i] < 0 || c->cls_pool[i] >= c->npools) { *why = 1; goto fail; }
    static const int modes[3] = {CS_MODE_16, CS_MODE_32, CS_MODE_64};
    for (int w = 0; w < 3; w++) {
        if (((cs_open_t)f->cs_open)(CS_ARCH_X86, modes[w], &s->cs[w]) != 0) { *why = 2; goto fail; }
        s->cs_open[w] = 1;
        if (s->cs_option(s->cs[w], CS_OPT_DETAIL, CS_OPT_ON) != 0) { *why = 2; goto fail; }
        if (!(s->ci[w] = ((cs_malloc_t)f->cs_malloc)(s->cs[w]))) goto fail;
    }
    register_tables(s, (cs_reg_name_t)f->cs_reg_name, reg_ending);
    for (int i = 0; i < (1 << HASH_BITS); i++) s->buckets[i] = -1;
    for (int i = 0; i < (1 << FAST_BITS); i++) s->fast[i] = -1;
    s->line_bits = CODE_BITS_MIN;
    s->line_head = table_alloc(line_index_bytes(s->line_bits));
    s->pagemap = table_alloc(PAGEMAP_PAGES);
    s->rc = calloc(RCACHE_SLOTS, sizeof *s->rc);
    s->walkbuf = malloc(5 * 4096);
    s->bp = malloc((size_t)1 << p->bp_table_bits);
    s->btb = calloc((size_t)1 << p->btb_bits, sizeof *s->btb);
    s->ras = calloc((size_t)p->ras_entries, sizeof(uint64_t));
    if (!s->line_head || !s->pagemap || !s->rc || !s->walkbuf || !s->bp ||
        !s->btb || !s->ras)
        goto fail;
    s->gen = 1;
    memset(s->bp, 1, (size_t)1 << p->bp_table_bits); /* weakly not taken */
    s->bp_mask = ((uint64_t)1 << p->bp_table_bits) - 1;
    s->hist_mask = ((uint64_t)1 << p->bp_history_bits) - 1;
    s->btb_mask = ((uint64_t)1 << p->btb_bits) - 1;
    if (cache_init(&s->l1d, p->l1d_sets, p->l1d_ways) || cache_init(&s->l1i, p->l1i_sets, p->l1i_ways) ||
        cache_init(&s->l2, p->l2_sets, p->l2_ways) || cache_init(&s->l3, p->l3_sets, p->l3_ways) ||
        cache_init(&s->tlb2, p->dtlb2_sets, p->dtlb2_ways)) {
        *why = 1; /* a size that is not a power of two sets, or no memory */
        goto fail;
    }
    reset_state(s);
    *why = 0;
    return s;
fail:
    cm_free(s);
    return NULL;
}

void cm_free(cm_state *s) {
    if (!s) return;
    for (int w = 0; w < 3; w++) {
        if (s->ci[w]) s->cs_free(s->ci[w], 1);
        if (s->cs_open[w]) s->cs_close(&s->cs[w]);
    }
    cache_free(&s->l1d); cache_free(&s->l1i); cache_free(&s->l2); cache_free(&s->l3); cache_free(&s->tlb2);
    table_free(s->line_head, line_index_bytes(s->line_bits));
    table_free(s->pagemap, PAGEMAP_PAGES);
    free(s->bp); free(s->btb); free(s->ras);
    free(s->blocks); free(s->pool); free(s->lnodes); free(s->code); free(s->scratch);
    free(s->prof); free(s->prof_index);
    free(s->dbuf); free(s->dec[0]); free(s->dec[1]); free(s->doffs); free(s->dcosts); free(s->dweights); free(s->deps);
    free(s->ext); free(s->pt_frames); free(s->rc); free(s->walkbuf);
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
        if (b->size) {
            if (block_frame0(b) < PAGEMAP_PAGES) s->pagemap[block_frame0(b)] &= (uint8_t)~PG_CODE;
            if (b->frame1 < PAGEMAP_PAGES) s->pagemap[b->frame1] &= (uint8_t)~PG_CODE;
        }
    }
    for (int i = 0; i < (1 << HASH_BITS); i++) s->buckets[i] = -1;
    for (int i = 0; i < (1 << FAST_BITS); i++) s->fast[i] = -1;
    memset(s->line_head, 0, line_index_bytes(s->line_bits));
    s->nlinked = 0;
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

/* A decoded block, as the table keeps it. */
typedef struct {
    uint64_t addr, rep_iter, fe, frame0, frame1;
    uint32_t size, n;
    const uint32_t *offs, *costs; /* offset and base millicycles of each instruction */
    const uint8_t *bytes;         /* its `size` bytes as decoded */
    int kind, rep_last, first_rep, bits, flags;
} decoded_t;

/* Fill slot idx, whose pool, code and line-node regions are set, with a decoded block. */
static void fill_block(cm_state *s, int32_t idx, const decoded_t *d) {
    block_t *b = &s->blocks[idx];
    uint32_t n = d->n;
    b->addr = d->addr; b->size = d->size; b->n = n;
    b->kind = (uint8_t)d->kind; b->rep_last = (uint8_t)d->rep_last;
    b->first_rep = (uint8_t)d->first_rep; b->rep_iter = d->rep_iter; b->state = B_LIVE;
    b->bits = (uint8_t)d->bits; b->flags = (uint8_t)d->flags;
    b->pline0 = (d->frame0 << 6) | ((d->addr >> 6) & 63); b->frame1 = d->frame1;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        s->pool[b->pool + i] = d->offs[i];
        s->pool[b->pool + n + i] = (uint32_t)sum;
        sum += d->costs[i];
    }
    s->pool[b->pool + 2 * n] = (uint32_t)sum;
    if (d->size) memcpy(s->code + b->code, d->bytes, d->size);
    b->base = sum;
    b->fe = d->fe;
    b->last_pc = n ? d->addr + d->offs[n - 1] : d->addr;
    b->line0 = d->addr >> 6;
    b->line1 = d->size ? (d->addr + d->size - 1) >> 6 : d->addr >> 6;
    link_lines(s, idx);
    s->last_wline = UINT64_MAX;
}

/* Put a decoded block into the table; returns its slot, or -1 without memory. */
static int32_t add_block(cm_state *s, const decoded_t *d) {
    uint64_t addr = d->addr;
    uint32_t size = d->size, n = d->n;
    int32_t old = find_block(s, addr, size); /* one block per key: a forgotten one whose bytes changed */
    if (old >= 0) {
        block_t *o = &s->blocks[old];
        if (o->state == B_LIVE) forget_block(s, old);
        /* Same address and size: its code bytes and lines fit; the pool may not.  The block that
         * ran last is still read by the hooks (its closing branch, cm_finish), so it stays. */
        if (old != s->prev && old != s->cur && 2 * (uint64_t)n + 1 <= o->pool_len) {
            fill_block(s, old, d);
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
    fill_block(s, idx, d);
    return idx;
}

/* A block met for the first time (or whose bytes changed): read, decode, cost, keep. */
__attribute__((noinline)) static int32_t decode_block(cm_state *s, uc_engine *uc, uint64_t addr, uint32_t size) {
    if (grow_decode(s, size ? size : 1) != 0) { s->error = E_MEMORY; return -1; }
    uint8_t *code = s->dbuf;
    if (size && (!s->vmem_read || s->vmem_read(uc, addr, UC_PROT_EXEC, code, size) != 0) &&
        s->mem_read(uc, addr, code, size) != 0) {
        s->error = E_CODE;
        return -1;
    }
    int bits = code_bits(s, uc), tiles = 0;
    insn_t *f = s->dec[0];
    uint32_t n = decode_insns(s, bits, code, size, addr, f, &tiles);
    if ((bits == 16 || bits == 32) && s->p.bits != 64 && size && !tiles) {
        /* Between setting CR0.PE and the far jump, CS keeps real-mode (16-bit) attributes that no
         * register shows: when the width the GDT gives cannot be this translated block, the
         * block's own shape decides. */
        int alt_tiles = 0;
        uint32_t alt = decode_insns(s, 48 - bits, code, size, addr, s->dec[1], &alt_tiles);
        if (alt_tiles) { f = s->dec[1]; n = alt; bits = 48 - bits; }
    }
    decoded_t d;
    memset(&d, 0, sizeof d);
    d.addr = addr;
    d.size = size;
    d.bytes = code;
    d.bits = bits;
    d.offs = s->doffs;
    d.costs = s->dcosts;
    d.kind = K_NONE;
    if (size && !n) { /* bytes capstone cannot decode: one instruction of class `other` */
        d.n = 1;
        s->doffs[0] = 0;
        s->dcosts[0] = (uint32_t)millicycles(s->c.cls_throughput[IC_OTHER]);
    } else if (n) {
        block_cost bc;
        if (cost_block(s, f, n, s->dcosts, &bc) != 0) { s->error = E_MEMORY; return -1; }
        for (uint32_t i = 0; i < n; i++) {
            s->doffs[i] = f[i].off;
            d.flags |= f[i].flags;
        }
        d.n = n;
        d.kind = bc.kind;
        d.rep_last = bc.rep_last;
        d.first_rep = bc.first_rep;
        d.rep_iter = bc.rep_iter;
        d.fe = bc.fe;
    }
    d.frame0 = frame_of(s, uc, addr);
    d.frame1 = size && ((addr + size - 1) >> 12) != (addr >> 12) ? frame_of(s, uc, addr + size - 1) : d.frame0;
    return add_block(s, &d);
}

void cm_set_budget(cm_state *s, int on, uint64_t n) { s->budget_at = on ? n : UINT64_MAX; s->budget_stop = 0; }

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
    int active = s->active_seq == s->seq ||
                 s->counters[C_LOADS] + s->counters[C_STORES] + s->filter.count[0] + s->filter.count[1] != s->mem_at_block;
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
__attribute__((visibility("protected"))) uint64_t cm_millicycles(cm_state *s) { return s->mc; } /* as cm_stamp */
int cm_error(cm_state *s) { return s->error; }
int cm_budget_stopped(cm_state *s) { return s->budget_stop; }
void cm_counters(cm_state *s, uint64_t *out) {
    filter_fold(s);
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
/* out[7]: blocks in the table, bytes allocated for the table and the profile of flushed blocks,
 * flushes, blocks decoded, forgotten blocks restored unchanged, folded profile rows, walks of
 * the guest's page tables. */
void cm_table_stats(cm_state *s, uint64_t *out) {
    out[0] = (uint64_t)s->nblocks;
    out[1] = (uint64_t)s->cap_blocks * sizeof *s->blocks + (uint64_t)s->cap_pool * sizeof *s->pool +
             (uint64_t)s->cap_lnodes * sizeof *s->lnodes + s->cap_code + s->cap_scratch +
             line_index_bytes(s->line_bits) + (uint64_t)s->cap_prof * sizeof *s->prof +
             (s->prof_index ? ((uint64_t)s->prof_mask + 1) * sizeof *s->prof_index : 0);
    out[2] = s->flushes;
    out[3] = s->decodes;
    out[4] = s->restores;
    out[5] = (uint64_t)s->nprof;
    out[6] = s->walks;
}
/* The block keyed (addr, size) in the table (live or forgotten): out[8] = width it was decoded
 * in, instructions, kind, rep_last, first_rep, rep-iteration millicycles, front-end
 * millicycles, state; offs and costs (each instruction's offset and base millicycles) get
 * up to `max` entries.  Returns the instruction count, or -1 when the table holds no such block. */
int32_t cm_block(cm_state *s, uint64_t addr, uint32_t size, uint64_t *out, uint32_t *offs, uint32_t *costs,
                 uint32_t max) {
    int32_t i = find_block(s, addr, size);
    if (i < 0) return -1;
    const block_t *b = &s->blocks[i];
    out[0] = b->bits; out[1] = b->n; out[2] = b->kind; out[3] = b->rep_last; out[4] = b->first_rep;
    out[5] = b->rep_iter; out[6] = b->fe; out[7] = b->state;
    for (uint32_t k = 0; k < b->n && k < max; k++) {
        offs[k] = s->pool[b->pool + k];
        costs[k] = s->pool[b->pool + b->n + k + 1] - s->pool[b->pool + b->n + k];
    }
    return (int32_t)b->n;
}
/* The host rewrote guest code at virtual [lo, hi): forget the blocks there (a short range
 * through the line index, page by page as the CPU translates it now; a long one by a scan). */
void cm_invalidate(cm_state *s, uc_engine *uc, uint64_t lo, uint64_t hi) {
    if (hi <= lo) return;
    if (((hi - lo) >> 6) > (uint64_t)s->nblocks) {
        for (int32_t i = 0; i < s->nblocks; i++) {
            block_t *b = &s->blocks[i];
            if (b->state == B_LIVE && b->size && b->addr < hi && b->addr + b->size > lo) forget_block(s, i);
        }
        return;
    }
    for (uint64_t at = lo; at < hi; ) {
        uint64_t end = ((at >> 12) + 1) << 12;
        if (end > hi || end == 0) end = hi;
        uint64_t base = frame_of(s, uc, at) << 12, off = at & 4095;
        invalidate_code(s, (base + off) & ~63ull, (base + (end - at) + off + 63) & ~63ull);
        at = end;
    }
}

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
