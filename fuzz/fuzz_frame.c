/* libFuzzer harness: the serial frame receiver (COBS + CRC, firmware/src/proto) fed arbitrary line
 * bytes, and the encoder/decoder round trip of every frame it accepts. Not the command handlers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

static elk_proto_rx rx;
static uint8_t wire[ELK_PROTO_WIRE_SIZE(ELK_PROTO_PAYLOAD_MAX_BOARD)];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* first byte picks the negotiated payload limit, so small and full-size receivers are both fuzzed */
    uint32_t limit = size && (data[0] & 1) ? ELK_PROTO_PAYLOAD_MAX_DEFAULT : ELK_PROTO_PAYLOAD_MAX_BOARD;
    elk_proto_rx_init(&rx, limit);
    for (size_t i = 0; i < size; i++) {
        elk_frame f;
        int r = elk_proto_rx_byte(&rx, data[i], &f);
        if (r == ELK_RX_FRAME) {
            if (f.len > limit)
                abort(); /* the receiver promised to enforce its limit */
            uint8_t copy[ELK_PROTO_PAYLOAD_MAX_BOARD];
            memcpy(copy, f.payload, f.len);
            int n = elk_proto_encode(wire, sizeof wire, f.kind, f.code, f.seq, copy, f.len);
            if (n < 0)
                abort(); /* every accepted frame must be re-encodable */
            /* decode our own encoding: it must give back the same frame */
            elk_proto_rx rx2;
            elk_proto_rx_init(&rx2, limit);
            int got = 0;
            for (int j = 0; j < n; j++) {
                elk_frame g;
                if (elk_proto_rx_byte(&rx2, wire[j], &g) == ELK_RX_FRAME) {
                    if (g.len != f.len || g.kind != f.kind || g.code != f.code || g.seq != f.seq ||
                        memcmp(g.payload, copy, f.len) != 0)
                        abort();
                    got = 1;
                }
            }
            if (!got)
                abort();
        }
    }
    return 0;
}
