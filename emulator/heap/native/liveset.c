/* The event view of the heap and the heap checks, in native code (see liveset.h).
 *
 * Live blocks are a treap keyed by address (ordered: an overlap query looks at the block that
 * starts last before a range's end), nodes in one growable pool with a free chain. Pointers freed
 * last, for "double free" messages, are an open-addressed table. The rules are the ones
 * docs/trace-format.md lists for violations; tests/support/checker_model.py is the same rules in
 * Python, and the property tests hold the two to each other. */
#include "liveset.h"

#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX

typedef struct {
    ls_block b;
    uint32_t left, right, prio;
} node;

typedef struct { uint64_t ptr, seq, ret; } freed_slot; /* ptr + 1; 0 = empty */

struct liveset {
    node *nodes;
    uint32_t nnodes, cap, free_chain, root;
    uint32_t rng;
    uint64_t heap_lo, heap_hi, largest;
    int check, disjoint;
    freed_slot *freed;
    size_t nfreed, cap_freed;
    ls_violation *violations;
    size_t nviol, cap_viol;
    uint64_t max_kept, kept;        /* violations kept over the whole run (Python takes them in batches) */
    ls_stats st;
};

liveset *ls_new(uint64_t heap_lo, uint64_t heap_hi, int check, uint64_t max_kept) {
    liveset *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->root = s->free_chain = NIL;
    s->rng = 0x9E3779B9u; /* fixed: the tree's shape, like everything else, is the same every run */
    s->heap_lo = heap_lo;
    s->heap_hi = heap_hi;
    s->check = check;
    s->disjoint = 1;
    s->largest = 1;
    s->max_kept = max_kept;
    return s;
}

void ls_free(liveset *s) {
    if (!s) return;
    free(s->nodes);
    free(s->freed);
    free(s->violations);
    free(s);
}

/* ---- the treap ---------------------------------------------------------------------------- */

static uint32_t next_prio(liveset *s) {
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 17;
    s->rng ^= s->rng << 5;
    return s->rng;
}

static uint32_t new_node(liveset *s, const ls_block *b) {
    uint32_t i;
    if (s->free_chain != NIL) {
        i = s->free_chain;
        s->free_chain = s->nodes[i].left;
    } else {
        if (s->nnodes == s->cap) {
            uint32_t cap = s->cap ? s->cap * 2 : 1024;
            node *p = realloc(s->nodes, (size_t)cap * sizeof *p);
            if (!p) return NIL;
            s->nodes = p;
            s->cap = cap;
        }
        i = s->nnodes++;
    }
    s->nodes[i].b = *b;
    s->nodes[i].left = s->nodes[i].right = NIL;
    s->nodes[i].prio = next_prio(s);
    return i;
}

/* split `t` into keys < key and keys >= key */
static void split(liveset *s, uint32_t t, uint64_t key, uint32_t *lo, uint32_t *hi) {
    if (t == NIL) { *lo = *hi = NIL; return; }
    node *n = &s->nodes[t];
    if (n->b.ptr < key) {
        split(s, n->right, key, &n->right, hi);
        *lo = t;
    } else {
        split(s, n->left, key, lo, &n->left);
        *hi = t;
    }
}

static uint32_t merge(liveset *s, uint32_t a, uint32_t b) {
    if (a == NIL) return b;
    if (b == NIL) return a;
    if (s->nodes[a].prio > s->nodes[b].prio) {
        s->nodes[a].right = merge(s, s->nodes[a].right, b);
        return a;
    }
    s->nodes[b].left = merge(s, a, s->nodes[b].left);
    return b;
}

static uint32_t find(const liveset *s, uint64_t ptr) {
    uint32_t t = s->root;
    while (t != NIL && s->nodes[t].b.ptr != ptr) t = ptr < s->nodes[t].b.ptr ? s->nodes[t].left : s->nodes[t].right;
    return t;
}

/* the block with the greatest address below `key` */
static uint32_t before(const liveset *s, uint64_t key) {
    uint32_t t = s->root, best = NIL;
    while (t != NIL) {
        if (s->nodes[t].b.ptr < key) { best = t; t = s->nodes[t].right; }
        else t = s->nodes[t].left;
    }
    return best;
}

static int insert(liveset *s, const ls_block *b) {
    uint32_t i = new_node(s, b), lo, hi;
    if (i == NIL) return -1;
    split(s, s->root, b->ptr, &lo, &hi);
    s->root = merge(s, merge(s, lo, i), hi);
    return 0;
}

static void erase(liveset *s, uint64_t ptr) {
    uint32_t lo, mid, hi;
    split(s, s->root, ptr, &lo, &hi);
    split(s, hi, ptr + 1, &mid, &hi);
    if (mid != NIL) { /* one node: addresses are unique in the tree */
        s->nodes[mid].left = s->free_chain;
        s->free_chain = mid;
    }
    s->root = merge(s, lo, hi);
}

static uint64_t end_of(const ls_block *b) { return b->ptr + (b->size ? b->size : 1); }

static uint32_t overlapping(const liveset *s, uint64_t start, uint64_t size) {
    uint64_t end = start + (size ? size : 1);
    for (uint32_t t = before(s, end); t != NIL; t = before(s, s->nodes[t].b.ptr)) {
        const ls_block *b = &s->nodes[t].b;
        if (end_of(b) > start) return t;
        /* while no two live blocks ever overlapped, the last one before `end` is the only candidate */
        if (s->disjoint || b->ptr + s->largest <= start) break;
    }
    return NIL;
}

/* ---- pointers freed last ------------------------------------------------------------------- */

static size_t slot_of(const liveset *s, uint64_t ptr) {
    return (size_t)((ptr * 0x9E3779B97F4A7C15ull) >> 20) & (s->cap_freed - 1);
}

static freed_slot *freed_find(liveset *s, uint64_t ptr) {
    if (!s->cap_freed) return NULL;
    for (size_t i = slot_of(s, ptr);; i = (i + 1) & (s->cap_freed - 1)) {
        if (s->freed[i].ptr == ptr + 1) return &s->freed[i];
        if (!s->freed[i].ptr) return NULL;
    }
}

static int freed_put(liveset *s, uint64_t ptr, uint64_t seq, uint64_t ret) {
    freed_slot *f = freed_find(s, ptr);
    if (f) { f->seq = seq; f->ret = ret; return 0; }
    if ((s->nfreed + 1) * 2 > s->cap_freed) {
        size_t oldcap = s->cap_freed, cap = oldcap ? oldcap * 2 : 1024;
        freed_slot *old = s->freed, *fresh = calloc(cap, sizeof *fresh);
        if (!fresh) return -1;
        s->freed = fresh;
        s->cap_freed = cap;
        s->nfreed = 0;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].ptr) freed_put(s, old[i].ptr - 1, old[i].seq, old[i].ret);
        free(old);
    }
    size_t i = slot_of(s, ptr);
    while (s->freed[i].ptr) i = (i + 1) & (s->cap_freed - 1);
    s->freed[i] = (freed_slot){ptr + 1, seq, ret};
    s->nfreed++;
    return 0;
}

static void freed_drop(liveset *s, uint64_t ptr) { /* linear probing: shift the cluster back */
    freed_slot *f = freed_find(s, ptr);
    if (!f) return;
    size_t i = (size_t)(f - s->freed), mask = s->cap_freed - 1;
    s->freed[i].ptr = 0;
    s->nfreed--;
    for (size_t j = (i + 1) & mask; s->freed[j].ptr; j = (j + 1) & mask) {
        size_t home = slot_of(s, s->freed[j].ptr - 1);
        /* move j back to i if its home is not cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            s->freed[i] = s->freed[j];
            s->freed[j].ptr = 0;
            i = j;
        }
    }
}

/* ---- checks and the event view ------------------------------------------------------------- */

static void report(liveset *s, const ls_call *c, uint64_t code, uint64_t ptr, const ls_block *other,
                   uint64_t other_seq, uint64_t other_ret) {
    s->st.violations++;
    if (s->kept >= s->max_kept) { s->st.dropped++; return; } /* a guest that breaks a rule for ever */
    if (s->nviol == s->cap_viol) {
        size_t cap = s->cap_viol ? s->cap_viol * 2 : 64;
        ls_violation *p = realloc(s->violations, cap * sizeof *p);
        if (!p) { s->st.dropped++; return; }
        s->violations = p;
        s->cap_viol = cap;
    }
    s->kept++;
    ls_violation *v = &s->violations[s->nviol++];
    memset(v, 0, sizeof *v);
    v->seq = c->seq; v->kind = c->kind; v->ptr = ptr; v->align = c->align; v->ret = c->ret; v->code = code;
    v->size = c->kind == LK_REALLOC && code != V_OUTSIDE_HEAP && code != V_OVERLAP ? c->old_size : c->size;
    if (other) {
        v->other_seq = other->seq; v->other_ptr = other->ptr; v->other_size = other->size;
        v->other_align = other->align; v->other_ret = other->ret;
    } else {
        v->other_seq = other_seq; v->other_ret = other_ret;
    }
}

static int allocates(const ls_call *c) {
    return (c->kind == LK_ALLOC || c->kind == LK_ALLOC_ZEROED || c->kind == LK_REALLOC) && c->returned && c->result;
}

static int frees(const ls_call *c) {
    return c->kind == LK_DEALLOC || (c->kind == LK_REALLOC && c->returned && c->result);
}

static int check_release(liveset *s, const ls_call *c) {
    if (c->kind == LK_REALLOC && !(c->returned && c->result)) return 0; /* a failed realloc keeps the block */
    uint64_t size = c->kind == LK_DEALLOC ? c->size : c->old_size;
    uint32_t t = find(s, c->ptr);
    if (t == NIL) {
        freed_slot *f = freed_find(s, c->ptr);
        if (f) report(s, c, V_DOUBLE_FREE, c->ptr, NULL, f->seq, f->ret);
        else report(s, c, V_INVALID_FREE, c->ptr, NULL, 0, 0);
        return 0;
    }
    const ls_block *b = &s->nodes[t].b;
    if (b->size != size || b->align != c->align) report(s, c, V_SIZE_MISMATCH, c->ptr, b, 0, 0);
    return freed_put(s, c->ptr, c->seq, c->ret);
}

static void check_result(liveset *s, const ls_call *c) {
    uint64_t ptr = c->result;
    freed_drop(s, ptr);
    if (c->align && ptr % c->align) report(s, c, V_MISALIGNED, ptr, NULL, 0, 0);
    if (s->heap_hi && !(s->heap_lo <= ptr && ptr + c->size <= s->heap_hi && ptr + c->size >= ptr))
        report(s, c, V_OUTSIDE_HEAP, ptr, NULL, 0, 0);
    uint32_t t = overlapping(s, ptr, c->size);
    if (t != NIL && !(c->kind == LK_REALLOC && s->nodes[t].b.ptr == c->ptr))
        report(s, c, V_OVERLAP, ptr, &s->nodes[t].b, 0, 0);
}

static void remove_block(liveset *s, uint64_t ptr) {
    uint32_t t = find(s, ptr);
    if (t == NIL) return;
    s->st.live_bytes -= s->nodes[t].b.size;
    s->st.live_blocks--;
    erase(s, ptr);
}

static int add_block(liveset *s, const ls_block *b) {
    remove_block(s, b->ptr);
    if (s->disjoint) {
        uint32_t lo = before(s, b->ptr), hi = before(s, end_of(b));
        if ((lo != NIL && end_of(&s->nodes[lo].b) > b->ptr) || (hi != NIL && hi != lo)) s->disjoint = 0;
    }
    if (insert(s, b)) return -1;
    if (b->size > s->largest) s->largest = b->size;
    s->st.live_bytes += b->size;
    s->st.live_blocks++;
    return 0;
}

int ls_apply(liveset *s, const ls_call *c) {
    int err = 0;
    if (c->kind < LK_KINDS) s->st.counts[c->kind]++;
    if (s->check) {
        if (c->kind == LK_DEALLOC || c->kind == LK_REALLOC) err |= check_release(s, c);
        if (allocates(c)) check_result(s, c);
    }
    if (frees(c)) remove_block(s, c->ptr);
    if (allocates(c)) {
        s->st.bytes_requested += c->size;
        ls_block b = {c->result, c->size, c->align, c->seq, c->ret};
        err |= add_block(s, &b);
    }
    if (s->st.live_bytes > s->st.peak_live_bytes) s->st.peak_live_bytes = s->st.live_bytes;
    if (s->st.live_blocks > s->st.peak_live_blocks) s->st.peak_live_blocks = s->st.live_blocks;
    return err;
}

void ls_guest_problem(liveset *s, const ls_call *c, uint64_t bit) {
    if (s->check) report(s, c, V_GUEST_HEAP, 0, NULL, bit, 0);
}

/* ---- reading it out ------------------------------------------------------------------------ */

const ls_stats *ls_stats_of(liveset *s) { return &s->st; }
size_t ls_nviolations(liveset *s) { return s->nviol; }
const ls_violation *ls_violations(liveset *s) { return s->violations; }
void ls_clear_violations(liveset *s) { s->nviol = 0; }

static void in_order(const liveset *s, uint32_t t, ls_block *out, size_t cap, size_t *n) {
    while (t != NIL) { /* recursion on the left only: the right spine is a loop */
        in_order(s, s->nodes[t].left, out, cap, n);
        if (*n < cap) out[*n] = s->nodes[t].b;
        (*n)++;
        t = s->nodes[t].right;
    }
}

size_t ls_blocks(liveset *s, ls_block *out, size_t cap) {
    size_t n = 0;
    in_order(s, s->root, out, cap, &n);
    return n;
}

int ls_get(liveset *s, uint64_t ptr, ls_block *out) {
    uint32_t t = find(s, ptr);
    if (t == NIL) return 0;
    *out = s->nodes[t].b;
    return 1;
}

int ls_overlapping(liveset *s, uint64_t start, uint64_t size, ls_block *out) {
    uint32_t t = overlapping(s, start, size);
    if (t == NIL) return 0;
    *out = s->nodes[t].b;
    return 1;
}
