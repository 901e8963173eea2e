/* elk-run: generate text from an image with the host API, no Python. Used by the cross-build
 * tests under qemu and for speed work:
 *   elk-run IMAGE [-p PROMPT] [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
 *           [--repeat-penalty R] [--threads N] [--ctx N] [--kernels NAME] [--ids]
 *           [--npu sim|litert] [--litert-lib PATH] [--npu-tops T] [--npu-dma-gbs G]  (docs/npu.md)
 *           [--logits FILE]
 * Option values outside their range (docs/runtime.md, the same as `elk run`) are one error line,
 * exit 2. Text goes to stdout as it is produced; timing to stderr, and one line when generation
 * stopped because the context was full. --ids: PROMPT is a list of token ids
 * and the output is ids too. --logits FILE: first write the prompt's logits from an empty context
 * (one row of vocab_size float32, native byte order, per prompt id) to FILE, then generate as usual
 * (-n 0: logits only). Exit 0 on success, 2 with one line on stderr on any error. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elk/elk.h"
#include "host_api.h"
#include "npu_host.h"

typedef struct args {
    const char *image, *prompt, *kernels;
    const char *npu, *litert_lib; /* NPU offload of prefill (npu_host.h); NULL = CPU only */
    const char *logits;           /* --logits FILE, or NULL */
    const char *n_text;           /* -n as given (checked once --logits is known), or NULL */
    double npu_tops, npu_dma_gbs;
    int n, top_k, threads, ids;
    unsigned ctx;
    float temperature, top_p, repeat_penalty;
    unsigned long long seed;
} args;

#define USAGE "usage: elk-run IMAGE [-p PROMPT] [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S] " \
              "[--repeat-penalty R] [--threads N] [--ctx N] [--kernels NAME] [--ids] [--logits FILE] " \
              "[--npu sim|litert] [--litert-lib PATH] [--npu-tops T] [--npu-dma-gbs G]\n"

/* A usage mistake: one line on stderr (the usage text only when there is nothing to run at all). */
static int usage(const char *msg)
{
    fprintf(stderr, "elk-run: error: %s\n", msg);
    return 2;
}

/* usage() with "OPTION VALUE what is wrong" as the message. */
static int bad_value(const char *opt, const char *val, const char *what)
{
    char msg[320];
    snprintf(msg, sizeof msg, "%s %s %s", opt, val, what);
    return usage(msg);
}

/* Integer option in [lo, hi]: whole numbers only, no silent wrap or truncation; a number written
 * another way (1e10, 2.0) is judged by its value. */
static int whole(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end, what[96];
    errno = 0;
    long long v = strtoll(s, &end, 10);
    int ok = !errno && end != s && !*end;
    if (!ok) { /* range first: converting a double outside long long (or inf) is undefined */
        double d = strtod(s, &end);
        if (end == s || *end || d != d)
            return bad_value(opt, s, "is not a whole number");
        if (d >= -9.2e18 && d <= 9.2e18 && d != (double)(long long)d)
            return bad_value(opt, s, "is not a whole number");
        v = d < -9.2e18 ? LLONG_MIN : d > 9.2e18 ? LLONG_MAX : (long long)d;
    }
    if (v < lo || v > hi) {
        snprintf(what, sizeof what, "is outside [%lld, %lld]", lo, hi);
        return bad_value(opt, s, what);
    }
    *out = v;
    return 0;
}

/* --seed: any unsigned 64-bit value (strtoull alone would take "-1" as 2^64 - 1). */
static int seed_value(const char *opt, const char *s, unsigned long long *out)
{
    char *end;
    while (*s == ' ')
        s++;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '-' || (errno == ERANGE && end != s && !*end))
        return bad_value(opt, s, "is outside [0, 18446744073709551615]");
    if (errno || end == s || *end)
        return bad_value(opt, s, "is not a whole number");
    *out = v;
    return 0;
}

/* Float option: a finite number accepted by ok(v) (NaN and infinities never are). */
static int real(const char *opt, const char *s, int (*ok)(double), const char *rule, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end)
        return bad_value(opt, s, "is not a number");
    if (!(v == v && v > -3.4e38 && v < 3.4e38 && ok(v)))
        return bad_value(opt, s, rule);
    *out = v;
    return 0;
}

static int nonneg(double v) { return v >= 0.0; }
static int positive(double v) { return v > 0.0; }
static int unit(double v) { return v > 0.0 && v <= 1.0; }
static int any(double v) { (void)v; return 1; }

/* Store the value of option `o` (one of parse's known options) in *a; 2 with one line on stderr when
 * the value is not in the option's range (the same ranges as `elk run`, docs/runtime.md). */
static int set_option(args *a, const char *o, const char *val)
{
    long long i = 0;
    double v = 0;
    int rc = 0;
    if (!strcmp(o, "-p") || !strcmp(o, "--prompt"))
        a->prompt = val;
    else if (!strcmp(o, "--kernels"))
        a->kernels = val;
    else if (!strcmp(o, "--npu"))
        a->npu = val;
    else if (!strcmp(o, "--litert-lib"))
        a->litert_lib = val;
    else if (!strcmp(o, "--logits"))
        a->logits = val;
    else if (!strcmp(o, "-n")) { /* its lower end depends on --logits: checked at the end of parse */
        rc = whole(o, val, LLONG_MIN, LLONG_MAX, &i);
        if (!rc && i > 2147483647LL)
            rc = bad_value(o, val, "is outside [1, 2147483647]");
        a->n = i < 0 ? -1 : (int)i, a->n_text = val;
    }
    else if (!strcmp(o, "--top-k"))
        rc = whole(o, val, 0, 2147483647LL, &i), a->top_k = (int)i;
    else if (!strcmp(o, "--ctx")) /* the upper end is the model's seq_len, checked when it is open */
        rc = whole(o, val, 1, 2147483647LL, &i), a->ctx = (unsigned)i;
    else if (!strcmp(o, "--threads"))
        rc = whole(o, val, 1, 64, &i), a->threads = (int)i;
    else if (!strcmp(o, "--seed"))
        rc = seed_value(o, val, &a->seed);
    else if (!strcmp(o, "--temperature"))
        rc = real(o, val, nonneg, "must be finite and >= 0 (0 = greedy)", &v), a->temperature = (float)v;
    else if (!strcmp(o, "--top-p"))
        rc = real(o, val, unit, "is outside (0, 1] (1 = off)", &v), a->top_p = (float)v;
    else if (!strcmp(o, "--repeat-penalty"))
        rc = real(o, val, positive, "must be finite and > 0 (1 = off)", &v), a->repeat_penalty = (float)v;
    else if (!strcmp(o, "--npu-tops"))
        rc = real(o, val, any, "must be a finite number (0 or less: the simulator's default)", &a->npu_tops);
    else if (!strcmp(o, "--npu-dma-gbs"))
        rc = real(o, val, any, "must be a finite number (0 or less: the simulator's default)", &a->npu_dma_gbs);
    else
        return usage("unknown option");
    return rc;
}

static int parse(int argc, char **argv, args *a)
{
    *a = (args){ .prompt = "", .n = 256, .top_k = 40, .threads = 1, .temperature = 0.8f,
                 .top_p = 0.95f, .repeat_penalty = 1.0f, .seed = 0 };
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--ids")) {
            a->ids = 1;
            continue;
        }
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            fputs(USAGE, stdout);
            return 1;
        }
        if (o[0] != '-') {
            if (a->image)
                return usage("more than one IMAGE");
            a->image = o;
            continue;
        }
        static const char *const known[] = { "-p", "--prompt", "--kernels", "--npu", "--litert-lib", "--logits",
                                             "-n", "--temperature", "--top-k", "--top-p", "--repeat-penalty",
                                             "--seed", "--threads", "--npu-tops", "--npu-dma-gbs", "--ctx" };
        int found = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            found |= !strcmp(o, known[k]);
        char msg[160];
        if (!found) {
            snprintf(msg, sizeof msg, "%s: unknown option (elk-run --help lists them)", o);
            return usage(msg);
        }
        if (i + 1 >= argc) {
            snprintf(msg, sizeof msg, "%s: needs a value", o);
            return usage(msg);
        }
        int rc = set_option(a, o, argv[++i]);
        if (rc)
            return rc;
    }
    if (!a->image) {
        fputs(USAGE, stderr);
        return usage("missing IMAGE");
    }
    if (a->n_text && a->n < 0)
        return bad_value("-n", a->n_text, "is outside [1, 2147483647]");
    if (a->n_text && a->n == 0 && !a->logits) /* would generate nothing, silently */
        return bad_value("-n", a->n_text, "is outside [1, 2147483647] (0 only with --logits FILE: prompt logits)");
    return 0;
}

/* Prompt ids: parsed from the text with --ids, else BOS + the tokenizer's encoding. */
static int prompt_ids(elk_host *h, const args *a, int32_t **ids, int *n)
{
    size_t len = strlen(a->prompt);
    *ids = malloc((len + 2) * sizeof(int32_t));
    if (!*ids)
        return ELK_E_NOMEM;
    if (a->ids) {
        const char *s = a->prompt;
        char *end;
        *n = 0;
        for (;;) {
            while (*s == ' ' || *s == ',')
                s++;
            if (!*s)
                break;
            errno = 0;
            long v = strtol(s, &end, 10);
            if (end == s || errno || v < -1 || v > 0x7fffffffL)
                return ELK_E_INVAL; /* an id that int32 cannot hold would wrap into a valid one */
            (*ids)[(*n)++] = (int32_t)v;
            s = end;
        }
        return ELK_OK;
    }
    return elk_host_tokenize(h, a->prompt, len, 1, 0, *ids, (int)len + 2, n);
}

/* The prompt's logits, n rows of vocab_size float32, into a->logits. */
static int dump_logits(elk_host *h, const args *a, const int32_t *ids, int n)
{
    int64_t cfg[6]; /* dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size */
    elk_host_config(h, cfg, 6);
    const int64_t vocab = cfg[5];
    float *rows = n > 0 ? malloc((size_t)n * (size_t)vocab * sizeof(float)) : NULL;
    if (!rows) {
        fprintf(stderr, "elk-run: error: --logits: %s\n", n > 0 ? "out of memory" : "empty prompt");
        return 2;
    }
    if (elk_host_forward(h, ids, n, 0, rows, 1)) {
        fprintf(stderr, "elk-run: error: %s\n", elk_host_error(h));
        free(rows);
        return 2;
    }
    FILE *f = fopen(a->logits, "wb");
    size_t want = (size_t)n * (size_t)vocab, wrote = f ? fwrite(rows, sizeof(float), want, f) : 0;
    int bad = !f || wrote != want || fclose(f) != 0;
    free(rows);
    if (bad) {
        fprintf(stderr, "elk-run: error: --logits %s: %s\n", a->logits, strerror(errno));
        return 2;
    }
    return 0;
}

/* One line when generation stopped at the end of the context before -n tokens (never silently). */
static void context_notice(elk_host *h, int n_prompt, int n_gen, int asked)
{
    int64_t cfg[10]; /* ..., seq_len at 6, n_ctx at 9 */
    elk_host_config(h, cfg, 10);
    char fix[96];
    if (cfg[9] < cfg[6])
        snprintf(fix, sizeof fix, "raise --ctx (up to the model's seq_len %lld) or shorten the prompt",
                 (long long)cfg[6]);
    else
        snprintf(fix, sizeof fix, "shorten the prompt (the context is the model's whole seq_len)");
    fprintf(stderr, "elk-run: stopped: the context is full (%lld tokens: %d of prompt, %d generated), so %d of "
                    "the %d tokens asked for were produced; %s\n", (long long)cfg[9], n_prompt, n_gen, n_gen,
            asked, fix);
}

static int run(elk_host *h, const args *a)
{
    int32_t *ids = NULL, id;
    int n = 0, rc = prompt_ids(h, a, &ids, &n), len;
    char piece[ELK_GEN_TEXT_CAP];
    if (rc) {
        free(ids);
        fprintf(stderr, "elk-run: error: %s\n", rc == ELK_E_INVAL ? "--ids: prompt is not a list of ids"
                                                                  : elk_host_error(h));
        return 2;
    }
    if (a->logits && dump_logits(h, a, ids, n)) {
        free(ids);
        return 2;
    }
    rc = elk_host_gen_begin(h, ids, n, a->n, a->temperature, a->top_k, a->top_p, a->repeat_penalty,
                            64, a->seed, 0);
    if (rc == ELK_OK && !a->ids) /* the text continues the prompt's (docs/runtime.md "Generated text") */
        rc = elk_host_gen_text_begin(h, ids, n);
    free(ids);
    if (rc < 0) { /* a prompt that does not fit, bad settings: one line, nothing on stdout */
        fprintf(stderr, "elk-run: error: %s\n", elk_host_error(h));
        return 2;
    }
    if (!a->ids) { /* echo the prompt: stdout then reads as the whole text */
        fputs(a->prompt, stdout);
        fflush(stdout);
    }
    for (int r = 1; rc == ELK_OK && r == 1;) { /* text mode: at r == 0, what the token stream still held */
        r = a->ids ? elk_host_gen_next(h, &id, NULL, 0, &len) : elk_host_gen_next_text(h, &id, piece, sizeof piece, &len);
        if (r < 0)
            rc = r;
        else if (a->ids && r == 1)
            printf("%d ", (int)id);
        else if (!a->ids)
            fwrite(piece, 1, (size_t)len, stdout);
        fflush(stdout);
    }
    if (rc < 0) {
        fprintf(stderr, "\nelk-run: error: %s\n", elk_host_error(h));
        return 2;
    }
    double st[7];
    elk_host_gen_stats(h, st, 7);
    fprintf(stderr, "\nelk-run: %s, kernels %s: prompt %.0f tokens in %.3f s, first token after %.3f s, "
                    "%.0f tokens, %.2f tokens/s\n",
            elk_host_name(h), elk_host_kernels(h), st[0], st[1], st[2], st[3], st[5]);
    if ((int)st[6] == ELK_GEN_CONTEXT_FULL)
        context_notice(h, (int)st[0], (int)st[3], a->n);
    return 0;
}

/* The image's NPU chunk is baked into its int8 layers: with a context shorter than it, every prefill
 * is padded to the chunk. One line, as `elk run --npu` says it (elk.npu.offload.padding_notice). */
static void npu_padding_notice(elk_host *h, uint32_t chunk)
{
    int64_t cfg[10]; /* ..., seq_len at 6, n_ctx at 9 */
    elk_host_config(h, cfg, 10);
    if ((int64_t)chunk <= cfg[9])
        return;
    fprintf(stderr, "elk-run: npu: the image's NPU chunk is %u tokens, longer than the context of %lld: every "
                    "prefill is padded to %u tokens (repack with --npu-chunk %lld or less%s)\n", chunk,
            (long long)cfg[9], chunk, (long long)cfg[9], (int64_t)chunk <= cfg[6] ? ", or run without --ctx" : "");
}

int main(int argc, char **argv)
{
    args a;
    int prc = parse(argc, argv, &a);
    if (prc)
        return prc == 1 ? 0 : 2; /* 1: --help */
    char err[512];
    elk_host *h;
    if (elk_host_open(a.image, a.ctx, a.threads, a.kernels, &h, err, sizeof err)) {
        fprintf(stderr, "elk-run: error: %s\n", err);
        return 2;
    }
    elk_host_npu *npu = NULL;
    if (a.npu && strcmp(a.npu, "off") != 0 &&
        elk_host_npu_open_host(h, a.npu, a.litert_lib, a.npu_tops, a.npu_dma_gbs, &npu, err, sizeof err)) {
        fprintf(stderr, "elk-run: error: --npu %s: %s\n", a.npu, err);
        elk_host_close(h);
        return 2;
    }
    const elk_npu_runner *runner = npu ? elk_host_npu_runner(npu) : NULL; /* NULL: fell back to the CPU */
    if (runner)
        npu_padding_notice(h, runner->sec.chunk);
    int rc = run(h, &a);
    elk_host_close(h);
    if (npu)
        elk_host_npu_report(npu);
    elk_host_npu_close(npu);
    return rc;
}
