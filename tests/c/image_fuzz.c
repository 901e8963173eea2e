/* elk-image-fuzz IMAGE [CASES] [SEED]: a bounded mutation fuzz of the image parser, meant for the
 * AddressSanitizer + UBSan build (scons mode=asan). Each case copies the image into a buffer of
 * exactly its (possibly truncated) size, mutates it (truncation, bit flips, boundary values in
 * header / section / tensor / tokenizer fields, with and without a repaired header CRC) and opens
 * it; images that still open are driven further (tensors, metadata, tokenizer, one forward step).
 * Prints a count per status; exits 1 if a failure left img.error empty, 2 on usage errors.
 * Memory errors abort through the sanitizers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elk/elk.h"
#include "util/util.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* Offsets of structured fields worth hitting: header words, section entries, tensor entries,
 * the tokenizer head and its first entries. Filled from the original (valid) image. */
static uint64_t fields[4096];
static int n_fields;

static void add_range(uint64_t off, uint64_t len, uint64_t size)
{
    for (uint64_t o = off; o + 4 <= off + len && o + 4 <= size && n_fields < 4096; o += 4)
        fields[n_fields++] = o;
}

static void collect_fields(const elk_image *img, const uint8_t *base, uint64_t size)
{
    add_range(0, ELK_IMAGE_HEADER_SIZE, size);
    add_range(ELK_IMAGE_HEADER_SIZE, 16 * ELK_SECTION_ENTRY_SIZE, size);
    for (int k = 1; k < 8; k++) {
        if (!img->section[k].data)
            continue;
        uint64_t off = (uint64_t)(img->section[k].data - base);
        if (k == ELK_SECTION_TENSOR_TABLE)
            add_range(off, img->section[k].size, size);
        else if (k == ELK_SECTION_TOKENIZER)
            add_range(off, 32 + 16 * 64, size);
        else if (k == ELK_SECTION_METADATA)
            add_range(off, 256, size);
    }
}

static const uint64_t boundary[] = { 0, 1, 2, 3, 31, 32, 33, 64, 255, 256, 0x7fffffff, 0x80000000u,
                                     0xffffffffu, 0xfffffffeu, 0x10000, 0x100000000ull,
                                     0x7fffffffffffffffull, 0xffffffffffffffffull };

static void fix_crc(uint8_t *b, uint64_t size)
{
    if (size >= ELK_IMAGE_HEADER_SIZE)
        put32(b + ELK_HDR_HEADER_CRC32, elk_crc32(0, b, ELK_IMAGE_HEADER_SIZE - 4));
}

/* One mutated copy of orig; *size may shrink. Returns a malloc'd buffer of exactly *size bytes. */
static uint8_t *mutate(const uint8_t *orig, uint64_t *size)
{
    uint64_t n = *size;
    int kind = (int)(next() % 5);
    if (kind == 0) /* truncate: often inside the tables, sometimes anywhere */
        n = next() % 2 ? next() % (n < 8192 ? n : 8192) : next() % n;
    uint8_t *b = malloc(n ? n : 1);
    memcpy(b, orig, n);
    if (kind == 1) { /* flip 1..8 bits in the structured part */
        for (int i = 1 + (int)(next() % 8); i > 0 && n_fields; i--) {
            uint64_t o = fields[next() % n_fields] + next() % 4;
            if (o < n)
                b[o] ^= (uint8_t)(1u << (next() % 8));
        }
    } else if (kind >= 2 && n_fields) { /* boundary or random value in a field */
        uint64_t o = fields[next() % n_fields];
        uint64_t v = next() % 3 ? boundary[next() % (sizeof boundary / sizeof boundary[0])] : next();
        if (next() % 4 == 0)
            v = *size + (next() % 3) - 1; /* around the file size */
        if (o + 8 <= n && next() % 2)
            put64(b + o, v);
        else if (o + 4 <= n)
            put32(b + o, (uint32_t)v);
    }
    if (kind != 1 || next() % 2) /* repair the CRC so deeper checks run */
        fix_crc(b, n);
    *size = n;
    return b;
}

/* An image that opened must be safe to use: walk every API that reads it. */
static void exercise(elk_image *img, int verify)
{
    elk_tensor t;
    uint32_t len;
    for (uint32_t i = 0; i < img->n_tensors; i++)
        elk_image_tensor(img, i, &t);
    elk_image_find(img, ELK_ROLE_OUTPUT, 0, &t);
    elk_image_meta(img, "general.name", &len);
    elk_image_meta(img, "chat.template", &len);
    if (verify)
        elk_image_verify(img);

    const void *ts = img->section[ELK_SECTION_TOKENIZER].data;
    uint64_t tsize = img->section[ELK_SECTION_TOKENIZER].size;
    uint64_t tb = elk_tokenizer_arena_size(ts, tsize);
    elk_tokenizer *tok = NULL;
    void *ta = tb && tb < (1u << 28) ? malloc(tb) : NULL;
    if (ta && elk_tokenizer_init(&tok, ts, tsize, ta, tb) == ELK_OK) {
        int32_t ids[64];
        int n = 0;
        char piece[64];
        int plen;
        elk_tokenize(tok, "Once upon a time \xff\xfe", 18, 1, 1, ids, 64, &n);
        for (int i = 0; i < n && i < 64; i++)
            elk_token_piece(tok, i ? ids[i - 1] : -1, ids[i], piece, sizeof piece, &plen);
    }
    free(ta);

    elk_model_opts opts = { .n_ctx = 8, .max_batch = 4 };
    uint64_t mb = elk_model_arena_size(img, &opts);
    void *ma = mb && mb < (1u << 28) ? malloc(mb) : NULL;
    elk_model *m = NULL;
    if (ma && elk_model_init(&m, img, &opts, ma, mb) == ELK_OK) {
        float *logits = malloc(img->config.vocab_size * sizeof(float));
        int32_t ids[3] = { 0, 1, (int32_t)img->config.vocab_size - 1 };
        if (logits)
            elk_model_forward(m, ids, 3, 0, logits, 0);
        free(logits);
    }
    free(ma);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return fprintf(stderr, "usage: elk-image-fuzz IMAGE [CASES] [SEED]\n"), 2;
    long cases = argc > 2 ? strtol(argv[2], NULL, 10) : 2000;
    if (argc > 3)
        rng ^= strtoull(argv[3], NULL, 10) * 0xBF58476D1CE4E5B9ull;
    FILE *f = fopen(argv[1], "rb");
    if (!f)
        return fprintf(stderr, "elk-image-fuzz: cannot open %s\n", argv[1]), 2;
    fseek(f, 0, SEEK_END);
    uint64_t size = (uint64_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *orig = malloc(size);
    if (!orig || fread(orig, 1, size, f) != size)
        return fprintf(stderr, "elk-image-fuzz: cannot read %s\n", argv[1]), 2;
    fclose(f);

    elk_image img;
    int rc = elk_image_open(&img, orig, size);
    if (rc)
        return fprintf(stderr, "elk-image-fuzz: the original does not open: %s\n", img.error), 2;
    collect_fields(&img, orig, size);

    int counts[32] = { 0 }, bad_text = 0;
    for (long c = 0; c < cases; c++) {
        uint64_t n = size;
        uint8_t *b = mutate(orig, &n);
        rc = elk_image_open(&img, b, n);
        counts[rc <= 0 && rc > -32 ? -rc : 31]++;
        if (rc == ELK_OK)
            exercise(&img, c % 200 == 0);
        else if (img.error[0] == '\0') {
            fprintf(stderr, "case %ld: status %d with an empty error text\n", c, rc);
            bad_text++;
        }
        free(b);
    }
    for (int i = 0; i < 32; i++)
        if (counts[i])
            printf("%s %d\n", i == 31 ? "other" : elk_strerror(-i), counts[i]);
    free(orig);
    return bad_text ? 1 : 0;
}
