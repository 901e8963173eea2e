/* libelk's host API: opaque-handle functions over the core for the Python binding (cffi ABI mode)
 * and the elk-run program. Only plain ints, floats, strings and arrays cross this boundary, so no
 * struct layout is shared with Python. Not for firmware: it mallocs and mmaps. Every int-returning
 * function returns ELK_OK or a negative ELK_E_* code; elk_host_error(h) then says what failed. */
#ifndef ELK_HOST_API_H
#define ELK_HOST_API_H

#include <stdint.h>

typedef struct elk_host elk_host;

/* Map the image at `path` read-only, validate it, build model, tokenizer and generation state in
 * one malloc'd arena. n_ctx 0 = the image's seq_len; n_threads <= 0 = all CPUs (1 = serial);
 * kernels NULL or "" = best for this CPU, else a table name ("ref", "avx2", ...). On failure *out
 * is NULL and err (cap bytes) holds the reason. */
int elk_host_open(const char *path, uint32_t n_ctx, int n_threads, const char *kernels,
                  elk_host **out, char *err, int err_cap);
void elk_host_close(elk_host *h);

/* The last failure's detail (never NULL; "" when none). */
const char *elk_host_error(const elk_host *h);

/* Config as integers, in this order (fills min(n, 15)): dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size, seq_len, head_dim, model_flags, n_ctx, bos_id, eos_id, max_batch,
 * n_threads, security_counter. Returns how many were written. */
int elk_host_config(const elk_host *h, int64_t *out, int n);
/* rope_theta, norm_eps (fills min(n, 2)). */
int elk_host_config_f(const elk_host *h, double *out, int n);
const char *elk_host_name(const elk_host *h);
const char *elk_host_kernels(const elk_host *h);
/* Metadata value (not NUL-terminated, *len bytes) or NULL. */
const char *elk_host_meta(const elk_host *h, const char *key, uint32_t *len);
/* Hash the payload against the header: ELK_OK or ELK_E_HASH. */
int elk_host_verify(elk_host *h);

/* Tokenizer: see elk_tokenize / elk_token_piece in elk/elk.h. */
int elk_host_tokenize(elk_host *h, const char *text, uint64_t len, int bos, int eos, int32_t *ids,
                      int cap, int *n_out);
int elk_host_piece(elk_host *h, int prev, int id, char *buf, int cap, int *len);

/* Run ids[0..n) at positions pos.. (any n: split into max_batch chunks). logits: n x vocab when
 * all != 0, else vocab floats for the last id. Shares the KV cache with generation, so it ends
 * any generation context. ELK_E_RANGE when pos + n exceeds n_ctx. */
int elk_host_forward(elk_host *h, const int32_t *ids, int n, int pos, float *logits, int all);

/* Start a generation turn: sampler settings, then prefill ids (appended to the current context
 * when keep_context, else from position 0). temperature 0 = greedy; top_k 0 = off; top_p 1 = off;
 * repeat_penalty 1 = off over the last repeat_last_n ids (0 = all). ELK_E_RANGE when the prompt
 * does not fit the context. */
int elk_host_gen_begin(elk_host *h, const int32_t *ids, int n, int max_new, float temperature,
                       int top_k, float top_p, float repeat_penalty, int repeat_last_n, uint64_t seed,
                       int keep_context);
/* 1: one more token (*id, text in buf[0..*len)); 0: stopped; < 0: error. */
int elk_host_gen_next(elk_host *h, int32_t *id, char *buf, int cap, int *len);
/* The turn's text through the token stream (elk_gen_text_begin / elk_gen_next_text in elk/elk.h): after
 * elk_host_gen_begin, text_begin reads ids[0..n) (a continuation's prompt; none for a reply) with their
 * text dropped; next_text is gen_next with the stream's text (whole UTF-8 characters, possibly none) in
 * buf, cap >= ELK_GEN_TEXT_CAP (4096); returning 0 the first time, buf holds the stream's last bytes. */
int elk_host_gen_text_begin(elk_host *h, const int32_t *ids, int n);
int elk_host_gen_next_text(elk_host *h, int32_t *id, char *buf, int cap, int *len);
/* Text of ids[0..n) as the decode of the whole sequence (elk_token_stream_*): into buf[0..cap), *len the
 * full length; ELK_E_RANGE when cap is too small (call again with *len bytes). */
int elk_host_decode(elk_host *h, const int32_t *ids, int n, char *buf, int cap, int *len);
/* Timing of the current turn (fills min(n, 7)): n_prompt, prefill seconds, time to first token
 * (seconds), n_generated, decode seconds (first to last token), decode tokens/s, stop reason
 * (enum elk_gen_stop). */
int elk_host_gen_stats(const elk_host *h, double *out, int n);

/* The model behind the handle, for platform code that attaches hooks to it (npu_host.c). */
struct elk_model *elk_host_model(elk_host *h);

#endif /* ELK_HOST_API_H */
