/* Exhaustive check of the AArch64 NEON exp (exp4_fast in firmware/src/kernels/neon_attn.c, used by the
 * softmax and SwiGLU) against ref's (float)exp((double)x): every float in [-110, 89], bit for bit,
 * for every lane the fast path does not hand to the C library (those lanes are recomputed with it).
 * Also prints how many lanes went to the library, and fails if x = -104, -inf, 89 or +inf does. A host tool, not part of the firmware or the suite
 * (2.2e9 inputs: minutes under qemu). Build with the library's AArch64 flags and run under qemu:
 *   K=firmware; aarch64-linux-gnu-gcc -O3 -march=armv8-a -mtune=cortex-a76 -std=c11 -ffp-contract=off \
 *       -I$K/include -I$K/src -I$K/src/kernels tools/bench/exp_exhaustive_neon.c $K/src/kernels/ref.c \
 *       -lm -o /tmp/exp_exhaustive_neon
 *   qemu-aarch64-static -L /usr/aarch64-linux-gnu -cpu cortex-a76 /tmp/exp_exhaustive_neon [PART PARTS]
 * PART PARTS (0 <= PART < PARTS) checks one of PARTS equal slices, to split the run. Exit 0 = no input
 * differs, 1 = some do, 2 = bad arguments. */
#include "neon_attn.c"

#include <stdio.h>
#include <stdlib.h>

#if !defined(__aarch64__)
#error "exp_exhaustive_neon.c checks the AArch64 path: build it with aarch64-linux-gnu-gcc"
#endif

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Input number i in [0, total): the floats in [+0, 89] by bit pattern, then [-0, -110]. */
static float nth_input(uint64_t i, uint64_t n_pos)
{
    const uint32_t bits = i < n_pos ? (uint32_t)i : 0x80000000u + (uint32_t)(i - n_pos);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int main(int argc, char **argv)
{
    long part = 0, parts = 1;
    char *end1 = NULL, *end2 = NULL;
    if (argc == 3) {
        part = strtol(argv[1], &end1, 10);
        parts = strtol(argv[2], &end2, 10);
    }
    if ((argc != 1 && argc != 3) || (argc == 3 && (*end1 || *end2 || parts < 1 || parts > 4096 || part < 0 ||
                                                   part >= parts))) {
        fprintf(stderr, "usage: %s [PART PARTS]   (0 <= PART < PARTS <= 4096)\n", argv[0]);
        return 2;
    }
    const uint64_t n_pos = (uint64_t)float_bits(89.0f) + 1, n_neg = float_bits(-110.0f) - 0x80000000u + 1;
    const uint64_t total = n_pos + n_neg, lo = total * part / parts, hi = total * (part + 1) / parts;
    unsigned long long bad = 0, slow_lanes = 0;
    for (uint64_t i = lo; i < hi; i += 4) {
        float xs[4], ys[4];
        uint32_t slow[4];
        for (int l = 0; l < 4; l++)
            xs[l] = nth_input(i + l < hi ? i + l : lo, n_pos);
        uint32x4_t s;
        vst1q_f32(ys, exp4_fast(vld1q_f32(xs), &s));
        vst1q_u32(slow, s);
        for (int l = 0; l < 4 && i + l < hi; l++) {
            if (slow[l]) {
                slow_lanes++;
                continue;
            }
            const float want = (float)exp((double)xs[l]);
            if (memcmp(&want, &ys[l], 4) != 0 && bad++ < 5)
                printf("x=%a: got %a, ref %a\n", xs[l], ys[l], want);
        }
    }
    /* the clamped ends answer without the library: a peaked softmax has many x <= -104 */
    const float ends[4] = {-104.0f, -INFINITY, 89.0f, INFINITY};
    uint32_t end_slow[4];
    float end_y[4];
    uint32x4_t es;
    vst1q_f32(end_y, exp4_fast(vld1q_f32(ends), &es));
    vst1q_u32(end_slow, es);
    for (int l = 0; l < 4; l++) {
        const int ok = !end_slow[l] && end_y[l] == (l < 2 ? 0.0f : INFINITY) && !signbit(end_y[l]);
        printf("x=%g: %s\n", ends[l], ok ? "fast, exact" : "NOT fast or wrong");
        bad += !ok;
    }
    printf("part %ld/%ld: %llu inputs checked, %llu differ, %llu to the library\n", part, parts,
           (unsigned long long)(hi - lo), bad, slow_lanes);
    return bad != 0;
}
