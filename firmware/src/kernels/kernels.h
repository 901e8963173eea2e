/* The kernel table: every compute primitive the decoder needs, one table per ISA.
 * ref.c fills it with portable C and defines the numerics; avx2.c, neon.c, neon_dotprod.c and
 * neon_i8mm.c fill the same table and are tested against ref.c (bit-exact integer sums, float
 * results within a stated tolerance). Not here: threading (the caller splits rows) or any OS code. */
#ifndef ELK_KERNELS_H
#define ELK_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "elk/spec.h"

typedef uint16_t elk_fp16; /* IEEE binary16 bits */

/* ggml-compatible blocks: the same bytes GGUF stores for Q8_0 / Q4_0. */
typedef struct {
    elk_fp16 d;     /* scale */
    int8_t qs[32];  /* x[i] = d * qs[i] */
} elk_block_q8_0;
_Static_assert(sizeof(elk_block_q8_0) == ELK_TYPE_Q8_0_BLOCK_BYTES, "q8_0 block size");

typedef struct {
    elk_fp16 d;      /* scale */
    uint8_t qs[16];  /* x[i] = d * ((qs[i] & 15) - 8), x[i + 16] = d * ((qs[i] >> 4) - 8) */
} elk_block_q4_0;
_Static_assert(sizeof(elk_block_q4_0) == ELK_TYPE_Q4_0_BLOCK_BYTES, "q4_0 block size");

/* CPU features a table may require (bits of elk_cpu_features()). */
enum {
    ELK_CPU_AVX2 = 1u << 0,
    ELK_CPU_FMA = 1u << 1,
    ELK_CPU_F16C = 1u << 2,
    ELK_CPU_NEON = 1u << 8,
    ELK_CPU_DOTPROD = 1u << 9,
    ELK_CPU_I8MM = 1u << 10,
    ELK_CPU_FP16 = 1u << 11,
};

/* Activations for a quantized weight type are quantized once per row to Q8_0 (d = amax / 127,
 * q = round-half-away(x / d)); the dot product is then sum over blocks of
 * fp16(d_w) * fp16(d_x) * (int32 sum of q_w * q_x), accumulated in float. For F32 and F16 weights
 * the activation stays float32. `vec_type[w]` says which activation type weights of type w want. */
typedef struct elk_kernels {
    const char *name;      /* "ref", "avx2", "neon", "neon_dotprod", "neon_i8mm" */
    uint32_t requires;     /* ELK_CPU_* bits the table needs at run time */

    /* y[0..n) = Q8_0(x[0..n)); n is a multiple of 32. */
    void (*quantize_q8_0)(const float *x, elk_block_q8_0 *y, int n);

    /* Dot product of one weight row (n elements, type = index) with an activation row of
     * type vec_type[type]. NULL for types the table does not handle (ref handles all). */
    float (*dot[ELK_TYPE_COUNT])(int n, const void *w, const void *x);

    /* Y[t * rows + r] = dot(W row r, X row t) for r in [r0, r1), t in [0, n_tok).
     * W: rows x n (row stride = row_bytes), X: n_tok rows (row stride = x_stride bytes).
     * (optional) NULL means: loop over dot. Batched prefill kernels (i8mm, tiled AVX2) go here. */
    void (*gemm[ELK_TYPE_COUNT])(int n, const void *w, size_t row_bytes, int r0, int r1,
                                 const void *x, size_t x_stride, int n_tok, float *y, int rows);

    /* Attention of nq query heads that share one KV head, over n cached positions (optional: NULL
     * means the ref table's; every table must give ref's results bit for bit). Head j (q + j * hd):
     * scores_j[s] = scale * dot(q_j, k_s) for s in [0, n), k_s = k + s * stride (hd floats, summed
     * in element order); softmax over s (exp rounded from double); out + j * hd = sum over s of
     * scores_j[s] * v_s. scores_j = scores + j * score_stride: n floats of scratch per head. */
    void (*attend)(int hd, int nq, int n, const float *q, const float *k, const float *v, size_t stride,
                   float scale, float *scores, size_t score_stride, float *out);

    /* g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i] for i in [0, n) (optional, bit for
     * bit as ref's, as above). */
    void (*swiglu)(float *g, const float *u, int n);
} elk_kernels;

/* Which activation type a weight type consumes. */
static inline int elk_vec_type(int wtype)
{
    return (wtype == ELK_TYPE_Q8_0 || wtype == ELK_TYPE_Q4_0) ? ELK_TYPE_Q8_0 : ELK_TYPE_F32;
}

/* Bytes of one row of n elements of type t, or 0 if n does not fit the type's block size. */
size_t elk_row_bytes(int type, int64_t n);

/* Reference table: always available, defines the numerics. */
extern const elk_kernels elk_kernels_ref;

/* All tables compiled into this build, best first, NULL-terminated. */
extern const elk_kernels *const elk_kernel_tables[];

/* CPU features of the running machine (cpuid on x86; getauxval(AT_HWCAP/AT_HWCAP2) on aarch64
 * Linux). Implemented by the platform layer; returns 0 when unknown. */
uint32_t elk_cpu_features(void);

/* The best table whose requirements `features` meets; `name` (may be NULL) forces a table by name
 * and returns NULL when it is not compiled in or not supported. */
const elk_kernels *elk_kernels_select(uint32_t features, const char *name);

/* fp16 <-> fp32, IEEE round-to-nearest-even (matches numpy's float16 conversion). */
float elk_fp16_to_fp32(elk_fp16 h);
elk_fp16 elk_fp32_to_fp16(float f);

/* Dequantize one row of n elements of `type` into y. */
void elk_dequantize_row(int type, const void *x, float *y, int64_t n);

#endif /* ELK_KERNELS_H */
