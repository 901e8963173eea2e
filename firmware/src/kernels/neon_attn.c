/* AArch64 NEON attention (query heads sharing one KV head, over the KV cache) and SwiGLU for the neon,
 * neon_dotprod and neon_i8mm tables (built once, with plain neon's ARMv8.0 flags), bit for bit equal
 * to ref.c: each score lane sums q . k in element order (8 positions per pass, from 4x4 transposes of
 * their keys shared by the group's heads; a last pass of 1-7 positions has zero lanes for the missing
 * keys), multiply then add (no FMA: -ffp-contract=off, and tests/test_kernels_neon_attn.py checks the
 * object); exp is (float)exp((double)x) from a float64x2 polynomial with an exact libm fallback; the
 * softmax sum runs in position order; the value sums go over position chunks shared by the group's
 * heads, each element still summed in position order. Cache rows are software-prefetched.
 * ARMv7: nothing here, the tables keep ref's slots (NULL). ARMv7 NEON has no float64 vectors, and its
 * float arithmetic always flushes subnormals to zero (FPSCR.FZ is forced for Advanced SIMD), so a
 * vector score or value sum would differ from ref's VFP sums whenever a product or a softmax weight
 * is subnormal (peaked softmaxes make such weights). A scalar variant would only reorder ref's loops.
 * Not here: threading (model.c splits heads over threads). */
#include "neon_common.h"

#if defined(__aarch64__)

#include <math.h>
#include <string.h>

#define ELK_INLINE static inline __attribute__((always_inline))

/* ---------------------------------------------------------------------------------------------
 * (float)exp((double)x), 4 at a time, in float64x2 halves. e^x = 2^n e^r, n = round(x / ln2) and
 * r = x - n ln2 (one fused step), e^r by a degree-7 polynomial, 2^n added to the result's exponent.
 * Error of the double y against e^x, in ulps of y (p = e^r is in [0.70, 1.42], so its ulp is at
 * least 2^-53, and scaling by 2^n is exact):
 *   - the polynomial: c0 + r + c2 r^2 + ... + c7 r^7 (c1 = 1 saves an instruction), the minimax
 *     fit of e^r on |r| <= 0.3467 weighted by its ulp (a linear program over 4,000 points, on top
 *     of a Chebyshev fit), coefficients rounded to double: at most 312,267 ulp (checked at 40,001
 *     points in 40-digit arithmetic; an unweighted Chebyshev fit gives 365,000);
 *   - r: n = round(x * (1/ln2)) (so |r| <= ln2/2 + 1e-14), ln2's double is 2.4e-17 off and
 *     |n| <= 150: r is within 3.6e-15 of exact, 33 ulp of y; the fused step's own rounding and the
 *     polynomial's 7 roundings (r^2 and 6 sums of terms below 1.42) add a few ulp;
 *   - the C library's exp is within 1 ulp of e^x.
 * So y and the library's double round to the same float unless y lies within 312,400 ulp of a float
 * rounding midpoint; lanes within 2^19 (524,288) ulp of one, 1 in 512, are recomputed with the
 * library's exp, which makes every float exactly ref's (2^18 would be too narrow; degree 6 would
 * need a window of 2^24, 1 lane in 16). On NEON a table of 2^(j/16), as the AVX-512 path uses,
 * costs more than it saves: two lanes have no table lookup instruction, and masking, extracting
 * the two indices, loading and inserting is 6 instructions per 2 lanes (a TBL on the table's bytes
 * needs its byte indices built, and two TBLs for 128 bytes: 7), plus the product by the entry,
 * against 5 saved by a degree-4 polynomial at |r| <= ln2/32.
 * x is clamped to [-104, 89] first: x <= -104 then gives +0 (e^-104 < 2^-150) and x >= 89 gives
 * +inf (e^89 > FLT_MAX) from the same polynomial, which matters because a peaked softmax has many
 * positions far below its maximum. Results in the float subnormal range (-104 < x < -87) round at
 * a coarser bit than the midpoint test assumes, so those lanes, and NaN, go to the library.
 * The double polynomial may fuse (its result is an estimate the midpoint test guards); no float
 * path does. tools/bench/exp_exhaustive_neon.c checks every float in [-110, 89] against ref. */

#define EXP_WINDOW (1u << 19) /* double ulps either side of a float midpoint that go to the library */

/* c0 + r + c2 r^2 + ... + c7 r^7 (c1 = 1: see the fit above) */
static const double exp_poly[8] = {
    0x1.ffffffffb3c35p-1, 1.0, 0x1.0000004858befp-1, 0x1.5555540868d6dp-3,
    0x1.555480c114a52p-5, 0x1.1112b3e73e185p-7, 0x1.6d945d029f4bdp-10, 0x1.9ebd7ff3bddd9p-13,
};

/* 2 doubles in [-104, 89] -> e^x within the error above (a double; no float rounding yet). */
ELK_INLINE float64x2_t exp2d(float64x2_t x)
{
    const float64x2_t n = vrndnq_f64(vmulq_f64(x, vdupq_n_f64(1.4426950408889634)));
    const float64x2_t r = vfmsq_f64(x, n, vdupq_n_f64(0.6931471805599453)); /* x - n ln2, one rounding */
    /* (c0 + r) + r^2 ((c2 + c3 r) + r^2 ((c4 + c5 r) + r^2 (c6 + c7 r))): FMLA overwrites its addend,
     * so a Horner step in r costs a copy of its coefficient too (2 instructions); here only the
     * 3 sums c_i + c_i+1 r copy one, c0 + r is one add, and the steps in r^2 add into them */
#define EXP_PAIR(i) vfmaq_f64(vdupq_n_f64(exp_poly[i]), vdupq_n_f64(exp_poly[(i) + 1]), r) /* c_i + c_i+1 r */
    const float64x2_t r2 = vmulq_f64(r, r);
    float64x2_t p = vfmaq_f64(EXP_PAIR(4), EXP_PAIR(6), r2);
    p = vfmaq_f64(EXP_PAIR(2), p, r2);
    p = vfmaq_f64(vaddq_f64(vdupq_n_f64(exp_poly[0]), r), p, r2);
#undef EXP_PAIR
    /* p * 2^n: n added to p's exponent (p's is 1022 or 1023, n in [-150, 129]: no wrap) */
    return vreinterpretq_f64_s64(vaddq_s64(vreinterpretq_s64_f64(p), vshlq_n_s64(vcvtq_s64_f64(n), 52)));
}

/* exp of 4 floats as ref computes it, except the lanes set in *slow (which need the library). */
ELK_INLINE float32x4_t exp4_fast(float32x4_t x, uint32x4_t *slow)
{
    const float32x4_t xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-104.0f)), vdupq_n_f32(89.0f)); /* NaN stays */
    const float64x2_t y0 = exp2d(vcvt_f64_f32(vget_low_f32(xc))), y1 = exp2d(vcvt_high_f64_f32(xc));
    /* the 29 mantissa bits a float drops are the low 29 of each double's low word: shifted up by 3,
     * within 8 W of 2^31 is "too close to call"; v - (2^31 - 8 W) wraps to a huge number below the
     * window, so one unsigned compare */
    const uint32x4_t low = vshlq_n_u32(vuzp1q_u32(vreinterpretq_u32_f64(y0), vreinterpretq_u32_f64(y1)), 3);
    const uint32x4_t unsure = vcleq_u32(vsubq_u32(low, vdupq_n_u32(0x80000000u - 8 * EXP_WINDOW)),
                                        vdupq_n_u32(16 * EXP_WINDOW));
    /* fast: xc >= -87 (normal float results) or xc = -104 (+0): |xc + 95.5| >= 8.5 (exact sums
     * near both ends; false for NaN) */
    const uint32x4_t fast = vcageq_f32(vaddq_f32(xc, vdupq_n_f32(95.5f)), vdupq_n_f32(8.5f));
    *slow = vornq_u32(unsure, fast);
    return vcvt_high_f32_f64(vcvt_f32_f64(y0), y1);
}

/* exp of 4 floats as ref computes it. Loops call exp4_fast and redo only the blocks with a slow lane
 * here, after the loop: a library call inside a loop clobbers the vector registers, and GCC then
 * reloads the polynomial's constants at every block (about 30 instructions per 4 exps). */
ELK_INLINE float32x4_t exp4_exact(float32x4_t x)
{
    uint32x4_t slow;
    float32x4_t y = exp4_fast(x, &slow);
    if (vmaxvq_u32(slow)) {
        float xs[4], ys[4];
        uint32_t m[4];
        vst1q_f32(xs, x);
        vst1q_f32(ys, y);
        vst1q_u32(m, slow);
        for (int l = 0; l < 4; l++)
            if (m[l])
                ys[l] = (float)exp((double)xs[l]);
        y = vld1q_f32(ys);
    }
    return y;
}

/* ---------------------------------------------------------------------------------------------
 * Attention scores */

#define ATTN_HD_MAX 256 /* larger heads (none in use) take ref's loops */

/* r[e] lane l <- r[l] lane e (a 4x4 transpose: 32-bit then 64-bit transposes). */
ELK_INLINE void transpose4(float32x4_t r[4])
{
    const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
    const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
    r[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    r[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    r[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    r[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
}

/* acc + q[e] * k, multiply then add (lane e of q by vector). */
#define MULADD(acc, k, q, e) vaddq_f32((acc), vmulq_laneq_f32((k), (q), (e)))

/* dst[0..valid) <- the 8 lanes lo, hi (valid <= 8). NEON has no masked store: a last chunk of fewer
 * than 8 positions goes through a stack buffer, so nothing past position n is written. */
ELK_INLINE void store8(float *dst, float32x4_t lo, float32x4_t hi, int valid)
{
    if (valid == 8) {
        vst1q_f32(dst, lo);
        vst1q_f32(dst + 4, hi);
        return;
    }
    float t[8];
    vst1q_f32(t, lo);
    vst1q_f32(t + 4, hi);
    for (int l = 0; l < valid; l++)
        dst[l] = t[l];
}

/* kt[2i + h] lane l <- k_{s + 4h + l}[i], zeros for the lanes 4h + l >= valid (no key read there). */
ELK_INLINE void keys8(int hd, int s, int valid, const float *k, size_t stride, float32x4_t *kt)
{
    for (int i = 0; i < hd; i += 4)
        for (int h = 0; h < 2; h++) {
            float32x4_t r[4];
            for (int l = 0; l < 4; l++)
                r[l] = 4 * h + l < valid ? vld1q_f32(k + (size_t)(s + 4 * h + l) * stride + i) : vdupq_n_f32(0.0f);
            transpose4(r);
            for (int e = 0; e < 4; e++)
                kt[2 * (i + e) + h] = r[e];
        }
}

/* Scores of positions [s, s + valid) (valid <= 8) for nq heads. The keys are transposed once into kt
 * (kt[2i + h] lane l = k_{s + 4h + l}[i]) and read by every head; each lane then sums q . k in element
 * order. Four heads at a time (then two, then one): eight independent add chains hide the add latency,
 * and each transposed key vector is loaded once for four heads. A last chunk of fewer
 * than 8 positions reads no key past the end (its missing lanes are zeros, and their scores are
 * dropped by store8): each valid lane's sum is the same as in a full chunk. */
ELK_INLINE void scores8(int hd, int nq, int s, int valid, const float *q, const float *k, size_t stride,
                        float scale, float *scores, size_t score_stride)
{
    float32x4_t kt[2 * ATTN_HD_MAX];
    keys8(hd, s, valid, k, stride, kt);
    const float32x4_t vscale = vdupq_n_f32(scale);
    int j = 0;
    for (; j + 4 <= nq; j += 4) { /* four heads: eight add chains, each key vector loaded once for four */
        const float *q0 = q + (size_t)j * hd, *q1 = q0 + hd, *q2 = q1 + hd, *q3 = q2 + hd;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
        for (int i = 0; i < hd; i += 4) {
            const float32x4_t x0 = vld1q_f32(q0 + i), x1 = vld1q_f32(q1 + i);
            const float32x4_t x2 = vld1q_f32(q2 + i), x3 = vld1q_f32(q3 + i);
            const float32x4_t *kk = kt + 2 * i;
#define STEP4(e)                                                                                      \
    a0 = MULADD(a0, kk[2 * (e)], x0, e); a1 = MULADD(a1, kk[2 * (e) + 1], x0, e);                       \
    b0 = MULADD(b0, kk[2 * (e)], x1, e); b1 = MULADD(b1, kk[2 * (e) + 1], x1, e);                       \
    c0 = MULADD(c0, kk[2 * (e)], x2, e); c1 = MULADD(c1, kk[2 * (e) + 1], x2, e);                       \
    d0 = MULADD(d0, kk[2 * (e)], x3, e); d1 = MULADD(d1, kk[2 * (e) + 1], x3, e)
            STEP4(0); STEP4(1); STEP4(2); STEP4(3);
#undef STEP4
        }
        float *s0 = scores + (size_t)j * score_stride + s;
        store8(s0, vmulq_f32(a0, vscale), vmulq_f32(a1, vscale), valid);
        store8(s0 + score_stride, vmulq_f32(b0, vscale), vmulq_f32(b1, vscale), valid);
        store8(s0 + 2 * score_stride, vmulq_f32(c0, vscale), vmulq_f32(c1, vscale), valid);
        store8(s0 + 3 * score_stride, vmulq_f32(d0, vscale), vmulq_f32(d1, vscale), valid);
    }
    for (; j + 2 <= nq; j += 2) {
        const float *q0 = q + (size_t)j * hd, *q1 = q0 + hd;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, b0 = a0, b1 = a0;
        for (int i = 0; i < hd; i += 4) {
            const float32x4_t x0 = vld1q_f32(q0 + i), x1 = vld1q_f32(q1 + i);
            const float32x4_t *kk = kt + 2 * i;
            a0 = MULADD(a0, kk[0], x0, 0); a1 = MULADD(a1, kk[1], x0, 0);
            b0 = MULADD(b0, kk[0], x1, 0); b1 = MULADD(b1, kk[1], x1, 0);
            a0 = MULADD(a0, kk[2], x0, 1); a1 = MULADD(a1, kk[3], x0, 1);
            b0 = MULADD(b0, kk[2], x1, 1); b1 = MULADD(b1, kk[3], x1, 1);
            a0 = MULADD(a0, kk[4], x0, 2); a1 = MULADD(a1, kk[5], x0, 2);
            b0 = MULADD(b0, kk[4], x1, 2); b1 = MULADD(b1, kk[5], x1, 2);
            a0 = MULADD(a0, kk[6], x0, 3); a1 = MULADD(a1, kk[7], x0, 3);
            b0 = MULADD(b0, kk[6], x1, 3); b1 = MULADD(b1, kk[7], x1, 3);
        }
        float *s0 = scores + (size_t)j * score_stride + s;
        store8(s0, vmulq_f32(a0, vscale), vmulq_f32(a1, vscale), valid);
        store8(s0 + score_stride, vmulq_f32(b0, vscale), vmulq_f32(b1, vscale), valid);
    }
    if (j < nq) { /* an odd group: the last head alone */
        const float *q0 = q + (size_t)j * hd;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
        for (int i = 0; i < hd; i += 4) {
            const float32x4_t x0 = vld1q_f32(q0 + i);
            const float32x4_t *kk = kt + 2 * i;
            a0 = MULADD(a0, kk[0], x0, 0); a1 = MULADD(a1, kk[1], x0, 0);
            a0 = MULADD(a0, kk[2], x0, 1); a1 = MULADD(a1, kk[3], x0, 1);
            a0 = MULADD(a0, kk[4], x0, 2); a1 = MULADD(a1, kk[5], x0, 2);
            a0 = MULADD(a0, kk[6], x0, 3); a1 = MULADD(a1, kk[7], x0, 3);
        }
        store8(scores + (size_t)j * score_stride + s, vmulq_f32(a0, vscale), vmulq_f32(a1, vscale), valid);
    }
}

/* Full chunks (valid a constant 8: no per-row test, plain stores) and the last 1-7 positions. */
static void scores8_full(int hd, int nq, int s, const float *q, const float *k, size_t stride, float scale,
                         float *scores, size_t score_stride)
{
    scores8(hd, nq, s, 8, q, k, stride, scale, scores, score_stride);
}

static void scores8_part(int hd, int nq, int s, int valid, const float *q, const float *k, size_t stride,
                         float scale, float *scores, size_t score_stride)
{
    scores8(hd, nq, s, valid, q, k, stride, scale, scores, score_stride);
}

/* ---------------------------------------------------------------------------------------------
 * Softmax and value sums */

/* One head's n scores -> exp(x - max), as ref: max, then exp of the differences.
 * The max uses FMAXNM, which skips NaN as ref's `x > max` does; it may return +0 where ref keeps
 * a -0 seen first, but x - max then differs only in the sign of a zero, and exp(+-0) = 1. */
__attribute__((noinline)) /* inlined into the attention, its exp loop lost registers: +7 instructions
                            * per 4 positions */
static void exp_head(int n, float *sc)
{
    float32x4_t vm = vdupq_n_f32(-INFINITY);
    int s = 0;
    for (; s + 4 <= n; s += 4)
        vm = vmaxnmq_f32(vm, vld1q_f32(sc + s));
    float max = vmaxnmvq_f32(vm);
    for (; s < n; s++)
        max = sc[s] > max ? sc[s] : max;
    vm = vdupq_n_f32(max);
    for (s = 0; s + 4 <= n;) { /* up to 64 blocks of 4; those with a slow lane are redone after them */
        const int s0 = s;
        uint64_t redo = 0;
        for (int b = 0; b < 64 && s + 4 <= n; b++, s += 4) {
            uint32x4_t slow;
            const float32x4_t y = exp4_fast(vsubq_f32(vld1q_f32(sc + s), vm), &slow);
            if (vmaxvq_u32(slow))
                redo |= 1ull << b; /* sc keeps its score for the redo */
            else
                vst1q_f32(sc + s, y);
        }
        for (; redo; redo &= redo - 1) {
            float *r = sc + s0 + 4 * __builtin_ctzll(redo);
            vst1q_f32(r, exp4_exact(vsubq_f32(vld1q_f32(r), vm)));
        }
    }
    if (s < n) { /* the last 1-3: the same lanes through a buffer; padding with max gives exp(0) */
        float t[4] = {max, max, max, max};
        for (int r = s; r < n; r++)
            t[r - s] = sc[r];
        vst1q_f32(t, exp4_exact(vsubq_f32(vld1q_f32(t), vm)));
        for (int r = s; r < n; r++)
            sc[r] = t[r - s];
    }
}

static void divide_head(int n, float *sc, float sum)
{
    const float32x4_t vs = vdupq_n_f32(sum);
    int s = 0;
    for (; s + 4 <= n; s += 4)
        vst1q_f32(sc + s, vdivq_f32(vld1q_f32(sc + s), vs));
    for (; s < n; s++)
        sc[s] /= sum;
}

/* Softmax of nq heads' n scores (rows score_stride apart), as ref does each: max, exp(x - max), sum
 * in position order, divide. The sums of 4 heads run side by side, one lane per head, from 4x4
 * transposes of their exps: each lane still adds its own head's values in position order, but four
 * add chains are in flight instead of one (a head's chain alone is n dependent adds). */
static void softmax_heads(int nq, int n, float *scores, size_t score_stride)
{
    for (int j = 0; j < nq; j++)
        exp_head(n, scores + (size_t)j * score_stride);
    int j = 0;
    for (; j + 4 <= nq; j += 4) {
        float *sc[4];
        for (int h = 0; h < 4; h++)
            sc[h] = scores + (size_t)(j + h) * score_stride;
        float32x4_t acc = vdupq_n_f32(0.0f);
        int s = 0;
        for (; s + 4 <= n; s += 4) {
            float32x4_t t[4];
            for (int h = 0; h < 4; h++)
                t[h] = vld1q_f32(sc[h] + s);
            transpose4(t); /* t[e] lane h = head j+h's exp at position s+e */
            acc = vaddq_f32(vaddq_f32(vaddq_f32(vaddq_f32(acc, t[0]), t[1]), t[2]), t[3]);
        }
        float sum[4];
        vst1q_f32(sum, acc);
        for (int h = 0; h < 4; h++) {
            for (int r = s; r < n; r++)
                sum[h] += sc[h][r];
            divide_head(n, sc[h], sum[h]);
        }
    }
    for (; j < nq; j++) {
        float *sc = scores + (size_t)j * score_stride, sum = 0.0f;
        for (int s = 0; s < n; s++)
            sum += sc[s];
        divide_head(n, sc, sum);
    }
}

/* out[0..hd) += sum over positions [s0, s1) of p_s v_s (out = that sum when first), per element in
 * position order, multiply then add; 64 elements (16 independent add chains: 16 accumulators and 8
 * loaded values fit the 32 registers) per pass over the positions, then 32, then 4 at a time. */
static void values_range(int hd, int s0, int s1, const float *p, const float *v, size_t stride, float *out,
                         int first)
{
    int i = 0;
    for (; i + 64 <= hd; i += 64) {
        float32x4_t a[16];
        for (int r = 0; r < 16; r++)
            a[r] = first ? vdupq_n_f32(0.0f) : vld1q_f32(out + i + 4 * r);
        for (int s = s0; s < s1; s++) {
            const float *vs = v + (size_t)s * stride + i;
            const float32x4_t ps = vdupq_n_f32(p[s]);
            for (int r = 0; r < 16; r++)
                a[r] = vaddq_f32(a[r], vmulq_f32(ps, vld1q_f32(vs + 4 * r)));
        }
        for (int r = 0; r < 16; r++)
            vst1q_f32(out + i + 4 * r, a[r]);
    }
    for (; i + 32 <= hd; i += 32) {
        float32x4_t a[8];
        for (int r = 0; r < 8; r++)
            a[r] = first ? vdupq_n_f32(0.0f) : vld1q_f32(out + i + 4 * r);
        for (int s = s0; s < s1; s++) {
            const float *vs = v + (size_t)s * stride + i;
            const float32x4_t ps = vdupq_n_f32(p[s]);
            for (int r = 0; r < 8; r++)
                a[r] = vaddq_f32(a[r], vmulq_f32(ps, vld1q_f32(vs + 4 * r)));
        }
        for (int r = 0; r < 8; r++)
            vst1q_f32(out + i + 4 * r, a[r]);
    }
    for (; i < hd; i += 4) {
        float32x4_t a = first ? vdupq_n_f32(0.0f) : vld1q_f32(out + i);
        for (int s = s0; s < s1; s++)
            a = vaddq_f32(a, vmulq_f32(vdupq_n_f32(p[s]), vld1q_f32(v + (size_t)s * stride + i)));
        vst1q_f32(out + i, a);
    }
}

/* out_j = sum_s p_js v_s for nq heads sharing v. Positions go in chunks of ~16 KB of values, every
 * head taking a chunk before the next is read, so the group's heads read v from L1 instead of each
 * streaming all of it from L2 (or DRAM); each head's sums carry over from chunk to chunk (through
 * out, stored and reloaded exactly), so every element is still summed in position order. */
static void values_heads(int hd, int nq, int n, const float *scores, size_t score_stride, const float *v,
                         size_t stride, float *out)
{
    const int chunk = 4096 / hd > 16 ? 4096 / hd : 16;
    for (int s0 = 0; s0 < n; s0 += chunk) {
        const int s1 = n - s0 < chunk ? n : s0 + chunk;
        for (int j = 0; j < nq; j++)
            values_range(hd, s0, s1, scores + (size_t)j * score_stride, v, stride, out + (size_t)j * hd, s0 == 0);
    }
}

/* At decode the cache rows are usually in no cache: the token's weight stream (hundreds of MB) went
 * through them since this layer last read its rows, and one KV head's rows are `stride` floats apart,
 * which the hardware prefetchers follow late. So the keys are prefetched this many positions ahead of
 * the score pass, and each chunk's values while its scores are computed (64-byte lines, PRFM PLDL1KEEP). */
#define ATTN_PREFETCH_AHEAD 16

/* Rows [s0, s1), 4 lines (256 bytes) per step: for the usual head of 64 one step a row (a PRFM past a
 * row's end is harmless: it never faults). Inline asm, not __builtin_prefetch: GCC 12 deletes or
 * hoists the builtin's loops as side-effect free (this loop written with the builtin compiled to no
 * PRFM at all at -O3); tests/test_kernels_neon_attn.py checks the object holds them. */
#define PRFM_256B(p) \
    __asm__ volatile("prfm pldl1keep, [%0]\n\tprfm pldl1keep, [%0, #64]\n\t" \
                     "prfm pldl1keep, [%0, #128]\n\tprfm pldl1keep, [%0, #192]" : : "r"(p))

static inline void prefetch_rows(const float *base, size_t stride, int hd, int s0, int s1)
{
    for (int s = s0; s < s1; s++) {
        const float *row = base + (size_t)s * stride;
        for (int i = 0; i < hd; i += 64)
            PRFM_256B(row + i);
    }
}

void elk_attend_neon(int hd, int nq, int n, const float *q, const float *k, const float *v, size_t stride,
                     float scale, float *scores, size_t score_stride, float *out)
{
    if (hd % 4 != 0 || hd > ATTN_HD_MAX || n < 1) { /* no head size in use is, and n >= 1 at every step;
                                                      * ref's loops then (n = 0: out = zeros) */
        elk_kernels_ref.attend(hd, nq, n, q, k, v, stride, scale, scores, score_stride, out);
        return;
    }
    prefetch_rows(k, stride, hd, 0, ATTN_PREFETCH_AHEAD < n ? ATTN_PREFETCH_AHEAD : n);
    for (int s = 0; s < n; s += 8) {
        const int ahead = s + ATTN_PREFETCH_AHEAD, end = s + 8 < n ? s + 8 : n;
        prefetch_rows(k, stride, hd, ahead, ahead + 8 < n ? ahead + 8 : n);
        prefetch_rows(v, stride, hd, s, end);
        if (end - s == 8)
            scores8_full(hd, nq, s, q, k, stride, scale, scores, score_stride);
        else
            scores8_part(hd, nq, s, end - s, q, k, stride, scale, scores, score_stride);
    }
    softmax_heads(nq, n, scores, score_stride);
    values_heads(hd, nq, n, scores, score_stride, v, stride, out);
}

/* ---------------------------------------------------------------------------------------------
 * SwiGLU: g = g / (1 + exp(-g)) * u, the same three roundings as ref. */

void elk_swiglu_neon(float *g, const float *u, int n)
{
    int i = 0;
    const float32x4_t one = vdupq_n_f32(1.0f);
    while (i + 4 <= n) { /* up to 64 blocks of 4; those with a slow exp lane are redone after them */
        const int i0 = i;
        uint64_t redo = 0;
        for (int b = 0; b < 64 && i + 4 <= n; b++, i += 4) {
            const float32x4_t gv = vld1q_f32(g + i);
            uint32x4_t slow;
            const float32x4_t e = exp4_fast(vnegq_f32(gv), &slow);
            if (vmaxvq_u32(slow))
                redo |= 1ull << b; /* g keeps its input for the redo */
            else
                vst1q_f32(g + i, vmulq_f32(vdivq_f32(gv, vaddq_f32(one, e)), vld1q_f32(u + i)));
        }
        for (; redo; redo &= redo - 1) {
            const int r = i0 + 4 * __builtin_ctzll(redo);
            const float32x4_t gv = vld1q_f32(g + r);
            const float32x4_t e = exp4_exact(vnegq_f32(gv));
            vst1q_f32(g + r, vmulq_f32(vdivq_f32(gv, vaddq_f32(one, e)), vld1q_f32(u + r)));
        }
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + (float)exp((double)-g[i])) * u[i];
}

#else /* ARMv7: see the header; the translation unit must not be empty */
typedef int elk_neon_attn_armv7_uses_ref;
#endif
