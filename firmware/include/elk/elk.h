/* elk runtime public API: open an image in place, run the decoder, tokenize, sample.
 * The core is freestanding C11: no malloc after init, no stdio; the caller owns every buffer
 * (one arena sized by elk_model_arena_size). Platform code (files, threads, UART) lives in
 * firmware/platform/. Every function returning int returns ELK_OK (0) or a negative ELK_E_* code. */
#ifndef ELK_H
#define ELK_H

#include <stddef.h>
#include <stdint.h>

#include "elk/spec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Short text for an ELK_* status code (never NULL). */
const char *elk_strerror(int status);

/* =============================================================================================
 * Image: a parsed view of an image that stays in the caller's memory (flash, mmap). */

typedef struct elk_config {
    uint32_t arch, dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    float rope_theta, norm_eps;
    uint32_t head_dim, model_flags;
} elk_config;

typedef struct elk_tensor {
    const void *data;   /* in place in the image */
    uint64_t size;      /* bytes */
    uint32_t type;      /* enum elk_type */
    uint32_t rows, cols;
    uint16_t role, layer;
    const char *name;   /* NUL-terminated, in place */
} elk_tensor;

typedef struct elk_image {
    const uint8_t *base; /* first byte of the image */
    uint64_t size;       /* image_size (header + payload) */
    uint64_t file_size;  /* bytes available at base (may include a trailer) */
    uint32_t version, flags, alignment, security_counter;
    elk_config config;
    char name[ELK_MODEL_NAME_MAX];
    struct { const uint8_t *data; uint64_t size; } section[8]; /* indexed by ELK_SECTION_* kind */
    uint32_t n_tensors;
    const uint8_t *payload_sha256;
    char error[128];     /* on failure: which part is wrong, e.g. "tensor 12 (blk.1.attn_q.weight): offset outside TENSOR_DATA" */
} elk_image;

/* Parse and bounds-check the header, section table, tensor table and tokenizer table of the image
 * at data[0..size). Checks the header CRC but not the payload hash (see elk_image_verify).
 * Returns ELK_OK, ELK_E_FORMAT, ELK_E_VERSION, ELK_E_CRC, ELK_E_BOUNDS, ELK_E_UNSUPPORTED,
 * ELK_E_MISSING or ELK_E_RANGE; img->error says what failed. */
int elk_image_open(elk_image *img, const void *data, uint64_t size);

/* Hash the payload and compare with the header. ELK_OK or ELK_E_HASH. */
int elk_image_verify(elk_image *img);

/* Tensor i of the table (0 <= i < n_tensors), or the tensor with (role, layer). ELK_E_MISSING if absent. */
int elk_image_tensor(const elk_image *img, uint32_t i, elk_tensor *out);
int elk_image_find(const elk_image *img, int role, int layer, elk_tensor *out);

/* Metadata value for key (not NUL-terminated; *len set), or NULL. */
const char *elk_image_meta(const elk_image *img, const char *key, uint32_t *len);

/* =============================================================================================
 * Execution hooks supplied by the platform: a thread pool the model splits work over. */

typedef void (*elk_task_fn)(void *ctx, int index, int count);
typedef struct elk_exec {
    /* Run fn(ctx, i, n) for i in [0, n) and return when all are done. (optional) NULL: serial. */
    void (*parallel_for)(void *pool, elk_task_fn fn, void *ctx, int n);
    void *pool;
    int n_threads; /* how many tasks to split work into; <= 1 means serial */
} elk_exec;

struct elk_kernels;
struct elk_npu_backend;

/* =============================================================================================
 * Model: decoder state (KV cache, activations) in one caller-provided arena. */

typedef struct elk_model elk_model;

typedef struct elk_model_opts {
    uint32_t n_ctx;                       /* context length; 0 = config.seq_len */
    uint32_t max_batch;                   /* most tokens per forward call; 0 = 64 */
    const struct elk_kernels *kernels;    /* NULL = elk_kernels_select(elk_cpu_features(), NULL) */
    elk_exec exec;                        /* zeroed = serial */
    const struct elk_npu_backend *npu;    /* (optional) NULL = CPU only */
    void *npu_ctx;
} elk_model_opts;

/* Bytes of arena elk_model_init needs for these options (including the elk_model itself). */
uint64_t elk_model_arena_size(const elk_image *img, const elk_model_opts *opts);

/* Build a model over an opened image. The image memory and the arena must outlive the model.
 * ELK_E_NOMEM if the arena is too small, ELK_E_MISSING / ELK_E_UNSUPPORTED for bad tensors. */
int elk_model_init(elk_model **out, const elk_image *img, const elk_model_opts *opts,
                   void *arena, uint64_t arena_size);

/* Run tokens[0..n) at positions pos..pos+n-1 (the cache must hold pos tokens already).
 * logits: if all_logits, n × vocab floats (one row per position), else vocab floats for the last.
 * ELK_E_RANGE if pos + n exceeds n_ctx. */
int elk_model_forward(elk_model *m, const int32_t *tokens, int n, int pos, float *logits, int all_logits);

const elk_config *elk_model_config(const elk_model *m);
uint32_t elk_model_n_ctx(const elk_model *m);
const char *elk_model_kernels_name(const elk_model *m);

/* =============================================================================================
 * Tokenizer: SentencePiece-compatible BPE with byte fallback, over the image's TOKENIZER section. */

typedef struct elk_tokenizer elk_tokenizer;

/* The tokenizer reads the TOKENIZER section bytes in place (img->section[ELK_SECTION_TOKENIZER]),
 * so it can be tested without a whole image. Arena: lookup tables built at init.
 * elk_tokenizer_arena_size returns 0 when the section is malformed. */
uint64_t elk_tokenizer_arena_size(const void *section, uint64_t size);
int elk_tokenizer_init(elk_tokenizer **out, const void *section, uint64_t size, void *arena,
                       uint64_t arena_size);

/* Encode text[0..len) (UTF-8; invalid bytes use byte fallback) into ids; add BOS/EOS on request.
 * Writes at most cap ids and sets *n_out to the number the full encoding needs;
 * ELK_E_RANGE when cap is too small (ids[0..cap) are still filled). */
int elk_tokenize(const elk_tokenizer *t, const char *text, uint64_t len, int bos, int eos,
                 int32_t *ids, int cap, int *n_out);

/* elk_tokenize with flags. ELK_TOKENIZE_SPECIAL: the text of a control piece ("<|im_start|>", "</s>")
 * becomes that piece's id (longest match first); for template text a program writes, never for what a
 * user typed (docs/tokenizer.md). ELK_TOKENIZE_NO_PREFIX: no dummy prefix (the text continues earlier
 * text). With SPECIAL the dummy prefix applies only at the start of the whole text. */
#define ELK_TOKENIZE_BOS 1u
#define ELK_TOKENIZE_EOS 2u
#define ELK_TOKENIZE_SPECIAL 4u
#define ELK_TOKENIZE_NO_PREFIX 8u
/* The text follows a special token of earlier text (a chat template's user line after <|im_start|>):
 * its start gets the dummy prefix exactly when the tokenizer prefixes text after a special token
 * (ELK_TOKENIZER_FLAG_PREFIX_SEGMENTS, the legacy Llama normalizer); overrides NO_PREFIX. */
#define ELK_TOKENIZE_AFTER_SPECIAL 16u
int elk_tokenize_ex(const elk_tokenizer *t, const char *text, uint64_t len, unsigned flags, int32_t *ids,
                    int cap, int *n_out);

/* Text of token `id` as it appears after token `prev` (drops the leading space after BOS,
 * turns byte tokens into raw bytes). Writes at most cap bytes, sets *len. Control tokens give "". */
int elk_token_piece(const elk_tokenizer *t, int prev, int id, char *buf, int cap, int *len);
/* flags ELK_PIECE_SPECIAL: a control token gives its text as stored ("<|im_end|>") instead of "". */
#define ELK_PIECE_SPECIAL 1u
int elk_token_piece_ex(const elk_tokenizer *t, int prev, int id, unsigned flags, char *buf, int cap, int *len);

/* Streaming decode of a whole id sequence (generation output): begin, then piece for each id in order,
 * then end. The text written so far is always whole UTF-8 characters, and all of it is the decode of
 * the whole sequence as sentencepiece (tokenizers, for tokenizer.json imports) decodes it: the dummy
 * prefix dropped at the start of the sequence only, byte-fallback runs held until they end (invalid
 * bytes: U+FFFD), control tokens "" unless ELK_PIECE_SPECIAL (docs/tokenizer.md, "Streaming decode").
 * ELK_E_RANGE: id out of range, or cap too small (*len = the bytes needed; the state is unchanged). */
#define ELK_TOKEN_STREAM_HOLD 64
typedef struct elk_token_stream {
    uint32_t started, bad, n_run;          /* internal */
    uint8_t run[64];                       /* ELK_TOKEN_STREAM_HOLD byte pieces held (a run, or an
                                            * unfinished character); a literal for cffi's cdef */
} elk_token_stream;
void elk_token_stream_begin(elk_token_stream *s);
int elk_token_stream_piece(const elk_tokenizer *t, elk_token_stream *s, int id, unsigned flags, char *buf, int cap,
                           int *len);
int elk_token_stream_end(const elk_tokenizer *t, elk_token_stream *s, char *buf, int cap, int *len);

int elk_tokenizer_bos(const elk_tokenizer *t);
int elk_tokenizer_eos(const elk_tokenizer *t);
/* 1 if generation stops at id: eos_id or an id of the section's stop list (<|im_end|>, <|eot_id|>). */
int elk_tokenizer_is_stop(const elk_tokenizer *t, int id);
/* The stop ids (eos_id first, each once) into ids[0..cap); returns how many there are, or ELK_E_INVAL. */
int elk_tokenizer_stop_ids(const elk_tokenizer *t, int32_t *ids, int cap);

/* =============================================================================================
 * Sampler: greedy, temperature, top-k, top-p, repetition penalty; xorshift RNG from a seed. */

typedef struct elk_sampling {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off */
    float repeat_penalty;     /* 1 = off; applied to the last repeat_last_n tokens */
    int repeat_last_n;
    uint64_t seed;
} elk_sampling;

typedef struct elk_sampler elk_sampler;

uint64_t elk_sampler_arena_size(uint32_t vocab_size);
int elk_sampler_init(elk_sampler **out, uint32_t vocab_size, const elk_sampling *params,
                     void *arena, uint64_t arena_size);
/* Pick the next token from logits (modified in place). history: the recent tokens (for the penalty). */
int elk_sampler_sample(elk_sampler *s, float *logits, const int32_t *history, int n_history);

/* =============================================================================================
 * Generation loop shared by the host runtime and the firmware: prefill a prompt in batches, then
 * forward one token, sample, and turn it into text. The context persists across elk_gen_begin
 * calls (a chat appends each turn) until elk_gen_reset. Caller storage; arena for ids + logits. */

typedef uint64_t (*elk_clock_fn)(void *ctx); /* monotonic time in microseconds (optional) */

enum elk_gen_stop {
    ELK_GEN_RUNNING = 0,
    ELK_GEN_EOS = 1,          /* the model produced EOS (or BOS: a new sequence) */
    ELK_GEN_MAX_TOKENS = 2,   /* max_new tokens produced */
    ELK_GEN_CONTEXT_FULL = 3, /* n_ctx tokens in the context */
};

typedef struct elk_gen {
    elk_model *model;
    const elk_tokenizer *tok;  /* (optional) NULL: ids only, no text pieces */
    elk_sampler *sampler;      /* may be replaced between turns */
    elk_clock_fn clock;        /* (optional) NULL: no timing */
    void *clock_ctx;
    int32_t *tokens;           /* (n_ctx) the context so far */
    float *logits;             /* (vocab) logits after the last forward */
    int n_tokens;              /* ids in tokens[] */
    int n_cached;              /* of those, how many are in the KV cache */
    int max_new, n_new, stop;  /* this turn: limit, produced, enum elk_gen_stop */
    /* Timing of this turn (microseconds of `clock`): prefill, first and last sampled token. */
    int n_prompt;
    uint64_t t_begin, t_prefilled, t_first, t_last;
    /* The turn's text stream (elk_gen_text_begin, elk_gen_next_text): appended, older callers of
     * elk_gen_next never touch it; here, not in the arena, so elk_gen_arena_size is what it was. */
    elk_token_stream text_stream;
    int text_ended;            /* the stream's held bytes were given out (the turn stopped) */
    char text[4096];           /* ELK_GEN_TEXT_CAP: the last elk_gen_next_text call's text */
} elk_gen;

uint64_t elk_gen_arena_size(const elk_model *m);
int elk_gen_init(elk_gen *g, elk_model *m, const elk_tokenizer *tok, elk_sampler *s,
                 elk_clock_fn clock, void *clock_ctx, void *arena, uint64_t arena_size);
/* Forget the context: the next begin starts at position 0. */
void elk_gen_reset(elk_gen *g);
/* Append ids[0..n) to the context and prefill them (in max_batch chunks); at most max_new tokens
 * will follow. The context must hold the tokens already in it, the n new ones and, when max_new > 0,
 * one free position for the first generated token: ELK_E_RANGE otherwise (nothing is changed then).
 * Generation stops when the context is full (g->stop = ELK_GEN_CONTEXT_FULL). */
int elk_gen_begin(elk_gen *g, const int32_t *ids, int n, int max_new);
/* Produce the next token: 1 with *id set and its text in piece[0..*len) (cap bytes at most;
 * piece/len may be NULL), 0 when the turn has stopped (g->stop says why), or a negative code. */
int elk_gen_next(elk_gen *g, int32_t *id, char *piece, int cap, int *len);

/* Streamed text of a turn (docs/runtime.md "Generated text"): the text of the generated ids as the decode
 * of the whole sequence gives it (elk_token_stream_*), whole UTF-8 characters in every call.
 * elk_gen_text_begin, after elk_gen_begin: ids[0..n) are read into the stream first and their text dropped;
 * a continuation passes its prompt ids (" there" after "Once upon a time" keeps its space), a chat reply
 * passes none (n = 0: the reply is decoded on its own, the default after elk_gen_begin). The prompt's text
 * counts as complete: a byte run at its end is not joined with generated byte pieces. */
int elk_gen_text_begin(elk_gen *g, const int32_t *ids, int n);
/* elk_gen_next with the stream's text: *text points at *len bytes in the loop's arena (at most
 * ELK_GEN_TEXT_CAP = 4096), valid until the next call; a byte-fallback character split across tokens comes out
 * whole with its last byte. Returning 0 (the turn stopped), the first time: what the stream still held.
 * ELK_E_RANGE: a token's text does not fit ELK_GEN_TEXT_CAP (nothing taken). */
#define ELK_GEN_TEXT_CAP ((int)sizeof(((elk_gen *)0)->text))
int elk_gen_next_text(elk_gen *g, int32_t *id, const char **text, int *len);

#ifdef __cplusplus
}
#endif
#endif /* ELK_H */
