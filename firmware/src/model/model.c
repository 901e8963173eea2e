/* The Llama decoder: arena layout, weight binding and the batched forward pass (RMSNorm, RoPE on
 * interleaved pairs, grouped-query attention over a float32 KV cache, SwiGLU FFN, tied or separate
 * output). Numerics follow host/elk/reference.py. Matrix products go through elk_linear (linear.c);
 * sampling and the decode loop live in sampler/ and generate.c. */
#include <math.h>
#include <string.h>

#include "model.h"
#include "util/util.h"

#define DEFAULT_BATCH 64u
#define MAX_BATCH 4096u /* tokens per forward call; keeps every index in int range */
#define ARENA_ALIGN 64u

/* ---------------------------------------------------------------------------------------------
 * Arena layout: one pass that either measures (base == NULL) or carves. */

typedef struct carver {
    char *base;
    uint64_t used;
    int overflow;
} carver;

static void *carve(carver *c, uint64_t n, uint64_t elem)
{
    uint64_t bytes, start, end;
    if (elk_mul_overflow(n, elem, &bytes) || elk_add_overflow(c->used, ARENA_ALIGN - 1, &start)) {
        c->overflow = 1;
        return NULL;
    }
    start &= ~(uint64_t)(ARENA_ALIGN - 1);
    if (elk_add_overflow(start, bytes, &end)) {
        c->overflow = 1;
        return NULL;
    }
    c->used = end;
    return c->base ? c->base + start : NULL;
}

static uint32_t opt_n_ctx(const elk_image *img, const elk_model_opts *o)
{
    uint32_t n = o && o->n_ctx ? o->n_ctx : img->config.seq_len;
    return n < img->config.seq_len ? n : img->config.seq_len;
}

static uint32_t opt_batch(const elk_model_opts *o)
{
    uint32_t b = o && o->max_batch ? o->max_batch : DEFAULT_BATCH;
    return b < MAX_BATCH ? b : MAX_BATCH;
}

/* Lay out the model in the arena; with c->base == NULL only measures. */
static elk_model *layout(carver *c, const elk_image *img, const elk_model_opts *o)
{
    const elk_config *cfg = &img->config;
    uint64_t n_ctx = opt_n_ctx(img, o), B = opt_batch(o);
    uint64_t q_dim = (uint64_t)cfg->n_heads * cfg->head_dim;
    uint64_t kv_dim = (uint64_t)cfg->n_kv_heads * cfg->head_dim;
    uint64_t widest = cfg->dim > q_dim ? cfg->dim : q_dim, cache = 0;
    widest = widest > cfg->hidden_dim ? widest : cfg->hidden_dim;
    if (elk_mul_overflow((uint64_t)cfg->n_layers * n_ctx, kv_dim, &cache))
        c->overflow = 1;

    elk_model *m = carve(c, 1, sizeof(elk_model));
    elk_layer *layers = carve(c, cfg->n_layers, sizeof(elk_layer));
    float *kc = carve(c, cache, sizeof(float)), *vc = carve(c, cache, sizeof(float));
    float *x = carve(c, B * cfg->dim, 4), *xb = carve(c, B * cfg->dim, 4);
    float *q = carve(c, B * q_dim, 4), *k = carve(c, B * kv_dim, 4), *v = carve(c, B * kv_dim, 4);
    float *att = carve(c, B * q_dim, 4);
    float *hb = carve(c, B * cfg->hidden_dim, 4), *hb2 = carve(c, B * cfg->hidden_dim, 4);
    float *scores = carve(c, (uint64_t)cfg->n_heads * n_ctx, 4);
    float *rope = carve(c, B * 2 * (uint64_t)cfg->head_dim, 4); /* per token: cos table, signed-sin table */
    size_t xq_row = elk_row_bytes(ELK_TYPE_Q8_0, (int64_t)((widest + ELK_QK - 1) / ELK_QK * ELK_QK));
    void *xq = carve(c, B, xq_row);
    if (!c->base || c->overflow)
        return NULL;
    memset(m, 0, sizeof *m);
    m->layers = layers;
    m->key_cache = kc;
    m->value_cache = vc;
    m->x = x, m->xb = xb, m->q = q, m->k = k, m->v = v, m->att = att;
    m->hb = hb, m->hb2 = hb2, m->scores = scores, m->rope = rope;
    m->xq = xq;
    m->xq_row_bytes = xq_row;
    m->n_ctx = (uint32_t)n_ctx;
    m->max_batch = (uint32_t)B;
    m->q_dim = (uint32_t)q_dim;
    m->kv_dim = (uint32_t)kv_dim;
    return m;
}

uint64_t elk_model_arena_size(const elk_image *img, const elk_model_opts *opts)
{
    if (!img || img->n_tensors == 0)
        return 0;
    carver c = { 0 };
    layout(&c, img, opts);
    return c.overflow ? 0 : c.used + ARENA_ALIGN; /* + slack to align an unaligned arena */
}

/* ---------------------------------------------------------------------------------------------
 * Weight binding */

static int bind(const elk_image *img, int role, int layer, elk_tensor *out)
{
    return elk_image_find(img, role, layer, out);
}

static int bind_weights(elk_model *m)
{
    const elk_image *img = m->img;
    int rc = bind(img, ELK_ROLE_TOK_EMBD, 0, &m->tok_embd);
    rc = rc ? rc : bind(img, ELK_ROLE_OUTPUT_NORM, 0, &m->output_norm);
    if (!rc && (m->cfg.model_flags & ELK_MODEL_FLAG_TIED_OUTPUT))
        m->output = m->tok_embd;
    else if (!rc)
        rc = bind(img, ELK_ROLE_OUTPUT, 0, &m->output);
    elk_tensor f; /* optional; its shape, type and values (positive, finite) were checked at open */
    m->rope_freqs = !rc && elk_image_find(img, ELK_ROLE_ROPE_FREQS, 0, &f) == ELK_OK ? (const float *)f.data : NULL;
    for (uint32_t l = 0; !rc && l < m->cfg.n_layers; l++) {
        elk_layer *L = &m->layers[l];
        const struct { int role; elk_tensor *t; } want[] = {
            { ELK_ROLE_ATTN_NORM, &L->attn_norm }, { ELK_ROLE_WQ, &L->wq }, { ELK_ROLE_WK, &L->wk },
            { ELK_ROLE_WV, &L->wv }, { ELK_ROLE_WO, &L->wo }, { ELK_ROLE_FFN_NORM, &L->ffn_norm },
            { ELK_ROLE_W1, &L->w1 }, { ELK_ROLE_W2, &L->w2 }, { ELK_ROLE_W3, &L->w3 },
        };
        for (unsigned i = 0; !rc && i < sizeof want / sizeof want[0]; i++)
            rc = bind(img, want[i].role, (int)l, want[i].t);
    }
    return rc;
}

/* Every linear weight type must have a dot kernel (in the table or the reference one). */
static int check_kernels(const elk_model *m)
{
    const elk_tensor *ts[] = { &m->output };
    if (!elk_kernels_ref.dot[ts[0]->type])
        return ELK_E_UNSUPPORTED;
    for (uint32_t l = 0; l < m->cfg.n_layers; l++) {
        const elk_layer *L = &m->layers[l];
        const elk_tensor *w[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3 };
        for (unsigned i = 0; i < sizeof w / sizeof w[0]; i++)
            if (w[i]->type >= ELK_TYPE_COUNT || !elk_kernels_ref.dot[w[i]->type])
                return ELK_E_UNSUPPORTED;
    }
    return ELK_OK;
}

int elk_model_init(elk_model **out, const elk_image *img, const elk_model_opts *opts, void *arena,
                   uint64_t arena_size)
{
    if (!out || !img || !arena || img->n_tensors == 0)
        return ELK_E_INVAL;
    *out = NULL;
    uint64_t need = elk_model_arena_size(img, opts);
    if (need == 0)
        return ELK_E_RANGE;
    if (arena_size < need)
        return ELK_E_NOMEM;
    uintptr_t a = ((uintptr_t)arena + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
    carver c = { (char *)a, 0, 0 };
    elk_model *m = layout(&c, img, opts);
    m->img = img;
    m->cfg = img->config;
    m->kernels = opts && opts->kernels ? opts->kernels : elk_kernels_select(elk_cpu_features(), NULL);
    if (!m->kernels)
        m->kernels = &elk_kernels_ref;
    if (opts) {
        m->exec = opts->exec;
        m->npu = opts->npu;
        m->npu_ctx = opts->npu_ctx;
    }
    int rc = bind_weights(m);
    rc = rc ? rc : check_kernels(m);
    if (rc)
        return rc;
    *out = m;
    return ELK_OK;
}

const elk_config *elk_model_config(const elk_model *m)
{
    return &m->cfg;
}

uint32_t elk_model_n_ctx(const elk_model *m)
{
    return m->n_ctx;
}

const char *elk_model_kernels_name(const elk_model *m)
{
    return m->kernels->name;
}

/* ---------------------------------------------------------------------------------------------
 * Forward pass building blocks. Shapes: n rows of `dim` floats, one per token. */

/* Sum of (double)(x[i] * x[i]) (each square rounded in float32) in numpy's pairwise order, so the
 * double is the reference's to the last bit: below 8 terms one after another; up to 128, eight
 * running sums over strides of 8 combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the rest;
 * above, the two halves (the first a multiple of 8 long) summed apart. Eight independent chains are
 * also ~8x faster than one. */
static double sum_squares(const float *x, int n)
{
    if (n < 8) {
        double res = 0.0;
        for (int i = 0; i < n; i++)
            res += (double)(x[i] * x[i]);
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++)
            r[j] = (double)(x[j] * x[j]);
        int i = 8;
        for (; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += (double)(x[i + j] * x[i + j]);
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += (double)(x[i] * x[i]);
        return res;
    }
    const int half = n / 2 - (n / 2) % 8;
    return sum_squares(x, half) + sum_squares(x + half, n - half);
}

/* o = (x / sqrt(mean(x^2) + eps)) * w per row, rounded step by step in float32 as the reference
 * does (a different rounding here can flip a Q8_0 activation downstream). */
static void rmsnorm(float *o, const float *x, const float *w, int n, int dim, float eps)
{
    for (int t = 0; t < n; t++, o += dim, x += dim) {
        const double ss = sum_squares(x, dim);
        float rms = sqrtf((float)ss / (float)dim + eps);
        for (int i = 0; i < dim; i++)
            o[i] = (x[i] / rms) * w[i];
    }
}

/* Rotation tables for one position: rope[j] = cos(a_i) and rope[head_dim + j] = -sin(a_i) for
 * j = 2i, +sin(a_i) for j = 2i + 1, where a_i = pos * (theta^(-2i/head_dim) / f_i), f_i = 1 unless
 * the image has RoPE frequency divisors (Llama 3 scaling). The frequency and the angle are rounded
 * to float32 as the reference computes them (it matters at long positions); cos/sin are evaluated
 * in double and rounded, so the tables do not depend on the C library's float cosf/sinf. */
static void rope_angles(float *rope, int head_dim, int pos, float theta, const float *freqs)
{
    for (int i = 0; i < head_dim / 2; i++) {
        float freq = (float)pow((double)theta, -2.0 * i / head_dim);
        if (freqs)
            freq = freq / freqs[i];
        float a = (float)pos * freq;
        float c = (float)cos((double)a), s = (float)sin((double)a);
        rope[2 * i] = rope[2 * i + 1] = c;
        rope[head_dim + 2 * i] = -s;
        rope[head_dim + 2 * i + 1] = s;
    }
}

/* Rotate consecutive pairs (x[2i], x[2i+1]) of each of n_heads heads:
 *   x[2i] = x0 c - x1 s,  x[2i+1] = x1 c + x0 s   (two products, each rounded, then one add).
 * Written as x * cos + swap(x) * signed_sin with the sign taken from the table, every lane is a
 * plain add of two products. The obvious form (a sub in even lanes, an add in odd ones) is what
 * GCC 12's vectorizer turns into vfmaddsub (x0 c fused, unrounded) even under -ffp-contract=off;
 * a lane-uniform add is only fused when contraction is allowed, which the build forbids.
 * -(x1 s) is exact, so the result is bit-identical to the reference's a*cos - b*sin. */
static void rope_apply(float *x, const float *rope, int n_heads, int head_dim)
{
    const float *cs = rope, *sn = rope + head_dim;
    for (int h = 0; h < n_heads; h++, x += head_dim) {
        for (int i = 0; i < head_dim; i += 2) {
            float x0 = x[i], x1 = x[i + 1];
            float r0 = x0 * cs[i] + x1 * sn[i];
            float r1 = x1 * cs[i + 1] + x0 * sn[i + 1];
            x[i] = r0;
            x[i + 1] = r1;
        }
    }
}

/* Causal GQA attention of token t (at position p) over cache positions [0, p]:
 * out[h] = sum_s softmax_s(q[h] . k_s[h / group] / sqrt(head_dim)) * v_s[h / group], by the kernel
 * table, one call per run of query heads that share a KV head (they share its cache reads). */
static void attend(elk_model *m, int layer, const float *q, int p, float *out, int h0, int h1)
{
    const int hd = (int)m->cfg.head_dim, kv_dim = (int)m->kv_dim;
    const int group = (int)(m->cfg.n_heads / m->cfg.n_kv_heads);
    const float *kc = m->key_cache + (size_t)layer * m->n_ctx * kv_dim;
    const float *vc = m->value_cache + (size_t)layer * m->n_ctx * kv_dim;
    const float scale = 1.0f / sqrtf((float)hd);
    void (*heads)(int, int, int, const float *, const float *, const float *, size_t, float, float *, size_t,
                  float *) = m->kernels->attend ? m->kernels->attend : elk_kernels_ref.attend;
    for (int h = h0; h < h1;) {
        const int g = h / group, h_end = (g + 1) * group < h1 ? (g + 1) * group : h1;
        heads(hd, h_end - h, p + 1, q + h * hd, kc + g * hd, vc + g * hd, (size_t)kv_dim, scale,
              m->scores + (size_t)h * m->n_ctx, m->n_ctx, out + h * hd);
        h = h_end;
    }
}

/* Below this many multiply-adds a split costs more than it saves (same bar as linear.c). */
#define MIN_PARALLEL_WORK (64u * 1024u)

/* Run fn over `tasks` indices on the pool if there is one and the work pays for a barrier. */
static void split(elk_model *m, elk_task_fn fn, void *ctx, uint64_t work)
{
    const int tasks = m->exec.n_threads;
    if (m->exec.parallel_for && tasks > 1 && work >= MIN_PARALLEL_WORK)
        m->exec.parallel_for(m->exec.pool, fn, ctx, tasks);
    else
        fn(ctx, 0, 1);
}

typedef struct attn_job {
    elk_model *m;
    int layer, n, pos;
} attn_job;

/* parallel_for task: a contiguous range of query heads (so whole KV groups when the split is even)
 * for every token of the batch. Each head's scores row and output are its own: no sharing. */
static void attn_task(void *ctx, int index, int count)
{
    const attn_job *j = ctx;
    elk_model *m = j->m;
    const int heads = (int)m->cfg.n_heads, q_dim = (int)m->q_dim;
    const int h0 = heads * index / count, h1 = heads * (index + 1) / count;
    for (int t = 0; t < j->n; t++)
        attend(m, j->layer, m->q + (size_t)t * q_dim, j->pos + t, m->att + (size_t)t * q_dim, h0, h1);
}

/* Rotate token t's q/k heads of KV groups [g0, g1) with the table `rope` and store its k/v rows
 * of those groups in layer l's cache at position pos. */
static void rope_store(elk_model *m, int l, int t, int pos, const float *rope, int g0, int g1)
{
    const int hd = (int)m->cfg.head_dim, q_dim = (int)m->q_dim, kv_dim = (int)m->kv_dim;
    const int group = (int)(m->cfg.n_heads / m->cfg.n_kv_heads);
    const size_t slot = ((size_t)l * m->n_ctx + (size_t)pos) * kv_dim + (size_t)g0 * hd;
    const size_t kv = (size_t)t * kv_dim + (size_t)g0 * hd, bytes = (size_t)(g1 - g0) * hd * sizeof(float);
    rope_apply(m->q + (size_t)t * q_dim + (size_t)g0 * group * hd, rope, (g1 - g0) * group, hd);
    rope_apply(m->k + kv, rope, g1 - g0, hd);
    memcpy(m->key_cache + slot, m->k + kv, bytes);
    memcpy(m->value_cache + slot, m->v + kv, bytes);
}

typedef struct qkv_job {
    elk_model *m;
    int layer, n, pos;
    elk_linear_input in;
} qkv_job;

/* parallel_for task of the fused attention step: for KV groups [g0, g1) it computes the Q rows of
 * the group's query heads and the K and V rows, rotates them, stores K/V in the cache and attends,
 * so one barrier covers Q, K, V, RoPE and attention. Every element is computed exactly as the
 * serial path does. */
static void qkv_attn_task(void *ctx, int index, int count)
{
    const qkv_job *j = ctx;
    elk_model *m = j->m;
    const elk_layer *L = &m->layers[j->layer];
    const int G = (int)m->cfg.n_kv_heads, hd = (int)m->cfg.head_dim, q_dim = (int)m->q_dim;
    const int group = (int)m->cfg.n_heads / G;
    const int g0 = G * index / count, g1 = G * (index + 1) / count;
    elk_linear_range(m, &L->wq, &j->in, m->q, g0 * group * hd, g1 * group * hd);
    elk_linear_range(m, &L->wk, &j->in, m->k, g0 * hd, g1 * hd);
    elk_linear_range(m, &L->wv, &j->in, m->v, g0 * hd, g1 * hd);
    for (int t = 0; t < j->n; t++)
        rope_store(m, j->layer, t, j->pos + t, m->rope + (size_t)t * 2 * hd, g0, g1);
    for (int t = 0; t < j->n; t++)
        attend(m, j->layer, m->q + (size_t)t * q_dim, j->pos + t, m->att + (size_t)t * q_dim,
               g0 * group, g1 * group);
}

/* Can Q, K, V and attention run as one split by KV groups? Needs a pool whose thread count
 * divides the KV heads, 4-row aligned heads, one activation type for the three weights, no NPU
 * prefill (it takes whole matrices) and enough work. */
static int fused_qkv_ok(const elk_model *m, const elk_layer *L, int n)
{
    const uint32_t T = (uint32_t)m->exec.n_threads, hd = m->cfg.head_dim, G = m->cfg.n_kv_heads;
    const uint64_t rows = (uint64_t)m->q_dim + 2u * m->kv_dim;
    if (!m->exec.parallel_for || T < 2 || G % T || hd % 4)
        return 0;
    if ((m->npu && m->npu_ctx && n > 1) || rows * m->cfg.dim * (uint64_t)n < MIN_PARALLEL_WORK)
        return 0;
    const int vt = elk_vec_type((int)L->wq.type);
    return elk_vec_type((int)L->wk.type) == vt && elk_vec_type((int)L->wv.type) == vt &&
           L->wk.cols == L->wq.cols && L->wv.cols == L->wq.cols;
}

/* Q, K, V, RoPE, cache store and attention of n tokens. */
static int qkv_attention(elk_model *m, int l, int n, int pos)
{
    const elk_layer *L = &m->layers[l];
    const int hd = (int)m->cfg.head_dim, q_dim = (int)m->q_dim;
    int rc;
    if (fused_qkv_ok(m, L, n)) {
        qkv_job j = { m, l, n, pos, { 0 } };
        if ((rc = elk_linear_prepare(m, &L->wq, m->xb, n, &j.in)))
            return rc;
        m->exec.parallel_for(m->exec.pool, qkv_attn_task, &j, m->exec.n_threads);
        return ELK_OK;
    }
    const elk_tensor *qkv[3] = { &L->wq, &L->wk, &L->wv };
    float *const qkv_out[3] = { m->q, m->k, m->v };
    if ((rc = elk_linear_group(m, qkv, qkv_out, 3, 1, m->xb, n, NULL, NULL)))
        return rc;
    for (int t = 0; t < n; t++)
        rope_store(m, l, t, pos + t, m->rope + (size_t)t * 2 * hd, 0, (int)m->cfg.n_kv_heads);
    attn_job aj = { m, l, n, pos };
    split(m, attn_task, &aj, (uint64_t)q_dim * (uint64_t)n * (uint64_t)(pos + n) * 2u);
    return ELK_OK;
}

/* Attention block for n tokens at positions pos..pos+n-1: x += Wo attn(norm(x)). */
static int attention_block(elk_model *m, int l, int n, int pos)
{
    const elk_layer *L = &m->layers[l];
    const int dim = (int)m->cfg.dim;
    int rc;
    rmsnorm(m->xb, m->x, L->attn_norm.data, n, dim, m->cfg.norm_eps);
    if ((rc = qkv_attention(m, l, n, pos)) || (rc = elk_linear(m, &L->wo, m->att, n, m->xb)))
        return rc;
    for (size_t i = 0; i < (size_t)n * dim; i++)
        m->x[i] += m->xb[i];
    return ELK_OK;
}

typedef struct swiglu_job {
    elk_model *m;
    int n;
} swiglu_job;

/* hb = silu(hb) * hb2 on hidden rows [r0, r1) of every token (run by the task that computed them). */
static void swiglu_rows(void *ctx, int r0, int r1)
{
    const swiglu_job *j = ctx;
    const size_t hidden = j->m->cfg.hidden_dim;
    void (*swiglu)(float *, const float *, int) = j->m->kernels->swiglu ? j->m->kernels->swiglu
                                                                        : elk_kernels_ref.swiglu;
    for (int t = 0; t < j->n; t++) {
        float *hb = j->m->hb + (size_t)t * hidden, *hb2 = j->m->hb2 + (size_t)t * hidden;
        swiglu(hb + r0, hb2 + r0, r1 - r0);
    }
}

/* FFN block: x += W2 (silu(W1 norm(x)) * W3 norm(x)). */
static int ffn_block(elk_model *m, int l, int n)
{
    const elk_layer *L = &m->layers[l];
    const int dim = (int)m->cfg.dim;
    int rc;
    rmsnorm(m->xb, m->x, L->ffn_norm.data, n, dim, m->cfg.norm_eps);
    const elk_tensor *gate_up[2] = { &L->w1, &L->w3 };
    float *const gate_up_out[2] = { m->hb, m->hb2 };
    swiglu_job sj = { m, n };
    if ((rc = elk_linear_group(m, gate_up, gate_up_out, 2, 0, m->xb, n, swiglu_rows, &sj)))
        return rc;
    if ((rc = elk_linear(m, &L->w2, m->hb, n, m->xb)))
        return rc;
    for (size_t i = 0; i < (size_t)n * dim; i++)
        m->x[i] += m->xb[i];
    return ELK_OK;
}

/* One batch of at most max_batch tokens. */
static int forward_batch(elk_model *m, const int32_t *tokens, int n, int pos, float *logits, int all)
{
    const int dim = (int)m->cfg.dim;
    const elk_tensor *e = &m->tok_embd;
    const size_t erow = elk_row_bytes((int)e->type, e->cols);
    const int hd = (int)m->cfg.head_dim;
    for (int t = 0; t < n; t++) {
        elk_dequantize_row((int)e->type, (const char *)e->data + (size_t)tokens[t] * erow,
                           m->x + (size_t)t * dim, dim);
        /* the batch's RoPE tables, once for all layers (pow, cos and sin are not cheap) */
        rope_angles(m->rope + (size_t)t * 2 * hd, hd, pos + t, m->cfg.rope_theta, m->rope_freqs);
    }
    for (int l = 0; l < (int)m->cfg.n_layers; l++) {
        int rc = attention_block(m, l, n, pos);
        rc = rc ? rc : ffn_block(m, l, n);
        if (rc)
            return rc;
    }
    if (!logits)
        return ELK_OK;
    /* Final norm and logits: every row, or only the last token's. */
    const float *xin = all ? m->x : m->x + (size_t)(n - 1) * dim;
    const int rows = all ? n : 1;
    rmsnorm(m->xb, xin, m->output_norm.data, rows, dim, m->cfg.norm_eps);
    return elk_linear(m, &m->output, m->xb, rows, logits);
}

int elk_model_forward(elk_model *m, const int32_t *tokens, int n, int pos, float *logits, int all_logits)
{
    if (!m || !tokens || !logits || n <= 0 || pos < 0)
        return ELK_E_INVAL;
    if ((int64_t)pos + n > (int64_t)m->n_ctx)
        return ELK_E_RANGE;
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || (uint32_t)tokens[t] >= m->cfg.vocab_size)
            return ELK_E_RANGE;
    const size_t vocab = m->cfg.vocab_size;
    for (int done = 0; done < n;) {
        int chunk = n - done < (int)m->max_batch ? n - done : (int)m->max_batch;
        /* Without all_logits only the final chunk computes logits (of its last row). */
        float *out = all_logits ? logits + (size_t)done * vocab : done + chunk == n ? logits : NULL;
        int rc = forward_batch(m, tokens + done, chunk, pos + done, out, all_logits);
        if (rc)
            return rc;
        done += chunk;
    }
    return ELK_OK;
}
