/*
 * init.c - start-up, fork and exit: the allocator's life cycle.
 *
 * Initialisation happens in the first slow path (and in a constructor, for
 * a program that frees before it mallocs, or never mallocs at all).  Phase
 * 1, under init_lock: the options (printed if SPANMALLOC_VERBOSE=1), the
 * free-list key, checked mode, the heap, the central lists, the class
 * tables.  It must not call malloc
 * until the heap is usable, since libc may call back into us.  Phase 2,
 * once, after the lock is dropped: the fork handlers (pthread_atfork may
 * call malloc) and the profiler, which may install a signal handler.
 *
 * fork: every allocator lock is taken before the fork, in the lock order
 * (checked mode's, the profiler's, the cache registry, each class's
 * central list, the heap), so the child finds them free and the heap
 * consistent (jemalloc and glibc do the same).  The child has no worker
 * thread; its next slow path starts one.
 *
 * exit: a destructor prints the stats (SPANMALLOC_STATS=exit), writes the
 * exit profile (SPANMALLOC_PROFILE) and, in debug builds (configure
 * --enable-debug), runs sm_mheap_check, which aborts on an inconsistent
 * heap.
 */
#include <stdio.h>

#include "internal.h"
#include "spanmalloc.h"

SM_HIDDEN int sm_initialized;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_phase2;

SM_HIDDEN uint8_t sm_aligned_class[SM_PAGE_SHIFT + 1][SM_NUM_SIZE_CLASSES];

static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

void sm_init_slow(void)
{
    pthread_mutex_lock(&init_lock);
    if (!sm_initialized) {
        sm_options_init();
        sm_freelist_init();
        sm_check_init();
        /* After checked mode, which may turn options off under valgrind:
         * what is printed is what is in effect. */
        if (sm_opts.verbose)
            sm_options_print();
        sm_mheap_init(&sm_heap);
        sm_heap.reclaim = sm_reclaim_above_heap;
        for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
            sm_mcentral_init(&sm_central[cls], cls);
        for (unsigned k = 5; k <= SM_PAGE_SHIFT; k++)
            for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
                uint32_t c = cls;
                while (c < SM_NUM_SIZE_CLASSES && (sm_class_to_size[c] & ((1u << k) - 1)))
                    c++;
                sm_aligned_class[k][cls] = c < SM_NUM_SIZE_CLASSES ? (uint8_t)c : 0;
            }
        sm_mcache_init_classes();
        __atomic_store_n(&sm_initialized, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&init_lock);
    /* Phase 2 may call malloc (pthread_atfork does): the heap is ready. */
    int expected = 0;
    if (__atomic_compare_exchange_n(&init_phase2, &expected, 1, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        sm_mprof_init();
    }
}

__attribute__((constructor)) static void sm_constructor(void)
{
    sm_init();
    /* A constructor that ran before a malloc still needs phase 2. */
    if (__atomic_load_n(&init_phase2, __ATOMIC_ACQUIRE) == 0)
        sm_init_slow();
}

/* ---- fork: every allocator lock is taken, so the child finds them free
 * and the heap consistent (jemalloc and glibc do the same). ---- */

static void fork_prepare(void)
{
    sm_check_fork_prepare();
    sm_mprof_fork_prepare();
    pthread_mutex_lock(&sm_mcache_lock);
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        pthread_mutex_lock(&sm_central[cls].lock);
    sm_mheap_lock(&sm_heap);
}

static void unlock_all(void)
{
    sm_mheap_unlock(&sm_heap);
    for (uint32_t cls = SM_NUM_SIZE_CLASSES - 1; cls >= 1; cls--)
        pthread_mutex_unlock(&sm_central[cls].lock);
    pthread_mutex_unlock(&sm_mcache_lock);
}

static void fork_parent(void)
{
    unlock_all();
    sm_mprof_fork_parent();
    sm_check_fork_parent();
}

static void fork_child(void)
{
    /* The forking thread is the only one left and it holds every lock.
     * Runs the scavenger had out for madvise go back; the worker thread
     * did not survive and restarts at the next slow path. */
    sm_mheap_fork_child(&sm_heap);
    sm_worker_after_fork_child();
    sm_http_fork_child();
    unlock_all();
    sm_mprof_fork_child();
    sm_check_fork_child();
}

__attribute__((destructor)) static void sm_destructor(void)
{
    if (!sm_initialized)
        return;
    if (sm_opts.stats_mode == SM_STATS_EXIT && sm_opts.stats_json)
        sm_print_memstats_json(stderr);
    else if (sm_opts.stats_mode == SM_STATS_EXIT)
        sm_print_memstats(stderr);
    sm_mprof_at_exit();
    /* Debug builds validate the heap as every process ends, so each test
     * program (and each program a test preloads the library into) ends
     * with the heap's own consistency check. */
    if (SM_DEBUG)
        sm_mheap_check(&sm_heap);
}
