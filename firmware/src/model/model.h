/* Internal view of the decoder state shared by model.c (forward pass), linear.c (every matrix
 * product) and generate.c (the decode loop). Public callers use elk/elk.h only; this struct is
 * not part of the API and may change. */
#ifndef ELK_MODEL_INTERNAL_H
#define ELK_MODEL_INTERNAL_H

#include "elk/elk.h"
#include "kernels/kernels.h"

/* Read-only views of one block's weights, in place in the image. */
typedef struct elk_layer {
    elk_tensor attn_norm; /* (1, dim) f32 */
    elk_tensor wq;        /* (n_heads * head_dim, dim) */
    elk_tensor wk, wv;    /* (n_kv_heads * head_dim, dim) */
    elk_tensor wo;        /* (dim, n_heads * head_dim) */
    elk_tensor ffn_norm;  /* (1, dim) f32 */
    elk_tensor w1, w3;    /* gate, up: (hidden_dim, dim) */
    elk_tensor w2;        /* down: (dim, hidden_dim) */
} elk_layer;

struct elk_model {
    const elk_image *img;
    elk_config cfg;
    uint32_t n_ctx, max_batch;
    uint32_t q_dim, kv_dim;       /* n_heads * head_dim, n_kv_heads * head_dim */
    const elk_kernels *kernels;   /* the selected table; NULL dot/gemm slots fall back to ref */
    elk_exec exec;
    const struct elk_npu_backend *npu; /* (optional) offload hook, see linear.c */
    void *npu_ctx;

    elk_tensor tok_embd;          /* (vocab, dim) any type: one row dequantized per token */
    elk_tensor output_norm;       /* (1, dim) f32 */
    const float *rope_freqs;      /* (head_dim / 2) RoPE frequency divisors, or NULL (plain RoPE) */
    elk_tensor output;            /* (vocab, dim): tok_embd when the output is tied */
    elk_layer *layers;            /* n_layers */

    /* KV cache, float32: (n_layers, n_ctx, kv_dim) each. */
    float *key_cache, *value_cache;

    /* Activations for up to max_batch tokens, one row per token. */
    float *x;        /* (B, dim) residual stream */
    float *xb;       /* (B, dim) normed input / branch output */
    float *q;        /* (B, q_dim) */
    float *k, *v;    /* (B, kv_dim) */
    float *att;      /* (B, q_dim) attention output */
    float *hb, *hb2; /* (B, hidden_dim) */
    float *scores;   /* (n_heads, n_ctx) attention weights, one row per head */
    float *rope;     /* (B, 2 * head_dim) per token of the batch: cos table, signed-sin table (rope_angles) */
    void *xq;        /* activations quantized for linear layers: B rows of xq_row_bytes */
    size_t xq_row_bytes;
};

/* y[t * w->rows + r] = sum_c W[r][c] * x[t * w->cols + c] for t < n_tok, r < w->rows.
 * The only entry point for matrix products (see linear.c for the hooks it offers). */
int elk_linear(elk_model *m, const elk_tensor *w, const float *x, int n_tok, float *y);

#define ELK_LINEAR_MAX_PARTS 3

/* Called on rows [r0, r1) of an unstacked group once all its products for those rows are done
 * (on the thread that computed them). */
typedef void (*elk_rows_fn)(void *ctx, int r0, int r1);

/* n products y[i] = w[i] x over one input x (same cols and activation type), run in ONE split:
 * stacked = 1 splits the rows of all weights as one row space (Q, K, V); stacked = 0 needs equal
 * row counts and gives each task the same rows of every weight, then calls post on them (gate and
 * up, then SwiGLU). Results equal n separate elk_linear calls bit for bit. */
int elk_linear_group(elk_model *m, const elk_tensor *const *w, float *const *y, int n, int stacked,
                     const float *x, int n_tok, elk_rows_fn post, void *post_ctx);

/* An input prepared once (quantized to Q8_0 in m->xq when the weight type wants it) for
 * elk_linear_range calls on any weights of the same width and activation type. */
typedef struct elk_linear_input {
    const void *x;
    size_t x_stride;
    int n_tok, vec_type, cols;
} elk_linear_input;

int elk_linear_prepare(elk_model *m, const elk_tensor *w, const float *x, int n_tok, elk_linear_input *in);

/* Rows [r0, r1) of y = w x on the calling thread; r0 a multiple of 4. No NPU offload. */
int elk_linear_range(const elk_model *m, const elk_tensor *w, const elk_linear_input *in, float *y,
                     int r0, int r1);

#endif /* ELK_MODEL_INTERNAL_H */
