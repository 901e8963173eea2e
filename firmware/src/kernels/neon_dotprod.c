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

/* y[0..4) = dot(W rows r..r+3, x): one activation block load feeds four rows. Each row keeps its own
 * sequential float sum, so every result equals the single-row dot. */
#define ELK_DOT4(block_fn, wtype)                                                                   \
    static void dot4_##wtype(int nb, const uint8_t *w, size_t row_bytes, const elk_block_q8_0 *b,   \
                             float *y)                                                              \
    {                                                                                               \
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};                                                      \
        for (int i = 0; i < nb; i++) {                                                              \
            const int8x16_t x0 = vld1q_s8(b[i].qs), x1 = vld1q_s8(b[i].qs + 16);                    \
            const float dx = elk_neon_h2f(b[i].d);                                                  \
            for (int k = 0; k < 4; k++) {                                                           \
                const elk_block_##wtype *a = (const elk_block_##wtype *)(w + k * row_bytes) + i;    \
                s[k] += (float)block_fn(a, x0, x1) * (elk_neon_h2f(a->d) * dx);                     \
            }                                                                                       \
        }                                                                                           \
        for (int k = 0; k < 4; k++)                                                                 \
            y[k] = s[k];                                                                            \
    }
ELK_DOT4(block_q8_0, q8_0)
ELK_DOT4(block_q4_0, q4_0)

/* Y[t * rows + r] for r in [r0, r1), t in [0, n_tok): see kernels.h. */
#define ELK_GEMM(wtype)                                                                             \
    static void gemm_##wtype##_neon_dotprod(int n, const void *w, size_t row_bytes, int r0, int r1, \
                                            const void *x, size_t x_stride, int n_tok, float *y,    \
                                            int rows)                                               \
    {                                                                                               \
        const uint8_t *wb = w;                                                                      \
        float tmp[4];                                                                               \
        for (int t = 0; t < n_tok; t++) {                                                           \
            const void *xt = (const uint8_t *)x + (size_t)t * x_stride;                             \
            float *yt = y + (size_t)t * rows;                                                       \
            int r = r0;                                                                             \
            for (; r + 4 <= r1; r += 4) {                                                           \
                dot4_##wtype(n / ELK_QK, wb + (size_t)r * row_bytes, row_bytes, xt, tmp);           \
                for (int k = 0; k < 4; k++)                                                         \
                    yt[r + k] = tmp[k];                                                             \
            }                                                                                       \
            for (; r < r1; r++)                                                                     \
                yt[r] = dot_##wtype##_neon_dotprod(n, wb + (size_t)r * row_bytes, xt);              \
        }                                                                                           \
    }
ELK_GEMM(q8_0)
ELK_GEMM(q4_0)

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
};
