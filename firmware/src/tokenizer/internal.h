/* Internal to the tokenizer module: the tokenizer struct, its arena scratch types and the accessors
 * of the TOKENIZER section's entries (docs/image-format.md), shared by tokenizer.c (import tables,
 * encoding) and piece.c (decoding, stop ids). Not a public API: firmware/include/elk/elk.h is. */
#ifndef ELK_TOKENIZER_INTERNAL_H
#define ELK_TOKENIZER_INTERNAL_H

#include <stdint.h>

#include "elk/elk.h"
#include "util/util.h"

#define HEAD_SIZE 32u
#define MAX_TOKENS (1u << 22)  /* bounds the hash table; Llama-class vocabularies have ~32k-128k */
#define SEG_BYTES 4096u        /* normalized bytes held at once while encoding */
#define SEG_SYMS 1024u         /* initial symbols (characters) BPE-merged at once */
#define MAX_USER_LEN 256u      /* longest piece matched whole by lookups per length (longer ones:
                                * long_whole, compared one by one) */
#define MAX_LONG_USER_LEN 2048u /* longest SentencePiece user-defined piece (normalized bytes): half the
                                 * scratch, so one is whole in it with room to split what comes before */
#define UNK_SURFACE " \xE2\x81\x87 " /* " ⁇ ": SentencePiece's default text for <unk> */

/* One initial symbol of the normalized text: a character, an invalid byte or a user-defined piece. */
typedef struct { uint32_t start, len; int32_t id; uint32_t frozen; } tok_sym; /* id: -1 = not a piece */
/* A live symbol during merging (index = initial symbol it started as; merged-away symbols have len 0). */
typedef struct { int32_t prev, next; uint32_t len; int32_t node; } tok_link;
/* A candidate merge of link[left] and link[right] whose bytes form piece `id`. */
typedef struct { float score; int32_t left, right; uint32_t size; int32_t id; } tok_pair;
/* A merge: piece id made of nodes a and b (node < n_syms: an initial symbol). */
typedef struct { int32_t id, a, b; } tok_node;

struct elk_tokenizer {
    const uint8_t *entries, *blob;   /* in the section */
    uint64_t blob_size;
    uint32_t n_tokens, kind, flags, max_len, max_user_len, max_ctrl_len;
    const uint8_t *splits;           /* byte-level: u16 left-part length of each piece's merge (blob start) */
    int32_t bos, eos, unk, pad;
    uint32_t n_stop;                 /* stop ids from the section's tail (eos_id included), or 0 */
    int32_t stop[ELK_TOKENIZER_MAX_STOP_IDS];
    uint8_t ctrl_first[32];          /* bitmap: first bytes of pieces matched whole before encoding */
    int32_t *long_whole;             /* ids of pieces matched whole longer than MAX_USER_LEN bytes */
    uint32_t n_long;                 /* entries in long_whole (parse_section: its capacity) */
    uint32_t max_long_user;          /* longest SentencePiece user-defined piece in long_whole, or 0 */
    uint8_t user_first[32];          /* bitmap: first bytes of SentencePiece user-defined pieces */
    uint8_t user_lens[32];           /* bitmap: their lengths 1..MAX_USER_LEN (bit len - 1) */
    int chunk_safe;                  /* no piece crosses "x▁" (x not ▁): words encode independently */
    int any_raw_user;                /* some user-defined piece is split off the raw text */
    int32_t *slots;                  /* hash of NORMAL/USER_DEFINED/UNUSED and CONTROL pieces -> id */
    uint32_t slot_mask;
    int32_t byte_id[256];            /* <0xXX> piece per byte, -1 if absent */
    const uint8_t *added;            /* added-token options in the section: n_added x (i32 id, u32 bits) */
    uint32_t n_added;
    /* encode scratch (not thread-safe: one elk_tokenize at a time per tokenizer) */
    uint8_t *norm;                   /* SEG_BYTES */
    tok_sym *syms;                   /* SEG_SYMS */
    tok_link *links;                 /* SEG_SYMS */
    tok_pair *heap;                  /* 3 * SEG_SYMS: n - 1 initial pairs + 2 per merge */
    tok_node *nodes;                 /* SEG_SYMS merges */
    int32_t *stack;                  /* 2 * SEG_SYMS node indices while expanding unused pieces */
};

static inline uint32_t entry_off(const elk_tokenizer *t, uint32_t i) { return elk_le32(t->entries + 16u * i); }
static inline uint32_t entry_len(const elk_tokenizer *t, uint32_t i) { return elk_le32(t->entries + 16u * i + 4); }
static inline float entry_score(const elk_tokenizer *t, uint32_t i) { return elk_lef32(t->entries + 16u * i + 8); }
static inline uint32_t entry_type(const elk_tokenizer *t, uint32_t i) { return elk_le32(t->entries + 16u * i + 12); }
static inline const uint8_t *entry_str(const elk_tokenizer *t, uint32_t i) { return t->blob + entry_off(t, i); }
static inline uint32_t split_len(const elk_tokenizer *t, uint32_t i) { return elk_le16(t->splits + 2u * i); }

static inline int mergeable(uint32_t type)
{
    return type == ELK_TOKEN_NORMAL || type == ELK_TOKEN_USER_DEFINED || type == ELK_TOKEN_UNUSED;
}

static inline int is_space_sym(const uint8_t *p, uint64_t n) /* U+2581 "▁" */
{
    return n >= 3 && p[0] == 0xE2 && p[1] == 0x96 && p[2] == 0x81;
}

static inline int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte b of a piece spelled "<0xXX>", or -1. */
static inline int byte_piece_value(const uint8_t *s, uint32_t len)
{
    if (len != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
        return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Length of the valid UTF-8 character at p[0..n), or 0 if p[0] starts none (tokenizer.c). */
uint32_t elk_tok_utf8_len(const uint8_t *p, uint64_t n);
/* added.c: the section's added-token option list (flag ADDED_OPTIONS), taken off t->blob_size. */
int elk_tok_parse_added(elk_tokenizer *t);
/* The option bits of piece id (spec ELK_TOKENIZER_ADDED_*), 0 if it has none. */
uint32_t elk_tok_added_options(const elk_tokenizer *t, int32_t id);
/* Applies options to a match p[*at..*end) of the raw text p[0..len) as tokenizers does: 0 when
 * single_word leaves it as text; else 1, *at moved back over white space down to `floor` (the end of
 * the previous match) for lstrip and *end forward over white space for rstrip. */
int elk_tok_added_span(uint32_t options, const uint8_t *p, uint64_t len, uint64_t floor, uint64_t *at,
                       uint64_t *end);

#endif
