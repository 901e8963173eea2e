/* Frame codec for protocol v1: COBS encode/decode, CRC-32 check, and the byte-at-a-time receiver
 * that separates frames from console text. No command semantics, no I/O of its own. */
#include "proto/proto.h"

#include "util/util.h"

void elk_proto_rx_init(elk_proto_rx *rx, uint32_t payload_limit)
{
    rx->n = 0;
    rx->in_frame = 0;
    rx->overflow = 0;
    rx->bad_reason = 0;
    rx->limit = payload_limit < ELK_PROTO_PAYLOAD_MAX_BOARD ? payload_limit : ELK_PROTO_PAYLOAD_MAX_BOARD;
}

int elk_proto_cobs_decode(uint8_t *buf, uint32_t n)
{
    uint32_t i = 0, o = 0;
    while (i < n) {
        uint32_t code = buf[i++];
        if (code == 0 || code - 1 > n - i)
            return ELK_E_FORMAT;
        /* o < i throughout, so copying forward in place never overwrites unread bytes */
        for (uint32_t k = 0; k < code - 1; k++)
            buf[o++] = buf[i++];
        if (code != 0xFF && i < n)
            buf[o++] = 0;
    }
    return (int)o;
}

/* A frame's wire bytes ended at a delimiter: decode, check length and CRC. */
static int rx_finish(elk_proto_rx *rx, elk_frame *out)
{
    if (rx->overflow) {
        rx->bad_reason = ELK_NAK_TOO_LONG;
        return ELK_RX_BAD;
    }
    int n = elk_proto_cobs_decode(rx->buf, rx->n);
    if (n < ELK_PROTO_FRAME_HEADER_SIZE + ELK_PROTO_FRAME_CRC_SIZE) {
        rx->bad_reason = ELK_NAK_MALFORMED;
        return ELK_RX_BAD;
    }
    uint32_t body = (uint32_t)n - ELK_PROTO_FRAME_CRC_SIZE;
    if (elk_crc32(0, rx->buf, body) != elk_le32(rx->buf + body)) {
        rx->bad_reason = ELK_NAK_CRC;
        return ELK_RX_BAD;
    }
    if (body - ELK_PROTO_FRAME_HEADER_SIZE > rx->limit) {
        rx->bad_reason = ELK_NAK_TOO_LONG;
        return ELK_RX_BAD;
    }
    out->kind = rx->buf[0];
    out->code = rx->buf[1];
    out->seq = elk_le16(rx->buf + 2);
    out->payload = rx->buf + ELK_PROTO_FRAME_HEADER_SIZE;
    out->len = body - ELK_PROTO_FRAME_HEADER_SIZE;
    return ELK_RX_FRAME;
}

int elk_proto_rx_byte(elk_proto_rx *rx, uint8_t b, elk_frame *out)
{
    if (!rx->in_frame) {
        if (b != ELK_PROTO_FRAME_DELIM)
            return ELK_RX_TEXT;
        rx->in_frame = 1;
        rx->n = 0;
        rx->overflow = 0;
        return ELK_RX_NONE;
    }
    if (b != ELK_PROTO_FRAME_DELIM) {
        if (rx->n < sizeof rx->buf)
            rx->buf[rx->n++] = b;
        else
            rx->overflow = 1;
        return ELK_RX_NONE;
    }
    /* An empty frame (two delimiters in a row) is the previous frame's closing delimiter followed by
     * this frame's opening one: stay inside. */
    if (rx->n == 0 && !rx->overflow)
        return ELK_RX_NONE;
    rx->in_frame = 0;
    int r = rx_finish(rx, out);
    rx->n = 0;
    rx->overflow = 0;
    return r;
}

/* Streaming COBS encoder state over the output buffer. */
typedef struct cobs_out {
    uint8_t *p;
    uint32_t cap, n, code_pos;
    uint8_t code;
    int full;
} cobs_out;

static void cobs_byte(cobs_out *c, uint8_t b)
{
    if (c->n + 2 > c->cap) {  /* room for this byte and the next code byte */
        c->full = 1;
        return;
    }
    if (b == 0) {
        c->p[c->code_pos] = c->code;
        c->code_pos = c->n++;
        c->code = 1;
        return;
    }
    c->p[c->n++] = b;
    if (++c->code == 0xFF) {
        c->p[c->code_pos] = c->code;
        c->code_pos = c->n++;
        c->code = 1;
    }
}

static void cobs_bytes(cobs_out *c, const uint8_t *b, uint32_t n, uint32_t *crc)
{
    *crc = elk_crc32(*crc, b, n);
    for (uint32_t i = 0; i < n && !c->full; i++)
        cobs_byte(c, b[i]);
}

int elk_proto_encode(uint8_t *wire, uint32_t cap, uint8_t kind, uint8_t code, uint16_t seq,
                     const void *payload, uint32_t len)
{
    if (cap < 4)
        return ELK_E_RANGE;
    cobs_out c = { .p = wire, .cap = cap - 1, .n = 2, .code_pos = 1, .code = 1, .full = 0 };
    wire[0] = ELK_PROTO_FRAME_DELIM;
    uint8_t head[4] = { kind, code, (uint8_t)(seq & 0xFF), (uint8_t)(seq >> 8) };
    uint32_t crc = 0;
    cobs_bytes(&c, head, sizeof head, &crc);
    cobs_bytes(&c, payload, len, &crc);
    uint8_t tail[4] = { (uint8_t)crc, (uint8_t)(crc >> 8), (uint8_t)(crc >> 16), (uint8_t)(crc >> 24) };
    uint32_t ignored = 0;
    cobs_bytes(&c, tail, sizeof tail, &ignored);
    if (c.full)
        return ELK_E_RANGE;
    wire[c.code_pos] = c.code;
    wire[c.n++] = ELK_PROTO_FRAME_DELIM;
    return (int)c.n;
}

uint32_t elk_put_str(uint8_t *p, uint32_t off, uint32_t cap, const char *s, uint32_t field)
{
    if (off > cap || field > cap - off)
        return cap + 1;
    uint32_t i = 0;
    for (; s && s[i] && i + 1 < field; i++)
        p[off + i] = (uint8_t)s[i];
    for (; i < field; i++)
        p[off + i] = 0;
    return off + field;
}
