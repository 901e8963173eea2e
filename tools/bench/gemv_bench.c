/* Decode-GEMV microbenchmark for the avx2 kernel table: one token against 5632 x 2048 Q4_0 or Q8_0
 * matrices (TinyLlama's FFN shape), one thread, random weights. Prints the largest relative
 * difference from ref's dot, the rate with the rows resident in L2 (the kernel's compute rate) and
 * the rate over ~600 MB of matrices (from DRAM). Best of many passes: a busy machine only slows it.
 * Build and run (docs/performance.md):
 *   K=firmware; gcc -O3 -march=native -ffp-contract=off -I$K/include -I$K/src -I$K/src/kernels \
 *       tools/bench/gemv_bench.c $K/src/kernels/{avx2,avx2_gemv,avx2_attn,ref,tables}.c -lm -o /tmp/gemv_bench
 *   /tmp/gemv_bench 4      # Q4_0;  /tmp/gemv_bench 8 for Q8_0
 * Not a test: numbers only (tests/test_kernels_avx2_numerics.py checks the results). */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kernels.h"

extern const elk_kernels elk_kernels_avx2;

#define COLS 2048
#define ROWS 5632
#define L2_ROWS 256   /* ~300 KB of Q4_0 rows: stays in L2 */
#define DRAM_BYTES ((size_t)600 << 20)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Random blocks with fp16 scales in [0.01, 0.02) (block size: 18 bytes Q4_0, 34 Q8_0). */
static void fill(uint8_t *w, size_t rows, size_t row_bytes, size_t block_bytes)
{
    for (size_t i = 0; i < rows * row_bytes; i++)
        w[i] = (uint8_t)rand();
    for (size_t r = 0; r < rows; r++)
        for (size_t b = 0; b < COLS / 32; b++) {
            const uint16_t d = _cvtss_sh(0.01f * (1.0f + (float)(rand() % 100) / 100.0f), 0);
            memcpy(w + r * row_bytes + b * block_bytes, &d, 2);
        }
}

static void gemv(int wtype, const uint8_t *w, size_t row_bytes, int rows, const elk_block_q8_0 *x, float *y)
{
    elk_kernels_avx2.gemm[wtype](COLS, w, row_bytes, 0, rows, x, row_bytes, 1, y, rows);
}

int main(int argc, char **argv)
{
    const int wtype = argc > 1 && argv[1][0] == '8' ? ELK_TYPE_Q8_0 : ELK_TYPE_Q4_0;
    const size_t row_bytes = elk_row_bytes(wtype, COLS);
    const int n_mat = (int)(DRAM_BYTES / (row_bytes * ROWS));
    const size_t w_bytes = (row_bytes * ROWS * (size_t)n_mat + 64 + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    uint8_t *w = aligned_alloc(2u << 20, w_bytes);
    if (w)
        madvise(w, w_bytes, MADV_HUGEPAGE); /* 2 MiB pages, as the runtime gets for an image (host_api.c) */
    float x[COLS], *y = malloc(ROWS * sizeof(float)), *want = malloc(ROWS * sizeof(float));
    elk_block_q8_0 xq[COLS / 32];
    if (!w || !y || !want)
        return 1;
    srand(1);
    fill(w, (size_t)ROWS * n_mat, row_bytes, wtype == ELK_TYPE_Q4_0 ? 18 : 34);
    for (int i = 0; i < COLS; i++)
        x[i] = (float)(rand() % 2000 - 1000) / 500.0f;
    elk_kernels_ref.quantize_q8_0(x, xq, COLS);

    gemv(wtype, w, row_bytes, ROWS, xq, y);
    double max_rel = 0.0;
    for (int r = 0; r < ROWS; r++) {
        want[r] = elk_kernels_ref.dot[wtype](COLS, w + (size_t)r * row_bytes, xq);
        const double rel = fabs((double)y[r] - want[r]) / (fabs((double)want[r]) + 1e-3);
        max_rel = rel > max_rel ? rel : max_rel;
    }
    printf("max rel err %.2e\n", max_rel);

    double best = 1e9;
    for (int rep = 0; rep < 200; rep++) {
        const double t0 = now_s();
        for (int k = 0; k < 20; k++)
            gemv(wtype, w, row_bytes, L2_ROWS, xq, y);
        best = fmin(best, now_s() - t0);
    }
    printf("L2  : %.1f GB/s  (%.2f ns/block)\n", 20.0 * L2_ROWS * row_bytes / best / 1e9,
           best / (20.0 * L2_ROWS * COLS / 32) * 1e9);

    best = 1e9;
    for (int rep = 0; rep < 30; rep++) {
        const double t0 = now_s();
        for (int k = 0; k < n_mat; k++)
            gemv(wtype, w + (size_t)k * row_bytes * ROWS, row_bytes, ROWS, xq, y);
        best = fmin(best, now_s() - t0);
    }
    printf("DRAM: %.1f GB/s\n", (double)n_mat * ROWS * row_bytes / best / 1e9);
    free(w);
    free(y);
    free(want);
    return 0;
}
