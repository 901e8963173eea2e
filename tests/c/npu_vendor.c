/* A board vendor's NPU backend, written the way docs/npu.md ("Plugging in a real NPU") says: one file
 * against the public elk/npu.h only, registered at start-up with elk_npu_register, then driven by the
 * core runner. The "device" here is float requantization (what many NPUs and XNNPACK do instead of
 * TFLite's fixed-point), and it declines layers wider than 128 outputs, like an NPU with a small SRAM.
 * Not a production backend: tests/test_npu_vendor.py builds it with gcc against libelk.so and checks
 * that it plugs in, agrees with the sim to +-1 and that its declines run on the CPU path;
 * tests/test_npu_vendor_fw.py builds it into elk-fw (-DNPU_VENDOR_NO_MAIN, registered at the top of
 * board_main.c's main as docs/npu.md says) and serves an NPU image on an emulated board with it.
 * Usage: npu-vendor SECTION_FILE  (prints "key value" lines) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elk/npu.h"

/* ---- the vendor backend ------------------------------------------------------------------------ */

/* Device state lives here, not in the runner's context: the firmware passes ctx = NULL (docs/npu.md). */
static int acme_initialized;
static unsigned acme_runs;

static int32_t rd32(const uint8_t *p) /* the layer's tables are little-endian and maybe unaligned */
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static int acme_init(void *ctx, uint32_t n_layers)
{
    (void)ctx;
    acme_initialized = n_layers > 0;
    return ELK_OK;
}

static int acme_accepts(void *ctx, int op, const elk_npu_layer *L)
{
    (void)ctx;
    return op == ELK_NPU_OP_FC_INT8 && L->rows <= 128; /* our SRAM holds 128 output channels */
}

/* y = clamp(round((sum (x - zp_in) w + bias) * M) + zp_out), M = multiplier * 2^(shift - 31) in double */
static int acme_run(void *ctx, const elk_npu_layer *L, const int8_t *x_q, int8_t *y_q)
{
    (void)ctx;
    if (!acme_initialized)
        return ELK_E_STATE;
    acme_runs++;
    for (uint32_t r = 0; r < L->rows; r++) {
        double m = ldexp((double)rd32(L->multiplier + 4u * r), rd32(L->shift + 4u * r) - 31);
        for (uint32_t t = 0; t < L->chunk; t++) {
            int64_t acc = rd32(L->bias + 4u * r);
            for (uint32_t k = 0; k < L->cols; k++)
                acc += (int64_t)(x_q[(size_t)t * L->cols + k] - L->in_zp) * L->weights[(size_t)r * L->cols + k];
            double v = nearbyint((double)acc * m) + L->out_zp;
            y_q[(size_t)t * L->rows + r] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
    }
    return ELK_OK;
}

static double acme_chunk_seconds(void *ctx, const elk_npu_layer *L)
{
    (void)ctx;
    return 2.0 * L->chunk * L->rows * L->cols / 4e12; /* a 4-TOPS part, weights resident */
}

extern const elk_npu_backend acme_npu_backend; /* external: a board's start-up code registers it */
const elk_npu_backend acme_npu_backend = {
    .abi_version = ELK_NPU_ABI_VERSION,
    .name = "acme",
    .init = acme_init,
    .accepts = acme_accepts,
    .run_linear_chunk = acme_run,
    .chunk_seconds = acme_chunk_seconds,
    .deinit = NULL, /* optional slot: nothing to release */
};

/* ---- the driver: what a board's start-up code and the model's linear layer do -------------------- */
#ifndef NPU_VENDOR_NO_MAIN

static void log_line(void *user, const char *line)
{
    (void)user;
    printf("notice %s\n", line);
}

static unsigned char *read_file(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, 0, SEEK_END) || (*size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
        return NULL;
    unsigned char *d = malloc((size_t)*size + 1);
    if (d && fread(d, 1, (size_t)*size, f) != (size_t)*size)
        d = NULL;
    fclose(f);
    return d;
}

/* One runner per backend over the same section; returns its y for every layer, n_tok tokens. */
static float *run_all(const elk_npu_backend *b, void *ctx, const unsigned char *sec, long size, const float *x,
                      int n_tok, int *offloaded, elk_npu_stats *stats)
{
    static elk_npu_runner r; /* large (per-layer state): not on the stack */
    uint64_t need = elk_npu_runner_arena_size(sec, (uint64_t)size);
    void *arena = malloc(need);
    if (!arena || elk_npu_runner_init(&r, sec, (uint64_t)size, b, ctx, log_line, NULL, arena, need) != ELK_OK)
        return NULL;
    elk_npu_section s;
    elk_npu_layer L;
    elk_npu_section_open(&s, sec, (uint64_t)size, NULL);
    float *y = calloc((size_t)s.n_entries * n_tok * 4096, sizeof *y);
    *offloaded = 0;
    for (uint32_t i = 0; y && i < s.n_entries; i++) {
        elk_npu_section_layer(&s, i, &L);
        float *yi = y + (size_t)i * n_tok * 4096;
        if (elk_npu_linear(&r, L.role, L.layer, L.rows, L.cols, x, yi, n_tok) == ELK_OK)
            ++*offloaded;
        else
            yi[0] = NAN; /* the caller's CPU path would run this one */
    }
    *stats = r.stats;
    elk_npu_runner_deinit(&r);
    free(arena);
    return y;
}

int main(int argc, char **argv)
{
    long size = 0;
    unsigned char *sec = argc > 1 ? read_file(argv[1], &size) : NULL;
    if (!sec)
        return fprintf(stderr, "usage: npu-vendor SECTION_FILE\n"), 2;
    elk_npu_backend bad = acme_npu_backend;
    bad.abi_version = ELK_NPU_ABI_VERSION + 1;
    printf("register_other_abi %d\n", elk_npu_register(&bad));
    printf("register %d\n", elk_npu_register(&acme_npu_backend));
    const elk_npu_backend *acme = elk_npu_find("acme"), *sim = elk_npu_find("sim");
    printf("found %d\n", acme == &acme_npu_backend && sim != NULL);

    enum { N_TOK = 45 }; /* one full 32-token chunk and a padded one */
    float *x = malloc(sizeof(float) * N_TOK * 4096);
    unsigned seed = 12345;
    for (int i = 0; i < N_TOK * 4096; i++) { /* activations of a few units, deterministic */
        seed = seed * 1103515245u + 12345u;
        x[i] = ((float)((seed >> 9) & 0xFFFF) / 65536.0f - 0.5f) * 4.0f;
    }
    int off_acme = 0, off_sim = 0;
    elk_npu_stats st_acme, st_sim;
    float *ya = run_all(acme, NULL, sec, size, x, N_TOK, &off_acme, &st_acme);
    float *ys = run_all(sim, NULL, sec, size, x, N_TOK, &off_sim, &st_sim);
    if (!ya || !ys)
        return fprintf(stderr, "npu-vendor: runner did not start\n"), 1;
    elk_npu_section s;
    elk_npu_layer L;
    elk_npu_section_open(&s, sec, (uint64_t)size, NULL);
    double worst_steps = 0; /* |acme - sim| in output quantization steps, over offloaded layers */
    for (uint32_t i = 0; i < s.n_entries; i++) {
        elk_npu_section_layer(&s, i, &L);
        const float *a = ya + (size_t)i * N_TOK * 4096, *b = ys + (size_t)i * N_TOK * 4096;
        if (isnan(a[0]))
            continue;
        for (size_t k = 0; k < (size_t)N_TOK * L.rows; k++) {
            double d = fabs((double)a[k] - b[k]) / L.out_scale;
            worst_steps = d > worst_steps ? d : worst_steps;
        }
    }
    printf("layers %u\noffloaded_acme %d\noffloaded_sim %d\n", (unsigned)s.n_entries, off_acme, off_sim);
    printf("acme_runs %u\nchunks_acme %llu\n", acme_runs, (unsigned long long)st_acme.chunks);
    printf("acme_seconds %.9g\nworst_steps %.4f\n", st_acme.npu_seconds, worst_steps);
    return 0;
}
#endif /* NPU_VENDOR_NO_MAIN */
