/* POSIX board pieces behind elk_board (firmware/src/main/fw.h): a UART on a file descriptor with
 * software baud pacing, flash backed by a memory-mapped file, a monotonic clock.
 * Not here: protocol or slot logic (firmware/src/main). */
#ifndef ELK_BOARD_POSIX_H
#define ELK_BOARD_POSIX_H

#include <stdint.h>

typedef struct posix_uart {
    int fd;
    int is_tty;              /* a real serial device: termios sets the rate, no software pacing */
    uint32_t baud;           /* 0 = unthrottled */
    uint32_t broken_above;   /* emulate a cable that fails above this rate (0 = never) */
    int strict_rate;         /* emulated line: bytes arrive garbled while the host's side of the pty is
                                set to another rate than the board's, as on a real UART pair */
    uint64_t tx_free_us;     /* when the emulated line has sent everything written so far */
    uint64_t rx_free_us;     /* when the emulated line has delivered everything read so far */
} posix_uart;

int posix_uart_open(posix_uart *u, int fd, const char *path, uint32_t baud);
int posix_uart_read(void *ctx, uint8_t *buf, int cap, int timeout_ms);
int posix_uart_write(void *ctx, const uint8_t *buf, int n);
int posix_uart_set_baud(void *ctx, uint32_t baud);

typedef struct posix_flash {
    int fd;
    uint8_t *map;
    uint64_t size;
} posix_flash;

/* Open (creating or growing) the flash file at `size` bytes and map it shared. */
int posix_flash_open(posix_flash *f, const char *path, uint64_t size, char *err, int cap);
int posix_flash_erase(void *ctx, uint64_t off, uint64_t len);
int posix_flash_write(void *ctx, uint64_t off, const void *data, uint64_t len);
int posix_flash_sync(void *ctx);

uint64_t posix_now_us(void *ctx);
void posix_sleep_us(uint64_t us);

#endif /* ELK_BOARD_POSIX_H */
