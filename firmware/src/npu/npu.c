/* NPU registry and runner: finds backends by name, and turns one linear layer call of the model into
 * fixed-shape int8 chunks for a backend (quantize, pad, run, dequantize, add the CPU's float term for
 * shadow-outlier channels). Anything declined or failing goes back to the caller's CPU path.
 * Not here: backends (sim.c, litert.c) or the CPU matmul itself (model/linear.c). */
#include <string.h>

#include "elk/npu.h"
#include "util/util.h"

/* ---------------------------------------------------------------------------------------------
 * Registry: fixed slots, filled at boot by platform code (no allocation). */

static const elk_npu_backend *registry[ELK_NPU_MAX_BACKENDS] = { &elk_npu_sim_backend };

static int valid_backend(const elk_npu_backend *b)
{
    return b && b->abi_version == ELK_NPU_ABI_VERSION && b->name && b->name[0] && b->run_linear_chunk;
}

int elk_npu_register(const elk_npu_backend *backend)
{
    if (!valid_backend(backend))
        return ELK_E_INVAL;
    for (int i = 0; i < ELK_NPU_MAX_BACKENDS; i++) {
        if (!registry[i] || strcmp(registry[i]->name, backend->name) == 0) {
            registry[i] = backend;
            return ELK_OK;
        }
    }
    return ELK_E_RANGE;
}

const elk_npu_backend *elk_npu_find(const char *name)
{
    for (int i = 0; name && i < ELK_NPU_MAX_BACKENDS && registry[i]; i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Runner */

static const char *role_name(int role)
{
    switch (role) {
    case ELK_ROLE_WQ: return "attn_q";
    case ELK_ROLE_WK: return "attn_k";
    case ELK_ROLE_WV: return "attn_v";
    case ELK_ROLE_WO: return "attn_output";
    case ELK_ROLE_W1: return "ffn_gate";
    case ELK_ROLE_W2: return "ffn_down";
    case ELK_ROLE_W3: return "ffn_up";
    default: return "?";
    }
}

static void say(elk_npu_runner *r, const char *what, const elk_npu_layer *L, int code)
{
    char line[160];
    if (!r->log)
        return;
    if (L)
        elk_fmt(line, sizeof line, "npu: %s %s blk.%u.%s; CPU runs it (%d)", r->backend ? r->backend->name : "-",
                what, (unsigned)L->layer, role_name(L->role), code);
    else
        elk_fmt(line, sizeof line, "npu: %s; CPU runs every layer (%d)", what, code);
    r->log(r->log_user, line);
}

uint64_t elk_npu_runner_arena_size(const void *section, uint64_t size)
{
    elk_npu_section sec;
    elk_npu_layer L;
    uint32_t max_rows = 0, max_cols = 0;
    if (elk_npu_section_open(&sec, section, size, NULL) != ELK_OK)
        return 0;
    for (uint32_t i = 0; i < sec.n_entries; i++) {
        elk_npu_section_layer(&sec, i, &L);
        max_rows = L.rows > max_rows ? L.rows : max_rows;
        max_cols = L.cols > max_cols ? L.cols : max_cols;
    }
    return (uint64_t)sec.chunk * (max_rows + max_cols) + 64;
}

int elk_npu_runner_init(elk_npu_runner *r, const void *section, uint64_t size,
                        const elk_npu_backend *backend, void *ctx, elk_log_fn log, void *log_user,
                        void *arena, uint64_t arena_size)
{
    char err[128];
    memset(r, 0, sizeof *r);
    r->log = log;
    r->log_user = log_user;
    r->min_tokens = 2;
    int rc = elk_npu_section_open(&r->sec, section, size, err);
    if (rc != ELK_OK) {
        if (log)
            log(log_user, err);
        return rc;
    }
    if (!valid_backend(backend)) {
        say(r, "backend missing or of another ABI version", NULL, ELK_E_INVAL);
        return ELK_E_INVAL;
    }
    uint64_t need = elk_npu_runner_arena_size(section, size);
    if (!arena || arena_size < need) {
        say(r, "scratch arena too small", NULL, ELK_E_NOMEM);
        return ELK_E_NOMEM;
    }
    elk_npu_layer L;
    for (uint32_t i = 0; i < r->sec.n_entries; i++) {
        elk_npu_section_layer(&r->sec, i, &L);
        r->max_rows = L.rows > r->max_rows ? L.rows : r->max_rows;
        r->max_cols = L.cols > r->max_cols ? L.cols : r->max_cols;
    }
    r->xq = arena;
    r->yq = r->xq + (uint64_t)r->sec.chunk * r->max_cols;
    if (backend->init) {
        rc = backend->init(ctx, r->sec.n_entries);
        if (rc != ELK_OK) {
            say(r, "backend init failed", NULL, rc);
            return rc;
        }
    }
    r->backend = backend;
    r->ctx = ctx;
    for (uint32_t i = 0; i < r->sec.n_entries; i++) {
        elk_npu_section_layer(&r->sec, i, &L);
        int ok = backend->accepts ? backend->accepts(ctx, ELK_NPU_OP_FC_INT8, &L) : 1;
        r->state[i] = ok ? ELK_NPU_STATE_NPU : ELK_NPU_STATE_DECLINED;
        if (!ok)
            say(r, "declines", &L, ELK_E_UNSUPPORTED);
    }
    return ELK_OK;
}

void elk_npu_runner_deinit(elk_npu_runner *r)
{
    if (r->backend && r->backend->deinit)
        r->backend->deinit(r->ctx);
    r->backend = NULL;
}

static int find_entry(const elk_npu_runner *r, int role, int layer)
{
    const uint8_t *e = r->sec.base + ELK_NPU_HEAD_SIZE;
    for (uint32_t i = 0; i < r->sec.n_entries; i++, e += ELK_NPU_ENTRY_SIZE)
        if (elk_le16(e) == role && elk_le16(e + 2) == layer)
            return (int)i;
    return -1;
}

/* TFLite QUANTIZE: x / scale, round half away from zero, saturate to int8. */
static int8_t quantize(float x, float scale, int32_t zp)
{
    float v = x / scale;
    if (!(v > -1000.0f))
        v = -1000.0f; /* also catches NaN: it saturates instead of invoking UB in the cast */
    if (v > 1000.0f)
        v = 1000.0f;
    int32_t q = (int32_t)(v >= 0 ? v + 0.5f : v - 0.5f) + zp;
    return (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
}

/* Fill r->xq with tokens [t0, t0 + nt) of x, padding the rest of the chunk with the zero point. */
static void load_chunk(elk_npu_runner *r, const elk_npu_layer *L, const float *x, int t0, int nt)
{
    for (uint32_t t = 0; t < L->chunk; t++) {
        int8_t *q = r->xq + (uint64_t)t * L->cols;
        if ((int)t >= nt) {
            memset(q, (int8_t)L->in_zp, L->cols);
            continue;
        }
        const float *xr = x + (uint64_t)(t0 + (int)t) * L->cols;
        for (uint32_t k = 0; k < L->cols; k++)
            q[k] = quantize(xr[k], L->in_scale, L->in_zp);
        /* shadow outliers: the CPU adds these channels in float, so the NPU sees 0 there */
        for (uint32_t j = 0; j < L->n_outliers; j++)
            q[elk_le32(L->outlier_idx + 4ull * j)] = (int8_t)L->in_zp;
    }
}

/* y rows [t0, t0 + nt) = dequantized NPU result + sum over outliers of W[:, c] * x[c]. */
static void store_chunk(elk_npu_runner *r, const elk_npu_layer *L, const float *x, float *y, int t0, int nt)
{
    for (int t = 0; t < nt; t++) {
        const int8_t *q = r->yq + (uint64_t)t * L->rows;
        float *yr = y + (uint64_t)(t0 + t) * L->rows;
        for (uint32_t o = 0; o < L->rows; o++)
            yr[o] = L->out_scale * (float)((int32_t)q[o] - L->out_zp);
        const float *xr = x + (uint64_t)(t0 + t) * L->cols;
        for (uint32_t j = 0; j < L->n_outliers; j++) {
            float xv = xr[elk_le32(L->outlier_idx + 4ull * j)];
            const uint8_t *wc = L->outlier_w + 4ull * j * L->rows;
            for (uint32_t o = 0; o < L->rows; o++)
                yr[o] += elk_lef32(wc + 4ull * o) * xv;
        }
    }
}

int elk_npu_linear(elk_npu_runner *r, int role, int layer, uint32_t rows, uint32_t cols, const float *x,
                   float *y, int n_tok)
{
    if (!r || !r->backend || n_tok < (int)r->min_tokens) {
        if (r)
            r->stats.cpu_fallbacks++;
        return ELK_E_UNSUPPORTED;
    }
    int id = find_entry(r, role, layer);
    if (id < 0 || r->state[id] != ELK_NPU_STATE_NPU) {
        r->stats.cpu_fallbacks++;
        return ELK_E_UNSUPPORTED;
    }
    elk_npu_layer L;
    elk_npu_section_layer(&r->sec, (uint32_t)id, &L);
    if (L.rows != rows || L.cols != cols) { /* a section made for another model */
        r->state[id] = ELK_NPU_STATE_DECLINED;
        r->stats.cpu_fallbacks++;
        say(r, "has another shape for", &L, ELK_E_RANGE);
        return ELK_E_UNSUPPORTED;
    }
    for (int t0 = 0; t0 < n_tok; t0 += (int)L.chunk) {
        int nt = n_tok - t0 < (int)L.chunk ? n_tok - t0 : (int)L.chunk;
        load_chunk(r, &L, x, t0, nt);
        int rc = r->backend->run_linear_chunk(r->ctx, &L, r->xq, r->yq);
        if (rc != ELK_OK) {
            r->state[id] = ELK_NPU_STATE_FAILED;
            r->stats.cpu_fallbacks++;
            say(r, "failed on", &L, rc);
            return ELK_E_UNSUPPORTED;
        }
        store_chunk(r, &L, x, y, t0, nt);
        r->stats.chunks++;
        if (r->backend->chunk_seconds)
            r->stats.npu_seconds += r->backend->chunk_seconds(r->ctx, &L);
    }
    return ELK_OK;
}
