/* The human text console sharing the line with the protocol: a "> " prompt, line editing with
 * echo, a few commands (help, info, reset, set: the sampling of the next replies) and streamed
 * replies; Ctrl-C stops a reply.
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

/* A decimal number ("0.7", "40", ".5"; no sign, no exponent) as a float; 0 when it is not one. */
static int parse_dec(const char *s, uint32_t n, double *out)
{
    double v = 0, scale = 0;
    int digits = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (s[i] == '.' && scale == 0) {
            scale = 1;
        } else if (s[i] >= '0' && s[i] <= '9' && digits < 19) {
            v = v * 10 + (s[i] - '0');
            scale *= 10;
            digits++;
        } else {
            return 0;
        }
    }
    *out = scale > 0 ? v / scale : v;
    return digits > 0;
}

/* Milli-units as text: 0.8 -> "0.800" (elk_fmt has no %f). A temperature may be any finite value: past
 * 1e15 the milli count would not fit (the conversion would be undefined), so it is named as such. */
static void say_milli(elk_fw *fw, const char *name, float x)
{
    if (!(x < 1e15f)) {
        sayf(fw, "%s 1e15 or more", name);
        return;
    }
    unsigned long long m = (unsigned long long)((double)x * 1000.0 + 0.5);
    sayf(fw, "%s %llu.%u%u%u", name, m / 1000, (unsigned)(m / 100 % 10), (unsigned)(m / 10 % 10),
         (unsigned)(m % 10));
}

static void show_sampling(elk_fw *fw)
{
    const elk_fw_gen_params *g = &fw->console_params;
    say_milli(fw, "temp", g->sampling.temperature);
    say_milli(fw, ", top-p", g->sampling.top_p);
    sayf(fw, ", top-k %d, tokens %u, seed ", g->sampling.top_k, (unsigned)g->max_tokens);
    if (g->sampling.seed)
        sayf(fw, "%u\n", (unsigned)g->sampling.seed);
    else
        say(fw, "0 (a new one every reply)\n");
}

/* `set NAME VALUE`: temp, top-p, top-k, tokens, seed for the replies that follow; `set` shows them.
 * The values pass the same check as a GENERATE request's. */
static void set_sampling(elk_fw *fw, const char *l, uint32_t n)
{
    uint32_t a = 3;
    while (a < n && l[a] == ' ')
        a++;
    uint32_t b = a;
    while (b < n && l[b] != ' ')
        b++;
    uint32_t v0 = b;
    while (v0 < n && l[v0] == ' ')
        v0++;
    if (a == n) {
        show_sampling(fw);
        return;
    }
    const char *name = l + a;
    uint32_t name_len = b - a;
    double v;
    if (!parse_dec(l + v0, n - v0, &v)) {
        say(fw, "usage: set temp|top-p|top-k|tokens|seed VALUE (a number, e.g. set temp 0.7)\n");
        return;
    }
    elk_fw_gen_params g = fw->console_params;
    int whole = v <= 4294967295.0 && v == (double)(uint32_t)v;  /* range first: a larger cast is undefined */
    if (is_word(name, name_len, "temp"))
        g.sampling.temperature = (float)v;
    else if (is_word(name, name_len, "top-p"))
        g.sampling.top_p = (float)v;
    else if (is_word(name, name_len, "top-k") && whole && v <= 2147483647.0)
        g.sampling.top_k = (int)v;
    else if (is_word(name, name_len, "tokens") && whole && v >= 1)
        g.max_tokens = (uint32_t)v;
    else if (is_word(name, name_len, "seed") && whole)
        g.sampling.seed = (uint64_t)v;
    else {
        say(fw, "set: temp (0 = greedy), top-p (0 < p <= 1), top-k (whole, 0 = off), tokens (whole, >= 1), "
                "seed (whole, 0 = a new one every reply)\n");
        return;
    }
    fw->reason[0] = 0;
    if (elk_fw_check_sampling(fw, &g) != ELK_OK) {
        sayf(fw, "%s\n", fw->reason);
        fw->reason[0] = 0;
        return;
    }
    fw->console_params = g;
    show_sampling(fw);
}

/* A turn that does not fit even an empty context (every console turn asks for a token, so it needs
 * one free position after the prompt): the same words as `elk chat`. */
static void say_too_long(elk_fw *fw)
{
    unsigned n = (unsigned)fw->turn_tokens, ctx = (unsigned)fw->n_ctx;
    if (n > ctx)
        sayf(fw, "\n(the prompt is %u tokens, more than the model's context of %u: send a shorter prompt)", n, ctx);
    else
        sayf(fw, "\n(the prompt is %u tokens and fills the model's context of %u, leaving no room for a reply: "
                 "send a shorter prompt)", n, ctx);
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
                "set    sampling of the next replies: set temp 0.7, set top-p 0.9, set top-k 40,\n"
                "       set tokens 100, set seed 7 (0 = a new one every reply); set alone shows them\n"
                "anything else is a prompt; Ctrl-C stops the reply\n");
    } else if (is_word(l, n, "info")) {
        print_info(fw);
    } else if (is_word(l, n, "reset")) {
        if (fw->model)
            elk_gen_reset(&fw->gen_loop);
        say(fw, "(new conversation)\n");
    } else if (is_word(l, n < 3 ? n : 3, "set") && (n == 3 || l[3] == ' ')) {
        set_sampling(fw, l, n);
    } else if (!fw->model) {
        say(fw, "no model: flash one with `elk flash`\n");
    } else {
        elk_fw_gen_params gp = fw->console_params;
        if (!gp.sampling.seed)
            gp.sampling.seed = elk_fw_now(fw);
        uint32_t used = (uint32_t)fw->gen_loop.n_tokens;
        fw->console_gen = 1;
        int rc = elk_fw_generate(fw, l, n, &gp);
        fw->console_gen = 0;
        if (fw->abort)
            say(fw, " ^C");
        else if (rc == ELK_E_RANGE && (used == 0 || fw->turn_tokens >= fw->n_ctx))
            say_too_long(fw);  /* a new conversation would not take it either: reset does not help */
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
