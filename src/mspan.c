/*
 * mspan.c - a small-object span: a run of pages cut into objects of one size
 * class, with a bitmap of the objects that are free in it (Go's allocBits;
 * mspan.nfree counts them).
 *
 * Why a bitmap and not a list through the free objects: a span's free
 * objects come back from thread caches in whatever order the program freed
 * them, and an object that sat in the span for a while is no longer in any
 * CPU cache.  A list would make every refill a chain of dependent loads from
 * memory, one per object (in a benchmark that frees 9 MiB of objects in a
 * random order, taking objects from spans was 38% of the time).  With the
 * bitmap, giving an object back touches only the span (one bit, found by
 * the exact division of sm_mspan_objindex), and a refill scans at most 8
 * words and links the objects it takes in address order with stores only:
 * no load waits on another, and the prefetcher sees an ascending stream.  A
 * new span starts with every bit set, so it needs no carving either.
 *
 * The list a refill makes is a thread cache's, so its links are encoded
 * (sm_freelist_encode, internal.h): two xors per object.  The span itself
 * keeps no links in its free objects, so nothing a program writes into a
 * freed object can mislead it; a bit already set when an object comes back
 * is a double free.
 *
 * Under valgrind a new span's memory is made inaccessible: its objects
 * become accessible only while they are handed out (check.c).  Objects are
 * then taken one at a time (sm_mspan_take_one), which writes nothing in
 * them.
 *
 * Invariant: nfree == the number of bits set in freebits, all below the
 * class's object count; freebits[i] == 0 for i < freeword.
 * The owning mcentral's lock guards every field used here.
 */
#include <string.h>

#include "internal.h"

void sm_mspan_init_small(struct sm_mspan *s, uint8_t sizeclass)
{
    uint32_t nobjs = sm_class_to_nobjs[sizeclass];
    s->sizeclass = sizeclass;
    s->elemsize = sm_class_to_size[sizeclass];
    s->nfree = nobjs;
    s->freeword = 0;
    s->list = SM_LIST_NONE;
    uint32_t full = nobjs / 64, rest = nobjs % 64;
    memset(s->freebits, 0, sizeof s->freebits);
    memset(s->freebits, 0xff, full * sizeof s->freebits[0]);
    if (rest)
        s->freebits[full] = ((uint64_t)1 << rest) - 1;
    SM_DEBUG_ASSERT(s->checkstate == NULL);
    if (sm_unlikely(sm_check_slow & SM_CHECK_VALGRIND))
        sm_valgrind_span_new(s);
}

uint32_t sm_mspan_take(struct sm_mspan *s, uint32_t n, void **head)
{
    uint32_t got = 0;
    /* Each link is stored encoded at the address it is stored to; the
     * first one goes to the local first, and decodes from there the same
     * way, so the loop has no special case. */
    uintptr_t key = sm_freelist_key;
    void *first = NULL;
    void **link = &first;
    uint32_t nwords = (sm_class_to_nobjs[s->sizeclass] + 63) / 64;
    uint32_t w = s->freeword;
    SM_DEBUG_ASSERT(!(sm_check_slow & SM_CHECK_VALGRIND));
    for (; w < nwords && got < n; w++) {
        uint64_t bits = s->freebits[w];
        char *base = (char *)s->base + (size_t)w * 64 * s->elemsize;
        while (bits != 0 && got < n) {
            char *p = base + (size_t)__builtin_ctzll(bits) * s->elemsize;
            bits &= bits - 1;
            *link = (void *)((uintptr_t)p ^ (uintptr_t)link ^ key);   /* encoded */
            link = (void **)p;
            got++;
        }
        s->freebits[w] = bits;
        if (bits != 0)
            break;
    }
    s->freeword = w;
    if (got == 0)
        return 0;
    *link = sm_freelist_encode(link, *head);   /* in front of the list */
    *head = sm_freelist_decode(&first, first);
    s->nfree -= got;
    return got;
}

void *sm_mspan_take_one(struct sm_mspan *s)
{
    uint32_t nwords = (sm_class_to_nobjs[s->sizeclass] + 63) / 64;
    for (uint32_t w = s->freeword; w < nwords; w++) {
        uint64_t bits = s->freebits[w];
        if (bits != 0) {
            uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bits);
            s->freebits[w] = bits & (bits - 1);
            s->freeword = w;
            s->nfree--;
            return (char *)s->base + (size_t)i * s->elemsize;
        }
    }
    s->freeword = nwords;
    return NULL;
}

void sm_mspan_put(struct sm_mspan *s, void *p)
{
    sm_mspan_put_index(s, sm_mspan_objindex(s, (uintptr_t)p), p);
}
