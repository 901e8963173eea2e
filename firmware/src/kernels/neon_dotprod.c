/* NEON + dot-product kernel table ("neon_dotprod", ARMv8.2-A SDOT: Cortex-A55/A76 and later).
 * Q8_0/Q4_0 block sums use vdotq_s32 (exact int32, same as ref) and the float accumulation keeps ref's
 * order, so dot and gemm equal ref bit for bit. gemm is matrix-vector: 4 weight rows share each
 * activation load. Not here: batched i8mm tiles (neon_i8mm.c). */
#include "neon_common.h"

/* Integer sum of one Q8_0 x Q8_0 block pair. */
static inline int32_t block_q8_0(const elk_block_q8_0 *a, int8x16_t x0, int8x16_t x1)
{
    int32x4_t acc = vdotq_s32(vdupq_n_s32(0), vld1q_s8(a->qs), x0);
    return elk_neon_hsum_s32(vdotq_s32(acc, vld1q_s8(a->qs + 16), x1));
}

/* Integer sum of one Q4_0 x Q8_0 block pair. */
static inline int32_t block_q4_0(const elk_block_q4_0 *a, int8x16_t x0, int8x16_t x1)
{
    int8x16_t lo, hi;
    elk_neon_unpack_q4_0(a->qs, &lo, &hi);
    return elk_neon_hsum_s32(vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, x0), hi, x1));
}

static void quantize_q8_0_neon_dotprod(const float *x, elk_block_q8_0 *y, int n)
{
    elk_neon_quantize_q8_0(x, y, n);
}

static float dot_f32_neon_dotprod(int n, const void *w, const void *x)
{
    return elk_neon_dot_f32(n, w, x);
}

static float dot_f16_neon_dotprod(int n, const void *w, const void *x)
{
    return elk_neon_dot_f16(n, w, x);
}

static float dot_bf16_neon_dotprod(int n, const void *w, const void *x)
{
    return elk_neon_dot_bf16(n, w, x);
}

static float dot_q8_0_neon_dotprod(int n, const void *w, const void *x)
{
    const elk_block_q8_0 *a = w, *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n / ELK_QK; i++) {
        int32_t s = block_q8_0(&a[i], vld1q_s8(b[i].qs), vld1q_s8(b[i].qs + 16));
        sum += (float)s * elk_neon_scale(a[i].d, b[i].d);
    }
    return sum;
}

static float dot_q4_0_neon_dotprod(int n, const void *w, const void *x)
{
    const elk_block_q4_0 *a = w;
    const elk_block_q8_0 *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n / ELK_QK; i++) {
        int32_t s = block_q4_0(&a[i], vld1q_s8(b[i].qs), vld1q_s8(b[i].qs + 16));
        sum += (float)s * elk_neon_scale(a[i].d, b[i].d);
    }
    return sum;
}

/* Bytes of one weight block and its int32 sum against an activation block (x0, x1 = its halves).
 * `wtype` is a constant at every call, so the branch folds away after inlining. */
static inline size_t block_bytes(int wtype)
{
    return wtype == ELK_TYPE_Q4_0 ? sizeof(elk_block_q4_0) : sizeof(elk_block_q8_0);
}

static inline int32_t block_sum(int wtype, const uint8_t *wblock, int8x16_t x0, int8x16_t x1)
{
    return wtype == ELK_TYPE_Q4_0 ? block_q4_0((const elk_block_q4_0 *)wblock, x0, x1)
                                  : block_q8_0((const elk_block_q8_0 *)wblock, x0, x1);
}

/* The block's fp16 scale sits first in both block types. */
static inline float block_scale(const uint8_t *wblock)
{
    return elk_neon_h2f(((const elk_block_q8_0 *)wblock)->d);
}

/* y[0..4) = dot(W rows w, w + row_bytes, ...; x): one activation block load feeds four rows. Each row
 * keeps its own sequential float sum, so every result equals the single-row dot. */
static inline void dot4(int wtype, int nb, const uint8_t *w, size_t row_bytes, const elk_block_q8_0 *x,
                        float *y)
{
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const size_t bb = block_bytes(wtype);
    for (int i = 0; i < nb; i++) {
        const int8x16_t x0 = vld1q_s8(x[i].qs), x1 = vld1q_s8(x[i].qs + 16);
        const float dx = elk_neon_h2f(x[i].d);
        for (int k = 0; k < 4; k++) {
            const uint8_t *a = w + k * row_bytes + i * bb;
            s[k] += (float)block_sum(wtype, a, x0, x1) * (block_scale(a) * dx);
        }
    }
    for (int k = 0; k < 4; k++)
        y[k] = s[k];
}

/* Y[t * rows + r] for r in [r0, r1), t in [0, n_tok) (kernels.h): rows in fours, then one by one.
 * Row tile outer, tokens inner: in a batched prefill the 4 rows (~4.5 KB of Q4_0 at 2048 columns)
 * stay in L1 while the tokens' activations (L2) go past, so each weight byte comes from DRAM once per
 * batch, not once per token as with tokens outer. Every (row, token) is the same dot either way. */
static inline void gemm_rows(int wtype, int n, const uint8_t *w, size_t row_bytes, int r0, int r1,
                             const uint8_t *x, size_t x_stride, int n_tok, float *y, int rows)
{
    float (*dot)(int, const void *, const void *) =
        wtype == ELK_TYPE_Q4_0 ? dot_q4_0_neon_dotprod : dot_q8_0_neon_dotprod;
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        for (int t = 0; t < n_tok; t++)
            dot4(wtype, n / ELK_QK, w + (size_t)r * row_bytes, row_bytes,
                 (const elk_block_q8_0 *)(x + (size_t)t * x_stride), y + (size_t)t * rows + r);
    for (; r < r1; r++)
        for (int t = 0; t < n_tok; t++)
            y[(size_t)t * rows + r] = dot(n, w + (size_t)r * row_bytes, x + (size_t)t * x_stride);
}

static void gemm_q8_0_neon_dotprod(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                                   size_t x_stride, int n_tok, float *y, int rows)
{
    gemm_rows(ELK_TYPE_Q8_0, n, w, row_bytes, r0, r1, x, x_stride, n_tok, y, rows);
}

static void gemm_q4_0_neon_dotprod(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                                   size_t x_stride, int n_tok, float *y, int rows)
{
    gemm_rows(ELK_TYPE_Q4_0, n, w, row_bytes, r0, r1, x, x_stride, n_tok, y, rows);
}

const elk_kernels elk_kernels_neon_dotprod = {
    .name = "neon_dotprod",
    .requires = ELK_CPU_NEON | ELK_CPU_DOTPROD,
    .quantize_q8_0 = quantize_q8_0_neon_dotprod,
    .dot = {
        [ELK_TYPE_F32] = dot_f32_neon_dotprod,
        [ELK_TYPE_F16] = dot_f16_neon_dotprod,
        [ELK_TYPE_BF16] = dot_bf16_neon_dotprod,
        [ELK_TYPE_Q8_0] = dot_q8_0_neon_dotprod,
        [ELK_TYPE_Q4_0] = dot_q4_0_neon_dotprod,
    },
    .gemm = {
        [ELK_TYPE_Q8_0] = gemm_q8_0_neon_dotprod,
        [ELK_TYPE_Q4_0] = gemm_q4_0_neon_dotprod,
    },
    .attend = ELK_NEON_ATTEND,
    .swiglu = ELK_NEON_SWIGLU,
};
