/* View (b) in native code: our kernel's LockedAllocator (docs/kernel-structures.md) read from the
 * host's copy of guest RAM through the guest's page tables, summarised after every allocator call,
 * and its free list kept as a chain of changes (each call's change against the list before it). */
#ifndef AETH_GUESTWALK_H
#define AETH_GUESTWALK_H
#include <stddef.h>
#include <stdint.h>

enum { H_NONE, H_BUMP, H_LINKED_LIST, H_UNKNOWN };
enum { P_CYCLE = 1, P_TOO_LONG = 2, P_UNMAPPED = 4, P_OUTSIDE = 8, P_BAD_SIZE = 16, P_OVERLAP = 32, P_BUMP_NEXT = 64,
       P_KIND = 128 };

typedef struct {
    uint64_t kind, size, used, free, blocks, problems, largest;
} gw_summary;

/* A change of the free list: keep `keep` entries, drop `drop`, insert `len` entries found at `at`
 * (pairs of address and size) in the change buffer. */
typedef struct {
    uint64_t seq, keep, drop, at, len;
} gw_change;

typedef struct guestwalk guestwalk;

guestwalk *gw_new(uint64_t alloc_va, uint64_t heap_lo, uint64_t heap_hi, uint64_t min_block, const uint8_t *ram,
                  uint64_t ram_size);
void gw_free(guestwalk *g);
/* Walk now (paging per cr0/cr3); record the change against the last walk under `seq`. -1: out of memory. */
int gw_walk(guestwalk *g, uint64_t cr0, uint64_t cr3, uint64_t seq, gw_summary *out);
size_t gw_nchanges(guestwalk *g);
const gw_change *gw_changes(guestwalk *g);
size_t gw_nentries(guestwalk *g);
const uint64_t *gw_entries(guestwalk *g);
void gw_clear_changes(guestwalk *g);
#endif
