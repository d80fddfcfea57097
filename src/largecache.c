/*
 * largecache.c - per thread, a few large spans freed recently, kept for the
 * thread's next large malloc of the same size.
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
