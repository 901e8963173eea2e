/* The protocol server: reads the UART, separates frames from console text, answers requests once
 * per sequence number (a retransmitted request gets the cached response), sends events and waits
 * for their acknowledgement. Flash and generation commands live in flashing.c and gen.c. */
#include "main/fw.h"
#include "trust/fw_trust.h"

uint64_t elk_fw_now(elk_fw *fw)
{
    return fw->b->now_us(fw->b->clock_ctx);
}

void elk_fw_log(elk_fw *fw, const char *fmt, ...)
{
    if (!fw->b->log)
        return;
    char line[192];
    va_list ap;
    va_start(ap, fmt);
    elk_vfmt(line, sizeof line, fmt, ap);
    va_end(ap);
    fw->b->log(fw->b->log_ctx, line);
}

static void uart_write(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    fw->b->uart.write(fw->b->uart.ctx, p, (int)n);
}

/* Console text: the line never carries 0x00 outside frames, and terminals want CR LF. */
void elk_fw_write_text(elk_fw *fw, const char *s, uint32_t n)
{
    uint8_t buf[128];
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (k + 2 > sizeof buf) {
            uart_write(fw, buf, k);
            k = 0;
        }
        if (s[i] == 0)
            continue;
        if (s[i] == '\n')
            buf[k++] = '\r';
        buf[k++] = (uint8_t)s[i];
    }
    if (k)
        uart_write(fw, buf, k);
}

/* Retransmission timeout for a frame of `wire` bytes: base + twice its time on the line. */
static uint64_t retry_us(const elk_fw *fw, uint32_t wire)
{
    uint64_t t = (uint64_t)ELK_PROTO_RETRY_BASE_MS * 1000;
    if (fw->baud)
        t += 2ull * wire * 10 * 1000000 / fw->baud;
    return t;
}

static void send_nak(elk_fw *fw, uint8_t reason)
{
    uint8_t wire[32];
    int n = elk_proto_encode(wire, sizeof wire, ELK_FRAME_NAK, 0, 0xFFFF, &reason, 1);
    if (n > 0)
        uart_write(fw, wire, (uint32_t)n);
}

int elk_fw_event_start(elk_fw *fw, uint8_t code, const void *payload, uint32_t len)
{
    int n = elk_proto_encode(fw->event_wire, sizeof fw->event_wire, ELK_FRAME_EVENT, code,
                             ++fw->event_seq, payload, len);
    if (n < 0)
        return n;
    fw->event_len = (uint32_t)n;
    fw->event_pending = 1;
    fw->event_tries = 0;
    uart_write(fw, fw->event_wire, fw->event_len);
    fw->event_sent_us = elk_fw_now(fw);
    return ELK_OK;
}

/* The pending EVENT's timeout grows by half with each resend (at most 2 s more each time), as the host's
 * requests do (docs/protocol.md section 3): 9 unanswered tries then span ~15 s, so a host stalled for a
 * few seconds (a busy machine, a terminal paused with Ctrl-S) gets its whole reply; a fixed timeout
 * gave up after ~2 s and cut it. */
static uint64_t event_retry_us(const elk_fw *fw)
{
    uint64_t t = retry_us(fw, fw->event_len);
    for (int i = 0; i < fw->event_tries; i++)
        t = t / 2 < 2000000u ? t + t / 2 : t + 2000000u;
    return t;
}

int elk_fw_event_service(elk_fw *fw)
{
    if (!fw->event_pending || elk_fw_now(fw) - fw->event_sent_us <= event_retry_us(fw))
        return ELK_OK;
    if (++fw->event_tries > ELK_PROTO_RETRY_COUNT) {
        fw->event_pending = 0;  /* the host is gone: the caller stops generating */
        return ELK_E_TIMEOUT;
    }
    uart_write(fw, fw->event_wire, fw->event_len);
    fw->event_sent_us = elk_fw_now(fw);
    return ELK_OK;
}

int elk_fw_event_wait(elk_fw *fw)
{
    while (fw->event_pending) {
        if (elk_fw_poll(fw, 2) < 0)
            return ELK_E_IO;
        int rc = elk_fw_event_service(fw);
        if (rc)
            return rc;
    }
    return ELK_OK;
}

int elk_fw_send_event(elk_fw *fw, uint8_t code, const void *payload, uint32_t len)
{
    int rc = elk_fw_event_wait(fw);
    if (rc == ELK_OK)
        rc = elk_fw_event_start(fw, code, payload, len);
    return rc ? rc : elk_fw_event_wait(fw);
}

/* ---- simple commands ------------------------------------------------------------------------ */

static uint32_t capabilities(const elk_fw *fw)
{
    uint32_t caps = ELK_CAP_FLASH | ELK_CAP_BLOCK_HASHES | ELK_CAP_FLASH_COPY | ELK_CAP_CONSOLE |
                    ELK_CAP_LONG_PROMPT | ELK_CAP_PROGRESS;
    if (fw->b->uart_set_baud)
        caps |= ELK_CAP_SET_BAUD;
    if (fw->model)
        caps |= ELK_CAP_GENERATE;
    if (fw->model && fw->npu_backend)
        caps |= ELK_CAP_NPU;
    if (fw->check.phase)
        caps |= ELK_CAP_CHECKING;
    return caps;
}

/* HELLO: u16 version, u16 pad, u32 host_max_payload
 *     -> u16 version, u32 board_max_payload, u32 capabilities, u32 baud, u32 max_baud */
static int cmd_hello(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    uint32_t off = 2, cap = sizeof fw->tx;
    off = elk_put16(fw->tx, off, cap, ELK_PROTO_VERSION);
    off = elk_put32(fw->tx, off, cap, ELK_PROTO_PAYLOAD_MAX_BOARD);
    off = elk_put32(fw->tx, off, cap, capabilities(fw));
    off = elk_put32(fw->tx, off, cap, fw->baud);
    off = elk_put32(fw->tx, off, cap, fw->b->max_baud);
    if (n < 8)
        return ELK_E_INVAL;
    if (elk_le16(p) != ELK_PROTO_VERSION)
        return ELK_E_VERSION;  /* the fields above still tell the host what the board speaks */
    fw->staged = 0;  /* a prompt half-sent by a vanished session is not this one's */
    uint32_t host_max = elk_le32(p + 4);
    if (host_max < ELK_PROTO_PAYLOAD_MAX_DEFAULT)
        host_max = ELK_PROTO_PAYLOAD_MAX_DEFAULT;
    fw->tx_payload_max = host_max < sizeof fw->tx ? host_max : sizeof fw->tx;
    return (int)off;
}

/* INFO: () -> the board, its slots and the running model (docs/protocol.md "INFO"). */
static int cmd_info(elk_fw *fw)
{
    const elk_board *b = fw->b;
    uint8_t *t = fw->tx;
    uint32_t off = 2, cap = sizeof fw->tx;
    off = elk_put16(t, off, cap, ELK_PROTO_VERSION);
    off = elk_put32(t, off, cap, capabilities(fw));
    off = elk_put32(t, off, cap, ELK_PROTO_PAYLOAD_MAX_BOARD);
    off = elk_put32(t, off, cap, fw->baud);
    off = elk_put32(t, off, cap, b->max_baud);
    off = elk_put64(t, off, cap, b->ram_size);
    off = elk_put64(t, off, cap, b->flash_size);
    off = elk_put32(t, off, cap, b->erase_block);
    off = elk_put64(t, off, cap, fw->slot_size);
    off = elk_put8(t, off, cap, fw->rec.active);
    off = elk_put8(t, off, cap, fw->running);
    off = elk_put8(t, off, cap, fw->rec.prev);
    off = elk_put8(t, off, cap, 2);
    off = elk_put_str(t, off, cap, b->name, ELK_PROTO_INFO_NAME_MAX);
    off = elk_put_str(t, off, cap, ELK_FW_VERSION, ELK_PROTO_INFO_NAME_MAX);
    for (uint8_t s = 0; s < 2; s++) {
        const elk_fw_slot_desc *d = &fw->rec.slot[s];
        uint32_t flags = d->flags & ELK_SLOT_VALID;
        if (fw->rec.active == s)
            flags |= ELK_SLOT_ACTIVE;
        if (fw->running == s)
            flags |= ELK_SLOT_RUNNING;
        off = elk_put32(t, off, cap, flags);
        off = elk_put32(t, off, cap, 0);
        off = elk_put64(t, off, cap, d->image_size);
        off = elk_put_bytes(t, off, cap, d->sha256, 32);
        off = elk_put_str(t, off, cap, d->name, ELK_PROTO_SLOT_NAME_MAX);
    }
    off = elk_put32(t, off, cap, fw->model ? fw->n_ctx : 0);
    off = elk_put32(t, off, cap, fw->model ? (uint32_t)fw->gen_loop.n_tokens : 0);
    off = elk_put_str(t, off, cap, fw->model ? elk_model_kernels_name(fw->model) : "", 32);
    off = elk_put_str(t, off, cap, fw->chat_template, 16);
    off = elk_put_str(t, off, cap, fw->boot_error, 64);
    /* Appended fields, only for a host that negotiated room for them (460 bytes fit the pre-HELLO
     * limit of 512; older hosts stop reading at 460): NPU backend, and why an NPU board is not using it. */
    if (off + 16 + 96 <= fw->tx_payload_max) {
        off = elk_put_str(t, off, cap, fw->npu_backend ? fw->npu_backend->name : "", 16);
        off = elk_put_str(t, off, cap, fw->npu_note, 96);
        if (off + 4 <= fw->tx_payload_max)  /* 572: longest prompt PROMPT can stage */
            off = elk_put32(t, off, cap, FW_PROMPT_MAX);
    }
    return off <= cap ? (int)off : ELK_E_RANGE;
}

static int cmd_set_baud(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (n < 4)
        return ELK_E_INVAL;
    if (!fw->b->uart_set_baud)
        return ELK_E_UNSUPPORTED;
    uint32_t baud = elk_le32(p);
    if (baud == 0 || baud > fw->b->max_baud)
        return ELK_E_RANGE;
    fw->after = FW_AFTER_BAUD;
    fw->after_arg = baud;
    return 2;
}

static int cmd_boot(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (n < 1 || p[0] > 1)
        return ELK_E_INVAL;
    if (!(fw->rec.slot[p[0]].flags & ELK_SLOT_VALID))
        return ELK_E_STATE;
    uint8_t before = fw->running;
    int rc = elk_fw_boot_slot(fw, p[0]);
    if (rc && before < 2)
        elk_fw_boot_slot(fw, before);  /* keep serving the model that worked */
    return rc ? rc : 2;
}

static int cmd_commit(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (n < 1 || p[0] > 1)
        return ELK_E_INVAL;
    uint8_t s = p[0];
    if (!(fw->rec.slot[s].flags & ELK_SLOT_VALID) || fw->running != s)
        return ELK_E_STATE;  /* only a slot that booted gets committed */
    int trc = elk_trust_fw_check_slot(fw, s);  /* owner key or floor may have changed since FLASH_END */
    if (trc)
        return trc;
    if (fw->rec.active != s) {
        fw->rec.prev = fw->rec.active;
        fw->rec.active = s;
        int rc = elk_fw_record_store(fw);
        if (rc)
            return rc;
    }
    return 2;
}

static int cmd_rollback(elk_fw *fw)
{
    uint8_t prev = fw->rec.prev;
    if (prev > 1 || !(fw->rec.slot[prev].flags & ELK_SLOT_VALID))
        return ELK_E_STATE;
    int trc = elk_trust_fw_check_slot(fw, prev);  /* no rollback below the security floor */
    if (trc)
        return trc;
    fw->rec.prev = fw->rec.active;
    fw->rec.active = prev;
    int rc = elk_fw_record_store(fw);
    if (rc == ELK_OK)
        rc = elk_fw_boot_slot(fw, prev);
    fw->tx[2] = prev;
    return rc ? rc : 3;
}

static int finite(float x)
{
    return x - x == 0.0f;  /* false for NaN and both infinities */
}

/* The sampling values of one request (GENERATE, or the text console's `set`), within the sampler's
 * limits; a refusal names the value in fw->reason, which travels after the status. */
int elk_fw_check_sampling(elk_fw *fw, const elk_fw_gen_params *g)
{
    const elk_sampling *s = &g->sampling;
    const char *why = NULL;
    if (!finite(s->temperature) || s->temperature < 0.0f)
        why = "temperature must be a finite number, 0 (greedy) or more";
    else if (!(s->top_p > 0.0f && s->top_p <= 1.0f))
        why = "top-p must be above 0 and at most 1 (1 = off)";
    else if (s->top_k < 0)
        why = "top-k must be 0 (off) to 2147483647";
    else if (!finite(s->repeat_penalty) || !(s->repeat_penalty > 0.0f))
        why = "repeat penalty must be a finite number above 0 (1 = off)";
    else if (s->repeat_last_n < 0)
        why = "repeat window must be 0 to 2147483647 tokens";
    if (!why)
        return ELK_OK;
    elk_fmt(fw->reason, sizeof fw->reason, "sampling: %s", why);
    return ELK_E_RANGE;
}

/* PROMPT: u32 offset, bytes -> u32 bytes staged. Stages a prompt longer than one frame for the next
 * GENERATE with flag STAGED. Offset 0 starts a new prompt; any other offset must continue the staged
 * bytes exactly (a lost reply makes the host resend the same frame, answered from the reply cache). */
static int cmd_prompt(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (n < 4)
        return ELK_E_INVAL;
    if (!fw->model)
        return ELK_E_STATE;
    uint32_t off = elk_le32(p), len = n - 4;
    if (off != 0 && off != fw->staged) {
        elk_fmt(fw->reason, sizeof fw->reason, "prompt bytes at offset %u, but %u are staged", (unsigned)off,
                (unsigned)fw->staged);
        fw->staged = 0;
        return ELK_E_STATE;
    }
    if (len > FW_PROMPT_MAX - off) {
        elk_fmt(fw->reason, sizeof fw->reason, "the prompt is longer than the %u bytes this board takes",
                (unsigned)FW_PROMPT_MAX);
        fw->staged = 0;
        return ELK_E_RANGE;
    }
    for (uint32_t i = 0; i < len; i++)
        fw->prompt[off + i] = (char)p[4 + i];
    fw->staged = off + len;
    elk_put32(fw->tx, 2, sizeof fw->tx, fw->staged);
    return 6;
}

/* GENERATE: u32 flags, u32 max_tokens, f32 temperature, f32 top_p, u32 top_k, f32 repeat_penalty,
 * u32 repeat_last_n, u64 seed, prompt bytes -> () then PIECE events and one STATS event. With flag
 * STAGED the prompt is the bytes PROMPT staged followed by this frame's; every GENERATE ends staging. */
static int cmd_generate(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    uint32_t have = fw->staged;
    fw->staged = 0;
    if (n < 36)
        return ELK_E_INVAL;
    if (!fw->model)
        return ELK_E_STATE;
    elk_fw_gen_params *g = &fw->gen;
    g->flags = elk_le32(p);
    g->max_tokens = elk_le32(p + 4);
    g->sampling.temperature = elk_lef32(p + 8);
    g->sampling.top_p = elk_lef32(p + 12);
    g->sampling.top_k = (int)elk_le32(p + 16);
    g->sampling.repeat_penalty = elk_lef32(p + 20);
    g->sampling.repeat_last_n = (int)elk_le32(p + 24);
    g->sampling.seed = elk_le64(p + 28);
    int rc = elk_fw_check_sampling(fw, g);
    if (rc)
        return rc;
    if (!(g->flags & ELK_GEN_STAGED))
        have = 0;
    else if (have == 0) {
        elk_fmt(fw->reason, sizeof fw->reason, "flag STAGED, but no prompt bytes were staged with PROMPT");
        return ELK_E_STATE;
    }
    uint32_t len = n - 36;
    if (len > FW_PROMPT_MAX - have) {
        elk_fmt(fw->reason, sizeof fw->reason, "the prompt is longer than the %u bytes this board takes",
                (unsigned)FW_PROMPT_MAX);
        return ELK_E_RANGE;
    }
    if ((rc = elk_fw_turn_check(fw, have + len, g->flags)) != ELK_OK)
        return rc;  /* the chat template around it would not fit the board's turn buffer */
    for (uint32_t i = 0; i < len; i++)
        fw->prompt[have + i] = (char)p[36 + i];
    fw->after = FW_AFTER_GENERATE;
    fw->after_arg = have + len;
    return 2;
}

static int dispatch(elk_fw *fw, const elk_frame *f)
{
    if (f->code == ELK_CMD_HELLO)
        fw->event_pending = 0;  /* the last STATS of a session that left before its EACK came is nobody's:
                                 * resent after this, the new session would take it for its own turn's */
    if (fw->generating && f->code == ELK_CMD_HELLO) {
        /* A new session takes over the line: the old one's reply ends here, without waiting for
         * acknowledgements or a STATS nobody will read. The generation loop returns as soon as this
         * poll does (it checks abort before polling again), so the new session's next command is safe. */
        fw->abort = 1;
        fw->event_pending = 0;
        fw->drop_stats = 1;
        fw->generating = 0;
    } else if (fw->generating && f->code != ELK_CMD_ABORT && f->code != ELK_CMD_INFO)
        return ELK_E_STATE;
    if (fw->check.phase && f->code != ELK_CMD_HELLO && f->code != ELK_CMD_INFO && f->code != ELK_CMD_TRUST_INFO) {
        elk_fmt(fw->reason, sizeof fw->reason, "the board is checking its image (%s)", fw->boot_error);
        return ELK_E_STATE;  /* hosts wait while HELLO/INFO report CHECKING */
    }
    switch (f->code) {
    case ELK_CMD_HELLO: return cmd_hello(fw, f->payload, f->len);
    case ELK_CMD_INFO: return cmd_info(fw);
    case ELK_CMD_FLASH_BEGIN: return elk_fw_cmd_flash_begin(fw, f->payload, f->len);
    case ELK_CMD_FLASH_DATA: return elk_fw_cmd_flash_data(fw, f->payload, f->len);
    case ELK_CMD_FLASH_COPY: return elk_fw_cmd_flash_copy(fw, f->payload, f->len);
    case ELK_CMD_FLASH_END: return elk_fw_cmd_flash_end(fw, f->payload, f->len);
    case ELK_CMD_BLOCK_HASHES: return elk_fw_cmd_block_hashes(fw, f->payload, f->len);
    case ELK_CMD_SET_BAUD: return cmd_set_baud(fw, f->payload, f->len);
    case ELK_CMD_BOOT: return cmd_boot(fw, f->payload, f->len);
    case ELK_CMD_COMMIT: return cmd_commit(fw, f->payload, f->len);
    case ELK_CMD_ROLLBACK: return cmd_rollback(fw);
    case ELK_CMD_RESET: fw->after = FW_AFTER_RESET; return 2;
    case ELK_CMD_GENERATE: return cmd_generate(fw, f->payload, f->len);
    case ELK_CMD_ABORT: fw->abort = fw->generating; return 2;
    case ELK_CMD_PROMPT: return cmd_prompt(fw, f->payload, f->len);
    case ELK_CMD_TRUST_INFO: return elk_trust_fw_cmd_info(fw);
    case ELK_CMD_PROVISION: return elk_trust_fw_cmd_provision(fw, f->payload, f->len);
    default: return ELK_E_UNSUPPORTED;
    }
}

static void reset_board(elk_fw *fw)
{
    elk_fw_unload(fw);
    fw->fs.open = 0;
    fw->staged = 0;
    elk_fw_record_load(fw);
    elk_fw_check_start(fw);
}

static void run_after(elk_fw *fw)
{
    int after = fw->after;
    fw->after = FW_AFTER_NONE;
    if (after == FW_AFTER_BAUD) {
        fw->baud_fallback = fw->baud;
        if (fw->b->uart_set_baud(fw->b->uart.ctx, fw->after_arg) == ELK_OK) {
            fw->baud = fw->after_arg;
            fw->baud_confirm_by_us = elk_fw_now(fw) + (uint64_t)ELK_PROTO_BAUD_CONFIRM_MS * 1000;
        }
    } else if (after == FW_AFTER_RESET) {
        reset_board(fw);
    } else if (after == FW_AFTER_GENERATE) {
        elk_fw_generate(fw, fw->prompt, fw->after_arg, &fw->gen);
    }
}

static void handle_request(elk_fw *fw, const elk_frame *f)
{
    if (f->code != ELK_CMD_HELLO && fw->have_last && f->seq == fw->last_seq) {
        uart_write(fw, fw->last_resp, fw->last_resp_len);  /* our answer was lost: say it again */
        return;
    }
    fw->reason[0] = 0;
    int r = dispatch(fw, f);
    int status = r < 0 ? r : ELK_OK;
    uint32_t len = r < 0 ? 2 + elk_trust_fw_note(fw, 2) : (uint32_t)r;  /* error: i16 status, reason text */
    if (r < 0 && f->code == ELK_CMD_HELLO)
        len = 20;  /* a version mismatch still carries the board's version */
    if (r < 0 && f->code != ELK_CMD_HELLO)
        fw->after = FW_AFTER_NONE;
    elk_put16(fw->tx, 0, sizeof fw->tx, (uint32_t)(uint16_t)(int16_t)status);
    if (len > fw->tx_payload_max)
        len = 2;  /* cannot happen for well-formed handlers; never send more than the host takes */
    int n = elk_proto_encode(fw->last_resp, sizeof fw->last_resp, ELK_FRAME_RESP, f->code, f->seq,
                             fw->tx, len);
    if (n < 0)
        return;
    fw->last_resp_len = (uint32_t)n;
    fw->last_seq = f->seq;
    fw->have_last = 1;
    uart_write(fw, fw->last_resp, fw->last_resp_len);
    fw->last_frame_us = elk_fw_now(fw);  /* a long command's own time is not the host's silence */
    /* fw->after runs from the main loop, never nested inside a generation's event wait */
}

static void handle_frame(elk_fw *fw, const elk_frame *f)
{
    fw->last_frame_us = elk_fw_now(fw);
    fw->baud_confirm_by_us = 0;
    switch (f->kind) {
    case ELK_FRAME_REQ:
        handle_request(fw, f);
        break;
    case ELK_FRAME_EACK:
        if (fw->event_pending && f->seq == fw->event_seq)
            fw->event_pending = 0;
        break;
    case ELK_FRAME_NAK:
        if (fw->event_pending)
            uart_write(fw, fw->event_wire, fw->event_len);
        else if (fw->have_last)
            uart_write(fw, fw->last_resp, fw->last_resp_len);
        break;
    default:
        break;  /* RESP/EVENT are the board's own kinds: an echo, ignore */
    }
}

int elk_fw_poll(elk_fw *fw, int timeout_ms)
{
    uint8_t buf[256];
    int n = fw->b->uart.read(fw->b->uart.ctx, buf, sizeof buf, timeout_ms);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        elk_frame f;
        switch (elk_proto_rx_byte(&fw->rx, buf[i], &f)) {
        case ELK_RX_FRAME:
            handle_frame(fw, &f);
            break;
        case ELK_RX_BAD:
            send_nak(fw, fw->rx.bad_reason);
            break;
        case ELK_RX_TEXT:
            if (elk_fw_now(fw) - fw->last_frame_us > (uint64_t)ELK_PROTO_CONSOLE_HOLDOFF_MS * 1000 ||
                fw->last_frame_us == 0)
                elk_fw_console_byte(fw, buf[i]);
            break;
        default:
            break;
        }
    }
    if (fw->baud_confirm_by_us && elk_fw_now(fw) > fw->baud_confirm_by_us) {
        /* nobody spoke at the new rate: go back to the one that worked */
        fw->b->uart_set_baud(fw->b->uart.ctx, fw->baud_fallback);
        fw->baud = fw->baud_fallback;
        fw->baud_confirm_by_us = 0;
        elk_fw_log(fw, "baud: no frame at the new rate, back to %u", (unsigned)fw->baud);
    }
    if (!fw->baud_confirm_by_us && fw->baud != fw->b->baud && fw->b->uart_set_baud && !fw->generating &&
        elk_fw_now(fw) - fw->last_frame_us > (uint64_t)ELK_PROTO_BAUD_IDLE_MS * 1000) {
        /* the host that switched the rate went away without switching back (killed, unplugged, power
         * cut): listen where the next host and a terminal look for the board, its console rate. Not
         * during a generation: a long prefill is the board's silence, not the host's (a vanished host
         * ends the generation through its unacknowledged events, then this applies) */
        fw->last_frame_us = elk_fw_now(fw);
        if (fw->b->uart_set_baud(fw->b->uart.ctx, fw->b->baud) == ELK_OK) {
            fw->baud = fw->b->baud;
            elk_fw_log(fw, "baud: no frame for %u ms, back to the console rate %u",
                       (unsigned)ELK_PROTO_BAUD_IDLE_MS, (unsigned)fw->baud);
        }
    }
    return n;
}

int elk_fw_run(const elk_board *board)
{
    static elk_fw fw_storage;  /* ~40 KB of buffers: static, so nothing is allocated at run time */
    elk_fw *fw = &fw_storage;
    for (size_t i = 0; i < sizeof *fw; i++)
        ((uint8_t *)fw)[i] = 0;  /* fresh state on every entry (fuzz/fuzz_commands.c runs it per input) */
    fw->b = board;
    elk_proto_rx_init(&fw->rx, ELK_PROTO_PAYLOAD_MAX_BOARD);
    fw->tx_payload_max = ELK_PROTO_PAYLOAD_MAX_DEFAULT;
    fw->baud = board->baud;
    fw->running = ELK_PROTO_SLOT_NONE;
    fw->console_params = (elk_fw_gen_params){ .max_tokens = 256,
                                              .sampling = { .temperature = 0.8f, .top_k = 0, .top_p = 0.9f,
                                                            .repeat_penalty = 1.0f, .repeat_last_n = 64 } };
    elk_fw_layout(fw);
    elk_fw_record_load(fw);
    elk_fw_check_start(fw);
    elk_fw_console_banner(fw);
    for (;;) {
        int rc = elk_fw_poll(fw, fw->check.phase ? 0 : 100);
        if (rc < 0)
            return rc;
        if (fw->check.phase && !elk_fw_check_step(fw))
            elk_fw_log(fw, "boot: check done%s%s", fw->boot_error[0] ? ": " : "", fw->boot_error);
        if (fw->after != FW_AFTER_NONE)
            run_after(fw);
    }
}
