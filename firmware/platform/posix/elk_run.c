/* elk-run: generate text from an image with the host API, no Python. Used by the cross-build
 * tests under qemu and for speed work:
 *   elk-run IMAGE [-p PROMPT] [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
 *           [--repeat-penalty R] [--threads N] [--ctx N] [--kernels NAME] [--ids]
 *           [--npu sim|litert] [--litert-lib PATH] [--npu-tops T] [--npu-dma-gbs G]  (docs/npu.md)
 *           [--logits FILE]
 * Text goes to stdout as it is produced; timing to stderr. --ids: PROMPT is a list of token ids
 * and the output is ids too. --logits FILE: first write the prompt's logits from an empty context
 * (one row of vocab_size float32, native byte order, per prompt id) to FILE, then generate as usual
 * (-n 0: logits only). Exit 0 on success, 2 with one line on stderr on any error. */
#include <errno.h>
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
    double npu_tops, npu_dma_gbs;
    int n, top_k, threads, ids;
    unsigned ctx;
    float temperature, top_p, repeat_penalty;
    unsigned long long seed;
} args;

static int usage(const char *msg)
{
    fprintf(stderr, "elk-run: error: %s\nusage: elk-run IMAGE [-p PROMPT] [-n N] [--temperature T] "
                    "[--top-k K] [--top-p P] [--seed S] [--repeat-penalty R] [--threads N] [--ctx N] "
                    "[--kernels NAME] [--ids] [--logits FILE] [--npu sim|litert] [--litert-lib PATH] "
                    "[--npu-tops T] [--npu-dma-gbs G]\n", msg);
    return 2;
}

/* usage() with "OPTION: what is wrong" as the message. */
static int bad_option(const char *opt, const char *what, const char *val)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s%s%s", opt, what, val ? " " : "", val ? val : "");
    return usage(msg);
}

static int number(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Store the value of option `o` (one of parse's known options) in *a; 2 with one line on stderr when
 * the value is not a number in the option's range. */
static int set_option(args *a, const char *o, const char *val)
{
    double v;
    /* integer options: whole numbers that fit their C type (no silent wrap or truncation) */
    double lo = -1e18, hi = 1e18;
    if (!strcmp(o, "-n") || !strcmp(o, "--top-k") || !strcmp(o, "--ctx"))
        lo = 0, hi = 2147483647.0;
    else if (!strcmp(o, "--threads"))
        lo = 0, hi = 64;
    else if (!strcmp(o, "--seed"))
        lo = 0, hi = 18446744073709549568.0; /* largest double below 2^64 */
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
    else if (number(val, lo, hi, &v) || (lo == 0 && v != (double)(unsigned long long)v)) {
        char what[96];
        snprintf(what, sizeof what, lo == 0 ? "needs a whole number in [0, %.0f], not" : "is not a number:", hi);
        return bad_option(o, what, val);
    }
    else if (!strcmp(o, "-n"))
        a->n = (int)v;
    else if (!strcmp(o, "--temperature"))
        a->temperature = (float)v;
    else if (!strcmp(o, "--top-k"))
        a->top_k = (int)v;
    else if (!strcmp(o, "--top-p"))
        a->top_p = (float)v;
    else if (!strcmp(o, "--repeat-penalty"))
        a->repeat_penalty = (float)v;
    else if (!strcmp(o, "--seed"))
        a->seed = (unsigned long long)v;
    else if (!strcmp(o, "--threads"))
        a->threads = (int)v;
    else if (!strcmp(o, "--npu-tops"))
        a->npu_tops = v;
    else if (!strcmp(o, "--npu-dma-gbs"))
        a->npu_dma_gbs = v;
    else if (!strcmp(o, "--ctx"))
        a->ctx = (unsigned)v;
    else
        return usage("unknown option");
    return 0;
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
        if (!found)
            return bad_option(o, "unknown option", NULL);
        if (i + 1 >= argc)
            return bad_option(o, "needs a value", NULL);
        int rc = set_option(a, o, argv[++i]);
        if (rc)
            return rc;
    }
    if (!a->image)
        return usage("missing IMAGE");
    if (a->n < 0)
        return usage("-n must be >= 0");
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

static int run(elk_host *h, const args *a)
{
    int32_t *ids = NULL, id;
    int n = 0, rc = prompt_ids(h, a, &ids, &n), len;
    char piece[256];
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
    free(ids);
    if (rc < 0) { /* a prompt that does not fit, bad settings: one line, nothing on stdout */
        fprintf(stderr, "elk-run: error: %s\n", elk_host_error(h));
        return 2;
    }
    if (!a->ids) { /* echo the prompt: stdout then reads as the whole text */
        fputs(a->prompt, stdout);
        fflush(stdout);
    }
    while (rc == ELK_OK && (rc = elk_host_gen_next(h, &id, piece, sizeof piece, &len)) == 1) {
        if (a->ids)
            printf("%d ", (int)id);
        else
            fwrite(piece, 1, (size_t)len, stdout);
        fflush(stdout);
        rc = ELK_OK;
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
    return 0;
}

int main(int argc, char **argv)
{
    args a;
    if (parse(argc, argv, &a))
        return 2;
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
    int rc = run(h, &a);
    elk_host_close(h);
    if (npu)
        elk_host_npu_report(npu);
    elk_host_npu_close(npu);
    return rc;
}
