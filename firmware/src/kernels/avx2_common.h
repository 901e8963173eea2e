/* Small inline helpers shared by the avx2 table's files (avx2.c, avx2_gemv.c): fp16 scales, block
 * loads, horizontal sums. Compiled with the table's flags (-mavx2 -mfma -mf16c or -march=native). */
#ifndef ELK_AVX2_COMMON_H
#define ELK_AVX2_COMMON_H

#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"

#define ELK_INLINE static inline __attribute__((always_inline))

ELK_INLINE float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ELK_INLINE float fp16(elk_fp16 h)
{
    return _cvtsh_ss(h);
}

ELK_INLINE __m256i load_q8_0(const elk_block_q8_0 *b)
{
    return _mm256_loadu_si256((const __m256i *)b->qs);
}

/* Q4_0 nibbles unsigned (q + 8, 0..15) in activation order, for the vpdpbusd path. */
ELK_INLINE __m256i unpack_q4_0_u(const elk_block_q4_0 *b)
{
    const __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

ELK_INLINE int hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* avx2_gemv.c: decode (one token) for Q4_0/Q8_0 rows [r0, r1); returns 0 when it does not take
 * this shape (the caller then loops over the dot kernel). */
int elk_gemv_avx2(int wtype, int nb, const uint8_t *w, size_t row_bytes, int r0, int r1, const elk_block_q8_0 *x,
                  float *y);

/* avx2_attn.c */
void elk_attend_avx2(int hd, int nq, int n, const float *q, const float *k, const float *v, size_t stride,
                     float scale, float *scores, size_t score_stride, float *out);
void elk_swiglu_avx2(float *g, const float *u, int n);

#endif /* ELK_AVX2_COMMON_H */
