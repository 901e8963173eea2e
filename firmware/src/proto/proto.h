/* Serial protocol v1 framing (docs/protocol.md): COBS frames between 0x00 delimiters, each
 * kind | code | seq | payload | CRC-32. Freestanding, over a {read, write} interface; no command
 * semantics here (those live in firmware/src/main). Text bytes outside frames go to the console. */
#ifndef ELK_PROTO_H
#define ELK_PROTO_H

#include <stdint.h>

#include "elk/spec.h"

/* Raw frame bytes (header + payload + CRC) and the worst-case wire size of a frame with `payload`
 * bytes: COBS adds one code byte per 254 bytes plus one, and two delimiters frame it. */
#define ELK_PROTO_RAW_SIZE(payload) ((payload) + ELK_PROTO_FRAME_HEADER_SIZE + ELK_PROTO_FRAME_CRC_SIZE)
#define ELK_PROTO_WIRE_SIZE(payload) (ELK_PROTO_RAW_SIZE(payload) + ELK_PROTO_RAW_SIZE(payload) / 254 + 3)

/* The line. read waits at most timeout_ms (0 = poll) and returns the bytes read (0 on timeout) or a
 * negative ELK_E_IO; write sends all n bytes (paced at the line rate) and returns 0 or ELK_E_IO. */
typedef struct elk_proto_io {
    int (*read)(void *ctx, uint8_t *buf, int cap, int timeout_ms);
    int (*write)(void *ctx, const uint8_t *buf, int n);
    void *ctx;
} elk_proto_io;

typedef struct elk_frame {
    uint8_t kind;            /* ELK_FRAME_* */
    uint8_t code;            /* ELK_CMD_* or ELK_EVENT_* */
    uint16_t seq;
    const uint8_t *payload;  /* inside the receiver's buffer; valid until the next byte is fed */
    uint32_t len;
} elk_frame;

enum elk_rx_result {
    ELK_RX_NONE = 0,  /* byte consumed, nothing complete yet */
    ELK_RX_FRAME,     /* *out holds a frame whose CRC checked */
    ELK_RX_TEXT,      /* the byte is console text (outside any frame) */
    ELK_RX_BAD,       /* a damaged frame ended; rx->bad_reason is an ELK_NAK_* */
};

/* Receiver state: the wire bytes of one frame, decoded in place when its closing delimiter arrives. */
typedef struct elk_proto_rx {
    uint8_t buf[ELK_PROTO_WIRE_SIZE(ELK_PROTO_PAYLOAD_MAX_BOARD)];
    uint32_t n;          /* wire bytes collected since the opening delimiter */
    uint32_t limit;      /* largest payload accepted (<= ELK_PROTO_PAYLOAD_MAX_BOARD) */
    uint8_t in_frame;    /* 1 after an opening delimiter */
    uint8_t overflow;    /* 1 when the current frame exceeded the buffer: dropped at its delimiter */
    uint8_t bad_reason;  /* after ELK_RX_BAD */
} elk_proto_rx;

void elk_proto_rx_init(elk_proto_rx *rx, uint32_t payload_limit);

/* Feed one received byte; returns an elk_rx_result. */
int elk_proto_rx_byte(elk_proto_rx *rx, uint8_t b, elk_frame *out);

/* Encode one frame into wire[0..cap): delimiter, COBS(header, payload, CRC), delimiter.
 * Returns the wire length, or ELK_E_RANGE when cap is too small. */
int elk_proto_encode(uint8_t *wire, uint32_t cap, uint8_t kind, uint8_t code, uint16_t seq,
                     const void *payload, uint32_t len);

/* COBS decode buf[0..n) in place; returns the decoded length or ELK_E_FORMAT. */
int elk_proto_cobs_decode(uint8_t *buf, uint32_t n);

/* Little-endian writers with a bounds check: each returns the new offset, or cap + 1 once the
 * buffer is full, so a sequence of puts needs one check at the end (`off <= cap`). */
static inline uint32_t elk_put8(uint8_t *p, uint32_t off, uint32_t cap, uint32_t v)
{
    if (off + 1 > cap)
        return cap + 1;
    p[off] = (uint8_t)v;
    return off + 1;
}

static inline uint32_t elk_put16(uint8_t *p, uint32_t off, uint32_t cap, uint32_t v)
{
    off = elk_put8(p, off, cap, v & 0xFF);
    return elk_put8(p, off, cap, (v >> 8) & 0xFF);
}

static inline uint32_t elk_put32(uint8_t *p, uint32_t off, uint32_t cap, uint32_t v)
{
    off = elk_put16(p, off, cap, v & 0xFFFF);
    return elk_put16(p, off, cap, v >> 16);
}

static inline uint32_t elk_put64(uint8_t *p, uint32_t off, uint32_t cap, uint64_t v)
{
    off = elk_put32(p, off, cap, (uint32_t)v);
    return elk_put32(p, off, cap, (uint32_t)(v >> 32));
}

/* Copy n bytes, or a NUL-padded string field of exactly n bytes when s is shorter. */
static inline uint32_t elk_put_bytes(uint8_t *p, uint32_t off, uint32_t cap, const void *s, uint32_t n)
{
    if (off > cap || n > cap - off)
        return cap + 1;
    for (uint32_t i = 0; i < n; i++)
        p[off + i] = ((const uint8_t *)s)[i];
    return off + n;
}

uint32_t elk_put_str(uint8_t *p, uint32_t off, uint32_t cap, const char *s, uint32_t field);

#endif /* ELK_PROTO_H */
