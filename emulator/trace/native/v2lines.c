/* Version 2 trace lines in native code (see v2lines.h). */
#include "v2lines.h"

#include <stdlib.h>
#include <string.h>

static int reserve(v2_buffer *b, size_t more) {
    if (b->failed) return -1;
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + more) cap *= 2;
    char *p = realloc(b->text, cap);
    if (!p) { b->failed = 1; return -1; }
    b->text = p;
    b->cap = cap;
    return 0;
}

static void put(v2_buffer *b, const char *s, size_t n) {
    if (reserve(b, n)) return;
    memcpy(b->text + b->len, s, n);
    b->len += n;
}

static void number(v2_buffer *b, uint64_t v) {
    char digits[20];
    int n = 0;
    do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    if (reserve(b, (size_t)n)) return;
    while (n) b->text[b->len++] = digits[--n];
}

static void field(v2_buffer *b, const v2_field *f) {
    if (f->present) number(b, f->value);
    else put(b, "null", 4);
}

void v2_event(v2_buffer *b, const v2_field *fields, const char *kind, const uint64_t *frames, size_t nframes,
              const v2_field *vector, const v2_field *heap, const uint64_t *change, const uint64_t *entries) {
    put(b, "{\"e\":[", 6);
    for (int i = 0; i < V2_EVENT_FIELDS; i++) {
        if (i == 1) { put(b, "\"", 1); put(b, kind, strlen(kind)); put(b, "\"", 1); }
        else field(b, &fields[i]);
        put(b, ",", 1);
    }
    put(b, "[", 1);
    for (size_t i = 0; i < nframes; i++) {
        if (i) put(b, ",", 1);
        number(b, frames[i]);
    }
    put(b, "],", 2);
    field(b, vector);
    put(b, "],\"h\":[", 7);
    for (int i = 0; i < V2_HEAP_FIELDS; i++) {
        if (i) put(b, ",", 1);
        field(b, &heap[i]);
    }
    put(b, "]", 1);
    if (change) { /* keep, drop, len; the inserted pairs at entries */
        put(b, ",\"f\":[", 6);
        number(b, change[0]);
        put(b, ",", 1);
        number(b, change[1]);
        put(b, ",[", 2);
        for (uint64_t i = 0; i < 2 * change[2]; i++) {
            if (i) put(b, ",", 1);
            number(b, entries[i]);
        }
        put(b, "]]", 2);
    }
    put(b, "}\n", 2);
}

void v2_clear(v2_buffer *b) { b->len = 0; }
void v2_free(v2_buffer *b) { free(b->text); b->text = NULL; b->len = b->cap = 0; }
