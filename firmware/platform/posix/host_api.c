/* libelk host API (host_api.h): mmap an image, one malloc'd arena for model, tokenizer, sampler
 * and generation state, and thin wrappers that turn core status codes into readable errors.
 * Not here: any numerics (firmware/src) or Python (host/elk/runtime.py). */
#define _GNU_SOURCE
#include "host_api.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "elk/elk.h"
#include "kernels/kernels.h"
#include "threads.h"

struct elk_host {
    void *map;
    size_t map_size;
    elk_image img;
    void *arena;
    elk_model *model;
    elk_tokenizer *tok;
    void *sampler_arena;      /* re-initialized for every generation turn */
    uint64_t sampler_bytes;
    elk_sampler *sampler;
    elk_gen gen;
    elk_pool *pool;           /* NULL when serial */
    int n_threads;
    char error[512];
};

static int set_error(elk_host *h, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_error(elk_host *h, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->error, sizeof h->error, fmt, ap);
    va_end(ap);
    return rc;
}

#define HOST_MAX_BATCH 64 /* tokens per forward call: prefill chunks (activations scale with it) */

static uint64_t clock_us(void *ctx)
{
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t align64(uint64_t n)
{
    return (n + 63u) & ~(uint64_t)63u;
}

static int map_file(elk_host *h, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return set_error(h, ELK_E_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return set_error(h, ELK_E_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return set_error(h, ELK_E_FORMAT, "%s: empty file", path);
    }
    h->map_size = (size_t)st.st_size;
    h->map = mmap(NULL, h->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (h->map == MAP_FAILED) {
        h->map = NULL;
        return set_error(h, ELK_E_IO, "%s: cannot map (%s)", path, strerror(errno));
    }
#ifdef MADV_HUGEPAGE
    /* Decode streams every weight once per token. Where the file system keeps large folios (ext4
     * and XFS on Linux 6.x), this makes cold reads fill the page cache with 2 MiB folios, which the
     * kernel maps with one TLB entry each: 1-thread decode reads ~4-13 % faster than from 4 KiB
     * pages (docs/performance.md). Only a hint; no error if the kernel ignores it. */
    (void)madvise(h->map, h->map_size, MADV_HUGEPAGE);
#endif
    return ELK_OK;
}

/* The token embedding is read a row per token, not streamed: on 4 KiB pages only the rows used count
 * in the RSS, where each 2 MiB page would map 2 MiB for one row (70 MB of a q8_0 TinyLlama table
 * after a long prompt). Not when it is also the output matrix, which every token streams. */
static void embedding_small_pages(const elk_host *h)
{
#ifdef MADV_NOHUGEPAGE
    elk_tensor e, o;
    if (elk_image_find(&h->img, ELK_ROLE_TOK_EMBD, 0, &e) || elk_image_find(&h->img, ELK_ROLE_OUTPUT, 0, &o))
        return;
    const uintptr_t page = 4096, a = ((uintptr_t)e.data + page - 1) & ~(page - 1);
    const uintptr_t b = ((uintptr_t)e.data + (uintptr_t)e.size) & ~(page - 1);
    if (b > a)
        (void)madvise((void *)a, b - a, MADV_NOHUGEPAGE);
#else
    (void)h;
#endif
}

/* Lay out model | tokenizer | sampler | gen in one arena and initialize them. */
static int build(elk_host *h, const char *path, const elk_model_opts *opts)
{
    const elk_image *img = &h->img;
    const void *tsec = img->section[ELK_SECTION_TOKENIZER].data;
    uint64_t tsize = img->section[ELK_SECTION_TOKENIZER].size;
    uint64_t mbytes = elk_model_arena_size(img, opts), tbytes = elk_tokenizer_arena_size(tsec, tsize);
    if (mbytes == 0)
        return set_error(h, ELK_E_RANGE, "%s: model does not fit in memory with these options", path);
    if (tbytes == 0)
        return set_error(h, ELK_E_FORMAT, "%s: tokenizer section is malformed", path);
    h->sampler_bytes = elk_sampler_arena_size(img->config.vocab_size);
    uint64_t n_ctx = opts->n_ctx ? opts->n_ctx : img->config.seq_len;
    uint64_t gbytes = n_ctx * 4 + (uint64_t)img->config.vocab_size * 4 + 64;
    uint64_t total = align64(mbytes) + align64(tbytes) + align64(h->sampler_bytes) + align64(gbytes);
    h->arena = aligned_alloc(64, total);
    if (!h->arena)
        return set_error(h, ELK_E_NOMEM, "%s: cannot allocate %llu bytes for the model", path,
                         (unsigned long long)total);
    char *a = h->arena;
    int rc = elk_model_init(&h->model, img, opts, a, mbytes);
    if (rc == ELK_E_RANGE)
        return set_error(h, rc, "%s: model: its arena size does not fit 64 bits with these options", path);
    if (rc)
        return set_error(h, rc, "%s: model: %s", path, elk_strerror(rc));
    a += align64(mbytes);
    rc = elk_tokenizer_init(&h->tok, tsec, tsize, a, tbytes);
    if (rc)
        return set_error(h, rc, "%s: tokenizer: %s", path, elk_strerror(rc));
    a += align64(tbytes);
    h->sampler_arena = a;
    a += align64(h->sampler_bytes);
    elk_sampling greedy = { .temperature = 0.0f, .top_p = 1.0f, .repeat_penalty = 1.0f };
    rc = elk_sampler_init(&h->sampler, img->config.vocab_size, &greedy, h->sampler_arena, h->sampler_bytes);
    rc = rc ? rc : elk_gen_init(&h->gen, h->model, h->tok, h->sampler, clock_us, NULL, a, gbytes);
    if (rc)
        return set_error(h, rc, "%s: generation state: %s", path, elk_strerror(rc));
    return ELK_OK;
}

int elk_host_open(const char *path, uint32_t n_ctx, int n_threads, const char *kernels,
                  elk_host **out, char *err, int err_cap)
{
    if (!out || !path)
        return ELK_E_INVAL;
    *out = NULL;
    elk_host *h = calloc(1, sizeof *h);
    if (!h)
        return ELK_E_NOMEM;
    elk_model_opts opts = { .n_ctx = n_ctx, .max_batch = HOST_MAX_BATCH };
    int rc = map_file(h, path);
    if (!rc && (rc = elk_image_open(&h->img, h->map, h->map_size)))
        set_error(h, rc, "%s: %s", path, h->img.error);
    if (!rc)
        embedding_small_pages(h);
    if (!rc && n_ctx > h->img.config.seq_len)
        rc = set_error(h, ELK_E_RANGE, "%s: context %u is larger than the model's seq_len %u", path,
                       n_ctx, h->img.config.seq_len);
    if (!rc && kernels && *kernels) {
        opts.kernels = elk_kernels_select(elk_cpu_features(), kernels);
        if (!opts.kernels)
            rc = set_error(h, ELK_E_UNSUPPORTED, "kernels '%s' are not built in or not supported by this CPU",
                           kernels);
    }
    if (n_threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cpus > 0 ? (int)(cpus < 64 ? cpus : 64) : 1;
    }
    h->n_threads = n_threads;
    if (!rc && n_threads > 1) {
        rc = elk_pool_create(&h->pool, n_threads);
        if (rc == ELK_E_RANGE)
            set_error(h, rc, "cannot start %d threads: the pool takes at most 64", n_threads);
        else if (rc)
            set_error(h, rc, "cannot start %d threads: %s", n_threads, elk_strerror(rc));
        else
            opts.exec = elk_pool_exec(h->pool);
    }
    if (!rc)
        rc = build(h, path, &opts);
    if (rc) {
        if (err && err_cap > 0)
            snprintf(err, (size_t)err_cap, "%s", h->error);
        elk_host_close(h);
        return rc;
    }
    *out = h;
    return ELK_OK;
}

void elk_host_close(elk_host *h)
{
    if (!h)
        return;
    elk_pool_destroy(h->pool);
    free(h->arena);
    if (h->map)
        munmap(h->map, h->map_size);
    free(h);
}

const char *elk_host_error(const elk_host *h)
{
    return h ? h->error : "no model";
}

int elk_host_config(const elk_host *h, int64_t *out, int n)
{
    const elk_config *c = &h->img.config;
    const int64_t v[] = { c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                          c->seq_len, c->head_dim, c->model_flags, elk_model_n_ctx(h->model),
                          elk_tokenizer_bos(h->tok), elk_tokenizer_eos(h->tok), HOST_MAX_BATCH, h->n_threads,
                          h->img.security_counter };
    int k = n < (int)(sizeof v / sizeof v[0]) ? n : (int)(sizeof v / sizeof v[0]);
    memcpy(out, v, (size_t)k * sizeof v[0]);
    return k;
}

int elk_host_config_f(const elk_host *h, double *out, int n)
{
    if (n > 0)
        out[0] = h->img.config.rope_theta;
    if (n > 1)
        out[1] = h->img.config.norm_eps;
    return n < 2 ? n : 2;
}

const char *elk_host_name(const elk_host *h)
{
    return h->img.name;
}

const char *elk_host_kernels(const elk_host *h)
{
    return elk_model_kernels_name(h->model);
}

const char *elk_host_meta(const elk_host *h, const char *key, uint32_t *len)
{
    return elk_image_meta(&h->img, key, len);
}

struct elk_model *elk_host_model(elk_host *h)
{
    return h ? h->model : NULL;
}

int elk_host_verify(elk_host *h)
{
    int rc = elk_image_verify(&h->img);
    return rc ? set_error(h, rc, "%s", h->img.error) : ELK_OK;
}

int elk_host_tokenize(elk_host *h, const char *text, uint64_t len, int bos, int eos, int32_t *ids,
                      int cap, int *n_out)
{
    int rc = elk_tokenize(h->tok, text, len, bos, eos, ids, cap, n_out);
    if (rc && rc != ELK_E_RANGE)
        set_error(h, rc, "tokenize: %s", elk_strerror(rc));
    return rc;
}

int elk_host_piece(elk_host *h, int prev, int id, char *buf, int cap, int *len)
{
    if (id < 0 || (uint32_t)id >= h->img.config.vocab_size)
        return set_error(h, ELK_E_RANGE, "token id %d outside the vocabulary [0, %u)", id,
                         h->img.config.vocab_size);
    int rc = elk_token_piece(h->tok, prev, id, buf, cap, len);
    return rc ? set_error(h, rc, "token %d: %s", id, elk_strerror(rc)) : ELK_OK;
}

static int check_ids(elk_host *h, const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= h->img.config.vocab_size)
            return set_error(h, ELK_E_RANGE, "token id %d (at %d) outside the vocabulary [0, %u)",
                             (int)ids[i], i, h->img.config.vocab_size);
    return ELK_OK;
}

int elk_host_forward(elk_host *h, const int32_t *ids, int n, int pos, float *logits, int all)
{
    uint32_t n_ctx = elk_model_n_ctx(h->model);
    elk_gen_reset(&h->gen);
    if (n <= 0 || pos < 0)
        return set_error(h, ELK_E_INVAL, "forward: %d ids at position %d", n, pos);
    if ((int64_t)pos + n > n_ctx)
        return set_error(h, ELK_E_RANGE, "%d tokens at position %d do not fit the context of %u tokens",
                         n, pos, n_ctx);
    int rc = check_ids(h, ids, n);
    if (rc)
        return rc;
    rc = elk_model_forward(h->model, ids, n, pos, logits, all);
    return rc ? set_error(h, rc, "forward: %s", elk_strerror(rc)) : ELK_OK;
}

/* Which sampling setting elk_sampler_init refuses (its rules; the API and CLIs check the same first). */
static int sampling_error(elk_host *h, int rc, const elk_sampling *sp)
{
    if (!(sp->temperature >= 0.0f))
        return set_error(h, rc, "temperature %g must be finite and >= 0 (0 = greedy)", sp->temperature);
    if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f))
        return set_error(h, rc, "top_p %g is outside (0, 1] (1 = off)", sp->top_p);
    if (!(sp->repeat_penalty > 0.0f))
        return set_error(h, rc, "repeat_penalty %g must be finite and > 0 (1 = off)", sp->repeat_penalty);
    if (sp->top_k < 0 || sp->repeat_last_n < 0)
        return set_error(h, rc, "top_k %d and repeat_last_n %d must be >= 0", sp->top_k, sp->repeat_last_n);
    return set_error(h, rc, "sampler: %s", elk_strerror(rc));
}

/* A prompt of n ids after `used` context tokens that leaves no room (see elk_gen_begin): what it
 * needs, what the context holds, and the fix that applies (a larger context only below seq_len). */
static int context_error(elk_host *h, int n, int used, uint32_t n_ctx)
{
    uint32_t seq_len = h->img.config.seq_len;
    char used_s[64] = "", fix[160];
    if (used > 0)
        snprintf(used_s, sizeof used_s, " (%d already used by earlier turns)", used);
    if (n_ctx < seq_len)
        snprintf(fix, sizeof fix, "shorten the prompt or raise --ctx (n_ctx), up to the model's seq_len %u",
                 seq_len);
    else
        snprintf(fix, sizeof fix, "shorten the prompt (the context is already the model's whole seq_len %u)",
                 seq_len);
    if (used > 0)
        snprintf(fix + strlen(fix), sizeof fix - strlen(fix), ", or start a new context");
    if ((int64_t)used + n > n_ctx)
        return set_error(h, ELK_E_RANGE, "prompt is %d tokens but the context holds %u%s: %s", n, n_ctx, used_s,
                         fix);
    return set_error(h, ELK_E_RANGE, "prompt is %d tokens and fills the context of %u%s, leaving no room to "
                     "generate: %s", n, n_ctx, used_s, fix);
}

int elk_host_gen_begin(elk_host *h, const int32_t *ids, int n, int max_new, float temperature,
                       int top_k, float top_p, float repeat_penalty, int repeat_last_n, uint64_t seed,
                       int keep_context)
{
    elk_sampling sp = { temperature, top_k, top_p, repeat_penalty, repeat_last_n, seed };
    int rc = elk_sampler_init(&h->sampler, h->img.config.vocab_size, &sp, h->sampler_arena,
                              h->sampler_bytes);
    if (!rc && !(top_p <= 1.0f)) /* the sampler reads top_p >= 1 as "off": 2 is a mistake, not a setting */
        rc = ELK_E_RANGE;
    if (rc)
        return sampling_error(h, rc, &sp);
    h->gen.sampler = h->sampler;
    if (!keep_context)
        elk_gen_reset(&h->gen);
    uint32_t n_ctx = elk_model_n_ctx(h->model);
    if ((int64_t)h->gen.n_tokens + n + (max_new > 0) > n_ctx) /* elk_gen_begin's rule */
        return context_error(h, n, h->gen.n_tokens, n_ctx);
    if ((rc = check_ids(h, ids, n)))
        return rc;
    rc = elk_gen_begin(&h->gen, ids, n, max_new);
    if (rc == ELK_E_INVAL)
        return set_error(h, rc, "empty prompt: give at least one token (e.g. BOS)");
    if (rc == ELK_E_RANGE)
        return set_error(h, rc, "prefill: %d tokens at position %d do not fit the context of %u", n,
                         h->gen.n_tokens, n_ctx);
    return rc ? set_error(h, rc, "prefill: %s", elk_strerror(rc)) : ELK_OK;
}

int elk_host_gen_next(elk_host *h, int32_t *id, char *buf, int cap, int *len)
{
    int rc = elk_gen_next(&h->gen, id, buf, cap, len);
    return rc < 0 ? set_error(h, rc, "generate: %s", elk_strerror(rc)) : rc;
}

int elk_host_gen_text_begin(elk_host *h, const int32_t *ids, int n)
{
    int rc = n < 0 ? ELK_E_INVAL : check_ids(h, ids, n);
    if (rc == ELK_OK)
        rc = elk_gen_text_begin(&h->gen, ids, n);
    return rc ? set_error(h, rc, "generate: prompt text: %s", elk_strerror(rc)) : ELK_OK;
}

int elk_host_gen_next_text(elk_host *h, int32_t *id, char *buf, int cap, int *len)
{
    const char *text = NULL;
    if (!buf || !len || cap < ELK_GEN_TEXT_CAP)
        return set_error(h, ELK_E_INVAL, "generate: a text buffer of %d bytes, %d needed", cap, ELK_GEN_TEXT_CAP);
    int rc = elk_gen_next_text(&h->gen, id, &text, len);
    if (rc < 0)
        return set_error(h, rc, "generate: %s", elk_strerror(rc));
    memcpy(buf, text, (size_t)*len); /* *len <= ELK_GEN_TEXT_CAP <= cap */
    return rc;
}

int elk_host_decode(elk_host *h, const int32_t *ids, int n, char *buf, int cap, int *len)
{
    char spill[ELK_GEN_TEXT_CAP]; /* the text past cap, only counted */
    int rc = n < 0 || cap < 0 || !len || (!buf && cap > 0) ? ELK_E_INVAL : check_ids(h, ids, n);
    if (rc)
        return set_error(h, rc, "decode: %s", elk_strerror(rc));
    elk_token_stream s;
    elk_token_stream_begin(&s);
    int64_t total = 0;
    int over = 0; /* once the text passes cap, the rest goes to spill */
    for (int i = 0; i <= n; i++) {
        int k = 0, room = over ? 0 : cap - (int)total;
        char *dst = over ? spill : buf + total;
        rc = i < n ? elk_token_stream_piece(h->tok, &s, ids[i], 0, dst, room, &k)
                   : elk_token_stream_end(h->tok, &s, dst, room, &k);
        if (rc == ELK_E_RANGE && k > room) {
            over = 1;
            rc = i < n ? elk_token_stream_piece(h->tok, &s, ids[i], 0, spill, sizeof spill, &k)
                       : elk_token_stream_end(h->tok, &s, spill, sizeof spill, &k);
        }
        if (rc)
            return set_error(h, rc, "decode: token %d: %s", i < n ? (int)ids[i] : -1, elk_strerror(rc));
        total += k;
    }
    *len = total > 0x7FFFFFFF ? 0x7FFFFFFF : (int)total;
    return over ? ELK_E_RANGE : ELK_OK;
}

int elk_host_gen_stats(const elk_host *h, double *out, int n)
{
    const elk_gen *g = &h->gen;
    double decode_s = (double)(g->t_last - g->t_first) * 1e-6;
    const double v[] = {
        g->n_prompt,
        (double)(g->t_prefilled - g->t_begin) * 1e-6,
        g->n_new ? (double)(g->t_first - g->t_begin) * 1e-6 : 0.0,
        g->n_new,
        decode_s,
        g->n_new > 1 && decode_s > 0 ? (g->n_new - 1) / decode_s : 0.0,
        g->stop,
    };
    int k = n < 7 ? n : 7;
    memcpy(out, v, (size_t)k * sizeof v[0]);
    return k;
}
