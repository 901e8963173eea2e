/* A printf subset for error messages in the freestanding core (no stdio): enough to name the
 * failing part of an image with offsets and sizes. Not a general formatter: no width or padding. */
#include "util.h"

typedef struct {
    char *buf;
    size_t cap, len;
} out_t;

static void put(out_t *o, char c)
{
    if (o->len + 1 < o->cap)
        o->buf[o->len++] = c;
}

static void put_u64(out_t *o, unsigned long long v, unsigned base)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n)
        put(o, tmp[--n]);
}

static void put_i64(out_t *o, long long v)
{
    if (v < 0) {
        put(o, '-');
        put_u64(o, 0ull - (unsigned long long)v, 10);
    } else {
        put_u64(o, (unsigned long long)v, 10);
    }
}

int elk_vfmt(char *buf, size_t cap, const char *fmt, va_list ap)
{
    out_t o = { buf, cap, 0 };
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            put(&o, *f);
            continue;
        }
        int longs = 0;
        f++;
        while (*f == 'l') {
            longs++;
            f++;
        }
        switch (*f) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            for (s = s ? s : "(null)"; *s; s++)
                put(&o, *s);
            break;
        }
        case 'c': put(&o, (char)va_arg(ap, int)); break;
        case 'd':
            put_i64(&o, longs >= 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int));
            break;
        case 'u':
        case 'x': {
            unsigned base = *f == 'x' ? 16 : 10;
            unsigned long long v = longs >= 2 ? va_arg(ap, unsigned long long)
                                 : longs   ? va_arg(ap, unsigned long)
                                           : va_arg(ap, unsigned);
            put_u64(&o, v, base);
            break;
        }
        case '%': put(&o, '%'); break;
        case '\0': f--; break; /* lone % at the end */
        default: put(&o, '%'); put(&o, *f); break;
        }
    }
    if (cap)
        buf[o.len] = '\0';
    return (int)o.len;
}

int elk_fmt(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = elk_vfmt(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}
