/* Host-side NPU session for the Python tool (cffi) and the board programs: owns a runner, its
 * scratch, the backend context (sim knobs, LiteRT slots) and a log buffer, all malloc'd here in
 * platform code. Not here: offload logic (src/npu/npu.c). Functions return ELK_OK or ELK_E_*. */
#ifndef ELK_NPU_HOST_H
#define ELK_NPU_HOST_H

#include <stdint.h>

#include "elk/npu.h"

typedef struct elk_host_npu elk_host_npu;

/* Load libLiteRt.so at `path` and register the "litert" backend (once per process). */
int elk_host_litert_load(const char *path, char *err, int errcap);

/* A session over an NPU section (kept by the caller while the session lives) with backend "sim" or
 * "litert". tops/dma_gbs: the board's NPU (sim cost model). accelerators: LiteRT ELK_LITERT_ACCEL_*
 * bits (0 = CPU); dispatch_dir: LiteRT's vendor dispatch library folder (NULL = default);
 * log_severity: LiteRT's minimum log level (< 0 = its default, 3 = errors only); at 2 or 3 the TFLite
 * logger's INFO lines are dropped too and its errors join the session log (npu_host.c).
 * decline_mask/fail_after: sim test knobs (elk_npu_sim_ctx). NULL on failure with *status and err
 * set; a session whose runner sends everything to the CPU is not a failure. */
elk_host_npu *elk_host_npu_open(const void *section, uint64_t size, const char *backend, double tops,
                                double dma_gbs, int accelerators, const char *dispatch_dir, int log_severity,
                                uint32_t decline_mask, uint32_t fail_after, int *status, char *err, int errcap);
void elk_host_npu_close(elk_host_npu *h);

/* The backend's raw chunk call on entry `entry` (x: chunk x cols int8, y: chunk x rows int8). */
int elk_host_npu_run_chunk(elk_host_npu *h, uint32_t entry, const int8_t *x, int8_t *y);
/* elk_npu_linear through the session's runner. */
int elk_host_npu_linear(elk_host_npu *h, int role, int layer, uint32_t rows, uint32_t cols, const float *x,
                        float *y, int n_tok);
/* Calls with fewer than min_tokens tokens go to the CPU (default 2: decode stays on the CPU). */
void elk_host_npu_configure(elk_host_npu *h, int min_tokens);
/* Per entry: 0 not exported, 1 offloaded, 2 declined, 3 failed. -1 for a bad index. */
int elk_host_npu_entry_state(const elk_host_npu *h, uint32_t entry);
void elk_host_npu_stats(const elk_host_npu *h, uint64_t *chunks, uint64_t *cpu_fallbacks, double *npu_seconds);
/* Notices logged so far, one per line (NUL-terminated, never NULL). */
const char *elk_host_npu_log(const elk_host_npu *h);
/* For elk_model_opts: npu = backend, npu_ctx = runner (see docs/npu.md). NULL if the runner is off. */
const elk_npu_backend *elk_host_npu_backend(elk_host_npu *h);
elk_npu_runner *elk_host_npu_runner(elk_host_npu *h);

/* Route the prefill linears of the model behind a libelk host handle (host_api.h) through this
 * session's runner (sets the model's npu/npu_ctx); s = NULL detaches. The image's NPU section must be
 * the one the session was opened on. ELK_E_INVAL for a NULL handle. */
struct elk_host;
int elk_host_npu_attach(struct elk_host *host, elk_host_npu *s);

/* For programs (elk-run): open a session on the NPU section of the image behind `host` with backend
 * "sim" or "litert" (litert_lib: path of libLiteRt.so, loaded first), attach it, and return it in *out.
 * Close it after elk_host_close. Non-zero with err set when the image has no NPU section, the section
 * is malformed or the backend is unknown. A LiteRT library that cannot be loaded is not an error: the
 * session then runs every layer on the CPU and its report is the one-line notice saying why. */
int elk_host_npu_open_host(struct elk_host *host, const char *backend, const char *litert_lib, double tops,
                           double dma_gbs, elk_host_npu **out, char *err, int errcap);
/* One line of stats (chunks, CPU fallbacks, simulated NPU seconds) and the notices, to stderr. */
void elk_host_npu_report(const elk_host_npu *s);

#endif /* ELK_NPU_HOST_H */
