/*
 * large.c - large objects (over SM_MAX_SMALL_SIZE): a span of whole pages
 * each, from mheap or from the thread's cache of large spans it freed
 * recently; their realloc in place; their free.
 *
 * malloc(n), n > 32 KiB, takes a span of ceil(n / 8 KiB) pages: one this
 * thread freed recently (the cache below), or a new one from mheap (an
 * aligned one when the alignment is above a page).  The profiler's
 * countdown is made here as on the small paths.  realloc keeps the pages
 * when the new size fits them; it grows over the free pages after the span
 * and shrinks by giving its tail back (mheap.c); when it has to move to
 * grow, it gets a quarter more pages than asked, so growing step by step
 * copies O(n) bytes in all.  free gives the span to the thread's cache, or
 * back to mheap.
 *
 * The large cache: per thread, a few large spans freed recently, kept for
 * the thread's next large malloc of the same size.
 *
 * Without it every large malloc and every large free goes to the heap under
 * its lock: a best-fit search, a page map write for every page of the span,
 * joining the free neighbours, a clock read: about 2000 instructions for a
 * 64 KiB malloc+free pair.  Programs free and allocate buffers of the same
 * sizes over and over (I/O buffers, a vector cleared and refilled), so, as
 * tcmalloc's and jemalloc's thread caches hold the smaller large sizes and
 * glibc keeps freed chunks below its mmap threshold, a thread keeps up to
 * SM_LARGECACHE_SLOTS spans of at most 1 MiB each and 2 MiB together
 * (types.h).  A malloc takes a span of the same page count, or of up to an
 * eighth more, from a slot; a free puts its span into an empty slot, and
 * when there is none, or the bytes would pass the bound, evicts slots in
 * turn to the heap.  Larger spans, aligned allocations and threads with no
 * cache yet go to the heap directly.
 *
 * Stats.  A cached span is not a live object: its free counted it in frees
 * and took its bytes out of heap_alloc exactly as a free to the heap does.
 * Its pages stay in heap_inuse (the heap lent them out and has not got them
 * back), as the spans of small objects cached in a thread's lists do.  So
 * DESIGN §4's invariants hold unchanged (heap_alloc <= heap_inuse,
 * heap_inuse + heap_idle == heap_sys, ...), and heap_inuse - heap_alloc
 * includes at most 2 MiB per thread of cached large spans.  The counts live
 * in the cache (written by its thread only, merged on read as the small
 * counts are, and kept in sm_dead when the thread exits).  The span's state
 * SM_SPAN_CACHED tells the heap not to count its return as a second free,
 * and makes a second free of the pointer a reported double free.
 *
 * Giving spans back.  They go to the heap, where the release policy applies
 * to them as to any freed run:
 *   - the thread's own, at thread exit and when the thread sees a new
 *     sm_free_os_memory generation (sm_mcache_flush);
 *   - every thread's, from sm_free_os_memory and from the heap before it
 *     grows past the soft memory limit (sm_largecache_reclaim_all);
 *   - idle ones: at every tick the scavenger takes the spans that have sat
 *     in a cache for SM_LARGECACHE_IDLE_TICKS ticks (about a second), so a
 *     thread that stops allocating does not keep them.  With
 *     SPANMALLOC_SCAVENGE=off they stay until one of the above.
 *
 * Synchronization, without a lock.  Only the owning thread puts a span in
 * (a release store into an empty slot).  The owner takes one out for reuse
 * and any thread takes them out to give back, both by an atomic exchange,
 * so each span leaves exactly once, and the thread that took it owns it.
 * npages[], occupied, held and next are the owner's view: a slot another
 * thread emptied still looks occupied to the owner until the owner tries to
 * take it (and finds NULL) or evicts it.  epoch[] is written by the owner
 * and read by the scavenger as a hint (a stale value gives a span back a
 * tick early or late).  Walking other threads' caches takes sm_mcache_lock,
 * which keeps them from exiting meanwhile; the spans go to the heap after
 * it is dropped.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

static struct sm_mspan *slot_peek(struct sm_largecache *lc, uint32_t i)
{
    return __atomic_load_n(&lc->slot[i], __ATOMIC_RELAXED);
}

static struct sm_mspan *slot_take(struct sm_largecache *lc, uint32_t i)
{
    if (slot_peek(lc, i) == NULL)
        return NULL;
    return __atomic_exchange_n(&lc->slot[i], NULL, __ATOMIC_ACQUIRE);
}

/* The heap does not count the return of a CACHED span as a free. */
static void give_back(struct sm_mspan *s)
{
    sm_mheap_free(&sm_heap, s);
}

struct sm_mspan *sm_largecache_alloc(struct sm_mcache *c, size_t npages)
{
    struct sm_largecache *lc = &c->large;
    size_t most = npages + npages / 8;
    uint32_t best = SM_LARGECACHE_SLOTS;
    size_t best_pages = SIZE_MAX;
    for (uint32_t m = lc->occupied; m != 0; m &= m - 1) {
        uint32_t i = (uint32_t)__builtin_ctz(m);
        size_t n = lc->npages[i];
        if (n >= npages && n <= most && n < best_pages) {
            best = i;
            best_pages = n;
            if (n == npages)
                break;
        }
    }
    if (best == SM_LARGECACHE_SLOTS)
        return NULL;
    lc->occupied &= ~(1u << best);
    lc->held -= lc->npages[best];
    struct sm_mspan *s = slot_take(lc, best);
    if (s == NULL)
        return NULL;   /* given back by another thread meanwhile */
    s->state = SM_SPAN_LARGE;
    s->needzero = s->npages;
    SM_COUNTER_ADD(lc->nmalloc, 1);
    SM_COUNTER_ADD(lc->bytes_alloc, (uint64_t)s->npages << SM_PAGE_SHIFT);
    return s;
}

/* Give slot i to the heap to make room. */
static void evict(struct sm_largecache *lc, uint32_t i)
{
    if (!(lc->occupied & (1u << i)))
        return;
    lc->occupied &= ~(1u << i);
    lc->held -= lc->npages[i];
    struct sm_mspan *s = slot_take(lc, i);
    if (s != NULL)
        give_back(s);
}

bool sm_largecache_free(struct sm_mcache *c, struct sm_mspan *s)
{
    struct sm_largecache *lc = &c->large;
    size_t n = s->npages;
    if (n > SM_LARGECACHE_MAX_PAGES)
        return false;
    while (lc->occupied == (1u << SM_LARGECACHE_SLOTS) - 1 ||
           ((lc->held + n) << SM_PAGE_SHIFT) > SM_LARGECACHE_MAX_BYTES) {
        uint32_t i = lc->next;
        lc->next = (i + 1) % SM_LARGECACHE_SLOTS;
        evict(lc, i);
    }
    uint32_t i = (uint32_t)__builtin_ctz(~lc->occupied);
    s->state = SM_SPAN_CACHED;
    SM_COUNTER_ADD(lc->nfree, 1);
    SM_COUNTER_ADD(lc->bytes_free, (uint64_t)n << SM_PAGE_SHIFT);
    lc->npages[i] = (uint32_t)n;
    lc->occupied |= 1u << i;
    lc->held += (uint32_t)n;
    __atomic_store_n(&lc->epoch[i], __atomic_load_n(&sm_scav_epoch, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&lc->slot[i], s, __ATOMIC_RELEASE);
    return true;
}

void sm_largecache_flush(struct sm_mcache *c)
{
    for (uint32_t i = 0; i < SM_LARGECACHE_SLOTS; i++)
        evict(&c->large, i);
}

size_t sm_largecache_reclaim(uint32_t before_epoch)
{
    struct sm_mspan *taken = NULL;
    size_t bytes = 0;
    pthread_mutex_lock(&sm_mcache_lock);
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next) {
        struct sm_largecache *lc = &c->large;
        for (uint32_t i = 0; i < SM_LARGECACHE_SLOTS; i++) {
            if (before_epoch != UINT32_MAX &&
                __atomic_load_n(&lc->epoch[i], __ATOMIC_RELAXED) > before_epoch)
                continue;
            struct sm_mspan *s = slot_take(lc, i);
            if (s != NULL) {
                s->next = taken;
                taken = s;
            }
        }
    }
    pthread_mutex_unlock(&sm_mcache_lock);
    while (taken != NULL) {
        struct sm_mspan *s = taken;
        taken = s->next;
        s->next = NULL;
        bytes += s->npages << SM_PAGE_SHIFT;
        give_back(s);
    }
    return bytes;
}

void sm_largecache_reclaim_all(void)
{
    sm_largecache_reclaim(UINT32_MAX);
}

/* ---- large objects ---- */

/* The profiler's countdown for a large object of size bytes at s: the same
 * one test the small paths make. */
static void large_count_sample(struct sm_mcache *c, struct sm_mspan *s, size_t size)
{
    s->reqsize = size;
    if (c != &sm_mcache_empty) {
        c->sample_left -= (intptr_t)size;
        if (sm_unlikely(c->sample_left < 0)) {
            c->sample_left = sm_mprof_next_sample(c);
            sm_mprof_record_alloc((void *)s->base, size);
        }
    }
}

/* A large object of size bytes in a span of npages pages. */
static void *large_alloc(size_t size, size_t npages, size_t align)
{
    sm_init();
    struct sm_mcache *c = sm_tls_mcache;
    struct sm_mspan *s = NULL;
    if (c != &sm_mcache_empty && align <= SM_PAGE_SIZE && npages <= SM_LARGECACHE_MAX_PAGES)
        s = sm_largecache_alloc(c, npages);
    if (s == NULL) {
        size_t align_pages = align > SM_PAGE_SIZE ? align >> SM_PAGE_SHIFT : 0;
        s = sm_mheap_alloc(&sm_heap, npages, align_pages, SM_PAGE_LARGE);
        if (s == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        sm_worker_start();
    }
    large_count_sample(c, s, size);
    if (sm_unlikely(sm_check_slow))
        sm_check_alloc_large(s);   /* its canary, or memcheck's block */
    return (void *)s->base;
}

SM_INLINE size_t pages_for(size_t size)
{
    size_t npages = (size + SM_PAGE_SIZE - 1) >> SM_PAGE_SHIFT;
    return npages ? npages : 1;
}

void *sm_large_alloc(size_t size, size_t align)
{
    if (sm_unlikely(size > SM_MAX_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    /* Checked mode: at least one byte past the request for the canary. */
    return large_alloc(size, pages_for(size + (sm_check_slow ? 1 : 0)), align);
}

void sm_large_free(struct sm_mspan *s)
{
    struct sm_mcache *c = sm_tls_mcache;
    if (c != &sm_mcache_empty && sm_largecache_free(c, s))
        return;
    sm_mheap_free(&sm_heap, s);
}

/* realloc of a large object: in place when it can be, else a move to a
 * span with room to grow. */
void *sm_large_realloc(void *p, size_t size)
{
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    if (s->base != (uintptr_t)p)
        sm_bad_pointer("realloc", "invalid pointer", p);
    if (s->state != SM_SPAN_LARGE)
        sm_bad_pointer("realloc", "use after free of", p);
    size_t old = s->npages << SM_PAGE_SHIFT;
    size_t npages = pages_for(size);
    size_t want = npages;
    if (size > SM_MAX_SMALL_SIZE && size <= old) {
        /* Shrinking by less than half keeps the pages (jemalloc keeps the
         * extent too); by more, the tail goes back to the heap. */
        if (size > old / 2 || !sm_mheap_shrink(&sm_heap, s, npages))
            return p;
    } else if (size > old) {
        if (size > SM_MAX_ALLOC) {
            errno = ENOMEM;
            return NULL;
        }
        /* Grow over the free pages that follow, as glibc grows a chunk
         * into the free one after it. */
        if (!sm_mheap_extend(&sm_heap, s, npages)) {
            /* Moving: a quarter more pages than asked, so a buffer grown
             * step by step moves O(log n) times and copies O(n) bytes in
             * all (jemalloc's large classes are a quarter apart). */
            size_t slack = s->npages + s->npages / 4;
            if (slack > want && slack <= (SM_MAX_ALLOC >> SM_PAGE_SHIFT))
                want = slack;
            goto move;
        }
    } else {
        goto move;   /* to a small object */
    }
    /* Resized in place: for the profiler, as a free and a new allocation,
     * the way a move would count. */
    if (s->specials)
        sm_mprof_record_free(p, s);
    large_count_sample(sm_tls_mcache, s, size);
    return p;

move:;
    void *q = size <= SM_MAX_SMALL_SIZE ? sm_alloc_class(sm_size_to_class(size), size)
                                        : large_alloc(size, want, 0);
    if (q == NULL)
        return NULL;   /* errno is ENOMEM; p is untouched */
    memcpy(q, p, old < size ? old : size);
    sm_free_fast(p);
    return q;
}
