/* NEON + i8mm kernel table ("neon_i8mm", ARMv8.6-A SMMLA: Cortex-A510/A710, Neoverse V1/N2 and later).
 * gemm (batched prefill) works in tiles of 2 weight rows x 2 tokens: vmmlaq_s32 multiplies a 2x8 by an
 * 8x2 int8 matrix into 2x2 int32, four per 32-element block. Block sums are exact and each of the four
 * float sums is accumulated in ref's order, so results equal ref bit for bit. dot (decode, one token)
 * uses SDOT as neon_dotprod.c does. */
#include "neon_common.h"

/* [a.lo64 | b.lo64] and [a.hi64 | b.hi64]: two rows of 8 int8 stacked into one SMMLA operand. */
static inline int8x16_t zip_lo(int8x16_t a, int8x16_t b)
{
    return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

static inline int8x16_t zip_hi(int8x16_t a, int8x16_t b)
{
    return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

/* 2x2 block sums of (w0, w1) x (x0, x1) over 32 elements given as two 16-lane halves each.
 * Result lanes: (w0.x0, w0.x1, w1.x0, w1.x1). */
static inline int32x4_t mmla_block(int8x16_t w0a, int8x16_t w0b, int8x16_t w1a, int8x16_t w1b,
                                   int8x16_t x0a, int8x16_t x0b, int8x16_t x1a, int8x16_t x1b)
{
    int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), zip_lo(w0a, w1a), zip_lo(x0a, x1a));
    s = vmmlaq_s32(s, zip_hi(w0a, w1a), zip_hi(x0a, x1a));
    s = vmmlaq_s32(s, zip_lo(w0b, w1b), zip_lo(x0b, x1b));
    return vmmlaq_s32(s, zip_hi(w0b, w1b), zip_hi(x0b, x1b));
}

/* acc += float(s) * (dw_r * dx_t) per lane, the products formed exactly as ref forms them. */
static inline float32x4_t scale_add(float32x4_t acc, int32x4_t s, elk_fp16 dw0, elk_fp16 dw1,
                                    elk_fp16 dx0, elk_fp16 dx1)
{
    const float w0 = elk_neon_h2f(dw0), w1 = elk_neon_h2f(dw1);
    const float x0 = elk_neon_h2f(dx0), x1 = elk_neon_h2f(dx1);
    const float wv[4] = {w0, w0, w1, w1}, xv[4] = {x0, x1, x0, x1};
    const float32x4_t d = vmulq_f32(vld1q_f32(wv), vld1q_f32(xv));
    return vaddq_f32(acc, vmulq_f32(vcvtq_f32_s32(s), d));
}

static float32x4_t tile_q8_0(int nb, const elk_block_q8_0 *w0, const elk_block_q8_0 *w1,
                             const elk_block_q8_0 *x0, const elk_block_q8_0 *x1)
{
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int i = 0; i < nb; i++) {
        int32x4_t s = mmla_block(vld1q_s8(w0[i].qs), vld1q_s8(w0[i].qs + 16),
                                 vld1q_s8(w1[i].qs), vld1q_s8(w1[i].qs + 16),
                                 vld1q_s8(x0[i].qs), vld1q_s8(x0[i].qs + 16),
                                 vld1q_s8(x1[i].qs), vld1q_s8(x1[i].qs + 16));
        acc = scale_add(acc, s, w0[i].d, w1[i].d, x0[i].d, x1[i].d);
    }
    return acc;
}

static float32x4_t tile_q4_0(int nb, const elk_block_q4_0 *w0, const elk_block_q4_0 *w1,
                             const elk_block_q8_0 *x0, const elk_block_q8_0 *x1)
{
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int i = 0; i < nb; i++) {
        int8x16_t w0lo, w0hi, w1lo, w1hi;
        elk_neon_unpack_q4_0(w0[i].qs, &w0lo, &w0hi);
        elk_neon_unpack_q4_0(w1[i].qs, &w1lo, &w1hi);
        int32x4_t s = mmla_block(w0lo, w0hi, w1lo, w1hi,
                                 vld1q_s8(x0[i].qs), vld1q_s8(x0[i].qs + 16),
                                 vld1q_s8(x1[i].qs), vld1q_s8(x1[i].qs + 16));
        acc = scale_add(acc, s, w0[i].d, w1[i].d, x0[i].d, x1[i].d);
    }
    return acc;
}

static void quantize_q8_0_neon_i8mm(const float *x, elk_block_q8_0 *y, int n)
{
    elk_neon_quantize_q8_0(x, y, n);
}

static float dot_f32_neon_i8mm(int n, const void *w, const void *x)
{
    return elk_neon_dot_f32(n, w, x);
}

static float dot_f16_neon_i8mm(int n, const void *w, const void *x)
{
    return elk_neon_dot_f16(n, w, x);
}

static float dot_bf16_neon_i8mm(int n, const void *w, const void *x)
{
    return elk_neon_dot_bf16(n, w, x);
}

static float dot_q8_0_neon_i8mm(int n, const void *w, const void *x)
{
    const elk_block_q8_0 *a = w, *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n / ELK_QK; i++) {
        int32x4_t acc = vdotq_s32(vdupq_n_s32(0), vld1q_s8(a[i].qs), vld1q_s8(b[i].qs));
        acc = vdotq_s32(acc, vld1q_s8(a[i].qs + 16), vld1q_s8(b[i].qs + 16));
        sum += (float)elk_neon_hsum_s32(acc) * elk_neon_scale(a[i].d, b[i].d);
    }
    return sum;
}

static float dot_q4_0_neon_i8mm(int n, const void *w, const void *x)
{
    const elk_block_q4_0 *a = w;
    const elk_block_q8_0 *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n / ELK_QK; i++) {
        int8x16_t lo, hi;
        elk_neon_unpack_q4_0(a[i].qs, &lo, &hi);
        int32x4_t acc = vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(b[i].qs));
        acc = vdotq_s32(acc, hi, vld1q_s8(b[i].qs + 16));
        sum += (float)elk_neon_hsum_s32(acc) * elk_neon_scale(a[i].d, b[i].d);
    }
    return sum;
}

/* Store a 2x2 tile: lanes (r.t, r.t+1, r+1.t, r+1.t+1) into Y[t * rows + r]. */
static inline void store_tile(float *y, int rows, int r, int t, float32x4_t v)
{
    y[(size_t)t * rows + r] = vgetq_lane_f32(v, 0);
    y[(size_t)(t + 1) * rows + r] = vgetq_lane_f32(v, 1);
    y[(size_t)t * rows + r + 1] = vgetq_lane_f32(v, 2);
    y[(size_t)(t + 1) * rows + r + 1] = vgetq_lane_f32(v, 3);
}

/* One 2x2 tile of `wtype` weights; `wtype` is a constant at every call (the branch folds away). */
static inline float32x4_t tile(int wtype, int nb, const uint8_t *w0, const uint8_t *w1,
                               const elk_block_q8_0 *x0, const elk_block_q8_0 *x1)
{
    if (wtype == ELK_TYPE_Q4_0)
        return tile_q4_0(nb, (const elk_block_q4_0 *)w0, (const elk_block_q4_0 *)w1, x0, x1);
    return tile_q8_0(nb, (const elk_block_q8_0 *)w0, (const elk_block_q8_0 *)w1, x0, x1);
}

/* Y[t * rows + r] for r in [r0, r1), t in [0, n_tok) (kernels.h): 2x2 tiles, then the odd row and
 * the odd token with the SDOT dot. */
static inline void gemm_tiles(int wtype, int n, const uint8_t *w, size_t row_bytes, int r0, int r1,
                              const uint8_t *x, size_t x_stride, int n_tok, float *y, int rows)
{
    float (*dot)(int, const void *, const void *) =
        wtype == ELK_TYPE_Q4_0 ? dot_q4_0_neon_i8mm : dot_q8_0_neon_i8mm;
    int t = 0;
    for (; t + 2 <= n_tok; t += 2) {
        const elk_block_q8_0 *x0 = (const elk_block_q8_0 *)(x + (size_t)t * x_stride);
        const elk_block_q8_0 *x1 = (const elk_block_q8_0 *)(x + (size_t)(t + 1) * x_stride);
        int r = r0;
        for (; r + 2 <= r1; r += 2) {
            const uint8_t *w0 = w + (size_t)r * row_bytes;
            store_tile(y, rows, r, t, tile(wtype, n / ELK_QK, w0, w0 + row_bytes, x0, x1));
        }
        if (r < r1) {
            y[(size_t)t * rows + r] = dot(n, w + (size_t)r * row_bytes, x0);
            y[(size_t)(t + 1) * rows + r] = dot(n, w + (size_t)r * row_bytes, x1);
        }
    }
    for (; t < n_tok; t++)
        for (int r = r0; r < r1; r++)
            y[(size_t)t * rows + r] = dot(n, w + (size_t)r * row_bytes, x + (size_t)t * x_stride);
}

static void gemm_q8_0_neon_i8mm(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                                size_t x_stride, int n_tok, float *y, int rows)
{
    gemm_tiles(ELK_TYPE_Q8_0, n, w, row_bytes, r0, r1, x, x_stride, n_tok, y, rows);
}

static void gemm_q4_0_neon_i8mm(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                                size_t x_stride, int n_tok, float *y, int rows)
{
    gemm_tiles(ELK_TYPE_Q4_0, n, w, row_bytes, r0, r1, x, x_stride, n_tok, y, rows);
}

const elk_kernels elk_kernels_neon_i8mm = {
    .name = "neon_i8mm",
    .requires = ELK_CPU_NEON | ELK_CPU_DOTPROD | ELK_CPU_I8MM,
    .quantize_q8_0 = quantize_q8_0_neon_i8mm,
    .dot = {
        [ELK_TYPE_F32] = dot_f32_neon_i8mm,
        [ELK_TYPE_F16] = dot_f16_neon_i8mm,
        [ELK_TYPE_BF16] = dot_bf16_neon_i8mm,
        [ELK_TYPE_Q8_0] = dot_q8_0_neon_i8mm,
        [ELK_TYPE_Q4_0] = dot_q4_0_neon_i8mm,
    },
    .gemm = {
        [ELK_TYPE_Q8_0] = gemm_q8_0_neon_i8mm,
        [ELK_TYPE_Q4_0] = gemm_q4_0_neon_i8mm,
    },
};
