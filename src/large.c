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
 * copies O(n) bytes in all, and the span it left goes to mheap, which
 * releases it sooner than a freed one (mheap.c, free_excess).  free gives
 * the span to the thread's cache, or back to mheap.
 *
 * The large cache: per thread, large spans freed recently, kept for the
 * thread's next large malloc of the same size.
 *
 * Without it every large malloc and every large free goes to the heap under
 * its lock: a best-fit search, a page map write for every page of the span,
 * joining the free neighbours, a clock read: about 2000 instructions for a
 * 64 KiB malloc+free pair.  Programs free and allocate buffers of the same
 * sizes over and over (I/O buffers, a vector cleared and refilled), so, as
 * tcmalloc's and jemalloc's thread caches hold the smaller large sizes and
 * glibc keeps freed chunks below its mmap threshold, a thread keeps spans
 * of SM_LARGECACHE_MIN_PAGES to SM_LARGECACHE_MAX_PAGES pages (just over
 * 32 KiB to 1 MiB), at most lc->limit pages together: SM_LARGECACHE_MAX_BYTES
 * (types.h), less when many threads share the cache budget (mcache.c).
 *
 * Layout: a bin per page count, indexed by it, as tcmalloc's thread cache
 * has a free list per size class and jemalloc's tcache a bin per large
 * size class: a malloc looks at exactly one bin, no search.  A bin is a
 * stack of SM_LARGECACHE_WAYS slots; nheld[n] is how many of bin n's slots
 * the owner filled.  A malloc takes the top slot of its bin, or, when that
 * bin is empty, of the nearest bin up to an eighth larger (the waste bound
 * of the size classes); a free pushes onto its bin.  A free that would pass
 * the byte bound first evicts other bins' top spans to the heap, going
 * round the bins from a cursor; a free into a full bin goes to the heap.
 * Spans of other sizes, aligned allocations and threads with no cache yet
 * go to the heap directly, and so does a buffer realloc grew (s->grown):
 * nothing mallocs its size again (the next such buffer grows from small,
 * through other sizes), and while it sat in the cache the heap could not
 * grow the next buffer over its pages, so the next one took others:
 * BM_ReallocGrow's peak RSS was 8.9 MiB with them cached, 7.1 without
 * (glibc 5.9).
 *
 * Stats.  A cached span is not a live object: its free counted it in frees
 * and took its bytes out of heap_alloc exactly as a free to the heap does.
 * Its pages stay in heap_inuse (the heap lent them out and has not got them
 * back), as the spans of small objects cached in a thread's lists do.  So
 * doc/design.md §4's invariants hold unchanged (heap_alloc <= heap_inuse,
 * heap_inuse + heap_idle == heap_sys, ...), and heap_inuse - heap_alloc
 * includes at most SM_LARGECACHE_MAX_BYTES per thread of cached large
 * spans.  The counts live in the cache (written by its thread only, merged
 * on read as the small counts are, and kept in sm_dead when the thread
 * exits).  The span's state SM_SPAN_CACHED tells the heap not to count its
 * return as a second free, and makes a second free of the pointer a
 * reported double free.
 *
 * Giving spans back.  They go to the heap, where the release policy applies
 * to them as to any freed run:
 *   - the thread's own, at thread exit and when the thread sees a new
 *     sm_free_os_memory generation (sm_mcache_flush);
 *   - every thread's, from sm_free_os_memory and from the heap before it
 *     grows past the soft memory limit (sm_largecache_reclaim_all);
 *   - idle ones: at every tick the scavenger takes the spans of bins that
 *     no free has touched for SM_LARGECACHE_IDLE_TICKS ticks (about a
 *     second), so a thread that stops allocating does not keep them.  With
 *     SPANMALLOC_SCAVENGE=off they stay until one of the above.
 *
 * Synchronization, without a lock.  Only the owning thread puts a span in
 * (a release store into a slot above its bin's nheld, which only the owner
 * fills, so it is empty).  Another thread takes spans out to give back
 * by an atomic exchange; the owner takes one out for reuse with a plain
 * load and store, so a cached malloc+free pair has no atomic instruction
 * (the exchange was a third of a 64 KiB pair's time).  What keeps the two
 * from taking the same span is an asymmetric Dekker handshake, the one
 * user-space RCU and hazard-pointer libraries build on membarrier: the
 * owner sets busy, then reads steal (both plain), takes, and clears busy;
 * the other thread sets steal in every cache, calls membarrier, which
 * makes every running thread execute a full barrier, so that either it
 * sees that owner's busy afterwards or the owner's read sees steal, waits
 * for busy to clear, takes with exchanges, and clears steal.  An owner
 * that sees steal takes by exchange too.  An owner stuck in a take (a
 * signal handler that never returns) keeps its spans: the wait gives up.
 * Where the kernel refuses membarrier, caches are made with
 * SM_LC_ATOMIC and their owners always take by exchange.  So each span
 * leaves exactly once, and the thread that took it owns it.  A free is
 * plain stores.  nheld[], held and next are the owner's view: a slot
 * another thread emptied still counts until the owner tries to take it
 * (and finds NULL) or evicts it, so the owner's held is never below the
 * bytes really cached.  epoch[] is written by the owner and read by the
 * scavenger as a hint (a stale value gives a span back a tick early or
 * late).  Walking other threads' caches takes sm_mcache_lock, which keeps
 * them from exiting meanwhile; the spans go to the heap after it is
 * dropped.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "internal.h"

/* Any thread: empty a slot, owning what was in it. */
static struct sm_mspan *slot_take(struct sm_mspan **slot)
{
    if (__atomic_load_n(slot, __ATOMIC_RELAXED) == NULL)
        return NULL;
    return __atomic_exchange_n(slot, NULL, __ATOMIC_ACQUIRE);
}

/* The heap does not count the return of a CACHED span as a free. */
static void give_back(struct sm_mspan *s)
{
    sm_mheap_free(&sm_heap, s);
}

struct sm_mspan *sm_largecache_alloc_near(struct sm_largecache *lc, size_t npages)
{
    size_t most = npages + npages / 8;
    if (most > SM_LARGECACHE_MAX_PAGES)
        most = SM_LARGECACHE_MAX_PAGES;
    for (size_t n = npages + 1; n <= most; n++)
        if (lc->nheld[n] != 0)
            return sm_largecache_took(lc, sm_largecache_bin_take(lc, n));
    return NULL;
}

/* Give the top span of bin n to the heap to make room. */
static void evict(struct sm_largecache *lc, size_t n)
{
    struct sm_mspan *s = sm_largecache_bin_take(lc, n);
    if (s != NULL)
        give_back(s);
}

/* Evict bins' top spans, going round from the cursor, until pages more
 * fit under the bound. */
static SM_NOINLINE void make_room(struct sm_largecache *lc, size_t pages)
{
    size_t limit = lc->limit;
    uint32_t n = lc->next;
    while (lc->held + pages > limit) {
        if (n < SM_LARGECACHE_MIN_PAGES || n > SM_LARGECACHE_MAX_PAGES)
            n = SM_LARGECACHE_MIN_PAGES;
        if (lc->nheld[n] != 0)
            evict(lc, n);
        n++;
    }
    lc->next = n;
}

bool sm_largecache_free_over_bound(struct sm_largecache *lc, struct sm_mspan *s, size_t n)
{
    if (n > lc->limit)
        return false;
    make_room(lc, n);   /* may take from bin n too */
    return sm_largecache_bin_put(lc, s, n);
}

void sm_largecache_trim(struct sm_mcache *c)
{
    if (c->large.held > c->large.limit)
        make_room(&c->large, 0);
}

void sm_largecache_flush(struct sm_mcache *c)
{
    struct sm_largecache *lc = &c->large;
    for (size_t n = SM_LARGECACHE_MIN_PAGES; n <= SM_LARGECACHE_MAX_PAGES; n++)
        while (lc->nheld[n] != 0)
            evict(lc, n);
}

/* Wait for the owner of lc to leave a take it may be in; false if it stays
 * in one (a thread stopped there: a signal handler that does not return,
 * a debugger), and then its spans stay. */
static bool owner_out(struct sm_largecache *lc)
{
    for (int i = 0; __atomic_load_n(&lc->busy, __ATOMIC_ACQUIRE); i++) {
        if (i == 1000)
            return false;
#if defined(__x86_64__) || defined(__i386__)
        if (i < 100) {
            __builtin_ia32_pause();
            continue;
        }
#endif
        sched_yield();
    }
    return true;
}

size_t sm_largecache_reclaim(uint32_t before_epoch)
{
    struct sm_mspan *taken = NULL;
    size_t bytes = 0;
    pthread_mutex_lock(&sm_mcache_lock);
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next)
        __atomic_or_fetch(&c->large.steal, SM_LC_STEAL_NOW, __ATOMIC_RELAXED);
    bool fenced = sm_os_membarrier();
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next) {
        struct sm_largecache *lc = &c->large;
        bool atomic = __atomic_load_n(&lc->steal, __ATOMIC_RELAXED) & SM_LC_ATOMIC;
        if (!atomic && (!fenced || !owner_out(lc)))
            continue;   /* the owner may be taking with plain stores */
        for (size_t n = SM_LARGECACHE_MIN_PAGES; n <= SM_LARGECACHE_MAX_PAGES; n++) {
            if (before_epoch != UINT32_MAX &&
                __atomic_load_n(&lc->epoch[n], __ATOMIC_RELAXED) > before_epoch)
                continue;
            for (uint32_t k = 0; k < SM_LARGECACHE_WAYS; k++) {
                struct sm_mspan *s = slot_take(&lc->slot[n][k]);
                if (s != NULL) {
                    s->next = taken;
                    taken = s;
                }
            }
        }
    }
    /* The owners may take with plain stores again: they see the slots
     * emptied above before they see steal cleared. */
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next)
        __atomic_and_fetch(&c->large.steal, (uint8_t)~SM_LC_STEAL_NOW, __ATOMIC_RELEASE);
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
            sm_mprof_record_alloc_large(s, size);
        }
    }
}

/* A large object of size bytes in a span of npages pages. */
static void *large_alloc(size_t size, size_t npages, size_t align)
{
    sm_init();
    /* A thread whose first allocations are large gets its cache here, so
     * they are sampled and their spans cached as any thread's. */
    struct sm_mcache *c = sm_mcache_ensure();
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
        s->grown = 0;
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

/* The profiler's countdown ran out on a span from the large cache. */
static SM_NOINLINE void *large_sample(struct sm_mcache *c, struct sm_mspan *s, size_t size)
{
    c->sample_left = sm_mprof_next_sample(c);
    sm_mprof_record_alloc_large(s, size);
    return (void *)s->base;
}

void *sm_large_alloc(size_t size, size_t align)
{
    /* The common case first: a span this thread freed, with no lock, no
     * page map write, no clock.  A thread with no cache yet is on the
     * static empty one, whose bins are empty; checked mode keeps the
     * large caches empty (mcache.c), so its canary byte needs no page
     * here. */
    if (sm_likely(size <= ((size_t)SM_LARGECACHE_MAX_PAGES << SM_PAGE_SHIFT) &&
                  align <= SM_PAGE_SIZE)) {
        struct sm_mcache *c = sm_tls_mcache;
        struct sm_mspan *s = sm_largecache_alloc(c, pages_for(size));
        if (sm_likely(s != NULL)) {
            s->reqsize = size;
            /* One subtraction and a branch, as on the small path. */
            if (sm_unlikely(sm_sample_countdown(c, size)))
                return large_sample(c, s, size);
            return (void *)s->base;
        }
    }
    if (sm_unlikely(size > SM_MAX_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    /* Checked mode: at least one byte past the request for the canary. */
    return large_alloc(size, pages_for(size + (sm_check_slow ? 1 : 0)), align);
}

/* A sampled or checked large object's free. */
static SM_NOINLINE void large_free_slow(void *p, struct sm_mspan *s)
{
    if (sm_unlikely(sm_check_slow)) {
        /* Not to the large cache: its next malloc would skip check.c. */
        sm_check_free_large(s);
        if (s->prof_bucket)
            sm_mprof_record_free(p, s);
        sm_mheap_free(&sm_heap, s);
        return;
    }
    if (s->prof_bucket != NULL)
        sm_mprof_record_free(p, s);
    struct sm_mcache *c = sm_tls_mcache;
    if (!s->grown && c != &sm_mcache_empty && sm_largecache_free(c, s))
        return;
    sm_mheap_free(&sm_heap, s);
}

void sm_large_free(void *p, struct sm_mspan *s)
{
    if (s->base != (uintptr_t)p)
        sm_check_bad_free("invalid pointer", p);
    if (s->state != SM_SPAN_LARGE)
        sm_check_bad_free("double free of", p);   /* in a large cache */
    if (sm_unlikely(sm_check_slow || s->prof_bucket != NULL || s->grown)) {
        large_free_slow(p, s);
        return;
    }
    struct sm_mcache *c = sm_tls_mcache;
    if (sm_likely(c != &sm_mcache_empty) && sm_largecache_free(c, s))
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
    if (size > old)
        s->grown = 1;
    /* Resized in place: for the profiler, as a free and a new allocation,
     * the way a move would count. */
    if (s->prof_bucket)
        sm_mprof_record_free(p, s);
    large_count_sample(sm_tls_mcache, s, size);
    return p;

move:;
    void *q = size <= SM_MAX_SMALL_SIZE ? sm_alloc_class(sm_size_to_class(size), size)
                                        : large_alloc(size, want, 0);
    if (q == NULL)
        return NULL;   /* errno is ENOMEM; p is untouched */
    if (size > SM_MAX_SMALL_SIZE)
        sm_pagemap_span((uintptr_t)q)->grown = 1;
    memcpy(q, p, old < size ? old : size);
    if (sm_unlikely(sm_check_slow)) {
        sm_free_fast(p);
        return q;
    }
    /* Not to the large cache: nothing asks for the old size again. */
    if (s->prof_bucket)
        sm_mprof_record_free(p, s);
    sm_mheap_free_ex(&sm_heap, s, true);
    return q;
}
