/* Streaming decode (elk_token_stream_*): the ids of a sequence one at a time, the text written so far
 * always whole UTF-8 characters that concatenate to the decode of the whole sequence, by SentencePiece's
 * rules or, for tokenizer.json imports (flag bits 7-9), Hugging Face tokenizers' (docs/tokenizer.md,
 * "Streaming decode"). host/elk/tokenizer_stream.py is the Python reference. Not here: elk_token_piece. */
#include "elk/elk.h"
#include "tokenizer/bytelevel.h"
#include "tokenizer/internal.h"

#define HF_FLAGS \
    (ELK_TOKENIZER_FLAG_PREFIX_SEGMENTS | ELK_TOKENIZER_FLAG_PREFIX_UNLESS_SPACE | ELK_TOKENIZER_FLAG_USER_SPLIT_RAW)

_Static_assert(sizeof(((elk_token_stream *)0)->run) == ELK_TOKEN_STREAM_HOLD, "elk.h: run[] holds HOLD bytes");

typedef struct {
    const elk_tokenizer *t;
    elk_token_stream *s;
    char *buf;
    int cap, n;       /* n counts every byte, also those past cap */
    int hf;           /* tokenizers' rules */
} writer;

static void put(writer *w, uint8_t c)
{
    if (w->hf && !w->s->started) { /* tokenizers' Strip: one leading space of the whole text */
        w->s->started = 1;
        if (c == ' ' && (w->t->flags & ELK_TOKENIZER_FLAG_ADD_DUMMY_PREFIX))
            return;
    }
    if (w->n < w->cap)
        w->buf[w->n] = (char)c;
    if (w->n < 0x7FFFFFFF)
        w->n++;
}

static void put_replacement(writer *w, uint32_t count)
{
    for (uint32_t k = 0; k < count; k++)
        put(w, 0xEF), put(w, 0xBF), put(w, 0xBD); /* U+FFFD */
}

/* Whether c can follow held[0..n) (n >= 1) in a valid UTF-8 character (RFC 3629 ranges). */
static int continues(const uint8_t *held, uint32_t n, uint8_t c)
{
    uint8_t lo = 0x80, hi = 0xBF;
    if (n == 1 && held[0] == 0xE0) lo = 0xA0;
    if (n == 1 && held[0] == 0xED) hi = 0x9F;
    if (n == 1 && held[0] == 0xF0) lo = 0x90;
    if (n == 1 && held[0] == 0xF4) hi = 0x8F;
    return c >= lo && c <= hi;
}

static uint32_t char_need(uint8_t c) /* bytes of the character lead byte c starts; 0: none */
{
    return c < 0x80 ? 1u : c >= 0xC2 && c <= 0xDF ? 2u : c >= 0xE0 && c <= 0xEF ? 3u : c >= 0xF0 && c <= 0xF4 ? 4u : 0u;
}

/* One byte of text whose invalid UTF-8 is replaced as it streams, the unfinished character held in
 * s->run: per_byte (SentencePiece) one U+FFFD per byte of an invalid sequence, else one per maximal
 * invalid subsequence (tokenizers' ByteLevel decoder, Python's "replace"). */
static void push_byte(writer *w, uint8_t c, int per_byte)
{
    elk_token_stream *s = w->s;
    if (s->n_run > 0) {
        if (continues(s->run, s->n_run, c)) {
            s->run[s->n_run++] = c;
            if (s->n_run == char_need(s->run[0])) {
                for (uint32_t k = 0; k < s->n_run; k++)
                    put(w, s->run[k]);
                s->n_run = 0;
            }
            return;
        }
        put_replacement(w, per_byte ? s->n_run : 1u);
        s->n_run = 0;
    }
    uint32_t need = char_need(c);
    if (need == 1)
        put(w, c);
    else if (need == 0)
        put_replacement(w, 1);
    else
        s->run[s->n_run++] = c;
}

static void end_bytes(writer *w, int per_byte)
{
    if (w->s->n_run)
        put_replacement(w, per_byte ? w->s->n_run : 1u);
    w->s->n_run = 0;
}

/* tokenizers' ByteFallback: a run of byte pieces that is valid UTF-8 as a whole is its text, else one
 * U+FFFD per byte. The run is held (at most ELK_TOKEN_STREAM_HOLD bytes; a longer valid run gives its
 * complete characters early). */
static int run_valid(const uint8_t *p, uint32_t n, uint32_t *complete)
{
    uint32_t k = 0;
    while (k < n) {
        uint32_t need = char_need(p[k]), j = 1;
        if (need == 0)
            return 0;
        for (; j < need && k + j < n; j++)
            if (!continues(p + k, j, p[k + j]))
                return 0;
        if (k + j < k + need) /* the run ends inside this character */
            break;
        k += need;
    }
    *complete = k;
    return 1;
}

static void hf_flush(writer *w)
{
    elk_token_stream *s = w->s;
    uint32_t complete = 0;
    if (!s->bad && run_valid(s->run, s->n_run, &complete) && complete == s->n_run) {
        for (uint32_t k = 0; k < s->n_run; k++)
            put(w, s->run[k]);
    } else {
        put_replacement(w, s->n_run);
    }
    s->n_run = 0;
    s->bad = 0;
}

static void hf_byte(writer *w, uint8_t c)
{
    elk_token_stream *s = w->s;
    if (s->bad) { /* the run is invalid already: each byte is U+FFFD */
        put_replacement(w, 1);
        return;
    }
    if (s->n_run == ELK_TOKEN_STREAM_HOLD) {
        uint32_t complete = 0;
        if (run_valid(s->run, s->n_run, &complete)) {
            for (uint32_t k = 0; k < complete; k++)
                put(w, s->run[k]);
            for (uint32_t k = complete; k < s->n_run; k++)
                s->run[k - complete] = s->run[k];
            s->n_run -= complete;
        } else {
            put_replacement(w, s->n_run);
            s->n_run = 0;
            s->bad = 1;
            put_replacement(w, 1);
            return;
        }
    }
    s->run[s->n_run++] = c;
}

/* A piece's text: "▁" as " " (SentencePiece kinds), SentencePiece's dummy prefix dropped when asked. */
static void put_text(writer *w, const uint8_t *p, uint32_t n, int spaces, int drop_prefix)
{
    if (drop_prefix && is_space_sym(p, n))
        p += 3, n -= 3;
    for (uint32_t k = 0; k < n;) {
        int space = spaces && is_space_sym(p + k, n - k);
        put(w, space ? ' ' : p[k]);
        k += space ? 3u : 1u;
    }
}

static void step(writer *w, int id, unsigned flags)
{
    const elk_tokenizer *t = w->t;
    elk_token_stream *s = w->s;
    uint32_t type = entry_type(t, (uint32_t)id), n = entry_len(t, (uint32_t)id);
    const uint8_t *p = entry_str(t, (uint32_t)id);
    int special = (flags & ELK_PIECE_SPECIAL) != 0;
    if (t->kind == ELK_TOKENIZER_KIND_BYTE_BPE) {
        if (type == ELK_TOKEN_NORMAL) {
            for (uint32_t k = 0; k < n;) { /* each character of GPT-2's map is one byte */
                uint32_t len = elk_tok_utf8_len(p + k, n - k), cp = p[k];
                if (len == 2)
                    cp = ((p[k] & 0x1Fu) << 6) | (p[k + 1] & 0x3Fu);
                int b = len == 1 || len == 2 ? elk_bl_char_byte(cp) : -1;
                if (b >= 0)
                    push_byte(w, (uint8_t)b, 0);
                k += len ? len : 1u;
            }
        } else if (type != ELK_TOKEN_CONTROL || special) {
            for (uint32_t k = 0; k < n; k++)
                push_byte(w, p[k], 0);
        }
        return;
    }
    if (type == ELK_TOKEN_CONTROL && !special) {
        if (!w->hf) /* SentencePiece ends a byte run at a control piece; tokenizers skips it first */
            end_bytes(w, 1);
        return;
    }
    if (type == ELK_TOKEN_BYTE) {
        int b = byte_piece_value(p, n);
        if (b >= 0 && w->hf)
            hf_byte(w, (uint8_t)b);
        else if (b >= 0)
            push_byte(w, (uint8_t)b, 1), s->started = 1;
        return;
    }
    if (w->hf)
        hf_flush(w);
    else
        end_bytes(w, 1);
    if (type == ELK_TOKEN_UNKNOWN) {
        put_text(w, (const uint8_t *)UNK_SURFACE, sizeof(UNK_SURFACE) - 1, 0, 0);
    } else {
        int text = type != ELK_TOKEN_CONTROL;
        put_text(w, p, n, text, !w->hf && text && !s->started && (t->flags & ELK_TOKENIZER_FLAG_ADD_DUMMY_PREFIX));
    }
    if (!w->hf && (type != ELK_TOKEN_CONTROL || n > 0))
        s->started = 1;
}

void elk_token_stream_begin(elk_token_stream *s)
{
    if (s)
        *s = (elk_token_stream){ 0 };
}

/* Runs `id` (or the end, id < 0) on a copy of the state and keeps it only when the text fits buf. */
static int run(const elk_tokenizer *t, elk_token_stream *s, int id, unsigned flags, char *buf, int cap, int *len)
{
    if (!t || !s || !len || cap < 0 || (!buf && cap > 0))
        return ELK_E_INVAL;
    *len = 0;
    if (id >= 0 && (uint32_t)id >= t->n_tokens)
        return ELK_E_RANGE;
    elk_token_stream next = *s;
    if (next.n_run > ELK_TOKEN_STREAM_HOLD)
        return ELK_E_INVAL; /* not a state elk_token_stream_begin made */
    writer w = { t, &next, buf, cap, 0, t->kind == ELK_TOKENIZER_KIND_SPM_BPE && (t->flags & HF_FLAGS) };
    if (id >= 0)
        step(&w, id, flags);
    else if (w.hf)
        hf_flush(&w);
    else
        end_bytes(&w, t->kind != ELK_TOKENIZER_KIND_BYTE_BPE);
    *len = w.n;
    if (w.n > cap)
        return ELK_E_RANGE; /* the state is unchanged: call again with a larger buf */
    *s = next;
    return ELK_OK;
}

int elk_token_stream_piece(const elk_tokenizer *t, elk_token_stream *s, int id, unsigned flags, char *buf, int cap,
                           int *len)
{
    if (id < 0) {
        if (len)
            *len = 0;
        return ELK_E_RANGE;
    }
    return run(t, s, id, flags, buf, cap, len);
}

int elk_token_stream_end(const elk_tokenizer *t, elk_token_stream *s, char *buf, int cap, int *len)
{
    return run(t, s, -1, 0, buf, cap, len);
}
