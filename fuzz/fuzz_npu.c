/* libFuzzer harness: the NPU section parser (elk_npu_section_open) and the runner over the sim
 * backend on whatever it accepts: every exported layer is run on a partial chunk. The harness
 * rewrites the head CRC first, so mutations reach the entry checks instead of stopping at the CRC.
 * Not LiteRT (a library elk does not build). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "elk/npu.h"
#include "util/util.h"

static void fix_crc(uint8_t *p, size_t size)
{
    if (size < ELK_NPU_HEAD_SIZE)
        return;
    uint64_t n = elk_le32(p + 12), end = ELK_NPU_HEAD_SIZE + n * ELK_NPU_ENTRY_SIZE;
    if (n > ELK_NPU_MAX_LAYERS || end > size)
        return;
    uint32_t crc = elk_crc32(elk_crc32(0, p, 60), p + ELK_NPU_HEAD_SIZE, (size_t)(end - ELK_NPU_HEAD_SIZE));
    memcpy(p + 60, &crc, 4); /* little-endian hosts only: fuzzing runs on x86-64 */
}

static void run_layers(const uint8_t *buf, size_t size)
{
    uint64_t need = elk_npu_runner_arena_size(buf, size);
    if (!need || need > (64u << 20))
        return;
    void *arena = malloc(need);
    elk_npu_runner r;
    elk_npu_sim_ctx ctx = { .tops = 1.0, .dma_gbs = 4.0 };
    if (arena && elk_npu_runner_init(&r, buf, size, &elk_npu_sim_backend, &ctx, NULL, NULL, arena, need) == ELK_OK) {
        for (uint32_t i = 0; i < r.sec.n_entries && i < 16; i++) {
            elk_npu_layer L;
            elk_npu_section_layer(&r.sec, i, &L);
            int n_tok = (int)(L.chunk + 1 < 40 ? L.chunk + 1 : 40); /* one full chunk + a padded one */
            if ((uint64_t)L.rows * L.cols * L.chunk > (1u << 24))
                continue; /* keep each input fast */
            float *x = calloc((size_t)n_tok * L.cols, sizeof(float));
            float *y = malloc((size_t)n_tok * L.rows * sizeof(float));
            for (size_t k = 0; x && k < (size_t)n_tok * L.cols; k++)
                x[k] = (float)((int)(k % 17) - 8) * 0.37f;
            if (x && y)
                elk_npu_linear(&r, L.role, L.layer, L.rows, L.cols, x, y, n_tok);
            free(x);
            free(y);
        }
        elk_npu_runner_deinit(&r);
    }
    free(arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy with no slack, so ASan catches a read one byte past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    fix_crc(buf, size);
    run_layers(buf, size);
    free(buf);
    return 0;
}
