/* elk_linear: every matrix product of the decoder goes through here, y = W x for a batch of
 * activation rows. It quantizes activations once per row when the weight type wants Q8_0, then
 * runs the kernel table's gemm (if any) or its dot per row, split into row ranges across the
 * platform's parallel_for. Not here: the kernels themselves (kernels/) or threads (platform/). */
#include "model.h"

#include "elk/npu.h"

/* Multiply-adds below which a product runs on the calling thread only. */
#define MIN_PARALLEL_WORK (64u * 1024u)

typedef float (*dot_fn)(int n, const void *w, const void *x);
typedef void (*gemm_fn)(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                        size_t x_stride, int n_tok, float *y, int rows);

/* One linear product, described once and executed in row ranges [r0, r1) by one or more tasks. */
typedef struct linear_job {
    const elk_tensor *w;
    size_t row_bytes;  /* bytes of one weight row */
    const void *x;     /* n_tok activation rows, float32 or Q8_0 blocks */
    size_t x_stride;   /* bytes between activation rows */
    int n_tok;
    float *y;          /* (n_tok, rows) */
    dot_fn dot;
    gemm_fn gemm;      /* NULL: loop over dot */
} linear_job;

/* Rows [r0, r1) for every token. The dot loop keeps one weight row hot across the batch. */
static void linear_rows(const linear_job *j, int r0, int r1)
{
    const int rows = (int)j->w->rows, cols = (int)j->w->cols;
    if (j->gemm) {
        j->gemm(cols, j->w->data, j->row_bytes, r0, r1, j->x, j->x_stride, j->n_tok, j->y, rows);
        return;
    }
    const char *wrow = (const char *)j->w->data + (size_t)r0 * j->row_bytes;
    for (int r = r0; r < r1; r++, wrow += j->row_bytes) {
        const char *xrow = j->x;
        for (int t = 0; t < j->n_tok; t++, xrow += j->x_stride)
            j->y[(size_t)t * rows + r] = j->dot(cols, wrow, xrow);
    }
}

/* parallel_for task: an even share of the rows, cut at multiples of 4 (the gemm row tile) except
 * the end (the split does not change any result). */
static void linear_task(void *ctx, int index, int count)
{
    const linear_job *j = ctx;
    const int64_t rows = j->w->rows;
    const int r0 = (int)(rows * index / count) & ~3;
    const int r1 = index + 1 == count ? (int)rows : (int)(rows * (index + 1) / count) & ~3;
    linear_rows(j, r0, r1);
}

int elk_linear(elk_model *m, const elk_tensor *w, const float *x, int n_tok, float *y)
{
    const elk_kernels *k = m->kernels;
    const int type = (int)w->type, cols = (int)w->cols;
    linear_job j = {
        .w = w,
        .row_bytes = elk_row_bytes(type, cols),
        .x = x,
        .x_stride = (size_t)cols * sizeof(float),
        .n_tok = n_tok,
        .y = y,
        .dot = k->dot[type] ? k->dot[type] : elk_kernels_ref.dot[type],
        .gemm = k->gemm[type],
    };
    if (!j.dot || n_tok > (int)m->max_batch)
        return ELK_E_UNSUPPORTED;

    /* NPU offload hook: m->npu_ctx is an elk_npu_runner over the image's NPU section (elk/npu.h).
     * Prefill batches of the block linears go through it in fixed-size int8 chunks; whatever it
     * hands back (decode, declined or failed layers) runs on the CPU path below. */
    if (m->npu && m->npu_ctx && n_tok > 1 &&
        elk_npu_linear((elk_npu_runner *)m->npu_ctx, w->role, w->layer, w->rows, w->cols, x, y,
                       n_tok) == ELK_OK)
        return ELK_OK;

    /* Quantize each activation row once, not once per weight row. */
    if (elk_vec_type(type) == ELK_TYPE_Q8_0) {
        void (*quantize)(const float *, elk_block_q8_0 *, int) =
            k->quantize_q8_0 ? k->quantize_q8_0 : elk_kernels_ref.quantize_q8_0;
        j.x_stride = elk_row_bytes(ELK_TYPE_Q8_0, cols);
        for (int t = 0; t < n_tok; t++)
            quantize(x + (size_t)t * cols, (elk_block_q8_0 *)((char *)m->xq + t * j.x_stride), cols);
        j.x = m->xq;
    }

    /* Threads only pay off with enough work per task (a 64 x 64 layer is faster serial). */
    const uint64_t work = (uint64_t)w->rows * (uint64_t)cols * (uint64_t)n_tok;
    /* One task per thread (claimed dynamically: a thread that is not running when the job is
     * posted leaves its share to the others). Measured on the shared 2-core host, 4 or 16 smaller
     * tasks per thread cost more CPU per token (more, shorter weight streams) and won nothing. */
    const int tasks = m->exec.n_threads;
    if (m->exec.parallel_for && m->exec.n_threads > 1 && w->rows >= (uint32_t)m->exec.n_threads &&
        work >= MIN_PARALLEL_WORK)
        m->exec.parallel_for(m->exec.pool, linear_task, &j, tasks);
    else
        linear_rows(&j, 0, (int)w->rows);
    return ELK_OK;
}
