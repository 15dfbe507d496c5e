/* Version 2 trace lines (docs/trace-format.md) written in native code, one event at a time, into a
 * growable text buffer that Python writes out per batch. */
#ifndef AETH_V2LINES_H
#define AETH_V2LINES_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *text;
    size_t len, cap;
    int failed; /* out of memory: the buffer stopped growing */
} v2_buffer;

/* A field of an event line: a number, or null when `present` is 0. */
typedef struct { uint64_t value; int present; } v2_field;

#define V2_EVENT_FIELDS 14 /* seq .. depth: the fields before frames (V2_FIELDS in schema.py) */
#define V2_HEAP_FIELDS 5

/* {"e":[...fields (the second, kind, as its name)..., [frames], vector],"h":[...],"f":[keep,drop,[a,s,...]]} */
void v2_event(v2_buffer *b, const v2_field *fields, const char *kind, const uint64_t *frames, size_t nframes,
              const v2_field *vector, const v2_field *heap, const uint64_t *change, const uint64_t *entries);
void v2_clear(v2_buffer *b);
void v2_free(v2_buffer *b);
#endif
