/* elk_linear / elk_linear_group: every matrix product of the decoder goes through here, y = W x
 * for a batch of activation rows. Activations are quantized once per row when the weight type
 * wants Q8_0, then the kernel table's gemm (if any) or its dot per row runs, split into row
 * ranges across the platform's parallel_for. A group runs several products that share one input
 * in ONE parallel_for (Q, K, V as one stacked row space; gate and up over the same rows with the
 * SwiGLU product fused at the end of each range), so a token pays fewer thread barriers.
 * Not here: the kernels themselves (kernels/) or threads (platform/). */
#include "model.h"

#include "elk/npu.h"

/* Multiply-adds below which a product runs on the calling thread only. */
#define MIN_PARALLEL_WORK (64u * 1024u)

typedef float (*dot_fn)(int n, const void *w, const void *x);
typedef void (*gemm_fn)(int n, const void *w, size_t row_bytes, int r0, int r1, const void *x,
                        size_t x_stride, int n_tok, float *y, int rows);

/* One weight of a job. */
typedef struct linear_part {
    const elk_tensor *w;
    float *y;          /* (n_tok, w->rows) */
    size_t row_bytes;  /* bytes of one weight row */
    dot_fn dot;
    gemm_fn gemm;      /* NULL: loop over dot */
} linear_part;

/* One to ELK_LINEAR_MAX_PARTS products over the same input, executed in row ranges by tasks. */
typedef struct linear_job {
    linear_part part[ELK_LINEAR_MAX_PARTS];
    int n_parts;
    int stacked;       /* 1: rows of the parts one after another; 0: every part over the same rows */
    int space;         /* rows of the split space */
    const void *x;     /* n_tok activation rows, float32 or Q8_0 blocks */
    size_t x_stride;   /* bytes between activation rows */
    int n_tok;
    elk_rows_fn post;  /* (optional, unstacked) run on each task's rows after its products */
    void *post_ctx;
} linear_job;

/* Rows [r0, r1) of one part for every token. The dot loop keeps one weight row hot. */
static void part_rows(const linear_job *j, const linear_part *p, int r0, int r1)
{
    const int rows = (int)p->w->rows, cols = (int)p->w->cols;
    if (r0 >= r1)
        return;
    if (p->gemm) {
        p->gemm(cols, p->w->data, p->row_bytes, r0, r1, j->x, j->x_stride, j->n_tok, p->y, rows);
        return;
    }
    const char *wrow = (const char *)p->w->data + (size_t)r0 * p->row_bytes;
    for (int r = r0; r < r1; r++, wrow += p->row_bytes) {
        const char *xrow = j->x;
        for (int t = 0; t < j->n_tok; t++, xrow += j->x_stride)
            p->y[(size_t)t * rows + r] = p->dot(cols, wrow, xrow);
    }
}

/* Rows [a, b) of the job's row space. Every output element is computed by the same kernel call
 * shape on the same bytes whatever the split, so results do not depend on the thread count. */
static void job_rows(const linear_job *j, int a, int b)
{
    int base = 0;
    for (int i = 0; i < j->n_parts; i++) {
        const linear_part *p = &j->part[i];
        const int rows = (int)p->w->rows;
        if (!j->stacked) {
            part_rows(j, p, a, b);
            continue;
        }
        int lo = a > base ? a - base : 0, hi = b - base < rows ? b - base : rows;
        part_rows(j, p, lo, hi);
        base += rows;
    }
    if (j->post && a < b)
        j->post(j->post_ctx, a, b);
}

/* parallel_for task: an even share of the row space, cut at multiples of 4 (the gemm row tile)
 * except the end (the split does not change any result). */
static void linear_task(void *ctx, int index, int count)
{
    const linear_job *j = ctx;
    const int64_t rows = j->space;
    const int r0 = (int)(rows * index / count) & ~3;
    const int r1 = index + 1 == count ? (int)rows : (int)(rows * (index + 1) / count) & ~3;
    job_rows(j, r0, r1);
}

/* Quantize each activation row once (not once per weight row) when the parts want Q8_0. */
static void prepare_input(elk_model *m, linear_job *j, const float *x, int cols)
{
    const elk_kernels *k = m->kernels;
    j->x = x;
    j->x_stride = (size_t)cols * sizeof(float);
    if (elk_vec_type((int)j->part[0].w->type) != ELK_TYPE_Q8_0)
        return;
    void (*quantize)(const float *, elk_block_q8_0 *, int) =
        k->quantize_q8_0 ? k->quantize_q8_0 : elk_kernels_ref.quantize_q8_0;
    j->x_stride = elk_row_bytes(ELK_TYPE_Q8_0, cols);
    for (int t = 0; t < j->n_tok; t++)
        quantize(x + (size_t)t * cols, (elk_block_q8_0 *)((char *)m->xq + t * j->x_stride), cols);
    j->x = m->xq;
}

/* Run the job on the pool when it is big enough to pay for a barrier, else on this thread. */
static void run_job(elk_model *m, linear_job *j, int cols)
{
    uint64_t rows = 0;
    for (int i = 0; i < j->n_parts; i++)
        rows += j->part[i].w->rows;
    const uint64_t work = rows * (uint64_t)cols * (uint64_t)j->n_tok;
    /* One task per thread (claimed dynamically: a thread that is not running when the job is
     * posted leaves its share to the others). Measured on the shared 2-core host, 4 or 16 smaller
     * tasks per thread cost more CPU per token (more, shorter weight streams) and won nothing. */
    const int tasks = m->exec.n_threads;
    if (m->exec.parallel_for && tasks > 1 && j->space >= tasks && work >= MIN_PARALLEL_WORK)
        m->exec.parallel_for(m->exec.pool, linear_task, j, tasks);
    else
        job_rows(j, 0, j->space);
}

/* NPU offload hook: m->npu_ctx is an elk_npu_runner over the image's NPU section (elk/npu.h).
 * Prefill batches of the block linears go through it in fixed-size int8 chunks; whatever it
 * hands back (decode, declined or failed layers) runs on the CPU path. */
static int npu_try(elk_model *m, const elk_tensor *w, const float *x, int n_tok, float *y)
{
    return m->npu && m->npu_ctx && n_tok > 1 &&
           elk_npu_linear((elk_npu_runner *)m->npu_ctx, w->role, w->layer, w->rows, w->cols, x, y,
                          n_tok) == ELK_OK;
}

static int fill_part(const elk_model *m, linear_part *p, const elk_tensor *w, float *y)
{
    const elk_kernels *k = m->kernels;
    const int type = (int)w->type;
    if (type < 0 || type >= ELK_TYPE_COUNT)
        return ELK_E_UNSUPPORTED;
    p->w = w;
    p->y = y;
    p->row_bytes = elk_row_bytes(type, (int)w->cols);
    p->dot = k->dot[type] ? k->dot[type] : elk_kernels_ref.dot[type];
    p->gemm = k->gemm[type];
    return p->dot ? ELK_OK : ELK_E_UNSUPPORTED;
}

int elk_linear(elk_model *m, const elk_tensor *w, const float *x, int n_tok, float *y)
{
    return elk_linear_group(m, &w, &y, 1, 1, x, n_tok, NULL, NULL);
}

int elk_linear_group(elk_model *m, const elk_tensor *const *w, float *const *y, int n, int stacked,
                     const float *x, int n_tok, elk_rows_fn post, void *post_ctx)
{
    if (n < 1 || n > ELK_LINEAR_MAX_PARTS || n_tok > (int)m->max_batch || (stacked && post))
        return ELK_E_UNSUPPORTED;
    const int cols = (int)w[0]->cols;
    linear_job j = { .n_parts = 0, .stacked = stacked, .n_tok = n_tok };
    int same = 1;
    for (int i = 0; i < n; i++) {
        int rc = fill_part(m, &j.part[i], w[i], y[i]);
        if (rc)
            return rc;
        /* One input for all parts needs the same width and activation type (a per-tensor
         * recipe can mix them: then the products run one by one, same results). */
        same &= (int)w[i]->cols == cols && elk_vec_type((int)w[i]->type) == elk_vec_type((int)w[0]->type);
        if (!stacked && w[i]->rows != w[0]->rows)
            return ELK_E_UNSUPPORTED;
    }
    if (!same && n > 1) {
        for (int i = 0; i < n; i++) {
            int rc = elk_linear_group(m, &w[i], &y[i], 1, 1, x, n_tok, NULL, NULL);
            if (rc)
                return rc;
        }
        if (post)
            post(post_ctx, 0, (int)w[0]->rows);
        return ELK_OK;
    }
    /* Products the NPU takes are left out of the CPU job (all of them or none in practice). */
    for (int i = 0; i < n; i++)
        if (!npu_try(m, w[i], x, n_tok, y[i]))
            j.part[j.n_parts++] = j.part[i];
    j.space = 0;
    for (int i = 0; i < j.n_parts; i++)
        j.space = stacked ? j.space + (int)j.part[i].w->rows : (int)j.part[i].w->rows;
    if (j.n_parts == 0) {
        if (post)
            post(post_ctx, 0, (int)w[0]->rows);
        return ELK_OK;
    }
    if (!stacked && j.n_parts < n) { /* some parts on the NPU: their rows still need post */
        j.post = NULL;
        prepare_input(m, &j, x, cols);
        run_job(m, &j, cols);
        if (post)
            post(post_ctx, 0, (int)w[0]->rows);
        return ELK_OK;
    }
    j.post = post;
    j.post_ctx = post_ctx;
    prepare_input(m, &j, x, cols);
    run_job(m, &j, cols);
    return ELK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Caller-split products: the model quantizes the input once, then its own tasks compute row
 * ranges (attention computes each KV group's Q, K and V rows in the task that attends with them). */

int elk_linear_prepare(elk_model *m, const elk_tensor *w, const float *x, int n_tok, elk_linear_input *in)
{
    linear_job j = { .n_parts = 1, .stacked = 1, .n_tok = n_tok };
    if (n_tok > (int)m->max_batch)
        return ELK_E_UNSUPPORTED;
    int rc = fill_part(m, &j.part[0], w, NULL);
    if (rc)
        return rc;
    prepare_input(m, &j, x, (int)w->cols);
    in->x = j.x;
    in->x_stride = j.x_stride;
    in->n_tok = n_tok;
    in->vec_type = elk_vec_type((int)w->type);
    in->cols = (int)w->cols;
    return ELK_OK;
}

int elk_linear_range(const elk_model *m, const elk_tensor *w, const elk_linear_input *in, float *y,
                     int r0, int r1)
{
    linear_job j = { .n_parts = 1, .stacked = 1, .n_tok = in->n_tok, .x = in->x, .x_stride = in->x_stride };
    int rc = fill_part(m, &j.part[0], w, y);
    if (rc || (int)w->cols != in->cols || elk_vec_type((int)w->type) != in->vec_type)
        return rc ? rc : ELK_E_UNSUPPORTED;
    part_rows(&j, &j.part[0], r0, r1);
    return ELK_OK;
}
