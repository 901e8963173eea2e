/* Sampler: turns one row of logits into a token id. Order: repetition penalty (llama.cpp style:
 * divide positive logits, multiply negative ones, once per distinct recent token), then greedy
 * argmax when temperature is 0, else temperature, top-k, softmax, top-p, and a draw from a
 * seeded xorshift64* generator, so a seed reproduces a run. Not here: the decode loop (generate.c). */
#include <math.h>
#include <string.h>

#include "elk/elk.h"

struct elk_sampler {
    uint32_t vocab;
    elk_sampling p;
    uint64_t rng;       /* xorshift64* state, never 0 */
    float *prob;        /* (vocab) probabilities of the candidates, in cand order */
    int32_t *cand;      /* (vocab) candidate token ids */
    uint8_t *seen;      /* (vocab) 1 when the penalty was already applied this step */
};

#define ALIGN_UP(x) (((x) + 63u) & ~(uint64_t)63u)

uint64_t elk_sampler_arena_size(uint32_t vocab_size)
{
    return ALIGN_UP(sizeof(struct elk_sampler)) + ALIGN_UP((uint64_t)vocab_size * 4) * 2 +
           ALIGN_UP(vocab_size) + 64;
}

int elk_sampler_init(elk_sampler **out, uint32_t vocab_size, const elk_sampling *params, void *arena,
                     uint64_t arena_size)
{
    if (!out || !params || !arena || vocab_size == 0 || vocab_size > (1u << 24))
        return ELK_E_INVAL;
    if (arena_size < elk_sampler_arena_size(vocab_size))
        return ELK_E_NOMEM;
    if (!(params->temperature >= 0.0f) || !(params->top_p > 0.0f) || !(params->repeat_penalty > 0.0f) ||
        params->top_k < 0 || params->repeat_last_n < 0)
        return ELK_E_RANGE;
    char *a = (char *)(((uintptr_t)arena + 63u) & ~(uintptr_t)63u);
    elk_sampler *s = (elk_sampler *)a;
    a += ALIGN_UP(sizeof *s);
    s->prob = (float *)a;
    a += ALIGN_UP((uint64_t)vocab_size * 4);
    s->cand = (int32_t *)a;
    a += ALIGN_UP((uint64_t)vocab_size * 4);
    s->seen = (uint8_t *)a;
    memset(s->seen, 0, vocab_size); /* the penalty relies on it; arenas come uninitialized */
    s->vocab = vocab_size;
    s->p = *params;
    /* splitmix-style scramble so nearby seeds start far apart; 0 is not a valid xorshift state */
    uint64_t z = params->seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    s->rng = (z ^ (z >> 31)) | 1u;
    *out = s;
    return ELK_OK;
}

/* Uniform float in [0, 1) from the top 24 bits of xorshift64*. */
static float rng_uniform(elk_sampler *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static void apply_penalty(elk_sampler *s, float *logits, const int32_t *hist, int n)
{
    const float pen = s->p.repeat_penalty;
    int start = s->p.repeat_last_n > 0 && n > s->p.repeat_last_n ? n - s->p.repeat_last_n : 0;
    if (pen == 1.0f || !hist || n <= 0)
        return;
    for (int i = start; i < n; i++) {
        int32_t id = hist[i];
        if (id < 0 || (uint32_t)id >= s->vocab || s->seen[id])
            continue;
        s->seen[id] = 1;
        logits[id] = logits[id] > 0.0f ? logits[id] / pen : logits[id] * pen;
    }
    for (int i = start; i < n; i++) /* clear only what was set: O(history), not O(vocab) */
        if (hist[i] >= 0 && (uint32_t)hist[i] < s->vocab)
            s->seen[hist[i]] = 0;
}

/* Lowest index among the maxima. */
static int argmax(const float *x, uint32_t n)
{
    int best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = (int)i;
    return best;
}

/* Order of candidates: higher logit first, lower id on ties. */
static int before(const float *logits, int32_t a, int32_t b)
{
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

/* Heap sift-down for a min-heap under `before` (the root is the worst of the kept candidates). */
static void sift(int32_t *h, int n, int i, const float *logits)
{
    for (;;) {
        int w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && before(logits, h[w], h[l]))
            w = l;
        if (r < n && before(logits, h[w], h[r]))
            w = r;
        if (w == i)
            return;
        int32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The best k ids, sorted best first, into cand[0..k): a k-heap over the vocab, then heapsort.
 * O(vocab log k). */
static void top_candidates(int32_t *cand, int k, const float *logits, uint32_t vocab)
{
    for (int i = 0; i < k; i++)
        cand[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--)
        sift(cand, k, i, logits);
    for (uint32_t id = (uint32_t)k; id < vocab; id++) {
        if (before(logits, (int32_t)id, cand[0])) {
            cand[0] = (int32_t)id;
            sift(cand, k, 0, logits);
        }
    }
    for (int n = k - 1; n > 0; n--) { /* heapsort: worst goes to the end */
        int32_t t = cand[0];
        cand[0] = cand[n];
        cand[n] = t;
        sift(cand, n, 0, logits);
    }
}

int elk_sampler_sample(elk_sampler *s, float *logits, const int32_t *history, int n_history)
{
    if (!s || !logits)
        return ELK_E_INVAL;
    apply_penalty(s, logits, history, n_history);
    if (s->p.temperature == 0.0f || s->p.top_k == 1)
        return argmax(logits, s->vocab);

    int k = s->p.top_k > 0 && (uint32_t)s->p.top_k < s->vocab ? s->p.top_k : (int)s->vocab;
    top_candidates(s->cand, k, logits, s->vocab);

    /* softmax(logits / T) over the candidates (sorted, so cand[0] has the max) */
    const float inv_t = 1.0f / s->p.temperature, max = logits[s->cand[0]];
    double sum = 0.0;
    for (int i = 0; i < k; i++) {
        s->prob[i] = expf((logits[s->cand[i]] - max) * inv_t);
        sum += s->prob[i];
    }
    /* top-p: the smallest prefix whose mass reaches top_p (at least one token) */
    int n = k;
    if (s->p.top_p < 1.0f) {
        double acc = 0.0, target = s->p.top_p * sum;
        for (n = 0; n < k;) {
            acc += s->prob[n++];
            if (acc >= target)
                break;
        }
        sum = acc;
    }
    float r = rng_uniform(s) * (float)sum, c = 0.0f;
    for (int i = 0; i < n; i++) {
        c += s->prob[i];
        if (r < c)
            return s->cand[i];
    }
    return s->cand[n - 1]; /* rounding: r landed at the very end */
}
