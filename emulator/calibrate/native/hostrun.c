/* Running guest machine code natively, for validating the cycle model (aeth-emu validate).
 *
 * The code never runs in the calling process. hr_run_all forks a child that maps the given
 * regions at their link addresses, copies the image's segments and the cases' code into them,
 * drops everything that reaches the host (every file descriptor but the result pipe, with 0, 1
 * and 2 pointed at /dev/null; every writable shared mapping; signal handlers; core dumps), and
 * then locks itself into a seccomp filter that allows exactly what seccomp's strict mode
 * allows: read, write, exit and rt_sigreturn; any other system call kills it. Strict mode itself
 * cannot be used: the kernel disables the time-stamp counter for strict-mode tasks (rdtsc then
 * faults), and the counter is the measurement. Only then does guest code run: each case is
 * called with the System V ABI, rdtsc around each call (fenced), the minimum over `reps` calls,
 * and the child writes that u64 to the pipe. The parent reads the pipe with a time limit,
 * kills the child past it, reaps it and says how it ended. */
#define _GNU_SOURCE
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

struct hr_region { uint64_t addr, size; };                  /* mapped read-write-execute, anonymous */
struct hr_copy { uint64_t addr; const void *data; uint64_t len; };  /* bytes written at addr */
struct hr_case {
    uint64_t fn, arg;      /* fn(arg) is called */
    uint32_t reps;         /* calls; the fewest ticks is the result */
    uint32_t first_copy;   /* this case's writes: copies[first_copy, first_copy + ncopies) */
    uint32_t ncopies;
    uint32_t pad;
};

enum hr_kind {
    HR_OK = 0,
    HR_SETUP = 1,     /* the child could not prepare (step, errno): no guest code ran */
    HR_SYSCALL = 2,   /* case `case_index` made a system call the filter forbids: killed */
    HR_SIGNAL = 3,    /* case `case_index` died of signal `signo` (a crash) */
    HR_TIMEOUT = 4,   /* the time limit passed during case `case_index`: killed */
    HR_EXITED = 5,    /* the child exited (status `err`) during case `case_index` */
    HR_PROTOCOL = 6,  /* the child wrote more than its results: killed */
    HR_HOST = 7,      /* pipe or fork failed in the parent (errno `err`) */
};

enum hr_step { HR_STEP_EARLY = 1, HR_STEP_MAP, HR_STEP_MAPS_FILE, HR_STEP_UNMAP, HR_STEP_NULL, HR_STEP_FDS,
               HR_STEP_SECCOMP };

struct hr_outcome {
    int32_t kind;
    int32_t case_index;  /* the case running when the child ended (HR_SETUP: the step) */
    int32_t signo;
    int32_t err;         /* errno (HR_SETUP, HR_HOST) or exit status (HR_EXITED) */
    uint64_t detail;     /* HR_SETUP: index of the region that could not be mapped */
};

typedef void (*case_fn)(uint64_t);

/* The fewest TSC ticks one call fn(arg) took over `reps` calls. */
static uint64_t time_case(uint64_t fn, uint64_t arg, uint32_t reps) {
    uint64_t best = ~0ull;
    for (uint32_t i = 0; i < reps; i++) {
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

/* ---- the child (no malloc, no stdio: it is a fork of a possibly threaded process) ---- */

static __attribute__((noreturn)) void child_exit(int status) {
    for (;;) syscall(SYS_exit, status);  /* exit, not exit_group: the filter allows only exit */
}

static void put_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) child_exit(3);
        p += n;
        len -= (size_t)n;
    }
}

/* Setup failed: tell the parent (step, errno, detail) and leave; no guest code ran. */
static __attribute__((noreturn)) void setup_failed(int fd, int step, int err, uint64_t detail) {
    uint64_t word[2] = {((uint64_t)(uint32_t)step << 32) | (uint32_t)err, detail};
    put_all(fd, word, sizeof word);
    child_exit(1);
}

static uint64_t parse_hex(const char **p) {
    uint64_t v = 0;
    for (;; (*p)++) {
        char c = **p;
        if (c >= '0' && c <= '9') v = v * 16 + (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v = v * 16 + (uint64_t)(c - 'a' + 10);
        else return v;
    }
}

/* Unmap every writable shared mapping the child inherited: a guest write there would reach a
 * file or the parent's memory. Ranges are collected first (unmapping while reading the maps file
 * could make it skip lines). 0, or the failing step. */
#define MAX_SHARED 256
static int drop_shared_writable(int *err) {
    static uint64_t starts[MAX_SHARED], ends[MAX_SHARED];
    static char buf[8192], line[160];
    int count = 0, fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) { *err = errno; return HR_STEP_MAPS_FILE; }
    size_t used = 0;  /* bytes of the current line kept (its start is all we read) */
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { *err = errno; close(fd); return HR_STEP_MAPS_FILE; }
        if (n == 0) break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (used < sizeof line - 1) line[used++] = buf[i];
                continue;
            }
            line[used] = 0;
            used = 0;
            /* "start-end perms ..." */
            const char *p = line;
            uint64_t start = parse_hex(&p);
            if (*p++ != '-') continue;
            uint64_t end = parse_hex(&p);
            if (*p++ != ' ' || strlen(p) < 4) continue;
            if (p[1] == 'w' && p[3] == 's') {
                if (count == MAX_SHARED) { *err = E2BIG; close(fd); return HR_STEP_UNMAP; }
                starts[count] = start;
                ends[count++] = end;
            }
        }
    }
    close(fd);
    for (int i = 0; i < count; i++)
        if (munmap((void *)starts[i], ends[i] - starts[i]) != 0) { *err = errno; return HR_STEP_UNMAP; }
    return 0;
}

/* Close every descriptor but 0, 1, 2 and `keep`. */
static int close_others(int keep) {
    if ((keep == 3 || syscall(SYS_close_range, 3, keep - 1, 0) == 0) && syscall(SYS_close_range, keep + 1, ~0U, 0) == 0)
        return 0;
    if (errno != ENOSYS && errno != EINVAL) return -1;
    struct rlimit lim;
    long top = getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY ? (long)lim.rlim_cur : 65536;
    for (long fd = 3; fd < top; fd++)
        if (fd != keep) close((int)fd);
    return 0;
}

/* The filter: strict mode's list (read, write, exit, rt_sigreturn) for the x86-64 ABI; any
 * other call, an x32 call or a 32-bit `int 0x80` call kills the process (SIGSYS). */
static int enter_seccomp(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_read, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_write, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigreturn, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program);
}

static __attribute__((noreturn)) void child(int out, pid_t parent, const struct hr_region *regions, uint32_t nregions,
                                            const struct hr_copy *setup, uint32_t nsetup, const struct hr_case *cases,
                                            uint32_t ncases, const struct hr_copy *copies, uint32_t limit_s) {
    int err = 0, step;
    /* Die with the parent; nothing of the parent's signal handling (Python's, faulthandler's). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) child_exit(1);
    for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    /* No core file of guest memory, and a CPU limit in case the parent cannot kill us. */
    struct rlimit none = {0, 0}, cpu = {limit_s + 5, limit_s + 6};
    setrlimit(RLIMIT_CORE, &none);
    setrlimit(RLIMIT_CPU, &cpu);
    prctl(PR_SET_DUMPABLE, 0);

    for (uint32_t i = 0; i < nregions; i++) {
        void *p = mmap((void *)regions[i].addr, regions[i].size, PROT_READ | PROT_WRITE | PROT_EXEC,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == MAP_FAILED) setup_failed(out, HR_STEP_MAP, errno, i);
        if (p != (void *)regions[i].addr) { munmap(p, regions[i].size); setup_failed(out, HR_STEP_MAP, EEXIST, i); }
    }
    if ((step = drop_shared_writable(&err)) != 0) setup_failed(out, step, err, 0);
    for (uint32_t i = 0; i < nsetup; i++) memcpy((void *)setup[i].addr, setup[i].data, setup[i].len);

    /* Descriptors: the pipe becomes 3, 0/1/2 become /dev/null, everything else closes. */
    int null = open("/dev/null", O_RDWR);
    if (null < 0) setup_failed(out, HR_STEP_NULL, errno, 0);
    int keep = fcntl(out, F_DUPFD, 3);
    if (keep < 0) setup_failed(out, HR_STEP_FDS, errno, 0);
    for (int fd = 0; fd < 3; fd++)
        if (fd != null && dup2(null, fd) != fd) setup_failed(keep, HR_STEP_FDS, errno, 0);
    if (close_others(keep) != 0) setup_failed(keep, HR_STEP_FDS, errno, 0);
    if (keep != 3) {  /* the pipe is always descriptor 3 */
        if (dup2(keep, 3) != 3) setup_failed(keep, HR_STEP_FDS, errno, 0);
        close(keep);
        keep = 3;
    }
    if (enter_seccomp() != 0) setup_failed(keep, HR_STEP_SECCOMP, errno, 0);

    uint64_t ready[2] = {0, 0};
    put_all(keep, ready, sizeof ready);
    for (uint32_t c = 0; c < ncases; c++) {
        for (uint32_t i = cases[c].first_copy; i < cases[c].first_copy + cases[c].ncopies; i++)
            memcpy((void *)copies[i].addr, copies[i].data, copies[i].len);
        uint64_t ticks = time_case(cases[c].fn, cases[c].arg, cases[c].reps);
        put_all(keep, &ticks, sizeof ticks);
    }
    child_exit(0);
}

/* ---- the parent ---- */

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Reap `pid` by `deadline` (ms), killing it past that; 1 if it had to be killed. */
static int reap(pid_t pid, int64_t deadline, int *status) {
    for (;;) {
        pid_t got = waitpid(pid, status, WNOHANG);
        if (got == pid) return 0;
        if (got < 0 && errno != EINTR) { *status = 0; return 0; }
        if (now_ms() >= deadline) break;
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR) {}
    return 1;
}

/* Run every case in a sandboxed child; `results` gets one u64 (the fewest TSC ticks) per case.
 * Returns 0 when all cases completed, else -1 with `out` saying how the child ended. */
int hr_run_all(const struct hr_region *regions, uint32_t nregions, const struct hr_copy *setup, uint32_t nsetup,
               const struct hr_case *cases, uint32_t ncases, const struct hr_copy *copies, uint64_t *results,
               uint32_t timeout_ms, struct hr_outcome *out) {
    memset(out, 0, sizeof *out);
    size_t expected = 16 + 8 * (size_t)ncases, got = 0;
    unsigned char *buf = malloc(expected + 1);
    int fds[2];
    if (buf == NULL) { out->kind = HR_HOST; out->err = ENOMEM; return -1; }
    if (pipe2(fds, O_CLOEXEC) != 0) { out->kind = HR_HOST; out->err = errno; free(buf); return -1; }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        out->kind = HR_HOST; out->err = errno;
        close(fds[0]); close(fds[1]); free(buf);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        child(fds[1], parent, regions, nregions, setup, nsetup, cases, ncases, copies, timeout_ms / 1000 + 1);
    }
    close(fds[1]);

    int64_t deadline = now_ms() + timeout_ms;
    int timed_out = 0, overflow = 0;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) { timed_out = 1; break; }
        struct pollfd p = {fds[0], POLLIN, 0};
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        ssize_t n = read(fds[0], buf + got, expected + 1 - got);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) break;  /* end of file: the child is gone */
        got += (size_t)n;
        if (got > expected) { overflow = 1; break; }
    }
    close(fds[0]);
    int status = 0;
    if (timed_out || overflow) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    } else if (reap(pid, deadline, &status)) {
        timed_out = 1;
    }

    uint64_t head[2] = {0, 0};
    if (got >= 16) memcpy(head, buf, 16);
    size_t done = got >= 16 ? (got - 16) / 8 : 0;
    if (done > ncases) done = ncases;
    if (done) memcpy(results, buf + 16, done * 8);
    free(buf);

    out->case_index = (int32_t)done;
    if (got >= 16 && head[0] != 0) {  /* the child's own setup report */
        out->kind = HR_SETUP;
        out->case_index = (int32_t)(head[0] >> 32);
        out->err = (int32_t)(uint32_t)head[0];
        out->detail = head[1];
        return -1;
    }
    if (overflow) { out->kind = HR_PROTOCOL; return -1; }
    if (timed_out) { out->kind = HR_TIMEOUT; return -1; }
    if (got < 16) {  /* died before it was ready: no guest code ran */
        out->kind = HR_SETUP;
        out->case_index = HR_STEP_EARLY;
        out->signo = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        return -1;
    }
    if (WIFSIGNALED(status)) {
        out->signo = WTERMSIG(status);
        out->kind = out->signo == SIGSYS ? HR_SYSCALL : HR_SIGNAL;
        return -1;
    }
    if (done < ncases || (got - 16) % 8 != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        out->kind = HR_EXITED;
        out->err = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return -1;
    }
    return 0;
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hostrun", "native runner (ctypes entry points)", -1, NULL};
PyMODINIT_FUNC PyInit__hostrun(void) { return PyModule_Create(&module); }
