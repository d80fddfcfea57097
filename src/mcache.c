/*
 * mcache.c - the per-thread cache: one free list per size class, used with
 * no lock and no atomic (Go's mcache per P, tcmalloc's thread cache).
 *
 * A thread starts on sm_mcache_empty, a static cache whose lists are empty
 * and whose bounds are zero, so both fast paths fail their one test and come
 * here, where the thread's real cache is made (mimalloc's _mi_heap_empty,
 * Go's emptymspan).  Refills take a batch from mcentral; a free that finds
 * its list at the bound first gives a batch back.  Batch sizes follow
 * tcmalloc: about 32 KiB of objects, at least 2 and at most 64; a list holds
 * at most two batches, so a thread caches at most ~64 KiB per class.
 *
 * Lists are encoded (internal.h).  The fast path checks a head only for
 * being an aligned user address; the slow path also checks that the head
 * it pops lies in a span of the class (one page-map load); drain checks
 * each link's address before following it, and mcentral checks each object
 * it is given against the page map before writing through it.
 *
 * Checked mode (and valgrind) keep every bound at 0 and every list empty:
 * each malloc and free comes here and goes to mcentral one object at a
 * time through check.c; the counters are kept the same way.
 *
 * Stats counters live in the cache and are only ever written by its thread;
 * readers sum them under sm_mcache_lock, which also guards the registry of
 * caches, the cache fixalloc and sm_dead (counts of exited threads).
 *
 * A thread's cache goes back when the thread exits (a pthread key
 * destructor): its objects to mcentral, its counts to sm_dead.  Frees and
 * mallocs that come after that (later destructors, libc's own cleanup) go
 * straight to mcentral.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

SM_HIDDEN struct sm_mcache sm_mcache_empty;
SM_HIDDEN __thread struct sm_mcache *sm_tls_mcache
    __attribute__((tls_model("initial-exec"))) = &sm_mcache_empty;
/* 0: no cache yet; 1: has one; 2: exiting, no cache any more. */
static __thread uint8_t tls_state __attribute__((tls_model("initial-exec")));

SM_HIDDEN uint32_t sm_class_batch[SM_NUM_SIZE_CLASSES];
SM_HIDDEN pthread_mutex_t sm_mcache_lock = PTHREAD_MUTEX_INITIALIZER;
SM_HIDDEN struct sm_dead_stats sm_dead;
SM_HIDDEN struct sm_mcache *sm_mcache_all;
SM_HIDDEN struct sm_fixalloc sm_mcache_alloc;

static pthread_key_t cache_key;
static bool cache_key_ok;

void sm_mcache_init_classes(void)
{
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
        uint32_t b = 32768 / sm_class_to_size[cls];
        sm_class_batch[cls] = b < 2 ? 2 : b > 64 ? 64 : b;
    }
    sm_fixalloc_init(&sm_mcache_alloc, sizeof(struct sm_mcache));
    sm_mcache_empty.sample_left = 0;
    cache_key_ok = pthread_key_create(&cache_key, sm_mcache_thread_exit) == 0;
}

/* Make this thread's cache; NULL if the thread is exiting or out of memory. */
static struct sm_mcache *cache_create(void)
{
    if (tls_state == 2)
        return NULL;
    sm_init();
    pthread_mutex_lock(&sm_mcache_lock);
    struct sm_mcache *c = sm_fixalloc_alloc(&sm_mcache_alloc);
    if (c != NULL) {
        c->all_next = sm_mcache_all;
        if (sm_mcache_all)
            sm_mcache_all->all_prev = c;
        sm_mcache_all = c;
    }
    pthread_mutex_unlock(&sm_mcache_lock);
    if (c == NULL)
        return NULL;
    /* Checked mode and valgrind: bounds stay 0, lists empty, so every
     * malloc and free comes to the slow path. */
    if (!sm_check_slow)
        for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
            c->c[cls].bound = 2 * sm_class_batch[cls];
    c->rng = ((uintptr_t)c ^ sm_nanotime()) | 1;
    c->flush_gen = __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED);
    c->sample_left = sm_mprof_next_sample(c);
    sm_tls_mcache = c;
    tls_state = 1;
    /* May call calloc for a high key: the cache is in place, so it can. */
    if (cache_key_ok)
        pthread_setspecific(cache_key, c);
    return c;
}

/* One object of class cls straight from mcentral: for a thread with no
 * cache, and in checked mode, where caches stay empty. */
static void *take_one(uint32_t cls, size_t size)
{
    if (sm_unlikely(sm_check_slow))
        return sm_check_alloc_small(cls, size);
    void *p = NULL;
    if (sm_mcentral_alloc_batch(&sm_central[cls], &sm_heap, 1, &p) == 0)
        return NULL;
    return p;
}

static void give_one(void *p, uint32_t cls)
{
    sm_link_store(p, NULL);
    sm_mcentral_free_batch(&sm_central[cls], &sm_heap, p, 1);
}

static void *alloc_uncached(uint32_t cls, size_t size)
{
    sm_init();
    void *p = take_one(cls, size);
    if (p == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_lock(&sm_mcache_lock);
    sm_dead.nmalloc[cls]++;
    pthread_mutex_unlock(&sm_mcache_lock);
    return p;
}

static void free_uncached(void *p, uint32_t cls)
{
    give_one(p, cls);
    pthread_mutex_lock(&sm_mcache_lock);
    sm_dead.nfree[cls]++;
    pthread_mutex_unlock(&sm_mcache_lock);
}

/* p is an address in a span of class cls: safe to read its link. */
static bool in_class(const void *p, uint32_t cls)
{
    struct sm_heap_arena *ar = sm_pagemap_arena((uintptr_t)p);
    return ar != NULL && (uint32_t)(ar->pagekind[sm_pagemap_index((uintptr_t)p)] & ~SM_PAGE_SLOW) == cls;
}

void *sm_mcache_alloc_slow(uint32_t cls, size_t size)
{
    if (sm_unlikely(sm_check_slow)) {
        /* Room for a canary: perhaps a larger class, or a large object
         * (which counts its own sample). */
        uint32_t real = sm_check_class(cls, size);
        if (real == 0)
            return sm_large_alloc(size, 0);
        cls = real;
    }
    struct sm_mcache *c = sm_tls_mcache;
    if (c == &sm_mcache_empty) {
        c = cache_create();
        if (c == NULL)
            return alloc_uncached(cls, size);
    }
    if (sm_unlikely(c->flush_gen != __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED))) {
        /* sm_free_os_memory asked every thread to give its cache back. */
        c->flush_gen = __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED);
        sm_mcache_flush(c);
    }
    struct sm_cacheclass *cc = &c->c[cls];
    void *p;
    if (sm_unlikely(sm_check_slow)) {
        p = take_one(cls, size);
        if (p == NULL) {
            errno = ENOMEM;
            return NULL;
        }
    } else {
        if (cc->head == NULL) {
            void *head;
            uint32_t n = sm_mcentral_alloc_batch(&sm_central[cls], &sm_heap, sm_class_batch[cls], &head);
            if (n == 0) {
                errno = ENOMEM;
                return NULL;
            }
            cc->head = head;
            cc->count = n;
            sm_worker_start();
        }
        p = cc->head;
        /* The fast path sends a head that is no address here. */
        if (sm_unlikely(sm_freelist_bad(p) || !in_class(p, cls)))
            sm_freelist_corrupt("malloc", NULL, p);
        cc->head = sm_link_load(p);
        cc->count--;
    }
    SM_COUNTER_ADD(cc->nmalloc, 1);
    /* Count down and record by the requested size, as the fast path does,
     * so the profile's bytes are what the program asked for. */
    c->sample_left -= (intptr_t)size;
    if (sm_unlikely(c->sample_left < 0)) {
        c->sample_left = sm_mprof_next_sample(c);
        sm_mprof_record_alloc(p, size);
    }
    return p;
}

/* Give the first n objects of a class list back to mcentral. */
static void drain(struct sm_cacheclass *cc, uint32_t cls, uint32_t n)
{
    if (n > cc->count)
        n = cc->count;
    if (n == 0)
        return;
    void *head = cc->head, *last = head;
    if (sm_unlikely(sm_freelist_bad(head) || !in_class(head, cls)))
        sm_freelist_corrupt("free", NULL, head);
    /* Only the cheap check before each step: mcentral checks every
     * object against the page map before it writes through it. */
    for (uint32_t i = 1; i < n; i++) {
        void *next = sm_link_load(last);
        if (sm_unlikely(sm_freelist_bad(next)))
            sm_freelist_corrupt("free", last, next);
        last = next;
    }
    cc->head = sm_link_load(last);
    cc->count -= n;
    sm_mcentral_free_batch(&sm_central[cls], &sm_heap, head, n);
}

void sm_mcache_free_slow(void *p, uint8_t kind)
{
    if (p == NULL)
        return;
    switch (kind) {
    case SM_PAGE_NONE:
        sm_check_bad_free("invalid pointer", p);
    case SM_PAGE_FREE:
        sm_check_bad_free("double free of", p);
    case SM_PAGE_LARGE: {
        struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
        if (s->base != (uintptr_t)p)
            sm_check_bad_free("invalid pointer", p);
        if (sm_unlikely(sm_check_slow))
            sm_check_free_large(s);
        if (s->specials)
            sm_mprof_record_free(p, s);
        sm_large_free(s);
        return;
    }
    default:
        break;
    }
    uint32_t cls = kind & ~SM_PAGE_SLOW;
    if (cls == 0 || cls >= SM_NUM_SIZE_CLASSES)
        sm_check_bad_free("invalid pointer", p);
    if (sm_unlikely(sm_check_slow))
        sm_check_free_small(p, cls);
    if (kind & SM_PAGE_SLOW)
        sm_mprof_record_free(p, sm_pagemap_span((uintptr_t)p));
    struct sm_mcache *c = sm_tls_mcache;
    if (c == &sm_mcache_empty) {
        c = cache_create();
        if (c == NULL) {
            free_uncached(p, cls);
            return;
        }
    }
    struct sm_cacheclass *cc = &c->c[cls];
    if (sm_unlikely(sm_check_slow)) {
        /* Checked mode: the cache holds nothing, the object goes back now. */
        give_one(p, cls);
        SM_COUNTER_ADD(cc->nfree, 1);
        return;
    }
    if (sm_unlikely(c->flush_gen != __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED))) {
        c->flush_gen = __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED);
        sm_mcache_flush(c);
    }
    if (cc->count >= cc->bound)
        drain(cc, cls, sm_class_batch[cls]);
    *(void **)p = sm_freelist_encode(p, cc->head);
    cc->head = p;
    cc->count++;
    SM_COUNTER_ADD(cc->nfree, 1);
}

void sm_mcache_flush(struct sm_mcache *c)
{
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        drain(&c->c[cls], cls, c->c[cls].count);
}

void sm_mcache_thread_exit(void *arg)
{
    struct sm_mcache *c = arg;
    if (c == NULL || c == &sm_mcache_empty)
        return;
    sm_tls_mcache = &sm_mcache_empty;
    tls_state = 2;
    sm_mcache_flush(c);
    pthread_mutex_lock(&sm_mcache_lock);
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
        sm_dead.nmalloc[cls] += c->c[cls].nmalloc;
        sm_dead.nfree[cls] += c->c[cls].nfree;
    }
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        sm_mcache_all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    sm_fixalloc_free(&sm_mcache_alloc, c);
    pthread_mutex_unlock(&sm_mcache_lock);
}
