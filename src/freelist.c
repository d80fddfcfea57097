/*
 * freelist.c - free-list hardening, always on: the per-process key that
 * encodes every free-list link, and the report of a corrupted link.
 *
 * Every free list (a thread cache's, a batch between it and mcentral, a
 * span's) links its objects through their first word, stored encoded: the
 * next object's address xor the address of the word itself xor the key
 * (glibc's safe-linking with mimalloc's key; sm_freelist_encode and
 * sm_freelist_decode in internal.h, inline in the fast paths).  The key's
 * high 16 bits are never all zero, so any plain address written over a
 * link (an overflow from the object before, a write after free) decodes to
 * a non-canonical value, which every pop and walk rejects before following
 * it (sm_freelist_bad); sm_freelist_corrupt reports it and aborts.
 *
 * The key is drawn once, in phase 1 of start-up (init.c), before the first
 * list is made, from the kernel's random bytes without a system call or
 * malloc.
 *
 * This is the core's, not checked mode's: every build's free path depends
 * on it.  Only when checked mode fills free objects with poison can a
 * corrupted link be pinned on the object that overflowed; the report asks
 * check.c then (sm_check_blame_link), and otherwise never calls it.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

#include "internal.h"

SM_HIDDEN uintptr_t sm_freelist_key;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void sm_freelist_init(void)
{
    /* The kernel's 16 random bytes for this process, mixed with the clock
     * and a stack address; no system call, no malloc. */
    uint64_t r[2] = {0, 0};
    const void *at = (const void *)getauxval(AT_RANDOM);
    if (at != NULL)
        memcpy(r, at, sizeof r);
    uint64_t key = mix64(r[0] ^ mix64(r[1] ^ sm_nanotime() ^ (uintptr_t)&r));
    if ((key >> SM_ADDR_BITS) == 0)
        key |= (uint64_t)1 << 63;
    sm_freelist_key = (uintptr_t)key;
}

void sm_freelist_corrupt(const char *fn, const void *obj, const void *link)
{
    if (obj != NULL && (sm_check_slow & SM_CHECK_FILL))
        sm_check_blame_link(fn, obj);   /* aborts if it can name the object */
    char buf[96];
    size_t n = 0;
    if (obj != NULL) {
        n += sm_fmt_hex(buf + n, (uintptr_t)obj);
        memcpy(buf + n, " links to ", 10);
        n += 10;
    } else {
        memcpy(buf + n, "bad link ", 9);
        n += 9;
    }
    n += sm_fmt_hex(buf + n, (uintptr_t)link);
    buf[n] = '\0';
    char head[64];
    size_t h = strlen(fn);
    if (h > 32)
        h = 32;
    memcpy(head, fn, h);
    memcpy(head + h, "(): free list corrupted: ", 26);
    sm_warn(head, buf, NULL);
    abort();
}
