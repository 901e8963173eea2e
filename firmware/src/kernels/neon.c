/* Plain NEON kernel table ("neon"): ARMv7-A with -mfpu=neon-vfpv4 and ARMv8.0-A AArch64, no dot-product
 * instructions. Q8_0/Q4_0 block sums use VMULL.S8 + VPADAL.S16 (exact int32 sums, same as ref); float
 * accumulation of block sums follows ref's order, so quantized dots equal ref bit for bit.
 * Not here: dotprod/i8mm paths (neon_dotprod.c, neon_i8mm.c). */
#include "neon_common.h"

/* acc += pairwise sums of a[i] * b[i] over 16 int8 lanes. |a*b| <= 128*128 fits int16; VPADAL widens
 * each adjacent pair into int32, so nothing saturates. */
static inline int32x4_t dot_s8x16(int32x4_t acc, int8x16_t a, int8x16_t b)
{
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_s8(vget_high_s8(a), vget_high_s8(b)));
}

static void quantize_q8_0_neon(const float *x, elk_block_q8_0 *y, int n)
{
    elk_neon_quantize_q8_0(x, y, n);
}

static float dot_f32_neon(int n, const void *w, const void *x)
{
    return elk_neon_dot_f32(n, w, x);
}

static float dot_f16_neon(int n, const void *w, const void *x)
{
    return elk_neon_dot_f16(n, w, x);
}

static float dot_bf16_neon(int n, const void *w, const void *x)
{
    return elk_neon_dot_bf16(n, w, x);
}

static float dot_q8_0_neon(int n, const void *w, const void *x)
{
    const elk_block_q8_0 *a = w, *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n / ELK_QK; i++) {
        int32x4_t acc = vdupq_n_s32(0);
        acc = dot_s8x16(acc, vld1q_s8(a[i].qs), vld1q_s8(b[i].qs));
        acc = dot_s8x16(acc, vld1q_s8(a[i].qs + 16), vld1q_s8(b[i].qs + 16));
        sum += (float)elk_neon_hsum_s32(acc) * elk_neon_scale(a[i].d, b[i].d);
    }
    return sum;
}

static float dot_q4_0_neon(int n, const void *w, const void *x)
{
    const elk_block_q4_0 *a = w;
    const elk_block_q8_0 *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n / ELK_QK; i++) {
        int8x16_t lo, hi;
        elk_neon_unpack_q4_0(a[i].qs, &lo, &hi);
        int32x4_t acc = vdupq_n_s32(0);
        acc = dot_s8x16(acc, lo, vld1q_s8(b[i].qs));
        acc = dot_s8x16(acc, hi, vld1q_s8(b[i].qs + 16));
        sum += (float)elk_neon_hsum_s32(acc) * elk_neon_scale(a[i].d, b[i].d);
    }
    return sum;
}

const elk_kernels elk_kernels_neon = {
    .name = "neon",
    .requires = ELK_CPU_NEON,
    .quantize_q8_0 = quantize_q8_0_neon,
    .dot = {
        [ELK_TYPE_F32] = dot_f32_neon,
        [ELK_TYPE_F16] = dot_f16_neon,
        [ELK_TYPE_BF16] = dot_bf16_neon,
        [ELK_TYPE_Q8_0] = dot_q8_0_neon,
        [ELK_TYPE_Q4_0] = dot_q4_0_neon,
    },
    .attend = ELK_NEON_ATTEND,
    .swiglu = ELK_NEON_SWIGLU,
};
