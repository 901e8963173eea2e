/* libFuzzer harness: the TOKENIZER section parser and the encoder/decoder over it.
 * Input: u32 section length L (little-endian), L section bytes, then the text to encode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "elk/elk.h"

#define MAX_IDS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t want = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
    size_t sec_len = want < size - 4 ? want : size - 4;
    size_t text_len = size - 4 - sec_len;
    uint8_t *sec = malloc(sec_len ? sec_len : 1);
    char *text = malloc(text_len ? text_len : 1);
    memcpy(sec, data + 4, sec_len);
    memcpy(text, data + 4 + sec_len, text_len);

    uint64_t need = elk_tokenizer_arena_size(sec, sec_len);
    if (need && need < (64u << 20)) {
        void *arena = malloc(need);
        elk_tokenizer *t = NULL;
        if (elk_tokenizer_init(&t, sec, sec_len, arena, need) == ELK_OK) {
            static int32_t ids[MAX_IDS];
            int n = 0;
            int rc = elk_tokenize(t, text, text_len, 1, 1, ids, MAX_IDS, &n);
            int got = rc == ELK_OK ? n : (rc == ELK_E_RANGE ? MAX_IDS : 0);
            char piece[64];
            int prev = elk_tokenizer_bos(t);
            for (int i = 0; i < got; i++) {
                int len = 0;
                elk_token_piece(t, prev, ids[i], piece, (int)sizeof piece, &len);
                prev = ids[i];
            }
            /* ids the encoder never produces: out of range, negative */
            int len = 0;
            elk_token_piece(t, prev, -1, piece, (int)sizeof piece, &len);
            elk_token_piece(t, prev, 1 << 30, piece, (int)sizeof piece, &len);
            elk_token_piece(t, -5, 0, piece, 1, &len);
        }
        free(arena);
    }
    free(sec);
    free(text);
    return 0;
}
