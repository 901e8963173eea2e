/* Decode GEMVs of the avx2 table (one token: y[r] = dot(W row r, x) for rows [r0, r1)), where the
 * weights stream from memory once per token and per-block work must stay under the memory rate.
 * AVX-512 VNNI builds: Q4_0 four blocks per zmm, Q8_0 two. AVX2 builds (any x86-64 since 2013):
 * Q4_0 two blocks per ymm, maddubs or AVX-VNNI. Both read two rows half a range apart (two
 * sequential streams), keep integer block sums exact and differ from ref only in float order.
 * Not here: threads (linear.c splits rows) or batched prefill (avx2.c). */
#include <immintrin.h>
#include <string.h>

#include "avx2_common.h"

/* Software prefetch this far ahead of each Q8_0 row stream, every line once. Sharp optimum on the
 * AVX-512 kernel: the decode matrix sequence alternating in one process, 4-5 KB ahead +5-6% GB/s,
 * 2-3 KB or 8-12 KB ahead no gain or a loss. */
#define GEMV_Q8_PREFETCH 4096

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* Decode GEMV for Q4_0 (one token, many rows), four blocks at a time. A zmm holds the 64 packed
 * nibble bytes of blocks 4g..4g+3 (16 per block); its low nibbles meet the prepared activation bytes
 * 0-15 of each block and its high nibbles bytes 16-31, and both vpdpbusd add into the same int32
 * lanes (lanes 4b..4b+3 belong to block b), seeded with -8 * sum(x) of those lanes so the unsigned
 * nibbles need no sign fix-up. Per 4 blocks and row that leaves: gather, 2 unpack ops, 2 vpdpbusd,
 * one convert, one scale (fp16 -> float, times the activation scale) and one FMA. The activation
 * side (bytes, seeds, scales in lane order) is rearranged once per call. Blocks past the last full
 * group (nb % 4) are added one at a time. */
/* Software prefetch this many bytes ahead of each Q4_0 row stream. The two rows' compute fills the
 * reorder window before enough of their loads are in flight to cover DRAM latency (the same loads
 * without the compute read 39 GB/s here, with it 32); a prefetch retires at once. One core,
 * 5632 x 2048 from DRAM: 32 -> 34.5 GB/s at 4-16 KB (1-2 KB ahead is worse than none); TinyLlama
 * decode A/B, 1 thread 50-54 -> 56 tokens/s, 2 threads 72-89 -> 74-93. (Q8_0: see GEMV_Q8_PREFETCH.) */
#define GEMV_PREFETCH 12288
#define GEMV_MAX_GROUPS 128 /* rows up to 16384 columns (32 KB of stack); wider rows take the dot loop */

typedef struct {
    __m512i xlo, xhi; /* activation bytes 0-15 / 16-31 of blocks 4g..4g+3, 16 per block */
    __m512i fix;      /* lane 4b+k: -8 * (the 8 activation bytes that meet lane 4b+k's nibbles) */
    __m512 dx;        /* lane 4b+k: block b's activation scale */
} gemv_quad;

/* The 64 nibble bytes of 4 consecutive Q4_0 blocks (72 bytes from b), block order. */
ELK_INLINE __m512i q4_quad_bytes(const elk_block_q4_0 *b, __m512i *lo_load)
{
#if defined(__AVX512VBMI__)
    /* byte j of block j / 16 sits at o = 18 * (j / 16) + 2 + j % 16 of the group: o < 64 from a
     * 64-byte load, the rest from a 16-byte load of the group's last bytes (56..71). Two 64-byte
     * loads 8 bytes apart (each crossing a line) halved the rate from DRAM here; this pair does not. */
    static const uint8_t idx_bytes[64] = {
#define Q(j) (uint8_t)(18 * ((j) / 16) + 2 + (j) % 16 < 64 ? 18 * ((j) / 16) + 2 + (j) % 16 : 8 + 18 * ((j) / 16) + 2 + (j) % 16)
#define Q4(j) Q(j), Q(j + 1), Q(j + 2), Q(j + 3)
#define Q16(j) Q4(j), Q4(j + 4), Q4(j + 8), Q4(j + 12)
        Q16(0), Q16(16), Q16(32), Q16(48)
#undef Q16
#undef Q4
#undef Q
    };
    const __m512i a = _mm512_loadu_si512((const void *)b);
    const __m512i c = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(const void *)((const uint8_t *)(const void *)b + 56)));
    *lo_load = a;
    return _mm512_permutex2var_epi8(a, _mm512_loadu_si512((const void *)idx_bytes), c);
#else
    (void)lo_load;
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)b[0].qs));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)b[1].qs), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)b[2].qs), 2);
    return _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)b[3].qs), 3);
#endif
}

/* Lane 4b+k: the fp16 weight scale of block b of the group as float. */
ELK_INLINE __m512 q4_quad_scales(const elk_block_q4_0 *b, __m512i lo_load)
{
#if defined(__AVX512VBMI__)
    /* word l of the result = the scale bytes of block l / 4 (at 18 * (l / 4)) */
    const __m512i idx = _mm512_castsi256_si512(_mm256_setr_epi8(
        0, 1, 0, 1, 0, 1, 0, 1, 18, 19, 18, 19, 18, 19, 18, 19, 36, 37, 36, 37, 36, 37, 36, 37, 54, 55, 54, 55, 54, 55, 54, 55));
    (void)b;
    return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi8(idx, lo_load)));
#else
    (void)lo_load;
    const uint64_t h = (uint64_t)b[0].d | (uint64_t)b[1].d << 16 | (uint64_t)b[2].d << 32 | (uint64_t)b[3].d << 48;
    const __m512 d4 = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi64_si128((long long)h)));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3), d4);
#endif
}

/* High nibbles of each byte, moved down (0..15). GFNI does it in one affine op. */
ELK_INLINE __m512i nibbles_hi(__m512i v)
{
#if defined(__GFNI__)
    return _mm512_gf2p8affine_epi64_epi8(v, _mm512_set1_epi64(0x1020408000000000LL), 0);
#else
    return _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
#endif
}

/* sum over one Q4_0 block of w * x as ref.c forms it: (float)isum * (d_w * d_x) */
ELK_INLINE float q4_block_dot(const elk_block_q4_0 *w, const elk_block_q8_0 *x)
{
    const __m256i xv = load_q8_0(x);
    __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), unpack_q4_0_u(w), xv);
    p = _mm256_sub_epi32(p, _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), xv));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return (float)_mm_cvtsi128_si32(s) * (fp16(w->d) * fp16(x->d));
}

/* acc + the 16 lane products of one group of 4 blocks (bb) with the prepared activations q. */
ELK_INLINE __m512 q4_quad_fma(const elk_block_q4_0 *bb, const gemv_quad *q, __m512 acc)
{
    __m512i first;
    const char *pf = (const char *)(const void *)bb + GEMV_PREFETCH;
    _mm_prefetch(pf, _MM_HINT_T0);
    /* A group is 72 bytes, so every 8th step jumps over a whole line; that line is fetched too (left
     * to a demand miss it cost ~3%: the image's decode sequence, tools/bench/gemv_sequence.c, A/B
     * in one process, 37.0 -> 38.0-38.5 GB/s). Prefetching every line twice instead is slower. */
    if (((uintptr_t)pf & 63) >= 64 - 8)
        _mm_prefetch(pf + 64, _MM_HINT_T0);
    const __m512i v = q4_quad_bytes(bb, &first);
    __m512i p = _mm512_dpbusd_epi32(q->fix, _mm512_and_si512(v, _mm512_set1_epi8(0x0f)), q->xlo);
    p = _mm512_dpbusd_epi32(p, nibbles_hi(v), q->xhi);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(q4_quad_scales(bb, first), q->dx), acc);
}

/* K rows (1 or 2, a compile-time constant) against the prepared activation groups. Two rows half a
 * range apart are two independent sequential streams: one core then reads more from DRAM than
 * with one. Each row keeps its own accumulator and order, so its result does not depend on
 * whether (or with which row) it was paired: thread counts still give identical logits.
 * (No loop over the K rows: gcc keeps such an accumulator array in memory, and the store-to-load
 * round trip per group then sets the pace.) */
ELK_INLINE void gemv_rows_q4_0(int K, int nb, const gemv_quad *px, const elk_block_q8_0 *xb,
                               const elk_block_q4_0 *b0, const elk_block_q4_0 *b1, float *y0, float *y1)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    const int ng = nb / 4;
    for (int g = 0; g < ng; g++) {
        acc0 = q4_quad_fma(b0 + 4 * g, px + g, acc0);
        if (K == 2)
            acc1 = q4_quad_fma(b1 + 4 * g, px + g, acc1);
    }
    float t0 = 0.0f, t1 = 0.0f;
    for (int i = 4 * ng; i < nb; i++) {
        t0 += q4_block_dot(b0 + i, xb + i);
        if (K == 2)
            t1 += q4_block_dot(b1 + i, xb + i);
    }
    *y0 = _mm512_reduce_add_ps(acc0) + t0;
    if (K == 2)
        *y1 = _mm512_reduce_add_ps(acc1) + t1;
}

static void gemv_q4_0_512(int nb, const uint8_t *w, size_t row_bytes, int r0, int r1, const elk_block_q8_0 *xb,
                          float *y)
{
    gemv_quad px[GEMV_MAX_GROUPS];
    for (int g = 0; g < nb / 4; g++) {
        const elk_block_q8_0 *x4 = xb + 4 * g;
        uint8_t lo_b[64], hi_b[64];
        float d[16];
        for (int b = 0; b < 4; b++) {
            memcpy(lo_b + 16 * b, x4[b].qs, 16);
            memcpy(hi_b + 16 * b, x4[b].qs + 16, 16);
            for (int k = 0; k < 4; k++)
                d[4 * b + k] = fp16(x4[b].d);
        }
        const __m512i lo = _mm512_loadu_si512((const void *)lo_b), hi = _mm512_loadu_si512((const void *)hi_b);
        px[g].xlo = lo;
        px[g].xhi = hi;
        const __m512i s = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), lo),
                                              _mm512_set1_epi8(8), hi);
        px[g].fix = _mm512_sub_epi32(_mm512_setzero_si512(), s);
        px[g].dx = _mm512_loadu_ps(d);
    }
    const int half = (r1 - r0) / 2;
    for (int r = r0; r < r0 + half; r++)
        gemv_rows_q4_0(2, nb, px, xb, (const elk_block_q4_0 *)(w + (size_t)r * row_bytes),
                       (const elk_block_q4_0 *)(w + (size_t)(r + half) * row_bytes), y + r, y + r + half);
    if ((r1 - r0) % 2)
        gemv_rows_q4_0(1, nb, px, xb, (const elk_block_q4_0 *)(w + (size_t)(r1 - 1) * row_bytes), NULL, y + r1 - 1,
                       NULL);
}

/* Decode GEMV for Q8_0, two blocks per zmm (lanes 0-7 block i, 8-15 block i+1). The weight bytes
 * are offset to unsigned (w + 128, one xor) and meet the signed activation bytes in vpdpbusd,
 * seeded with -128 * sum(x) of each lane (prepared once per call), so the sum is exact. */
#define GEMV_MAX_PAIRS 256 /* rows up to 16384 columns (48 KB of stack); wider rows take the dot loop */

typedef struct {
    __m512i x;   /* activation bytes of blocks 2j, 2j+1 */
    __m512i fix; /* -128 * (sum of the 4 activation bytes of each lane) */
    __m512 dx;   /* lanes 0-7: block 2j's activation scale, 8-15: block 2j+1's */
} gemv_pair;

ELK_INLINE __m512 q8_pair_fma(const elk_block_q8_0 *bb, const gemv_pair *q, __m512 acc)
{
    const char *pf = (const char *)(const void *)bb + GEMV_Q8_PREFETCH;
    _mm_prefetch(pf, _MM_HINT_T0);
    if (((uintptr_t)pf & 63) >= 64 - 4) /* a pair is 68 bytes: every 16th step jumps a line */
        _mm_prefetch(pf + 64, _MM_HINT_T0);
    const __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(load_q8_0(bb)), load_q8_0(bb + 1), 1);
    const __m512i p = _mm512_dpbusd_epi32(q->fix, _mm512_xor_si512(wv, _mm512_set1_epi8((char)0x80)), q->x);
    const __m128 dw2 = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)bb[0].d | (uint32_t)bb[1].d << 16)));
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512 sc = _mm512_mul_ps(_mm512_permutexvar_ps(halves, _mm512_castps128_ps512(dw2)), q->dx);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc);
}

/* As gemv_rows_q4_0, for Q8_0 rows (nb even). */
ELK_INLINE void gemv_rows_q8_0(int K, int nb, const gemv_pair *px, const elk_block_q8_0 *b0,
                               const elk_block_q8_0 *b1, float *y0, float *y1)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int j = 0; j < nb / 2; j++) {
        acc0 = q8_pair_fma(b0 + 2 * j, px + j, acc0);
        if (K == 2)
            acc1 = q8_pair_fma(b1 + 2 * j, px + j, acc1);
    }
    *y0 = _mm512_reduce_add_ps(acc0);
    if (K == 2)
        *y1 = _mm512_reduce_add_ps(acc1);
}

static void gemv_q8_0_512(int nb, const uint8_t *w, size_t row_bytes, int r0, int r1, const elk_block_q8_0 *xb,
                          float *y)
{
    gemv_pair px[GEMV_MAX_PAIRS];
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (int j = 0; j < nb / 2; j++) {
        const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(load_q8_0(xb + 2 * j)), load_q8_0(xb + 2 * j + 1), 1);
        px[j].x = both;
        px[j].fix = _mm512_sub_epi32(_mm512_setzero_si512(),
                                     _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), both));
        px[j].dx = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_setr_ps(fp16(xb[2 * j].d), fp16(xb[2 * j + 1].d), 0, 0)));
    }
    const int half = (r1 - r0) / 2;
    for (int r = r0; r < r0 + half; r++)
        gemv_rows_q8_0(2, nb, px, (const elk_block_q8_0 *)(w + (size_t)r * row_bytes),
                       (const elk_block_q8_0 *)(w + (size_t)(r + half) * row_bytes), y + r, y + r + half);
    if ((r1 - r0) % 2)
        gemv_rows_q8_0(1, nb, px, (const elk_block_q8_0 *)(w + (size_t)(r1 - 1) * row_bytes), NULL, y + r1 - 1, NULL);
}


int elk_gemv_avx2(int wtype, int nb, const uint8_t *w, size_t row_bytes, int r0, int r1, const elk_block_q8_0 *x,
                  float *y)
{
    if (wtype == ELK_TYPE_Q4_0 && nb / 4 <= GEMV_MAX_GROUPS) {
        gemv_q4_0_512(nb, w, row_bytes, r0, r1, x, y);
        return 1;
    }
    if (wtype == ELK_TYPE_Q8_0 && nb % 2 == 0 && nb / 2 <= GEMV_MAX_PAIRS) {
        gemv_q8_0_512(nb, w, row_bytes, r0, r1, x, y);
        return 1;
    }
    return 0;
}

#else /* AVX2 (+ FMA, F16C; AVX-VNNI when the flags have it) */

/* Q4_0, two blocks per ymm: the 16 packed bytes of blocks i and i+1 side by side; low nibbles
 * meet activation bytes 0-15 of each block, high nibbles bytes 16-31. With maddubs both int16
 * products are added (|sum| <= 4 * 15 * 127, no saturation) before one madd to int32 lanes (lanes
 * 0-3 block i, 4-7 block i+1), seeded with -8 * sum(x) of each lane's bytes; AVX-VNNI does the same
 * with two vpdpbusd. Then one convert, one scale and one FMA per block pair. */
#define GEMV2_MAX_PAIRS 256 /* rows up to 16384 columns (24 KB of stack); wider rows take the dot loop */

typedef struct {
    __m256i xlo, xhi; /* activation bytes 0-15 / 16-31 of blocks 2j and 2j+1 */
    __m256i fix;      /* (AVX-VNNI) lane l: -8 * (the 8 activation bytes that meet lane l's nibbles) */
} gemv2_pair;

ELK_INLINE __m256i q4_pair_sums(const elk_block_q4_0 *bb, const gemv2_pair *q)
{
    const __m256i raw = _mm256_loadu2_m128i((const __m128i *)bb[1].qs, (const __m128i *)bb[0].qs);
    const __m256i m = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(raw, m), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m);
#if defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(q->fix, lo, q->xlo), hi, q->xhi);
#else
    /* the -8 * sum(x) correction is added per 8 blocks in float (gemv2_rows_q4_0), one FMA instead
     * of an add per pair */
    const __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, q->xlo), _mm256_maddubs_epi16(hi, q->xhi));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
#endif
}

/* The 8 fp16 scales of blocks 8q..8q+7 of a row as floats (one conversion for 4 pairs). */
ELK_INLINE __m256 q4_scales8(const elk_block_q4_0 *b)
{
    uint64_t h[2] = {0, 0};
    for (int e = 0; e < 8; e++)
        h[e / 4] |= (uint64_t)b[e].d << (16 * (e % 4));
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)h));
}

ELK_INLINE __m256 q4_pair_fma(const elk_block_q4_0 *bb, const gemv2_pair *q, __m256 sc8, int pair, __m256 acc)
{
    const __m256i idx = _mm256_setr_epi32(2 * pair, 2 * pair, 2 * pair, 2 * pair, 2 * pair + 1, 2 * pair + 1,
                                          2 * pair + 1, 2 * pair + 1);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(q4_pair_sums(bb, q)), _mm256_permutevar8x32_ps(sc8, idx), acc);
}

/* The three lines under a group of 8 blocks (144 bytes) 4 KB ahead: this kernel is compute-bound in
 * L2 (28 GB/s here), so the hardware prefetcher alone leaves it waiting on DRAM; 4-12 KB ahead took
 * it 24.7-25.5 -> 26.4-27.1 GB/s from DRAM (gemv_bench built -march=x86-64-v3, alternating). */
ELK_INLINE void gemv2_prefetch(const elk_block_q4_0 *b)
{
    const char *p = (const char *)(const void *)b + 4096;
    _mm_prefetch(p, _MM_HINT_T0);
    _mm_prefetch(p + 64, _MM_HINT_T0);
    _mm_prefetch(p + 128, _MM_HINT_T0);
}

/* K rows (1 or 2, a compile-time constant); no loop over them (see gemv_rows_q4_0 above). Blocks
 * past the last multiple of 8 are added one at a time. */
ELK_INLINE void gemv2_rows_q4_0(int K, int nb, const gemv2_pair *px, const __m256 *dx8, const __m256 *fix8,
                                const elk_block_q8_0 *xb, const elk_block_q4_0 *b0, const elk_block_q4_0 *b1,
                                float *y0, float *y1)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
#if !defined(__AVXVNNI__)
    __m256 fixacc0 = _mm256_setzero_ps(), fixacc1 = _mm256_setzero_ps();
#else
    (void)fix8;
#endif
    const int n8 = nb / 8;
    for (int g = 0; g < n8; g++) {
        const elk_block_q4_0 *r0 = b0 + 8 * g, *r1 = b1 + 8 * g;
        gemv2_prefetch(r0);
        if (K == 2)
            gemv2_prefetch(r1);
        const __m256 s0 = _mm256_mul_ps(q4_scales8(r0), dx8[g]);
        const __m256 s1 = K == 2 ? _mm256_mul_ps(q4_scales8(r1), dx8[g]) : s0;
#if !defined(__AVXVNNI__)
        fixacc0 = _mm256_fmadd_ps(s0, fix8[g], fixacc0); /* lane e: block 8g+e's -8 * sum(x) * d_w * d_x */
        if (K == 2)
            fixacc1 = _mm256_fmadd_ps(s1, fix8[g], fixacc1);
#endif
        for (int p = 0; p < 4; p++) { /* unrolled: p is a constant in each copy */
            acc0 = q4_pair_fma(r0 + 2 * p, px + 4 * g + p, s0, p, acc0);
            if (K == 2)
                acc1 = q4_pair_fma(r1 + 2 * p, px + 4 * g + p, s1, p, acc1);
        }
    }
    float t0 = 0.0f, t1 = 0.0f;
    for (int i = 8 * n8; i < nb; i++) {
        const __m256i xv = load_q8_0(xb + i);
#if defined(__AVXVNNI__)
        const __m256i p0 = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), unpack_q4_0_u(b0 + i), xv);
        const __m256i p1 = K == 2 ? _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), unpack_q4_0_u(b1 + i), xv) : p0;
#else
        const __m256i one = _mm256_set1_epi16(1);
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(unpack_q4_0_u(b0 + i), xv), one);
        const __m256i p1 = K == 2 ? _mm256_madd_epi16(_mm256_maddubs_epi16(unpack_q4_0_u(b1 + i), xv), one) : p0;
#endif
        int sx = 0;
        for (int k = 0; k < ELK_QK; k++)
            sx += xb[i].qs[k];
        const float dx = fp16(xb[i].d);
        t0 += (float)(hsum_epi32(p0) - 8 * sx) * (fp16(b0[i].d) * dx);
        if (K == 2)
            t1 += (float)(hsum_epi32(p1) - 8 * sx) * (fp16(b1[i].d) * dx);
    }
#if !defined(__AVXVNNI__)
    acc0 = _mm256_add_ps(acc0, fixacc0);
    acc1 = _mm256_add_ps(acc1, fixacc1);
#endif
    *y0 = hsum_ps(acc0) + t0;
    if (K == 2)
        *y1 = hsum_ps(acc1) + t1;
}

static void gemv_q4_0_256(int nb, const uint8_t *w, size_t row_bytes, int r0, int r1, const elk_block_q8_0 *xb,
                          float *y)
{
    gemv2_pair px[GEMV2_MAX_PAIRS];
    __m256 dx8[GEMV2_MAX_PAIRS / 4], fix8[GEMV2_MAX_PAIRS / 4];
    for (int j = 0; j < nb / 2; j++) {
        const elk_block_q8_0 *x2 = xb + 2 * j;
        px[j].xlo = _mm256_loadu2_m128i((const __m128i *)x2[1].qs, (const __m128i *)x2[0].qs);
        px[j].xhi = _mm256_loadu2_m128i((const __m128i *)(x2[1].qs + 16), (const __m128i *)(x2[0].qs + 16));
#if defined(__AVXVNNI__) /* the vpdpbusd seed; maddubs builds add the correction per 8 blocks */
        const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
        const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(one8, px[j].xlo), _mm256_maddubs_epi16(one8, px[j].xhi));
        px[j].fix = _mm256_mullo_epi32(_mm256_madd_epi16(s16, one16), _mm256_set1_epi32(-8));
#endif
    }
    for (int g = 0; g < nb / 8; g++) {
        float d[8], f[8];
        for (int e = 0; e < 8; e++) {
            int sx = 0;
#if !defined(__AVXVNNI__)
            for (int k = 0; k < ELK_QK; k++)
                sx += xb[8 * g + e].qs[k];
#endif
            d[e] = fp16(xb[8 * g + e].d);
            f[e] = (float)(-8 * sx); /* exact: |8 * sx| < 2^15 */
        }
        dx8[g] = _mm256_loadu_ps(d);
        fix8[g] = _mm256_loadu_ps(f);
    }
    const int half = (r1 - r0) / 2;
    for (int r = r0; r < r0 + half; r++)
        gemv2_rows_q4_0(2, nb, px, dx8, fix8, xb, (const elk_block_q4_0 *)(w + (size_t)r * row_bytes),
                        (const elk_block_q4_0 *)(w + (size_t)(r + half) * row_bytes), y + r, y + r + half);
    if ((r1 - r0) % 2)
        gemv2_rows_q4_0(1, nb, px, dx8, fix8, xb, (const elk_block_q4_0 *)(w + (size_t)(r1 - 1) * row_bytes),
                        (const elk_block_q4_0 *)(w + (size_t)(r1 - 1) * row_bytes), y + r1 - 1, NULL);
}

/* Decode GEMV for Q8_0, one block per ymm, two rows half a range apart (two streams; the dot loop
 * read one). AVX-VNNI: the weight bytes offset to unsigned (xor 0x80) meet the activation bytes in
 * vpdpbusd seeded with -128 * sum(x) per lane, prepared once per call. Plain AVX2: maddubs wants one
 * unsigned operand, so |w| meets x with w's signs (exact for any weight byte: |x| <= 127 keeps each
 * int16 pair sum within 2 * 128 * 127). Every line is prefetched once, 4 KB ahead. */
typedef struct {
    __m256i x;   /* activation bytes of block j */
    __m256i fix; /* (AVX-VNNI) lane l: -128 * (the 4 activation bytes of lane l) */
} gemv2_q8;

ELK_INLINE __m256i q8_block_sums(const elk_block_q8_0 *bb, const gemv2_q8 *q)
{
    const char *pf = (const char *)(const void *)bb + GEMV_Q8_PREFETCH;
    if (((uintptr_t)pf & 63) < sizeof(elk_block_q8_0)) /* the first block reaching into this line */
        _mm_prefetch(pf, _MM_HINT_T0);
    const __m256i w = load_q8_0(bb);
#if defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(q->fix, _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80)), q->x);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q->x, w)),
                             _mm256_set1_epi16(1));
#endif
}

/* K rows (1 or 2) against the prepared blocks; each row keeps its own accumulators and order. */
ELK_INLINE void gemv2_rows_q8_0(int K, int nb, const gemv2_q8 *px, const float *dx, const elk_block_q8_0 *b0,
                                const elk_block_q8_0 *b1, float *y0, float *y1)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int j = 0; j < nb; j++) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q8_block_sums(b0 + j, px + j)), _mm256_set1_ps(fp16(b0[j].d) * dx[j]), acc0);
        if (K == 2)
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q8_block_sums(b1 + j, px + j)), _mm256_set1_ps(fp16(b1[j].d) * dx[j]), acc1);
    }
    *y0 = hsum_ps(acc0);
    if (K == 2)
        *y1 = hsum_ps(acc1);
}

#define GEMV2_MAX_Q8 512 /* rows up to 16384 columns (32 KB of stack); wider rows take the dot loop */

static void gemv_q8_0_256(int nb, const uint8_t *w, size_t row_bytes, int r0, int r1, const elk_block_q8_0 *xb,
                          float *y)
{
    gemv2_q8 px[GEMV2_MAX_Q8];
    float dx[GEMV2_MAX_Q8];
    for (int j = 0; j < nb; j++) {
        px[j].x = load_q8_0(xb + j);
#if defined(__AVXVNNI__)
        px[j].fix = _mm256_sub_epi32(_mm256_setzero_si256(),
                                     _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), px[j].x));
#else
        px[j].fix = _mm256_setzero_si256();
#endif
        dx[j] = fp16(xb[j].d);
    }
    const int half = (r1 - r0) / 2;
    for (int r = r0; r < r0 + half; r++)
        gemv2_rows_q8_0(2, nb, px, dx, (const elk_block_q8_0 *)(w + (size_t)r * row_bytes),
                        (const elk_block_q8_0 *)(w + (size_t)(r + half) * row_bytes), y + r, y + r + half);
    if ((r1 - r0) % 2)
        gemv2_rows_q8_0(1, nb, px, dx, (const elk_block_q8_0 *)(w + (size_t)(r1 - 1) * row_bytes), NULL, y + r1 - 1, NULL);
}

int elk_gemv_avx2(int wtype, int nb, const uint8_t *w, size_t row_bytes, int r0, int r1, const elk_block_q8_0 *x,
                  float *y)
{
    if (wtype == ELK_TYPE_Q4_0 && nb / 2 <= GEMV2_MAX_PAIRS) {
        gemv_q4_0_256(nb, w, row_bytes, r0, r1, x, y);
        return 1;
    }
    if (wtype == ELK_TYPE_Q8_0 && nb <= GEMV2_MAX_Q8) {
        gemv_q8_0_256(nb, w, row_bytes, r0, r1, x, y);
        return 1;
    }
    return 0;
}

#endif
