/* Image parser (docs/image-format.md, v1): validates the header, section table, tensor table,
 * tokenizer table and metadata of an image that stays in the caller's memory, reading every field
 * with explicit little-endian loads after a bounds check. Not here: payload hashing beyond
 * elk_image_verify, signatures (trailer, see docs/trust.md) or anything that allocates. */
#include <math.h>
#include <string.h>

#include "elk/elk.h"
#include "kernels/kernels.h"
#include "util/util.h"

/* Config bounds: far above TinyLlama-1.1B (dim 2048, hidden 5632, 22 layers, 32000 vocab), low
 * enough that every size product below stays far from 64-bit overflow. */
#define MAX_DIM 65536u
#define MAX_HIDDEN (1u << 20)
#define MAX_LAYERS 1024u
#define MAX_HEADS 1024u
#define MAX_HEAD_DIM 4096u
#define MAX_VOCAB (1u << 22)
#define MAX_SEQ (1u << 22)
#define MAX_ALIGN (1u << 24)

static const char *const section_names[ELK_SECTION_KIND_MAX + 1] = ELK_SECTION_NAMES;
static const char *const role_names[ELK_ROLE_COUNT] = ELK_ROLE_NAMES;

static int fail(elk_image *img, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(elk_image *img, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    elk_vfmt(img->error, sizeof img->error, fmt, ap);
    va_end(ap);
    return code;
}

static int is_per_layer(int role)
{
    return role >= ELK_ROLE_ATTN_NORM && role <= ELK_ROLE_W3;
}

/* ---------------------------------------------------------------------------------------------
 * Header */

static int check_header(elk_image *img, const uint8_t *p, uint64_t size, uint64_t *header_size)
{
    if (size < 4 || elk_le32(p + ELK_HDR_MAGIC) != ELK_IMAGE_MAGIC)
        return fail(img, ELK_E_FORMAT, "header: bad magic (not an elk image)");
    if (size < 8)
        return fail(img, ELK_E_BOUNDS, "header: file is %llu bytes, too short for the header",
                    (unsigned long long)size);
    uint32_t version = elk_le16(p + ELK_HDR_VERSION);
    if (version != ELK_IMAGE_VERSION)
        return fail(img, ELK_E_VERSION, "header: version %u, this reader supports %u", version,
                    ELK_IMAGE_VERSION);
    uint32_t hs = elk_le16(p + ELK_HDR_HEADER_SIZE);
    if (hs < ELK_IMAGE_HEADER_SIZE || hs % 4)
        return fail(img, ELK_E_FORMAT, "header: header_size %u (need >= %u, multiple of 4)", hs,
                    ELK_IMAGE_HEADER_SIZE);
    if (size < hs)
        return fail(img, ELK_E_BOUNDS, "header: file is %llu bytes, header_size is %u",
                    (unsigned long long)size, hs);
    /* The CRC is the header's last word: fixed at 252 in v1, at header_size - 4 if it grows. */
    uint32_t crc = elk_le32(p + hs - 4), want = elk_crc32(0, p, hs - 4);
    if (crc != want)
        return fail(img, ELK_E_CRC, "header: crc32 0x%x, computed 0x%x", crc, want);
    *header_size = hs;
    return ELK_OK;
}

static int check_layout(elk_image *img, const uint8_t *p, uint64_t size, uint64_t hs)
{
    img->flags = elk_le32(p + ELK_HDR_FLAGS);
    img->alignment = elk_le32(p + ELK_HDR_ALIGNMENT);
    img->size = elk_le64(p + ELK_HDR_IMAGE_SIZE);
    img->security_counter = elk_le32(p + ELK_HDR_SECURITY_COUNTER);
    img->payload_sha256 = p + ELK_HDR_PAYLOAD_SHA256;
    uint32_t a = img->alignment;
    if (img->flags & ~(uint32_t)ELK_IMAGE_FLAG_HAS_TRAILER)
        return fail(img, ELK_E_UNSUPPORTED, "header: unknown flags 0x%x", img->flags);
    if (a < ELK_IMAGE_ALIGN || a > MAX_ALIGN || (a & (a - 1)))
        return fail(img, ELK_E_FORMAT, "header: alignment %u (need a power of two, %u..%u)", a,
                    ELK_IMAGE_ALIGN, MAX_ALIGN);
    if (img->size < hs || img->size > size)
        return fail(img, ELK_E_BOUNDS, "header: image_size %llu outside [%llu, file size %llu]",
                    (unsigned long long)img->size, (unsigned long long)hs, (unsigned long long)size);
    uint64_t po = elk_le64(p + ELK_HDR_PAYLOAD_OFFSET), ps = elk_le64(p + ELK_HDR_PAYLOAD_SIZE);
    if (po != hs || ps != img->size - hs)
        return fail(img, ELK_E_FORMAT,
                    "header: payload offset %llu size %llu, expected %llu and image_size - %llu",
                    (unsigned long long)po, (unsigned long long)ps, (unsigned long long)hs,
                    (unsigned long long)hs);
    return ELK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Section table */

static int check_sections(elk_image *img, const uint8_t *p, uint64_t hs)
{
    uint64_t off = elk_le64(p + ELK_HDR_SECTION_TABLE_OFFSET);
    uint32_t count = elk_le32(p + ELK_HDR_SECTION_COUNT);
    uint32_t esize = elk_le32(p + ELK_HDR_SECTION_ENTRY_SIZE);
    if (off != hs)
        return fail(img, ELK_E_FORMAT, "section table: offset %llu, expected header_size %llu",
                    (unsigned long long)off, (unsigned long long)hs);
    if (count < 1 || count > ELK_MAX_SECTIONS)
        return fail(img, ELK_E_FORMAT, "section table: count %u (need 1..%u)", count, ELK_MAX_SECTIONS);
    if (esize != ELK_SECTION_ENTRY_SIZE)
        return fail(img, ELK_E_FORMAT, "section table: entry size %u, expected %u", esize,
                    ELK_SECTION_ENTRY_SIZE);
    uint64_t table_end = off + (uint64_t)count * esize; /* small: count <= 16 */
    if (table_end > img->size)
        return fail(img, ELK_E_BOUNDS, "section table: %u entries end at %llu, image_size %llu",
                    count, (unsigned long long)table_end, (unsigned long long)img->size);
    uint64_t lo[ELK_MAX_SECTIONS], hi[ELK_MAX_SECTIONS];
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = p + off + (uint64_t)i * esize;
        uint32_t kind = elk_le32(e), version = elk_le32(e + 4);
        uint64_t so = elk_le64(e + 8), ss = elk_le64(e + 16);
        if (kind < ELK_SECTION_TENSOR_TABLE || kind > ELK_SECTION_KIND_MAX)
            return fail(img, ELK_E_FORMAT, "section %u: unknown kind %u", i, kind);
        const char *kn = section_names[kind];
        if (version != ELK_SECTION_VERSION)
            return fail(img, ELK_E_VERSION, "section %u (%s): version %u, expected 1", i, kn, version);
        if (img->section[kind].data)
            return fail(img, ELK_E_FORMAT, "section %u (%s): kind appears twice", i, kn);
        if (!elk_range_inside(so, ss, table_end, img->size))
            return fail(img, ELK_E_BOUNDS,
                        "section %u (%s): offset 0x%llx + size %llu outside payload [0x%llx, 0x%llx)",
                        i, kn, (unsigned long long)so, (unsigned long long)ss,
                        (unsigned long long)table_end, (unsigned long long)img->size);
        if (so % img->alignment)
            return fail(img, ELK_E_FORMAT, "section %u (%s): offset 0x%llx not aligned to %u", i, kn,
                        (unsigned long long)so, img->alignment);
        for (uint32_t j = 0; j < i; j++)
            if (so < hi[j] && lo[j] < so + ss)
                return fail(img, ELK_E_FORMAT, "section %u (%s): overlaps section %u", i, kn, j);
        lo[i] = so;
        hi[i] = so + ss;
        img->section[kind].data = p + so;
        img->section[kind].size = ss;
    }
    static const int required[] = { ELK_SECTION_TENSOR_TABLE, ELK_SECTION_TENSOR_DATA,
                                     ELK_SECTION_TOKENIZER };
    for (unsigned i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!img->section[required[i]].data)
            return fail(img, ELK_E_MISSING, "section %s: required but absent",
                        section_names[required[i]]);
    return ELK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Config */

static int check_config(elk_image *img, const uint8_t *p)
{
    elk_config *c = &img->config;
    c->arch = elk_le32(p + ELK_HDR_ARCH);
    c->dim = elk_le32(p + ELK_HDR_DIM);
    c->hidden_dim = elk_le32(p + ELK_HDR_HIDDEN_DIM);
    c->n_layers = elk_le32(p + ELK_HDR_N_LAYERS);
    c->n_heads = elk_le32(p + ELK_HDR_N_HEADS);
    c->n_kv_heads = elk_le32(p + ELK_HDR_N_KV_HEADS);
    c->vocab_size = elk_le32(p + ELK_HDR_VOCAB_SIZE);
    c->seq_len = elk_le32(p + ELK_HDR_SEQ_LEN);
    c->rope_theta = elk_lef32(p + ELK_HDR_ROPE_THETA);
    c->norm_eps = elk_lef32(p + ELK_HDR_NORM_EPS);
    c->head_dim = elk_le32(p + ELK_HDR_HEAD_DIM);
    c->model_flags = elk_le32(p + ELK_HDR_MODEL_FLAGS);
    if (c->arch != ELK_ARCH_LLAMA)
        return fail(img, ELK_E_UNSUPPORTED, "config: arch %u (only 1 = llama)", c->arch);
    if (c->model_flags & ~(uint32_t)ELK_MODEL_FLAG_TIED_OUTPUT)
        return fail(img, ELK_E_UNSUPPORTED, "config: unknown model_flags 0x%x", c->model_flags);
    const struct { const char *name; uint32_t v, max; } dims[] = {
        { "dim", c->dim, MAX_DIM },           { "hidden_dim", c->hidden_dim, MAX_HIDDEN },
        { "n_layers", c->n_layers, MAX_LAYERS }, { "n_heads", c->n_heads, MAX_HEADS },
        { "n_kv_heads", c->n_kv_heads, MAX_HEADS }, { "vocab_size", c->vocab_size, MAX_VOCAB },
        { "seq_len", c->seq_len, MAX_SEQ },   { "head_dim", c->head_dim, MAX_HEAD_DIM },
    };
    for (unsigned i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        if (dims[i].v == 0)
            return fail(img, ELK_E_FORMAT, "config: %s is 0", dims[i].name);
        if (dims[i].v > dims[i].max)
            return fail(img, ELK_E_RANGE, "config: %s %u above the limit %u", dims[i].name,
                        dims[i].v, dims[i].max);
    }
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return fail(img, ELK_E_FORMAT, "config: n_heads %u not a multiple of n_kv_heads %u",
                    c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return fail(img, ELK_E_FORMAT, "config: head_dim %u is odd (RoPE rotates pairs)", c->head_dim);
    if ((uint64_t)c->head_dim * c->n_heads > MAX_DIM)
        return fail(img, ELK_E_RANGE, "config: n_heads %u x head_dim %u above the limit %u",
                    c->n_heads, c->head_dim, MAX_DIM);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return fail(img, ELK_E_FORMAT, "config: rope_theta is not a positive finite number");
    if (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f))
        return fail(img, ELK_E_FORMAT, "config: norm_eps not in (0, 1)");
    memcpy(img->name, p + ELK_HDR_NAME, ELK_MODEL_NAME_MAX);
    img->name[ELK_MODEL_NAME_MAX - 1] = '\0';
    return ELK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Tensors */

/* Decode entry i of the (already bounds-checked) tensor table. */
static void read_tensor(const elk_image *img, uint32_t i, elk_tensor *t, uint64_t *offset)
{
    const uint8_t *e = img->section[ELK_SECTION_TENSOR_TABLE].data + ELK_TENSOR_TABLE_HEAD_SIZE +
                       (uint64_t)i * ELK_TENSOR_ENTRY_SIZE;
    t->name = (const char *)e;
    t->type = elk_le32(e + 48);
    t->role = elk_le16(e + 52);
    t->layer = elk_le16(e + 54);
    t->rows = elk_le32(e + 56);
    t->cols = elk_le32(e + 60);
    *offset = elk_le64(e + 64);
    t->size = elk_le64(e + 72);
    /* Pointer arithmetic only inside the image (an unchecked offset could overflow it). */
    t->data = *offset <= img->file_size ? img->base + *offset : NULL;
}

static int type_known(uint32_t type)
{
    return type == ELK_TYPE_F32 || type == ELK_TYPE_F16 || type == ELK_TYPE_Q8_0 ||
           type == ELK_TYPE_Q4_0;
}

static int check_tensor(elk_image *img, uint32_t i)
{
    elk_tensor t;
    uint64_t off, bytes;
    read_tensor(img, i, &t, &off);
    if (memchr(t.name, 0, ELK_TENSOR_NAME_MAX) == NULL)
        return fail(img, ELK_E_FORMAT, "tensor %u: name not NUL-terminated", i);
    if (!type_known(t.type))
        return fail(img, ELK_E_UNSUPPORTED, "tensor %u (%s): unknown type %u", i, t.name, t.type);
    if (t.role < 1 || t.role >= ELK_ROLE_COUNT)
        return fail(img, ELK_E_FORMAT, "tensor %u (%s): unknown role %u", i, t.name, t.role);
    if (is_per_layer(t.role) ? t.layer >= img->config.n_layers : t.layer != 0)
        return fail(img, ELK_E_FORMAT, "tensor %u (%s): layer %u invalid for role %s", i, t.name,
                    t.layer, role_names[t.role]);
    size_t rb = elk_row_bytes((int)t.type, t.cols);
    if (t.rows == 0 || rb == 0)
        return fail(img, ELK_E_FORMAT, "tensor %u (%s): shape %u x %u invalid for type %u", i,
                    t.name, t.rows, t.cols, t.type);
    if (elk_mul_overflow(t.rows, rb, &bytes) || bytes != t.size)
        return fail(img, ELK_E_FORMAT, "tensor %u (%s): size %llu, rows x row bytes is %u x %llu",
                    i, t.name, (unsigned long long)t.size, t.rows, (unsigned long long)rb);
    uint64_t lo = (uint64_t)(img->section[ELK_SECTION_TENSOR_DATA].data - img->base);
    uint64_t hi = lo + img->section[ELK_SECTION_TENSOR_DATA].size;
    if (!elk_range_inside(off, t.size, lo, hi))
        return fail(img, ELK_E_BOUNDS,
                    "tensor %u (%s): offset 0x%llx + size %llu outside TENSOR_DATA [0x%llx, 0x%llx)",
                    i, t.name, (unsigned long long)off, (unsigned long long)t.size,
                    (unsigned long long)lo, (unsigned long long)hi);
    if (off % img->alignment)
        return fail(img, ELK_E_FORMAT, "tensor %u (%s): offset 0x%llx not aligned to %u", i, t.name,
                    (unsigned long long)off, img->alignment);
    return ELK_OK;
}

/* [lo, hi) of tensor j; only after check_tensor passed for it (inside TENSOR_DATA: no overflow). */
static void tensor_span(const elk_image *img, uint32_t j, uint64_t *lo, uint64_t *hi)
{
    const uint8_t *e = img->section[ELK_SECTION_TENSOR_TABLE].data + ELK_TENSOR_TABLE_HEAD_SIZE +
                       (uint64_t)j * ELK_TENSOR_ENTRY_SIZE;
    *lo = elk_le64(e + 64);
    *hi = *lo + elk_le64(e + 72);
}

/* No two tensors share a byte (sizes are > 0). The table is normally in offset order (elk pack
 * writes it so): then each entry starts at or after the furthest end seen so far and the check is
 * one pass. An entry that starts before that end is compared with every earlier entry, so the
 * verdict does not depend on the order, without scratch memory; count <= 9 n_layers + 3 bounds that
 * worst case. Reported: the first entry in table order that overlaps an earlier one, and the first
 * such earlier one. */
static int check_tensor_overlaps(elk_image *img)
{
    uint64_t reach = 0;
    for (uint32_t i = 0; i < img->n_tensors; i++) {
        uint64_t lo, hi, lo2, hi2;
        tensor_span(img, i, &lo, &hi);
        for (uint32_t j = 0; lo < reach && j < i; j++) {
            tensor_span(img, j, &lo2, &hi2);
            if (lo < hi2 && lo2 < hi) {
                elk_tensor t, u;
                read_tensor(img, i, &t, &lo);
                read_tensor(img, j, &u, &lo2);
                return fail(img, ELK_E_FORMAT, "tensor %u (%s) overlaps tensor %u (%s)", i, t.name, j,
                            u.name);
            }
        }
        reach = hi > reach ? hi : reach;
    }
    return ELK_OK;
}

static int check_tensor_table(elk_image *img)
{
    const uint8_t *s = img->section[ELK_SECTION_TENSOR_TABLE].data;
    uint64_t size = img->section[ELK_SECTION_TENSOR_TABLE].size, need;
    if (size < ELK_TENSOR_TABLE_HEAD_SIZE)
        return fail(img, ELK_E_BOUNDS, "section TENSOR_TABLE: %llu bytes, head needs %u",
                    (unsigned long long)size, ELK_TENSOR_TABLE_HEAD_SIZE);
    uint32_t count = elk_le32(s), esize = elk_le32(s + 4);
    if (esize != ELK_TENSOR_ENTRY_SIZE)
        return fail(img, ELK_E_FORMAT, "tensor table: entry size %u, expected %u", esize,
                    ELK_TENSOR_ENTRY_SIZE);
    /* Every (role, layer) appears once: 9 per layer + token_embd, output_norm, output. */
    uint32_t per_layer = ELK_ROLE_W3 - ELK_ROLE_ATTN_NORM + 1, most = ELK_ROLE_COUNT - 1 - per_layer;
    most += per_layer * img->config.n_layers;
    if (count > most)
        return fail(img, ELK_E_FORMAT, "tensor table: %u entries, a %u-layer model has at most %u",
                    count, img->config.n_layers, most);
    need = ELK_TENSOR_TABLE_HEAD_SIZE + (uint64_t)count * esize; /* < 2^40: no overflow */
    if (need > size)
        return fail(img, ELK_E_BOUNDS, "tensor table: %u entries need %llu bytes, section has %llu",
                    count, (unsigned long long)need, (unsigned long long)size);
    img->n_tensors = count;
    for (uint32_t i = 0; i < count; i++) {
        int rc = check_tensor(img, i);
        if (rc)
            return rc;
    }
    return check_tensor_overlaps(img);
}

/* The (rows, cols) a role must have under the config; norms are vectors (1, dim). */
static void expected_shape(const elk_config *c, int role, uint32_t *rows, uint32_t *cols)
{
    uint32_t q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    *cols = c->dim;
    switch (role) {
    case ELK_ROLE_TOK_EMBD:
    case ELK_ROLE_OUTPUT: *rows = c->vocab_size; break;
    case ELK_ROLE_WQ: *rows = q; break;
    case ELK_ROLE_WK:
    case ELK_ROLE_WV: *rows = kv; break;
    case ELK_ROLE_WO: *rows = c->dim; *cols = q; break;
    case ELK_ROLE_W1:
    case ELK_ROLE_W3: *rows = c->hidden_dim; break;
    case ELK_ROLE_W2: *rows = c->dim; *cols = c->hidden_dim; break;
    case ELK_ROLE_ROPE_FREQS: *rows = 1; *cols = c->head_dim / 2; break;
    default: *rows = 1; break; /* norms */
    }
}

static int check_required(elk_image *img, int role, int layer)
{
    elk_tensor t, found = { 0 };
    uint64_t off;
    int n = 0;
    for (uint32_t i = 0; i < img->n_tensors; i++) {
        read_tensor(img, i, &t, &off);
        if (t.role == role && t.layer == layer) {
            found = t;
            n++;
        }
    }
    if (n == 0)
        return fail(img, ELK_E_MISSING, "tensor %s layer %d: required but absent", role_names[role],
                    layer);
    if (n > 1)
        return fail(img, ELK_E_FORMAT, "tensor %s layer %d: appears %d times", role_names[role],
                    layer, n);
    uint32_t rows, cols;
    expected_shape(&img->config, role, &rows, &cols);
    if (found.rows != rows || found.cols != cols)
        return fail(img, ELK_E_FORMAT, "tensor %s (%s): shape %u x %u, config needs %u x %u",
                    role_names[role], found.name, found.rows, found.cols, rows, cols);
    if (rows == 1 && found.type != ELK_TYPE_F32)
        return fail(img, ELK_E_UNSUPPORTED, "tensor %s (%s): vectors (norms, RoPE factors) must be F32, got type %u",
                    role_names[role], found.name, found.type);
    return ELK_OK;
}

static int check_model_tensors(elk_image *img)
{
    int tied = img->config.model_flags & ELK_MODEL_FLAG_TIED_OUTPUT;
    elk_tensor t;
    if (tied && elk_image_find(img, ELK_ROLE_OUTPUT, 0, &t) == ELK_OK)
        return fail(img, ELK_E_FORMAT, "tensor OUTPUT (%s): present, but model_flags says the output is "
                    "tied to token_embd", t.name);
    for (int role = 1; role < ELK_ROLE_COUNT; role++) {
        if (role == ELK_ROLE_OUTPUT && tied)
            continue;
        if (role == ELK_ROLE_ROPE_FREQS && elk_image_find(img, role, 0, &t) != ELK_OK)
            continue; /* optional: absent means plain RoPE; present, it is checked like the rest */
        if (role == ELK_ROLE_ROPE_FREQS) {
            int rc = check_required(img, role, 0);
            if (rc)
                return rc;
            for (uint32_t i = 0; i < t.cols; i++) { /* divisors of the RoPE frequencies */
                float v;
                memcpy(&v, (const uint8_t *)t.data + 4u * i, sizeof v);
                if (!(v > 0.0f) || v > 1e30f)
                    return fail(img, ELK_E_FORMAT, "tensor ROPE_FREQS (%s): divisor %u is not a positive finite "
                                "number", t.name, i);
            }
            continue;
        }
        int layers = is_per_layer(role) ? (int)img->config.n_layers : 1;
        for (int l = 0; l < layers; l++) {
            int rc = check_required(img, role, l);
            if (rc)
                return rc;
        }
    }
    return ELK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Tokenizer and metadata */

static int check_tokenizer(elk_image *img)
{
    const uint8_t *s = img->section[ELK_SECTION_TOKENIZER].data;
    uint64_t size = img->section[ELK_SECTION_TOKENIZER].size;
    if (size < ELK_TOKENIZER_HEAD_SIZE)
        return fail(img, ELK_E_BOUNDS, "tokenizer: section is %llu bytes, head needs %u",
                    (unsigned long long)size, ELK_TOKENIZER_HEAD_SIZE);
    uint32_t n = elk_le32(s), kind = elk_le32(s + 4);
    if (kind != ELK_TOKENIZER_KIND_SPM_BPE && kind != ELK_TOKENIZER_KIND_BYTE_BPE)
        return fail(img, ELK_E_UNSUPPORTED, "tokenizer: kind %u (1 = SentencePiece BPE, 2 = byte-level BPE)", kind);
    if (n != img->config.vocab_size)
        return fail(img, ELK_E_FORMAT, "tokenizer: %u tokens, config vocab_size %u", n,
                    img->config.vocab_size);
    for (int k = 0; k < 3; k++) { /* bos, eos, unk */
        int32_t id = (int32_t)elk_le32(s + 12 + 4 * k);
        if (id < -1 || id >= (int64_t)n)
            return fail(img, ELK_E_FORMAT, "tokenizer: %s id %d outside [-1, %u)",
                        k == 0 ? "bos" : k == 1 ? "eos" : "unk", (int)id, n);
    }
    uint64_t blob = ELK_TOKENIZER_HEAD_SIZE + (uint64_t)n * ELK_TOKEN_ENTRY_SIZE; /* n <= 2^22 */
    if (blob > size)
        return fail(img, ELK_E_BOUNDS, "tokenizer: %u entries need %llu bytes, section has %llu", n,
                    (unsigned long long)blob, (unsigned long long)size);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = s + ELK_TOKENIZER_HEAD_SIZE + (uint64_t)i * ELK_TOKEN_ENTRY_SIZE;
        uint32_t off = elk_le32(e), len = elk_le32(e + 4);
        if (!elk_range_inside(off, len, 0, size - blob))
            return fail(img, ELK_E_BOUNDS, "tokenizer: token %u string at %u + %u outside the %llu-byte blob",
                        i, off, len, (unsigned long long)(size - blob));
    }
    return ELK_OK;
}

static int check_metadata(elk_image *img)
{
    const uint8_t *s = img->section[ELK_SECTION_METADATA].data;
    uint64_t size = img->section[ELK_SECTION_METADATA].size, pos = 4;
    if (!s)
        return ELK_OK;
    if (size < 4)
        return fail(img, ELK_E_BOUNDS, "metadata: section is %llu bytes, count needs 4",
                    (unsigned long long)size);
    uint32_t count = elk_le32(s);
    for (uint32_t i = 0; i < count; i++) {
        for (int part = 0; part < 2; part++) { /* key, then value */
            if (size - pos < 4)
                return fail(img, ELK_E_BOUNDS, "metadata: entry %u %s length outside the section", i,
                            part ? "value" : "key");
            uint32_t len = elk_le32(s + pos);
            pos += 4;
            if (len > size - pos)
                return fail(img, ELK_E_BOUNDS, "metadata: entry %u %s (%u bytes) outside the section",
                            i, part ? "value" : "key", len);
            pos += len;
        }
    }
    return ELK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Public API */

int elk_image_open(elk_image *img, const void *data, uint64_t size)
{
    if (!img)
        return ELK_E_INVAL;
    memset(img, 0, sizeof *img);
    if (!data)
        return fail(img, ELK_E_INVAL, "image: NULL data");
    if ((uintptr_t)data % 4)
        return fail(img, ELK_E_INVAL, "image: base address not 4-byte aligned");
    const uint8_t *p = data;
    uint64_t hs = 0;
    int rc;
    img->base = p;
    img->file_size = size;
    if ((rc = check_header(img, p, size, &hs)) || (rc = check_layout(img, p, size, hs)) ||
        (rc = check_sections(img, p, hs)) || (rc = check_config(img, p)) ||
        (rc = check_tensor_table(img)) || (rc = check_model_tensors(img)) ||
        (rc = check_tokenizer(img)) || (rc = check_metadata(img))) {
        img->n_tensors = 0; /* a failed image exposes no tensors */
        return rc;
    }
    img->version = ELK_IMAGE_VERSION;
    return ELK_OK;
}

int elk_image_verify(elk_image *img)
{
    if (!img || !img->base || !img->payload_sha256)
        return ELK_E_INVAL;
    uint8_t digest[32];
    uint64_t po = elk_le64(img->base + ELK_HDR_PAYLOAD_OFFSET);
    elk_sha256(img->base + po, (size_t)(img->size - po), digest);
    if (memcmp(digest, img->payload_sha256, 32) != 0)
        return fail(img, ELK_E_HASH, "payload: SHA-256 does not match the header (image corrupted)");
    return ELK_OK;
}

int elk_image_tensor(const elk_image *img, uint32_t i, elk_tensor *out)
{
    uint64_t off;
    if (!img || !out || i >= img->n_tensors)
        return ELK_E_MISSING;
    read_tensor(img, i, out, &off);
    return ELK_OK;
}

int elk_image_find(const elk_image *img, int role, int layer, elk_tensor *out)
{
    if (!img || !out)
        return ELK_E_INVAL;
    for (uint32_t i = 0; i < img->n_tensors; i++) {
        uint64_t off;
        read_tensor(img, i, out, &off);
        if (out->role == role && out->layer == layer)
            return ELK_OK;
    }
    return ELK_E_MISSING;
}

const char *elk_image_meta(const elk_image *img, const char *key, uint32_t *len)
{
    if (!img || !key || !img->section[ELK_SECTION_METADATA].data)
        return NULL;
    const uint8_t *s = img->section[ELK_SECTION_METADATA].data;
    uint64_t size = img->section[ELK_SECTION_METADATA].size, pos = 4;
    size_t klen = strlen(key);
    if (size < 4)
        return NULL;
    uint32_t count = elk_le32(s);
    for (uint32_t i = 0; i < count; i++) {
        if (size - pos < 4)
            return NULL;
        uint32_t kl = elk_le32(s + pos);
        if (kl > size - pos - 4)
            return NULL;
        const uint8_t *k = s + pos + 4;
        pos += 4 + (uint64_t)kl;
        if (size - pos < 4)
            return NULL;
        uint32_t vl = elk_le32(s + pos);
        if (vl > size - pos - 4)
            return NULL;
        const uint8_t *v = s + pos + 4;
        pos += 4 + (uint64_t)vl;
        if (kl == klen && memcmp(k, key, klen) == 0) {
            if (len)
                *len = vl;
            return (const char *)v;
        }
    }
    return NULL;
}
