/* libFuzzer harness: the board firmware's command handlers (firmware/src/main, with trust) driven by
 * fuzzed UART bytes: framing, HELLO/INFO, flash/verify/commit, provisioning, generation on a tiny image.
 * The board is RAM: 64 KiB flash (16 x 4 KiB blocks, erased per input), 8 MiB working memory, a fake
 * clock. Input: the byte stream the host sends; elk_fw_run returns when it is used up. */
#include <stdint.h>
#include <string.h>
#ifdef ELK_FUZZ_LOG
#include <stdio.h>
#endif

#include "main/fw.h"

#define FLASH_SIZE (64u << 10)
#define ERASE (4u << 10)
#define RAM_SIZE (8u << 20)

/* The platform's CPU probe (firmware/platform/posix/cpu.c): no ISA extras, the reference kernels run. */
uint32_t elk_cpu_features(void);
uint32_t elk_cpu_features(void) { return 0; }

static uint8_t flash[FLASH_SIZE];
static uint8_t ram[RAM_SIZE] __attribute__((aligned(64)));

typedef struct feed {
    const uint8_t *p;
    size_t n, pos;
    uint64_t now;
} feed;

static int uart_read(void *ctx, uint8_t *buf, int cap, int timeout_ms)
{
    feed *f = ctx;
    f->now += (uint64_t)timeout_ms * 1000;  /* waiting costs time, so timeouts do expire */
    if (f->pos >= f->n)
        return ELK_E_IO;  /* the host is gone: elk_fw_run returns */
    size_t k = f->n - f->pos < 61 ? f->n - f->pos : 61;  /* odd-sized gulps split frames anywhere */
    if ((size_t)cap < k)
        k = (size_t)cap;
    memcpy(buf, f->p + f->pos, k);
    f->pos += k;
    return (int)k;
}

static int uart_write(void *ctx, const uint8_t *buf, int n)
{
    volatile uint8_t sink = 0;
    for (int i = 0; i < n; i++)
        sink ^= buf[i];  /* ASan checks every byte the firmware claims to send */
    return ELK_OK;
}

static int set_baud(void *ctx, uint32_t baud) { return ELK_OK; }

#ifdef ELK_FUZZ_LOG /* -DELK_FUZZ_LOG: print the firmware's diagnostics (to see what a seed reaches) */
static void log_line(void *ctx, const char *line) { fprintf(stderr, "fw: %s\n", line); }
#endif

static int flash_erase(void *ctx, uint64_t off, uint64_t len)
{
    if (off > FLASH_SIZE || len > FLASH_SIZE - off || off % ERASE)
        __builtin_trap();  /* the firmware must never erase outside its flash or off a block */
    memset(flash + off, 0xFF, len);
    return ELK_OK;
}

static int flash_write(void *ctx, uint64_t off, const void *data, uint64_t len)
{
    if (off > FLASH_SIZE || len > FLASH_SIZE - off)
        __builtin_trap();
    memcpy(flash + off, data, len);
    return ELK_OK;
}

static int flash_sync(void *ctx) { return ELK_OK; }

static uint64_t now_us(void *ctx)
{
    feed *f = ctx;
    return f->now += 50;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    feed f = {.p = data, .n = size};
    memset(flash, 0xFF, sizeof flash);
    elk_board b = {
        .name = "fuzz", .uart = {uart_read, uart_write, &f}, .uart_set_baud = set_baud,
        .baud = 0, .max_baud = 3000000, .flash = flash, .flash_size = FLASH_SIZE, .erase_block = ERASE,
        .flash_erase = flash_erase, .flash_write = flash_write, .flash_sync = flash_sync, .flash_ctx = NULL,
        .now_us = now_us, .clock_ctx = &f, .ram = ram, .ram_size = RAM_SIZE,
    };
#ifdef ELK_FUZZ_LOG
    b.log = log_line;
#endif
    elk_fw_run(&b);
    return 0;
}
