/* NEON + i8mm kernel table ("neon_i8mm", ARMv8.6-A SMMLA: Cortex-A510/A710, Neoverse V1/N2 and later).
 * gemm (batched prefill) works in tiles of 2 weight rows x 2 tokens: vmmlaq_s32 multiplies a 2x8 by an
 * 8x2 int8 matrix into 2x2 int32, four per 32-element block; up to 4 row pairs share each interleaved
 * activation block. Block sums are exact and each of the four
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

#define ROW_PAIRS 4 /* weight row pairs that share one pass over a token pair's activation blocks */

/* The activation side of one block for a token pair (t, t+1): the four SMMLA operands and the scales
 * laid out as the result lanes want them, (dx_t, dx_t+1, dx_t, dx_t+1). Built once per block and
 * reused by ROW_PAIRS row pairs. */
typedef struct {
    int8x16_t b[4];
    float32x4_t d;
} x_pair_block;

static inline x_pair_block load_x_pair(const elk_block_q8_0 *x0, const elk_block_q8_0 *x1)
{
    const int8x16_t a0 = vld1q_s8(x0->qs), a1 = vld1q_s8(x0->qs + 16);
    const int8x16_t c0 = vld1q_s8(x1->qs), c1 = vld1q_s8(x1->qs + 16);
    const float32x2_t d = {elk_neon_h2f(x0->d), elk_neon_h2f(x1->d)};
    x_pair_block p = {{zip_lo(a0, c0), zip_hi(a0, c0), zip_lo(a1, c1), zip_hi(a1, c1)}, vcombine_f32(d, d)};
    return p;
}

static inline size_t block_bytes(int wtype)
{
    return wtype == ELK_TYPE_Q4_0 ? sizeof(elk_block_q4_0) : sizeof(elk_block_q8_0);
}

/* 2x2 int32 block sums of weight blocks (b0 of row r, b1 of row r+1) against the token pair.
 * Result lanes: (r.t, r.t+1, r+1.t, r+1.t+1). `wtype` is constant at every call. */
static inline int32x4_t pair_sum(int wtype, const uint8_t *b0, const uint8_t *b1, const x_pair_block *p)
{
    int8x16_t w0a, w0b, w1a, w1b;
    if (wtype == ELK_TYPE_Q4_0) {
        elk_neon_unpack_q4_0(((const elk_block_q4_0 *)b0)->qs, &w0a, &w0b);
        elk_neon_unpack_q4_0(((const elk_block_q4_0 *)b1)->qs, &w1a, &w1b);
    } else {
        const int8_t *q0 = ((const elk_block_q8_0 *)b0)->qs, *q1 = ((const elk_block_q8_0 *)b1)->qs;
        w0a = vld1q_s8(q0), w0b = vld1q_s8(q0 + 16), w1a = vld1q_s8(q1), w1b = vld1q_s8(q1 + 16);
    }
    int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), zip_lo(w0a, w1a), p->b[0]);
    s = vmmlaq_s32(s, zip_hi(w0a, w1a), p->b[1]);
    s = vmmlaq_s32(s, zip_lo(w0b, w1b), p->b[2]);
    return vmmlaq_s32(s, zip_hi(w0b, w1b), p->b[3]);
}

/* acc += float(s) * (dw_r * dx_t) per lane, each product formed as ref forms it (the fp16 scale is
 * the first field of both block types). */
static inline float32x4_t scale_add(float32x4_t acc, int32x4_t s, const uint8_t *b0, const uint8_t *b1,
                                    float32x4_t dx)
{
    const float32x4_t dw = vcombine_f32(vdup_n_f32(elk_neon_h2f(((const elk_block_q8_0 *)b0)->d)),
                                        vdup_n_f32(elk_neon_h2f(((const elk_block_q8_0 *)b1)->d)));
    return vaddq_f32(acc, vmulq_f32(vcvtq_f32_s32(s), vmulq_f32(dw, dx)));
}

/* acc[k] = 2x2 tile of rows (2k, 2k+1) of w against the token pair, for k < pairs <= ROW_PAIRS. */
static inline void tile_group(int wtype, int nb, const uint8_t *w, size_t row_bytes, int pairs,
                              const elk_block_q8_0 *x0, const elk_block_q8_0 *x1, float32x4_t *acc)
{
    const size_t bb = block_bytes(wtype);
    for (int k = 0; k < pairs; k++)
        acc[k] = vdupq_n_f32(0.0f);
    for (int i = 0; i < nb; i++) {
        const x_pair_block p = load_x_pair(&x0[i], &x1[i]);
        for (int k = 0; k < pairs; k++) {
            const uint8_t *b0 = w + (size_t)(2 * k) * row_bytes + (size_t)i * bb, *b1 = b0 + row_bytes;
            acc[k] = scale_add(acc[k], pair_sum(wtype, b0, b1, &p), b0, b1, p.d);
        }
    }
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

/* Y[t * rows + r] for r in [r0, r1), t in [0, n_tok) (kernels.h): groups of up to ROW_PAIRS row pairs
 * x token pairs in 2x2 tiles, then the odd row and the odd token with the SDOT dot. Row group outer,
 * tokens inner: the group's rows stay in L1 while the activations (L2) go past, so a batched prefill
 * reads each weight byte from DRAM once, not once per token pair. Every element is computed as before. */
static inline void gemm_tiles(int wtype, int n, const uint8_t *w, size_t row_bytes, int r0, int r1,
                              const uint8_t *x, size_t x_stride, int n_tok, float *y, int rows)
{
    float (*dot)(int, const void *, const void *) =
        wtype == ELK_TYPE_Q4_0 ? dot_q4_0_neon_i8mm : dot_q8_0_neon_i8mm;
    float32x4_t acc[ROW_PAIRS];
    const int t_even = n_tok - n_tok % 2;
    int r = r0;
    while (r + 2 <= r1) {
        const int pairs = (r1 - r) / 2 < ROW_PAIRS ? (r1 - r) / 2 : ROW_PAIRS;
        for (int t = 0; t < t_even; t += 2) {
            const elk_block_q8_0 *x0 = (const elk_block_q8_0 *)(x + (size_t)t * x_stride);
            const elk_block_q8_0 *x1 = (const elk_block_q8_0 *)(x + (size_t)(t + 1) * x_stride);
            tile_group(wtype, n / ELK_QK, w + (size_t)r * row_bytes, row_bytes, pairs, x0, x1, acc);
            for (int k = 0; k < pairs; k++)
                store_tile(y, rows, r + 2 * k, t, acc[k]);
        }
        r += 2 * pairs;
    }
    if (r < r1)
        for (int t = 0; t < t_even; t++)
            y[(size_t)t * rows + r] = dot(n, w + (size_t)r * row_bytes, x + (size_t)t * x_stride);
    for (int t = t_even; t < n_tok; t++)
        for (int rr = r0; rr < r1; rr++)
            y[(size_t)t * rows + rr] = dot(n, w + (size_t)rr * row_bytes, x + (size_t)t * x_stride);
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
    .attend = ELK_NEON_ATTEND,
    .swiglu = ELK_NEON_SWIGLU,
};
