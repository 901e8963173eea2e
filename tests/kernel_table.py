"""cffi declarations of the kernel table (firmware/src/kernels/kernels.h) for the kernel tests.
Only the fields the tests use, in kernels.h's order; tables are declared non-const because cffi
reads a global only when declared that way."""

TYPE_COUNT = 31
F32, F16, Q4_0, Q8_0, BF16 = 0, 1, 2, 8, 30

CDEF = f"""
typedef struct elk_kernels {{
    const char *name;
    uint32_t requires;
    void (*quantize_q8_0)(const float *x, void *y, int n);
    float (*dot[{TYPE_COUNT}])(int n, const void *w, const void *x);
    void (*gemm[{TYPE_COUNT}])(int n, const void *w, size_t row_bytes, int r0, int r1,
                               const void *x, size_t x_stride, int n_tok, float *y, int rows);
    void (*attend)(int hd, int nq, int n, const float *q, const float *k, const float *v, size_t stride,
                   float scale, float *scores, size_t score_stride, float *out);
    void (*swiglu)(float *g, const float *u, int n);
}} elk_kernels;
extern elk_kernels elk_kernels_ref;
extern elk_kernels elk_kernels_avx2;
uint32_t elk_cpu_features(void);
const elk_kernels *elk_kernels_select(uint32_t features, const char *name);
"""
