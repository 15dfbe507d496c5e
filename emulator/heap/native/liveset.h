/* The event view of the heap in native code: live blocks by address, the checks the allocation API
 * promises, and the counters the report shows. Driven by the allocation tracer after every call
 * (emulator/cycles/native/alloctrace.c) and, for tests, directly from Python. */
#ifndef AETH_LIVESET_H
#define AETH_LIVESET_H
#include <stddef.h>
#include <stdint.h>

enum { LK_ALLOC, LK_DEALLOC, LK_REALLOC, LK_ALLOC_ZEROED, LK_ALLOC_ERROR, LK_KINDS };
/* violation kinds, in emulator/heap/native.py's order */
enum { V_MISALIGNED, V_OUTSIDE_HEAP, V_OVERLAP, V_DOUBLE_FREE, V_INVALID_FREE, V_SIZE_MISMATCH, V_GUEST_HEAP };

typedef struct {
    uint64_t seq, kind, ptr, size, align, ret;             /* the event (ret: its return address) */
    uint64_t other_seq, other_ptr, other_size, other_align, other_ret; /* the block or free it met */
    uint64_t code;                                          /* V_* ; for V_GUEST_HEAP the problem bit */
} ls_violation;

typedef struct {
    uint64_t counts[LK_KINDS];
    uint64_t live_blocks, live_bytes, peak_live_blocks, peak_live_bytes, bytes_requested;
    uint64_t violations, dropped;
} ls_stats;

typedef struct { uint64_t ptr, size, align, seq, ret; } ls_block;

/* One call, its arguments already sorted into ptr/size/align/old_size by the caller. */
typedef struct {
    uint64_t seq, kind, returned, ptr, size, old_size, align, result, ret;
} ls_call;

typedef struct liveset liveset;

liveset *ls_new(uint64_t heap_lo, uint64_t heap_hi, int check, uint64_t max_kept);
void ls_free(liveset *s);
int ls_apply(liveset *s, const ls_call *c);         /* check (if enabled), then apply; -1: out of memory */
void ls_guest_problem(liveset *s, const ls_call *c, uint64_t bit);
const ls_stats *ls_stats_of(liveset *s);
size_t ls_nviolations(liveset *s);
const ls_violation *ls_violations(liveset *s);
void ls_clear_violations(liveset *s);
size_t ls_blocks(liveset *s, ls_block *out, size_t cap); /* live blocks by address; returns how many */
int ls_get(liveset *s, uint64_t ptr, ls_block *out);
int ls_overlapping(liveset *s, uint64_t start, uint64_t size, ls_block *out);
#endif
