/*
 * mcache.c - the per-thread cache: one free list per size class, used with
 * no lock and no atomic (Go's mcache per P, tcmalloc's thread cache).
 *
 * A thread starts on sm_mcache_empty, a static cache whose lists are empty
 * and have no room, so both fast paths fail their one test and come
 * here, where the thread's real cache is made (mimalloc's _mi_heap_empty,
 * Go's emptymspan).  Refills take a batch from mcentral; a free that finds
 * its list at the bound first gives the whole list back, which mcentral
 * parks for the next refill of any thread.  A batch is about 16 KiB of
 * objects, at least 2 and at most 64 (tcmalloc's are 64 KiB and 32
 * objects; ours were 32 KiB until parked lists made a transfer a few
 * stores: half the size kept 300-400 KiB less resident with 4 and 8
 * threads, doc/performance.md section 13); a list holds at most two
 * batches, so a thread caches at most ~32 KiB per class (64 KiB for the
 * classes of 16 KiB and more, two objects).  A
 * class's first refills in a thread are smaller (4, 8, 16 objects: slow
 * start, below), so a class a thread barely uses costs it little memory.
 *
 * Why the whole list and not half (tcmalloc and jemalloc keep part): to cut
 * a list, the cut must be found by following the links, one dependent load
 * per object; mcentral then follows them again.  Handing over the whole list
 * leaves mcentral's walk as the only one, and it overlaps the loads with its
 * work on each object's span.  A program that frees 9 MiB of objects in a
 * random order spent 19% of its time in that walk (bench/README.md,
 * BatchRandom_65536; doc/performance.md).  The price is at most twice the
 * transfers for a thread that cycles just across the bound.
 *
 * Lists are encoded (internal.h).  The fast path checks a head only for
 * being an aligned user address; the slow path also checks that the object
 * it pops lies in a span of the class (one page-map load), and mcentral
 * checks every object of a list handed to it against the page map before
 * it reads the object's link.
 *
 * Checked mode (and valgrind) keep every list empty and without room:
 * each malloc and free comes here and goes to mcentral one object at a
 * time through check.c; the counters are kept the same way.  Their large
 * objects go straight back to the heap, never to the large cache, so the
 * cache stays empty and every large malloc gets a span from the heap too.
 *
 * Stats counters live in the cache and are only ever written by its thread;
 * readers sum them under sm_mcache_lock, which also guards the registry of
 * caches, the cache fixalloc and sm_dead (counts of exited threads).
 *
 * A thread's cache goes back when the thread exits (a pthread key
 * destructor): its objects to mcentral, its large spans (large.c) to
 * mheap, its counts to sm_dead.  Frees and
 * mallocs that come after that (later destructors, libc's own cleanup) go
 * straight to mcentral.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

SM_HIDDEN struct sm_mcache sm_mcache_empty = {
    /* The stand-in list of no class: empty, so malloc comes to the slow
     * path, which finds the class from the size. */
    .bysize = {[0 ... SM_CACHE_BYSIZE - 1] = &sm_mcache_empty.c[0]},
};
SM_HIDDEN __thread struct sm_mcache *sm_tls_mcache
    __attribute__((tls_model("initial-exec"))) = &sm_mcache_empty;
/* 0: no cache yet; 1: has one; 2: exiting, no cache any more. */
static __thread uint8_t tls_state __attribute__((tls_model("initial-exec")));

SM_HIDDEN uint32_t sm_class_batch[SM_NUM_SIZE_CLASSES];
/* A class's first refill in a thread (slow start, refill_count). */
static uint8_t sm_class_refill_first[SM_NUM_SIZE_CLASSES];
#define SM_REFILL_FIRST 4
#define SM_BATCH_BYTES 16384   /* a batch's objects, about (see above) */
SM_HIDDEN pthread_mutex_t sm_mcache_lock = PTHREAD_MUTEX_INITIALIZER;
SM_HIDDEN struct sm_dead_stats sm_dead;
SM_HIDDEN struct sm_mcache *sm_mcache_all;
SM_HIDDEN struct sm_fixalloc sm_mcache_cachealloc;

static pthread_key_t cache_key;
static bool cache_key_ok;

SM_HIDDEN size_t sm_cache_budget = SM_CACHE_BUDGET;
SM_HIDDEN uint64_t sm_cache_budget_gen;
static uint32_t ncaches;          /* caches in the registry (atomic) */
static uint64_t full_bytes;       /* one cache's bytes at its full bounds */

void sm_mcache_init_classes(void)
{
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
        uint32_t b = SM_BATCH_BYTES / sm_class_to_size[cls];
        sm_class_batch[cls] = b < 2 ? 2 : b > 64 ? 64 : b;
        uint32_t f = 4096 / sm_class_to_size[cls];
        sm_class_refill_first[cls] = f < 1 ? 1 : f > SM_REFILL_FIRST ? SM_REFILL_FIRST : f;
    }
    full_bytes = SM_LARGECACHE_MAX_BYTES;
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        full_bytes += (uint64_t)2 * sm_class_batch[cls] * sm_class_to_size[cls];
    sm_fixalloc_init(&sm_mcache_cachealloc, sizeof(struct sm_mcache));
    cache_key_ok = pthread_key_create(&cache_key, sm_mcache_thread_exit) == 0;
}

static void drain(struct sm_cacheclass *cc, uint32_t cls);

/* The cache budget.  Every cache's full bounds (two batches per class, as
 * tcmalloc's, and SM_LARGECACHE_MAX_BYTES of large spans) would let the
 * total grow with the thread count.  Instead all caches share
 * sm_cache_budget: with n caches each gets the fraction
 * budget / (n * full_bytes) of its full bounds, at most all of them, so
 * the bounds of all caches together never pass the budget (Go bounds its
 * caches by the number of Ps; tcmalloc gives each thread a share of its
 * overall thread cache size and moves it between threads).  A class whose
 * share is less than one object gets a bound of 0: its objects go to
 * mcentral one at a time.
 *
 * Bounds are the owner's, like the lists: when a cache comes or goes,
 * sm_cache_budget_gen moves on, and each thread rescales its bounds at its
 * next slow path (where it also looks at sm_flush_gen).  The fast paths do
 * not change: the bound is enforced through each list's room, which the
 * rescaling adjusts; a list longer than its new bound goes back to
 * mcentral first.  Until a thread takes a slow path its old bounds stay;
 * a thread that stops allocating keeps what it holds until its cache is
 * drained (idle caches: scavenge.c). */
static void set_bounds(struct sm_mcache *c)
{
    c->budget_gen = __atomic_load_n(&sm_cache_budget_gen, __ATOMIC_ACQUIRE);
    if (sm_check_slow)
        return;   /* checked mode: no room, every call on the slow path */
    uint64_t n = __atomic_load_n(&ncaches, __ATOMIC_RELAXED);
    uint64_t budget = __atomic_load_n(&sm_cache_budget, __ATOMIC_RELAXED);
    uint64_t f16 = 65536;   /* the share, in 1/65536ths */
    if (n * full_bytes > budget)
        f16 = budget * 65536 / (n * full_bytes);
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
        struct sm_cacheclass *cc = &c->c[cls];
        uint32_t bound = (uint32_t)((2 * sm_class_batch[cls] * f16) >> 16);
        if (sm_cacheclass_count(cc) > bound)
            drain(cc, cls);
        cc->room = bound - sm_cacheclass_count(cc);
        cc->bound = bound;
    }
    c->large.limit = (uint32_t)(((SM_LARGECACHE_MAX_BYTES >> SM_PAGE_SHIFT) * f16) >> 16);
    sm_largecache_trim(c);
}

size_t sm_mcache_cached_bytes(const struct sm_mcache *c)
{
    size_t bytes = (size_t)c->large.held << SM_PAGE_SHIFT;
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        bytes += (size_t)sm_cacheclass_count(&c->c[cls]) * sm_class_to_size[cls];
    return bytes;
}

/* Make this thread's cache; NULL if the thread is exiting or out of memory. */
static struct sm_mcache *cache_create(void)
{
    if (tls_state == 2)
        return NULL;
    sm_init();
    bool fence = sm_os_membarrier_ok();
    pthread_mutex_lock(&sm_mcache_lock);
    struct sm_mcache *c = sm_fixalloc_alloc(&sm_mcache_cachealloc);
    if (c != NULL) {
        /* Without membarrier its owner takes large spans by exchange. */
        c->large.steal = fence ? 0 : SM_LC_ATOMIC;
        /* Set before the scavenger can see the cache (sm_mcache_mark_idle
         * reads it under this lock). */
        __atomic_store_n(&c->active_epoch, __atomic_load_n(&sm_scav_epoch, __ATOMIC_RELAXED),
                         __ATOMIC_RELAXED);
        c->all_next = sm_mcache_all;
        if (sm_mcache_all)
            sm_mcache_all->all_prev = c;
        sm_mcache_all = c;
        __atomic_add_fetch(&ncaches, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&sm_cache_budget_gen, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&sm_mcache_lock);
    if (c == NULL)
        return NULL;
    /* Checked mode and valgrind: no room, lists empty, so every malloc and
     * free comes to the slow path.  The lists of kinds that are no class
     * keep no room either (fixalloc gives zeroed memory). */
    set_bounds(c);
    for (size_t i = 0; i < SM_CACHE_BYSIZE; i++)
        c->bysize[i] = &c->c[sm_size_to_class16[i]];
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

struct sm_mcache *sm_mcache_ensure(void)
{
    struct sm_mcache *c = sm_tls_mcache;
    if (c == &sm_mcache_empty) {
        c = cache_create();
        if (c == NULL)
            return &sm_mcache_empty;
    }
    return c;
}

/* One object of class cls straight from mcentral: for a thread with no
 * cache, and in checked mode, where caches stay empty. */
static void *take_one(uint32_t cls, size_t size)
{
    if (sm_unlikely(sm_check_slow))
        return sm_check_alloc_small(cls, size);
    return sm_mcentral_alloc_one(&sm_central[cls], &sm_heap);
}

static void give_one(void *p, uint32_t cls)
{
    sm_mcentral_free_one(&sm_central[cls], &sm_heap, p);
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
    return ar != NULL && (uint32_t)(__atomic_load_n(&ar->pagekind[sm_pagemap_index((uintptr_t)p)], __ATOMIC_RELAXED) & ~SM_PAGE_SLOW) == cls;
}

/* Idle caches.  A thread's lists can be changed only by the thread: its
 * fast paths use no atomic, so no other thread can take objects from them
 * safely (the large bins can be taken: large.c).  So the scavenger asks:
 * at every tick it sets drain_req on each cache that has taken no slow path
 * for SM_LARGECACHE_IDLE_TICKS ticks (about a second), and the owner, at
 * its next slow path, gives its lists back to mcentral, where empty spans
 * go back to the heap and can be released.  jemalloc's tcache GC and
 * gperftools' thread cache scavenging are done by the owner too.  A thread
 * busy on its fast paths alone is asked as well and pays one drain a
 * second.  A thread that never allocates again keeps its lists, bounded by
 * its share of the cache budget, until it exits; its large spans the
 * scavenger takes itself. */
void sm_mcache_mark_idle(uint32_t before_epoch)
{
    pthread_mutex_lock(&sm_mcache_lock);
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next)
        if (__atomic_load_n(&c->active_epoch, __ATOMIC_RELAXED) <= before_epoch)
            __atomic_store_n(&c->drain_req, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&sm_mcache_lock);
}

/* At every slow path: note the thread is active; drain if asked. */
static void note_active(struct sm_mcache *c)
{
    uint32_t epoch = __atomic_load_n(&sm_scav_epoch, __ATOMIC_RELAXED);
    if (c->active_epoch != epoch)
        __atomic_store_n(&c->active_epoch, epoch, __ATOMIC_RELAXED);
    if (sm_unlikely(__atomic_load_n(&c->drain_req, __ATOMIC_RELAXED))) {
        __atomic_store_n(&c->drain_req, 0, __ATOMIC_RELAXED);
        sm_mcache_flush(c);
    }
}

/* Slow start (tcmalloc's thread cache grows a list's max_length from 1 by
 * each fetch): a class's first refill in a thread takes SM_REFILL_FIRST
 * objects and each next one twice as many, up to the class's batch.  A
 * batch is 16 KiB of objects (2 to 64 of them), and every object taken is
 * written (its link), so a thread that uses a class for a few objects
 * would otherwise make 16 KiB of it resident: with 8 threads over the 31
 * classes up to 1 KiB, most of a MiB.  Loops reach the full batch after
 * three or four refills.  A flush (idle, sm_free_os_memory) starts over.  Classes
 * over 1 KiB start with what fits in one 4 KiB page (one object from
 * 4 KiB up): a buffer grown by realloc passes through every class once,
 * and would otherwise leave three untouched objects' pages resident in
 * each of them. */

static uint32_t refill_count(struct sm_mcache *c, uint32_t cls, uint32_t bound)
{
    uint32_t batch = sm_class_batch[cls];
    uint32_t want = c->fetch[cls] ? c->fetch[cls] : sm_class_refill_first[cls];
    if (want > batch)
        want = batch;
    c->fetch[cls] = (uint8_t)(2 * want < batch ? 2 * want : batch);
    return want < bound ? want : bound;
}

/* The fast path has counted size down on this thread's cache
 * (sm_sample_countdown) before it came here. */
void *sm_mcache_alloc_slow(uint32_t cls, size_t size)
{
    struct sm_mcache *c = sm_tls_mcache;
    if (cls == 0)   /* the empty cache's stand-in list (sm_alloc_small16) */
        cls = sm_size_to_class(size);
    if (sm_unlikely(sm_check_slow)) {
        /* Room for a canary: perhaps a larger class, or a large object,
         * which counts its own sample (so not twice). */
        uint32_t real = sm_check_class(cls, size);
        if (real == 0) {
            if (c != &sm_mcache_empty)
                c->sample_left += (intptr_t)size;
            return sm_large_alloc(size, 0);
        }
        cls = real;
    }
    if (c == &sm_mcache_empty) {
        c = cache_create();
        if (c == NULL)
            return alloc_uncached(cls, size);
        c->sample_left -= (intptr_t)size;   /* counted on the empty cache */
    }
    if (sm_unlikely(c->flush_gen != __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED))) {
        /* sm_free_os_memory asked every thread to give its cache back. */
        c->flush_gen = __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED);
        sm_mcache_flush(c);
    }
    if (sm_unlikely(c->budget_gen != __atomic_load_n(&sm_cache_budget_gen, __ATOMIC_RELAXED)))
        set_bounds(c);
    note_active(c);
    struct sm_cacheclass *cc = &c->c[cls];
    void *p;
    if (sm_unlikely(sm_check_slow || cc->bound == 0)) {
        p = take_one(cls, size);
        if (p == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        sm_worker_start();   /* checked mode too has the scavenger and the endpoint */
    } else {
        if (cc->head == NULL) {
            void *head;
            uint32_t want = refill_count(c, cls, cc->bound);
            uint32_t n = sm_mcentral_refill(&sm_central[cls], &sm_heap, want, cc->bound, &head);
            if (n == 0) {
                errno = ENOMEM;
                return NULL;
            }
            c->unparked[cls] = n > want;   /* more than the spans give: parked */
            cc->head = head;
            cc->room = cc->bound - n;
            sm_worker_start();
        }
        p = cc->head;
        /* The fast path sends a head that is no address here. */
        if (sm_unlikely(sm_freelist_bad(p) || !in_class(p, cls)))
            sm_freelist_corrupt("malloc", NULL, p);
        cc->head = sm_link_load(p);
        cc->room++;
    }
    SM_COUNTER_ADD(cc->nmalloc, 1);
    /* Record by the requested size, which is what was counted down, so the
     * profile's bytes are what the program asked for. */
    if (sm_unlikely(c->sample_left < 0)) {
        c->sample_left = sm_mprof_next_sample(c);
        sm_mprof_record_alloc(p, size);
    }
    return p;
}

/* A list at its bound goes to mcentral to be parked (mcentral.c), all of
 * it, with one exception.  A list that came whole from a parked list and
 * fills up again before the next drain belongs to a thread that allocates
 * and frees around its bound: parking it all would send the whole list
 * back and forth at every turn.  Then the newest half stays (its objects
 * were just freed, so following their links is cheap) and the rest is
 * parked. */
static void *next_checked(void *p)
{
    void *next = sm_link_load(p);
    if (sm_unlikely(sm_freelist_bad(next)))   /* NULL too: the count says more */
        sm_freelist_corrupt("free", p, next);
    return next;
}

static void drain_to_park(struct sm_mcache *c, struct sm_cacheclass *cc, uint32_t cls)
{
    uint32_t n = sm_cacheclass_count(cc);
    uint32_t keep = c->unparked[cls] ? n / 2 : 0;
    void *head = cc->head, *give = head;
    c->unparked[cls] = 0;
    if (keep != 0) {
        void *last = head;   /* the keep-th object */
        for (uint32_t i = 1; i < keep; i++)
            last = next_checked(last);
        give = next_checked(last);
        sm_link_store(last, NULL);
    } else {
        head = NULL;
    }
    cc->head = head;
    cc->room = cc->bound - keep;
    sm_mcentral_park(&sm_central[cls], &sm_heap, give, n - keep);
}

/* Give a class list back to its spans, all of it. */
static void drain(struct sm_cacheclass *cc, uint32_t cls)
{
    uint32_t n = sm_cacheclass_count(cc);
    if (n == 0)
        return;
    /* No walk here: mcentral checks each object before it follows the
     * object's link. */
    void *head = cc->head;
    cc->head = NULL;
    cc->room = cc->bound;
    sm_mcentral_free_batch(&sm_central[cls], &sm_heap, head, n);
}

static SM_NOINLINE void free_small_slow(void *p, uint8_t kind);

/* The arena is looked up once for the kind and a large object's span; both
 * calls are tail calls, so a large free saves no registers here. */
void sm_mcache_free_slow(void *p)
{
    struct sm_heap_arena *ar = sm_pagemap_arena((uintptr_t)p);
    if (ar == NULL) {
        if (p == NULL)
            return;
        sm_check_bad_free("invalid pointer", p);
    }
    size_t i = sm_pagemap_index((uintptr_t)p);
    uint8_t kind = __atomic_load_n(&ar->pagekind[i], __ATOMIC_RELAXED);
    if (sm_likely(kind == SM_PAGE_LARGE)) {
        sm_large_free(p, ar->spans[i]);   /* checks p, the profiler, the large cache */
        return;
    }
    free_small_slow(p, kind);
}

static void free_small_slow(void *p, uint8_t kind)
{
    switch (kind) {
    case SM_PAGE_NONE:
        sm_check_bad_free("invalid pointer", p);
    case SM_PAGE_FREE:
        sm_check_bad_free("double free of", p);
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
    if (sm_unlikely(c->budget_gen != __atomic_load_n(&sm_cache_budget_gen, __ATOMIC_RELAXED)))
        set_bounds(c);
    note_active(c);
    if (sm_unlikely(cc->bound == 0)) {
        /* No share of the budget for this class now. */
        give_one(p, cls);
        SM_COUNTER_ADD(cc->nfree, 1);
        return;
    }
    if (cc->room == 0)
        drain_to_park(c, cc, cls);
    *(void **)p = sm_freelist_encode(p, cc->head);
    cc->head = p;
    cc->room--;
    SM_COUNTER_ADD(cc->nfree, 1);
}

void sm_mcache_flush(struct sm_mcache *c)
{
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        drain(&c->c[cls], cls);
    memset(c->fetch, 0, sizeof c->fetch);
    memset(c->unparked, 0, sizeof c->unparked);
    sm_largecache_flush(c);
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
    sm_dead.large_nmalloc += c->large.nmalloc;
    sm_dead.large_nfree += c->large.nfree;
    sm_dead.large_bytes_alloc += c->large.bytes_alloc;
    sm_dead.large_bytes_free += c->large.bytes_free;
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        sm_mcache_all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    __atomic_sub_fetch(&ncaches, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&sm_cache_budget_gen, 1, __ATOMIC_RELEASE);
    sm_fixalloc_free(&sm_mcache_cachealloc, c);
    pthread_mutex_unlock(&sm_mcache_lock);
}
