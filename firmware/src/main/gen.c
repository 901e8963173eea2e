/* Boot a slot (open the image in place, set up tokenizer, model and sampler in board RAM) and run
 * one generation turn: chat template, prompt, sampling loop, streamed pieces and a STATS event.
 * Not here: the decoder numerics (firmware/src/model) or the protocol (serve.c). */
#include "main/fw.h"
#include "model/model.h" /* m->max_batch only: prefill slices follow the model's forward batches */

/* Bump allocation from board RAM: set up once per boot, never freed piecemeal. */
typedef struct ram_cursor {
    uint8_t *p, *end;
} ram_cursor;

static void *ram_take(ram_cursor *c, uint64_t n)
{
    uintptr_t a = ((uintptr_t)c->p + 63) & ~(uintptr_t)63;
    if (a > (uintptr_t)c->end || n > (uint64_t)((uintptr_t)c->end - a))
        return NULL;
    c->p = (uint8_t *)(uintptr_t)(a + n); /* fits: n <= end - a was checked */
    return (void *)a;
}

void elk_fw_unload(elk_fw *fw)
{
    if (fw->npu_backend)
        elk_npu_runner_deinit(&fw->npu);
    fw->npu_backend = NULL;
    fw->model = NULL;
    fw->tok = NULL;
    fw->sampler = NULL;
    fw->running = ELK_PROTO_SLOT_NONE;
    fw->chat_template[0] = 0;
}

static int boot_fail(elk_fw *fw, int rc, const char *what)
{
    elk_fmt(fw->boot_error, sizeof fw->boot_error, "%s: %s", what, elk_strerror(rc));
    elk_fw_unload(fw);
    return rc;
}

static uint64_t gen_clock(void *ctx)
{
    return elk_fw_now(ctx);
}

static void npu_log(void *user, const char *line)
{
    elk_fw_log(user, "%s", line);
}

/* Prefill on the board's NPU when it has one and the image carries an NPU section. Whatever stands in
 * the way leaves the CPU path in charge: the CPU weights are verified and give the exact answer, the
 * NPU only makes the prompt faster, so a refused section is a note in INFO, not a failed boot. */
static void boot_npu(elk_fw *fw, ram_cursor *c, elk_model_opts *opts)
{
    const elk_board *b = fw->b;
    const uint8_t *sd = fw->img.section[ELK_SECTION_NPU].data;
    uint64_t sn = fw->img.section[ELK_SECTION_NPU].size;
    if (!b->npu_kind || !b->npu_kind[0])
        return;  /* no NPU on this board */
    if (!sd || !sn) {
        elk_fmt(fw->npu_note, sizeof fw->npu_note, "image has no NPU section (pack with --npu)");
        return;
    }
    char err[128];
    elk_npu_section sec;
    int rc = elk_npu_section_open(&sec, sd, sn, err);
    if (rc) {
        elk_fmt(fw->npu_note, sizeof fw->npu_note, "refused: %s", err);
        elk_fw_log(fw, "npu: %s; prefill on the CPU", fw->npu_note);
        return;
    }
    if (b->npu_chunk && sec.chunk != b->npu_chunk)
        elk_fw_log(fw, "npu: image chunk %u tokens, board chunk %u: runs the image's", (unsigned)sec.chunk,
                   (unsigned)b->npu_chunk);
    /* a backend the platform registered under the board's npu.kind (a vendor's, docs/npu.md "Plugging
     * in a real NPU"; it keeps its own state: no context), else the freestanding sim */
    const elk_npu_backend *be = elk_npu_find(b->npu_kind);
    void *be_ctx = NULL;
    if (!be || be == &elk_npu_sim_backend) {
        be = &elk_npu_sim_backend;
        be_ctx = &fw->npu_sim;
    }
    uint64_t need = elk_npu_runner_arena_size(sd, sn);
    void *arena = ram_take(c, need);
    fw->npu_sim = (elk_npu_sim_ctx){ .tops = b->npu_tops, .dma_gbs = b->npu_dma_gbs };
    rc = arena ? elk_npu_runner_init(&fw->npu, sd, sn, be, be_ctx, npu_log, fw, arena, need)
               : ELK_E_NOMEM;
    if (rc) {
        elk_fmt(fw->npu_note, sizeof fw->npu_note, "runner not started: %s", elk_strerror(rc));
        elk_fw_log(fw, "npu: %s; prefill on the CPU", fw->npu_note);
        return;
    }
    fw->npu_backend = be;
    opts->npu = be;
    opts->npu_ctx = &fw->npu;
    elk_fw_log(fw, "npu: %s for %s (%u GOPS int8 reached, DMA %u MB/s), %u layers, chunk %u", be->name,
               b->npu_kind, (unsigned)(b->npu_tops * 1e3), (unsigned)(b->npu_dma_gbs * 1e3),
               (unsigned)sec.n_entries, (unsigned)sec.chunk);
}

/* Model, sampler and the decode loop in the RAM after the tokenizer. */
static int boot_model(elk_fw *fw, ram_cursor *c)
{
    const elk_image *img = &fw->img;
    elk_model_opts opts = { 0 };
    opts.exec = fw->b->exec;
    boot_npu(fw, c, &opts);
    uint64_t model_bytes = elk_model_arena_size(img, &opts);
    void *model_arena = ram_take(c, model_bytes);
    if (!model_arena)
        return boot_fail(fw, ELK_E_NOMEM, "model arena");
    int rc = elk_model_init(&fw->model, img, &opts, model_arena, model_bytes);
    if (rc)
        return boot_fail(fw, rc, "model");
    uint32_t vocab = img->config.vocab_size;
    fw->n_ctx = elk_model_n_ctx(fw->model);
    fw->sampler_arena_size = elk_sampler_arena_size(vocab);
    fw->sampler_arena = ram_take(c, fw->sampler_arena_size);
    fw->tokens = ram_take(c, (uint64_t)fw->n_ctx * sizeof(int32_t));
    uint64_t gen_bytes = elk_gen_arena_size(fw->model);
    void *gen_arena = ram_take(c, gen_bytes);
    if (!fw->sampler_arena || !fw->tokens || !gen_arena)
        return boot_fail(fw, ELK_E_NOMEM, "sampler and buffers");
    elk_sampling greedy = { .temperature = 0, .top_k = 0, .top_p = 1, .repeat_penalty = 1 };
    rc = elk_sampler_init(&fw->sampler, vocab, &greedy, fw->sampler_arena, fw->sampler_arena_size);
    if (rc)
        return boot_fail(fw, rc, "sampler");
    rc = elk_gen_init(&fw->gen_loop, fw->model, fw->tok, fw->sampler, gen_clock, fw, gen_arena, gen_bytes);
    return rc ? boot_fail(fw, rc, "decode loop") : ELK_OK;
}

int elk_fw_boot_slot(elk_fw *fw, uint8_t slot)
{
    elk_fw_unload(fw);
    fw->boot_error[0] = 0;
    fw->npu_note[0] = 0;
    if (slot > 1 || !(fw->rec.slot[slot].flags & ELK_SLOT_VALID))
        return boot_fail(fw, ELK_E_STATE, "slot holds no verified image");
    int rc = elk_image_open(&fw->img, fw->b->flash + fw->slot_base[slot], fw->rec.slot[slot].image_size);
    if (rc) {
        elk_fmt(fw->boot_error, sizeof fw->boot_error, "%s", fw->img.error);
        return rc;
    }
    ram_cursor c = { fw->b->ram, fw->b->ram + fw->b->ram_size };
    const elk_image *img = &fw->img;
    const uint8_t *ts = img->section[ELK_SECTION_TOKENIZER].data;
    uint64_t tn = img->section[ELK_SECTION_TOKENIZER].size;
    uint64_t tok_bytes = elk_tokenizer_arena_size(ts, tn);
    void *tok_arena = tok_bytes ? ram_take(&c, tok_bytes) : NULL;
    if (!tok_arena)
        return boot_fail(fw, tok_bytes ? ELK_E_NOMEM : ELK_E_FORMAT, "tokenizer");
    rc = elk_tokenizer_init(&fw->tok, ts, tn, tok_arena, tok_bytes);
    if (rc)
        return boot_fail(fw, rc, "tokenizer");
    if ((rc = boot_model(fw, &c)) != ELK_OK)
        return rc;
    uint32_t tl = 0;
    const char *tpl = elk_image_meta(img, "chat.template", &tl);
    for (uint32_t i = 0; i < sizeof fw->chat_template; i++)
        fw->chat_template[i] = (tpl && i < tl && i + 1 < sizeof fw->chat_template) ? tpl[i] : 0;
    fw->running = slot;
    elk_fw_log(fw, "boot: slot %c, %s, n_ctx %u, kernels %s", 'A' + slot, img->name, (unsigned)fw->n_ctx,
               elk_model_kernels_name(fw->model));
    return ELK_OK;
}

/* ---- prompt ----------------------------------------------------------------------------------- */

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* The text of a turn that is tokenized in one piece, built in fw->text. `len` counts every byte
 * added, also those past `cap` (which are dropped), so a turn that does not fit is seen and refused,
 * never cut. buf NULL, cap 0: only measure. */
typedef struct turn_text {
    char *buf;
    uint32_t cap;
    uint64_t len;
} turn_text;

static void tt_add(turn_text *t, const char *s, uint64_t n)
{
    for (uint64_t i = 0; i < n && t->len + i < t->cap; i++)
        t->buf[t->len + i] = s[i];
    t->len += n;
}

static void tt_adds(turn_text *t, const char *s)
{
    uint32_t n = 0;
    while (s[n])
        n++;
    tt_add(t, s, n);
}

/* Append the ids of text[0..n), tokenized with ELK_TOKENIZE_* flags, to the turn's scratch
 * fw->tokens[*count..n_ctx). */
static int append_ids(elk_fw *fw, const char *text, uint32_t n, unsigned flags, uint32_t *count)
{
    uint32_t at = *count;
    if (at >= fw->n_ctx)
        return ELK_E_RANGE;
    int got = 0;
    int rc = elk_tokenize_ex(fw->tok, text, n, flags, fw->tokens + at, (int)(fw->n_ctx - at), &got);
    *count += (uint32_t)got;  /* on ELK_E_RANGE: what the whole text needs, so STATS can say it */
    return rc;
}

/* Append the ids of text[0..n) (plus BOS / a trailing special id when asked) to the turn's
 * scratch fw->tokens[*count..n_ctx). */
static int append_text(elk_fw *fw, const char *text, uint32_t n, int bos, int special, uint32_t *count)
{
    int rc = append_ids(fw, text, n, bos ? ELK_TOKENIZE_BOS : 0u, count);
    if (rc)
        return rc;
    if (special >= 0) {
        if (*count >= fw->n_ctx)
            return ELK_E_RANGE;
        fw->tokens[(*count)++] = special;
    }
    return ELK_OK;
}

/* Id of the control (special) token spelled exactly `text`, or -1 when the vocabulary has none. */
static int32_t special_id(const elk_fw *fw, const char *text, uint32_t n)
{
    int32_t id[2];
    int got = 0, len = 1;
    if (elk_tokenize_ex(fw->tok, text, n, ELK_TOKENIZE_SPECIAL | ELK_TOKENIZE_NO_PREFIX, id, 2, &got) || got != 1)
        return -1;
    return elk_token_piece(fw->tok, -1, id[0], NULL, 0, &len) == ELK_OK && len == 0 ? id[0] : -1;
}

/* How a turn is wrapped: the image's chat.template, and for ChatML whether the vocabulary holds
 * <|im_start|> / <|im_end|> as special (control) tokens. */
enum { TPL_NONE, TPL_ZEPHYR, TPL_LLAMA2, TPL_CHATML_TEXT, TPL_CHATML_SPECIAL };

static int template_kind(const elk_fw *fw)
{
    const char *t = fw->chat_template;
    if (streq(t, "zephyr"))
        return TPL_ZEPHYR;
    if (streq(t, "llama2"))
        return TPL_LLAMA2;
    if (!streq(t, "chatml"))
        return TPL_NONE;  /* none, or a name this firmware does not know: plain text */
    return special_id(fw, "<|im_end|>", 10) >= 0 && special_id(fw, "<|im_start|>", 12) >= 0 ? TPL_CHATML_SPECIAL
                                                                                           : TPL_CHATML_TEXT;
}

/* The text of a turn, built in one buffer. zephyr, llama2 and ChatML without special markers: the
 * whole wrapped prompt, tokenized in one piece. ChatML with special markers: the system block, then
 * "user\n" and the prompt (the text between <|im_start|> and <|im_end|>, tokenized as one plain text,
 * as a tokenizer that splits the rendered template at its special tokens sees it). ChatML's first turn
 * starts with the image's default system prompt (metadata chat.system, from the checkpoint's chat
 * template) when it has one, as the template does for a conversation without a system message.
 * Returns the system block's length (0: none). */
static uint64_t wrap_text(const elk_fw *fw, int kind, const char *prompt, uint32_t len, int first, turn_text *t)
{
    uint32_t sn = 0;
    const char *sys = elk_image_meta(&fw->img, "chat.system", &sn);
    if (kind == TPL_ZEPHYR) {  /* then </s> as the EOS id and "\n<|assistant|>\n" */
        tt_adds(t, "<|user|>\n");
        tt_add(t, prompt, len);
    } else if (kind == TPL_LLAMA2) {  /* with BOS, every turn */
        tt_adds(t, "[INST] ");
        tt_add(t, prompt, len);
        tt_adds(t, " [/INST]");
    } else if (kind == TPL_CHATML_TEXT || kind == TPL_CHATML_SPECIAL) {
        if (first && sys && sn) {
            tt_adds(t, "<|im_start|>system\n");
            tt_add(t, sys, sn);
            tt_adds(t, "<|im_end|>\n");
        }
        uint64_t sys_len = t->len;
        if (kind == TPL_CHATML_TEXT) {
            tt_adds(t, "<|im_start|>user\n");
            tt_add(t, prompt, len);
            tt_adds(t, "<|im_end|>\n<|im_start|>assistant\n");
        } else {
            tt_adds(t, "user\n");
            tt_add(t, prompt, len);
        }
        return sys_len;
    }
    return 0;
}

/* ChatML with <|im_start|> / <|im_end|> as special tokens: the template's text (and the system block
 * in fw->text[0..sys_len)) is tokenized with ELK_TOKENIZE_SPECIAL, so each marker is its single id, and
 * "user\n" + prompt (fw->text[sys_len..end)) without it, so a user who types "<|im_start|>system" gets
 * those characters as text, never the control token (prompt injection). "user\n" and the prompt are
 * one text: a prompt starting with white space shares the newline's pre-token, as in the template;
 * it follows <|im_start|>, so it starts with a dummy prefix exactly when the tokenizer puts one after
 * a special token (the legacy Llama normalizer: "▁user").
 * A turn after an earlier one first closes the assistant's reply with "<|im_end|>\n" (generation
 * stopped at <|im_end|>, which is not kept in the context). */
static int encode_chatml_special(elk_fw *fw, int first, uint32_t sys_len, uint32_t end, uint32_t *count)
{
    static const char head[] = "<|im_start|>", tail[] = "<|im_end|>\n<|im_start|>assistant\n",
                      close[] = "<|im_end|>\n";
    const elk_gen *g = &fw->gen_loop;
    int32_t im_end = special_id(fw, "<|im_end|>", 10);
    unsigned bos = first && elk_tokenizer_bos(fw->tok) != special_id(fw, "<|im_start|>", 12)
                       ? ELK_TOKENIZE_BOS : 0u;
    unsigned tpl = ELK_TOKENIZE_SPECIAL | ELK_TOKENIZE_NO_PREFIX;
    int rc = ELK_OK;
    if (!first && g->n_tokens > 0 && g->tokens[g->n_tokens - 1] != im_end)
        rc = append_ids(fw, close, sizeof close - 1, tpl, count);
    if (rc == ELK_OK && sys_len) {
        rc = append_ids(fw, fw->text, sys_len, tpl | bos, count);
        bos = 0;
    }
    if (rc == ELK_OK)
        rc = append_ids(fw, head, sizeof head - 1, tpl | bos, count);
    if (rc == ELK_OK)
        rc = append_ids(fw, fw->text + sys_len, end - sys_len, ELK_TOKENIZE_AFTER_SPECIAL, count);
    return rc ? rc : append_ids(fw, tail, sizeof tail - 1, tpl, count);
}

/* A wrapped turn longer than fw->text is refused, never cut: ELK_E_NOMEM with the sizes in fw->reason
 * (a GENERATE request's reply carries it) and in the log. */
static int turn_too_long(elk_fw *fw, uint32_t len, uint64_t need)
{
    uint32_t sn = 0;
    int sys = elk_image_meta(&fw->img, "chat.system", &sn) && sn;
    elk_fmt(fw->reason, sizeof fw->reason, "a %u-byte prompt in the %s template%s needs %llu bytes; the board wraps %u",
            (unsigned)len, fw->chat_template, sys ? " with its system prompt" : "", (unsigned long long)need,
            (unsigned)sizeof fw->text);
    elk_fw_log(fw, "gen: %s", fw->reason);
    return ELK_E_NOMEM;
}

int elk_fw_turn_check(elk_fw *fw, uint32_t len, uint32_t flags)
{
    if ((flags & ELK_GEN_RAW) || !fw->model)
        return ELK_OK;
    int first = (flags & ELK_GEN_RESET_CONTEXT) || fw->gen_loop.n_tokens == 0;
    turn_text t = { NULL, 0, 0 };  /* measure only */
    wrap_text(fw, template_kind(fw), NULL, len, first, &t);
    return t.len <= sizeof fw->text ? ELK_OK : turn_too_long(fw, len, t.len);
}

/* Tokens of one user turn, wrapped in the image's chat template unless raw. */
static int encode_turn(elk_fw *fw, const char *prompt, uint32_t len, int raw, uint32_t *count)
{
    int first = fw->gen_loop.n_tokens == 0;
    int kind = raw ? TPL_NONE : template_kind(fw);
    turn_text t = { fw->text, sizeof fw->text, 0 };
    *count = 0;
    uint32_t sys_len = (uint32_t)wrap_text(fw, kind, prompt, len, first, &t);
    if (t.len > t.cap)
        return turn_too_long(fw, len, t.len);
    uint32_t k = (uint32_t)t.len;
    int rc;
    switch (kind) {
    case TPL_ZEPHYR:  /* <|user|>\n{prompt}</s>\n<|assistant|>\n, </s> as the EOS id */
        rc = append_text(fw, fw->text, k, first, elk_tokenizer_eos(fw->tok), count);
        return rc ? rc : append_text(fw, "\n<|assistant|>\n", 15, 0, -1, count);
    case TPL_LLAMA2:  /* <s>[INST] {prompt} [/INST] for every turn */
        return append_text(fw, fw->text, k, 1, -1, count);
    case TPL_CHATML_TEXT:  /* markers that are not special tokens: the whole turn is text */
        return append_text(fw, fw->text, k, first, -1, count);
    case TPL_CHATML_SPECIAL:
        return encode_chatml_special(fw, first, sys_len, k, count);
    default:
        return append_text(fw, prompt, len, first, -1, count);  /* raw, none or unknown: plain text */
    }
}

/* ---- the generation loop ---------------------------------------------------------------------- */

/* Send the text gathered so far as one PIECE (waits for the event in flight first). */
static int flush_pieces(elk_fw *fw)
{
    int rc = elk_fw_event_wait(fw);
    if (fw->drop_stats)  /* a new session's HELLO came in the wait: this reply's text is nobody's */
        fw->pieces_len = 0;
    if (rc == ELK_OK && fw->pieces_len) {
        rc = elk_fw_event_start(fw, ELK_EVENT_PIECE, fw->pieces, fw->pieces_len);
        fw->pieces_len = 0;
    }
    return rc;
}

/* Queue a token's text; it leaves at once when no event is in flight, else with the next ones. The
 * model keeps generating while the line carries the previous piece. len <= FW_PIECES_MAX (emit_text). */
static int emit_piece(elk_fw *fw, const char *piece, int len)
{
    if (len <= 0)
        return ELK_OK;
    if (fw->console_gen) {
        elk_fw_write_text(fw, piece, (uint32_t)len);
        return elk_fw_poll(fw, 0) < 0 ? ELK_E_IO : ELK_OK;  /* Ctrl-C reaches the console here */
    }
    int rc = ELK_OK;
    if (fw->pieces_len + (uint32_t)len > sizeof fw->pieces)
        rc = flush_pieces(fw);
    if (rc)
        return rc;
    for (int i = 0; i < len; i++)
        fw->pieces[fw->pieces_len++] = piece[i];
    if (elk_fw_poll(fw, 0) < 0)  /* EACKs, NAKs and ABORT arrive here */
        return ELK_E_IO;
    if ((rc = elk_fw_event_service(fw)) != ELK_OK)
        return rc;
    return fw->event_pending ? ELK_OK : flush_pieces(fw);
}

/* A token's text (whole UTF-8 characters, up to ELK_GEN_TEXT_CAP bytes) in parts that fit fw->pieces, each
 * cut before a character's lead byte so every PIECE event is UTF-8 on its own. */
static int emit_text(elk_fw *fw, const char *text, int len)
{
    int rc = ELK_OK;
    while (rc == ELK_OK && len > 0) {
        int k = len;
        if (k > FW_PIECES_MAX) {
            k = FW_PIECES_MAX;
            while (k > FW_PIECES_MAX - 4 && ((uint8_t)text[k] & 0xC0u) == 0x80u)  /* text[k] continues one */
                k--;
        }
        rc = emit_piece(fw, text, k);
        text += k, len -= k;
    }
    return rc;
}

typedef struct gen_stats {
    uint32_t stop, prompt_tokens, gen_tokens, ttft_us, total_us;
    int status;
    uint32_t npu_us, npu_chunks;        /* this turn's simulated NPU time and chunk calls */
} gen_stats;

static void send_stats(elk_fw *fw, const gen_stats *s)
{
    uint8_t p[40];
    uint32_t off = 0;
    off = elk_put8(p, off, sizeof p, s->stop);
    off = elk_put_bytes(p, off, sizeof p, "\0\0\0", 3);
    off = elk_put32(p, off, sizeof p, s->prompt_tokens);
    off = elk_put32(p, off, sizeof p, s->gen_tokens);
    off = elk_put32(p, off, sizeof p, s->ttft_us);
    off = elk_put32(p, off, sizeof p, s->total_us);
    off = elk_put32(p, off, sizeof p, (uint32_t)fw->gen_loop.n_tokens);
    off = elk_put32(p, off, sizeof p, fw->n_ctx);
    off = elk_put32(p, off, sizeof p, (uint32_t)s->status);
    off = elk_put32(p, off, sizeof p, s->npu_us);      /* appended in v1: older hosts read 32 bytes */
    off = elk_put32(p, off, sizeof p, s->npu_chunks);
    if (!fw->console_gen && !fw->drop_stats)
        elk_fw_send_event(fw, ELK_EVENT_STATS, p, off);
}

static uint32_t stop_reason(int gen_stop)
{
    switch (gen_stop) {
    case ELK_GEN_EOS: return ELK_STOP_EOS;
    case ELK_GEN_CONTEXT_FULL: return ELK_STOP_CONTEXT_FULL;
    default: return ELK_STOP_MAX_TOKENS;
    }
}

/* ---- prefill in slices -------------------------------------------------------------------------- */

/* PROGRESS: u32 prompt tokens of this turn prefilled so far, u32 the turn's prompt tokens. Sent only
 * when no event is in flight (a slow line skips reports, it never stalls the prefill). */
static void send_progress(elk_fw *fw, uint32_t done, uint32_t total, uint64_t *last_us)
{
    uint64_t now = elk_fw_now(fw);
    if (fw->event_pending || now - *last_us < (uint64_t)ELK_PROTO_PROGRESS_MIN_MS * 1000)
        return;
    uint8_t p[8];
    uint32_t off = elk_put32(p, 0, sizeof p, done);
    off = elk_put32(p, off, sizeof p, total);
    if (elk_fw_event_start(fw, ELK_EVENT_PROGRESS, p, off) == ELK_OK)
        *last_us = now;
}

/* Between two slices: read the line (EACKs, ABORT, a new session's HELLO, the console's Ctrl-C) and
 * resend an unacknowledged PROGRESS. 1 when the turn must stop: aborted, the host gone, the line dead. */
static int prefill_stopped(elk_fw *fw)
{
    if (elk_fw_poll(fw, 0) < 0)
        return 1;
    if (!fw->console_gen && elk_fw_event_service(fw) != ELK_OK)
        return 1;
    return fw->abort != 0;
}

/* elk_gen_begin for a turn's n prompt ids, run as several begins of whole forward batches (the slices
 * start where one forward call of the whole prompt would start its batches, so the numbers are the
 * same) with the line read between them; `report`: PROGRESS events (GENERATE flag PROGRESS). Returns
 * ELK_OK, a negative code, or 1 when the prefill was stopped (ABORT, a new session's HELLO, Ctrl-C on
 * the console, the host gone); stopped or failed, the context is as it was before the turn. */
static int prefill(elk_fw *fw, const int32_t *ids, uint32_t n, uint32_t max_new, int report)
{
    elk_gen *g = &fw->gen_loop;
    int n_tokens0 = g->n_tokens, n_cached0 = g->n_cached;
    uint32_t batch = fw->model->max_batch ? fw->model->max_batch : 64;
    uint32_t pending = (uint32_t)(g->n_tokens - g->n_cached);  /* the last reply's final token, not yet run */
    if ((uint64_t)g->n_tokens + n + (max_new > 0) > fw->n_ctx)
        return ELK_E_RANGE;  /* checked for the whole turn before any slice runs */
    uint64_t t_begin = 0, last_us = elk_fw_now(fw);
    uint32_t done = 0;
    while (pending + n - done > batch) {
        uint32_t k = batch - (done ? 0 : pending);  /* the first slice also runs the pending token */
        int rc = elk_gen_begin(g, ids + done, (int)k, 0);
        if (!done)
            t_begin = g->t_begin;
        done += k;
        if (rc == ELK_OK)  /* first the line: the last report's EACK came in during this batch */
            rc = prefill_stopped(fw);
        if (rc == ELK_OK && report)
            send_progress(fw, done, n, &last_us);
        if (rc) {
            g->n_tokens = n_tokens0, g->n_cached = n_cached0;
            return rc;
        }
    }
    int rc = elk_gen_begin(g, ids + done, (int)(n - done), (int)max_new);
    if (rc) {
        g->n_tokens = n_tokens0, g->n_cached = n_cached0;
        return rc;
    }
    if (done) {  /* the turn's timing and prompt count, as one begin would leave them */
        g->t_begin = t_begin;
        g->n_prompt = (int)(n + pending);
    }
    return ELK_OK;
}

/* Sample until the runtime's loop stops, the host aborts or the link dies. */
static int sample_loop(elk_fw *fw, uint64_t t0, gen_stats *st)
{
    for (;;) {
        int32_t id;
        const char *text = NULL;
        int len = 0;
        int r = elk_gen_next_text(&fw->gen_loop, &id, &text, &len);
        if (r < 0)
            return r;
        if (r == 1 && st->gen_tokens++ == 0)
            st->ttft_us = (uint32_t)(elk_fw_now(fw) - t0);
        int rc = emit_text(fw, text, len);  /* at r == 0: what the stream still held */
        if (r == 0 && rc != ELK_E_TIMEOUT && rc != ELK_E_IO) {
            st->stop = stop_reason(fw->gen_loop.stop);
            return ELK_OK;
        }
        if (rc == ELK_E_TIMEOUT || rc == ELK_E_IO || fw->abort) {
            st->stop = ELK_STOP_ABORTED;
            return ELK_OK;
        }
    }
}

int elk_fw_generate(elk_fw *fw, const char *prompt, uint32_t len, const elk_fw_gen_params *gp)
{
    gen_stats st = { .stop = ELK_STOP_ERROR };
    uint64_t t0 = elk_fw_now(fw);
    fw->generating = 1;
    fw->abort = 0;
    fw->drop_stats = 0;
    if (gp->flags & ELK_GEN_RESET_CONTEXT)
        elk_gen_reset(&fw->gen_loop);
    uint32_t n = 0;
    int rc = elk_sampler_init(&fw->sampler, fw->img.config.vocab_size, &gp->sampling, fw->sampler_arena,
                              fw->sampler_arena_size);
    fw->gen_loop.sampler = fw->sampler;
    if (rc == ELK_OK)
        rc = encode_turn(fw, prompt, len, (gp->flags & ELK_GEN_RAW) != 0, &n);
    st.prompt_tokens = fw->turn_tokens = n;
    uint32_t max_new = gp->max_tokens < fw->n_ctx ? gp->max_tokens : fw->n_ctx;  /* "no limit" = the context */
    elk_npu_stats npu0 = fw->npu.stats;
    if (rc == ELK_OK)
        rc = prefill(fw, fw->tokens, n, max_new, !fw->console_gen && (gp->flags & ELK_GEN_PROGRESS));
    if (rc == 1) {  /* stopped during the prefill: the prompt was not taken in */
        st.stop = ELK_STOP_ABORTED;
        rc = ELK_OK;
    }
    if (fw->npu_backend) {  /* prefill is the only batched call: the NPU's share is all in there */
        st.npu_us = (uint32_t)((fw->npu.stats.npu_seconds - npu0.npu_seconds) * 1e6 + 0.5);
        st.npu_chunks = (uint32_t)(fw->npu.stats.chunks - npu0.chunks);
    }
    if (rc == ELK_OK && st.stop != ELK_STOP_ABORTED) {
        /* plain text (raw, or no template) continues the prompt's text: its ids go into the stream
         * first; a templated reply is decoded on its own (no dummy-prefix space at its start) */
        int plain = (gp->flags & ELK_GEN_RAW) || template_kind(fw) == TPL_NONE;
        rc = elk_gen_text_begin(&fw->gen_loop, fw->tokens, plain ? (int)n : 0);
    }
    if (rc == ELK_OK && st.stop != ELK_STOP_ABORTED)
        rc = sample_loop(fw, t0, &st);
    st.status = rc;
    if (rc == ELK_E_RANGE)
        st.stop = ELK_STOP_CONTEXT_FULL;
    else if (rc)
        st.stop = ELK_STOP_ERROR;
    if (!fw->drop_stats && !fw->console_gen) {
        int frc = flush_pieces(fw);  /* text still queued behind the last event */
        if (frc == ELK_OK)
            frc = elk_fw_event_wait(fw);
        /* the host stopped acknowledging (stalled, gone): it lacks the end of the reply, so STATS must
         * not say the reply ended whole, whatever ended the generation */
        if ((frc == ELK_E_TIMEOUT || frc == ELK_E_IO) && st.stop != ELK_STOP_ERROR)
            st.stop = ELK_STOP_ABORTED;
    }
    fw->pieces_len = 0;
    st.total_us = (uint32_t)(elk_fw_now(fw) - t0);
    /* the turn is over before STATS goes out: frames that arrive with its EACK are new commands */
    fw->generating = 0;
    send_stats(fw, &st);
    return rc;
}
