/* NPU section parser (docs/npu.md): bounds-checks the head, the entry table and every blob an entry
 * points at, then hands out per-layer views into the image. Reads bytes in place; allocates nothing.
 * Not here: running anything (npu.c, sim.c, litert.c). */
#include <string.h>

#include "elk/npu.h"
#include "util/util.h"

/* head field offsets */
enum { H_MAGIC = 0, H_VERSION = 4, H_HEAD_SIZE = 6, H_CHUNK = 8, H_N_ENTRIES = 12, H_ENTRY_SIZE = 16,
       H_FLAGS = 20, H_CRC = 60 };
/* entry field offsets */
enum { E_ROLE = 0, E_LAYER = 2, E_ROWS = 4, E_COLS = 8, E_N_OUT = 12, E_IN_SCALE = 16, E_IN_ZP = 20,
       E_OUT_SCALE = 24, E_OUT_ZP = 28, E_TFL_OFF = 32, E_TFL_SIZE = 40, E_W_OFF = 44, E_B_OFF = 48,
       E_QUANT_OFF = 56, E_OUTL_OFF = 64 };

#define MAX_DIM (1u << 20)
#define MAX_COLS 65535u /* int32 accumulator: 255 * 127 * cols must not overflow (as in TFLite) */
#define MAX_CHUNK 4096u

#define NO_ENTRY 0xFFFFFFFFu /* a fault of the head, not of one entry */

static int fail(char *err, int code, const char *what, uint32_t i)
{
    if (err && i == NO_ENTRY)
        elk_fmt(err, 128, "NPU section: %s", what);
    else if (err)
        elk_fmt(err, 128, "NPU section: %s (entry %u)", what, i);
    return code;
}

static int role_exported(uint32_t role)
{
    return role == ELK_ROLE_WQ || role == ELK_ROLE_WK || role == ELK_ROLE_WV || role == ELK_ROLE_WO ||
           role == ELK_ROLE_W1 || role == ELK_ROLE_W2 || role == ELK_ROLE_W3;
}

/* A usable quantization scale: positive and far from overflow (false for NaN and infinities). */
static int sane_scale(float f)
{
    return f > 0.0f && f < 1.0e30f;
}

/* Checks one entry; the head has been checked already. */
static int check_entry(const elk_npu_section *sec, uint32_t i, char *err)
{
    const uint8_t *e = sec->base + ELK_NPU_HEAD_SIZE + (uint64_t)i * ELK_NPU_ENTRY_SIZE;
    uint32_t rows = elk_le32(e + E_ROWS), cols = elk_le32(e + E_COLS), n_out = elk_le32(e + E_N_OUT);
    int32_t in_zp = (int32_t)elk_le32(e + E_IN_ZP), out_zp = (int32_t)elk_le32(e + E_OUT_ZP);
    if (!role_exported(elk_le16(e + E_ROLE)))
        return fail(err, ELK_E_FORMAT, "unknown role", i);
    if (rows == 0 || cols == 0 || rows > MAX_DIM || cols > MAX_COLS || n_out > cols)
        return fail(err, ELK_E_FORMAT, "bad shape", i);
    if (!sane_scale(elk_lef32(e + E_IN_SCALE)) || !sane_scale(elk_lef32(e + E_OUT_SCALE)) ||
        in_zp < -128 || in_zp > 127 || out_zp < -128 || out_zp > 127)
        return fail(err, ELK_E_FORMAT, "bad quantization parameters", i);
    uint64_t tfl = elk_le64(e + E_TFL_OFF), tsz = elk_le32(e + E_TFL_SIZE);
    if (!elk_range_inside(tfl, tsz, ELK_NPU_HEAD_SIZE, sec->size) || tsz < 8)
        return fail(err, ELK_E_BOUNDS, "tflite blob outside the section", i);
    if (memcmp(sec->base + tfl + 4, "TFL3", 4) != 0)
        return fail(err, ELK_E_FORMAT, "tflite blob lacks the TFL3 identifier", i);
    uint64_t wsz = (uint64_t)rows * cols;
    if (!elk_range_inside(elk_le32(e + E_W_OFF), wsz, 0, tsz) ||
        !elk_range_inside(elk_le32(e + E_B_OFF), 4ull * rows, 0, tsz))
        return fail(err, ELK_E_BOUNDS, "weights or bias outside the tflite blob", i);
    if (!elk_range_inside(elk_le64(e + E_QUANT_OFF), 8ull * rows, ELK_NPU_HEAD_SIZE, sec->size))
        return fail(err, ELK_E_BOUNDS, "requantization table outside the section", i);
    if (n_out == 0)
        return ELK_OK; /* outlier_offset is not looked at (0 by convention) */
    uint64_t osz = 4ull * n_out + 4ull * n_out * rows;
    if (!elk_range_inside(elk_le64(e + E_OUTL_OFF), osz, ELK_NPU_HEAD_SIZE, sec->size))
        return fail(err, ELK_E_BOUNDS, "outlier table outside the section", i);
    const uint8_t *idx = sec->base + elk_le64(e + E_OUTL_OFF);
    for (uint32_t k = 0; k < n_out; k++) {
        uint32_t c = elk_le32(idx + 4 * k);
        if (c >= cols || (k > 0 && c <= elk_le32(idx + 4 * (k - 1))))
            return fail(err, ELK_E_FORMAT, "outlier channels not ascending or out of range", i);
    }
    return ELK_OK;
}

int elk_npu_section_open(elk_npu_section *sec, const void *data, uint64_t size, char err[128])
{
    const uint8_t *p = data;
    if (err)
        err[0] = 0;
    memset(sec, 0, sizeof *sec);
    if (!p || size < ELK_NPU_HEAD_SIZE)
        return fail(err, ELK_E_FORMAT, "shorter than its head", NO_ENTRY);
    if (elk_le32(p + H_MAGIC) != ELK_NPU_MAGIC)
        return fail(err, ELK_E_FORMAT, "bad magic", NO_ENTRY);
    if (elk_le16(p + H_VERSION) != ELK_NPU_VERSION)
        return fail(err, ELK_E_VERSION, "unsupported version", NO_ENTRY);
    uint32_t head = elk_le16(p + H_HEAD_SIZE), n = elk_le32(p + H_N_ENTRIES);
    if (head != ELK_NPU_HEAD_SIZE || elk_le32(p + H_ENTRY_SIZE) != ELK_NPU_ENTRY_SIZE)
        return fail(err, ELK_E_FORMAT, "unknown head or entry size", NO_ENTRY);
    if (n == 0 || n > ELK_NPU_MAX_LAYERS ||
        !elk_range_inside(head, (uint64_t)n * ELK_NPU_ENTRY_SIZE, 0, size))
        return fail(err, ELK_E_BOUNDS, "entry table outside the section", NO_ENTRY);
    uint32_t crc = elk_crc32(0, p, H_CRC);
    crc = elk_crc32(crc, p + head, (size_t)n * ELK_NPU_ENTRY_SIZE);
    if (crc != elk_le32(p + H_CRC))
        return fail(err, ELK_E_CRC, "CRC of head and entry table mismatch", NO_ENTRY);
    uint32_t chunk = elk_le32(p + H_CHUNK);
    if (chunk == 0 || chunk > MAX_CHUNK)
        return fail(err, ELK_E_FORMAT, "bad chunk size", NO_ENTRY);
    sec->base = p;
    sec->size = size;
    sec->chunk = chunk;
    sec->n_entries = n;
    sec->flags = elk_le32(p + H_FLAGS);
    for (uint32_t i = 0; i < n; i++) {
        int rc = check_entry(sec, i, err);
        if (rc != ELK_OK) {
            memset(sec, 0, sizeof *sec);
            return rc;
        }
    }
    return ELK_OK;
}

int elk_npu_section_layer(const elk_npu_section *sec, uint32_t i, elk_npu_layer *out)
{
    if (!sec->base || i >= sec->n_entries)
        return ELK_E_RANGE;
    const uint8_t *e = sec->base + ELK_NPU_HEAD_SIZE + (uint64_t)i * ELK_NPU_ENTRY_SIZE;
    const uint8_t *tfl = sec->base + elk_le64(e + E_TFL_OFF);
    const uint8_t *q = sec->base + elk_le64(e + E_QUANT_OFF);
    memset(out, 0, sizeof *out);
    out->id = i;
    out->role = elk_le16(e + E_ROLE);
    out->layer = elk_le16(e + E_LAYER);
    out->rows = elk_le32(e + E_ROWS);
    out->cols = elk_le32(e + E_COLS);
    out->chunk = sec->chunk;
    out->in_scale = elk_lef32(e + E_IN_SCALE);
    out->in_zp = (int32_t)elk_le32(e + E_IN_ZP);
    out->out_scale = elk_lef32(e + E_OUT_SCALE);
    out->out_zp = (int32_t)elk_le32(e + E_OUT_ZP);
    out->tflite = tfl;
    out->tflite_size = elk_le32(e + E_TFL_SIZE);
    out->weights = (const int8_t *)(tfl + elk_le32(e + E_W_OFF));
    out->bias = tfl + elk_le32(e + E_B_OFF);
    out->multiplier = q;
    out->shift = q + 4ull * out->rows;
    out->n_outliers = elk_le32(e + E_N_OUT);
    if (out->n_outliers) {
        out->outlier_idx = sec->base + elk_le64(e + E_OUTL_OFF);
        out->outlier_w = out->outlier_idx + 4ull * out->n_outliers;
    }
    return ELK_OK;
}
