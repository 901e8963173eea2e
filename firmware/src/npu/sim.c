/* The simulated NPU: TFLite's FULLY_CONNECTED int8 reference arithmetic in portable C (int8 x int8 ->
 * int32 accumulate, + int32 bias, fixed-point requantize with double rounding, clamp to int8) on the
 * layer's fixed chunk shape, plus a cost model (board TOPS and DMA bandwidth) for its device time.
 * Not a fast kernel: it exists to define and check what a real NPU must return. */
#include "elk/npu.h"
#include "util/util.h"

/* SaturatingRoundingDoublingHighMul: (a * b * 2 + 2^31) >> 32 with TFLite's rounding and saturation. */
static int32_t srdhm(int32_t a, int32_t b)
{
    if (a == b && a == INT32_MIN)
        return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
    int64_t s = ab + nudge;
    return (int32_t)(s >= 0 ? s / (1ll << 31) : -((-s) / (1ll << 31))); /* truncates toward zero */
}

/* RoundingDivideByPOT: x / 2^exp rounded half away from zero. */
static int32_t rounding_divide_by_pot(int32_t x, int exp)
{
    int32_t mask = (int32_t)((1ll << exp) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exp) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier (the default, double-rounding variant). */
static int32_t requantize(int32_t acc, int32_t mult, int32_t shift)
{
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t x = (int64_t)acc * ((int64_t)1 << left);
    if (x > INT32_MAX)
        x = INT32_MAX;
    if (x < INT32_MIN)
        x = INT32_MIN;
    return rounding_divide_by_pot(srdhm((int32_t)x, mult), right);
}

static int sim_accepts(void *ctx, int op, const elk_npu_layer *layer)
{
    const elk_npu_sim_ctx *c = ctx;
    if (op != ELK_NPU_OP_FC_INT8)
        return 0;
    if (c && (c->decline_mask & 1u) && (layer->id % 2) == 1)
        return 0;
    return 1;
}

/* y_q[t][r] for t < chunk: the whole fixed shape, as the device would (padding rows included). */
static int sim_run(void *ctx, const elk_npu_layer *L, const int8_t *x_q, int8_t *y_q)
{
    elk_npu_sim_ctx *c = ctx;
    if (c) {
        if (c->fail_after > 0 && c->calls >= c->fail_after)
            return ELK_E_IO;
        c->calls++;
    }
    for (uint32_t r = 0; r < L->rows; r++) {
        const int8_t *w = L->weights + (uint64_t)r * L->cols;
        int32_t bias = (int32_t)elk_le32(L->bias + 4ull * r);
        int32_t mult = (int32_t)elk_le32(L->multiplier + 4ull * r);
        int32_t shift = (int32_t)elk_le32(L->shift + 4ull * r);
        if (shift > 30 || shift < -31)
            return ELK_E_RANGE;
        for (uint32_t t = 0; t < L->chunk; t++) {
            const int8_t *x = x_q + (uint64_t)t * L->cols;
            int32_t acc = 0; /* |acc| <= 255 * 127 * cols: fits int32 for cols < 66000 */
            for (uint32_t k = 0; k < L->cols; k++)
                acc += ((int32_t)x[k] - L->in_zp) * (int32_t)w[k];
            int64_t sum = (int64_t)acc + bias; /* saturate: a hostile bias must not overflow int32 */
            sum = sum > INT32_MAX ? INT32_MAX : sum < INT32_MIN ? INT32_MIN : sum;
            int32_t v = requantize((int32_t)sum, mult, shift);
            v = v > 255 ? 255 : v < -256 ? -256 : v; /* keeps + out_zp in range; the clamp below decides */
            v += L->out_zp;
            y_q[(uint64_t)t * L->rows + r] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
    }
    return ELK_OK;
}

/* Device time of one chunk: MACs at the board's TOPS plus weights + activations over its DMA link
 * (no overlap assumed: a conservative figure for NPUs that stream weights from DRAM per call). */
static double sim_chunk_seconds(void *ctx, const elk_npu_layer *L)
{
    const elk_npu_sim_ctx *c = ctx;
    double tops = (c && c->tops > 0) ? c->tops : 1.0;
    double gbs = (c && c->dma_gbs > 0) ? c->dma_gbs : 4.0;
    double ops = 2.0 * L->chunk * (double)L->rows * L->cols;
    double bytes = (double)L->rows * L->cols + 4.0 * L->rows + (double)L->chunk * (L->rows + L->cols);
    return ops / (tops * 1e12) + bytes / (gbs * 1e9);
}

const elk_npu_backend elk_npu_sim_backend = {
    .abi_version = ELK_NPU_ABI_VERSION,
    .name = "sim",
    .init = NULL,
    .accepts = sim_accepts,
    .run_linear_chunk = sim_run,
    .chunk_seconds = sim_chunk_seconds,
    .deinit = NULL,
};
