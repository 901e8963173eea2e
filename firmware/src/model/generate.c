/* The decode loop shared by the host runtime (libelk) and the firmware: prefill, then one
 * forward + sample + text piece per call, with optional timing from a platform clock.
 * Not here: I/O (the caller prints or sends pieces) or the sampler's policy (sampler.c). */
#include <string.h>

#include "model.h"

uint64_t elk_gen_arena_size(const elk_model *m)
{
    return (uint64_t)m->n_ctx * sizeof(int32_t) + (uint64_t)m->cfg.vocab_size * sizeof(float) + 64;
}

static uint64_t now(const elk_gen *g)
{
    return g->clock ? g->clock(g->clock_ctx) : 0;
}

int elk_gen_init(elk_gen *g, elk_model *m, const elk_tokenizer *tok, elk_sampler *s,
                 elk_clock_fn clock, void *clock_ctx, void *arena, uint64_t arena_size)
{
    if (!g || !m || !s || !arena)
        return ELK_E_INVAL;
    if (arena_size < elk_gen_arena_size(m))
        return ELK_E_NOMEM;
    memset(g, 0, sizeof *g);
    g->model = m;
    g->tok = tok;
    g->sampler = s;
    g->clock = clock;
    g->clock_ctx = clock_ctx;
    char *a = (char *)(((uintptr_t)arena + 15u) & ~(uintptr_t)15u);
    g->logits = (float *)a;
    g->tokens = (int32_t *)(a + (size_t)m->cfg.vocab_size * sizeof(float));
    elk_token_stream_begin(&g->text_stream);
    return ELK_OK;
}

void elk_gen_reset(elk_gen *g)
{
    g->n_tokens = g->n_cached = 0;
    g->n_new = 0;
    g->stop = ELK_GEN_RUNNING;
    elk_token_stream_begin(&g->text_stream);
    g->text_ended = 0;
}

/* Run the tokens not yet in the cache; leaves the last one's logits in g->logits. */
static int catch_up(elk_gen *g)
{
    int n = g->n_tokens - g->n_cached;
    if (n <= 0)
        return ELK_OK;
    int rc = elk_model_forward(g->model, g->tokens + g->n_cached, n, g->n_cached, g->logits, 0);
    if (rc)
        return rc;
    g->n_cached = g->n_tokens;
    return ELK_OK;
}

int elk_gen_begin(elk_gen *g, const int32_t *ids, int n, int max_new)
{
    if (!g || n < 0 || (n > 0 && !ids) || max_new < 0)
        return ELK_E_INVAL;
    /* The context holds prompt and generated tokens alike (no sliding window): a turn that asks for
     * tokens needs at least one free position after its prompt, else it could only stop at once. */
    if ((int64_t)g->n_tokens + n + (max_new > 0) > (int64_t)g->model->n_ctx)
        return ELK_E_RANGE;
    if (g->n_tokens + n == g->n_cached) /* nothing to run: no fresh logits to sample from */
        return ELK_E_INVAL;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= g->model->cfg.vocab_size)
            return ELK_E_RANGE;
    g->t_begin = now(g);
    memcpy(g->tokens + g->n_tokens, ids, (size_t)n * sizeof(int32_t));
    g->n_tokens += n;
    g->n_prompt = g->n_tokens - g->n_cached;
    g->max_new = max_new;
    g->n_new = 0;
    g->stop = ELK_GEN_RUNNING;
    elk_token_stream_begin(&g->text_stream); /* a turn's text starts fresh (a reply) */
    g->text_ended = 0;
    int rc = catch_up(g);
    if (rc) { /* keep the context consistent with the cache */
        g->n_tokens = g->n_cached;
        return rc;
    }
    g->t_prefilled = g->t_first = g->t_last = now(g);
    return ELK_OK;
}

static int is_end(const elk_gen *g, int32_t id)
{
    return g->tok && (elk_tokenizer_is_stop(g->tok, id) || id == elk_tokenizer_bos(g->tok));
}

/* The next token of the turn in *next, not yet taken into the context: 1, 0 when the turn has stopped
 * (g->stop says why), or a negative code. */
static int sample_next(elk_gen *g, int32_t *next)
{
    if (g->stop != ELK_GEN_RUNNING)
        return 0;
    /* A full context has no position for another token: stop before running the last one, whose
     * logits could only pick a token there is no room for. */
    int full = g->n_tokens >= (int)g->model->n_ctx;
    int rc = full ? ELK_OK : catch_up(g); /* the token sampled last time */
    if (rc)
        return rc;
    if (g->n_new >= g->max_new) {
        g->stop = ELK_GEN_MAX_TOKENS;
        return 0;
    }
    if (full) {
        g->stop = ELK_GEN_CONTEXT_FULL;
        return 0;
    }
    *next = elk_sampler_sample(g->sampler, g->logits, g->tokens, g->n_tokens);
    if (*next < 0)
        return *next;
    if (is_end(g, *next)) {
        g->stop = ELK_GEN_EOS;
        return 0;
    }
    return 1;
}

/* Append the sampled token to the context (run by the next call) and time it. */
static void take(elk_gen *g, int32_t next)
{
    g->tokens[g->n_tokens++] = next;
    g->t_last = now(g);
    if (g->n_new++ == 0)
        g->t_first = g->t_last;
}

int elk_gen_next(elk_gen *g, int32_t *id, char *piece, int cap, int *len)
{
    if (len)
        *len = 0;
    if (!g)
        return ELK_E_INVAL;
    int32_t next = -1;
    int r = sample_next(g, &next);
    if (r <= 0)
        return r;
    int32_t prev = g->n_tokens ? g->tokens[g->n_tokens - 1] : -1;
    take(g, next);
    if (id)
        *id = next;
    if (piece && len && g->tok) {
        int rc = elk_token_piece(g->tok, prev, next, piece, cap, len);
        if (rc)
            return rc;
    }
    return 1;
}

int elk_gen_text_begin(elk_gen *g, const int32_t *ids, int n)
{
    if (!g || n < 0 || (n > 0 && !ids))
        return ELK_E_INVAL;
    elk_token_stream_begin(&g->text_stream);
    g->text_ended = 0;
    for (int i = 0; g->tok && i < n; i++) {
        int len = 0; /* the prompt's text: the caller has it already */
        int rc = elk_token_stream_piece(g->tok, &g->text_stream, ids[i], 0, g->text, ELK_GEN_TEXT_CAP, &len);
        if (rc)
            return rc;
    }
    /* The prompt's text is complete as the caller has it: a byte run it ends with ("assistant\n" is
     * <0x0A>) is given out here, dropped, and not joined with the generated bytes (it would come again
     * in the reply's first piece). */
    int len = 0;
    return g->tok && n > 0 ? elk_token_stream_end(g->tok, &g->text_stream, g->text, ELK_GEN_TEXT_CAP, &len) : ELK_OK;
}

int elk_gen_next_text(elk_gen *g, int32_t *id, const char **text, int *len)
{
    if (len)
        *len = 0;
    if (text)
        *text = g ? g->text : NULL;
    if (!g || !len)
        return ELK_E_INVAL;
    int32_t next = -1;
    int r = sample_next(g, &next);
    if (r < 0)
        return r;
    if (r == 0) { /* stopped: the bytes the stream still holds, once */
        int rc = g->tok && !g->text_ended ? elk_token_stream_end(g->tok, &g->text_stream, g->text,
                                                                 ELK_GEN_TEXT_CAP, len)
                                          : ELK_OK;
        g->text_ended = 1;
        return rc ? rc : 0;
    }
    if (g->tok) { /* before the token is taken: a text that does not fit leaves the turn as it was */
        int rc = elk_token_stream_piece(g->tok, &g->text_stream, next, 0, g->text, ELK_GEN_TEXT_CAP, len);
        if (rc)
            return rc;
    }
    take(g, next);
    if (id)
        *id = next;
    return 1;
}
