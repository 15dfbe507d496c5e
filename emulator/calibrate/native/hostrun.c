/* Running guest machine code natively, for validating the cycle model (aeth-emu validate).
 *
 * The code is mapped at its link address in this host process and called with the System V
 * ABI; rdtsc around each call (fenced), the minimum over many calls. Only code that needs no
 * privilege runs here: the allocators and the validation cases, never port I/O. */
#define _GNU_SOURCE
#include <Python.h>
#include <stdint.h>
#include <sys/mman.h>
#include <x86intrin.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Map [addr, addr + size) read-write-execute; 0 on success, -1 if the range is taken. */
int hr_map(uint64_t addr, uint64_t size) {
    void *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE | PROT_EXEC,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED) return -1;
    if (p != (void *)addr) { munmap(p, size); return -1; }
    return 0;
}

int hr_unmap(uint64_t addr, uint64_t size) { return munmap((void *)addr, size); }

typedef void (*case_fn)(uint64_t);

/* The fewest TSC ticks one call fn(arg) took over `reps` calls. */
uint64_t hr_time(uint64_t fn, uint64_t arg, int reps) {
    uint64_t best = ~0ull;
    for (int i = 0; i < reps; i++) {
        _mm_lfence();
        uint64_t t0 = __rdtsc();
        _mm_lfence();
        ((case_fn)fn)(arg);
        _mm_lfence();
        uint64_t t1 = __rdtsc();
        if (t1 - t0 < best) best = t1 - t0;
    }
    return best;
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hostrun", "native runner (ctypes entry points)", -1, NULL};
PyMODINIT_FUNC PyInit__hostrun(void) { return PyModule_Create(&module); }
