/* Added-token options of the TOKENIZER section (flag ADDED_OPTIONS; docs/image-format.md): reading the
 * option list, and applying lstrip / rstrip / single_word to a match in the raw text as Hugging Face's
 * tokenizers does. host/elk/tokenizer_added.py is the Python reference. Not here: finding matches. */
#include "elk/elk.h"
#include "tokenizer/internal.h"
#include "tokenizer/uword.h"

#define ALL_OPTIONS \
    (ELK_TOKENIZER_ADDED_LSTRIP | ELK_TOKENIZER_ADDED_RSTRIP | ELK_TOKENIZER_ADDED_SINGLE_WORD | ELK_TOKENIZER_ADDED_RAW)

int elk_tok_parse_added(elk_tokenizer *t)
{
    t->added = NULL;
    t->n_added = 0;
    if (!(t->flags & ELK_TOKENIZER_FLAG_ADDED_OPTIONS))
        return ELK_OK;
    /* k x (i32 id, u32 options), then u32 k: the last bytes before the stop-id list */
    uint32_t k = t->blob_size >= 4 ? elk_le32(t->blob + t->blob_size - 4) : 0;
    if (k == 0 || k > ELK_TOKENIZER_MAX_ADDED_OPTIONS || 4u + 8u * (uint64_t)k > t->blob_size)
        return ELK_E_FORMAT;
    t->blob_size -= 4u + 8u * k;
    t->added = t->blob + t->blob_size;
    for (uint32_t j = 0; j < k; j++) {
        int32_t id = (int32_t)elk_le32(t->added + 8u * j);
        uint32_t opt = elk_le32(t->added + 8u * j + 4);
        int32_t before = j ? (int32_t)elk_le32(t->added + 8u * (j - 1)) : -1;
        if (id <= before || id >= (int64_t)t->n_tokens || opt == 0 || (opt & ~(uint32_t)ALL_OPTIONS))
            return ELK_E_FORMAT; /* ids ascending (binary search), known bits */
    }
    t->n_added = k;
    return ELK_OK;
}

uint32_t elk_tok_added_options(const elk_tokenizer *t, int32_t id)
{
    uint32_t lo = 0, hi = t->n_added;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int32_t at = (int32_t)elk_le32(t->added + 8u * mid);
        if (at == id)
            return elk_le32(t->added + 8u * mid + 4);
        if (at < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Unicode White_Space (Rust's char::is_whitespace). */
static int is_white(int32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int is_word(int32_t c)
{
    uint32_t lo = 0, hi = sizeof elk_uword_ranges / sizeof elk_uword_ranges[0];
    if (c < 0)
        return 0;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((uint32_t)c < elk_uword_ranges[mid][0])
            hi = mid;
        else if ((uint32_t)c > elk_uword_ranges[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

/* The character of valid UTF-8 at p[0..n): its code point in *cp and its length; *cp = -1 (length 1)
 * for a byte that starts none. */
static uint32_t char_at(const uint8_t *p, uint64_t n, int32_t *cp)
{
    uint32_t len = elk_tok_utf8_len(p, n);
    if (!len) {
        *cp = -1;
        return 1;
    }
    uint32_t v = len == 1 ? p[0] : p[0] & (0xFFu >> (len + 1));
    for (uint32_t k = 1; k < len; k++)
        v = (v << 6) | (p[k] & 0x3Fu);
    *cp = (int32_t)v;
    return len;
}

/* The character of valid UTF-8 ending at p[at] (the bytes p[lo..at) may hold it): its code point, or
 * -1 with length 1 when none does. */
static uint32_t char_before(const uint8_t *p, uint64_t lo, uint64_t at, int32_t *cp)
{
    for (uint32_t n = 1; n <= 4 && at - lo >= n; n++) {
        if (n < 4 && (p[at - n] & 0xC0u) == 0x80u)
            continue; /* a continuation byte: the character starts further back */
        if (char_at(p + at - n, n, cp) == n && *cp >= 0)
            return n;
        break;
    }
    *cp = -1;
    return 1;
}

int elk_tok_added_span(uint32_t options, const uint8_t *p, uint64_t len, uint64_t floor, uint64_t *at,
                       uint64_t *end)
{
    int32_t cp;
    if (options & ELK_TOKENIZER_ADDED_SINGLE_WORD) {
        /* tokenizers looks at the whole text here, past earlier matches too */
        if (*at > 0 && (char_before(p, 0, *at, &cp), is_word(cp)))
            return 0;
        if (*end < len && (char_at(p + *end, len - *end, &cp), is_word(cp)))
            return 0;
    }
    if (options & ELK_TOKENIZER_ADDED_LSTRIP) {
        while (*at > floor) {
            uint32_t n = char_before(p, floor, *at, &cp);
            if (!is_white(cp))
                break;
            *at -= n;
        }
    }
    if (options & ELK_TOKENIZER_ADDED_RSTRIP) {
        while (*end < len) {
            uint32_t n = char_at(p + *end, len - *end, &cp);
            if (!is_white(cp))
                break;
            *end += n;
        }
    }
    return 1;
}
