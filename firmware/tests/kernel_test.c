/* Kernel test driver: runs every kernel table compiled into this build (and supported by this CPU)
 * against the reference table on seeded random inputs, and reports the run-time selection.
 * Quantize must give ref's bytes and the int32 block sums of Q8_0/Q4_0 dots must equal ref's (checked
 * with unit scales, where the dot is the exact sum of the block sums); every float result must be within
 * 1e-5 of sum |w x|. maxdiff is printed, so a caller can demand more (the NEON tables equal ref exactly). A host/qemu program (stdio allowed); not part of the firmware.
 *   elk-kernel-test [--seed N] [--expect TABLE]     exit 0 = all checks passed */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define MAX_N 320          /* largest row length tested (10 blocks) */
#define GEMM_ROWS 14       /* gemm covers rows [1, 14): 13 rows = 6 row pairs (a group of 4 and one of 2) + 1 */
#define GEMM_TOKENS 5

static uint64_t rng_state;
static int n_checks, n_failures;

static uint32_t rng_u32(void)
{
    rng_state ^= rng_state << 13; /* xorshift64 */
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static float rng_float(float scale)
{
    return scale * ((float)(rng_u32() >> 8) / 8388608.0f - 1.0f); /* uniform in [-scale, scale) */
}

static void report(const char *table, const char *what, int n, double maxdiff, int ok)
{
    n_checks++;
    n_failures += !ok;
    printf("check %-13s %-16s n=%-4d maxdiff=%-12.6g %s\n", table, what, n, maxdiff, ok ? "ok" : "FAIL");
}

/* ---------------------------------------------------------------------------------------------
 * Input generators */

/* Random Q8_0 rows with q in [-127, 127] (what quantize_q8_0 and ggml's quantizers produce; -128 only
 * in the dedicated check below); unit_scale puts d = 1.0 so a dot is the plain sum of the int32 block
 * sums (exact in float while |sum| < 2^24), which checks the integer paths independently of scaling. */
static void fill_q8_0(elk_block_q8_0 *b, int nb, int unit_scale)
{
    for (int i = 0; i < nb; i++) {
        b[i].d = unit_scale ? 0x3C00 : elk_fp32_to_fp16(0.001f + fabsf(rng_float(0.05f)));
        for (int j = 0; j < ELK_QK; j++)
            b[i].qs[j] = (int8_t)((int)(rng_u32() % 255) - 127);
    }
}

static void fill_q4_0(elk_block_q4_0 *b, int nb, int unit_scale)
{
    for (int i = 0; i < nb; i++) {
        b[i].d = unit_scale ? 0x3C00 : elk_fp32_to_fp16(0.001f + fabsf(rng_float(0.05f)));
        for (int j = 0; j < ELK_QK / 2; j++)
            b[i].qs[j] = (uint8_t)rng_u32();
    }
}

/* Activations for quantize: random blocks of varied magnitude, an all-zero block, and blocks whose
 * scale is exactly 1 (amax 127) holding k + 0.5 values, so round-half-away ties are exercised. */
static void fill_quantize_input(float *x, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = rng_float(powf(10.0f, (float)((i / ELK_QK) % 5) - 2.0f));
    for (int j = 0; j < ELK_QK; j++)
        x[ELK_QK + j] = 0.0f;
    for (int b = 2; b < 4 && (b + 1) * ELK_QK <= n; b++) {
        float *xb = x + b * ELK_QK;
        xb[0] = b == 2 ? 127.0f : -127.0f;
        for (int j = 1; j < ELK_QK; j++)
            xb[j] = (float)((int)(rng_u32() % 253) - 126) + ((rng_u32() & 1) ? 0.5f : -0.5f);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Checks */

static void check_quantize(const elk_kernels *k, int n)
{
    float x[MAX_N];
    elk_block_q8_0 want[MAX_N / ELK_QK], got[MAX_N / ELK_QK];
    fill_quantize_input(x, n);
    elk_kernels_ref.quantize_q8_0(x, want, n);
    memset(got, 0x55, sizeof got);
    k->quantize_q8_0(x, got, n);
    int diff = 0;
    for (size_t i = 0; i < (size_t)(n / ELK_QK) * sizeof(elk_block_q8_0); i++)
        diff += ((uint8_t *)want)[i] != ((uint8_t *)got)[i];
    report(k->name, "quantize_q8_0", n, diff, diff == 0);
}

/* Float-weight dot: tolerance relative to sum |w x| (lane order and FMA change the rounding). */
static void check_dot_float(const elk_kernels *k, int type, const char *what, int n)
{
    float x[MAX_N] = {0}, wf[MAX_N] = {0};
    uint16_t wh[MAX_N] = {0};
    const void *w = wf;
    for (int i = 0; i < n; i++) {
        x[i] = rng_float(1.0f);
        wf[i] = rng_float(1.0f);
    }
    if (type == ELK_TYPE_F16) {
        for (int i = 0; i < n; i++)
            wh[i] = (i % 7 == 3) ? (uint16_t)(rng_u32() & 0x83ff) : elk_fp32_to_fp16(wf[i]); /* subnormals too */
        w = wh;
    } else if (type == ELK_TYPE_BF16) {
        for (int i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &wf[i], 4);
            wh[i] = (uint16_t)(bits >> 16);
        }
        w = wh;
    }
    float wdq[MAX_N];
    elk_dequantize_row(type, w, wdq, n);
    double mag = 0.0;
    for (int i = 0; i < n; i++)
        mag += fabs((double)wdq[i] * x[i]);
    double diff = fabs((double)k->dot[type](n, w, x) - elk_kernels_ref.dot[type](n, w, x));
    report(k->name, what, n, diff, diff <= 1e-5 * mag + 1e-30);
}

/* sum |w_i x_i| over a row of quantized weights and Q8_0 activations: the tolerance scale. */
static double magnitude(int type, const void *w, const elk_block_q8_0 *x, int n)
{
    float wd[MAX_N], xd[MAX_N];
    elk_dequantize_row(type, w, wd, n);
    elk_dequantize_row(ELK_TYPE_Q8_0, x, xd, n);
    double mag = 0.0;
    for (int i = 0; i < n; i++)
        mag += fabs((double)wd[i] * xd[i]);
    return mag;
}

/* Quantized dot. Unit scales: must equal ref exactly (the int32 block sums). Random scales: within
 * 1e-5 of sum |w x| (a table may order the float accumulation differently). */
static void check_dot_quant(const elk_kernels *k, int type, int unit_scale, int n)
{
    static elk_block_q8_0 xq[MAX_N / ELK_QK], wq8[MAX_N / ELK_QK];
    static elk_block_q4_0 wq4[MAX_N / ELK_QK];
    const int nb = n / ELK_QK;
    fill_q8_0(xq, nb, unit_scale);
    const void *w = wq8;
    if (type == ELK_TYPE_Q4_0) {
        fill_q4_0(wq4, nb, unit_scale);
        w = wq4;
    } else {
        fill_q8_0(wq8, nb, unit_scale);
    }
    float want = elk_kernels_ref.dot[type](n, w, xq), got = k->dot[type](n, w, xq);
    char what[32];
    snprintf(what, sizeof what, "dot_%s%s", type == ELK_TYPE_Q4_0 ? "q4_0" : "q8_0", unit_scale ? "_int" : "");
    double diff = fabs((double)want - got);
    int ok = unit_scale ? memcmp(&want, &got, sizeof want) == 0 : diff <= 1e-5 * magnitude(type, w, xq, n);
    report(k->name, what, n, diff, ok);
    if (unit_scale && type == ELK_TYPE_Q8_0) { /* -128 weights: valid Q8_0 that a GGUF file may hold */
        wq8[0].qs[0] = wq8[nb - 1].qs[ELK_QK - 1] = -128;
        xq[0].qs[0] = -127;
        want = elk_kernels_ref.dot[type](n, w, xq);
        got = k->dot[type](n, w, xq);
        report(k->name, "dot_q8_0_int_m128", n, fabs((double)want - got), memcmp(&want, &got, sizeof want) == 0);
    }
}

/* gemm over rows [1, GEMM_ROWS) of a GEMM_ROWS-row matrix and GEMM_TOKENS tokens: every output within
 * 1e-5 of sum |w x| of ref's dot, and row 0 (outside [r0, r1)) left untouched. */
static void check_gemm(const elk_kernels *k, int type, int n)
{
    static elk_block_q8_0 x[GEMM_TOKENS][MAX_N / ELK_QK];
    static elk_block_q8_0 w8[GEMM_ROWS][MAX_N / ELK_QK];
    static elk_block_q4_0 w4[GEMM_ROWS][MAX_N / ELK_QK];
    const int nb = n / ELK_QK;
    for (int t = 0; t < GEMM_TOKENS; t++)
        fill_q8_0(x[t], nb, 0);
    for (int r = 0; r < GEMM_ROWS; r++) {
        fill_q8_0(w8[r], nb, 0);
        fill_q4_0(w4[r], nb, 0);
    }
    const void *w = type == ELK_TYPE_Q4_0 ? (const void *)w4 : (const void *)w8;
    const size_t row_stride = type == ELK_TYPE_Q4_0 ? sizeof w4[0] : sizeof w8[0];
    float y[GEMM_TOKENS * GEMM_ROWS];
    for (int i = 0; i < GEMM_TOKENS * GEMM_ROWS; i++)
        y[i] = -12345.0f;
    k->gemm[type](n, w, row_stride, 1, GEMM_ROWS, x, sizeof x[0], GEMM_TOKENS, y, GEMM_ROWS);
    double maxdiff = 0.0;
    int ok = 1;
    for (int t = 0; t < GEMM_TOKENS; t++) {
        ok &= y[t * GEMM_ROWS] == -12345.0f;
        for (int r = 1; r < GEMM_ROWS; r++) {
            const void *wr = (const uint8_t *)w + r * row_stride;
            const double diff = fabs((double)elk_kernels_ref.dot[type](n, wr, x[t]) - y[t * GEMM_ROWS + r]);
            ok &= diff <= 1e-5 * magnitude(type, wr, x[t], n);
            maxdiff = fmax(maxdiff, diff);
        }
    }
    report(k->name, type == ELK_TYPE_Q4_0 ? "gemm_q4_0" : "gemm_q8_0", n, maxdiff, ok);
}

/* F32/F16 gemm over rows [1, GEMM_ROWS) with GEMM_TOKENS tokens and with one (the decode GEMV): every
 * output within 1e-5 of sum |w x| of ref's dot, row 0 untouched. The weights sit at the end of their
 * buffer, so a read past the last row's end is an ASan error. */
static void check_gemm_float(const elk_kernels *k, int type, int n)
{
    static float x[GEMM_TOKENS][MAX_N], wf[GEMM_ROWS * MAX_N];
    static uint16_t wh[GEMM_ROWS * MAX_N];
    const size_t esize = type == ELK_TYPE_F16 ? 2 : 4, row_bytes = (size_t)n * esize;
    for (int t = 0; t < GEMM_TOKENS; t++)
        for (int i = 0; i < n; i++)
            x[t][i] = rng_float(1.0f);
    /* rows packed at the buffer's end */
    float *w32 = wf + (GEMM_ROWS * MAX_N - GEMM_ROWS * n);
    uint16_t *w16 = wh + (GEMM_ROWS * MAX_N - GEMM_ROWS * n);
    for (int i = 0; i < GEMM_ROWS * n; i++) {
        w32[i] = rng_float(1.0f);
        w16[i] = elk_fp32_to_fp16(w32[i]);
    }
    const void *w = type == ELK_TYPE_F16 ? (const void *)w16 : (const void *)w32;
    for (int n_tok = 1; n_tok <= GEMM_TOKENS; n_tok += GEMM_TOKENS - 1) {
        float y[GEMM_TOKENS * GEMM_ROWS];
        for (int i = 0; i < GEMM_TOKENS * GEMM_ROWS; i++)
            y[i] = -12345.0f;
        k->gemm[type](n, w, row_bytes, 1, GEMM_ROWS, x, sizeof x[0], n_tok, y, GEMM_ROWS);
        double maxdiff = 0.0;
        int ok = 1;
        for (int t = 0; t < n_tok; t++) {
            ok &= y[t * GEMM_ROWS] == -12345.0f;
            for (int r = 1; r < GEMM_ROWS; r++) {
                const void *wr = (const uint8_t *)w + r * row_bytes;
                float wd[MAX_N];
                elk_dequantize_row(type, wr, wd, n);
                double mag = 0.0;
                for (int i = 0; i < n; i++)
                    mag += fabs((double)wd[i] * x[t][i]);
                const double diff = fabs((double)elk_kernels_ref.dot[type](n, wr, x[t]) - y[t * GEMM_ROWS + r]);
                ok &= diff <= 1e-5 * mag + 1e-30;
                maxdiff = fmax(maxdiff, diff);
            }
        }
        report(k->name, type == ELK_TYPE_F16 ? (n_tok == 1 ? "gemv_f16" : "gemm_f16") : (n_tok == 1 ? "gemv_f32" : "gemm_f32"),
               n, maxdiff, ok);
    }
}

static void check_table(const elk_kernels *k)
{
    static const int sizes[] = {32, 96, 100, 320}; /* 100: float tails; quantized use multiples of 32 */
    for (int s = 0; s < 4; s++) {
        const int n = sizes[s], nq = n - n % ELK_QK;
        if (k->quantize_q8_0 && nq)
            check_quantize(k, nq);
        if (k->dot[ELK_TYPE_F32])
            check_dot_float(k, ELK_TYPE_F32, "dot_f32", n);
        if (k->dot[ELK_TYPE_F16])
            check_dot_float(k, ELK_TYPE_F16, "dot_f16", n);
        if (k->dot[ELK_TYPE_BF16])
            check_dot_float(k, ELK_TYPE_BF16, "dot_bf16", n);
        for (int unit = 0; unit < 2 && nq; unit++) {
            if (k->dot[ELK_TYPE_Q8_0])
                check_dot_quant(k, ELK_TYPE_Q8_0, unit, nq);
            if (k->dot[ELK_TYPE_Q4_0])
                check_dot_quant(k, ELK_TYPE_Q4_0, unit, nq);
        }
        if (k->gemm[ELK_TYPE_F32])
            check_gemm_float(k, ELK_TYPE_F32, n);
        if (k->gemm[ELK_TYPE_F16])
            check_gemm_float(k, ELK_TYPE_F16, n);
        if (k->gemm[ELK_TYPE_Q8_0] && nq)
            check_gemm(k, ELK_TYPE_Q8_0, nq);
        if (k->gemm[ELK_TYPE_Q4_0] && nq)
            check_gemm(k, ELK_TYPE_Q4_0, nq);
    }
}

int main(int argc, char **argv)
{
    unsigned long long seed = 1;
    const char *expect = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
        } else if (strcmp(argv[i], "--expect") == 0 && i + 1 < argc) {
            expect = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--seed N] [--expect TABLE]\n", argv[0]);
            return 2;
        }
    }
    rng_state = seed ? seed : 1;
    const uint32_t features = elk_cpu_features();
    const elk_kernels *selected = elk_kernels_select(features, NULL);
    printf("features 0x%08x\nselected %s\ntables", (unsigned)features, selected ? selected->name : "(none)");
    for (int i = 0; elk_kernel_tables[i]; i++)
        printf(" %s", elk_kernel_tables[i]->name);
    printf("\n");
    for (int i = 0; elk_kernel_tables[i]; i++) {
        const elk_kernels *k = elk_kernel_tables[i];
        if (k == &elk_kernels_ref)
            continue;
        if ((k->requires & features) != k->requires) {
            printf("skip  %-13s (this CPU lacks features 0x%08x)\n", k->name, (unsigned)(k->requires & ~features));
            continue;
        }
        check_table(k);
    }
    if (expect) {
        int ok = selected && strcmp(selected->name, expect) == 0;
        report("select", expect, 0, 0.0, ok);
    }
    printf("kernel-test: %d checks, %d failures\n", n_checks, n_failures);
    return n_failures ? 1 : 0;
}
