/*
 * pagemap.c - address to span in O(1), for any pointer we handed out.
 *
 * As Go's arena index: the 48-bit address space is cut into 64 MiB arenas;
 * sm_arenas[addr >> 26] locates the arena's metadata or is 0 for
 * address space that is not ours (biased: internal.h).  Each arena holds, per 8 KiB page:
 *   pagekind   one byte, all that free's fast path reads (types.h);
 *   spans      the span owning the page: every page of an in-use span, the
 *              first and last page of a free run (enough to join neighbours);
 *   released   one bit: the page is not resident (fresh, or given back).
 *   zero       one bit: the page is known to be zero (fresh from the OS, or
 *              given back with MADV_DONTNEED), so calloc does not clear it.
 *
 * Arena metadata comes from the OS layer.  It is written under the heap lock
 * only; the fast path reads pagekind of pages it owns objects in, which were
 * published before the objects were handed out.
 */
#include <string.h>

#include "internal.h"

SM_HIDDEN uintptr_t sm_arenas[SM_ARENA_INDEX_LEN];

_Static_assert(offsetof(struct sm_heap_arena, pagekind) == 0,
               "sm_arenas locates an arena by its pagekind array");

/* The metadata of arena ai, or NULL if its address would make the biased
 * entry 0 (the metadata sitting at exactly ai << 13: then another copy). */
static struct sm_heap_arena *arena_meta(uintptr_t ai, uint64_t *meta_bytes)
{
    size_t bytes = (sizeof(struct sm_heap_arena) + 4095) & ~(size_t)4095;
    struct sm_heap_arena *ar = sm_os_alloc(sizeof *ar);
    if (ar != NULL && (uintptr_t)ar == sm_arena_bias(ai)) {
        struct sm_heap_arena *other = sm_os_alloc(sizeof *ar);
        sm_os_free(ar, sizeof *ar);
        ar = other;
    }
    if (ar != NULL)
        *meta_bytes += bytes;
    return ar;
}

bool sm_pagemap_add_region(uintptr_t base, size_t size, uint64_t *meta_bytes)
{
    for (uintptr_t a = base; a < base + size; a += SM_ARENA_SIZE) {
        uintptr_t ai = a >> SM_ARENA_SHIFT;
        if (sm_arenas[ai] != 0)
            continue;
        struct sm_heap_arena *ar = arena_meta(ai, meta_bytes);
        if (ar == NULL)
            return false;   /* arenas registered so far stay: harmless */
        __atomic_store_n(&sm_arenas[ai], (uintptr_t)ar - sm_arena_bias(ai), __ATOMIC_RELEASE);
    }
    return true;
}

/* Call fn over the parts of [base, base + npages pages) in each arena. */
#define FOR_EACH_ARENA_PART(base, npages, ar, idx, n, body)                  \
    do {                                                                      \
        uintptr_t a_ = (base);                                                \
        size_t left_ = (npages);                                              \
        while (left_ > 0) {                                                   \
            struct sm_heap_arena *ar = sm_pagemap_arena(a_);                  \
            size_t idx = sm_pagemap_index(a_);                                \
            size_t n = SM_PAGES_PER_ARENA - idx;                              \
            if (n > left_)                                                    \
                n = left_;                                                    \
            body;                                                             \
            a_ += (uintptr_t)n << SM_PAGE_SHIFT;                              \
            left_ -= n;                                                       \
        }                                                                     \
    } while (0)

/* Kind bytes are read without the heap lock: by free's fast path and
 * usable_size, for pointers whose span cannot change under them, while the
 * profiler sets or clears SM_PAGE_SLOW on that span because another of its
 * objects was sampled or freed.  Either value is right for such a reader
 * (a free that misses the mark belongs to an object with no record; one
 * that sees it finds none and goes on), so relaxed atomic stores and loads
 * suffice: they make the race a defined one and compile to plain moves. */
static void store_kinds(uint8_t *k, size_t n, uint8_t kind)
{
    for (size_t i = 0; i < n; i++)
        __atomic_store_n(&k[i], kind, __ATOMIC_RELAXED);
}

void sm_pagemap_set_kind(uintptr_t base, size_t npages, uint8_t kind)
{
    FOR_EACH_ARENA_PART(base, npages, ar, idx, n, store_kinds(&ar->pagekind[idx], n, kind));
}

void sm_pagemap_set_spans(uintptr_t base, size_t npages, struct sm_mspan *s)
{
    FOR_EACH_ARENA_PART(base, npages, ar, idx, n, {
        for (size_t i = 0; i < n; i++)
            ar->spans[idx + i] = s;
    });
}

void sm_pagemap_set_span(uintptr_t addr, struct sm_mspan *s)
{
    sm_pagemap_arena(addr)->spans[sm_pagemap_index(addr)] = s;
}

/* Bits [i, i+n) of a bitmap: count, set, or clear them word by word. */
static size_t bits_count(const uint64_t *bm, size_t i, size_t n)
{
    size_t c = 0;
    while (n > 0) {
        size_t w = i / 64, b = i % 64;
        size_t k = 64 - b < n ? 64 - b : n;
        uint64_t mask = (k == 64 ? ~(uint64_t)0 : (((uint64_t)1 << k) - 1)) << b;
        c += (size_t)__builtin_popcountll(bm[w] & mask);
        i += k;
        n -= k;
    }
    return c;
}

static void bits_set(uint64_t *bm, size_t i, size_t n, bool on)
{
    while (n > 0) {
        size_t w = i / 64, b = i % 64;
        size_t k = 64 - b < n ? 64 - b : n;
        uint64_t mask = (k == 64 ? ~(uint64_t)0 : (((uint64_t)1 << k) - 1)) << b;
        if (on)
            bm[w] |= mask;
        else
            bm[w] &= ~mask;
        i += k;
        n -= k;
    }
}

size_t sm_pagemap_count_released(uintptr_t base, size_t npages)
{
    size_t c = 0;
    FOR_EACH_ARENA_PART(base, npages, ar, idx, n, c += bits_count(ar->released, idx, n));
    return c;
}

void sm_pagemap_mark_released(uintptr_t base, size_t npages, bool released)
{
    FOR_EACH_ARENA_PART(base, npages, ar, idx, n, bits_set(ar->released, idx, n, released));
}

void sm_pagemap_mark_zero(uintptr_t base, size_t npages)
{
    FOR_EACH_ARENA_PART(base, npages, ar, idx, n, bits_set(ar->zero, idx, n, true));
}

size_t sm_pagemap_take_needzero(uintptr_t base, size_t npages)
{
    /* The last page not known to be zero, searched from the end. */
    size_t dirty = npages;
    while (dirty > 0) {
        uintptr_t a = base + ((uintptr_t)(dirty - 1) << SM_PAGE_SHIFT);
        struct sm_heap_arena *ar = sm_pagemap_arena(a);
        size_t idx = sm_pagemap_index(a);
        if (!(ar->zero[idx / 64] >> (idx % 64) & 1))
            break;
        dirty--;
    }
    FOR_EACH_ARENA_PART(base, npages, ar, idx, n, bits_set(ar->zero, idx, n, false));
    return dirty;
}
