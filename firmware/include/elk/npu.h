/* NPU offload interface: a versioned backend struct (function pointers + context), a registry of
 * backends by name, and the runner that offloads a linear layer's prefill chunks to a backend.
 * Rule: whatever a backend declines, or fails at run time, runs on the CPU path for that op, with one
 * log line through the caller's log hook. Not here: the backends themselves (src/npu/sim.c, litert.c)
 * or any OS code (the LiteRT library is opened by platform code). Section layout: docs/npu.md. */
#ifndef ELK_NPU_H
#define ELK_NPU_H

#include <stdint.h>

#include "elk/spec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a slot is added, removed or changes meaning; the runner refuses other versions. */
#define ELK_NPU_ABI_VERSION 1u
#define ELK_NPU_MAX_BACKENDS 8

/* Ops a backend may be asked about (accepts). v1 offloads only this one. */
enum elk_npu_op {
    ELK_NPU_OP_FC_INT8 = 1, /* FULLY_CONNECTED: int8 x [chunk, cols] per-tensor, int8 W [rows, cols]
                               symmetric per-channel, int32 bias, int8 y [chunk, rows] per-tensor */
};

/* One exported linear layer (one NPU section entry), a view into the image; see docs/npu.md. */
typedef struct elk_npu_layer {
    uint32_t id;                 /* entry index in the NPU section: the "layer tensor id" */
    uint16_t role, layer;        /* ELK_ROLE_WQ..W3 and block index */
    uint32_t rows, cols;         /* out, in */
    uint32_t chunk;              /* fixed token count of the subgraph; partial chunks are padded */
    float in_scale, out_scale;   /* per-tensor activation quantization: x = scale * (q - zp) */
    int32_t in_zp, out_zp;
    const uint8_t *tflite;       /* the .tflite flatbuffer (FULLY_CONNECTED v4), in place */
    uint32_t tflite_size;
    const int8_t *weights;       /* [rows][cols], inside the tflite bytes */
    const uint8_t *bias;         /* int32 LE [rows], inside the tflite bytes (may be unaligned) */
    const uint8_t *multiplier;   /* int32 LE [rows]: requantization, m * 2^(shift - 31) */
    const uint8_t *shift;        /* int32 LE [rows] */
    uint32_t n_outliers;         /* input channels computed on the CPU in float (shadow outliers) */
    const uint8_t *outlier_idx;  /* u32 LE [n_outliers], ascending */
    const uint8_t *outlier_w;    /* f32 LE [n_outliers][rows]: W[:, idx[k]] */
} elk_npu_layer;

/* A backend. Mandatory: abi_version, name, run_linear_chunk. Optional slots say their default. */
typedef struct elk_npu_backend {
    uint32_t abi_version;        /* ELK_NPU_ABI_VERSION */
    const char *name;            /* "sim", "litert", a vendor name */

    /* Get ready for n_layers exported layers (open the device, size tables).
     * (optional) NULL: nothing to prepare. Non-zero: the runner uses the CPU for everything. */
    int (*init)(void *ctx, uint32_t n_layers);

    /* 1 if the backend will run `op` with this layer's shapes, 0 to decline (CPU runs it).
     * Called once per layer at runner init, in entry order; a backend that compiles or uploads the
     * layer's subgraph does it here and declines when that fails. (optional) NULL: accepts all. */
    int (*accepts)(void *ctx, int op, const elk_npu_layer *layer);

    /* y_q[chunk][rows] = FC(x_q[chunk][cols]) with the layer's quantization. Returns 0, or a negative
     * ELK_E_* code: the runner then computes this call on the CPU and stops offloading this layer. */
    int (*run_linear_chunk)(void *ctx, const elk_npu_layer *layer, const int8_t *x_q, int8_t *y_q);

    /* Simulated or measured device time of one run_linear_chunk of this layer, in seconds.
     * (optional) NULL: 0 (unknown). The sim backend's cost model fills it from the board file. */
    double (*chunk_seconds)(void *ctx, const elk_npu_layer *layer);

    /* Release what init made. (optional) NULL: nothing to release. */
    void (*deinit)(void *ctx);
} elk_npu_backend;

/* ---- registry (fixed slots, no allocation) ------------------------------------------------- */

/* Add a backend (the built-in "sim" is always present). ELK_E_INVAL for a bad struct or ABI version,
 * ELK_E_RANGE when the registry is full; registering the same name again replaces it. */
int elk_npu_register(const elk_npu_backend *backend);
/* The backend called `name`, or NULL. */
const elk_npu_backend *elk_npu_find(const char *name);

extern const elk_npu_backend elk_npu_sim_backend;

/* ---- sim backend context ------------------------------------------------------------------- */

typedef struct elk_npu_sim_ctx {
    double tops;           /* int8 tera-ops per second (1 MAC = 2 ops); <= 0: 1.0 */
    double dma_gbs;        /* weight/activation transfer bandwidth, GB/s; <= 0: 4.0 */
    uint32_t decline_mask; /* test knob: decline layers whose id % 2 == 1 when bit 0 is set */
    uint32_t fail_after;   /* test knob: > 0 makes run_linear_chunk fail once `calls` reaches it; 0 never */
    uint64_t calls;        /* run_linear_chunk calls so far */
} elk_npu_sim_ctx;

/* ---- NPU section ---------------------------------------------------------------------------- */

/* Parse and bounds-check an NPU section (docs/npu.md): head, CRC of head + entry table, every
 * blob inside the section, tflite identifier, weights/bias inside their tflite bytes, shapes.
 * Returns ELK_OK, ELK_E_FORMAT, ELK_E_VERSION, ELK_E_CRC or ELK_E_BOUNDS; err[128] says what. */
typedef struct elk_npu_section {
    const uint8_t *base;
    uint64_t size;
    uint32_t chunk, n_entries, flags;
} elk_npu_section;

int elk_npu_section_open(elk_npu_section *sec, const void *data, uint64_t size, char err[128]);
/* Entry i as a layer view (after a successful open). */
int elk_npu_section_layer(const elk_npu_section *sec, uint32_t i, elk_npu_layer *out);

/* ---- runner: what the model's linear function calls -------------------------------------- */

typedef void (*elk_log_fn)(void *user, const char *line);

#define ELK_NPU_MAX_LAYERS 1024 /* 7 linear layers x up to 146 blocks */

typedef struct elk_npu_stats {
    uint64_t chunks;            /* run_linear_chunk calls that succeeded */
    uint64_t cpu_fallbacks;     /* linear calls that went to the CPU (declined, failed, too few tokens) */
    double npu_seconds;         /* sum of chunk_seconds over successful chunks */
} elk_npu_stats;

typedef struct elk_npu_runner {
    elk_npu_section sec;
    const elk_npu_backend *backend;
    void *ctx;
    elk_log_fn log;
    void *log_user;
    uint32_t min_tokens;        /* calls with fewer tokens run on the CPU (decode); default 2 */
    uint8_t state[ELK_NPU_MAX_LAYERS]; /* per entry: 0 not exported, 1 offloaded, 2 declined, 3 failed */
    int8_t *xq, *yq;            /* scratch: chunk x max(cols), chunk x max(rows) */
    uint32_t max_rows, max_cols;
    elk_npu_stats stats;
} elk_npu_runner;

/* Scratch bytes elk_npu_runner_init needs for this section (0 if the section is malformed). */
uint64_t elk_npu_runner_arena_size(const void *section, uint64_t size);

/* Open the section, check the backend's ABI, call init and accepts for every layer (declines are
 * logged). On any failure the runner still works: it sends everything to the CPU (return value says
 * why: ELK_E_* from the section or the backend). */
int elk_npu_runner_init(elk_npu_runner *r, const void *section, uint64_t size,
                        const elk_npu_backend *backend, void *ctx, elk_log_fn log, void *log_user,
                        void *arena, uint64_t arena_size);
void elk_npu_runner_deinit(elk_npu_runner *r);

/* y[t][rows] = W x[t] for t < n_tok, the linear layer (role, layer), through the NPU in chunks.
 * x: n_tok x cols floats (row stride cols), y: n_tok x rows floats; rows/cols are the caller's tensor
 * shape, and an entry of another shape is declined. Returns ELK_OK when y is filled;
 * ELK_E_UNSUPPORTED when the caller must run its CPU path for this call (layer not exported, declined
 * or failed, or n_tok < min_tokens). A chunk that fails mid-call is logged once, the layer goes to the
 * CPU for good, and the call returns ELK_E_UNSUPPORTED: the caller then overwrites all of y. */
int elk_npu_linear(elk_npu_runner *r, int role, int layer, uint32_t rows, uint32_t cols, const float *x,
                   float *y, int n_tok);

#ifdef __cplusplus
}
#endif
#endif /* ELK_NPU_H */
