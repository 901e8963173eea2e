/* POSIX thread pool behind elk_exec.parallel_for: created once per model, reused for every
 * forward call (no per-call allocation or thread creation). Not a general task system: one
 * parallel_for at a time, issued by the thread that created the pool. */
#ifndef ELK_POSIX_THREADS_H
#define ELK_POSIX_THREADS_H

#include "elk/elk.h"

typedef struct elk_pool elk_pool;

/* Start n_threads - 1 workers (the caller is the n-th). n_threads <= 1 gives a pool that runs
 * everything on the caller. Returns ELK_OK, ELK_E_NOMEM or ELK_E_RANGE (n_threads > 64). */
int elk_pool_create(elk_pool **out, int n_threads);

/* Stop and join the workers, free the pool. NULL is a no-op. */
void elk_pool_destroy(elk_pool *pool);

/* Run fn(ctx, i, n) for i in [0, n); the caller works too. Returns when all n are done.
 * Indices are claimed dynamically, so a worker descheduled by a busy machine delays only its own
 * chunk. Matches elk_exec.parallel_for. */
void elk_pool_parallel_for(void *pool, elk_task_fn fn, void *ctx, int n);

/* An elk_exec for elk_model_opts that dispatches to this pool (serial when pool is NULL). */
elk_exec elk_pool_exec(elk_pool *pool);

/* Threads in the pool including the caller (1 for NULL). */
int elk_pool_size(const elk_pool *pool);

/* Best-of-reps read bandwidth in GB/s over a `bytes` buffer (>= 1 MiB, pick >> last-level cache)
 * using every pool thread; a negative ELK_E_* code on failure. `elk bench` divides decode bytes/s
 * by this. */
double elk_pool_probe_bandwidth(elk_pool *pool, uint64_t bytes, int reps);

#endif /* ELK_POSIX_THREADS_H */
