/* UART on a file descriptor: the master side of a pty (emulated board) or a serial device (a Linux
 * board). On a pty the line rate is emulated in software: bytes leave and are taken in no faster
 * than baud / 10 per second (8N1), because qemu-user cannot set a pty above 460800 baud. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "board_posix.h"
#include "elk/spec.h"

/* Gaps shorter than this do not reset the receive pacing. A pty throttles its writer in bursts (the
 * kernel refills the buffer only after the reader drained most of it); those gaps are an artifact of the
 * pty, not idle line time, and counting them would make a paced pty ~20% slower than the wire. */
#define RX_SLACK_US 20000u

static speed_t tty_speed(uint32_t baud)
{
    switch (baud) {
    case 9600: return B9600;
    case 19200: return B19200;
    case 38400: return B38400;
    case 57600: return B57600;
    case 115200: return B115200;
    case 230400: return B230400;
    case 460800: return B460800;
    case 921600: return B921600;
    case 1000000: return B1000000;
    case 1500000: return B1500000;
    case 2000000: return B2000000;
    case 3000000: return B3000000;
    default: return 0;
    }
}

int posix_uart_open(posix_uart *u, int fd, const char *path, uint32_t baud)
{
    u->fd = fd;
    u->baud = baud;
    u->tx_free_us = u->rx_free_us = 0;
    u->is_tty = 0;
    if (path) {
        u->fd = open(path, O_RDWR | O_NOCTTY);
        if (u->fd < 0)
            return ELK_E_IO;
        u->is_tty = isatty(u->fd);
    }
    if (u->is_tty) {
        struct termios t;
        if (tcgetattr(u->fd, &t) != 0)
            return ELK_E_IO;
        cfmakeraw(&t);
        t.c_cc[VMIN] = 0;
        t.c_cc[VTIME] = 0;
        if (tcsetattr(u->fd, TCSANOW, &t) != 0)
            return ELK_E_IO;
        if (baud && posix_uart_set_baud(u, baud) != ELK_OK)
            return ELK_E_IO;
    }
    int fl = fcntl(u->fd, F_GETFL);
    fcntl(u->fd, F_SETFL, fl | O_NONBLOCK);
    return ELK_OK;
}

int posix_uart_set_baud(void *ctx, uint32_t baud)
{
    posix_uart *u = ctx;
    if (u->is_tty) {
        struct termios t;
        speed_t s = tty_speed(baud);
        if (!s || tcgetattr(u->fd, &t) != 0)
            return ELK_E_RANGE;
        tcdrain(u->fd);
        cfsetispeed(&t, s);
        cfsetospeed(&t, s);
        if (tcsetattr(u->fd, TCSANOW, &t) != 0)
            return ELK_E_IO;
    }
    if (u->baud)  /* an unthrottled line stays unthrottled; the rate is only reported */
        u->baud = baud;
    return ELK_OK;
}

static int paced(const posix_uart *u)
{
    return !u->is_tty && u->baud != 0;
}

/* Microseconds the line needs for n bytes (10 bits each). */
static uint64_t wire_us(const posix_uart *u, uint64_t n)
{
    return n * 10u * 1000000u / u->baud;
}

static int broken(const posix_uart *u)
{
    return u->broken_above && u->baud > u->broken_above;
}

/* --strict-rate: the rate the host set on its side of the pty (the pair shares one termios; 0 = not
 * one of the rates tty_speed knows), and whether it differs from the board's. */
static uint32_t host_rate(const posix_uart *u)
{
    static const uint32_t rates[] = { 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000,
                                      1500000, 2000000, 3000000 };
    struct termios t;
    if (tcgetattr(u->fd, &t) != 0)
        return 0;
    speed_t s = cfgetospeed(&t);
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++)
        if (tty_speed(rates[i]) == s)
            return rates[i];
    return 0;
}

static int mismatched(const posix_uart *u)
{
    if (!u->strict_rate || u->is_tty || !u->baud)
        return 0;
    uint32_t h = host_rate(u);
    return h && h != u->baud;
}

/* What a receiver at the wrong rate makes of the bytes: garbage (never a valid frame: the CRC fails). */
static void garble(uint8_t *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(buf[i] ^ 0xA5u);
}

int posix_uart_read(void *ctx, uint8_t *buf, int cap, int timeout_ms)
{
    posix_uart *u = ctx;
    struct pollfd p = { u->fd, POLLIN, 0 };
    int r = poll(&p, 1, timeout_ms);
    if (r < 0)
        return errno == EINTR ? 0 : ELK_E_IO;
    if (r == 0)
        return 0;
    if (!(p.revents & POLLIN)) {
        /* nobody holds the other end (pty slave closed): wait instead of spinning */
        posix_sleep_us((uint64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000u);
        return 0;
    }
    if (paced(u)) {
        /* take about 5 ms of line time per read: small enough to track the rate, large enough that
         * syscall and sleep overheads stay a small fraction at high rates */
        int gulp = (int)(u->baud / 10 / 200);
        if (gulp < 16)
            gulp = 16;
        if (cap > gulp)
            cap = gulp;
    }
    ssize_t n = read(u->fd, buf, (size_t)cap);
    if (n < 0)
        return (errno == EAGAIN || errno == EINTR || errno == EIO) ? 0 : ELK_E_IO;
    if (paced(u)) {
        uint64_t now = posix_now_us(NULL);
        if (u->rx_free_us + RX_SLACK_US < now)  /* the line was idle: pace from now */
            u->rx_free_us = now;
        u->rx_free_us += wire_us(u, (uint64_t)n);
        if (u->rx_free_us > now)
            posix_sleep_us(u->rx_free_us - now);
    }
    if (n > 0 && mismatched(u))
        garble(buf, (size_t)n);
    return broken(u) ? 0 : (int)n;  /* a failing cable at this rate: nothing arrives intact */
}

/* Write all of buf, waiting for room; a line nobody reads for 200 ms drops the rest, as a real
 * UART transmits into the void when no cable is attached. */
static int write_all(posix_uart *u, const uint8_t *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(u->fd, buf, n);
        if (w > 0) {
            buf += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR && errno != EIO)
            return ELK_E_IO;
        struct pollfd p = { u->fd, POLLOUT, 0 };
        if (poll(&p, 1, 200) <= 0 || !(p.revents & POLLOUT))
            return ELK_OK;
    }
    return ELK_OK;
}

int posix_uart_write(void *ctx, const uint8_t *buf, int n)
{
    posix_uart *u = ctx;
    if (broken(u))
        return ELK_OK;
    if (!paced(u))
        return write_all(u, buf, (size_t)n);
    /* chunks of ~5 ms of line time, each released when the line would have sent the previous one */
    size_t chunk = u->baud / 10 / 200;
    if (chunk < 1)
        chunk = 1;
    for (size_t off = 0; off < (size_t)n;) {
        size_t k = (size_t)n - off < chunk ? (size_t)n - off : chunk;
        uint8_t bad[256];
        int wrong = mismatched(u);
        if (wrong && k > sizeof bad)
            k = sizeof bad;
        uint64_t now = posix_now_us(NULL);
        if (u->tx_free_us > now)
            posix_sleep_us(u->tx_free_us - now);
        else if (u->tx_free_us + 2000 < now)
            u->tx_free_us = now;
        if (wrong) {
            memcpy(bad, buf + off, k);
            garble(bad, k);
        }
        int rc = write_all(u, wrong ? bad : buf + off, k);
        if (rc)
            return rc;
        u->tx_free_us += wire_us(u, k);
        off += k;
    }
    return ELK_OK;
}
