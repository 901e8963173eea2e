/* Reference kernels: portable C that defines elk's numerics (ggml's reference quantizers, so GGUF
 * Q8_0/Q4_0 data round-trips bit for bit). Every ISA table is tested against this one.
 * Not tuned for speed: see avx2.c and neon*.c. */
#include <math.h>
#include <string.h>

#include "kernels.h"

/* ---------------------------------------------------------------------------------------------
 * fp16 conversion (IEEE binary16, round to nearest even) */

float elk_fp16_to_fp32(elk_fp16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            exp = 127 - 15 + 1;
            while ((man & 0x400u) == 0) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

elk_fp16 elk_fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (elk_fp16)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (elk_fp16)(sign | 0x7c00u);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (absx < 0x33000000u) /* < 2^-25 rounds to zero */
            return (elk_fp16)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14 - (e - 127) + 13 - 1 ... bits to drop */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (elk_fp16)(sign | half);
    }
    uint32_t h = ((absx - 0x38000000u) >> 13); /* rebias exponent 127 -> 15 */
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (elk_fp16)(sign | h);
}

/* ---------------------------------------------------------------------------------------------
 * Row sizes and dequantization */

size_t elk_row_bytes(int type, int64_t n)
{
    if (n <= 0)
        return 0;
    switch (type) {
    case ELK_TYPE_F32: return (size_t)n * 4;
    case ELK_TYPE_F16: return (size_t)n * 2;
    case ELK_TYPE_BF16: return (size_t)n * 2;
    case ELK_TYPE_Q8_0: return n % ELK_QK ? 0 : (size_t)(n / ELK_QK) * sizeof(elk_block_q8_0);
    case ELK_TYPE_Q4_0: return n % ELK_QK ? 0 : (size_t)(n / ELK_QK) * sizeof(elk_block_q4_0);
    default: return 0;
    }
}

void elk_dequantize_row(int type, const void *x, float *y, int64_t n)
{
    switch (type) {
    case ELK_TYPE_F32:
        memcpy(y, x, (size_t)n * sizeof(float));
        break;
    case ELK_TYPE_F16: {
        const elk_fp16 *h = x;
        for (int64_t i = 0; i < n; i++)
            y[i] = elk_fp16_to_fp32(h[i]);
        break;
    }
    case ELK_TYPE_BF16: {
        const uint16_t *b = x;
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)b[i] << 16;
            memcpy(&y[i], &bits, sizeof(float));
        }
        break;
    }
    case ELK_TYPE_Q8_0: {
        const elk_block_q8_0 *b = x;
        for (int64_t i = 0; i < n / ELK_QK; i++) {
            float d = elk_fp16_to_fp32(b[i].d);
            for (int j = 0; j < ELK_QK; j++)
                y[i * ELK_QK + j] = d * b[i].qs[j];
        }
        break;
    }
    case ELK_TYPE_Q4_0: {
        const elk_block_q4_0 *b = x;
        for (int64_t i = 0; i < n / ELK_QK; i++) {
            float d = elk_fp16_to_fp32(b[i].d);
            for (int j = 0; j < ELK_QK / 2; j++) {
                y[i * ELK_QK + j] = d * ((b[i].qs[j] & 0x0f) - 8);
                y[i * ELK_QK + j + ELK_QK / 2] = d * ((b[i].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    default:
        break;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Reference kernels */

static void quantize_q8_0_ref(const float *x, elk_block_q8_0 *y, int n)
{
    for (int i = 0; i < n / ELK_QK; i++) {
        float amax = 0.0f;
        for (int j = 0; j < ELK_QK; j++)
            amax = fmaxf(amax, fabsf(x[i * ELK_QK + j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = elk_fp32_to_fp16(d);
        for (int j = 0; j < ELK_QK; j++)
            y[i].qs[j] = (int8_t)roundf(x[i * ELK_QK + j] * id);
    }
}

static float dot_f32_ref(int n, const void *w, const void *x)
{
    const float *a = w, *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

static float dot_f16_ref(int n, const void *w, const void *x)
{
    const elk_fp16 *a = w;
    const float *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += elk_fp16_to_fp32(a[i]) * b[i];
    return sum;
}

static float dot_bf16_ref(int n, const void *w, const void *x)
{
    const uint16_t *a = w;
    const float *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)a[i] << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        sum += f * b[i];
    }
    return sum;
}

static float dot_q8_0_ref(int n, const void *w, const void *x)
{
    const elk_block_q8_0 *a = w, *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n / ELK_QK; i++) {
        int32_t isum = 0;
        for (int j = 0; j < ELK_QK; j++)
            isum += a[i].qs[j] * b[i].qs[j];
        sum += (float)isum * (elk_fp16_to_fp32(a[i].d) * elk_fp16_to_fp32(b[i].d));
    }
    return sum;
}

static float dot_q4_0_ref(int n, const void *w, const void *x)
{
    const elk_block_q4_0 *a = w;
    const elk_block_q8_0 *b = x;
    float sum = 0.0f;
    for (int i = 0; i < n / ELK_QK; i++) {
        int32_t isum = 0;
        for (int j = 0; j < ELK_QK / 2; j++) {
            isum += ((a[i].qs[j] & 0x0f) - 8) * b[i].qs[j];
            isum += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + ELK_QK / 2];
        }
        sum += (float)isum * (elk_fp16_to_fp32(a[i].d) * elk_fp16_to_fp32(b[i].d));
    }
    return sum;
}

/* ---------------------------------------------------------------------------------------------
 * Attention and SwiGLU (the model's only transcendental functions) */

/* exp rounded from double: correctly rounded in practice on every C library (glibc's expf is not,
 * and other libcs differ), so logits are portable across boards and equal the reference's. */
static float exp_f32(float x)
{
    return (float)exp((double)x);
}

static void attend_head(int hd, int n, const float *q, const float *k, const float *v, size_t stride, float scale,
                        float *scores, float *out)
{
    float max = -INFINITY;
    for (int s = 0; s < n; s++) {
        const float *ks = k + (size_t)s * stride;
        float dot = 0.0f;
        for (int i = 0; i < hd; i++)
            dot += q[i] * ks[i];
        scores[s] = dot * scale;
        max = scores[s] > max ? scores[s] : max;
    }
    float sum = 0.0f;
    for (int s = 0; s < n; s++) {
        scores[s] = exp_f32(scores[s] - max);
        sum += scores[s];
    }
    for (int s = 0; s < n; s++)
        scores[s] /= sum;
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int s = 0; s < n; s++) {
        const float *vs = v + (size_t)s * stride;
        for (int i = 0; i < hd; i++)
            out[i] += scores[s] * vs[i];
    }
}

static void attend_ref(int hd, int nq, int n, const float *q, const float *k, const float *v, size_t stride,
                       float scale, float *scores, size_t score_stride, float *out)
{
    for (int j = 0; j < nq; j++)
        attend_head(hd, n, q + (size_t)j * hd, k, v, stride, scale, scores + (size_t)j * score_stride,
                    out + (size_t)j * hd);
}

static void swiglu_ref(float *g, const float *u, int n)
{
    for (int i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + exp_f32(-g[i])) * u[i];
}

const elk_kernels elk_kernels_ref = {
    .name = "ref",
    .requires = 0,
    .quantize_q8_0 = quantize_q8_0_ref,
    .dot = {
        [ELK_TYPE_F32] = dot_f32_ref,
        [ELK_TYPE_F16] = dot_f16_ref,
        [ELK_TYPE_BF16] = dot_bf16_ref,
        [ELK_TYPE_Q8_0] = dot_q8_0_ref,
        [ELK_TYPE_Q4_0] = dot_q4_0_ref,
    },
    .attend = attend_ref,
    .swiglu = swiglu_ref,
};
