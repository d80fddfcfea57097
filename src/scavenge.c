/*
 * scavenge.c - giving memory back: sm_free_os_memory, the release policy,
 * the soft memory limit, and the scavenger's tick, which the background
 * worker (worker.c) runs.
 *
 * The scavenger (Go's mgcscavenge.go, simplified): every tick it looks at
 * the heap's idle resident bytes (heap_idle - heap_released) and releases,
 * oldest runs first, whatever exceeds SPANMALLOC_RETAIN percent of
 * heap_inuse; runs idle for longer than SM_SCAV_MAX_IDLE go back even below
 * that.  It releases in runs of at least 64 KiB (mheap.c), and never holds
 * the heap lock while madvise runs.  A tick costs a lock and a walk of the
 * free lists; at 4 ticks a second that stays far below 1% of a core.
 *
 * Each tick also counts sm_scav_epoch, and first takes back the large spans
 * that have sat unused in a thread's large cache for SM_LARGECACHE_IDLE_TICKS
 * ticks (large.c), and asks threads that have taken no slow path for as
 * long to give their lists back at their next one (mcache.c).
 *
 * sm_free_os_memory flushes the calling thread's cache, asks every other
 * thread to flush at its next slow path (a generation counter; nobody is
 * stopped or signalled), takes every thread's cached large spans back (they
 * can be taken without the owner: large.c), returns fully free spans
 * from the central lists and releases every idle page.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "spanmalloc.h"

#define SM_SCAV_MAX_IDLE_NS (5ull * 1000 * 1000 * 1000)

SM_HIDDEN uint64_t sm_flush_gen;
SM_HIDDEN uint32_t sm_scav_epoch;

/* ---- explicit release ---------------------------------------------------- */

void sm_release_central_empty(void)
{
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
        sm_mcentral_flush_parked(&sm_central[cls], &sm_heap, true);
        sm_mcentral_release_empty(&sm_central[cls], &sm_heap);
    }
}

void sm_reclaim_above_heap(void)
{
    sm_largecache_reclaim_all();
    sm_mcentral_flush_parked_all();
}

size_t sm_free_os_memory(void)
{
    sm_init();
    __atomic_add_fetch(&sm_flush_gen, 1, __ATOMIC_RELAXED);
    struct sm_mcache *c = sm_tls_mcache;
    if (c != &sm_mcache_empty) {
        sm_mcache_flush(c);
        c->flush_gen = __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED);
    }
    sm_largecache_reclaim_all();
    sm_release_central_empty();
    return sm_mheap_scavenge(&sm_heap, SIZE_MAX, 0, SM_SCAV_EXPLICIT);
}

SM_EXPORT int malloc_trim(size_t pad)
{
    (void)pad;   /* glibc keeps pad bytes at the top of the heap; we have no top */
    return sm_free_os_memory() > 0;
}

int sm_set_release_policy(enum sm_release policy)
{
    if ((int)policy < SM_RELEASE_DONTNEED || policy > SM_RELEASE_NONE) {
        errno = EINVAL;
        return -1;
    }
    sm_init();
    return __atomic_exchange_n(&sm_opts.release, (int)policy, __ATOMIC_RELAXED);
}

size_t sm_set_memory_limit(size_t bytes)
{
    sm_init();
    if (bytes == 0)
        bytes = 1;
    return __atomic_exchange_n(&sm_opts.memlimit, bytes, __ATOMIC_RELAXED);
}

/* ---- the scavenger ------------------------------------------------------- */

/* One scavenger step; returns bytes released. */
size_t sm_scavenge_tick(uint64_t now)
{
    /* Large spans no thread has reused for a while go back to the heap
     * first, where the rules below apply to them. */
    uint32_t epoch = __atomic_add_fetch(&sm_scav_epoch, 1, __ATOMIC_RELAXED);
    /* Parked lists of classes no thread parked or took a list of since
     * the last tick go to their spans, so that spans they hold can empty. */
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        sm_mcentral_flush_parked(&sm_central[cls], &sm_heap, false);
    if (epoch > SM_LARGECACHE_IDLE_TICKS) {
        sm_largecache_reclaim(epoch - SM_LARGECACHE_IDLE_TICKS);
        /* Threads idle as long give their lists back at their next slow
         * path (mcache.c). */
        sm_mcache_mark_idle(epoch - SM_LARGECACHE_IDLE_TICKS);
    }
    sm_mheap_lock(&sm_heap);
    uint64_t idle_dirty = (sm_heap.st.pages_free - sm_heap.st.pages_released) << SM_PAGE_SHIFT;
    uint64_t inuse = sm_heap.st.pages_inuse << SM_PAGE_SHIFT;
    sm_mheap_unlock(&sm_heap);
    uint64_t keep = inuse / 100 * sm_opts.retain_percent;
    size_t done = 0;
    if (idle_dirty > keep)
        done += sm_mheap_scavenge(&sm_heap, idle_dirty - keep, 0, SM_SCAV_BACKGROUND);
    if (now > SM_SCAV_MAX_IDLE_NS)
        done += sm_mheap_scavenge(&sm_heap, SIZE_MAX, now - SM_SCAV_MAX_IDLE_NS, SM_SCAV_BACKGROUND);
    return done;
}
