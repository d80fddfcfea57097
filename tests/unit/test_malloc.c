/*
 * test_malloc.c - realloc of large objects (malloc.c) with the page layout
 * set up and checked through the page map:
 *
 *   grow in place    the pages after the object are free: the same pointer,
 *                    the contents kept, the object's bytes counted exactly.
 *   shrink in place  by more than half: the same pointer, the tail a free
 *                    run again; by less: nothing changes.
 *   move             the pages after it are in use: a new object with a
 *                    quarter more pages than asked, the contents kept.
 *   growth loop      a buffer grown a few bytes at a time to 4 MiB moves
 *                    only O(log n) times.
 *   small objects    growing out of its class moves an object to a class
 *                    at least a quarter larger, so a buffer grown 64 bytes
 *                    at a time to 32 KiB moves at most 22 times; a shrink
 *                    to half or more stays in place, to less moves.
 *   profiler         an in-place resize of a sampled object leaves exactly
 *                    one sample, at the new size.
 *
 * Links the static library; the background scavenger is off so that no
 * tick takes a cached span back in the middle of a layout.
 */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"
#include "mprof.h"
#include "spanmalloc.h"

#define PAGES(n) ((size_t)(n) << SM_PAGE_SHIFT)

static void fill_range(unsigned char *p, size_t from, size_t to, unsigned seed)
{
    for (size_t i = from; i < to; i++)
        p[i] = (unsigned char)(i * 131 + seed);
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    fill_range(p, 0, n, seed);
}

static int check(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 131 + seed))
            return 0;
    return 1;
}

static uint8_t kind_at(const void *p, size_t page)
{
    return sm_pagemap_kind((uintptr_t)p + PAGES(page));
}

/* Free pages right after an object of npages pages at p. */
static size_t free_after(const void *p, size_t npages)
{
    uintptr_t a = (uintptr_t)p + PAGES(npages);
    if (sm_pagemap_kind(a) != SM_PAGE_FREE)
        return 0;
    struct sm_mspan *run = sm_pagemap_span(a);
    return run->base == a ? run->npages : 0;
}

/* A large object of npages pages followed by at least more free pages:
 * a span carved from the start of a longer free run has one.  Objects
 * that are not are kept aside until the end, so the next try differs. */
static void *object_with_room(size_t npages, size_t more)
{
    void *aside[64];
    int n = 0;
    void *p = NULL;
    while (n < 64) {
        p = malloc(PAGES(npages));
        assert_non_null(p);
        if (free_after(p, npages) >= more)
            break;
        aside[n++] = p;
        p = NULL;
    }
    while (n > 0)
        free(aside[--n]);
    assert_non_null(p);
    return p;
}

static struct sm_memstats stats(void)
{
    struct sm_memstats m;
    sm_read_memstats(&m);
    assert_int_equal(m.heap_inuse + m.heap_idle, m.heap_sys);
    assert_true(m.heap_alloc <= m.heap_inuse);
    assert_int_equal(m.heap_objects, m.mallocs - m.frees);
    return m;
}

static int setup(void **state)
{
    (void)state;
    sm_free_os_memory();
    return 0;
}

static void test_grow_in_place(void **state)
{
    (void)state;
    unsigned char *p = object_with_room(10, 6);
    fill(p, PAGES(10), 7);
    struct sm_memstats a = stats();
    unsigned char *q = realloc(p, PAGES(15) + 100);   /* 16 pages */
    assert_ptr_equal(q, p);
    assert_true(check(q, PAGES(10), 7));
    assert_int_equal(malloc_usable_size(q), PAGES(16));
    assert_int_equal(kind_at(q, 15), SM_PAGE_LARGE);
    struct sm_memstats b = stats();
    assert_int_equal(b.heap_alloc - a.heap_alloc, PAGES(6));
    assert_int_equal(b.total_alloc - a.total_alloc, PAGES(6));
    assert_int_equal(b.heap_inuse - a.heap_inuse, PAGES(6));
    assert_int_equal(b.mallocs, a.mallocs);
    assert_int_equal(b.frees, a.frees);
    memset(q + PAGES(10), 0x77, PAGES(6));
    free(q);
    struct sm_memstats c = stats();
    assert_int_equal(a.heap_alloc - c.heap_alloc, PAGES(10));
    sm_mheap_check(&sm_heap);
}

static void test_shrink_in_place(void **state)
{
    (void)state;
    unsigned char *p = malloc(PAGES(40));
    fill(p, PAGES(40), 3);
    struct sm_memstats a = stats();
    /* Less than half off: nothing moves, nothing is given back. */
    unsigned char *q = realloc(p, PAGES(30));
    assert_ptr_equal(q, p);
    assert_int_equal(malloc_usable_size(q), PAGES(40));
    /* More than half off: the tail is a free run again. */
    q = realloc(p, PAGES(12) - 5);
    assert_ptr_equal(q, p);
    assert_true(check(q, PAGES(12) - 5, 3));
    assert_int_equal(malloc_usable_size(q), PAGES(12));
    assert_int_equal(kind_at(q, 11), SM_PAGE_LARGE);
    assert_int_equal(kind_at(q, 12), SM_PAGE_FREE);
    struct sm_memstats b = stats();
    assert_int_equal(a.heap_alloc - b.heap_alloc, PAGES(28));
    assert_int_equal(a.heap_inuse - b.heap_inuse, PAGES(28));
    assert_int_equal(b.mallocs, a.mallocs);
    sm_mheap_check(&sm_heap);
    free(q);
}

static void test_move_with_slack(void **state)
{
    (void)state;
    /* Two objects side by side: the first cannot grow in place. */
    unsigned char *p = NULL, *next = NULL;
    void *aside[64];
    int n = 0;
    while (n < 64) {
        p = malloc(PAGES(20));
        next = malloc(PAGES(20));
        if (next == p + PAGES(20))
            break;
        aside[n++] = p;
        aside[n++] = next;
        p = NULL;
    }
    while (n > 0)
        free(aside[--n]);
    assert_non_null(p);
    fill(p, PAGES(20), 9);
    unsigned char *q = realloc(p, PAGES(21));
    assert_ptr_not_equal(q, p);
    assert_true(check(q, PAGES(20), 9));
    /* A quarter more than the old size: 25 pages for 21 asked. */
    assert_int_equal(malloc_usable_size(q), PAGES(25));
    /* The old pages are not the object's any more. */
    assert_int_not_equal(sm_pagemap_span((uintptr_t)p)->state, SM_SPAN_LARGE);
    free(q);
    free(next);
    sm_mheap_check(&sm_heap);
}

static void test_small_growth(void **state)
{
    (void)state;
    unsigned char *p = NULL;
    size_t len = 0, moves = 0, old = 0;
    while (len + 64 <= SM_MAX_SMALL_SIZE) {
        unsigned char *q = realloc(p, len + 64);
        assert_non_null(q);
        fill_range(q, len, len + 64, 7);
        if (q != p) {
            moves++;
            /* A quarter over the old class, or the request if more. */
            size_t want = old + old / 4 > len + 64 ? old + old / 4 : len + 64;
            if (want > SM_MAX_SMALL_SIZE)
                want = SM_MAX_SMALL_SIZE;
            assert_true(malloc_usable_size(q) >= want);
            old = malloc_usable_size(q);
        }
        p = q;
        len += 64;
    }
    assert_true(check(p, len, 7));
    print_message("# %zu moves of a small buffer growing to 32 KiB\n", moves);
    /* A move to each class on the way took 50. */
    assert_true(moves <= 22);
    /* Shrinking to half stays; to less than half moves, contents kept. */
    size_t u = malloc_usable_size(p);
    assert_ptr_equal(realloc(p, u / 2), p);
    unsigned char *q = realloc(p, u / 2 - 3000);
    assert_ptr_not_equal(q, p);
    assert_true(check(q, u / 2 - 3000, 7));
    assert_true(malloc_usable_size(q) < u / 2);
    free(q);
}

static void test_growth_loop_moves_rarely(void **state)
{
    (void)state;
    unsigned char *p = NULL;
    size_t len = 0, moves = 0;
    void *noise[8] = {0};
    while (len < ((size_t)4 << 20)) {
        size_t step = 1 + (len * 7 + 13) % 4000;
        unsigned char *q = realloc(p, len + step);
        assert_non_null(q);
        if (q != p && len > SM_MAX_SMALL_SIZE)
            moves++;
        fill_range(q, len, len + step, 5);
        p = q;
        len += step;
        /* Other large objects come and go meanwhile. */
        size_t k = len % 8;
        free(noise[k]);
        noise[k] = malloc(40000 + (len % 5) * 8192);
    }
    assert_true(check(p, len, 5));
    print_message("# %zu moves of a large buffer growing to 4 MiB\n", moves);
    /* Each move takes a quarter more pages (rounded down) than the last
     * span: from 5 pages, 23 moves pass 512 pages (4 MiB). */
    assert_true(moves <= 23);
    free(p);
    for (int k = 0; k < 8; k++)
        free(noise[k]);
    sm_mheap_check(&sm_heap);
}

static void test_profiled_resize(void **state)
{
    (void)state;
    size_t old = sm_set_profile_rate(1);   /* every allocation sampled */
    unsigned char *p = object_with_room(6, 4);
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    /* A large object's sample is its span's bucket. */
    assert_non_null(s->prof_bucket);
    unsigned char *q = realloc(p, PAGES(9));
    assert_ptr_equal(q, p);
    assert_non_null(s->prof_bucket);
    assert_int_equal(s->reqsize, PAGES(9));
    q = realloc(p, PAGES(4) + 1);   /* 5 pages: more than half off */
    assert_ptr_equal(q, p);
    assert_int_equal(malloc_usable_size(q), PAGES(5));
    assert_non_null(s->prof_bucket);
    free(q);
    sm_set_profile_rate(old);
}

int main(void)
{
    sm_set_profile_rate(0);
    __atomic_store_n(&sm_opts.scavenge, false, __ATOMIC_RELAXED);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_grow_in_place, setup),
        cmocka_unit_test_setup(test_shrink_in_place, setup),
        cmocka_unit_test_setup(test_move_with_slack, setup),
        cmocka_unit_test_setup(test_growth_loop_moves_rarely, setup),
        cmocka_unit_test_setup(test_small_growth, setup),
        cmocka_unit_test_setup(test_profiled_resize, setup),
    };
    return cmocka_run_group_tests_name("malloc", tests, NULL, NULL);
}
