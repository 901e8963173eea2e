/* Byte-level pre-tokenizers and GPT-2's byte map, for byte-level BPE vocabularies (SmolLM, SmolLM2,
 * Llama 3). GPT-2's pattern  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * and Llama 3's are scanned by hand over UTF-8 (invalid bytes count as "other" characters of one byte),
 * with the Unicode tables of uclass.h. host/elk/convert/bytelevel.py is the same scanner in Python. */
#include "elk/elk.h"
#include "tokenizer/bytelevel.h"
#include "tokenizer/uclass.h"

enum { CLS_OTHER, CLS_LETTER, CLS_NUMBER, CLS_SPACE };

uint32_t elk_bl_byte_char(uint8_t b)
{
    if (b <= 0x20)
        return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0)
        return 0x100u + 33u + (b - 0x7Fu);
    if (b == 0xAD)
        return 0x100u + 67u;
    return b;
}

int elk_bl_char_byte(uint32_t cp)
{
    if (cp < 0x100)
        return elk_bl_byte_char((uint8_t)cp) == cp ? (int)cp : -1;
    if (cp < 0x100u + 33u)
        return (int)(cp - 0x100u);
    if (cp < 0x100u + 67u)
        return (int)(0x7Fu + cp - 0x121u);
    return cp == 0x143u ? 0xAD : -1;
}

/* Length of the UTF-8 character at p[0..n) (RFC 3629, as tokenizer.c's utf8_len) and its code point
 * in *cp; an invalid byte gives length 1 and *cp = -1. */
static uint32_t char_at(const uint8_t *p, uint64_t n, int32_t *cp)
{
    uint8_t c = p[0], lo = 0x80, hi = 0xBF;
    uint32_t len, v;
    *cp = -1;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, v = c & 0x1Fu;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0Fu;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07u;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 1;
    if (n < len || p[1] < lo || p[1] > hi)
        return 1;
    for (uint32_t k = 1; k < len; k++) {
        if (p[k] < 0x80 || p[k] > 0xBF)
            return 1;
        v = (v << 6) | (p[k] & 0x3Fu);
    }
    *cp = (int32_t)v;
    return len;
}

static int in_ranges(const uint32_t (*r)[2], uint32_t count, uint32_t cp)
{
    uint32_t lo = 0, hi = count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid][0])
            hi = mid;
        else if (cp > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static int char_class(int32_t cp)
{
    if (cp < 0)
        return CLS_OTHER;
    uint32_t c = (uint32_t)cp;
    if ((c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
        (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000)
        return CLS_SPACE;
    if (in_ranges(elk_uclass_letters, sizeof elk_uclass_letters / sizeof elk_uclass_letters[0], c))
        return CLS_LETTER;
    if (in_ranges(elk_uclass_numbers, sizeof elk_uclass_numbers / sizeof elk_uclass_numbers[0], c))
        return CLS_NUMBER;
    return CLS_OTHER;
}

/* End of the run of class-cls characters from p[i]. */
static uint64_t run_end(const uint8_t *p, uint64_t n, uint64_t i, int cls)
{
    while (i < n) {
        int32_t cp;
        uint32_t len = char_at(p + i, n - i, &cp);
        if (char_class(cp) != cls)
            break;
        i += len;
    }
    return i;
}

/* \s+(?!\S)|\s+ over the white-space run p[i..end): all of it at the end of the text, else the run
 * without its last character (which goes with the next token) if that leaves one, else the run. */
static uint64_t space_end(const uint8_t *p, uint64_t n, uint64_t i, uint64_t end)
{
    if (end == n)
        return end;
    int32_t cp;
    uint64_t last = i;
    for (uint64_t j = i; j < end; j += char_at(p + j, n - j, &cp))
        last = j;
    return last > i ? last : end;
}

/* Length of the contraction ('s 't 're 've 'm 'll 'd) at p[i], or 0. */
static uint64_t contraction(const uint8_t *p, uint64_t n, uint64_t i)
{
    if (p[i] != '\'' || i + 1 >= n)
        return 0;
    uint8_t a = p[i + 1], b = i + 2 < n ? p[i + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

uint64_t elk_bl_next(const uint8_t *p, uint64_t n, uint64_t i)
{
    uint64_t c = contraction(p, n, i);
    if (c)
        return i + c;
    int32_t cp, cp2;
    char_at(p + i, n - i, &cp);
    int cls = char_class(cp);
    if (cp == 0x20 && i + 1 < n) { /* " ?" before a letter, number or other run */
        char_at(p + i + 1, n - i - 1, &cp2);
        int cls2 = char_class(cp2);
        if (cls2 != CLS_SPACE)
            return run_end(p, n, i + 1, cls2);
    }
    if (cls != CLS_SPACE)
        return run_end(p, n, i, cls);
    return space_end(p, n, i, run_end(p, n, i, CLS_SPACE));
}

/* Length of Llama 3's (?i:'s|'t|'re|'ve|'m|'ll|'d) at p[i], or 0. Case folding makes U+017F (long s,
 * UTF-8 C5 BF) an 's' as well; no other non-ASCII character folds to these letters. */
static uint64_t contraction_any_case(const uint8_t *p, uint64_t n, uint64_t i)
{
    if (p[i] != '\'' || i + 1 >= n)
        return 0;
    if (i + 2 < n && p[i + 1] == 0xC5 && p[i + 2] == 0xBF)
        return 3;
    uint8_t a = p[i + 1] | 0x20, b = i + 2 < n ? p[i + 2] | 0x20 : 0; /* ASCII lower case */
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

uint64_t elk_bl_next_llama3(const uint8_t *p, uint64_t n, uint64_t i)
{
    uint64_t c = contraction_any_case(p, n, i);
    if (c)
        return i + c;
    int32_t cp, cp2 = -1;
    uint32_t len = char_at(p + i, n - i, &cp);
    int cls = char_class(cp), cls2 = -1;
    if (i + len < n) {
        char_at(p + i + len, n - i - len, &cp2);
        cls2 = char_class(cp2);
    }
    if (cls == CLS_LETTER) /* [^\r\n\p{L}\p{N}]?\p{L}+ without the prefix */
        return run_end(p, n, i, CLS_LETTER);
    if (cls2 == CLS_LETTER && cls != CLS_NUMBER && cp != '\r' && cp != '\n') /* ... with it */
        return run_end(p, n, i + len, CLS_LETTER);
    if (cls == CLS_NUMBER) { /* \p{N}{1,3} */
        uint64_t j = i + len;
        for (int k = 1; k < 3 && j < n; k++) {
            uint32_t l = char_at(p + j, n - j, &cp);
            if (char_class(cp) != CLS_NUMBER)
                break;
            j += l;
        }
        return j;
    }
    if (cls == CLS_OTHER || (cp == ' ' && cls2 == CLS_OTHER)) { /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        uint64_t j = run_end(p, n, cls == CLS_OTHER ? i : i + 1, CLS_OTHER);
        while (j < n && (p[j] == '\r' || p[j] == '\n'))
            j++;
        return j;
    }
    uint64_t end = run_end(p, n, i, CLS_SPACE), after_nl = 0;
    for (uint64_t j = i; j < end; j += len) { /* \s*[\r\n]+: through the run's last newline */
        len = char_at(p + j, n - j, &cp);
        if (cp == '\r' || cp == '\n')
            after_nl = j + 1;
    }
    return after_nl ? after_nl : space_end(p, n, i, end);
}

uint64_t elk_bl_digit_segment(const uint8_t *p, uint64_t n, uint64_t i)
{
    int32_t cp;
    uint32_t len = char_at(p + i, n - i, &cp);
    if (char_class(cp) == CLS_NUMBER)
        return i + len;
    for (i += len; i < n; i += len) {
        len = char_at(p + i, n - i, &cp);
        if (char_class(cp) == CLS_NUMBER)
            break;
    }
    return i;
}

int elk_bl_piece_bytes(const uint8_t *s, uint32_t n, char *buf, int cap, int *len)
{
    int out = 0;
    for (uint32_t k = 0; k < n;) {
        int32_t cp;
        uint32_t w = char_at(s + k, n - k, &cp);
        int b = cp >= 0 ? elk_bl_char_byte((uint32_t)cp) : -1;
        if (b >= 0) {
            if (out < cap)
                buf[out] = (char)b;
            out++;
        }
        k += w;
    }
    *len = out;
    return out > cap ? ELK_E_RANGE : ELK_OK;
}
