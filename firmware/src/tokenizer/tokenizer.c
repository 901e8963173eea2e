/* SentencePiece-compatible BPE tokenizer over the image's TOKENIZER section (docs/image-format.md),
 * read in place; lookup tables and encode scratch live in the caller's arena. Special (control) pieces
 * are matched in text only when the caller asks (chat templates), and the section's stop ids are kept.
 * Byte-level (GPT-2 style) vocabularies run the same merge engine on GPT-2's byte characters after its
 * pre-tokenizer (bytelevel.c), merging a pair only as the merge that made the piece.
 * host/elk/tokenizer.py holds the same algorithms in Python (the test oracle). Not here: Unigram
 * models, NFKC normalization. */
#include <string.h>

#include "elk/elk.h"
#include "tokenizer/bytelevel.h"
#include "tokenizer/internal.h"
#include "util/util.h"

/* ---------------------------------------------------------------------------------------------
 * Section access and validation */

/* Pieces matched whole in template text (ELK_TOKENIZE_SPECIAL): control pieces and the unknown piece
 * ("<unk>"), both special tokens in Hugging Face's tokenizers and llama.cpp. */
static int special_type(uint32_t type)
{
    return type == ELK_TOKEN_CONTROL || type == ELK_TOKEN_UNKNOWN;
}

/* User-defined pieces are split off the raw text before encoding (byte-level vocabularies, and
 * SentencePiece ones from tokenizer.json: USER_SPLIT_RAW), not matched in the normalized text. */
static int raw_users(const elk_tokenizer *t)
{
    return t->kind == ELK_TOKENIZER_KIND_BYTE_BPE || (t->flags & ELK_TOKENIZER_FLAG_USER_SPLIT_RAW);
}

/* User-defined piece i is split off the raw text: all are (raw_users), or its added-token options say
 * so (ELK_TOKENIZER_ADDED_RAW: tokenizers' normalized: false beside normalized: true ones). */
static int raw_user(const elk_tokenizer *t, uint32_t i)
{
    return raw_users(t) || (t->n_added && (elk_tok_added_options(t, (int32_t)i) & ELK_TOKENIZER_ADDED_RAW));
}

/* Length of the valid UTF-8 character at p[0..n), or 0 if p[0] starts none (RFC 3629 ranges). */
uint32_t elk_tok_utf8_len(const uint8_t *p, uint64_t n)
{
    uint8_t c = p[0], lo = 0x80, hi = 0xBF;
    uint32_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (uint32_t k = 2; k < len; k++)
        if (p[k] < 0x80 || p[k] > 0xBF)
            return 0;
    return len;
}

/* The optional stop-id list at the end of the section (flag STOP_IDS): k x i32 id, then u32 k as the
 * last 4 bytes. Takes the list off t->blob_size, so every string must end before it. */
static int parse_stop_ids(elk_tokenizer *t)
{
    t->n_stop = 0;
    if (!(t->flags & ELK_TOKENIZER_FLAG_STOP_IDS))
        return ELK_OK;
    uint32_t k = t->blob_size >= 4 ? elk_le32(t->blob + t->blob_size - 4) : 0;
    if (k == 0 || k > ELK_TOKENIZER_MAX_STOP_IDS || 4u + 4u * (uint64_t)k > t->blob_size)
        return ELK_E_FORMAT;
    t->blob_size -= 4u + 4u * k;
    for (uint32_t j = 0; j < k; j++) {
        int32_t id = (int32_t)elk_le32(t->blob + t->blob_size + 4u * j);
        if (id < 0 || id >= (int64_t)t->n_tokens)
            return ELK_E_FORMAT;
        t->stop[j] = id;
    }
    t->n_stop = k;
    return ELK_OK;
}

/* Checks entry i against the blob and the head: its string inside the blob, UTF-8, at most max_len
 * bytes, a known type, a score that is a number, a merge split inside the piece (byte-level), and a
 * SentencePiece user-defined piece that fits the normalized scratch. */
static int check_entry(const elk_tokenizer *t, uint32_t i)
{
    uint32_t off = entry_off(t, i), len = entry_len(t, i), type = entry_type(t, i);
    float score = entry_score(t, i);
    if (!elk_range_inside(off, len, 0, t->blob_size))
        return ELK_E_BOUNDS;
    if (len > t->max_len || type < ELK_TOKEN_NORMAL || type > ELK_TOKEN_BYTE || score != score)
        return ELK_E_FORMAT;
    if (t->splits && split_len(t, i) >= (len ? len : 1u))
        return ELK_E_FORMAT; /* a merge's left part lies inside its piece */
    for (uint32_t k = 0; k < len;) { /* pieces are UTF-8 text */
        uint32_t c = elk_tok_utf8_len(t->blob + off + k, len - k);
        if (!c)
            return ELK_E_FORMAT;
        k += c;
    }
    if (type == ELK_TOKEN_USER_DEFINED && !raw_users(t) && len > MAX_LONG_USER_LEN)
        return ELK_E_UNSUPPORTED; /* matched in the normalized scratch: it must fit there whole */
    return ELK_OK;
}

/* Reads and checks the head and every entry; fills the section fields of t. Returns ELK_OK or an error. */
static int parse_section(elk_tokenizer *t, const void *section, uint64_t size, uint32_t *n_mergeable)
{
    const uint8_t *s = section;
    if (!s || size < HEAD_SIZE)
        return ELK_E_BOUNDS;
    uint32_t n = elk_le32(s), kind = elk_le32(s + 4);
    t->flags = elk_le32(s + 8);
    t->bos = (int32_t)elk_le32(s + 12);
    t->eos = (int32_t)elk_le32(s + 16);
    t->unk = (int32_t)elk_le32(s + 20);
    t->pad = (int32_t)elk_le32(s + 24);
    t->max_len = elk_le32(s + 28);
    t->kind = kind;
    if (kind != ELK_TOKENIZER_KIND_SPM_BPE && kind != ELK_TOKENIZER_KIND_BYTE_BPE)
        return ELK_E_UNSUPPORTED;
    if (n == 0 || n > MAX_TOKENS)
        return ELK_E_RANGE;
    if ((uint64_t)n * ELK_TOKEN_ENTRY_SIZE > size - HEAD_SIZE)
        return ELK_E_BOUNDS;
    uint32_t known = kind == ELK_TOKENIZER_KIND_BYTE_BPE
                         ? ELK_TOKENIZER_FLAG_SPLIT_DIGITS | ELK_TOKENIZER_FLAG_STOP_IDS |
                               ELK_TOKENIZER_FLAG_LLAMA3_SPLIT | ELK_TOKENIZER_FLAG_IGNORE_MERGES
                         : ELK_TOKENIZER_FLAG_BYTE_FALLBACK | ELK_TOKENIZER_FLAG_ADD_DUMMY_PREFIX |
                               ELK_TOKENIZER_FLAG_REMOVE_EXTRA_WHITESPACE | ELK_TOKENIZER_FLAG_STOP_IDS |
                               ELK_TOKENIZER_FLAG_PREFIX_SEGMENTS | ELK_TOKENIZER_FLAG_PREFIX_UNLESS_SPACE |
                               ELK_TOKENIZER_FLAG_USER_SPLIT_RAW;
    known |= ELK_TOKENIZER_FLAG_ADDED_OPTIONS;
    if (t->flags & ~known)
        return ELK_E_FORMAT;
    int32_t ids[4] = { t->bos, t->eos, t->unk, t->pad };
    for (int k = 0; k < 4; k++)
        if (ids[k] < -1 || ids[k] >= (int64_t)n)
            return ELK_E_FORMAT;
    t->n_tokens = n;
    t->entries = s + HEAD_SIZE;
    t->blob = t->entries + (uint64_t)n * ELK_TOKEN_ENTRY_SIZE;
    t->blob_size = size - HEAD_SIZE - (uint64_t)n * ELK_TOKEN_ENTRY_SIZE;
    if (parse_stop_ids(t) != ELK_OK || elk_tok_parse_added(t) != ELK_OK)
        return ELK_E_FORMAT;
    t->splits = NULL;
    if (kind == ELK_TOKENIZER_KIND_BYTE_BPE) { /* u16 per piece at the start of the blob */
        if (t->blob_size < 2u * (uint64_t)n)
            return ELK_E_BOUNDS;
        t->splits = t->blob;
    }
    *n_mergeable = 0;
    t->n_long = 0;
    for (uint32_t i = 0; i < n; i++) {
        int rc = check_entry(t, i);
        if (rc != ELK_OK)
            return rc;
        uint32_t len = entry_len(t, i), type = entry_type(t, i);
        *n_mergeable += (mergeable(type) || special_type(type)) && len > 0; /* hashed pieces */
        t->n_long += len > MAX_USER_LEN && (special_type(type) || type == ELK_TOKEN_USER_DEFINED);
    }
    for (uint32_t j = 0; j < t->n_added; j++) { /* options belong to pieces matched whole in the raw text */
        uint32_t i = elk_le32(t->added + 8u * j), type = entry_type(t, i);
        uint32_t opt = elk_le32(t->added + 8u * j + 4);
        if (opt & ELK_TOKENIZER_ADDED_RAW) { /* the RAW bit alone makes a user-defined piece raw-split */
            if (type != ELK_TOKEN_USER_DEFINED || entry_len(t, i) == 0)
                return ELK_E_FORMAT;
            continue;
        }
        if (entry_len(t, i) == 0 || !(special_type(type) || (type == ELK_TOKEN_USER_DEFINED && raw_users(t))))
            return ELK_E_FORMAT;
    }
    return ELK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Arena layout and lookup tables */

static uint64_t align8(uint64_t x) { return (x + 7u) & ~(uint64_t)7u; }

static uint32_t slot_count(uint32_t n_mergeable)
{
    uint32_t cap = 16;
    while (cap < 2u * n_mergeable)
        cap <<= 1;
    return cap;
}

static uint64_t layout_size(uint32_t slots, uint32_t n_long)
{
    return align8(sizeof(elk_tokenizer)) + align8((uint64_t)slots * 4) + align8((uint64_t)n_long * 4) +
           align8(SEG_BYTES) +
           align8(SEG_SYMS * sizeof(tok_sym)) + align8(SEG_SYMS * sizeof(tok_link)) +
           align8(3u * SEG_SYMS * sizeof(tok_pair)) + align8(SEG_SYMS * sizeof(tok_node)) +
           align8(2u * SEG_SYMS * sizeof(int32_t)) + 8u /* to align the arena start */;
}

static uint32_t hash_bytes(const uint8_t *p, uint32_t n) /* FNV-1a */
{
    uint32_t h = 2166136261u;
    for (uint32_t k = 0; k < n; k++)
        h = (h ^ p[k]) * 16777619u;
    return h;
}

/* Id of the piece spelled p[0..n) that is mergeable (want = 0) or of type `want`, or -1. */
static int32_t lookup_as(const elk_tokenizer *t, const uint8_t *p, uint32_t n, uint32_t want)
{
    if (n == 0 || n > t->max_len)
        return -1;
    for (uint32_t h = hash_bytes(p, n) & t->slot_mask;; h = (h + 1) & t->slot_mask) {
        int32_t id = t->slots[h];
        if (id < 0)
            return -1;
        uint32_t type = entry_type(t, (uint32_t)id);
        if ((want ? type == want : mergeable(type)) && entry_len(t, (uint32_t)id) == n &&
            memcmp(entry_str(t, (uint32_t)id), p, n) == 0)
            return id;
    }
}

/* Id of the mergeable piece spelled p[0..n), or -1. */
static int32_t lookup(const elk_tokenizer *t, const uint8_t *p, uint32_t n)
{
    return lookup_as(t, p, n, 0);
}

/* 1 if piece i has "x▁" with x a character other than ▁: then a word boundary can be inside a piece. */
static int crosses_word(const elk_tokenizer *t, uint32_t i)
{
    const uint8_t *s = entry_str(t, i);
    uint32_t len = entry_len(t, i), prev_space = 1;
    for (uint32_t k = 0; k < len;) {
        uint32_t c = elk_tok_utf8_len(s + k, len - k); /* > 0: checked by parse_section */
        int space = is_space_sym(s + k, len - k);
        if (space && !prev_space)
            return 1;
        prev_space = (uint32_t)space;
        k += c;
    }
    return 0;
}

static void build_tables(elk_tokenizer *t)
{
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    for (uint32_t i = 0; i <= t->slot_mask; i++)
        t->slots[i] = -1;
    t->chunk_safe = 1;
    t->any_raw_user = 0;
    t->max_user_len = t->max_ctrl_len = t->n_long = t->max_long_user = 0;
    memset(t->ctrl_first, 0, sizeof t->ctrl_first);
    memset(t->user_first, 0, sizeof t->user_first);
    memset(t->user_lens, 0, sizeof t->user_lens);
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        uint32_t type = entry_type(t, i), len = entry_len(t, i);
        const uint8_t *s = entry_str(t, i);
        if (type == ELK_TOKEN_BYTE) {
            int b = byte_piece_value(s, len);
            if (b >= 0 && t->byte_id[b] < 0)
                t->byte_id[b] = (int32_t)i;
            continue;
        }
        int control = special_type(type), user = type == ELK_TOKEN_USER_DEFINED;
        /* The first of duplicate spellings wins, as in the Python reference. A user-defined piece
         * spelled like an earlier mergeable one is hashed as well: lookup_as(USER_DEFINED) finds it, so
         * its text is still matched whole, while lookup() meets the earlier piece first (linear probing
         * keeps insertion order) and gives that id, as tokenizers does for an added token spelled like
         * a vocabulary piece. */
        if ((!mergeable(type) && !control) || len == 0 || lookup_as(t, s, len, control || user ? type : 0u) >= 0)
            continue;
        uint32_t h = hash_bytes(s, len) & t->slot_mask;
        while (t->slots[h] >= 0)
            h = (h + 1) & t->slot_mask;
        t->slots[h] = (int32_t)i;
        /* control pieces, and byte-level or USER_SPLIT_RAW user-defined ones, are matched whole in the raw text */
        int raw = user && raw_user(t, i);
        t->any_raw_user |= raw;
        if (control || raw) {
            if (len > MAX_USER_LEN)
                t->long_whole[t->n_long++] = (int32_t)i;  /* counted by parse_section */
            else if (len > t->max_ctrl_len)
                t->max_ctrl_len = len;
            t->ctrl_first[s[0] >> 3] |= (uint8_t)(1u << (s[0] & 7));
        }
        if (control || raw_users(t) || raw)
            continue;
        if (crosses_word(t, i))
            t->chunk_safe = 0;
        if (!user)
            continue;
        t->user_first[s[0] >> 3] |= (uint8_t)(1u << (s[0] & 7));
        if (len > MAX_USER_LEN) { /* split_one compares these one by one */
            t->long_whole[t->n_long++] = (int32_t)i;  /* counted by parse_section */
            t->max_long_user = len > t->max_long_user ? len : t->max_long_user;
        } else {
            t->user_lens[(len - 1) >> 3] |= (uint8_t)(1u << ((len - 1) & 7));
            t->max_user_len = len > t->max_user_len ? len : t->max_user_len;
        }
    }
}

uint64_t elk_tokenizer_arena_size(const void *section, uint64_t size)
{
    elk_tokenizer t;
    uint32_t n_mergeable;
    if (parse_section(&t, section, size, &n_mergeable) != ELK_OK)
        return 0;
    return layout_size(slot_count(n_mergeable), t.n_long);
}

int elk_tokenizer_init(elk_tokenizer **out, const void *section, uint64_t size, void *arena,
                       uint64_t arena_size)
{
    if (!out || !arena)
        return ELK_E_INVAL;
    *out = NULL;
    elk_tokenizer tmp;
    uint32_t n_mergeable;
    int rc = parse_section(&tmp, section, size, &n_mergeable);
    if (rc != ELK_OK)
        return rc;
    uint32_t slots = slot_count(n_mergeable);
    if (arena_size < layout_size(slots, tmp.n_long))
        return ELK_E_NOMEM;
    uint8_t *p = (uint8_t *)(uintptr_t)align8((uintptr_t)arena);
    elk_tokenizer *t = (elk_tokenizer *)p;
    *t = tmp;
    p += align8(sizeof(elk_tokenizer));
    t->slots = (int32_t *)p, p += align8((uint64_t)slots * 4);
    t->slot_mask = slots - 1;
    t->long_whole = (int32_t *)p, p += align8((uint64_t)tmp.n_long * 4);
    t->norm = p, p += align8(SEG_BYTES);
    t->syms = (tok_sym *)p, p += align8(SEG_SYMS * sizeof(tok_sym));
    t->links = (tok_link *)p, p += align8(SEG_SYMS * sizeof(tok_link));
    t->heap = (tok_pair *)p, p += align8(3u * SEG_SYMS * sizeof(tok_pair));
    t->nodes = (tok_node *)p, p += align8(SEG_SYMS * sizeof(tok_node));
    t->stack = (int32_t *)p;
    build_tables(t);
    *out = t;
    return ELK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Encoding: output, BPE merge of one segment, expansion of merged nodes */

typedef struct {
    int32_t *ids;
    int cap, n;
    int32_t last;  /* last id emitted (runs of <unk> collapse into one, as SentencePiece does) */
    int overflow;  /* more than INT_MAX ids */
} tok_out;

static void emit(tok_out *o, int32_t id)
{
    if (o->n == 0x7FFFFFFF) {
        o->overflow = 1;
        return;
    }
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
    o->last = id;
}

/* An initial symbol with no piece: its bytes as byte pieces, or <unk>. */
static void emit_unknown(const elk_tokenizer *t, tok_out *o, const uint8_t *p, uint32_t len)
{
    if (t->flags & ELK_TOKENIZER_FLAG_BYTE_FALLBACK) {
        for (uint32_t k = 0; k < len; k++) {
            int32_t id = t->byte_id[p[k]] >= 0 ? t->byte_id[p[k]] : t->unk;
            if (id >= 0)
                emit(o, id);
        }
    } else if (t->unk >= 0 && !(o->n > 0 && o->last == t->unk)) {
        emit(o, t->unk);
    }
}

/* Emit node `root`; a merge that made an UNUSED piece is replaced by its two halves. */
static void emit_node(const elk_tokenizer *t, tok_out *o, const tok_sym *syms, int32_t n_syms, int32_t root)
{
    int32_t sp = 0;
    t->stack[sp++] = root;
    while (sp > 0) {
        int32_t x = t->stack[--sp];
        if (x < n_syms) {
            if (syms[x].id >= 0)
                emit(o, syms[x].id);
            else
                emit_unknown(t, o, t->norm + syms[x].start, syms[x].len);
            continue;
        }
        const tok_node *nd = &t->nodes[x - n_syms];
        if (entry_type(t, (uint32_t)nd->id) == ELK_TOKEN_UNUSED) {
            t->stack[sp++] = nd->b; /* stack holds at most one pending right half per tree level */
            t->stack[sp++] = nd->a;
        } else {
            emit(o, nd->id);
        }
    }
}

/* Max-heap of candidate merges: higher score first, then the leftmost pair. */
static int pair_before(const tok_pair *a, const tok_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(tok_pair *h, uint32_t *n, tok_pair v)
{
    uint32_t i = (*n)++;
    while (i > 0 && pair_before(&v, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static tok_pair heap_pop(tok_pair *h, uint32_t *n)
{
    tok_pair top = h[0], last = h[--(*n)];
    uint32_t i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && pair_before(&h[c + 1], &h[c]))
            c++;
        if (!pair_before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

/* Queue the merge of link[left] with its right neighbour if their bytes spell a mergeable piece. */
static void try_pair(const elk_tokenizer *t, const tok_sym *syms, uint32_t *n_heap, int32_t left)
{
    int32_t right = t->links[left].next;
    if (left < 0 || right < 0 || syms[left].frozen || syms[right].frozen)
        return;
    uint32_t size = t->links[left].len + t->links[right].len;
    int32_t id = lookup(t, t->norm + syms[left].start, size);
    if (id < 0)
        return;
    if (t->splits && split_len(t, (uint32_t)id) != t->links[left].len)
        return; /* byte-level: only the merge that made the piece, as Hugging Face's BPE */
    tok_pair p = { entry_score(t, (uint32_t)id), left, right, size, id };
    heap_push(t->heap, n_heap, p);
}

/* BPE over syms[0..n) (one segment), then emit the merged symbols that start before `limit`.
 * Returns how many initial symbols the emitted ones cover. */
static uint32_t encode_segment(const elk_tokenizer *t, tok_out *o, const tok_sym *syms, int32_t n,
                               int32_t limit)
{
    tok_link *L = t->links;
    uint32_t n_heap = 0;
    int32_t n_nodes = 0;
    for (int32_t i = 0; i < n; i++)
        L[i] = (tok_link){ i - 1, i + 1 < n ? i + 1 : -1, syms[i].len, i };
    for (int32_t i = 0; i + 1 < n; i++)
        try_pair(t, syms, &n_heap, i);
    while (n_heap > 0) {
        tok_pair p = heap_pop(t->heap, &n_heap);
        if (L[p.left].len == 0 || L[p.right].len == 0 || L[p.left].next != p.right ||
            L[p.left].len + L[p.right].len != p.size)
            continue; /* stale: a side merged with something else since this pair was queued */
        t->nodes[n_nodes] = (tok_node){ p.id, L[p.left].node, L[p.right].node };
        L[p.left].node = n + n_nodes++;
        L[p.left].len = p.size;
        L[p.right].len = 0;
        L[p.left].next = L[p.right].next;
        if (L[p.left].next >= 0)
            L[L[p.left].next].prev = p.left;
        if (L[p.left].prev >= 0)
            try_pair(t, syms, &n_heap, L[p.left].prev);
        try_pair(t, syms, &n_heap, p.left);
    }
    int32_t i = n > 0 ? 0 : -1;
    for (; i >= 0 && i < limit; i = L[i].next)
        emit_node(t, o, syms, n, L[i].node);
    return i < 0 ? (uint32_t)n : (uint32_t)i;
}

/* ---------------------------------------------------------------------------------------------
 * Normalization (identity + " " -> "▁"), splitting into initial symbols, segmenting */

typedef struct {
    const uint8_t *p;
    uint64_t pos, end;  /* raw text still to normalize */
    int prefix;         /* the dummy-prefix "▁" is still to be written */
    int prev_space;     /* the last raw byte written was a space */
} tok_src;

/* Append normalized bytes to t->norm[filled..SEG_BYTES); returns the new fill. */
static uint32_t fill(const elk_tokenizer *t, tok_src *s, uint32_t filled)
{
    int collapse = (t->flags & ELK_TOKENIZER_FLAG_REMOVE_EXTRA_WHITESPACE) != 0;
    while (filled + 3 <= SEG_BYTES && (s->prefix || s->pos < s->end)) {
        uint8_t c = ' ';
        if (s->prefix)
            s->prefix = 0;
        else
            c = s->p[s->pos++];
        if (c != ' ') {
            t->norm[filled++] = c;
            s->prev_space = 0;
        } else if (!(collapse && s->prev_space)) {
            t->norm[filled++] = 0xE2, t->norm[filled++] = 0x96, t->norm[filled++] = 0x81;
            s->prev_space = 1;
        }
    }
    return filled;
}

/* The initial symbol at norm[at..filled): the longest user-defined piece there (kept whole), else one
 * UTF-8 character, else one invalid byte. Returns its length in bytes. */
static uint32_t split_one(const elk_tokenizer *t, uint32_t at, uint32_t filled, tok_sym *out)
{
    const uint8_t *p = t->norm + at;
    uint32_t avail = filled - at, best = 0;
    /* no user-defined piece starts with this byte: one character */
    uint32_t reach = (t->user_first[p[0] >> 3] & (1u << (p[0] & 7))) ? avail : 0;
    for (uint32_t k = 0; k < t->n_long && t->max_long_user; k++) { /* user pieces over MAX_USER_LEN */
        uint32_t i = (uint32_t)t->long_whole[k], len = entry_len(t, i);
        if (entry_type(t, i) == ELK_TOKEN_USER_DEFINED && len > best && len <= reach &&
            memcmp(entry_str(t, i), p, len) == 0 && !raw_user(t, i))
            best = len;
    }
    if (best) {
        *out = (tok_sym){ at, best, lookup(t, p, best), 1 };
        return best;
    }
    for (uint32_t n = t->max_user_len < reach ? t->max_user_len : reach; n > 0; n--) {
        int32_t u;
        if ((t->user_lens[(n - 1) >> 3] & (1u << ((n - 1) & 7))) &&  /* only lengths some piece has */
            (u = lookup_as(t, p, n, ELK_TOKEN_USER_DEFINED)) >= 0 && !raw_user(t, (uint32_t)u)) {
            /* the first piece so spelled gives the id */
            *out = (tok_sym){ at, n, lookup(t, p, n), 1 };
            return n;
        }
    }
    uint32_t c = elk_tok_utf8_len(p, avail);
    *out = (tok_sym){ at, c ? c : 1, c ? lookup(t, p, c) : -1, 0 };
    return out->len;
}

static int ends_with_space(const elk_tokenizer *t, const tok_sym *s)
{
    return s->len >= 3 && is_space_sym(t->norm + s->start + s->len - 3, 3);
}

/* Encode every complete word in syms[0..n) (a word starts at "▁" after a non-"▁" character; no piece
 * crosses that point when t->chunk_safe, so words merge independently). Returns the symbols consumed. */
static uint32_t encode_words(const elk_tokenizer *t, tok_out *o, uint32_t n)
{
    uint32_t seg = 0;
    if (!t->chunk_safe)
        return 0;
    for (uint32_t k = 1; k < n; k++) {
        const tok_sym *s = &t->syms[k];
        if (is_space_sym(t->norm + s->start, s->len) && !ends_with_space(t, s - 1)) {
            encode_segment(t, o, t->syms + seg, (int32_t)(k - seg), (int32_t)(k - seg));
            seg = k;
        }
    }
    return seg;
}

/* Encode text[0..len) as plain text (no control pieces); `prefix`: the dummy prefix may apply. */
static void encode_text(const elk_tokenizer *t, tok_out *o_, const uint8_t *text, uint64_t len, int prefix)
{
    tok_out o = *o_;
    tok_src s = { text, 0, len, 0, 0 };
    if (t->flags & ELK_TOKENIZER_FLAG_REMOVE_EXTRA_WHITESPACE) {
        while (s.pos < s.end && s.p[s.pos] == ' ')
            s.pos++;
        while (s.end > s.pos && s.p[s.end - 1] == ' ')
            s.end--;
    }
    s.prefix = prefix && s.pos < s.end && (t->flags & ELK_TOKENIZER_FLAG_ADD_DUMMY_PREFIX);
    if ((t->flags & ELK_TOKENIZER_FLAG_PREFIX_UNLESS_SPACE) && s.prefix &&
        (s.p[s.pos] == ' ' || is_space_sym(s.p + s.pos, s.end - s.pos)))
        s.prefix = 0; /* Hugging Face's Metaspace: the text already starts with a space */
    uint32_t margin = t->max_user_len > 4 ? t->max_user_len : 4; /* a whole character or user piece */
    margin = t->max_long_user > margin ? t->max_long_user : margin;  /* <= MAX_LONG_USER_LEN = SEG_BYTES / 2 */
    uint32_t filled = 0, split = 0, n_syms = 0;
    for (;;) {
        filled = fill(t, &s, filled);
        int at_end = !s.prefix && s.pos >= s.end;
        while (n_syms < SEG_SYMS && split < filled && (at_end || split + margin <= filled))
            split += split_one(t, split, filled, &t->syms[n_syms++]);
        uint32_t seg = encode_words(t, &o, n_syms);
        if (at_end && split >= filled) {
            encode_segment(t, &o, t->syms + seg, (int32_t)(n_syms - seg), (int32_t)(n_syms - seg));
            break;
        }
        if (seg == 0 && (n_syms == SEG_SYMS || filled + 3 > SEG_BYTES)) {
            /* A word longer than the scratch: merge all of it, keep only the tokens of its first half
             * and merge the rest again with what follows. BPE decisions are local, so the kept
             * tokens are those of the whole word unless a merge chain spans half the scratch. */
            seg = encode_segment(t, &o, t->syms, (int32_t)n_syms, (int32_t)(n_syms + 1) / 2);
        }
        uint32_t base = seg < n_syms ? t->syms[seg].start : split; /* keep the unfinished word */
        memmove(t->norm, t->norm + base, filled - base);
        filled -= base;
        split -= base;
        for (uint32_t k = seg; k < n_syms; k++) {
            t->syms[k - seg] = t->syms[k];
            t->syms[k - seg].start -= base;
        }
        n_syms -= seg;
    }
    *o_ = o;
}

/* Length of the longest piece matched whole at p[0..avail) — a control piece when `special`, a
 * byte-level user-defined piece always (a control piece first at equal length) — and its id in *id;
 * 0 if none. A user-defined piece gives the id of the first piece so spelled (lookup). */
static uint32_t whole_at(const elk_tokenizer *t, const uint8_t *p, uint64_t avail, int special, int32_t *id)
{
    int user = t->any_raw_user;
    if (!(t->ctrl_first[p[0] >> 3] & (1u << (p[0] & 7))))
        return 0;
    uint32_t best = 0;
    int best_control = 0;
    for (uint32_t k = 0; k < t->n_long; k++) {  /* longer than MAX_USER_LEN: compared one by one */
        uint32_t i = (uint32_t)t->long_whole[k], len = entry_len(t, i);
        int control = special_type(entry_type(t, i));
        if (!(control ? special : user && raw_user(t, i)) || len > avail || len < best ||
            (len == best && (best_control || !control)) || memcmp(entry_str(t, i), p, len) != 0)
            continue;
        best = len, best_control = control;
        *id = control ? (int32_t)i : lookup(t, p, len);
    }
    if (best)
        return best;
    for (uint32_t n = avail < t->max_ctrl_len ? (uint32_t)avail : t->max_ctrl_len; n > 0; n--) {
        if (special && ((*id = lookup_as(t, p, n, ELK_TOKEN_CONTROL)) >= 0 ||
                        (*id = lookup_as(t, p, n, ELK_TOKEN_UNKNOWN)) >= 0))
            return n;
        int32_t u = user ? lookup_as(t, p, n, ELK_TOKEN_USER_DEFINED) : -1;
        if (u >= 0 && raw_user(t, (uint32_t)u)) {
            *id = lookup(t, p, n);
            return n;
        }
    }
    return 0;
}

/* Byte-level: BPE over one pre-token p[0..n), spelled in GPT-2's byte characters (1 or 2 UTF-8 bytes
 * each). A pre-token longer than the scratch is merged in windows, keeping the tokens of the first
 * half each time, as encode_text does for long words. */
static void encode_pretoken(const elk_tokenizer *t, tok_out *o, const uint8_t *p, uint64_t n)
{
    uint64_t pos = 0;
    uint32_t n_syms = 0, filled = 0;
    for (;;) {
        while (pos < n && n_syms < SEG_SYMS && filled + 2 <= SEG_BYTES) {
            uint32_t c = elk_bl_byte_char(p[pos++]), len = c < 0x80 ? 1u : 2u; /* c < 0x800 */
            if (len == 1)
                t->norm[filled] = (uint8_t)c;
            else
                t->norm[filled] = (uint8_t)(0xC0 | (c >> 6)), t->norm[filled + 1] = (uint8_t)(0x80 | (c & 0x3F));
            t->syms[n_syms++] = (tok_sym){ filled, len, lookup(t, t->norm + filled, len), 0 };
            filled += len;
        }
        if (pos >= n) {
            int32_t whole = (t->flags & ELK_TOKENIZER_FLAG_IGNORE_MERGES) && n_syms == pos
                                ? lookup_as(t, t->norm, filled, ELK_TOKEN_NORMAL) : -1;
            if (whole >= 0) /* ignore_merges: a pre-token that is a piece is that piece */
                emit(o, whole);
            else
                encode_segment(t, o, t->syms, (int32_t)n_syms, (int32_t)n_syms);
            return;
        }
        uint32_t seg = encode_segment(t, o, t->syms, (int32_t)n_syms, (int32_t)(n_syms + 1) / 2);
        /* seg == n_syms: one piece spanned the window past its half; all of it is out */
        uint32_t base = seg < n_syms ? t->syms[seg].start : filled;
        memmove(t->norm, t->norm + base, filled - base);
        filled -= base;
        for (uint32_t k = seg; k < n_syms; k++) {
            t->syms[k - seg] = t->syms[k];
            t->syms[k - seg].start -= base;
        }
        n_syms -= seg;
    }
}

/* Byte-level: text[0..len) split by GPT-2's pattern or Llama 3's (after isolating each digit when the
 * vocabulary says so), each pre-token merged on its own. */
static void encode_bytelevel(const elk_tokenizer *t, tok_out *o, const uint8_t *p, uint64_t len)
{
    int digits = (t->flags & ELK_TOKENIZER_FLAG_SPLIT_DIGITS) != 0;
    uint64_t (*next)(const uint8_t *, uint64_t, uint64_t) =
        (t->flags & ELK_TOKENIZER_FLAG_LLAMA3_SPLIT) ? elk_bl_next_llama3 : elk_bl_next;
    for (uint64_t at = 0; at < len;) {
        uint64_t end = digits ? elk_bl_digit_segment(p, len, at) : len;
        for (uint64_t i = at; i < end;) {
            uint64_t j = next(p + at, end - at, i - at) + at;
            encode_pretoken(t, o, p + i, j - i);
            i = j;
        }
        at = end;
    }
}

static void encode_span(const elk_tokenizer *t, tok_out *o, const uint8_t *p, uint64_t len, int prefix)
{
    if (t->kind == ELK_TOKENIZER_KIND_BYTE_BPE)
        encode_bytelevel(t, o, p, len);
    else
        encode_text(t, o, p, len, prefix);
}

int elk_tokenize_ex(const elk_tokenizer *t, const char *text, uint64_t len, unsigned flags, int32_t *ids,
                    int cap, int *n_out)
{
    if (!t || !n_out || cap < 0 || (!text && len > 0) || (!ids && cap > 0))
        return ELK_E_INVAL;
    const uint8_t *p = (const uint8_t *)text;
    /* NO_PREFIX is about the start of the text; after a special token PREFIX_SEGMENTS decides */
    const int every = (t->flags & ELK_TOKENIZER_FLAG_PREFIX_SEGMENTS) != 0;
    const int prefix = (flags & ELK_TOKENIZE_AFTER_SPECIAL) ? every : !(flags & ELK_TOKENIZE_NO_PREFIX);
    tok_out o = { ids, cap, 0, -1, 0 };
    if ((flags & ELK_TOKENIZE_BOS) && t->bos >= 0)
        emit(&o, t->bos);
    uint64_t start = 0;
    int special = (flags & ELK_TOKENIZE_SPECIAL) != 0;
    if ((special || t->any_raw_user) && (t->max_ctrl_len || t->n_long)) {
        for (uint64_t at = 0; at < len;) {
            int32_t id;
            uint32_t n = whole_at(t, p + at, len - at, special, &id);
            if (!n) {
                at++;
                continue;
            }
            uint64_t from = at, to = at + n;  /* the white space lstrip / rstrip take joins the token */
            uint32_t options = t->n_added ? elk_tok_added_options(t, id) : 0;
            if (options && !elk_tok_added_span(options, p, len, start, &from, &to)) {
                at = to;  /* single_word inside a word: text, and the scan goes on after it */
                continue;
            }
            encode_span(t, &o, p + start, from - start, start == 0 ? prefix : every);
            emit(&o, id);
            at = start = to;
        }
    }
    encode_span(t, &o, p + start, len - start, start == 0 ? prefix : every);
    if ((flags & ELK_TOKENIZE_EOS) && t->eos >= 0)
        emit(&o, t->eos);
    *n_out = o.n;
    return o.overflow || o.n > cap ? ELK_E_RANGE : ELK_OK;
}

int elk_tokenize(const elk_tokenizer *t, const char *text, uint64_t len, int bos, int eos,
                 int32_t *ids, int cap, int *n_out)
{
    unsigned flags = (bos ? ELK_TOKENIZE_BOS : 0u) | (eos ? ELK_TOKENIZE_EOS : 0u);
    return elk_tokenize_ex(t, text, len, flags, ids, cap, n_out);
}
