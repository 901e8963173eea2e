/* elk-fw for POSIX boards: parse the command line, open the UART, the flash file and board RAM,
 * then hand everything to the freestanding firmware (elk_fw_run). Used by `elk emulate` (UART = a
 * pty master fd) and on Linux boards (UART = a serial device). */
#define _DEFAULT_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "board_posix.h"
#include "main/fw.h"
#include "threads.h"

#ifndef ELK_BOARD_NAME
#define ELK_BOARD_NAME "posix"
#endif

static const char usage[] =
    "usage: elk-fw (--uart-fd N | --uart DEVICE) --flash FILE [options]\n"
    "  --board NAME        name reported in INFO (default " ELK_BOARD_NAME ")\n"
    "  --flash-mb N        flash size in MiB (default 64)\n"
    "  --erase-kb N        erase block in KiB (default 4)\n"
    "  --ram-mb N          working RAM in MiB (default 512)\n"
    "  --baud N            line rate; 0 = unthrottled emulated line (default 115200)\n"
    "  --max-baud N        highest rate SET_BAUD accepts (default 3000000)\n"
    "  --broken-above N    emulate a cable that corrupts everything above N baud\n"
    "  --strict-rate       emulated line: bytes arrive garbled while the host's side of the pty is\n"
    "                      set to another rate than the board's (a real UART pair; default: a pty\n"
    "                      carries bytes whatever rate either end set)\n"
    "  --threads N         model threads (default 1)\n"
    "  --npu-kind KIND     the board has an NPU (board file npu.kind): prompt prefill runs on the\n"
    "                      sim backend when the image has an NPU section (docs/npu.md)\n"
    "  --npu-tops T        its int8 TOPS (npu.tops.int8)\n"
    "  --npu-efficiency E  share of T reached on matmuls, 0 < E <= 1 (npu.efficiency, default 1)\n"
    "  --npu-dma-gbs G     its transfer bandwidth in GB/s (npu.dma_gbs)\n"
    "  --npu-chunk N       its prefill chunk in tokens (npu.prefill_chunk_tokens)\n"
    "  --ready-fd N        write one byte to fd N and close it when the firmware first uses its\n"
    "                      UART (the banner, then frames: `elk emulate` waits for it, so a client's\n"
    "                      first HELLO meets a board that serves, however long qemu took to start)\n"
    "  --no-rng            the board has no random generator (board file rng = \"none\"): provisioning\n"
    "                      challenges come from a counter in flash and the board id (docs/trust.md)\n"
    "  --uid TEXT          the board's unique id (default: /etc/machine-id and the flash file's path)\n"
    "  --quiet             no diagnostics on stderr\n";

typedef struct board_args {
    int uart_fd, ready_fd;
    const char *uart_path, *flash_path, *board;
    unsigned long long flash_mb, erase_kb, ram_mb, baud, max_baud, broken_above, threads, npu_chunk;
    int quiet, no_rng, strict_rate;
    const char *npu_kind, *uid;
    double npu_tops, npu_efficiency, npu_dma_gbs;
} board_args;

static int parse_num(const char *s, unsigned long long *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    *out = strtoull(s, &end, 10);
    return *end ? -1 : 0;
}

static int parse_real(const char *s, double *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    *out = strtod(s, &end);
    return (*end || !(*out > 0)) ? -1 : 0;
}

static int parse_args(int argc, char **argv, board_args *a)
{
    struct { const char *flag; unsigned long long *v; } nums[] = {
        { "--flash-mb", &a->flash_mb }, { "--erase-kb", &a->erase_kb }, { "--ram-mb", &a->ram_mb },
        { "--baud", &a->baud }, { "--max-baud", &a->max_baud }, { "--broken-above", &a->broken_above },
        { "--threads", &a->threads }, { "--npu-chunk", &a->npu_chunk },
    };
    struct { const char *flag; double *v; } reals[] = {
        { "--npu-tops", &a->npu_tops }, { "--npu-efficiency", &a->npu_efficiency },
        { "--npu-dma-gbs", &a->npu_dma_gbs },
    };
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long fd;
        int done = 0;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0] && !done; k++)
            if (strcmp(f, nums[k].flag) == 0) {
                if (parse_num(v, nums[k].v) != 0)
                    return fprintf(stderr, "elk-fw: %s needs a number\n", f), -1;
                i++, done = 1;
            }
        for (size_t k = 0; k < sizeof reals / sizeof reals[0] && !done; k++)
            if (strcmp(f, reals[k].flag) == 0) {
                if (parse_real(v, reals[k].v) != 0)
                    return fprintf(stderr, "elk-fw: %s needs a positive number\n", f), -1;
                i++, done = 1;
            }
        if (done)
            continue;
        if (strcmp(f, "--npu-kind") == 0 && v)
            a->npu_kind = v, i++;
        else if (strcmp(f, "--quiet") == 0)
            a->quiet = 1;
        else if (strcmp(f, "--no-rng") == 0)
            a->no_rng = 1;
        else if (strcmp(f, "--strict-rate") == 0)
            a->strict_rate = 1;
        else if (strcmp(f, "--uid") == 0 && v && *v)
            a->uid = v, i++;
        else if (strcmp(f, "--ready-fd") == 0 && parse_num(v, &fd) == 0)
            a->ready_fd = (int)fd, i++;
        else if (strcmp(f, "--uart-fd") == 0 && parse_num(v, &fd) == 0)
            a->uart_fd = (int)fd, i++;
        else if (strcmp(f, "--uart") == 0 && v)
            a->uart_path = v, i++;
        else if (strcmp(f, "--flash") == 0 && v)
            a->flash_path = v, i++;
        else if (strcmp(f, "--board") == 0 && v)
            a->board = v, i++;
        else
            return fprintf(stderr, "elk-fw: bad argument '%s'\n%s", f, usage), -1;
    }
    if ((a->uart_fd < 0 && !a->uart_path) || !a->flash_path)
        return fprintf(stderr, "%s", usage), -1;
    if (a->npu_efficiency > 1)
        return fprintf(stderr, "elk-fw: --npu-efficiency must be in (0, 1]\n"), -1;
    if (!a->erase_kb || !a->flash_mb || a->flash_mb * 1024 < 4 * a->erase_kb)
        return fprintf(stderr, "elk-fw: flash must hold at least 4 erase blocks\n"), -1;
    return 0;
}

static void log_stderr(void *ctx, const char *line)
{
    fprintf(stderr, "elk-fw: %s\n", line);
}

static int ready_fd = -1;

/* The firmware's first UART use (the console banner, written just before it starts reading frames)
 * tells --ready-fd that the board serves: set-up and the power-on check's first part are done. */
static void signal_ready(void)
{
    if (ready_fd >= 0) {
        (void)!write(ready_fd, "R", 1);
        close(ready_fd);
        ready_fd = -1;
    }
}

static int uart_read_ready(void *ctx, uint8_t *buf, int cap, int timeout_ms)
{
    signal_ready();
    return posix_uart_read(ctx, buf, cap, timeout_ms);
}

static int uart_write_ready(void *ctx, const uint8_t *buf, int n)
{
    signal_ready();
    return posix_uart_write(ctx, buf, n);
}

/* The OS generator (getrandom) as the board's RNG. */
static int posix_random(void *ctx, uint8_t *out, uint32_t n)
{
    (void)ctx;
    while (n) {
        ssize_t got = getrandom(out, n, 0);
        if (got <= 0)
            return ELK_E_IO;
        out += got, n -= (uint32_t)got;
    }
    return ELK_OK;
}

/* Board id when --uid is not given: this machine's id and the flash file's absolute path, so two
 * emulated boards on one host (two flash files) differ, as two chips' serial numbers would. */
static uint32_t default_uid(const char *flash_path, char *out, uint32_t cap)
{
    uint32_t n = 0;
    FILE *f = fopen("/etc/machine-id", "r");
    if (f) {
        n = (uint32_t)fread(out, 1, cap / 2, f);
        fclose(f);
    }
    char *abs = realpath(flash_path, NULL);
    const char *path = abs ? abs : flash_path;
    size_t len = strlen(path);
    if (len > cap - n)
        len = cap - n;
    memcpy(out + n, path, len);
    free(abs);
    return n + (uint32_t)len;
}

int main(int argc, char **argv)
{
    board_args a = { .uart_fd = -1, .ready_fd = -1, .board = ELK_BOARD_NAME, .flash_mb = 64, .erase_kb = 4, .ram_mb = 512,
                  .baud = 115200, .max_baud = 3000000, .threads = 1, .npu_efficiency = 1.0 };
    if (parse_args(argc, argv, &a) != 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    static posix_uart uart;
    static posix_flash flash;
    char err[256];
    if (posix_uart_open(&uart, a.uart_fd, a.uart_path, (uint32_t)a.baud) != ELK_OK) {
        fprintf(stderr, "elk-fw: cannot open the UART %s\n", a.uart_path ? a.uart_path : "fd");
        return 1;
    }
    uart.broken_above = (uint32_t)a.broken_above;
    uart.strict_rate = a.strict_rate;
    if (posix_flash_open(&flash, a.flash_path, a.flash_mb << 20, err, sizeof err) != ELK_OK) {
        fprintf(stderr, "elk-fw: %s\n", err);
        return 1;
    }
    /* Board RAM: reserved, not committed; pages appear as the model touches them. */
    uint64_t ram_size = a.ram_mb << 20;
    void *ram = mmap(NULL, (size_t)ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (ram == MAP_FAILED) {
        fprintf(stderr, "elk-fw: cannot reserve %llu MiB of RAM\n", a.ram_mb);
        return 1;
    }
    elk_pool *pool = NULL;
    if (a.threads > 1 && elk_pool_create(&pool, (int)a.threads) != ELK_OK)
        pool = NULL;
    elk_board b = {
        .name = a.board,
        .uart = { a.ready_fd >= 0 ? uart_read_ready : posix_uart_read,
                  a.ready_fd >= 0 ? uart_write_ready : posix_uart_write, &uart },
        .uart_set_baud = posix_uart_set_baud,
        .baud = (uint32_t)a.baud,
        .max_baud = (uint32_t)a.max_baud,
        .flash = flash.map,
        .flash_size = flash.size,
        .erase_block = (uint32_t)(a.erase_kb << 10),
        .flash_erase = posix_flash_erase,
        .flash_write = posix_flash_write,
        .flash_sync = posix_flash_sync,
        .flash_ctx = &flash,
        .now_us = posix_now_us,
        .log = a.quiet ? NULL : log_stderr,
        .ram = ram,
        .ram_size = ram_size,
        .exec = elk_pool_exec(pool),
        .npu_kind = a.npu_kind,
        .npu_tops = a.npu_tops * a.npu_efficiency,
        .npu_dma_gbs = a.npu_dma_gbs,
        .npu_chunk = (uint32_t)a.npu_chunk,
        .random = a.no_rng ? NULL : posix_random,
    };
    static char uid[512];
    if (a.uid) {
        b.uid = (const uint8_t *)a.uid;
        b.uid_len = (uint32_t)strlen(a.uid);
    } else {
        b.uid_len = default_uid(a.flash_path, uid, sizeof uid);
        b.uid = (const uint8_t *)uid;
    }
    ready_fd = a.ready_fd;
    int rc = elk_fw_run(&b);
    fprintf(stderr, "elk-fw: UART failed (%d), stopping\n", rc);
    return 1;
}
