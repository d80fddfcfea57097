/*
 * test_mcache.c - the thread cache: made on first use, bounded lists,
 * batches from mcentral (slow start: 4, 8, 16, then a batch) and whole
 * lists back to it, parked there for any thread's refill, given back at thread
 * exit; the budget all caches share, whatever the number of threads; an
 * idle thread's lists given back at the scavenger's request; and
 * the OS layer's fault hook turning mmap failures into ENOMEM.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"
#include "spanmalloc.h"

static uint32_t cache_count(void)
{
    uint32_t n = 0;
    pthread_mutex_lock(&sm_mcache_lock);
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next)
        n++;
    pthread_mutex_unlock(&sm_mcache_lock);
    return n;
}

static void test_cache_made_on_first_use(void **state)
{
    (void)state;
    void *p = malloc(40);
    assert_non_null(p);
    assert_ptr_not_equal(sm_tls_mcache, &sm_mcache_empty);
    free(p);
}

static void test_bounds(void **state)
{
    (void)state;
    uint32_t cls = sm_size_to_class(64);
    struct sm_cacheclass *cc = &sm_tls_mcache->c[cls];
    enum { N = 5000 };
    static void *objs[N];
    for (int i = 0; i < N; i++)
        objs[i] = malloc(64);
    /* A refill from the spans brings one batch at most (no list of the
     * class is parked yet). */
    assert_true(sm_cacheclass_count(cc) <= sm_class_batch[cls]);
    uint32_t prev = sm_cacheclass_count(cc), drains = 0;
    for (int i = 0; i < N; i++) {
        free(objs[i]);
        assert_true(sm_cacheclass_count(cc) <= cc->bound);
        /* A free that finds the list full gives it all to mcentral and
         * keeps only the object it frees. */
        if (sm_cacheclass_count(cc) < prev) {
            assert_int_equal(prev, cc->bound);
            assert_int_equal(sm_cacheclass_count(cc), 1);
            drains++;
        }
        prev = sm_cacheclass_count(cc);
    }
    assert_int_equal(cc->bound, 2 * sm_class_batch[cls]);
    assert_true(drains >= N / (2 * sm_class_batch[cls]) - 1);
    /* The batches are sized from the object size. */
    assert_int_equal(sm_class_batch[sm_size_to_class(16)], 64);
    assert_int_equal(sm_class_batch[sm_size_to_class(32768)], 2);
}

static void test_flush(void **state)
{
    (void)state;
    void *p = malloc(3000);
    free(p);
    uint32_t cls = sm_size_to_class(3000);
    assert_true(sm_cacheclass_count(&sm_tls_mcache->c[cls]) > 0);
    sm_mcache_flush(sm_tls_mcache);
    for (uint32_t c = 1; c < SM_NUM_SIZE_CLASSES; c++)
        assert_int_equal(sm_cacheclass_count(&sm_tls_mcache->c[c]), 0);
    assert_null(sm_tls_mcache->c[cls].head);
}

/* Slow start: in a new thread a class's refills take 4, 8, 16, then the
 * batch's objects; a flush starts over. */
static void *slow_start_body(void *arg)
{
    uint32_t *sizes = arg;
    uint32_t cls = sm_size_to_class(1024);
    struct sm_cacheclass *cc = &sm_tls_mcache->c[cls];
    static void *objs[200];
    int k = 0, n = 0;
    for (int i = 0; i < 100 && k < 6; i++) {
        uint32_t before = sm_tls_mcache == &sm_mcache_empty ? 0 : sm_cacheclass_count(cc);
        objs[n++] = malloc(1024);
        cc = &sm_tls_mcache->c[cls];
        if (before == 0)
            sizes[k++] = sm_cacheclass_count(cc) + 1;
    }
    for (int i = 0; i < n; i++)
        free(objs[i]);
    sm_mcache_flush(sm_tls_mcache);
    /* The frees parked a list, which the next refill would take whole:
     * to the spans with it, so that the refill comes from them. */
    sm_mcentral_flush_parked(&sm_central[cls], &sm_heap, true);
    void *p = malloc(1024);
    sizes[6] = sm_cacheclass_count(cc) + 1;
    free(p);
    return NULL;
}

static void test_refill_slow_start(void **state)
{
    (void)state;
    uint32_t cls = sm_size_to_class(1024);
    assert_int_equal(sm_class_batch[cls], 16);
    uint32_t sizes[7] = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_start_body, sizes), 0);
    pthread_join(t, NULL);
    uint32_t want[7] = {4, 8, 16, 16, 16, 16, 4};
    for (int i = 0; i < 7; i++)
        assert_int_equal(sizes[i], want[i]);
}

static uint64_t dead_mallocs(uint32_t cls)
{
    pthread_mutex_lock(&sm_mcache_lock);
    uint64_t n = sm_dead.nmalloc[cls];
    pthread_mutex_unlock(&sm_mcache_lock);
    return n;
}

static void *thread_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++)
        free(malloc(208));
    void *keep = malloc(208);
    return keep;
}

static void test_thread_exit_returns_cache(void **state)
{
    (void)state;
    uint32_t cls = sm_size_to_class(208);
    uint32_t before = cache_count();
    uint64_t dead0 = dead_mallocs(cls);
    pthread_t t;
    void *kept = NULL;
    assert_int_equal(pthread_create(&t, NULL, thread_body, NULL), 0);
    assert_int_equal(pthread_join(t, &kept), 0);
    assert_non_null(kept);
    /* Its cache is gone from the registry, its counts kept. */
    assert_int_equal(cache_count(), before);
    assert_true(dead_mallocs(cls) >= dead0 + 101);
    free(kept);
}

static void test_mmap_failure_is_enomem(void **state)
{
    (void)state;
    /* A request bigger than anything free: the heap must map more, and the
     * first map fails. */
    sm_os_fail_nth(1);
    errno = 0;
    void *p = malloc((size_t)3 << 30);
    assert_null(p);
    assert_int_equal(errno, ENOMEM);
    sm_os_fail_nth(0);
    /* The heap is still usable, and the same request now works. */
    void *q = malloc(100);
    assert_non_null(q);
    p = malloc((size_t)3 << 30);
    assert_non_null(p);
    ((char *)p)[((size_t)3 << 30) - 1] = 1;
    free(p);
    free(q);
    sm_mheap_check(&sm_heap);
}

/* ---- the cache budget: 64 threads fill their caches at once ---- */

#define BUDGET_THREADS 64
static pthread_barrier_t budget_bar;

static void *budget_worker(void *arg)
{
    (void)arg;
    static const size_t sizes[] = { 64, 256, 1024, 4096, 16384 };
    free(malloc(16));                      /* this thread's cache exists */
    pthread_barrier_wait(&budget_bar);     /* ... and every other one's */
    void *v[200];
    for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        for (int i = 0; i < 200; i++)
            v[i] = malloc(sizes[k]);
        for (int i = 0; i < 200; i++)
            free(v[i]);
    }
    for (int i = 0; i < 2; i++)
        v[i] = malloc(256 * 1024);
    for (int i = 0; i < 2; i++)
        free(v[i]);
    /* Its bounds are its share of the budget, not the full ones. */
    uint32_t cls = sm_size_to_class(1024);
    assert_true(sm_tls_mcache->c[cls].bound < 2 * sm_class_batch[cls]);
    pthread_barrier_wait(&budget_bar);     /* filled: main counts */
    pthread_barrier_wait(&budget_bar);     /* counted: exit */
    return NULL;
}

static void test_budget_shared_by_threads(void **state)
{
    (void)state;
    size_t saved = sm_cache_budget;
    sm_cache_budget = (size_t)4 << 20;
    pthread_t t[BUDGET_THREADS];
    assert_int_equal(pthread_barrier_init(&budget_bar, NULL, BUDGET_THREADS + 1), 0);
    for (int i = 0; i < BUDGET_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, budget_worker, NULL), 0);
    pthread_barrier_wait(&budget_bar);
    pthread_barrier_wait(&budget_bar);
    /* Without the budget each thread would hold about 1.2 MiB here: 75 MiB
     * in all. */
    size_t total = 0;
    pthread_mutex_lock(&sm_mcache_lock);
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next)
        total += sm_mcache_cached_bytes(c);
    pthread_mutex_unlock(&sm_mcache_lock);
    print_message("cached by %d threads: %zu bytes, budget %zu\n", BUDGET_THREADS + 1, total,
                  sm_cache_budget);
    assert_true(total <= sm_cache_budget);
    /* The budget back before the threads go: a slow path taken meanwhile
     * (pthread_join frees) rescales with it; the generation tells every
     * cache to look again. */
    sm_cache_budget = saved;
    __atomic_add_fetch(&sm_cache_budget_gen, 1, __ATOMIC_RELEASE);
    pthread_barrier_wait(&budget_bar);
    for (int i = 0; i < BUDGET_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&budget_bar);
    /* Alone again, this thread's next slow path restores its full bounds. */
    uint32_t cls = sm_size_to_class(1024);
    void *v[200];
    for (int i = 0; i < 200; i++)
        v[i] = malloc(1024);
    for (int i = 0; i < 200; i++)
        free(v[i]);
    assert_int_equal(sm_tls_mcache->c[cls].bound, 2 * sm_class_batch[cls]);
    assert_int_equal(sm_tls_mcache->large.limit, SM_LARGECACHE_MAX_BYTES >> SM_PAGE_SHIFT);
}

/* ---- an idle thread gives its lists back ---- */

static pthread_barrier_t idle_bar;
static struct sm_mcache *idle_cache;
static size_t idle_before, idle_after;
static uint32_t idle_before_1k, idle_after_1k;

static void *idle_worker(void *arg)
{
    (void)arg;
    void *v[200];
    for (int i = 0; i < 200; i++)
        v[i] = malloc(1024);
    for (int i = 0; i < 200; i++)
        free(v[i]);
    idle_cache = sm_tls_mcache;
    idle_before = sm_mcache_cached_bytes(idle_cache);
    idle_before_1k = sm_cacheclass_count(&idle_cache->c[sm_size_to_class(1024)]);
    pthread_barrier_wait(&idle_bar);   /* filled; now idle while main ticks */
    pthread_barrier_wait(&idle_bar);
    free(malloc(20000));               /* a class it never used: a slow path */
    idle_after = sm_mcache_cached_bytes(idle_cache);
    idle_after_1k = sm_cacheclass_count(&idle_cache->c[sm_size_to_class(1024)]);
    pthread_barrier_wait(&idle_bar);
    return NULL;
}

static void test_idle_cache_drained(void **state)
{
    (void)state;
    pthread_t t;
    assert_int_equal(pthread_barrier_init(&idle_bar, NULL, 2), 0);
    assert_int_equal(pthread_create(&t, NULL, idle_worker, NULL), 0);
    pthread_barrier_wait(&idle_bar);
    /* A list of 1 KiB objects: at least the object of the last free
     * (how many more depends on where the frees met the bound). */
    assert_true(idle_before >= 1024);
    assert_true(idle_before_1k >= 1);
    /* Ticks with no slow path in the thread: it is asked to drain... */
    for (int i = 0; i <= SM_LARGECACHE_IDLE_TICKS; i++)
        sm_scavenge_tick(sm_nanotime());
    assert_int_equal(__atomic_load_n(&idle_cache->drain_req, __ATOMIC_RELAXED), 1);
    pthread_barrier_wait(&idle_bar);
    pthread_barrier_wait(&idle_bar);
    /* ... and its next slow path gave everything back but what it took. */
    assert_int_equal(__atomic_load_n(&idle_cache->drain_req, __ATOMIC_RELAXED), 0);
    uint32_t cls = sm_size_to_class(20000);
    assert_true(idle_after <= (size_t)sm_class_batch[cls] * sm_class_to_size[cls]);
    assert_int_equal(idle_after_1k, 0);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&idle_bar);
}

/* Objects freed by one thread, beyond its bound, are parked whole in
 * mcentral; another thread's refill takes such a list, objects it never
 * had.  A thread that takes a parked list and fills it again keeps the
 * newest half and parks the rest. */
enum { PARK_N = 1000 };
static void *park_objs[PARK_N];

static void *park_body(void *arg)
{
    uint32_t cls = *(uint32_t *)arg;
    for (int i = 0; i < PARK_N; i++)
        park_objs[i] = malloc(sm_class_to_size[cls]);
    for (int i = 0; i < PARK_N; i++)
        free(park_objs[i]);
    return NULL;
}

static bool freed_by_thread(const void *p)
{
    for (int i = 0; i < PARK_N; i++)
        if (park_objs[i] == p)
            return true;
    return false;
}

static void test_parked_lists(void **state)
{
    (void)state;
    uint32_t cls = sm_size_to_class(176);
    struct sm_mcentral *mc = &sm_central[cls];
    struct sm_mcache *c = sm_tls_mcache;
    struct sm_cacheclass *cc = &c->c[cls];
    sm_mcache_flush(c);   /* this thread's list of the class empty */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, park_body, &cls), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_mutex_lock(&mc->lock);
    uint32_t parked = mc->nparked;
    uint32_t top_n = parked ? mc->parked[parked - 1].n : 0;
    pthread_mutex_unlock(&mc->lock);
    assert_true(parked >= 2);
    uint32_t bound = cc->bound;
    assert_int_equal(top_n, bound);   /* the thread had the same bounds */
    /* The first malloc refills with the whole top list: more than a
     * refill from the spans brings (slow start), all freed by the other
     * thread. */
    void *first = malloc(176);
    assert_true(freed_by_thread(first));
    assert_int_equal(sm_cacheclass_count(cc), bound - 1);
    assert_int_equal(mc->nparked, parked - 1);
    static void *mine[PARK_N];
    for (uint32_t i = 0; i < bound - 1; i++) {
        mine[i] = malloc(176);
        assert_true(freed_by_thread(mine[i]));
    }
    assert_int_equal(sm_cacheclass_count(cc), 0);
    /* The list ran out: the next refill takes the next parked list. */
    void *second = malloc(176);
    assert_true(freed_by_thread(second));
    assert_int_equal(sm_cacheclass_count(cc), bound - 1);
    /* Fill it up again: one free fits, the next finds it at its bound
     * and keeps the newest half (with the object it frees). */
    free(first);
    assert_int_equal(sm_cacheclass_count(cc), bound);
    free(second);
    assert_int_equal(sm_cacheclass_count(cc), bound / 2 + 1);
    assert_ptr_equal(cc->head, second);
    assert_ptr_equal(sm_link_load(second), first);
    assert_int_equal(mc->nparked, parked - 1);   /* the other half */
    /* A drain with no parked list taken since parks it all. */
    for (uint32_t i = 0; sm_cacheclass_count(cc) < bound; i++)
        free(mine[i]);
    free(mine[bound - 2]);
    assert_int_equal(sm_cacheclass_count(cc), 1);
    assert_int_equal(mc->nparked, parked);
    sm_mcache_flush(c);
    sm_free_os_memory();
    assert_int_equal(mc->nparked, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_made_on_first_use),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_flush),
        cmocka_unit_test(test_refill_slow_start),
        cmocka_unit_test(test_thread_exit_returns_cache),
        cmocka_unit_test(test_budget_shared_by_threads),
        cmocka_unit_test(test_idle_cache_drained),
        cmocka_unit_test(test_mmap_failure_is_enomem),
        cmocka_unit_test(test_parked_lists),
    };
    return cmocka_run_group_tests_name("mcache", tests, NULL, NULL);
}
