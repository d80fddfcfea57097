/*
 * test_large.c - the per-thread cache of freed large spans
 * (large.c):
 *
 *   reuse        a freed large object's span serves the next malloc of the
 *                same page count (or up to an eighth more) in the same
 *                thread, at the same address; calloc of it is zeroed.
 *   grown        a buffer realloc grew is not kept when freed (it goes to
 *                the heap); one malloc'd at its size is.
 *   bounds       spans over 1 MiB are not kept; at most 1 MiB, and
 *                SM_LARGECACHE_WAYS spans of one page count, are; aligned
 *                requests bypass the cache.
 *   stats        exact: a cached span's free counts as a free and leaves
 *                heap_alloc, its pages stay in heap_inuse; reuse counts a
 *                malloc; giving it back to the heap counts nothing; the
 *                invariants of spanmalloc.h hold at every step.
 *   giving back  sm_free_os_memory takes every thread's spans, the
 *                scavenger takes idle ones, the heap takes them before it
 *                grows past the memory limit, a thread's exit gives its own.
 *   errors       a second free of a cached span is a double free.
 *
 * Links the static library; the background scavenger is switched off in
 * main so that only the ticks this test runs move the idle clock, and the
 * profiler is off so no sample changes a span's path.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "spanmalloc.h"
#include "../common/child.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)
#define PAGES(n) ((size_t)(n) << SM_PAGE_SHIFT)

static void check_invariants(const struct sm_memstats *m)
{
    assert_int_equal(m->heap_inuse + m->heap_idle, m->heap_sys);
    assert_true(m->heap_released <= m->heap_idle);
    assert_true(m->heap_alloc <= m->heap_inuse);
    assert_int_equal(m->heap_objects, m->mallocs - m->frees);
    assert_int_equal(m->sys, m->heap_sys + m->mspan_sys + m->mcache_sys + m->other_sys);
}

static struct sm_memstats stats(void)
{
    struct sm_memstats m;
    sm_read_memstats(&m);
    check_invariants(&m);
    return m;
}

static const struct sm_class_stats *large_stats(const struct sm_memstats *m)
{
    return &m->by_size[m->num_by_size - 1];
}

/* Spans in a cache, as its owner or any thread sees them. */
static unsigned cached_spans(struct sm_mcache *c)
{
    unsigned n = 0;
    for (unsigned b = 0; b <= SM_LARGECACHE_MAX_PAGES; b++)
        for (unsigned i = 0; i < SM_LARGECACHE_WAYS; i++)
            n += __atomic_load_n(&c->large.slot[b][i], __ATOMIC_ACQUIRE) != NULL;
    return n;
}

static size_t cached_bytes(struct sm_mcache *c)
{
    size_t bytes = 0;
    for (unsigned b = 0; b <= SM_LARGECACHE_MAX_PAGES; b++)
        for (unsigned i = 0; i < SM_LARGECACHE_WAYS; i++) {
            struct sm_mspan *s = __atomic_load_n(&c->large.slot[b][i], __ATOMIC_ACQUIRE);
            if (s != NULL) {
                assert_int_equal(s->npages, b);   /* each span in its own bin */
                bytes += PAGES(s->npages);
            }
        }
    return bytes;
}

static int setup(void **state)
{
    (void)state;
    free(malloc(16));   /* this thread has a cache */
    sm_free_os_memory();
    assert_int_equal(cached_spans(sm_tls_mcache), 0);
    return 0;
}

static void test_reuse_same_address(void **state)
{
    (void)state;
    char *p = malloc(100000);
    assert_non_null(p);
    memset(p, 0x5a, 100000);
    free(p);
    assert_int_equal(cached_spans(sm_tls_mcache), 1);
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    assert_int_equal(s->state, SM_SPAN_CACHED);
    /* The same page count: the same span, live again. */
    char *q = malloc(99000);
    assert_ptr_equal(q, p);
    assert_int_equal(s->state, SM_SPAN_LARGE);
    assert_int_equal(cached_spans(sm_tls_mcache), 0);
    assert_int_equal(malloc_usable_size(q), PAGES(13));
    free(q);
    /* An eighth more pages than asked is still taken: 13 pages for 12. */
    q = malloc(PAGES(12));
    assert_ptr_equal(q, p);
    free(q);
    /* Much smaller is not: 13 pages for a request of 8. */
    q = malloc(PAGES(8));
    assert_ptr_not_equal(q, p);
    assert_int_equal(cached_spans(sm_tls_mcache), 1);
    free(q);
    assert_int_equal(cached_spans(sm_tls_mcache), 2);
}

/* A buffer realloc grew is not kept for reuse when it is freed: it goes
 * to the heap, whose free policy decides whether its pages stay resident.
 * One malloc'd at the same size is kept. */
static void test_grown_not_cached(void **state)
{
    (void)state;
    /* Grown in place (nothing after it yet) and by moving. */
    char *p = malloc(40000);
    assert_non_null(p);
    char *keep = malloc(20000);   /* small: may sit after p, or not */
    for (size_t n = 48000; n <= 400000; n += 24000) {
        p = realloc(p, n);
        assert_non_null(p);
        p[n - 1] = 1;
    }
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    assert_int_equal(s->state, SM_SPAN_LARGE);
    assert_int_equal(s->grown, 1);
    size_t before = cached_spans(sm_tls_mcache);
    free(p);
    assert_int_equal(cached_spans(sm_tls_mcache), before);
    assert_int_not_equal(s->state, SM_SPAN_CACHED);
    /* The same size from malloc: cached, and not marked. */
    char *q = malloc(400000);
    assert_non_null(q);
    s = sm_pagemap_span((uintptr_t)q);
    assert_int_equal(s->grown, 0);
    free(q);
    assert_int_equal(cached_spans(sm_tls_mcache), before + 1);
    assert_int_equal(s->state, SM_SPAN_CACHED);
    /* Shrinking is not growing. */
    q = malloc(400000);
    q = realloc(q, 300000);
    s = sm_pagemap_span((uintptr_t)q);
    assert_int_equal(s->grown, 0);
    free(q);
    free(keep);
}

static void test_calloc_from_cache_is_zero(void **state)
{
    (void)state;
    unsigned char *p = malloc(300000);
    memset(p, 0xff, 300000);
    free(p);
    unsigned char *q = calloc(1, 300000);
    assert_ptr_equal(q, p);
    for (size_t i = 0; i < 300000; i += 511)
        assert_int_equal(q[i], 0);
    assert_int_equal(q[299999], 0);
    free(q);
}

static void test_stats_exact(void **state)
{
    (void)state;
    sm_free_os_memory();
    struct sm_memstats a = stats();
    void *p = malloc(200000);            /* 25 pages, from the heap */
    struct sm_memstats b = stats();
    assert_int_equal(large_stats(&b)->mallocs - large_stats(&a)->mallocs, 1);
    assert_int_equal(b.heap_alloc - a.heap_alloc, PAGES(25));
    assert_int_equal(b.heap_inuse - a.heap_inuse, PAGES(25));
    free(p);                             /* into the cache */
    struct sm_memstats c = stats();
    assert_int_equal(large_stats(&c)->frees - large_stats(&b)->frees, 1);
    assert_int_equal(c.frees - b.frees, 1);
    assert_int_equal(c.heap_alloc, a.heap_alloc);
    assert_int_equal(c.heap_inuse, b.heap_inuse);   /* still lent out */
    assert_int_equal(c.heap_objects, a.heap_objects);
    void *q = malloc(200000);            /* from the cache */
    assert_ptr_equal(q, p);
    struct sm_memstats d = stats();
    assert_int_equal(large_stats(&d)->mallocs - large_stats(&c)->mallocs, 1);
    assert_int_equal(d.heap_alloc, b.heap_alloc);
    assert_int_equal(d.heap_inuse, b.heap_inuse);
    assert_int_equal(d.total_alloc - b.total_alloc, PAGES(25));
    free(q);
    sm_free_os_memory();                 /* back to the heap: no count */
    struct sm_memstats e = stats();
    assert_int_equal(large_stats(&e)->frees, large_stats(&d)->frees + 1);
    assert_int_equal(large_stats(&e)->mallocs, large_stats(&d)->mallocs);
    assert_int_equal(e.heap_alloc, a.heap_alloc);
    assert_int_equal(e.heap_inuse, a.heap_inuse);
    sm_mheap_check(&sm_heap);
}

static void test_bounds(void **state)
{
    (void)state;
    struct sm_mcache *c = sm_tls_mcache;
    /* Over 1 MiB: straight back to the heap. */
    struct sm_memstats a = stats();
    void *big = malloc(MiB + 1);
    free(big);
    assert_int_equal(cached_spans(c), 0);
    struct sm_memstats b = stats();
    assert_int_equal(b.heap_inuse, a.heap_inuse);
    /* Exactly 1 MiB is kept. */
    void *one = malloc(MiB);
    free(one);
    assert_int_equal(cached_bytes(c), MiB);
    /* Ten 512 KiB spans: at most 1 MiB stays, the rest go to the heap. */
    void *v[10];
    for (int i = 0; i < 10; i++)
        v[i] = malloc(512 * KiB);
    for (int i = 0; i < 10; i++)
        free(v[i]);
    assert_true(cached_bytes(c) <= SM_LARGECACHE_MAX_BYTES);
    assert_int_equal(cached_bytes(c), SM_LARGECACHE_MAX_BYTES);
    /* Twenty small large spans of one size: a bin's worth. */
    sm_free_os_memory();
    void *w[20];
    for (int i = 0; i < 20; i++)
        w[i] = malloc(40 * KiB);
    for (int i = 0; i < 20; i++)
        free(w[i]);
    assert_int_equal(cached_spans(c), SM_LARGECACHE_WAYS);
    sm_free_os_memory();
    /* ... and of twenty sizes, as many as the bytes allow (5 to 24 pages:
     * 290 pages in all, at most 128 fit). */
    for (int i = 0; i < 20; i++)
        w[i] = malloc(PAGES(5 + i));
    for (int i = 0; i < 20; i++)
        free(w[i]);
    assert_true(cached_bytes(c) <= SM_LARGECACHE_MAX_BYTES);
    /* Eviction makes no more room than the span that comes in needs. */
    assert_true(cached_bytes(c) > SM_LARGECACHE_MAX_BYTES - PAGES(24));
    assert_non_null(c->large.slot[24][0]);
    /* A span below the large sizes (an aligned small request) is not kept. */
    sm_free_os_memory();
    void *z = aligned_alloc(16 * KiB, 24 * KiB);
    assert_int_equal(sm_pagemap_kind((uintptr_t)z), SM_PAGE_LARGE);
    free(z);
    assert_int_equal(cached_spans(c), 0);
    sm_free_os_memory();
    /* Aligned beyond a page: never from the cache. */
    void *x = malloc(64 * KiB);
    free(x);
    void *y = aligned_alloc(64 * KiB, 64 * KiB);
    assert_int_equal((uintptr_t)y % (64 * KiB), 0);
    assert_int_equal(cached_spans(c), 1);
    free(y);
    sm_free_os_memory();
    struct sm_memstats d = stats();
    assert_int_equal(d.heap_inuse, a.heap_inuse);
}

/* A thread that frees a large object into its cache, then waits. */
struct parked {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int phase;               /* 1: freed, parked; 2: go on */
    struct sm_mcache *cache;
    void *p;
    size_t size;
};

static void *parked_main(void *arg)
{
    struct parked *k = arg;
    free(malloc(16));
    k->p = malloc(k->size);
    memset(k->p, 1, k->size);
    free(k->p);
    pthread_mutex_lock(&k->mu);
    k->cache = sm_tls_mcache;
    k->phase = 1;
    pthread_cond_broadcast(&k->cv);
    while (k->phase != 2)
        pthread_cond_wait(&k->cv, &k->mu);
    pthread_mutex_unlock(&k->mu);
    /* Whether or not its slot was emptied from outside, a malloc works. */
    void *q = malloc(k->size);
    assert_non_null(q);
    free(q);
    return NULL;
}

static void park(struct parked *k, pthread_t *t, size_t size)
{
    memset(k, 0, sizeof *k);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->size = size;
    assert_int_equal(pthread_create(t, NULL, parked_main, k), 0);
    pthread_mutex_lock(&k->mu);
    while (k->phase != 1)
        pthread_cond_wait(&k->cv, &k->mu);
    pthread_mutex_unlock(&k->mu);
}

static void unpark(struct parked *k, pthread_t t)
{
    pthread_mutex_lock(&k->mu);
    k->phase = 2;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    assert_int_equal(pthread_join(t, NULL), 0);
}

static void test_free_os_memory_takes_every_thread(void **state)
{
    (void)state;
    struct parked k;
    pthread_t t;
    park(&k, &t, 300 * KiB);
    assert_int_equal(cached_spans(k.cache), 1);
    struct sm_memstats a = stats();
    sm_free_os_memory();
    assert_int_equal(cached_spans(k.cache), 0);
    struct sm_memstats b = stats();
    assert_true(a.heap_inuse - b.heap_inuse >= PAGES(38));
    /* Everything idle is released: resident heap = sys - released. */
    assert_true(b.heap_idle - b.heap_released <= 64 * SM_PAGE_SIZE);
    assert_int_equal(b.frees, a.frees);
    unpark(&k, t);
    stats();
}

/* The owner takes a span with plain stores; a thread that takes spans
 * from it first waits for it to leave a take.  An owner held in the middle
 * of one (busy set by hand, as a thread stopped there would leave it)
 * keeps its spans; once out, they go; afterwards its takes are plain
 * again.  Without membarrier the cache is made in exchange mode and its
 * spans go at once. */
static void test_reclaim_waits_for_owner(void **state)
{
    (void)state;
    struct parked k;
    pthread_t t;
    park(&k, &t, 200 * KiB);
    struct sm_largecache *lc = &k.cache->large;
    assert_int_equal(cached_spans(k.cache), 1);
    if (!sm_os_membarrier_ok()) {
        assert_int_equal(lc->steal, SM_LC_ATOMIC);
        sm_largecache_reclaim_all();
        assert_int_equal(cached_spans(k.cache), 0);
        unpark(&k, t);
        return;
    }
    assert_int_equal(lc->steal, 0);
    __atomic_store_n(&lc->busy, 1, __ATOMIC_RELEASE);
    sm_largecache_reclaim_all();
    assert_int_equal(cached_spans(k.cache), 1);   /* kept: the owner is "in a take" */
    __atomic_store_n(&lc->busy, 0, __ATOMIC_RELEASE);
    sm_largecache_reclaim_all();
    assert_int_equal(cached_spans(k.cache), 0);
    assert_int_equal(lc->steal, 0);               /* plain takes again */
    unpark(&k, t);
    stats();
}

/* Four threads take and free large spans in their caches as fast as they
 * can while this one empties every cache over and over: a span taken both
 * by its owner and by the reclaim would be handed out twice (another
 * thread's mark found in it) or freed twice (reported, abort). */
struct churn {
    int id;
    int stop;                 /* atomic, set by the main thread */
    unsigned long progress;   /* atomic: rounds so far */
    unsigned long rounds, bad;
};

static void *churn_main(void *arg)
{
    struct churn *ch = arg;
    static const size_t sizes[] = {40 * KiB, 64 * KiB, 96 * KiB, 200 * KiB};
    unsigned long r = 0;
    while (!__atomic_load_n(&ch->stop, __ATOMIC_ACQUIRE) || r < 20000) {
        size_t n = sizes[r % 4];
        unsigned long *p = malloc(n);
        assert_non_null(p);
        unsigned long mark = ((unsigned long)ch->id << 56) | r;
        p[0] = mark;
        p[n / sizeof *p - 1] = mark;
        for (int i = 0; i < 8; i++)
            __asm__ volatile("" ::: "memory");
        if (p[0] != mark || p[n / sizeof *p - 1] != mark)
            ch->bad++;
        free(p);
        r++;
        __atomic_store_n(&ch->progress, r, __ATOMIC_RELAXED);
    }
    ch->rounds = r;
    return NULL;
}

static void test_reclaim_while_owners_take(void **state)
{
    (void)state;
    enum { T = 4 };
    struct churn ch[T];
    pthread_t t[T];
    struct sm_memstats a = stats();
    for (int i = 0; i < T; i++) {
        memset(&ch[i], 0, sizeof ch[i]);
        ch[i].id = i + 1;
        assert_int_equal(pthread_create(&t[i], NULL, churn_main, &ch[i]), 0);
    }
    /* At least 2000 reclaims, and on until every thread has churned a
     * while and some reclaim took a span from under its owner: on a
     * loaded machine the threads may start only after 2000 reclaims of
     * empty caches.  At most a minute. */
    size_t reclaimed = 0;
    time_t until = time(NULL) + 60;
    for (int i = 0;; i++) {
        reclaimed += sm_largecache_reclaim(UINT32_MAX);
        unsigned long least = ~0ul;
        for (int k = 0; k < T; k++) {
            unsigned long pr = __atomic_load_n(&ch[k].progress, __ATOMIC_RELAXED);
            least = pr < least ? pr : least;
        }
        if ((i >= 2000 && least >= 5000 && reclaimed > 0) || time(NULL) > until)
            break;
    }
    for (int i = 0; i < T; i++)
        __atomic_store_n(&ch[i].stop, 1, __ATOMIC_RELEASE);
    unsigned long rounds = 0;
    for (int i = 0; i < T; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(ch[i].bad, 0);
        rounds += ch[i].rounds;
    }
    print_message("# %lu large malloc+free in 4 threads, reclaims took %zu MiB\n",
                  rounds, reclaimed / MiB);
    assert_true(reclaimed > 0);
    sm_mheap_check(&sm_heap);
    struct sm_memstats b = stats();
    assert_int_equal(large_stats(&b)->mallocs - large_stats(&a)->mallocs, rounds);
    assert_int_equal(large_stats(&b)->frees - large_stats(&a)->frees, rounds);
}

static void test_thread_exit_gives_back(void **state)
{
    (void)state;
    sm_free_os_memory();
    struct sm_memstats a = stats();
    struct parked k;
    pthread_t t;
    park(&k, &t, 500 * KiB);
    struct sm_memstats b = stats();
    assert_true(b.heap_inuse >= a.heap_inuse + 500 * KiB);
    unpark(&k, t);   /* mallocs and frees it again, then exits */
    struct sm_memstats c = stats();
    /* Its span is back in the heap, its counts kept. */
    assert_int_equal(large_stats(&c)->mallocs - large_stats(&a)->mallocs, 2);
    assert_int_equal(large_stats(&c)->frees - large_stats(&a)->frees, 2);
    assert_int_equal(c.heap_alloc, a.heap_alloc);
    assert_true(c.heap_inuse < a.heap_inuse + 500 * KiB);
    /* The second malloc was served from its cache: kept as the dead's. */
    pthread_mutex_lock(&sm_mcache_lock);
    uint64_t dead = sm_dead.large_nmalloc;
    pthread_mutex_unlock(&sm_mcache_lock);
    assert_true(dead >= 1);
}

static void test_scavenger_takes_idle(void **state)
{
    (void)state;
    struct sm_mcache *c = sm_tls_mcache;
    void *p = malloc(64 * KiB);
    free(p);
    assert_int_equal(cached_spans(c), 1);
    /* Within SM_LARGECACHE_IDLE_TICKS ticks it stays... */
    for (int i = 0; i < SM_LARGECACHE_IDLE_TICKS - 1; i++)
        sm_scavenge_tick(sm_nanotime());
    assert_int_equal(cached_spans(c), 1);
    /* ... unless it is reused, which starts its time again ... */
    p = malloc(64 * KiB);
    free(p);
    for (int i = 0; i < SM_LARGECACHE_IDLE_TICKS - 1; i++)
        sm_scavenge_tick(sm_nanotime());
    assert_int_equal(cached_spans(c), 1);
    /* ... and then it goes back to the heap. */
    struct sm_memstats a = stats();
    sm_scavenge_tick(sm_nanotime());
    assert_int_equal(cached_spans(c), 0);
    struct sm_memstats b = stats();
    assert_int_equal(a.heap_inuse - b.heap_inuse, 64 * KiB);
    assert_int_equal(b.frees, a.frees);
}

static void test_memory_limit_takes_them(void **state)
{
    (void)state;
    sm_free_os_memory();
    struct parked k;
    pthread_t t;
    park(&k, &t, 800 * KiB);
    assert_int_equal(cached_spans(k.cache), 1);
    struct sm_memstats m = stats();
    /* A limit below what is resident now: the next growth of the heap
     * takes the cached span back first. */
    size_t old = sm_set_memory_limit((size_t)(m.heap_sys - m.heap_released) / 2);
    void *big = malloc(256 * MiB);
    assert_non_null(big);
    assert_int_equal(cached_spans(k.cache), 0);
    sm_set_memory_limit(old);
    free(big);
    unpark(&k, t);
    stats();
}

static void do_double_free(void *arg)
{
    (void)arg;
    void *p = malloc(100000);
    free(p);
    free(p);
}

static void test_double_free_of_cached_span(void **state)
{
    (void)state;
    /* In a child: the second free must report and abort. */
    struct outcome o;
    expect_abort(do_double_free, NULL, &o);
    assert_non_null(strstr(o.err, "double free"));
}

int main(void)
{
    sm_set_profile_rate(0);
    /* Only this test's own ticks move the idle clock. */
    __atomic_store_n(&sm_opts.scavenge, false, __ATOMIC_RELAXED);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_reuse_same_address, setup),
        cmocka_unit_test_setup(test_grown_not_cached, setup),
        cmocka_unit_test_setup(test_calloc_from_cache_is_zero, setup),
        cmocka_unit_test_setup(test_stats_exact, setup),
        cmocka_unit_test_setup(test_bounds, setup),
        cmocka_unit_test_setup(test_free_os_memory_takes_every_thread, setup),
        cmocka_unit_test_setup(test_reclaim_waits_for_owner, setup),
        cmocka_unit_test_setup(test_reclaim_while_owners_take, setup),
        cmocka_unit_test_setup(test_thread_exit_gives_back, setup),
        cmocka_unit_test_setup(test_scavenger_takes_idle, setup),
        cmocka_unit_test_setup(test_memory_limit_takes_them, setup),
        cmocka_unit_test_setup(test_double_free_of_cached_span, setup),
    };
    return cmocka_run_group_tests_name("large", tests, NULL, NULL);
}
