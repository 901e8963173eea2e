/* Small freestanding helpers shared by the core: little-endian loads from unaligned bytes,
 * checked 64-bit arithmetic, CRC-32, SHA-256 and a tiny printf-style formatter for error text.
 * Not here: anything that allocates or touches the OS. */
#ifndef ELK_UTIL_H
#define ELK_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Little-endian loads: byte by byte, so alignment and host endianness never matter. */
static inline uint16_t elk_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static inline uint32_t elk_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t elk_le64(const uint8_t *p)
{
    return (uint64_t)elk_le32(p) | (uint64_t)elk_le32(p + 4) << 32;
}

static inline float elk_lef32(const uint8_t *p)
{
    union { uint32_t u; float f; } v = { elk_le32(p) };
    return v.f;
}

/* Checked arithmetic: return 1 and leave *out untouched on overflow. */
static inline int elk_add_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a > UINT64_MAX - b)
        return 1;
    *out = a + b;
    return 0;
}

static inline int elk_mul_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a)
        return 1;
    *out = a * b;
    return 0;
}

/* 1 when [off, off + len) lies inside [lo, hi); overflow-safe. */
static inline int elk_range_inside(uint64_t off, uint64_t len, uint64_t lo, uint64_t hi)
{
    return off >= lo && off <= hi && len <= hi - off;
}

/* CRC-32 (ISO-HDLC: reflected poly 0xEDB88320, init and xorout 0xFFFFFFFF), as zlib.crc32.
 * Incremental: crc = elk_crc32(0, a, n); crc = elk_crc32(crc, b, m); */
uint32_t elk_crc32(uint32_t crc, const void *data, size_t len);

/* SHA-256 (FIPS 180-4), incremental. */
typedef struct elk_sha256_ctx {
    uint32_t h[8];
    uint64_t total;    /* bytes hashed so far */
    uint8_t buf[64];
    uint32_t used;     /* bytes in buf */
} elk_sha256_ctx;

void elk_sha256_init(elk_sha256_ctx *s);
void elk_sha256_update(elk_sha256_ctx *s, const void *data, size_t len);
void elk_sha256_final(elk_sha256_ctx *s, uint8_t out[32]);
void elk_sha256(const void *data, size_t len, uint8_t out[32]);

/* printf subset for error text without stdio: %s %c %d %u %ld %lu %lld %llu %llx %x %%.
 * Always NUL-terminates (when cap > 0); truncates silently. Returns the length written. */
int elk_fmt(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int elk_vfmt(char *buf, size_t cap, const char *fmt, va_list ap);

#endif /* ELK_UTIL_H */
