/* Host NPU session (see npu_host.h): allocation, backend contexts and a log buffer around the core
 * runner. Platform code: malloc and stdio allowed. Not here: the offload arithmetic (src/npu/). */
#define _DEFAULT_SOURCE /* mkstemp, pread, dup, strtok_r */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host_api.h"
#include "model/model.h"
#include "npu/litert.h"
#include "npu_host.h"

const elk_litert_api *elk_host_litert_api(void);

/* LiteRT logs through two loggers. Its own obeys the environment's minimum severity (litert.c passes
 * ELK_LITERT_ENV_MIN_LOGGER_SEVERITY), but the TFLite interpreter under it writes to stderr through a
 * second, process-wide logger ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", "ERROR: Didn't
 * find op for builtin opcode ...") that no exported symbol of libLiteRt.so controls: LiteRT 2.3 exports
 * only LiteRt* functions (no TfLite* error-reporter or severity setter, no logger setter; nm -D) and
 * reads no environment variable for it. So while the backend creates its environment and compiles the
 * layers (init + accepts: where it prints), fd 2 goes to an unlinked temporary file; INFO and VERBOSE
 * lines are dropped, anything else becomes part of elk's own one-line notice (the decline it caused,
 * or `npu: litert: ...`). Runs on the thread that opens the session, before any generation starts; a
 * write by another thread in that window would be filtered the same way. Chunk runs print too (LiteRT
 * allocates a compiled model's tensors, and XNNPACK prepares its subgraph, at the first run: "ERROR:
 * Node number 1 (TfLiteXNNPackDelegate) failed to prepare."), so each run of the session's chunks sends
 * fd 2 to the same file (captured_run; a dup and two dup2 per chunk) and its words join the runner's
 * `failed on` notice. */
typedef struct stderr_capture {
    int fd;      /* the temporary file (fd 2 points at it while capturing) */
    int saved;   /* the real stderr */
    off_t seen;  /* bytes already turned into notices */
} stderr_capture;

struct elk_host_npu {
    elk_npu_runner runner;
    elk_npu_sim_ctx sim;
    elk_npu_litert_ctx litert;
    void *ctx;
    void *arena;
    int runner_ok;
    stderr_capture *capture; /* set while LiteRT's output is captured */
    stderr_capture cap;      /* LiteRT's file, kept open for the chunk runs when cap_open */
    int cap_open;
    const elk_npu_backend *inner; /* the LiteRT backend that captured_run wraps */
    elk_npu_backend outer;        /* what the runner calls: the backend with captured_run */
    char log[4096];
    size_t log_len;
};

/* fd 2 to the capture file until capture_restore; -1 (nothing redirected) when it cannot be. */
static int capture_redirect(stderr_capture *c)
{
    fflush(stderr);
    c->saved = dup(2);
    if (c->saved < 0)
        return -1;
    if (dup2(c->fd, 2) < 0) {
        close(c->saved);
        return -1;
    }
    return 0;
}

static void capture_restore(stderr_capture *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
}

static int capture_begin(stderr_capture *c)
{
    char path[] = "/tmp/elk-litert-XXXXXX";
    c->fd = mkstemp(path);
    if (c->fd < 0)
        return -1; /* no temporary file: LiteRT prints as it likes, nothing is lost */
    unlink(path);
    c->seen = 0;
    if (capture_redirect(c) != 0) {
        close(c->fd);
        return -1;
    }
    return 0;
}

/* What LiteRT wrote since the last call, INFO/VERBOSE lines and blank lines dropped, the rest joined
 * with "; " into out (empty when nothing is left); `all`: also a last line without its newline.
 * pread keeps the file offset LiteRT writes at. */
static void capture_take(stderr_capture *c, char *out, size_t cap, int all)
{
    char buf[2048];
    size_t len = 0;
    out[0] = 0;
    for (;;) {
        ssize_t got = pread(c->fd, buf, sizeof buf - 1, c->seen);
        if (got <= 0)
            return;
        buf[got] = 0;
        char *end = strrchr(buf, '\n');
        if (!end && (size_t)got < sizeof buf - 1 && !all)
            return; /* a line still being written: take it next time */
        size_t used = end ? (size_t)(end - buf) + 1 : (size_t)got;
        buf[used - (end ? 1 : 0)] = 0;
        c->seen += (off_t)used;
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            size_t n = strlen(line);
            while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
                line[--n] = 0;
            if (!n || strncmp(line, "INFO: ", 6) == 0 || strncmp(line, "VERBOSE: ", 9) == 0)
                continue;
            int w = snprintf(out + len, cap - len, "%s%s", len ? "; " : "", line);
            len = w < 0 || (size_t)w >= cap - len ? cap - 1 : len + (size_t)w;
        }
    }
}

static void host_log_raw(elk_host_npu *h, const char *line);

/* The runner's notices; while LiteRT's output is captured, what it printed for the layer (its reason
 * for a decline) joins the notice: one line per cause. */
static void host_log(void *user, const char *line)
{
    elk_host_npu *h = user;
    char said[1024], joined[1400];
    if (h->capture) {
        capture_take(h->capture, said, sizeof said, 0);
        if (said[0]) {
            snprintf(joined, sizeof joined, "%s; LiteRT said: %s", line, said);
            line = joined;
        }
    }
    host_log_raw(h, line);
}

static void host_log_raw(elk_host_npu *h, const char *line)
{
    size_t n = strlen(line);
    if (h->log_len + n + 2 > sizeof h->log)
        return; /* keep the first notices: they name the cause */
    memcpy(h->log + h->log_len, line, n);
    h->log_len += n;
    h->log[h->log_len++] = '\n';
    h->log[h->log_len] = 0;
}

/* The LiteRT backend's chunk run with LiteRT's output captured: a failed run's words join the runner's
 * `failed on` notice that follows (host_log); what a run that worked printed is one `npu: litert:` line. */
static int captured_run(void *vctx, const elk_npu_layer *L, const int8_t *x, int8_t *y)
{
    elk_host_npu *h = (elk_host_npu *)(void *)((char *)vctx - offsetof(elk_host_npu, litert));
    if (capture_redirect(&h->cap) != 0)
        return h->inner->run_linear_chunk(vctx, L, x, y);
    int rc = h->inner->run_linear_chunk(vctx, L, x, y);
    capture_restore(&h->cap);
    if (rc == ELK_OK) {
        char said[1024], line[1100];
        capture_take(&h->cap, said, sizeof said, 1);
        if (said[0]) {
            snprintf(line, sizeof line, "npu: litert: %s", said);
            host_log_raw(h, line);
        }
    }
    return rc;
}

static elk_host_npu *open_fail(elk_host_npu *h, int *status, int code, char *err, int errcap, const char *msg)
{
    if (status)
        *status = code;
    if (err && errcap > 0)
        snprintf(err, errcap, "%s", msg);
    elk_host_npu_close(h);
    return NULL;
}

elk_host_npu *elk_host_npu_open(const void *section, uint64_t size, const char *backend, double tops,
                                double dma_gbs, int accelerators, const char *dispatch_dir, int log_severity,
                                uint32_t decline_mask, uint32_t fail_after, int *status, char *err, int errcap)
{
    char why[128];
    elk_npu_section sec;
    int rc = elk_npu_section_open(&sec, section, size, why);
    if (rc != ELK_OK)
        return open_fail(NULL, status, rc, err, errcap, why);
    const elk_npu_backend *b = elk_npu_find(backend);
    if (!b)
        return open_fail(NULL, status, ELK_E_MISSING, err, errcap,
                         "unknown NPU backend (litert needs its library loaded first)");
    elk_host_npu *h = calloc(1, sizeof *h);
    uint64_t need = elk_npu_runner_arena_size(section, size);
    if (!h || !(h->arena = malloc(need)))
        return open_fail(h, status, ELK_E_NOMEM, err, errcap, "out of memory");
    if (strcmp(b->name, "sim") == 0) {
        h->sim.tops = tops;
        h->sim.dma_gbs = dma_gbs;
        h->sim.decline_mask = decline_mask;
        h->sim.fail_after = fail_after;
        h->ctx = &h->sim;
    } else if (strcmp(b->name, "litert") == 0) {
        h->litert.api = elk_host_litert_api();
        h->litert.accelerators = accelerators;
        h->litert.dispatch_dir = dispatch_dir && dispatch_dir[0] ? dispatch_dir : NULL;
        h->litert.log_severity = log_severity;
        h->litert.n_slots = sec.n_entries;
        h->litert.slots = calloc(sec.n_entries, sizeof *h->litert.slots);
        if (!h->litert.slots)
            return open_fail(h, status, ELK_E_NOMEM, err, errcap, "out of memory");
        h->ctx = &h->litert;
    }
    /* severity >= 2 (warnings and errors) asks for no INFO lines: filter the TFLite logger's too */
    if (h->ctx == &h->litert && log_severity >= 2 && capture_begin(&h->cap) == 0) {
        h->capture = &h->cap;
        h->cap_open = 1;
        h->inner = b;
        h->outer = *b;
        h->outer.run_linear_chunk = captured_run;
        b = &h->outer;
    }
    rc = elk_npu_runner_init(&h->runner, section, size, b, h->ctx, host_log, h, h->arena, need);
    if (h->capture) {
        char said[1024], line[1100];
        capture_take(&h->cap, said, sizeof said, 1);
        h->capture = NULL;
        capture_restore(&h->cap);
        if (said[0]) {
            snprintf(line, sizeof line, "npu: litert: %s", said);
            host_log_raw(h, line);
        }
    }
    h->runner_ok = rc == ELK_OK;
    if (h->runner_ok && h->ctx == &h->litert && h->litert.n_on_cpu > 0) {
        char line[200];
        snprintf(line, sizeof line, "npu: litert placed %u of %u layers on its own CPU: the requested %s "
                 "accelerator is not available here", (unsigned)h->litert.n_on_cpu, (unsigned)sec.n_entries,
                 (accelerators & ELK_LITERT_ACCEL_NPU) ? "NPU" : "GPU");
        host_log(h, line);
    }
    if (h->cap_open)
        h->capture = &h->cap; /* from now on: what a chunk run printed (captured_run) */
    if (status)
        *status = rc;
    if (err && errcap > 0)
        snprintf(err, errcap, "%s", rc == ELK_OK ? "" : h->log);
    return h;
}

void elk_host_npu_close(elk_host_npu *h)
{
    if (!h)
        return;
    if (h->runner_ok)
        elk_npu_runner_deinit(&h->runner);
    if (h->cap_open)
        close(h->cap.fd);
    free(h->litert.slots);
    free(h->arena);
    free(h);
}

int elk_host_npu_run_chunk(elk_host_npu *h, uint32_t entry, const int8_t *x, int8_t *y)
{
    elk_npu_layer L;
    if (!h->runner_ok || elk_npu_section_layer(&h->runner.sec, entry, &L) != ELK_OK)
        return ELK_E_RANGE;
    if (h->runner.state[entry] != ELK_NPU_STATE_NPU)
        return ELK_E_UNSUPPORTED;
    return h->runner.backend->run_linear_chunk(h->ctx, &L, x, y);
}

int elk_host_npu_linear(elk_host_npu *h, int role, int layer, uint32_t rows, uint32_t cols, const float *x,
                        float *y, int n_tok)
{
    return h->runner_ok ? elk_npu_linear(&h->runner, role, layer, rows, cols, x, y, n_tok) : ELK_E_UNSUPPORTED;
}

void elk_host_npu_configure(elk_host_npu *h, int min_tokens)
{
    h->runner.min_tokens = min_tokens > 0 ? (uint32_t)min_tokens : 1;
}

int elk_host_npu_entry_state(const elk_host_npu *h, uint32_t entry)
{
    return entry < h->runner.sec.n_entries ? h->runner.state[entry] : -1;
}

void elk_host_npu_stats(const elk_host_npu *h, uint64_t *chunks, uint64_t *cpu_fallbacks, double *npu_seconds)
{
    *chunks = h->runner.stats.chunks;
    *cpu_fallbacks = h->runner.stats.cpu_fallbacks;
    *npu_seconds = h->runner.stats.npu_seconds;
}

const char *elk_host_npu_log(const elk_host_npu *h)
{
    return h->log;
}

const elk_npu_backend *elk_host_npu_backend(elk_host_npu *h)
{
    return h->runner_ok ? h->runner.backend : NULL;
}

elk_npu_runner *elk_host_npu_runner(elk_host_npu *h)
{
    return h->runner_ok ? &h->runner : NULL;
}

int elk_host_npu_attach(struct elk_host *host, elk_host_npu *s)
{
    elk_model *m = elk_host_model(host);
    if (!m)
        return ELK_E_INVAL;
    m->npu = s ? elk_host_npu_backend(s) : NULL;
    m->npu_ctx = s ? elk_host_npu_runner(s) : NULL;
    return ELK_OK;
}

int elk_host_npu_open_host(struct elk_host *host, const char *backend, const char *litert_lib, double tops,
                           double dma_gbs, elk_host_npu **out, char *err, int errcap)
{
    elk_model *m = elk_host_model(host);
    *out = NULL;
    if (!m || !m->img->section[ELK_SECTION_NPU].data) {
        snprintf(err, errcap, "image has no NPU section (pack it with `elk pack ... --npu`)");
        return ELK_E_MISSING;
    }
    int rc = ELK_OK;
    if (strcmp(backend, "litert") == 0 && (rc = elk_host_litert_load(litert_lib, err, errcap)) != ELK_OK) {
        /* no usable LiteRT: a session that sends every layer to the CPU, with one notice (not an error:
         * the NPU only speeds up prefill, the CPU path gives the answer) */
        elk_host_npu *s = calloc(1, sizeof *s);
        if (!s)
            return ELK_E_NOMEM;
        char line[320];
        snprintf(line, sizeof line, "npu: litert unavailable (%s); CPU runs every layer", err);
        host_log(s, line);
        err[0] = 0;
        *out = s;
        return ELK_OK;
    }
    elk_host_npu *s = elk_host_npu_open(m->img->section[ELK_SECTION_NPU].data,
                                        m->img->section[ELK_SECTION_NPU].size, backend, tops, dma_gbs, 0, NULL,
                                        3, 0, 0, &rc, err, errcap);
    if (!s)
        return rc;
    elk_host_npu_attach(host, s);
    *out = s;
    return ELK_OK;
}

void elk_host_npu_report(const elk_host_npu *s)
{
    if (!s->runner_ok) { /* nothing ran on an NPU: only the notices say why */
        fputs(s->log, stderr);
        return;
    }
    fprintf(stderr, "npu %s: %llu chunks offloaded, %llu prefill linear calls on the CPU (decode runs there)",
            s->runner.backend->name, (unsigned long long)s->runner.stats.chunks,
            (unsigned long long)s->runner.stats.cpu_fallbacks);
    if (s->runner.backend->chunk_seconds) /* only a backend with a cost model knows its device time */
        fprintf(stderr, ", simulated NPU time %.3f ms", 1e3 * s->runner.stats.npu_seconds);
    fprintf(stderr, "\n%s", s->log);
}
