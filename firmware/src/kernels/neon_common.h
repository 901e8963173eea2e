/* Static inline NEON helpers shared by neon.c, neon_dotprod.c and neon_i8mm.c. Each of those files
 * compiles this header with its own -mcpu, so one source gives armv7 NEON, ARMv8.0, dotprod or i8mm
 * code. Not a public header; nothing here is exported. Numerics follow ref.c (see kernels.h). */
#ifndef ELK_NEON_COMMON_H
#define ELK_NEON_COMMON_H

#include <arm_neon.h>

#include "kernels.h"

/* ---------------------------------------------------------------------------------------------
 * Attention and SwiGLU (neon_attn.c, equal to ref bit for bit): AArch64 only, shared by all three
 * tables; ARMv7 tables leave the slots NULL (ref's), for the reasons given in neon_attn.c. */

#if defined(__aarch64__)
void elk_attend_neon(int hd, int nq, int n, const float *q, const float *k, const float *v, size_t stride,
                     float scale, float *scores, size_t score_stride, float *out);
void elk_swiglu_neon(float *g, const float *u, int n);
#define ELK_NEON_ATTEND elk_attend_neon
#define ELK_NEON_SWIGLU elk_swiglu_neon
#else
#define ELK_NEON_ATTEND NULL
#define ELK_NEON_SWIGLU NULL
#endif

/* ---------------------------------------------------------------------------------------------
 * Horizontal reductions (AArch64 has across-vector instructions; armv7 pairs up) */

static inline int32_t elk_neon_hsum_s32(int32x4_t v)
{
#if defined(__aarch64__)
    return vaddvq_s32(v);
#else
    int32x2_t s = vadd_s32(vget_low_s32(v), vget_high_s32(v));
    return vget_lane_s32(vpadd_s32(s, s), 0);
#endif
}

static inline float elk_neon_hsum_f32(float32x4_t v)
{
#if defined(__aarch64__)
    return vaddvq_f32(v);
#else
    float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
#endif
}

static inline float elk_neon_hmax_f32(float32x4_t v)
{
#if defined(__aarch64__)
    return vmaxvq_f32(v);
#else
    float32x2_t m = vmax_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpmax_f32(m, m), 0);
#endif
}

/* acc + a * b: fused where the ISA has it (AArch64, VFPv4), else multiply-accumulate. */
static inline float32x4_t elk_neon_fma(float32x4_t acc, float32x4_t a, float32x4_t b)
{
#if defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
    return vfmaq_f32(acc, a, b);
#else
    return vmlaq_f32(acc, a, b);
#endif
}

/* ---------------------------------------------------------------------------------------------
 * Q8_0 quantization, byte-identical to quantize_q8_0_ref */

/* round(v), ties away from zero (roundf's rule). AArch64 has it in one instruction (FCVTAS).
 * armv7 only truncates, so: t = trunc(v), f = v - t (exact: |v| <= ~127 < 2^23), and step t one
 * away from zero when |f| >= 0.5. */
static inline int32x4_t elk_neon_round_away(float32x4_t v)
{
#if defined(__aarch64__)
    return vcvtaq_s32_f32(v);
#else
    int32x4_t t = vcvtq_s32_f32(v);
    float32x4_t f = vsubq_f32(v, vcvtq_f32_s32(t));
    uint32x4_t up = vcageq_f32(f, vdupq_n_f32(0.5f));
    int32x4_t step = vbslq_s32(vcltq_f32(v, vdupq_n_f32(0.0f)), vdupq_n_s32(-1), vdupq_n_s32(1));
    return vaddq_s32(t, vandq_s32(vreinterpretq_s32_u32(up), step));
#endif
}

/* y[0..n/32) = Q8_0(x[0..n)). The scale is computed in scalar exactly as ref does (amax / 127,
 * 1 / d); the per-element x * id is one IEEE single multiply in both. On armv7 NEON flushes
 * subnormal floats to zero, so blocks made only of subnormals may differ there (never in practice). */
static inline void elk_neon_quantize_q8_0(const float *x, elk_block_q8_0 *y, int n)
{
    for (int i = 0; i < n / ELK_QK; i++) {
        const float *xb = x + i * ELK_QK;
        float32x4_t v[8];
        for (int j = 0; j < 8; j++)
            v[j] = vld1q_f32(xb + 4 * j);
        float32x4_t m = vabsq_f32(v[0]);
        for (int j = 1; j < 8; j++)
            m = vmaxq_f32(m, vabsq_f32(v[j]));
        const float amax = elk_neon_hmax_f32(m);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = elk_fp32_to_fp16(d);
        const float32x4_t vid = vdupq_n_f32(id);
        for (int j = 0; j < 8; j += 4) {
            int16x8_t lo = vcombine_s16(vmovn_s32(elk_neon_round_away(vmulq_f32(v[j], vid))),
                                        vmovn_s32(elk_neon_round_away(vmulq_f32(v[j + 1], vid))));
            int16x8_t hi = vcombine_s16(vmovn_s32(elk_neon_round_away(vmulq_f32(v[j + 2], vid))),
                                        vmovn_s32(elk_neon_round_away(vmulq_f32(v[j + 3], vid))));
            vst1q_s8(y[i].qs + 4 * j, vcombine_s8(vmovn_s16(lo), vmovn_s16(hi)));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Float dots (weights f32 / f16 / bf16, activation f32). Vector lanes reorder the sum, so results
 * match ref within float rounding (kernel test: |diff| <= 1e-5 * sum |w x|), not bit for bit. */

static inline float elk_neon_dot_f32(int n, const float *a, const float *b)
{
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = elk_neon_fma(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = elk_neon_fma(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = elk_neon_fma(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = elk_neon_fma(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4)
        s0 = elk_neon_fma(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float sum = elk_neon_hsum_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

/* 4 half-precision weights to float: exact (every binary16 value is a binary32 value). */
static inline float32x4_t elk_neon_load_f16(const elk_fp16 *h)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

static inline float elk_neon_dot_f16(int n, const elk_fp16 *a, const float *b)
{
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = elk_neon_fma(s0, elk_neon_load_f16(a + i), vld1q_f32(b + i));
        s1 = elk_neon_fma(s1, elk_neon_load_f16(a + i + 4), vld1q_f32(b + i + 4));
    }
    float sum = elk_neon_hsum_f32(vaddq_f32(s0, s1));
    for (; i < n; i++)
        sum += elk_fp16_to_fp32(a[i]) * b[i];
    return sum;
}

/* bf16 is the top half of a float: widen by shifting 16 bits left. */
static inline float elk_neon_dot_bf16(int n, const uint16_t *a, const float *b)
{
    float32x4_t s0 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t w = vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(a + i), 16));
        s0 = elk_neon_fma(s0, w, vld1q_f32(b + i));
    }
    float sum = elk_neon_hsum_f32(s0);
    for (; i < n; i++) {
        union { uint32_t u; float f; } w = { .u = (uint32_t)a[i] << 16 };
        sum += w.f * b[i];
    }
    return sum;
}

/* ---------------------------------------------------------------------------------------------
 * Q4_0 unpacking: 16 bytes of nibbles -> elements 0..15 (low nibbles) and 16..31 (high), minus 8. */

static inline void elk_neon_unpack_q4_0(const uint8_t *qs, int8x16_t *lo, int8x16_t *hi)
{
    const uint8x16_t v = vld1q_u8(qs);
    const int8x16_t eight = vdupq_n_s8(8);
    *lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), eight);
    *hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
}

/* fp16 -> fp32 with the hardware conversion (exact, so equal to elk_fp16_to_fp32). armv7 needs
 * -mfp16-format=ieee for __fp16 (elk/boards.py adds it to neon.c). */
static inline float elk_neon_h2f(elk_fp16 h)
{
    union { elk_fp16 u; __fp16 f; } v = { .u = h };
    return (float)v.f;
}

/* Scale of one block pair, computed like ref: fp16(d_w) * fp16(d_x) in float. */
static inline float elk_neon_scale(elk_fp16 dw, elk_fp16 dx)
{
    return elk_neon_h2f(dw) * elk_neon_h2f(dx);
}

#endif /* ELK_NEON_COMMON_H */
