/* Port I/O at machine speed: the `in`/`out` hooks of the Aetherion PC.
 *
 * A kernel prints by polling the UART's line status register and writing the transmit holding
 * register, one `in` and one `out` per byte. With a Python hook for each that is about 0.5 MB/s.
 * Here COM1's THR writes and LSR reads are handled in C while the UART is in its plain
 * transmit state (DLAB clear, no loopback; the Python UART model says when); every other port
 * goes to the Python device bus as before.
 *
 * Serial bytes collect in a staging buffer owned by the emulating thread. At each newline (or
 * when it fills) the staged bytes move, under a lock, to a ready buffer that the host takes
 * from another thread every few milliseconds and at the end of a run: whole lines are streamed
 * live, and the host runs no Python per byte. Loaded with ctypes (emulator/machine/ports.py). */
#define _POSIX_C_SOURCE 200809L
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct uc_struct uc_engine;
typedef uint32_t (*py_in_t)(uint32_t port, int32_t size);
typedef void (*py_out_t)(uint32_t port, int32_t size, uint32_t value);

#define STAGE_PUBLISH 4096 /* bytes staged without a newline before they are published anyway */
#define READY_LIMIT (64u << 20) /* bytes waiting for the host: past this the guest waits (a slow reader) */

typedef struct {
    uint32_t thr, lsr, lsr_value;
    int direct;   /* THR writes and LSR reads are handled here */
    int stopped;  /* the run has stopped: the rest of the block's port I/O never happened */
    py_in_t py_in;
    py_out_t py_out;
    uint8_t *staging;
    size_t staged, staging_cap;
    uint8_t *ready;
    size_t head, nready, ready_cap; /* bytes [head, nready) wait for the host */
    int waiting;                    /* a host thread takes from `ready` (so waiting for it can end) */
    pthread_mutex_t lock;
    uint64_t serial_bytes;
    int oom;
} ports_t;

static int grow(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 65536;
    while (cap2 < need) cap2 *= 2;
    uint8_t *p = realloc(*buf, cap2);
    if (!p) return -1;
    *buf = p;
    *cap = cap2;
    return 0;
}

/* Move the staged bytes to the ready buffer (the emulating thread, or the host after a run). */
void ports_publish(ports_t *s) {
    if (!s->staged) return;
    pthread_mutex_lock(&s->lock);
    while (s->waiting && !s->stopped && s->nready - s->head > READY_LIMIT) { /* backpressure, as a pipe gives */
        pthread_mutex_unlock(&s->lock);
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&s->lock);
    }
    if (s->head && s->head == s->nready) s->head = s->nready = 0;
    if (s->head > s->ready_cap / 2) { /* compact now and then, not on every take */
        memmove(s->ready, s->ready + s->head, s->nready - s->head);
        s->nready -= s->head;
        s->head = 0;
    }
    if (grow(&s->ready, &s->ready_cap, s->nready + s->staged) == 0) {
        memcpy(s->ready + s->nready, s->staging, s->staged);
        s->nready += s->staged;
    } else {
        s->oom = 1;
    }
    pthread_mutex_unlock(&s->lock);
    s->staged = 0;
}

static uint32_t hook_in(uc_engine *uc, uint32_t port, int size, void *user) {
    ports_t *s = user;
    (void)uc;
    if (s->stopped) return size >= 4 ? 0xFFFFFFFFu : (1u << (8 * size)) - 1;
    if (s->direct && port == s->lsr) return s->lsr_value;
    return s->py_in(port, size);
}

static void hook_out(uc_engine *uc, uint32_t port, int size, uint32_t value, void *user) {
    ports_t *s = user;
    (void)uc;
    if (s->stopped) return;
    if (s->direct && port == s->thr) {
        if (s->staged == s->staging_cap && grow(&s->staging, &s->staging_cap, s->staged + 1)) { s->oom = 1; return; }
        uint8_t byte = (uint8_t)value;
        s->staging[s->staged++] = byte;
        s->serial_bytes++;
        if (byte == '\n' || s->staged >= STAGE_PUBLISH) ports_publish(s);
        return;
    }
    s->py_out(port, size, value);
}

ports_t *ports_new(uint32_t thr, uint32_t lsr, uint32_t lsr_value, py_in_t py_in, py_out_t py_out) {
    ports_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->thr = thr; s->lsr = lsr; s->lsr_value = lsr_value;
    s->py_in = py_in; s->py_out = py_out;
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void ports_free(ports_t *s) {
    if (!s) return;
    pthread_mutex_destroy(&s->lock);
    free(s->staging);
    free(s->ready);
    free(s);
}

void ports_set_direct(ports_t *s, int on) { s->direct = on; }
void ports_set_stopped(ports_t *s, int on) { s->stopped = on; }
uint64_t ports_serial_bytes(ports_t *s) { return s->serial_bytes; }
int ports_oom(ports_t *s) { return s->oom; }

/* Copy up to `cap` ready bytes to dst (oldest first); returns how many. Any thread. */
size_t ports_take(ports_t *s, uint8_t *dst, size_t cap) {
    pthread_mutex_lock(&s->lock);
    size_t left = s->nready - s->head, n = left < cap ? left : cap;
    memcpy(dst, s->ready + s->head, n);
    s->head += n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Whether a host thread is taking output while the guest runs (only then may the guest wait). */
void ports_set_waiting(ports_t *s, int on) {
    pthread_mutex_lock(&s->lock);
    s->waiting = on;
    pthread_mutex_unlock(&s->lock);
}

void *ports_hook_in(void) { return (void *)hook_in; }
void *ports_hook_out(void) { return (void *)hook_out; }

/* setuptools builds this as a Python extension; emulator/machine/ports.py loads it with ctypes. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ports", "native port I/O (ctypes entry points)", -1,
                                    NULL, NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__ports(void) { return PyModule_Create(&module); }
