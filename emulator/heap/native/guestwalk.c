/* View (b) in native code (see guestwalk.h). The walk follows docs/kernel-structures.md, as
 * emulator/heap/guest_view.py does in Python for the end-of-run view; the tests hold the two to
 * each other at every event. */
#include "guestwalk.h"

#include <stdlib.h>
#include <string.h>

struct guestwalk {
    uint64_t alloc_va, heap_lo, heap_hi, min_block;
    const uint8_t *ram;
    uint64_t ram_size;
    uint64_t *list, *next_list;     /* address, size pairs: the last walk's list and the one being made */
    size_t len, next_len, cap, next_cap;
    gw_change *changes;
    size_t nchanges, cap_changes;
    uint64_t *entries;
    size_t nentries, cap_entries;
};

static int grow(void **buf, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 1024;
    while (cap2 < need) cap2 *= 2;
    void *p = realloc(*buf, cap2 * item);
    if (!p) return -1;
    *buf = p;
    *cap = cap2;
    return 0;
}

guestwalk *gw_new(uint64_t alloc_va, uint64_t heap_lo, uint64_t heap_hi, uint64_t min_block, const uint8_t *ram,
                  uint64_t ram_size) {
    guestwalk *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->alloc_va = alloc_va; g->heap_lo = heap_lo; g->heap_hi = heap_hi;
    g->min_block = min_block ? min_block : 16;
    g->ram = ram; g->ram_size = ram_size;
    return g;
}

void gw_free(guestwalk *g) {
    if (!g) return;
    free(g->list); free(g->next_list); free(g->changes); free(g->entries);
    free(g);
}

/* ---- reading guest memory ------------------------------------------------------------------ */

typedef struct { uint64_t cr3, page_va[16], page_pa[16]; int paging; } walk_t;

static int phys_u64(const guestwalk *g, uint64_t pa, uint64_t *out) {
    if (pa + 8 > g->ram_size || pa + 8 < pa) return -1;
    memcpy(out, g->ram + pa, 8);
    return 0;
}

static int translate(const guestwalk *g, walk_t *w, uint64_t va, uint64_t *pa) {
    if (!w->paging) { *pa = va; return 0; }
    uint64_t page = va >> 12, slot = page & 15;
    if (w->page_va[slot] == page + 1) { *pa = w->page_pa[slot] | (va & 0xFFF); return 0; }
    uint64_t table = w->cr3 & 0x000FFFFFFFFFF000ull, e = 0;
    for (int level = 0; level < 4; level++) {
        int shift = 39 - 9 * level;
        if (phys_u64(g, table + ((va >> shift) & 0x1FF) * 8, &e) || !(e & 1)) return -1;
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

static int virt_u64(const guestwalk *g, walk_t *w, uint64_t va, uint64_t *out) {
    uint64_t pa;
    if ((va & 0xFFF) > 0xFF8) return -1; /* our structures never straddle a page */
    return translate(g, w, va, &pa) || phys_u64(g, pa, out) ? -1 : 0;
}

/* ---- the walk ------------------------------------------------------------------------------ */

static int push(guestwalk *g, uint64_t address, uint64_t size) {
    if (grow((void **)&g->next_list, &g->next_cap, g->next_len + 2, sizeof *g->next_list)) return -1;
    g->next_list[g->next_len++] = address;
    g->next_list[g->next_len++] = size;
    return 0;
}

static int walk(guestwalk *g, walk_t *w, gw_summary *e) {
    uint64_t kind, v[4];
    if (virt_u64(g, w, g->alloc_va + 8, &kind)) return 0;
    uint64_t inner = g->alloc_va + 16;
    if (kind == 0) { /* BumpAllocator { heap_start, heap_end, next, allocations } */
        for (int i = 0; i < 4; i++) if (virt_u64(g, w, inner + 8 * (uint64_t)i, &v[i])) return 0;
        e->kind = H_BUMP;
        if (v[0] == 0 && v[1] == 0) return 0;
        if (!(v[0] <= v[2] && v[2] <= v[1])) { e->problems |= P_BUMP_NEXT; return 0; }
        e->size = v[1] - v[0];
        e->used = v[2] - v[0];
        e->free = v[1] - v[2];
        e->blocks = e->free ? 1 : 0;
        e->largest = e->free;
        return e->free ? push(g, v[2], e->free) : 0;
    }
    if (kind != 1) { e->kind = H_UNKNOWN; e->problems |= P_KIND; return 0; }
    /* LinkedListAllocator { head: ListNode { size, next } }: first fit, address order is not
     * promised, so overlap is checked against the previous node only when it is in order. */
    e->kind = H_LINKED_LIST;
    e->size = g->heap_hi - g->heap_lo;
    uint64_t node = 0, free = 0, blocks = 0, largest = 0, limit = (g->heap_hi - g->heap_lo) / g->min_block + 1;
    uint64_t prev_lo = 0, prev_hi = 0;
    if (virt_u64(g, w, inner + 8, &node)) { e->problems |= P_UNMAPPED; return 0; }
    uint64_t slow = node; /* Floyd: a cycle is found without remembering the nodes */
    int step = 0;
    while (node) {
        uint64_t size, next;
        if (blocks > limit) { e->problems |= P_TOO_LONG; break; }
        if (virt_u64(g, w, node, &size) || virt_u64(g, w, node + 8, &next)) { e->problems |= P_UNMAPPED; break; }
        if (node < g->heap_lo || node + size > g->heap_hi || node + size < node) e->problems |= P_OUTSIDE;
        if (size < g->min_block || size % 8) e->problems |= P_BAD_SIZE;
        if (prev_hi && node < prev_hi && node + size > prev_lo) e->problems |= P_OVERLAP; /* list neighbours */
        if (push(g, node, size)) return -1;
        prev_lo = node;
        prev_hi = node + size > node ? node + size : node;
        free += size;
        blocks++;
        if (size > largest) largest = size;
        node = next;
        if (step++ & 1) {
            uint64_t s2 = 0;
            if (virt_u64(g, w, slow + 8, &s2)) break;
            slow = s2;
            if (slow && slow == node) { e->problems |= P_CYCLE; break; }
        }
    }
    if (free > e->size) { e->problems |= P_OVERLAP; free = e->size; } /* blocks counted twice */
    e->free = free;
    e->used = e->size - free;
    e->blocks = blocks;
    e->largest = largest;
    return 0;
}

/* The change from the last list to the new one: the common front and back stay. */
static int record_change(guestwalk *g, uint64_t seq) {
    size_t a = g->len / 2, b = g->next_len / 2, keep = 0, back = 0;
    while (keep < a && keep < b && g->list[2 * keep] == g->next_list[2 * keep] &&
           g->list[2 * keep + 1] == g->next_list[2 * keep + 1])
        keep++;
    while (back < a - keep && back < b - keep && g->list[2 * (a - 1 - back)] == g->next_list[2 * (b - 1 - back)] &&
           g->list[2 * (a - 1 - back) + 1] == g->next_list[2 * (b - 1 - back) + 1])
        back++;
    size_t drop = a - keep - back, len = b - keep - back;
    if (drop == 0 && len == 0) return 0;
    if (grow((void **)&g->changes, &g->cap_changes, g->nchanges + 1, sizeof *g->changes) ||
        grow((void **)&g->entries, &g->cap_entries, g->nentries + 2 * len, sizeof *g->entries))
        return -1;
    g->changes[g->nchanges++] = (gw_change){seq, keep, drop, g->nentries / 2, len};
    memcpy(g->entries + g->nentries, g->next_list + 2 * keep, 2 * len * sizeof *g->entries);
    g->nentries += 2 * len;
    return 0;
}

int gw_walk(guestwalk *g, uint64_t cr0, uint64_t cr3, uint64_t seq, gw_summary *out) {
    walk_t w;
    memset(&w, 0, sizeof w);
    memset(out, 0, sizeof *out);
    w.paging = (cr0 >> 31) & 1;
    w.cr3 = cr3;
    g->next_len = 0;
    if (walk(g, &w, out) || record_change(g, seq)) return -1;
    uint64_t *t = g->list; g->list = g->next_list; g->next_list = t;
    size_t c = g->cap; g->cap = g->next_cap; g->next_cap = c;
    g->len = g->next_len;
    return 0;
}

size_t gw_nchanges(guestwalk *g) { return g->nchanges; }
const gw_change *gw_changes(guestwalk *g) { return g->changes; }
size_t gw_nentries(guestwalk *g) { return g->nentries / 2; }
const uint64_t *gw_entries(guestwalk *g) { return g->entries; }
/* After Python copied the changes out; `at` of later changes counts from the new start. */
void gw_clear_changes(guestwalk *g) { g->nchanges = 0; g->nentries = 0; }
