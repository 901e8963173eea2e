/* POSIX thread pool (see threads.h) and a STREAM-style memory bandwidth probe that runs on it.
 * Workers spin briefly after each job (decode issues ~150 parallel_for calls per token a few
 * microseconds apart) and then sleep on a futex, so an idle model costs no CPU.
 * Not here: NUMA placement or CPU pinning (the host is a shared VM; pinning would fight the OS). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "threads.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

#define ELK_POOL_MAX 64
/* Wait rounds before a worker sleeps on the futex: 256 pauses then yields, roughly 0.1-2 ms in all;
 * longer than the gap between two matmuls of one token, much shorter than a user's think time. */
#define ELK_POOL_SPIN 2000

struct elk_pool {
    int n_threads;
    pthread_t workers[ELK_POOL_MAX];
    /* Job ticket: generation in the high 32 bits, next unclaimed index in the low 32. Claiming
     * with a CAS on the whole word means a worker that is late for one job can never take an
     * index of the next one. A new job is first published CLOSED (index TICKET_CLOSED), then its
     * fields are written, then it is opened at index 0: a late worker that read the old ticket
     * and the new n cannot claim anything, because its CAS expects the old generation. */
    _Atomic uint64_t ticket;
    _Atomic uint32_t gen;      /* futex word: bumped once per job */
    _Atomic int done;          /* indices finished in the current job */
    _Atomic int sleepers;      /* workers blocked in futex_wait */
    _Atomic int stop;
    _Atomic int n;             /* indices in the current job */
    elk_task_fn fn;            /* current job: read only after claiming an index of it */
    void *ctx;
};

#define TICKET_CLOSED 0x7fffffffu /* >= any n: nothing to claim */

/* Busy-wait step: pause for the first few hundred rounds (a job a few microseconds away), then
 * yield, so on a machine with more runnable threads than cores a waiting thread hands its time
 * slice to whoever holds the work instead of burning it (sched_yield is ~free when idle). */
static inline void relax(int spins)
{
    if (spins < 256)
        cpu_relax();
    else
        sched_yield();
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Claim and run indices of job `gen` until none are left (or the job is no longer current). */
static void run_job(elk_pool *p, uint32_t gen)
{
    for (;;) {
        uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
        if ((uint32_t)(t >> 32) != gen)
            return;
        /* n is job `gen`'s while the ticket is open for `gen` (seq_cst pairs with the CLOSED
         * store: seeing a newer n means the CAS below sees the newer ticket and fails). */
        int n = atomic_load(&p->n);
        int i = (int)(uint32_t)t;
        if (i >= n)
            return;
        if (!atomic_compare_exchange_weak_explicit(&p->ticket, &t, t + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        p->fn(p->ctx, i, n);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
}

static void *worker_main(void *arg)
{
    elk_pool *p = arg;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (++spins < ELK_POOL_SPIN) {
                relax(spins);
                continue;
            }
            /* Announce the sleep before re-checking gen; the publisher reads sleepers after
             * bumping gen (both seq_cst), so one of the two always sees the other. */
            atomic_fetch_add(&p->sleepers, 1);
            if (atomic_load(&p->gen) == seen)
                futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
            spins = 0;
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        run_job(p, g);
    }
}

int elk_pool_create(elk_pool **out, int n_threads)
{
    *out = NULL;
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > ELK_POOL_MAX)
        return ELK_E_RANGE;
    elk_pool *p = calloc(1, sizeof *p);
    if (!p)
        return ELK_E_NOMEM;
    p->n_threads = 1;
    for (int i = 0; i < n_threads - 1; i++) {
        if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
            elk_pool_destroy(p);
            return ELK_E_NOMEM;
        }
        p->n_threads++;
    }
    *out = p;
    return ELK_OK;
}

void elk_pool_destroy(elk_pool *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake_all(&p->gen);
    for (int i = 0; i < p->n_threads - 1; i++)
        pthread_join(p->workers[i], NULL);
    free(p);
}

void elk_pool_parallel_for(void *pool, elk_task_fn fn, void *ctx, int n)
{
    elk_pool *p = pool;
    if (n <= 0)
        return;
    if (!p || p->n_threads <= 1 || n == 1) {
        for (int i = 0; i < n; i++)
            fn(ctx, i, n);
        return;
    }
    uint32_t gen = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    atomic_store(&p->ticket, (uint64_t)gen << 32 | TICKET_CLOSED); /* late workers of the last job: out */
    atomic_store(&p->n, n);
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->ticket, (uint64_t)gen << 32, memory_order_release); /* open */
    atomic_store(&p->gen, gen); /* seq_cst: pairs with the sleepers check in worker_main */
    if (atomic_load(&p->sleepers) > 0)
        futex_wake_all(&p->gen);
    run_job(p, gen);
    for (int spins = 1; atomic_load_explicit(&p->done, memory_order_acquire) < n; spins++)
        relax(spins);
}

elk_exec elk_pool_exec(elk_pool *pool)
{
    elk_exec e = {0};
    if (pool && pool->n_threads > 1) {
        e.parallel_for = elk_pool_parallel_for;
        e.pool = pool;
        e.n_threads = pool->n_threads;
    } else {
        e.n_threads = 1;
    }
    return e;
}

int elk_pool_size(const elk_pool *pool)
{
    return pool ? pool->n_threads : 1;
}

/* =============================================================================================
 * Bandwidth probe: the rate at which all pool threads can read a buffer much larger than the
 * last-level cache. Decode streams every weight once per token, so read bandwidth (not copy or
 * triad) is the ceiling `elk bench` compares against. */

typedef struct {
    const uint64_t *buf;
    size_t words;
    int streams; /* 0: 64-bit loads, one stream; 1 or 2: 64-byte vector loads, that many streams */
    uint64_t sink[ELK_POOL_MAX * 16];
} probe_job;

/* The widest vector the build has (GCC/Clang vector extension), read a 64-byte line at a time, so the
 * probe's loads are as wide as the kernels' own. (A 64-byte vector type on a build without AVX-512
 * is lowered badly: the AVX2 build's probe read ~35 GB/s where a ymm loop reads ~41, which made
 * kernels there look faster than the machine.) */
#if defined(__AVX512F__)
#define PROBE_VEC 64
#elif defined(__AVX__)
#define PROBE_VEC 32
#else
#define PROBE_VEC 16
#endif
typedef uint64_t probe_vec __attribute__((vector_size(PROBE_VEC)));
#define PROBE_PER_LINE (64 / PROBE_VEC)

static void probe_task(void *ctx, int index, int count)
{
    probe_job *j = ctx;
    size_t lo = j->words * (size_t)index / (size_t)count, hi = j->words * (size_t)(index + 1) / (size_t)count;
    uint64_t sum = 0;
    if (j->streams == 0) {
        uint64_t a = 0, b = 0, c = 0, d = 0;
        for (size_t i = lo; i + 4 <= hi; i += 4) {
            a += j->buf[i];
            b ^= j->buf[i + 1];
            c += j->buf[i + 2];
            d ^= j->buf[i + 3];
        }
        sum = a + b + c + d;
    } else {
        /* the task's range in whole lines; with 2 streams its two halves are read side by side
         * (what the decode GEMV does: two rows half a range apart) */
        const probe_vec *v = (const probe_vec *)(const void *)j->buf;
        const size_t l_lo = (lo + 7) / 8, l_hi = hi / 8;
        const size_t len = l_hi > l_lo ? (l_hi - l_lo) / (size_t)j->streams : 0;
        probe_vec a[PROBE_PER_LINE] = {{0}}, b[PROBE_PER_LINE] = {{0}};
        for (size_t i = 0; i < len; i++) {
            const probe_vec *x = v + (l_lo + i) * PROBE_PER_LINE, *y = x + len * PROBE_PER_LINE;
            for (int k = 0; k < PROBE_PER_LINE; k++)
                a[k] ^= x[k];
            if (j->streams == 2)
                for (int k = 0; k < PROBE_PER_LINE; k++)
                    b[k] += y[k];
        }
        for (int k = 0; k < PROBE_PER_LINE; k++)
            for (int e = 0; e < PROBE_VEC / 8; e++)
                sum += a[k][e] + b[k][e];
    }
    j->sink[index] = sum; /* keeps the loads alive */
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best of `reps` full reads of a `bytes` buffer split over the pool's threads, in GB/s (1e9 B/s),
 * each rep trying three read loops (64-bit loads; 64-byte loads in one and in two streams per
 * task): the figure is the most this machine delivered, whichever loop got it (on this host the
 * two-stream vector loop reads ~8% more per core than the scalar one), so a kernel's percentage of
 * it is not flattered by a weak probe.
 * Returns a negative ELK_E_* code (as double) on allocation failure or bad arguments. */
double elk_pool_probe_bandwidth(elk_pool *pool, uint64_t bytes, int reps)
{
    if (bytes < (1u << 20) || reps < 1)
        return ELK_E_RANGE;
    probe_job *j = calloc(1, sizeof *j);
    uint64_t *buf = NULL;
    if (!j || posix_memalign((void **)&buf, 2u << 20, bytes) != 0) {
        free(j);
        return ELK_E_NOMEM;
    }
#ifdef MADV_HUGEPAGE
    /* 2 MiB pages where the kernel has them, as the image's weights get (host_api.c): the probe
     * must not lose to the kernel it rates on page walks */
    (void)madvise(buf, bytes, MADV_HUGEPAGE);
#endif
    memset(buf, 1, bytes); /* fault every page in before timing */
    j->buf = buf;
    j->words = bytes / sizeof(uint64_t);
    /* Many chunks claimed dynamically: on a shared machine a descheduled thread's share is
     * taken by the others instead of stretching the whole measurement. */
    int tasks = 16 * elk_pool_size(pool);
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        for (int streams = 0; streams <= 2; streams++) {
            j->streams = streams;
            double t0 = now_s();
            elk_pool_parallel_for(pool, probe_task, j, tasks);
            double dt = now_s() - t0;
            if (dt > 0 && (double)bytes / dt > best)
                best = (double)bytes / dt;
        }
    }
    free(buf);
    free(j);
    return best * 1e-9;
}
