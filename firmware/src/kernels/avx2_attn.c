/* AVX2 + FMA attention (query heads sharing one KV head, over the KV cache) and SwiGLU for the
 * avx2 table, bit for bit equal to ref.c: each score is still summed in element order (8 positions
 * per register, one per lane, from an 8x8 transpose of their keys shared by the group's heads), exp
 * is (float)exp((double)x) from a double-precision polynomial with an exact fallback, the softmax
 * sum runs in position order, and the value sum multiplies then adds (no FMA) per element.
 * Why exact: a last-bit change here flips Q8_0 activation codes downstream and moves logits by
 * 1e-2 on some models (tests/test_independent_gguf.py); thread counts must not change results.
 * Not here: threading (model.c splits heads over threads). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define ELK_INLINE static inline __attribute__((always_inline))

/* ---------------------------------------------------------------------------------------------
 * (float)exp((double)x), 8 at a time. e^x = 2^n e^r, n = round(x / ln2), r = x - n ln2 (ln2 in
 * two parts, the first with 32 trailing zero bits so n * part is exact), e^r by its degree-13
 * Taylor polynomial (|r| <= 0.347: truncation < 5e-18). The double result is within a few ulp of
 * e^x, as is the C library's exp; both round to the same float unless e^x lies within ~64 double
 * ulp of a float rounding midpoint (about 1 in 4 million), and those lanes, and results in the
 * float subnormal range (-104 < x < -87), are recomputed with the library's exp: the float is then
 * exactly ref's. At x <= -104 the float is +0 (peaked softmaxes meet this often). */

static const double exp_taylor[14] = {
    1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
    1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0,
};

/* 4 doubles in [-87, 88]; *unsure gets the lanes whose float rounding is too close to call. */
ELK_INLINE __m256d exp4d(__m256d x, __m256i *unsure)
{
    const __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(0.6931471803691238), x);   /* ln2 high: 21 bits */
    r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.9082149292705877e-10), r);     /* ln2 - high */
    __m256d p = _mm256_set1_pd(exp_taylor[13]);
    for (int i = 12; i >= 0; i--)
        p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(exp_taylor[i]));
    const __m256i e = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)),
                                                         _mm256_set1_epi64x(1023)), 52);
    const __m256d y = _mm256_mul_pd(p, _mm256_castsi256_pd(e));
    /* the 29 mantissa bits a float drops: within 64 of half (2^28) means "too close to call" */
    const __m256i low = _mm256_and_si256(_mm256_castpd_si256(y), _mm256_set1_epi64x((1 << 29) - 1));
    *unsure = _mm256_and_si256(_mm256_cmpgt_epi64(low, _mm256_set1_epi64x((1 << 28) - 64)),
                               _mm256_cmpgt_epi64(_mm256_set1_epi64x((1 << 28) + 64), low));
    return y;
}

#if defined(__AVX512F__)
/* AVX-512 builds: the 8 lanes as one vector of doubles, and a shorter polynomial: x = k ln2/16 + r,
 * k = 16 m + j, e^x = 2^m 2^(j/16) e^r with |r| <= ln2/32, where the degree-7 Taylor polynomial
 * truncates below 2e-18. 2^(j/16) comes correctly rounded from a 16-entry table (one two-register
 * permute); with the roundings of r, the polynomial and the product the double is within ~4 ulp of
 * e^x, inside the same "too close to call" window as exp4d, so the float results are the same. */
static const double exp2_sixteenths[16] = {
    0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0, 0x1.2387a6e756238p+0,
    0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0,
    0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
    0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0,
};

/* 8 doubles in [-87, 88]; *unsure gets the lanes whose float rounding is too close to call. */
ELK_INLINE __m512d exp8d(__m512d x, __mmask8 *unsure)
{
    const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(23.083120654223414)), /* 16 / ln2 */
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(0.6931471803691238 / 16), x); /* exact: 21-bit part */
    r = _mm512_fnmadd_pd(k, _mm512_set1_pd(1.9082149292705877e-10 / 16), r);
    __m512d p = _mm512_set1_pd(exp_taylor[7]);
    for (int i = 6; i >= 0; i--)
        p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(exp_taylor[i]));
    const __m256i ki = _mm512_cvtpd_epi32(k);
    const __m512i j = _mm512_cvtepi32_epi64(_mm256_and_si256(ki, _mm256_set1_epi32(15)));
    const __m512d t = _mm512_permutex2var_pd(_mm512_loadu_pd(exp2_sixteenths), j, _mm512_loadu_pd(exp2_sixteenths + 8));
    const __m512i m = _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm256_srai_epi32(ki, 4)), 52);
    const __m512i y = _mm512_add_epi64(_mm512_castpd_si512(_mm512_mul_pd(p, t)), m); /* times 2^m, exact */
    const __m512i low = _mm512_and_si512(y, _mm512_set1_epi64((1 << 29) - 1));
    *unsure = _mm512_cmpgt_epi64_mask(low, _mm512_set1_epi64((1 << 28) - 64)) &
              _mm512_cmpgt_epi64_mask(_mm512_set1_epi64((1 << 28) + 64), low);
    return _mm512_castsi512_pd(y);
}

/* exp of 8 floats as ref computes it. */
ELK_INLINE __m256 exp8_exact(__m256 x)
{
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __mmask8 unsure;
    const __m512d yd = exp8d(_mm512_cvtps_pd(xc), &unsure);
    /* e^x < 2^-150 for x <= -104: half the smallest subnormal or less, which rounds to +0 */
    const __m256 zero = _mm256_cmp_ps(x, _mm256_set1_ps(-104.0f), _CMP_LE_OQ);
    __m256 y = _mm256_andnot_ps(zero, _mm512_cvtpd_ps(yd));
    const int outside = _mm256_movemask_ps(_mm256_andnot_ps(zero, _mm256_cmp_ps(x, xc, _CMP_NEQ_UQ))); /* clamped, NaN */
    const int redo = ((int)unsure & ~_mm256_movemask_ps(zero)) | outside;
    if (redo) {
        float xs[8], ys[8];
        _mm256_storeu_ps(xs, x);
        _mm256_storeu_ps(ys, y);
        for (int l = 0; l < 8; l++)
            if (redo >> l & 1)
                ys[l] = (float)exp((double)xs[l]);
        y = _mm256_loadu_ps(ys);
    }
    return y;
}
#else
/* exp of 8 floats as ref computes it. */
ELK_INLINE __m256 exp8_exact(__m256 x)
{
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256i u0, u1;
    const __m256d y0 = exp4d(_mm256_cvtps_pd(_mm256_castps256_ps128(xc)), &u0);
    const __m256d y1 = exp4d(_mm256_cvtps_pd(_mm256_extractf128_ps(xc, 1)), &u1);
    /* e^x < 2^-150 for x <= -104: half the smallest subnormal or less, which rounds to +0 */
    const __m256 zero = _mm256_cmp_ps(x, _mm256_set1_ps(-104.0f), _CMP_LE_OQ);
    __m256 y = _mm256_andnot_ps(zero, _mm256_set_m128(_mm256_cvtpd_ps(y1), _mm256_cvtpd_ps(y0)));
    const int unsure = _mm256_movemask_pd(_mm256_castsi256_pd(u0)) | _mm256_movemask_pd(_mm256_castsi256_pd(u1)) << 4;
    const int outside = _mm256_movemask_ps(_mm256_andnot_ps(zero, _mm256_cmp_ps(x, xc, _CMP_NEQ_UQ))); /* clamped, NaN */
    if ((unsure & ~_mm256_movemask_ps(zero)) | outside) {
        float xs[8], ys[8];
        _mm256_storeu_ps(xs, x);
        _mm256_storeu_ps(ys, y);
        for (int l = 0; l < 8; l++)
            if (((unsure & ~_mm256_movemask_ps(zero)) | outside) >> l & 1)
                ys[l] = (float)exp((double)xs[l]);
        y = _mm256_loadu_ps(ys);
    }
    return y;
}
#endif

/* ---------------------------------------------------------------------------------------------
 * Attention */

ELK_INLINE void transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

#define ATTN_MAX_HEAD 256 /* head sizes up to this take the vector path (8 KB of transposed keys) */
#define ATTN_MAX_HEADS_SUM 64 /* query heads per KV head the vector path takes */

/* H heads' (H a constant: 1, 4 or 8, each with its own add chain) scores of 8 positions from the
 * transposed keys kt: lane l of head h sums q_h[e] * kt[e][l] in element order. */
ELK_INLINE void scores_heads(int H, int hd, const float *q, const __m256 *kt, __m256 vs, float *out, size_t stride,
                              __m256i keep)
{
    __m256 a[8];
    for (int h = 0; h < H; h++)
        a[h] = _mm256_setzero_ps();
    for (int e = 0; e < hd; e++) {
        const __m256 kv = kt[e];
        for (int h = 0; h < H; h++)
            a[h] = _mm256_add_ps(a[h], _mm256_mul_ps(_mm256_broadcast_ss(q + (size_t)h * hd + e), kv));
    }
    for (int h = 0; h < H; h++)
        _mm256_maskstore_ps(out + (size_t)h * stride, keep, _mm256_mul_ps(a[h], vs));
}

/* Scores of positions [s, s + valid) (valid <= 8) for nq heads: lane l sums q . k_{s+l} in element
 * order. The keys are transposed once into kt (hd rows of 8 lanes, L1-resident) and then read by
 * every head; heads go 8 at a time, each with its own accumulator chain, so 8 independent add chains
 * keep the add units busy instead of one chain's latency setting the pace. A last chunk of fewer
 * than 8 positions reads no key past the end (its lanes are zeros) and stores only its own lanes. */
static void scores8(int hd, int nq, int s, int valid, const float *q, const float *k, size_t stride, float scale,
                    float *scores, size_t score_stride, __m256 *kt)
{
    for (int i = 0; i < hd; i += 8) {
        __m256 *t = kt + i;
        for (int l = 0; l < 8; l++)
            t[l] = l < valid ? _mm256_loadu_ps(k + (size_t)(s + l) * stride + i) : _mm256_setzero_ps();
        transpose8(t); /* kt[i + e] lane l = k_{s+l}[i + e] */
    }
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    int j = 0;
    for (; j + 8 <= nq; j += 8)
        scores_heads(8, hd, q + (size_t)j * hd, kt, vs, scores + (size_t)j * score_stride + s, score_stride, keep);
    for (; j + 4 <= nq; j += 4)
        scores_heads(4, hd, q + (size_t)j * hd, kt, vs, scores + (size_t)j * score_stride + s, score_stride, keep);
    for (; j < nq; j++)
        scores_heads(1, hd, q + (size_t)j * hd, kt, vs, scores + (size_t)j * score_stride + s, score_stride, keep);
}

/* max over n scores as ref finds it: NaN never wins (max_ps returns its second operand, the running
 * max, when the score is NaN); of +0 and -0 either may come back, and exp(s - max) is the same. */
static float max_scores(int n, const float *sc)
{
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int s = 0;
    for (; s + 8 <= n; s += 8)
        vm = _mm256_max_ps(_mm256_loadu_ps(sc + s), vm);
    float m[8], max = -INFINITY;
    _mm256_storeu_ps(m, vm);
    for (int l = 0; l < 8; l++)
        max = m[l] > max ? m[l] : max;
    for (; s < n; s++)
        max = sc[s] > max ? sc[s] : max;
    return max;
}

/* Softmax of nq heads' n scores (rows score_stride apart), as ref does each: max, exp(x - max), sum
 * in position order, divide. The sums of 8 heads run side by side, one lane per head, from 8x8
 * transposes of their exps: each lane still adds its own head's values in position order, but 8
 * add chains are in flight instead of one. */
static void softmax_heads(int nq, int n, float *scores, size_t score_stride)
{
    float sums[ATTN_MAX_HEADS_SUM];
    for (int j = 0; j < nq; j++) {
        float *sc = scores + (size_t)j * score_stride;
        const __m256 vm = _mm256_set1_ps(max_scores(n, sc));
        int s = 0;
        for (; s + 8 <= n; s += 8)
            _mm256_storeu_ps(sc + s, exp8_exact(_mm256_sub_ps(_mm256_loadu_ps(sc + s), vm)));
        const float max = _mm256_cvtss_f32(vm);
        for (; s < n; s++)
            sc[s] = (float)exp((double)(sc[s] - max));
    }
    int j = 0;
    for (; j + 8 <= nq && j + 8 <= ATTN_MAX_HEADS_SUM; j += 8) {
        __m256 acc = _mm256_setzero_ps();
        int s = 0;
        for (; s + 8 <= n; s += 8) {
            __m256 t[8];
            for (int h = 0; h < 8; h++)
                t[h] = _mm256_loadu_ps(scores + (size_t)(j + h) * score_stride + s);
            transpose8(t); /* t[e] lane h = head j+h's exp at position s+e */
            for (int e = 0; e < 8; e++)
                acc = _mm256_add_ps(acc, t[e]);
        }
        float a[8];
        _mm256_storeu_ps(a, acc);
        for (int h = 0; h < 8; h++) {
            const float *sc = scores + (size_t)(j + h) * score_stride;
            for (int r = s; r < n; r++)
                a[h] += sc[r];
            sums[j + h] = a[h];
        }
    }
    for (; j < nq; j++) {
        const float *sc = scores + (size_t)j * score_stride;
        float sum = 0.0f;
        for (int r = 0; r < n; r++)
            sum += sc[r];
        sums[j] = sum;
    }
    for (j = 0; j < nq; j++) {
        float *sc = scores + (size_t)j * score_stride;
        const __m256 vs = _mm256_set1_ps(sums[j]);
        int s = 0;
        for (; s + 8 <= n; s += 8)
            _mm256_storeu_ps(sc + s, _mm256_div_ps(_mm256_loadu_ps(sc + s), vs));
        for (; s < n; s++)
            sc[s] /= sums[j];
    }
}

/* 64 elements of out += sum over positions [s0, s1) of p_s v_s, in position order, multiply then add:
 * 8 independent add chains, so the adds' throughput sets the pace, not their latency. */
ELK_INLINE void values64(int s0, int s1, const float *p, const float *v, size_t stride, float *out, int first)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    if (!first) {
        a0 = _mm256_loadu_ps(out), a1 = _mm256_loadu_ps(out + 8), a2 = _mm256_loadu_ps(out + 16);
        a3 = _mm256_loadu_ps(out + 24), a4 = _mm256_loadu_ps(out + 32), a5 = _mm256_loadu_ps(out + 40);
        a6 = _mm256_loadu_ps(out + 48), a7 = _mm256_loadu_ps(out + 56);
    }
    for (int s = s0; s < s1; s++) {
        const float *vs = v + (size_t)s * stride;
        const __m256 ps = _mm256_broadcast_ss(p + s);
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(ps, _mm256_loadu_ps(vs)));
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 8)));
        a2 = _mm256_add_ps(a2, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 16)));
        a3 = _mm256_add_ps(a3, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 24)));
        a4 = _mm256_add_ps(a4, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 32)));
        a5 = _mm256_add_ps(a5, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 40)));
        a6 = _mm256_add_ps(a6, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 48)));
        a7 = _mm256_add_ps(a7, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 56)));
    }
    _mm256_storeu_ps(out, a0);
    _mm256_storeu_ps(out + 8, a1);
    _mm256_storeu_ps(out + 16, a2);
    _mm256_storeu_ps(out + 24, a3);
    _mm256_storeu_ps(out + 32, a4);
    _mm256_storeu_ps(out + 40, a5);
    _mm256_storeu_ps(out + 48, a6);
    _mm256_storeu_ps(out + 56, a7);
}

/* out_j = sum_s p_js v_s for nq heads sharing v. Positions go in chunks of ~16 KB of values, every
 * head taking a chunk before the next is read, so the group's heads read v from L1 rather than each
 * streaming all of it from L2; each head's accumulators carry over from chunk to chunk, so every
 * element is still summed in position order, multiply then add. */
static void values_heads(int hd, int nq, int n, const float *scores, size_t score_stride, const float *v,
                         size_t stride, float *out)
{
    const int chunk = 4096 / hd > 16 ? 4096 / hd : 16;
    for (int s0 = 0; s0 < n; s0 += chunk) {
        const int s1 = n - s0 < chunk ? n : s0 + chunk;
        for (int j = 0; j < nq; j++)
            for (int i = 0; i < hd; i += 64)
                values64(s0, s1, scores + (size_t)j * score_stride, v + i, stride, out + (size_t)j * hd + i, s0 == 0);
    }
}

/* out[0..hd) = sum_s p_s v_s, per element in position order, multiply then add. */
static void values_exact(int hd, int n, const float *p, const float *v, size_t stride, float *out)
{
    int i = 0;
    for (; i + 32 <= hd; i += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int s = 0; s < n; s++) {
            const float *vs = v + (size_t)s * stride + i;
            const __m256 ps = _mm256_broadcast_ss(p + s);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(ps, _mm256_loadu_ps(vs)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 8)));
            a2 = _mm256_add_ps(a2, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 16)));
            a3 = _mm256_add_ps(a3, _mm256_mul_ps(ps, _mm256_loadu_ps(vs + 24)));
        }
        _mm256_storeu_ps(out + i, a0);
        _mm256_storeu_ps(out + i + 8, a1);
        _mm256_storeu_ps(out + i + 16, a2);
        _mm256_storeu_ps(out + i + 24, a3);
    }
    for (; i < hd; i += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int s = 0; s < n; s++)
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_broadcast_ss(p + s), _mm256_loadu_ps(v + (size_t)s * stride + i)));
        _mm256_storeu_ps(out + i, a);
    }
}

/* The cache rows are usually not in any cache at decode: the token's weight stream (hundreds of MB)
 * went through the caches since this layer last read them, and their 1 KB-strided rows (one KV
 * head's hd floats of each position) leave the hardware prefetchers behind. So the keys are
 * prefetched this many positions ahead of the score loop, and each chunk's values while its scores
 * are computed (the value pass then reads them from L1/L2). TinyLlama's 4 KV groups at 136
 * positions with the caches flushed first: 44 -> 38-42 us. */
#define ATTN_PREFETCH_AHEAD 16

static inline void prefetch_rows(const float *base, size_t stride, int hd, int s0, int s1)
{
    for (int s = s0; s < s1; s++)
        for (int i = 0; i < hd; i += 16)
            _mm_prefetch((const char *)(base + (size_t)s * stride + i), _MM_HINT_T0);
}

void elk_attend_avx2(int hd, int nq, int n, const float *q, const float *k, const float *v, size_t stride,
                     float scale, float *scores, size_t score_stride, float *out)
{
    if (hd % 8 != 0 || n < 1) { /* no head size in use is (and n = 0: ref writes the zeros); the plain loops then */
        elk_kernels_ref.attend(hd, nq, n, q, k, v, stride, scale, scores, score_stride, out);
        return;
    }
    if (hd > ATTN_MAX_HEAD || nq > ATTN_MAX_HEADS_SUM) {
        elk_kernels_ref.attend(hd, nq, n, q, k, v, stride, scale, scores, score_stride, out);
        return;
    }
    __m256 kt[ATTN_MAX_HEAD]; /* 8 positions' keys, transposed */
    prefetch_rows(k, stride, hd, 0, ATTN_PREFETCH_AHEAD < n ? ATTN_PREFETCH_AHEAD : n);
    for (int s = 0; s < n; s += 8) {
        const int ahead = s + ATTN_PREFETCH_AHEAD, end = s + 8 < n ? s + 8 : n;
        prefetch_rows(k, stride, hd, ahead, ahead + 8 < n ? ahead + 8 : n);
        prefetch_rows(v, stride, hd, s, end);
        scores8(hd, nq, s, end - s, q, k, stride, scale, scores, score_stride, kt);
    }
    softmax_heads(nq, n, scores, score_stride);
    if (hd % 64 == 0)
        values_heads(hd, nq, n, scores, score_stride, v, stride, out);
    else
        for (int j = 0; j < nq; j++)
            values_exact(hd, n, scores + (size_t)j * score_stride, v, stride, out + (size_t)j * hd);
}

/* ---------------------------------------------------------------------------------------------
 * SwiGLU */

void elk_swiglu_avx2(float *g, const float *u, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 e = exp8_exact(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        const __m256 s = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + (float)exp((double)-g[i])) * u[i];
}
