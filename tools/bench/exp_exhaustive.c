/* Exhaustive check of the avx2 table's exp (exp8_exact in avx2_attn.c, used by softmax and SwiGLU)
 * against ref's (float)exp((double)x): every float in [-110, 89], bit for bit. The suite's
 * elk-attn-test checks a fine grid and the known near-midpoint cases; this covers all 2.2e9 inputs
 * (12 s here). Build with the same flags as the library to check that build's path (AVX-512 or AVX2):
 *   K=firmware; gcc -O2 -march=native -ffp-contract=off -I$K/include -I$K/src -I$K/src/kernels \
 *       tools/bench/exp_exhaustive.c $K/src/kernels/ref.c -lm -o /tmp/exp_exhaustive && /tmp/exp_exhaustive
 *   (add -mno-avx512f for the AVX2 path). Exit 0 = no input differs. */
#include "avx2_attn.c"

#include <stdio.h>
#include <string.h>

int main(void)
{
    unsigned long long bad = 0, n = 0;
    float xs[8];
    int k = 0;
    for (int negative = 0; negative < 2; negative++) {
        const float end = negative ? -110.0f : 89.0f;
        uint32_t last;
        memcpy(&last, &end, 4);
        for (uint64_t u = negative ? 0x80000000u : 0u; u <= last; u++) {
            const uint32_t bits = (uint32_t)u;
            memcpy(&xs[k++], &bits, 4);
            if (k < 8)
                continue;
            float ys[8];
            _mm256_storeu_ps(ys, exp8_exact(_mm256_loadu_ps(xs)));
            for (int l = 0; l < 8; l++) {
                const float want = (float)exp((double)xs[l]);
                if (memcmp(&want, &ys[l], 4) != 0 && bad++ < 5)
                    printf("x=%a: got %a, ref %a\n", xs[l], ys[l], want);
            }
            n += 8;
            k = 0;
        }
    }
    printf("%llu inputs checked, %llu differ\n", n, bad);
    return bad != 0;
}
