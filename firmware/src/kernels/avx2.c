/* AVX2 + FMA + F16C kernels: the same table as ref.c, tuned for x86-64 decode (memory-bound GEMV)
 * and batched prefill (register-tiled int8 GEMM). Integer block sums equal ref.c exactly; float
 * accumulation order differs (8 lanes, then a horizontal sum), so float results match within rounding.
 * When the board's flags target AVX-VNNI / AVX-512 VNNI (the host board builds -march=native), the
 * int8 products use vpdpbusd and the GEMV/GEMM switch to 512-bit registers; the plain-AVX2 build
 * keeps maddubs (tests run both). Not here: threading (the caller splits rows, see model/linear.c) or OS code. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "avx2_common.h"


/* ---------------------------------------------------------------------------------------------
 * Small helpers */

/* 32 signed int8 weights of a Q4_0 block in activation order: nibbles lo -> [0,16), hi -> [16,32). */
ELK_INLINE __m256i unpack_q4_0(const elk_block_q4_0 *b)
{
    const __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    const __m256i nib = _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
    return _mm256_sub_epi8(nib, _mm256_set1_epi8(8));
}

/* Eight int32 partial sums of w[i] * x[i] over 32 int8 pairs. Both must lie in [-127, 127] for
 * the maddubs path (|w| as unsigned times sign-adjusted x; pairs stay below int16 saturation):
 * quantizers here and in ggml never produce -128. */
ELK_INLINE __m256i dot_i8x32(__m256i w, __m256i x)
{
    const __m256i aw = _mm256_sign_epi8(w, w);
    const __m256i sx = _mm256_sign_epi8(x, w);
#if defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sx);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
#endif
}

/* ---------------------------------------------------------------------------------------------
 * Q8_0 activation quantizer: bytes identical to quantize_q8_0_ref (d = amax / 127 computed in
 * scalar float, q = roundf(x * id) with halves rounded away from zero). */

ELK_INLINE __m256 round_half_away(__m256 v)
{
    /* trunc(v) + sign(v) * (|v - trunc(v)| >= 0.5); v - trunc(v) is exact for |v| < 2^23. */
    const __m256 sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0f));
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(v, t));
    const __m256 up = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                                    _mm256_or_ps(_mm256_set1_ps(1.0f), sign));
    return _mm256_add_ps(t, up);
}

static void quantize_q8_0_avx2(const float *x, elk_block_q8_0 *y, int n)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int i = 0; i < n / ELK_QK; i++) {
        const float *xb = x + i * ELK_QK;
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(xb + 8 * k);
            m = _mm256_max_ps(m, _mm256_and_ps(v[k], abs_mask));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        /* F16C rounds as elk_fp32_to_fp16 does (to nearest even, subnormals, overflow to inf);
         * only its NaN encoding differs, so a NaN scale takes the reference conversion */
        y[i].d = d == d ? (elk_fp16)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT) : elk_fp32_to_fp16(d);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v[k], vid)));
        /* packs interleave 128-bit lanes; the permute restores element order. */
        const __m256i q01 = _mm256_packs_epi32(q[0], q[1]);
        const __m256i q23 = _mm256_packs_epi32(q[2], q[3]);
        const __m256i q8 = _mm256_packs_epi16(q01, q23);
        const __m256i ord = _mm256_permutevar8x32_epi32(q8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, ord);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Dot products (one weight row x one activation row): the decode GEMV. Memory-bound, so two
 * blocks per step keep enough loads in flight; the tail block is handled by the same body. */

static float dot_f32_avx2(int n, const void *w, const void *x)
{
    const float *a = w, *b = x;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++)
            acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * k), _mm256_loadu_ps(b + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc[0]);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

static float dot_f16_avx2(int n, const void *w, const void *x)
{
    const elk_fp16 *a = w;
    const float *b = x;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            const __m256 wa = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8 * k)));
            acc[k] = _mm256_fmadd_ps(wa, _mm256_loadu_ps(b + i + 8 * k), acc[k]);
        }
    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))),
                                 _mm256_loadu_ps(b + i), acc[0]);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++)
        sum += fp16(a[i]) * b[i];
    return sum;
}

/* Decode GEMV for F16 and F32 weights (one token, float32 activations): rows r and r + half of the
 * range together, two sequential streams where the dot loop read one, every weight line prefetched
 * 4 KB ahead. Each row keeps the dot kernel's own four accumulators, 8-column tail, sums and scalar
 * tail, so every result equals dot_f16_avx2 / dot_f32_avx2 bit for bit (prefill, which loops over
 * the dot, and decode agree; thread splits do not change anything). TinyLlama f16, 1 thread: the dot
 * loop read 72% of the probe. */
#define GEMV_FLOAT_PREFETCH 4096

ELK_INLINE __m256 load8_w(int f16, const void *w, int i)
{
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const elk_fp16 *)w + i)))
               : _mm256_loadu_ps((const float *)w + i);
}

ELK_INLINE float w_at(int f16, const void *w, int i)
{
    return f16 ? fp16(((const elk_fp16 *)w)[i]) : ((const float *)w)[i];
}

/* Rows w0 and (K == 2) w1 of n columns against x, as the dot kernel of their type sums them. */
ELK_INLINE void gemv_rows_float(int f16, int K, int n, const void *w0, const void *w1, const float *x, float *y0,
                                float *y1)
{
    const int esize = f16 ? 2 : 4;
    __m256 a[4], b[4];
    for (int k = 0; k < 4; k++)
        a[k] = b[k] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int l = 0; l < 32 * esize; l += 64) {
            _mm_prefetch((const char *)w0 + (size_t)i * esize + l + GEMV_FLOAT_PREFETCH, _MM_HINT_T0);
            if (K == 2)
                _mm_prefetch((const char *)w1 + (size_t)i * esize + l + GEMV_FLOAT_PREFETCH, _MM_HINT_T0);
        }
        for (int k = 0; k < 4; k++) {
            const __m256 xv = _mm256_loadu_ps(x + i + 8 * k);
            a[k] = _mm256_fmadd_ps(load8_w(f16, w0, i + 8 * k), xv, a[k]);
            if (K == 2)
                b[k] = _mm256_fmadd_ps(load8_w(f16, w1, i + 8 * k), xv, b[k]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        a[0] = _mm256_fmadd_ps(load8_w(f16, w0, i), _mm256_loadu_ps(x + i), a[0]);
        if (K == 2)
            b[0] = _mm256_fmadd_ps(load8_w(f16, w1, i), _mm256_loadu_ps(x + i), b[0]);
    }
    float s0 = hsum_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
    float s1 = K == 2 ? hsum_ps(_mm256_add_ps(_mm256_add_ps(b[0], b[1]), _mm256_add_ps(b[2], b[3]))) : 0.0f;
    for (; i < n; i++) {
        s0 += w_at(f16, w0, i) * x[i];
        if (K == 2)
            s1 += w_at(f16, w1, i) * x[i];
    }
    *y0 = s0;
    if (K == 2)
        *y1 = s1;
}

/* Prefill tile for F16/F32: 2 rows x 4 tokens, one accumulator each (8 independent FMA chains),
 * so every converted weight vector meets 4 tokens and every activation vector 2 rows: 8 FMAs per 2
 * conversions and 4 loads, where the dot loop paid a conversion and a load per FMA. The columns past
 * the last multiple of 8 are added one at a time. Each (row, token) has its own accumulator and
 * column order, whatever rows or tokens share its tile, so thread splits change nothing; it differs
 * from the dot kernel (four accumulators) only in float order. */
#if defined(__AVX512VL__)
#define TILE_ROWS 4 /* 16 accumulators: AVX-512 builds have 32 vector registers */
#else
#define TILE_ROWS 2
#endif

ELK_INLINE void tile_float(int f16, int R, int T, int n, const char *w, size_t row_bytes, const float *x,
                           size_t x_stride, float *y, int rows)
{
    __m256 acc[TILE_ROWS][4];
    for (int r = 0; r < TILE_ROWS; r++)
        for (int t = 0; t < 4; t++)
            acc[r][t] = _mm256_setzero_ps();
    const float *xt[4];
    for (int t = 0; t < 4; t++)
        xt[t] = (const float *)(const void *)((const char *)x + (size_t)(t < T ? t : 0) * x_stride);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv[TILE_ROWS];
        for (int r = 0; r < R; r++)
            wv[r] = load8_w(f16, w + (size_t)r * row_bytes, i);
        for (int t = 0; t < T; t++) {
            const __m256 xv = _mm256_loadu_ps(xt[t] + i);
            for (int r = 0; r < R; r++)
                acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float sum = hsum_ps(acc[r][t]);
            for (int c = i; c < n; c++)
                sum += w_at(f16, w + (size_t)r * row_bytes, c) * xt[t][c];
            y[(size_t)t * rows + r] = sum;
        }
}

/* gemm slot for F16/F32: one token takes the two-stream GEMV; a batch the 2 x 4 tiles. */
ELK_INLINE void gemm_float(int f16, int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                           size_t x_stride, int n_tok, float *y, int rows)
{
    const char *wb = w;
    if (n_tok == 1) {
        const int half = (r1 - r0) / 2;
        for (int r = r0; r < r0 + half; r++)
            gemv_rows_float(f16, 2, n, wb + (size_t)r * row_bytes, wb + (size_t)(r + half) * row_bytes, x, y + r,
                            y + r + half);
        if ((r1 - r0) % 2)
            gemv_rows_float(f16, 1, n, wb + (size_t)(r1 - 1) * row_bytes, NULL, x, y + r1 - 1, NULL);
        return;
    }
    for (int r = r0; r < r1; r += TILE_ROWS) {
        const int R = r1 - r >= TILE_ROWS ? TILE_ROWS : r1 - r;
        for (int t = 0; t < n_tok; t += 4) {
            const int T = n_tok - t >= 4 ? 4 : n_tok - t;
            const float *xt = (const float *)(const void *)((const char *)x + (size_t)t * x_stride);
            float *yt = y + (size_t)t * rows + r;
            if (R == TILE_ROWS && T == 4) /* constant shapes: the compiler keeps every chain in registers */
                tile_float(f16, TILE_ROWS, 4, n, wb + (size_t)r * row_bytes, row_bytes, xt, x_stride, yt, rows);
            else
                tile_float(f16, R, T, n, wb + (size_t)r * row_bytes, row_bytes, xt, x_stride, yt, rows);
        }
    }
}

static void gemm_f16_avx2(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x, size_t x_stride,
                          int n_tok, float *y, int rows)
{
    gemm_float(1, n, w, row_bytes, r0, r1, x, x_stride, n_tok, y, rows);
}

static void gemm_f32_avx2(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x, size_t x_stride,
                          int n_tok, float *y, int rows)
{
    gemm_float(0, n, w, row_bytes, r0, r1, x, x_stride, n_tok, y, rows);
}

static float dot_bf16_avx2(int n, const void *w, const void *x)
{
    const uint16_t *a = w;
    const float *b = x;
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(a + i)));
        acc = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(h, 16)), _mm256_loadu_ps(b + i), acc);
    }
    float sum = hsum_ps(acc);
    for (; i < n; i++) {
        uint32_t bits = (uint32_t)a[i] << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        sum += f * b[i];
    }
    return sum;
}

static float dot_q8_0_avx2(int n, const void *w, const void *x)
{
    const elk_block_q8_0 *a = w, *b = x;
    const int nb = n / ELK_QK;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m256i p0 = dot_i8x32(load_q8_0(a + i), load_q8_0(b + i));
        const __m256i p1 = dot_i8x32(load_q8_0(a + i + 1), load_q8_0(b + i + 1));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(fp16(a[i].d) * fp16(b[i].d)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(fp16(a[i + 1].d) * fp16(b[i + 1].d)), acc1);
    }
    for (; i < nb; i++) {
        const __m256i p = dot_i8x32(load_q8_0(a + i), load_q8_0(b + i));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(fp16(a[i].d) * fp16(b[i].d)), acc0);
    }
    return hsum_ps(_mm256_add_ps(acc0, acc1));
}

static float dot_q4_0_avx2(int n, const void *w, const void *x)
{
    const elk_block_q4_0 *a = w;
    const elk_block_q8_0 *b = x;
    const int nb = n / ELK_QK;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m256i p0 = dot_i8x32(unpack_q4_0(a + i), load_q8_0(b + i));
        const __m256i p1 = dot_i8x32(unpack_q4_0(a + i + 1), load_q8_0(b + i + 1));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(fp16(a[i].d) * fp16(b[i].d)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(fp16(a[i + 1].d) * fp16(b[i + 1].d)), acc1);
    }
    for (; i < nb; i++) {
        const __m256i p = dot_i8x32(unpack_q4_0(a + i), load_q8_0(b + i));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(fp16(a[i].d) * fp16(b[i].d)), acc0);
    }
    return hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* ---------------------------------------------------------------------------------------------
 * Batched prefill GEMM: Y[t * rows + r] = dot(W row r, X row t). A tile of R weight rows x T tokens
 * loads each weight block once and each activation block once and does R*T block products from
 * registers (R*T float accumulators + R weight vectors must fit the 16 ymm registers: 4x2 or 2x4
 * or 3x3). Weight bytes are streamed from memory once per T tokens instead of once per token. */

ELK_INLINE __m256i load_w(int wtype, const void *row, int i)
{
#if defined(__AVXVNNI__)
    if (wtype == ELK_TYPE_Q4_0)
        return unpack_q4_0_u((const elk_block_q4_0 *)row + i);
#endif
    return wtype == ELK_TYPE_Q4_0 ? unpack_q4_0((const elk_block_q4_0 *)row + i)
                                  : load_q8_0((const elk_block_q8_0 *)row + i);
}

ELK_INLINE float w_scale(int wtype, const void *row, int i)
{
    return wtype == ELK_TYPE_Q4_0 ? fp16(((const elk_block_q4_0 *)row)[i].d)
                                  : fp16(((const elk_block_q8_0 *)row)[i].d);
}

/* One R x T tile at weight rows r.., tokens t..; R, T are compile-time constants at each call. */
ELK_INLINE void gemm_tile(int wtype, int R, int T, int nb, const uint8_t *w, size_t row_bytes,
                          const uint8_t *x, size_t x_stride, float *y, int rows)
{
    __m256 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m256i wv[4];
        float dw[4];
#if defined(__AVXVNNI__)
        __m256i wfix[4];
#endif
        for (int r = 0; r < R; r++) {
            wv[r] = load_w(wtype, w + r * row_bytes, i);
            dw[r] = w_scale(wtype, w + r * row_bytes, i);
#if defined(__AVXVNNI__)
            /* Q8_0 weights meet activations offset to unsigned (x + 128), so each pair starts
             * from -128 * sum(w): sum(w x) exactly, one vpdpbusd per block pair. */
            if (wtype == ELK_TYPE_Q8_0)
                wfix[r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                           _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), wv[r]));
#endif
        }
        for (int t = 0; t < T; t++) {
            const elk_block_q8_0 *xb = (const elk_block_q8_0 *)(x + t * x_stride) + i;
            const __m256i xv = load_q8_0(xb);
            const float dx = fp16(xb->d);
#if defined(__AVXVNNI__)
            if (wtype == ELK_TYPE_Q4_0) {
                /* Unsigned nibbles u = q + 8 straight into vpdpbusd, which starts from -8 * sum(x):
                 * sum((u - 8) x) exactly, one instruction per block pair and no sign fix-up. */
                const __m256i neg8sum = _mm256_sub_epi32(
                    _mm256_setzero_si256(), _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), xv));
                for (int r = 0; r < R; r++) {
                    const __m256 p = _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(neg8sum, wv[r], xv));
                    acc[r][t] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw[r] * dx), acc[r][t]);
                }
                continue;
            }
            if (wtype == ELK_TYPE_Q8_0) {
                const __m256i xu = _mm256_xor_si256(xv, _mm256_set1_epi8((char)0x80));
                for (int r = 0; r < R; r++) {
                    const __m256 p = _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(wfix[r], xu, wv[r]));
                    acc[r][t] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw[r] * dx), acc[r][t]);
                }
                continue;
            }
#endif
            for (int r = 0; r < R; r++) {
                const __m256 p = _mm256_cvtepi32_ps(dot_i8x32(wv[r], xv));
                acc[r][t] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw[r] * dx), acc[r][t]);
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++)
            y[t * rows + r] = hsum_ps(acc[r][t]);
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* ---------------------------------------------------------------------------------------------
 * The same tile on 512-bit registers, compiled only when the board's flags target AVX-512 VNNI
 * (the host board builds with -march=native). One zmm holds two consecutive blocks of a row
 * (blocks i and i + 1, activation order), so each vpdpbusd covers 64 multiply-adds. Integer block
 * sums are still exact; only the float accumulation order differs from ref. */
#define ELK_GEMM_512 1

ELK_INLINE __m512i w_pair(int wtype, const void *row, int i, int two)
{
    const __m256i lo = wtype == ELK_TYPE_Q4_0 ? unpack_q4_0_u((const elk_block_q4_0 *)row + i)
                                              : load_q8_0((const elk_block_q8_0 *)row + i);
    __m256i hi = _mm256_setzero_si256();
    if (two)
        hi = wtype == ELK_TYPE_Q4_0 ? unpack_q4_0_u((const elk_block_q4_0 *)row + i + 1)
                                    : load_q8_0((const elk_block_q8_0 *)row + i + 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* [a x 8 | b x 8] */
ELK_INLINE __m512 scale_pair(float a, float b)
{
    return _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(_mm256_castps_si256(_mm256_set1_ps(a))),
                                                  _mm256_castps_si256(_mm256_set1_ps(b)), 1));
}

ELK_INLINE void gemm_tile512(int wtype, int R, int T, int nb, const uint8_t *w, size_t row_bytes,
                             const uint8_t *x, size_t x_stride, float *y, int rows)
{
    __m512 acc[4][16];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i += 2) {
        const int two = i + 1 < nb; /* an odd last block rides alone with a zero upper half */
        __m512i wv[4], wfix[4];
        __m512 dw[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *row = w + r * row_bytes;
            wv[r] = w_pair(wtype, row, i, two);
            dw[r] = scale_pair(w_scale(wtype, row, i), two ? w_scale(wtype, row, i + 1) : 0.0f);
            if (wtype == ELK_TYPE_Q8_0) /* -128 * sum(w): pairs with x + 128 below */
                wfix[r] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                           _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), wv[r]));
        }
        for (int t = 0; t < T; t++) {
            const elk_block_q8_0 *xb = (const elk_block_q8_0 *)(x + t * x_stride) + i;
            const __m512i xv = _mm512_inserti64x4(_mm512_castsi256_si512(load_q8_0(xb)),
                                                  two ? load_q8_0(xb + 1) : _mm256_setzero_si256(), 1);
            const __m512 dx = scale_pair(fp16(xb->d), two ? fp16(xb[1].d) : 0.0f);
            if (wtype == ELK_TYPE_Q4_0) {
                const __m512i neg8sum = _mm512_sub_epi32(
                    _mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), xv));
                for (int r = 0; r < R; r++) {
                    const __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(neg8sum, wv[r], xv));
                    acc[r][t] = _mm512_fmadd_ps(p, _mm512_mul_ps(dw[r], dx), acc[r][t]);
                }
            } else {
                const __m512i xu = _mm512_xor_si512(xv, _mm512_set1_epi8((char)0x80));
                for (int r = 0; r < R; r++) {
                    const __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(wfix[r], xu, wv[r]));
                    acc[r][t] = _mm512_fmadd_ps(p, _mm512_mul_ps(dw[r], dx), acc[r][t]);
                }
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++)
            y[t * rows + r] = _mm512_reduce_add_ps(acc[r][t]);
}
/* Prefill (16+ tokens) with the weights transposed per 16-row tile: lane r of a zmm holds 4
 * consecutive weight bytes of row r as unsigned (Q4_0 nibbles as stored, Q8_0 + 128), so one
 * vpdpbusd with 4 broadcast activation bytes advances 16 rows of one token, and a block's exact
 * integer sum sits in one lane after 8 of them (seeded with -8 or -128 x the activations' block
 * sum); convert and scale are then paid once per block for 16 rows instead of per block pair of
 * each row. The image format is unchanged: the transposed tile (16 rows x all blocks, ~100 KB at
 * 5632 columns) is rebuilt once per 64 tokens and stays in L2. Measured per core, TinyLlama pp64
 * CPU per token: Q4_0 10.7 -> 6.2 ms, Q8_0 9.8 -> 7.0 ms (4 x 16 row-pair tiles before). Blocks
 * are added in ref.c's order and rounding, so each result equals the reference dot bit for bit
 * (an FMA here flipped a Q8_0 activation code in the 1e-5 llama.cpp golden test). */
#define TG_ROWS 16
#define TG_TOKENS 64  /* tokens per transposed tile */
#define TG_T 16       /* token sub-tile: 16 accumulators + 8 weight registers */
#define TG_MAX_BLOCKS 192 /* rows up to 6144 columns; wider ones take the row-pair tiles */

typedef struct {
    __m512i w[TG_MAX_BLOCKS][8]; /* [block][k/4] lane r: weight bytes k..k+3 of row r, unsigned */
    __m512 d[TG_MAX_BLOCKS];     /* lane r: row r's block scale */
    int32_t fix[TG_TOKENS][TG_MAX_BLOCKS]; /* -8 (Q4_0) or -128 (Q8_0) x sum of the block's x bytes */
    float dx[TG_TOKENS][TG_MAX_BLOCKS];
} tgemm_scratch;

static void tgemm_transpose(int wtype, int R, int nb, const uint8_t *w, size_t row_bytes, tgemm_scratch *s)
{
    if (R < TG_ROWS) {
        memset(s->w, 0, sizeof(__m512i) * 8 * (size_t)nb);
        memset(s->d, 0, sizeof(__m512) * (size_t)nb);
    }
    for (int r = 0; r < R; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        for (int i = 0; i < nb; i++) {
            int32_t u[8];
            if (wtype == ELK_TYPE_Q4_0) {
                _mm256_storeu_si256((__m256i *)u, _mm256_add_epi8(unpack_q4_0((const elk_block_q4_0 *)row + i),
                                                                  _mm256_set1_epi8(8)));
            } else {
                _mm256_storeu_si256((__m256i *)u, _mm256_xor_si256(load_q8_0((const elk_block_q8_0 *)row + i),
                                                                   _mm256_set1_epi8((char)0x80)));
            }
            int32_t *lane = (int32_t *)s->w[i] + r;
            for (int g = 0; g < 8; g++)
                lane[16 * g] = u[g];
            ((float *)&s->d[i])[r] = w_scale(wtype, row, i);
        }
    }
}

static void tgemm_tokens(int wtype, int T, int nb, const uint8_t *x, size_t x_stride, tgemm_scratch *s)
{
    for (int t = 0; t < T; t++) {
        const elk_block_q8_0 *xb = (const elk_block_q8_0 *)(x + (size_t)t * x_stride);
        for (int i = 0; i < nb; i++) {
            int sum = 0;
            for (int k = 0; k < ELK_QK; k++)
                sum += xb[i].qs[k];
            s->fix[t][i] = (wtype == ELK_TYPE_Q4_0 ? -8 : -128) * sum;
            s->dx[t][i] = fp16(xb[i].d);
        }
    }
}

/* T (<= 16) tokens starting at t0 of the prepared chunk against the transposed R-row tile. */
ELK_INLINE void tgemm_tile(int T, int nb, const tgemm_scratch *s, int t0, const uint8_t *x, size_t x_stride,
                           float *y, int rows, __mmask16 mask)
{
    __m512 acc[TG_T];
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m512i wv[8];
        for (int g = 0; g < 8; g++)
            wv[g] = _mm512_load_si512(&s->w[i][g]);
        const __m512 dw = s->d[i];
        for (int t = 0; t < T; t++) {
            const int32_t *xq = (const int32_t *)((const elk_block_q8_0 *)(x + (size_t)t * x_stride) + i)->qs;
            __m512i p = _mm512_set1_epi32(s->fix[t0 + t][i]);
            for (int g = 0; g < 8; g++) {
                int32_t xg;
                memcpy(&xg, xq + g, 4);
                p = _mm512_dpbusd_epi32(p, wv[g], _mm512_set1_epi32(xg));
            }
            /* (float)isum * (dw * dx), rounded, then added: ref.c's dot order exactly, so each row
             * equals the reference dot bit for bit (no FMA here on purpose) */
            const __m512 prod = _mm512_mul_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, _mm512_set1_ps(s->dx[t0 + t][i])));
            acc[t] = _mm512_add_ps(acc[t], prod);
        }
    }
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * rows, mask, acc[t]);
}

/* Tokens [0, n_tok rounded down to 16) of rows [r0, r1); returns how many tokens it did. */
static __attribute__((noinline)) int gemm_t512(int wtype, int nb, const uint8_t *w, size_t row_bytes, int r0,
                                               int r1, const uint8_t *x, size_t x_stride, int n_tok, float *y,
                                               int rows)
{
    const int done = n_tok - n_tok % TG_T;
    if (nb > TG_MAX_BLOCKS || done == 0)
        return 0;
    tgemm_scratch s; /* ~210 KB of stack, like the row-pair tiles': host threads only */
    for (int tc = 0; tc < done; tc += TG_TOKENS) {
        const int tn = done - tc < TG_TOKENS ? done - tc : TG_TOKENS;
        const uint8_t *xc = x + (size_t)tc * x_stride;
        tgemm_tokens(wtype, tn, nb, xc, x_stride, &s);
        for (int r = r0; r < r1; r += TG_ROWS) {
            const int R = r1 - r < TG_ROWS ? r1 - r : TG_ROWS;
            tgemm_transpose(wtype, R, nb, w + (size_t)r * row_bytes, row_bytes, &s);
            for (int t = 0; t < tn; t += TG_T)
                tgemm_tile(TG_T, nb, &s, t, xc + (size_t)t * x_stride, x_stride, y + (size_t)(tc + t) * rows + r,
                           rows, (__mmask16)((1u << R) - 1u));
        }
    }
    return done;
}

#define GEMM_TILE gemm_tile512
#define GEMM_TOKENS 16 /* 4 x 16 tiles: each unpacked weight pair serves 16 tokens; the accumulators
                        * spill to L1, still a win (4x4: 79, 4x8: 86, 4x16: 94, 4x32: 96 GMAC/s) */
#else
#define GEMM_TILE gemm_tile
#define GEMM_TOKENS 4

/* Prefill (4+ tokens) on 256-bit registers with the weights transposed per 8-row tile, as gemm_t512
 * does with 16: lane r of a ymm holds 4 consecutive weight bytes of row r, so 4 broadcast activation
 * bytes advance 8 rows of one token per step, and after 8 steps a block's exact integer sum sits in
 * one lane per row. A step is one vpdpbusd with AVX-VNNI (unsigned weights: Q4_0 nibbles, Q8_0 + 128,
 * seeded with -8 / -128 x the activations' block sum), else maddubs + madd: Q4_0 nibbles as they are
 * (2 x 15 x 127 < 32767: no saturation), Q8_0 as |w| against sign(x, w) (2 x 128 x 127 < 32767; the
 * Q8_0 quantizer never writes -128, whose sign flip would wrap). Blocks are added in ref.c's order and
 * rounding, so each result equals the reference dot bit for bit. The 4 x 4 tiles pay unpack,
 * convert, scale and FMA per block pair of every (row, token). TinyLlama pp64, 1 thread, a
 * -march=x86-64-v3 build: see docs/performance.md. */
#define TG2_ROWS 8
#define TG2_TOKENS 64 /* tokens per transposed tile */
#define TG2_T 4       /* token sub-tile */
#define TG2_MAX_BLOCKS 192 /* rows up to 6144 columns; wider ones take the 4 x 4 tiles */

#if defined(__AVXVNNI__)
#define TG2_SIGNED 0
#else
#define TG2_SIGNED 1 /* Q8_0 through maddubs: |w| in w, the signed bytes in ws */
#endif

typedef struct {
    __m256i w[TG2_MAX_BLOCKS][8]; /* [block][k/4] lane r: weight bytes k..k+3 of row r, unsigned */
#if TG2_SIGNED
    __m256i ws[TG2_MAX_BLOCKS][8]; /* Q8_0: the signed bytes, for sign(x, w) */
#endif
    __m256 d[TG2_MAX_BLOCKS];     /* lane r: row r's block scale */
    int32_t fix[TG2_TOKENS][TG2_MAX_BLOCKS]; /* -8 (Q4_0) or -128 (Q8_0, VNNI) x sum of the x bytes */
    float dx[TG2_TOKENS][TG2_MAX_BLOCKS];
} tgemm2_scratch;

/* The 32 bytes of block i of a row as the tile stores them (and the signed ones for maddubs Q8_0). */
ELK_INLINE __m256i tg2_bytes(int wtype, const uint8_t *row, int i, __m256i *sgn)
{
    if (wtype == ELK_TYPE_Q4_0)
        return unpack_q4_0_u((const elk_block_q4_0 *)(const void *)row + i);
    const __m256i q = load_q8_0((const elk_block_q8_0 *)(const void *)row + i);
    *sgn = q;
    return TG2_SIGNED ? _mm256_abs_epi8(q) : _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
}

static void tgemm2_prepare(int wtype, int R, int nb, const uint8_t *w, size_t row_bytes, int T, const uint8_t *x,
                           size_t x_stride, tgemm2_scratch *s)
{
    if (R < TG2_ROWS) {
        memset(s->w, 0, sizeof(__m256i) * 8 * (size_t)nb);
        memset(s->d, 0, sizeof(__m256) * (size_t)nb);
#if TG2_SIGNED
        memset(s->ws, 0, sizeof(__m256i) * 8 * (size_t)nb);
#endif
    }
    for (int r = 0; r < R; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        for (int i = 0; i < nb; i++) {
            int32_t u[8], v[8];
            __m256i sgn = _mm256_setzero_si256();
            _mm256_storeu_si256((__m256i *)u, tg2_bytes(wtype, row, i, &sgn));
            _mm256_storeu_si256((__m256i *)v, sgn);
            int32_t *lane = (int32_t *)&s->w[i][0] + r;
            for (int g = 0; g < 8; g++)
                lane[8 * g] = u[g];
#if TG2_SIGNED
            int32_t *slane = (int32_t *)&s->ws[i][0] + r;
            for (int g = 0; g < 8; g++)
                slane[8 * g] = v[g];
#endif
            ((float *)&s->d[i])[r] = w_scale(wtype, row, i);
        }
    }
    const int offset = wtype == ELK_TYPE_Q4_0 ? -8 : TG2_SIGNED ? 0 : -128;
    for (int t = 0; t < T; t++) {
        const elk_block_q8_0 *xb = (const elk_block_q8_0 *)(const void *)(x + (size_t)t * x_stride);
        for (int i = 0; i < nb; i++) {
            int sum = 0;
            for (int k = 0; k < ELK_QK; k++)
                sum += xb[i].qs[k];
            s->fix[t][i] = offset * sum;
            s->dx[t][i] = fp16(xb[i].d);
        }
    }
}

/* p + the 4-byte dot products of one step: weights (unsigned) wv, broadcast activation bytes xg. */
ELK_INLINE __m256i tg2_step(int wtype, __m256i p, const tgemm2_scratch *s, int i, int g, int32_t xg)
{
    const __m256i wv = _mm256_load_si256(&s->w[i][g]), xv = _mm256_set1_epi32(xg);
#if defined(__AVXVNNI__)
    (void)wtype;
    return _mm256_dpbusd_avx_epi32(p, wv, xv);
#else
    const __m256i xs = wtype == ELK_TYPE_Q4_0 ? xv : _mm256_sign_epi8(xv, _mm256_load_si256(&s->ws[i][g]));
    return _mm256_add_epi32(p, _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xs), _mm256_set1_epi16(1)));
#endif
}

/* T (<= 4) tokens starting at t0 of the prepared chunk against the transposed R-row tile. */
ELK_INLINE void tgemm2_tile(int wtype, int T, int nb, const tgemm2_scratch *s, int t0, const uint8_t *x,
                            size_t x_stride, float *y, int rows, __m256i mask)
{
    __m256 acc[TG2_T];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const __m256 dw = s->d[i];
        for (int t = 0; t < T; t++) {
            const int32_t *xq = (const int32_t *)(const void *)((const elk_block_q8_0 *)(const void *)
                                                                (x + (size_t)t * x_stride) + i)->qs;
            __m256i p = _mm256_set1_epi32(s->fix[t0 + t][i]);
            for (int g = 0; g < 8; g++) {
                int32_t xg;
                memcpy(&xg, xq + g, 4);
                p = tg2_step(wtype, p, s, i, g, xg);
            }
            /* (float)isum * (dw * dx), rounded, then added: ref.c's order (no FMA on purpose) */
            const __m256 prod = _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw, _mm256_set1_ps(s->dx[t0 + t][i])));
            acc[t] = _mm256_add_ps(acc[t], prod);
        }
    }
    for (int t = 0; t < T; t++)
        _mm256_maskstore_ps(y + (size_t)t * rows, mask, acc[t]);
}

/* Tokens [0, n_tok rounded down to 4) of rows [r0, r1); returns how many tokens it did. */
static __attribute__((noinline)) int gemm_t256(int wtype, int nb, const uint8_t *w, size_t row_bytes, int r0,
                                               int r1, const uint8_t *x, size_t x_stride, int n_tok, float *y,
                                               int rows)
{
    const int done = n_tok - n_tok % TG2_T;
    if (nb > TG2_MAX_BLOCKS || done == 0)
        return 0;
    tgemm2_scratch s; /* ~150-200 KB of stack: host threads only, as gemm_t512's */
    for (int tc = 0; tc < done; tc += TG2_TOKENS) {
        const int tn = done - tc < TG2_TOKENS ? done - tc : TG2_TOKENS;
        const uint8_t *xc = x + (size_t)tc * x_stride;
        for (int r = r0; r < r1; r += TG2_ROWS) {
            const int R = r1 - r < TG2_ROWS ? r1 - r : TG2_ROWS;
            tgemm2_prepare(wtype, R, nb, w + (size_t)r * row_bytes, row_bytes, r == r0 ? tn : 0, xc, x_stride, &s);
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(R), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            for (int t = 0; t < tn; t += TG2_T)
                tgemm2_tile(wtype, TG2_T, nb, &s, t, xc + (size_t)t * x_stride, x_stride,
                            y + (size_t)(tc + t) * rows + r, rows, mask);
        }
    }
    return done;
}
#endif

/* One row tile against every token: the tile's weight blocks (R x ~1 KB) stay in L1 while the
 * activations (n_tok x ~2 KB, in L2) stream past, so each weight byte comes from memory once. */
ELK_INLINE void gemm_rows(int wtype, int R, int nb, const uint8_t *w, size_t row_bytes, const uint8_t *x,
                          size_t x_stride, int n_tok, float *y, int rows)
{
    int t = 0;
    for (; t + GEMM_TOKENS <= n_tok; t += GEMM_TOKENS)
        GEMM_TILE(wtype, R, GEMM_TOKENS, nb, w, row_bytes, x + (size_t)t * x_stride, x_stride, y + (size_t)t * rows,
                  rows);
#if defined(ELK_GEMM_512)
    for (; t + 8 <= n_tok; t += 8)
        GEMM_TILE(wtype, R, 8, nb, w, row_bytes, x + (size_t)t * x_stride, x_stride, y + (size_t)t * rows, rows);
#endif
    for (; t + 4 <= n_tok; t += 4)
        GEMM_TILE(wtype, R, 4, nb, w, row_bytes, x + (size_t)t * x_stride, x_stride, y + (size_t)t * rows, rows);
    const uint8_t *xt = x + (size_t)t * x_stride;
    float *yt = y + (size_t)t * rows;
    switch (n_tok - t) {
    case 3: GEMM_TILE(wtype, R, 3, nb, w, row_bytes, xt, x_stride, yt, rows); break;
    case 2: GEMM_TILE(wtype, R, 2, nb, w, row_bytes, xt, x_stride, yt, rows); break;
    case 1: GEMM_TILE(wtype, R, 1, nb, w, row_bytes, xt, x_stride, yt, rows); break;
    default: break;
    }
}

/* Tiles of 4 rows x 4 tokens with 256-bit registers (measured best of 2..8 x 2..8 here: the 16
 * accumulators spill a little, to L1), 4 x 16 with 512-bit ones; single rows at the edge. One
 * token (decode) takes a GEMV instead: interleaving 4 row streams defeats the hardware prefetcher
 * once the matrix is out of L2 (measured 7 GB/s vs 16 GB/s per core for one sequential stream). */
ELK_INLINE void gemm_q_avx2(int wtype, int n, const void *w, size_t row_bytes, int r0, int r1,
                            const void *x, size_t x_stride, int n_tok, float *y, int rows)
{
    const int nb = n / ELK_QK;
    const uint8_t *wb = w, *xb = x;
    if (n_tok == 1) {
        if (elk_gemv_avx2(wtype, nb, wb, row_bytes, r0, r1, x, y))
            return;
        float (*dot)(int, const void *, const void *) = wtype == ELK_TYPE_Q4_0 ? dot_q4_0_avx2 : dot_q8_0_avx2;
        for (int r = r0; r < r1; r++)
            y[r] = dot(n, wb + (size_t)r * row_bytes, x);
        return;
    }
#if defined(ELK_GEMM_512)
    const int prepared = gemm_t512(wtype, nb, wb, row_bytes, r0, r1, xb, x_stride, n_tok, y, rows);
#else
    const int prepared = gemm_t256(wtype, nb, wb, row_bytes, r0, r1, xb, x_stride, n_tok, y, rows);
#endif
    xb += (size_t)prepared * x_stride;
    y += (size_t)prepared * rows;
    n_tok -= prepared;
    if (n_tok == 0)
        return;
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        gemm_rows(wtype, 4, nb, wb + (size_t)r * row_bytes, row_bytes, xb, x_stride, n_tok, y + r, rows);
    for (; r < r1; r++)
        gemm_rows(wtype, 1, nb, wb + (size_t)r * row_bytes, row_bytes, xb, x_stride, n_tok, y + r, rows);
}

static void gemm_q8_0_avx2(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                           size_t x_stride, int n_tok, float *y, int rows)
{
    gemm_q_avx2(ELK_TYPE_Q8_0, n, w, row_bytes, r0, r1, x, x_stride, n_tok, y, rows);
}

static void gemm_q4_0_avx2(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                           size_t x_stride, int n_tok, float *y, int rows)
{
    gemm_q_avx2(ELK_TYPE_Q4_0, n, w, row_bytes, r0, r1, x, x_stride, n_tok, y, rows);
}

const elk_kernels elk_kernels_avx2 = {
    .name = "avx2",
    .requires = ELK_CPU_AVX2 | ELK_CPU_FMA | ELK_CPU_F16C,
    .quantize_q8_0 = quantize_q8_0_avx2,
    .dot = {
        [ELK_TYPE_F32] = dot_f32_avx2,
        [ELK_TYPE_F16] = dot_f16_avx2,
        [ELK_TYPE_BF16] = dot_bf16_avx2,
        [ELK_TYPE_Q8_0] = dot_q8_0_avx2,
        [ELK_TYPE_Q4_0] = dot_q4_0_avx2,
    },
    .gemm = {
        [ELK_TYPE_F32] = gemm_f32_avx2,
        [ELK_TYPE_F16] = gemm_f16_avx2,
        [ELK_TYPE_Q8_0] = gemm_q8_0_avx2,
        [ELK_TYPE_Q4_0] = gemm_q4_0_avx2,
    },
    .attend = elk_attend_avx2,
    .swiglu = elk_swiglu_avx2,
};
