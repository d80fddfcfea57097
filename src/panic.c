/*
 * panic.c - reporting: fatal errors, bad pointers, warnings.
 *
 * Everything here writes with write(2) into a stack buffer: no malloc, no
 * stdio, no locks, so it is safe from any tier, with any lock held, and from
 * a broken heap.  A report is one line starting "spanmalloc: ".
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

size_t sm_fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

size_t sm_fmt_hex(char *buf, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    buf[0] = '0';
    buf[1] = 'x';
    for (size_t i = 0; i < n; i++)
        buf[2 + i] = tmp[n - 1 - i];
    return n + 2;
}

static size_t append(char *buf, size_t len, size_t cap, const char *s)
{
    if (s == NULL)
        return len;
    size_t n = strlen(s);
    if (n > cap - len)
        n = cap - len;
    memcpy(buf + len, s, n);
    return len + n;
}

static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, buf, len);
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

void sm_warn(const char *a, const char *b, const char *c)
{
    char buf[512];
    size_t len = append(buf, 0, sizeof buf - 1, "spanmalloc: ");
    len = append(buf, len, sizeof buf - 1, a);
    len = append(buf, len, sizeof buf - 1, b);
    len = append(buf, len, sizeof buf - 1, c);
    buf[len++] = '\n';
    write_all(buf, len);
}

void sm_throw(const char *msg)
{
    sm_warn("fatal error: ", msg, NULL);
    abort();
}

void sm_bad_pointer(const char *fn, const char *what, const void *p)
{
    char hex[24];
    hex[sm_fmt_hex(hex, (uint64_t)(uintptr_t)p)] = '\0';
    char buf[256];
    size_t len = append(buf, 0, sizeof buf - 1, "spanmalloc: ");
    len = append(buf, len, sizeof buf - 1, fn);
    len = append(buf, len, sizeof buf - 1, "(): ");
    len = append(buf, len, sizeof buf - 1, what);
    len = append(buf, len, sizeof buf - 1, " ");
    len = append(buf, len, sizeof buf - 1, hex);
    buf[len++] = '\n';
    write_all(buf, len);
    abort();
}

uint64_t sm_nanotime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sm_nanotime_coarse(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
