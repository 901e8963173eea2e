/* Board firmware core (freestanding): boot record and A/B slots, the protocol server, generation
 * and the text console, over a board interface the platform fills in (UART, flash, clock, RAM).
 * Not here: any OS call; firmware/platform/<name>/board_*.c implement elk_board. */
#ifndef ELK_FW_H
#define ELK_FW_H

#include <stdint.h>

#include "elk/elk.h"
#include "proto/proto.h"
#include "util/util.h"
#include "trust/trust.h"
#include "elk/npu.h"

#define ELK_FW_VERSION "elk-fw 0.1.0"

/* What the platform gives the firmware. Every function returns 0 or a negative ELK_E_* code. */
typedef struct elk_board {
    const char *name;
    /* UART: read/write as in elk_proto_io; set_baud changes the line rate (optional, NULL = fixed). */
    elk_proto_io uart;
    int (*uart_set_baud)(void *ctx, uint32_t baud);
    uint32_t baud, max_baud;           /* bits/s; baud 0 = an unthrottled emulated line */
    /* Flash, memory-mapped for reading; erase sets bytes to 0xFF, write programs them, sync makes
     * everything written so far durable (power-loss safe). */
    const uint8_t *flash;
    uint64_t flash_size;
    uint32_t erase_block;              /* bytes; offsets passed to erase are multiples of it */
    int (*flash_erase)(void *ctx, uint64_t off, uint64_t len);
    int (*flash_write)(void *ctx, uint64_t off, const void *data, uint64_t len);
    int (*flash_sync)(void *ctx);
    void *flash_ctx;
    uint64_t (*now_us)(void *ctx);     /* monotonic microseconds */
    void *clock_ctx;
    void (*log)(void *ctx, const char *line); /* (optional) diagnostics off the serial line */
    void *log_ctx;
    uint8_t *ram;                      /* working memory for the model, tokenizer and sampler */
    uint64_t ram_size;
    elk_exec exec;                     /* (optional) threads for the model */
    /* (optional) the board's NPU, from its board file. npu_kind NULL or "" = none: prefill on the CPU.
     * With an NPU and an image carrying an NPU section, prompt prefill runs on the freestanding `sim`
     * backend (docs/npu.md), whose cost model charges these figures; decode stays on the CPU. */
    const char *npu_kind;              /* e.g. "rknpu2" (reported, not interpreted) */
    double npu_tops;                   /* int8 tera-ops/s reached: peak x efficiency */
    double npu_dma_gbs;                /* weight/activation transfer bandwidth, GB/s */
    uint32_t npu_chunk;                /* the board's prefill chunk in tokens (0 = unknown) */
    /* (optional) the board's random generator: n bytes into out, 0 or ELK_E_*. NULL = the board has none:
     * provisioning challenges then come from a counter in flash and uid (docs/trust.md). */
    int (*random)(void *ctx, uint8_t *out, uint32_t n);
    void *random_ctx;
    const uint8_t *uid;                /* (optional) bytes unique to this board (chip serial), uid_len */
    uint32_t uid_len;
} elk_board;

/* Serve forever: boot the committed slot, answer frames and the console. Returns only when the
 * UART fails (a negative ELK_E_* code). */
int elk_fw_run(const elk_board *board);

/* ---- internals shared by the files of firmware/src/main ------------------------------------ */

/* Boot record slot descriptor and record (docs/protocol.md "Flash layout"). */
typedef struct elk_fw_slot_desc {
    uint32_t flags;          /* ELK_SLOT_VALID */
    uint64_t image_size;
    uint8_t sha256[32];
    char name[ELK_PROTO_SLOT_NAME_MAX];
} elk_fw_slot_desc;

typedef struct elk_fw_record {
    uint32_t seq;
    uint8_t active, prev;    /* slot index or ELK_PROTO_SLOT_NONE */
    elk_fw_slot_desc slot[2];
} elk_fw_record;

/* Power-on check of the committed slot (bootcheck.c). */
typedef struct elk_fw_check {
    int phase;               /* 0 idle, 1 the active slot, 2 the previous slot (the active one failed) */
    int damaged;             /* the active slot no longer matches its SHA-256 */
    int refused;             /* the active slot is intact but fails the owner signature / security floor */
    uint8_t slot;
    uint64_t done;           /* bytes hashed */
    elk_trust_sha256 sha;    /* libsodium's: D below feeds the signature check */
    uint64_t sig_end;        /* the header's image_size: the signed digest D covers [0, sig_end) */
    uint64_t digest_len;     /* sig_end once D is taken from the running hash (0 = not yet) */
    uint8_t digest[32];      /* D, so secure boot does not hash a big image a second time */
    char why[64];            /* why the active slot does not run */
} elk_fw_check;

typedef struct elk_fw_flash_session {
    int open;
    uint8_t slot;
    uint64_t size;
    uint8_t sha256[32];
    uint64_t cont;           /* a write may continue at this offset without starting a block */
} elk_fw_flash_session;

typedef struct elk_fw_gen_params {
    uint32_t flags, max_tokens;         /* ELK_GEN_* */
    elk_sampling sampling;
} elk_fw_gen_params;

enum { FW_AFTER_NONE, FW_AFTER_BAUD, FW_AFTER_RESET, FW_AFTER_GENERATE };

#define FW_LINE_MAX 512
/* Text that may wait while one PIECE is in flight: pieces generated meanwhile leave as one event, so a
 * slow line costs one round trip per event, not per token. Fits ELK_PROTO_WIRE_SIZE(1024) events. */
#define FW_PIECES_MAX 512
/* Most flash bytes one FLASH_COPY or BLOCK_HASHES request may touch (bounded reply latency). */
#define FW_WORK_MAX (64ull << 20)
/* A prompt is staged across PROMPT frames (docs/protocol.md "Long prompts"); the chat template adds
 * at most 128 bytes around it. */
#define FW_PROMPT_MAX ELK_PROTO_PROMPT_MAX_BOARD
#define FW_TEXT_MAX (FW_PROMPT_MAX + 128)

typedef struct elk_fw {
    const elk_board *b;
    elk_proto_rx rx;
    uint32_t tx_payload_max;            /* negotiated in HELLO */
    uint32_t baud;
    /* link session */
    int have_last;
    uint16_t last_seq;
    uint32_t last_resp_len;
    uint8_t last_resp[ELK_PROTO_WIRE_SIZE(ELK_PROTO_PAYLOAD_MAX_BOARD)];
    uint8_t tx[ELK_PROTO_PAYLOAD_MAX_BOARD];
    uint16_t event_seq;
    int event_pending;                  /* an EVENT waits for its EACK */
    int event_tries;                    /* resends of the pending EVENT */
    uint64_t event_sent_us;
    uint32_t pieces_len;                /* generated text not yet sent (while an EVENT is in flight) */
    char pieces[FW_PIECES_MAX];
    uint32_t event_len;
    uint8_t event_wire[ELK_PROTO_WIRE_SIZE(1024)];
    uint64_t last_frame_us;
    uint64_t baud_confirm_by_us;        /* 0 or the deadline for a frame after SET_BAUD */
    uint32_t baud_fallback;
    /* flash */
    elk_fw_record rec;
    uint64_t slot_base[2], slot_size;
    elk_fw_flash_session fs;
    elk_fw_check check;
    /* model */
    uint8_t running;
    elk_image img;
    elk_model *model;
    elk_tokenizer *tok;
    elk_sampler *sampler;
    uint8_t *sampler_arena;
    uint64_t sampler_arena_size;
    elk_gen gen_loop;                   /* the runtime's decode loop; holds the conversation */
    int32_t *tokens;                    /* n_ctx: scratch for one turn's prompt ids */
    uint32_t n_ctx;
    char chat_template[16];
    char boot_error[128];
    /* NPU prefill (gen.c boot_npu): backend NULL = the CPU prefills */
    const elk_npu_backend *npu_backend;
    elk_npu_runner npu;
    elk_npu_sim_ctx npu_sim;
    char npu_note[96];                  /* why an NPU board prefills on the CPU (empty otherwise) */
    /* generation */
    int generating, abort;
    int drop_stats;                     /* the session that asked is gone: no STATS for this turn */
    int console_gen;                    /* the generation streams to the console, not as events */
    uint32_t turn_tokens;               /* the last turn's prompt tokens (STATS; the console's messages) */
    /* console */
    char line[FW_LINE_MAX];
    uint32_t line_len;
    uint8_t console_last;               /* previous console byte (CR LF counts once) */
    char prompt[FW_PROMPT_MAX];         /* GENERATE's prompt: PROMPT-staged bytes, then GENERATE's own */
    uint32_t staged;                    /* prompt bytes staged by PROMPT for the next GENERATE (STAGED) */
    char text[FW_TEXT_MAX];             /* one turn wrapped in the chat template */
    /* trust (firmware/src/trust/fw_trust.c) */
    elk_trust_prov trust;               /* provisioning record in use (sequence 0: none) */
    uint8_t trust_nonce[ELK_TRUST_NONCE_SIZE]; /* challenge a re-provisioning request signs (TRUST_INFO) */
    uint8_t trust_ok[2];                /* owned board: slot passed the owner check since power-on/PROVISION */
    uint8_t trust_nonce_ready;          /* trust_nonce holds the current challenge (made on first use) */
    uint8_t trust_reserved;             /* no RNG: a challenge counter was reserved in flash this run */
    uint32_t trust_challenge_base;      /* no RNG: that reserved counter */
    uint32_t trust_challenge_k;         /* no RNG: challenges made since (never reset while running) */
    char reason[128];                   /* why the current command failed (or a warning); sent after the status */
    int after;                          /* FW_AFTER_*: what to do once the response is on the wire */
    uint32_t after_arg;
    elk_fw_gen_params gen;
    elk_fw_gen_params console_params;   /* the text console's sampling (its `set` command changes it) */
} elk_fw;

/* bootrec.c */
void elk_fw_layout(elk_fw *fw);
void elk_fw_record_load(elk_fw *fw);
int elk_fw_record_store(elk_fw *fw);

/* flashing.c: handlers return the response payload length or a negative status */
int elk_fw_cmd_flash_begin(elk_fw *fw, const uint8_t *p, uint32_t n);
int elk_fw_cmd_flash_data(elk_fw *fw, const uint8_t *p, uint32_t n);
int elk_fw_cmd_flash_copy(elk_fw *fw, const uint8_t *p, uint32_t n);
int elk_fw_cmd_flash_end(elk_fw *fw, const uint8_t *p, uint32_t n);
int elk_fw_cmd_block_hashes(elk_fw *fw, const uint8_t *p, uint32_t n);

/* bootcheck.c: start checks the active slot (nothing runs meanwhile); step hashes the next part and
 * boots when done; it returns 1 while the check goes on. */
void elk_fw_check_start(elk_fw *fw);
int elk_fw_check_step(elk_fw *fw);

/* gen.c */
int elk_fw_boot_slot(elk_fw *fw, uint8_t slot);
void elk_fw_unload(elk_fw *fw);
int elk_fw_generate(elk_fw *fw, const char *prompt, uint32_t len, const elk_fw_gen_params *gp);
/* ELK_OK when a len-byte prompt wrapped in the chat template fits fw->text for a turn with these
 * ELK_GEN_* flags; else ELK_E_NOMEM, the sizes in fw->reason (GENERATE refuses before it starts). */
int elk_fw_turn_check(elk_fw *fw, uint32_t len, uint32_t flags);

/* serve.c */
int elk_fw_poll(elk_fw *fw, int timeout_ms);
/* ELK_OK, or ELK_E_RANGE with the offending sampling value named in fw->reason. */
int elk_fw_check_sampling(elk_fw *fw, const elk_fw_gen_params *g);
/* Events are stop-and-wait: one EVENT in flight until its EACK. start sends one (nothing may be
 * pending), service resends it on timeout (ELK_E_TIMEOUT after ELK_PROTO_RETRY_COUNT), wait polls
 * until it is acknowledged, send_event = wait + start + wait. */
int elk_fw_event_start(elk_fw *fw, uint8_t code, const void *payload, uint32_t len);
int elk_fw_event_service(elk_fw *fw);
int elk_fw_event_wait(elk_fw *fw);
int elk_fw_send_event(elk_fw *fw, uint8_t code, const void *payload, uint32_t len);
void elk_fw_write_text(elk_fw *fw, const char *s, uint32_t n);
void elk_fw_log(elk_fw *fw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t elk_fw_now(elk_fw *fw);

/* console.c */
void elk_fw_console_byte(elk_fw *fw, uint8_t c);
void elk_fw_console_banner(elk_fw *fw);

#endif /* ELK_FW_H */
