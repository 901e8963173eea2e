/* Decoding one token of the TOKENIZER section (elk_token_piece) and the stop-id queries; the section
 * is read in place through the tokenizer tokenizer.c built. Not here: encoding, the lookup tables. */
#include "elk/elk.h"
#include "tokenizer/bytelevel.h"
#include "tokenizer/internal.h"

int elk_tokenizer_bos(const elk_tokenizer *t) { return t ? t->bos : -1; }
int elk_tokenizer_eos(const elk_tokenizer *t) { return t ? t->eos : -1; }

int elk_tokenizer_is_stop(const elk_tokenizer *t, int id)
{
    if (!t || id < 0)
        return 0;
    if (id == t->eos)
        return 1;
    for (uint32_t j = 0; j < t->n_stop; j++)
        if (t->stop[j] == id)
            return 1;
    return 0;
}

int elk_tokenizer_stop_ids(const elk_tokenizer *t, int32_t *ids, int cap)
{
    if (!t || cap < 0 || (!ids && cap > 0))
        return ELK_E_INVAL;
    int n = 0;
    if (t->eos >= 0 && n++ < cap)
        ids[0] = t->eos;
    for (uint32_t j = 0; j < t->n_stop; j++) {
        if (t->stop[j] == t->eos)
            continue;
        if (n < cap)
            ids[n] = t->stop[j];
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding one token */

int elk_token_piece(const elk_tokenizer *t, int prev, int id, char *buf, int cap, int *len)
{
    return elk_token_piece_ex(t, prev, id, 0, buf, cap, len);
}

int elk_token_piece_ex(const elk_tokenizer *t, int prev, int id, unsigned flags, char *buf, int cap, int *len)
{
    if (!t || !len || cap < 0 || (!buf && cap > 0))
        return ELK_E_INVAL;
    *len = 0;
    if (id < 0 || (uint32_t)id >= t->n_tokens)
        return ELK_E_RANGE;
    uint32_t type = entry_type(t, (uint32_t)id), n = entry_len(t, (uint32_t)id);
    const uint8_t *s = entry_str(t, (uint32_t)id);
    uint8_t byte;
    if (type == ELK_TOKEN_CONTROL && !(flags & ELK_PIECE_SPECIAL))
        return ELK_OK; /* asked for: the control piece's text as stored ("<|im_end|>") */
    if (t->kind == ELK_TOKENIZER_KIND_BYTE_BPE && type == ELK_TOKEN_NORMAL)
        return elk_bl_piece_bytes(s, n, buf, cap, len);
    if (type == ELK_TOKEN_UNKNOWN) {
        s = (const uint8_t *)UNK_SURFACE;
        n = sizeof(UNK_SURFACE) - 1;
    } else if (type == ELK_TOKEN_BYTE) {
        int b = byte_piece_value(s, n);
        if (b < 0)
            return ELK_OK;
        byte = (uint8_t)b;
        s = &byte;
        n = 1;
    } else if (type != ELK_TOKEN_CONTROL && (prev < 0 || prev == t->bos) &&
               (t->flags & ELK_TOKENIZER_FLAG_ADD_DUMMY_PREFIX) && is_space_sym(s, n)) {
        s += 3, n -= 3; /* the dummy prefix SentencePiece added at the start of the text */
    }
    int out = 0;
    for (uint32_t k = 0; k < n;) {
        int space = (type == ELK_TOKEN_NORMAL || type == ELK_TOKEN_USER_DEFINED || type == ELK_TOKEN_UNUSED) &&
                    is_space_sym(s + k, n - k);
        if (out < cap)
            buf[out] = space ? ' ' : (char)s[k];
        out++;
        k += space ? 3 : 1;
    }
    *len = out;
    return out > cap ? ELK_E_RANGE : ELK_OK;
}
