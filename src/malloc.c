/*
 * malloc.c - spanmalloc's entry points and the overview of the allocator.
 *
 * spanmalloc is built like Go's runtime allocator, in three tiers over one
 * OS layer:
 *
 *   mcache    per thread (mcache.c): a free list per size class; no lock.
 *   mcentral  per size class (mcentral.c): spans with free objects; a lock
 *             per class; fills and drains caches in batches.
 *   mheap     one (mheap.c): runs of 8 KiB pages, joined when freed, grown
 *             from the OS, released to it; serves large objects directly.
 *   os layer  (os_linux.c): mmap, munmap, madvise and nothing else does.
 *
 * Sizes up to 32 KiB map to one of Go's size classes (sizeclasses.h, every
 * class a multiple of 16 so every pointer is 16-byte aligned); larger ones
 * get whole pages.  The page map (pagemap.c) finds the span of any pointer
 * we handed out in O(1); a pointer with no span is not ours.
 *
 * malloc(n), n <= 32 KiB:
 *   1. class c = size_to_class(n), a table look-up;
 *   2. pop the head of this thread's list c (sm_alloc_class, internal.h);
 *   3. if the list is empty (or this is a new thread, whose cache is the
 *      static empty one, or the profiler's countdown ran out): the slow path
 *      makes the thread's cache or takes a batch from mcentral[c], which
 *      takes spans from mheap, which grows from the OS.
 * malloc(n), n > 32 KiB: a span of ceil(n / 8 KiB) pages: one this thread
 *   freed recently (largecache.c), or a new one from mheap.
 *
 * realloc(p, n) keeps p when n fits its class or its pages; a large object
 * grows over the free pages after it and shrinks by giving its tail back
 * (mheap.c); when it has to move to grow, it gets a quarter more pages
 * than asked, so growing step by step copies O(n) bytes in all.
 *
 * free(p):
 *   1. the page map gives p's page kind (one load from its arena);
 *   2. a small class: push p on this thread's list (sm_free_fast);
 *   3. if the list is at its bound, give a batch to mcentral first; a span
 *      whose objects are all free goes back to mheap, and joins its free
 *      neighbours there;
 *   4. a large object: its span goes to this thread's large cache, or back
 *      to mheap;
 *   5. a page that is free is a double free, and no page at all an invalid
 *      pointer: both are reported on stderr and abort.
 *
 * Free lists are linked through encoded pointers, checked before they are
 * followed (internal.h, check.c).  In checked mode (SPANMALLOC_CHECK=1) and
 * under valgrind's memcheck, the caches stay empty so that every malloc and
 * free takes the slow path, where check.c keeps each object's state and
 * canary, or describes it to memcheck (valgrind.c); realloc, calloc and
 * malloc_usable_size hand their object to check.c too.
 *
 * Initialisation happens in the first slow path (and in a constructor): the
 * options, the heap, the central lists, the fork handlers.  It must not call
 * malloc until the heap is usable, since libc may call back into us.
 */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "spanmalloc.h"

SM_HIDDEN int sm_initialized;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_phase2;

/* Smallest class >= cls whose size is a multiple of 2^k, for k = 5..13
 * (alignments 32 .. 8 KiB); 0: none (use a large span). */
static uint8_t aligned_class[SM_PAGE_SHIFT + 1][SM_NUM_SIZE_CLASSES];

static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

void sm_init_slow(void)
{
    pthread_mutex_lock(&init_lock);
    if (!sm_initialized) {
        sm_options_init();
        sm_check_init();
        sm_mheap_init(&sm_heap);
        sm_heap.reclaim = sm_largecache_reclaim_all;
        for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
            sm_mcentral_init(&sm_central[cls], cls);
        for (unsigned k = 5; k <= SM_PAGE_SHIFT; k++)
            for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
                uint32_t c = cls;
                while (c < SM_NUM_SIZE_CLASSES && (sm_class_to_size[c] & ((1u << k) - 1)))
                    c++;
                aligned_class[k][cls] = c < SM_NUM_SIZE_CLASSES ? (uint8_t)c : 0;
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
    unlock_all();
    sm_mprof_fork_child();
    sm_check_fork_child();
}

__attribute__((destructor)) static void sm_destructor(void)
{
    if (!sm_initialized)
        return;
    if (sm_opts.stats_mode == SM_STATS_EXIT)
        sm_print_memstats(stderr);
    sm_mprof_at_exit();
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

/* The profiler's countdown ran out on a span from the large cache. */
static SM_NOINLINE void *large_sample(struct sm_mcache *c, struct sm_mspan *s, size_t size)
{
    c->sample_left = sm_mprof_next_sample(c);
    sm_mprof_record_alloc((void *)s->base, size);
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
        if (s->specials)
            sm_mprof_record_free(p, s);
        sm_mheap_free(&sm_heap, s);
        return;
    }
    sm_mprof_record_free(p, s);
    struct sm_mcache *c = sm_tls_mcache;
    if (c != &sm_mcache_empty && sm_largecache_free(c, s))
        return;
    sm_mheap_free(&sm_heap, s);
}

void sm_large_free(void *p, struct sm_mspan *s)
{
    if (s->base != (uintptr_t)p)
        sm_check_bad_free("invalid pointer", p);
    if (s->state != SM_SPAN_LARGE)
        sm_check_bad_free("double free of", p);   /* in a large cache */
    if (sm_unlikely(sm_check_slow || s->specials != NULL)) {
        large_free_slow(p, s);
        return;
    }
    struct sm_mcache *c = sm_tls_mcache;
    if (sm_likely(c != &sm_mcache_empty) && sm_largecache_free(c, s))
        return;
    sm_mheap_free(&sm_heap, s);
}

/* ---- helpers for the entry points ---- */

SM_INLINE void *alloc_small(size_t size)
{
    return sm_alloc_class(sm_size_to_class(size), size);
}

SM_INLINE void *alloc_any(size_t size)
{
    if (sm_likely(size <= SM_SMALL_SIZE_MAX))
        return sm_alloc_small16(size);
    if (sm_likely(size <= SM_MAX_SMALL_SIZE))
        return alloc_small(size);
    return sm_large_alloc(size, 0);
}

/* Bytes the caller may use at p; reports p on stderr if it is not ours. */
static size_t usable_size(const void *p, const char *fn)
{
    uintptr_t a = (uintptr_t)p;
    uint8_t kind = sm_pagemap_kind(a);
    if (kind == SM_PAGE_NONE)
        sm_bad_pointer(fn, "invalid pointer", p);
    if (kind == SM_PAGE_FREE)
        sm_bad_pointer(fn, "use after free of", p);
    if (kind == SM_PAGE_LARGE) {
        struct sm_mspan *s = sm_pagemap_span(a);
        if (s->base != a)
            sm_bad_pointer(fn, "invalid pointer", p);
        if (s->state != SM_SPAN_LARGE)
            sm_bad_pointer(fn, "use after free of", p);
        return s->npages << SM_PAGE_SHIFT;
    }
    return sm_class_to_size[kind & ~SM_PAGE_SLOW];
}

static void *alloc_aligned(size_t align, size_t size)
{
    if (align <= 16)
        return alloc_any(size);
    if (align > SM_MAX_ALIGN || size > SM_MAX_ALLOC) {
        errno = ENOMEM;
        return NULL;
    }
    if (size <= SM_MAX_SMALL_SIZE && align <= SM_PAGE_SIZE) {
        /* A class whose size is a multiple of align: its objects sit at
         * multiples of the size from a page-aligned span base. */
        sm_init();
        unsigned k = (unsigned)__builtin_ctzll(align);
        /* Checked mode: a class with room for a canary byte (check.c). */
        size_t fit = size + (sm_check_slow && size < SM_MAX_SMALL_SIZE);
        uint8_t cls = aligned_class[k][sm_size_to_class(fit)];
        if (cls)
            return sm_alloc_class(cls, size);
    }
    return sm_large_alloc(size ? size : 1, align);
}

/* ---- the libc entry points ---- */

SM_EXPORT void *malloc(size_t size)
{
    return alloc_any(size);
}

SM_EXPORT void free(void *p)
{
    sm_free_fast(p);
}

SM_EXPORT void *calloc(size_t n, size_t size)
{
    size_t total;
    if (sm_unlikely(__builtin_mul_overflow(n, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    if (sm_likely(total <= SM_MAX_SMALL_SIZE)) {
        void *p = alloc_small(total);
        if (sm_likely(p != NULL))
            memset(p, 0, total);
        return p;
    }
    void *p = sm_large_alloc(total, 0);
    if (p != NULL) {
        /* Pages fresh from the OS are zero already: do not touch them. */
        struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
        size_t dirty = s->needzero << SM_PAGE_SHIFT;
        memset(p, 0, dirty < total ? dirty : total);
        if (sm_unlikely(sm_check_slow))
            sm_check_calloc(p, total);
    }
    return p;
}

/* realloc of a large object: in place when it can be, else a move to a
 * span with room to grow. */
static void *realloc_large(void *p, size_t size)
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
    void *q = size <= SM_MAX_SMALL_SIZE ? alloc_small(size) : large_alloc(size, want, 0);
    if (q == NULL)
        return NULL;   /* errno is ENOMEM; p is untouched */
    memcpy(q, p, old < size ? old : size);
    sm_free_fast(p);
    return q;
}

SM_EXPORT void *realloc(void *p, size_t size)
{
    if (sm_unlikely(sm_check_slow))
        return sm_check_realloc(p, size);
    if (p == NULL)
        return alloc_any(size);
    if (size == 0) {
        /* glibc frees and returns NULL (REALLOC_ZERO_BYTES_FREES). */
        sm_free_fast(p);
        return NULL;
    }
    uint8_t kind = sm_pagemap_kind((uintptr_t)p);
    if (kind == SM_PAGE_LARGE)
        return realloc_large(p, size);
    size_t old = usable_size(p, "realloc");
    if (size <= SM_MAX_SMALL_SIZE && sm_size_to_class(size) == (kind & ~SM_PAGE_SLOW))
        return p;
    void *q = alloc_any(size);
    if (q == NULL)
        return NULL;   /* errno is ENOMEM; p is untouched */
    memcpy(q, p, old < size ? old : size);
    sm_free_fast(p);
    return q;
}

SM_EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, total);
}

SM_EXPORT void *memalign(size_t align, size_t size)
{
    /* glibc: an alignment that is not a power of two is rounded up; one
     * above half the address space is EINVAL. */
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (align & (align - 1))
        align = (size_t)1 << (64 - __builtin_clzll(align));
    return alloc_aligned(align, size);
}

SM_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (align == 0 || (align & (align - 1)) || align % sizeof(void *))
        return EINVAL;
    int saved = errno;
    void *p = alloc_aligned(align, size);
    if (p == NULL) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

SM_EXPORT void *aligned_alloc(size_t align, size_t size)
{
    /* C17 and glibc 2.38: the alignment must be a power of two. */
    if (align == 0 || (align & (align - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(align, size);
}

SM_EXPORT void *valloc(size_t size)
{
    return alloc_aligned(sm_os_page_size(), size);
}

SM_EXPORT void *pvalloc(size_t size)
{
    size_t ps = sm_os_page_size();
    if (size > SIZE_MAX - ps) {
        errno = ENOMEM;
        return NULL;
    }
    size = size ? (size + ps - 1) & ~(ps - 1) : ps;
    return alloc_aligned(ps, size);
}

SM_EXPORT size_t malloc_usable_size(void *p)
{
    if (p == NULL)
        return 0;
    if (sm_unlikely(sm_check_slow))
        return sm_check_usable_size(p);
    return usable_size(p, "malloc_usable_size");
}

SM_EXPORT const char *sm_version(void)
{
    return SPANMALLOC_VERSION;
}
