/* The human text console sharing the line with the protocol: a "> " prompt, line editing with
 * echo, a few commands (help, info, reset) and streamed replies; Ctrl-C stops a reply.
 * Not here: frames (serve.c) or the sampling loop (gen.c). */
#include "main/fw.h"

static void say(elk_fw *fw, const char *s)
{
    uint32_t n = 0;
    while (s[n])
        n++;
    elk_fw_write_text(fw, s, n);
}

static void sayf(elk_fw *fw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sayf(elk_fw *fw, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    elk_vfmt(buf, sizeof buf, fmt, ap);
    va_end(ap);
    say(fw, buf);
}

static void print_info(elk_fw *fw)
{
    sayf(fw, "%s on %s\n", ELK_FW_VERSION, fw->b->name);
    for (int s = 0; s < 2; s++) {
        const elk_fw_slot_desc *d = &fw->rec.slot[s];
        sayf(fw, "slot %c: %s%s%s%s\n", 'A' + s, (d->flags & ELK_SLOT_VALID) ? d->name : "(empty)",
             fw->rec.active == s ? " [active]" : "", fw->running == s ? " [running]" : "",
             (d->flags & ELK_SLOT_VALID) ? "" : "");
    }
    if (fw->model)
        sayf(fw, "model: %s, context %u/%u, template %s\n", fw->img.name, (unsigned)fw->gen_loop.n_tokens,
             (unsigned)fw->n_ctx, fw->chat_template[0] ? fw->chat_template : "none");
    if (fw->model && (fw->npu_backend || fw->npu_note[0]))
        sayf(fw, "npu: %s\n", fw->npu_backend ? "prefill on the sim backend" : fw->npu_note);
    if (!fw->model)
        sayf(fw, "no model running%s%s\n", fw->boot_error[0] ? ": " : "", fw->boot_error);
}

void elk_fw_console_banner(elk_fw *fw)
{
    sayf(fw, "\n%s on %s: %s. Type a prompt and press Enter; 'help' lists commands.\n> ", ELK_FW_VERSION,
         fw->b->name, fw->model ? fw->img.name : "no model flashed yet");
}

static int is_word(const char *line, uint32_t n, const char *w)
{
    uint32_t i = 0;
    for (; i < n && w[i]; i++)
        if (line[i] != w[i])
            return 0;
    return i == n && w[i] == 0;
}

static void run_line(elk_fw *fw)
{
    char *l = fw->line;
    uint32_t n = fw->line_len;
    fw->line_len = 0;
    say(fw, "\n");
    if (n == 0) {
    } else if (is_word(l, n, "help")) {
        say(fw, "help   this text\ninfo   board, slots and model\nreset  start a new conversation\n"
                "anything else is a prompt; Ctrl-C stops the reply\n");
    } else if (is_word(l, n, "info")) {
        print_info(fw);
    } else if (is_word(l, n, "reset")) {
        if (fw->model)
            elk_gen_reset(&fw->gen_loop);
        say(fw, "(new conversation)\n");
    } else if (!fw->model) {
        say(fw, "no model: flash one with `elk flash`\n");
    } else {
        elk_fw_gen_params gp = { .flags = 0, .max_tokens = 256,
                                 .sampling = { .temperature = 0.8f, .top_k = 0, .top_p = 0.9f,
                                               .repeat_penalty = 1.0f, .repeat_last_n = 64,
                                               .seed = elk_fw_now(fw) } };
        fw->console_gen = 1;
        int rc = elk_fw_generate(fw, l, n, &gp);
        fw->console_gen = 0;
        if (fw->abort)
            say(fw, " ^C");
        else if (rc == ELK_E_RANGE || fw->gen_loop.stop == ELK_GEN_CONTEXT_FULL)
            say(fw, "\n(context full: type reset to start a new conversation)");  /* no sliding window */
        else if (rc)
            sayf(fw, "\n(error: %s)", elk_strerror(rc));
        say(fw, "\n");
    }
    say(fw, "> ");
}

void elk_fw_console_byte(elk_fw *fw, uint8_t c)
{
    if (fw->console_gen) {  /* only Ctrl-C means something while a reply streams */
        if (c == 0x03)
            fw->abort = 1;
        return;
    }
    if (fw->generating)
        return;
    uint8_t last = fw->console_last;
    fw->console_last = c;
    if (c == '\r' || c == '\n') {
        if (c == '\n' && last == '\r')
            return;  /* CR LF is one Enter */
        run_line(fw);
    } else if (c == 0x7F || c == 0x08) {
        if (fw->line_len) {
            fw->line_len--;
            elk_fw_write_text(fw, "\b \b", 3);
        }
    } else if (c == 0x03) {
        fw->line_len = 0;
        say(fw, "^C\n> ");
    } else if (c >= 0x20 || c == '\t') {
        if (fw->line_len < FW_LINE_MAX) {
            fw->line[fw->line_len++] = (char)c;
            elk_fw_write_text(fw, (const char *)&c, 1);
        }
    }
}
