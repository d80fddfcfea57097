/*
 * test_mheap.c - the page heap on its own: allocate, free, join, grow,
 * best fit, alignment, released-page accounting, zeroing, and resizing a
 * large span in place (extend over the free pages after it, shrink), and an
 * explicit release that waits for the runs another thread is releasing.  Each test builds
 * its own heap, so the process heap (which cmocka itself uses, through our
 * malloc) is not disturbed.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "internal.h"
#include "spanmalloc.h"

#define PB(n) ((uintptr_t)(n) << SM_PAGE_SHIFT)

static int setup(void **state)
{
    struct sm_mheap *h = sm_os_alloc(sizeof *h);
    sm_mheap_init(h);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    /* The heap's memory is left mapped: arenas are never unmapped. */
    (void)state;
    return 0;
}

static size_t nfree_runs(struct sm_mheap *h)
{
    size_t n = h->freelarge.len;
    for (size_t i = 1; i < SM_HEAP_NLISTS; i++)
        n += h->free[i].len;
    return n;
}

static void test_alloc_free_stats(void **state)
{
    struct sm_mheap *h = *state;
    struct sm_mspan *s = sm_mheap_alloc(h, 1, 0, SM_PAGE_LARGE);
    assert_non_null(s);
    assert_int_equal(s->npages, 1);
    assert_int_equal(s->base % SM_PAGE_SIZE, 0);
    assert_int_equal(s->state, SM_SPAN_LARGE);
    assert_int_equal(h->st.pages_inuse, 1);
    assert_true(h->st.pages_sys >= 1);
    assert_int_equal(h->st.pages_inuse + h->st.pages_free, h->st.pages_sys);
    assert_int_equal(sm_pagemap_kind(s->base), SM_PAGE_LARGE);
    assert_ptr_equal(sm_pagemap_span(s->base), s);
    uintptr_t base = s->base;
    memset((void *)base, 0x5a, SM_PAGE_SIZE);
    sm_mheap_check(h);
    sm_mheap_free(h, s);
    assert_int_equal(h->st.pages_inuse, 0);
    assert_int_equal(h->st.pages_free, h->st.pages_sys);
    assert_int_equal(sm_pagemap_kind(base), SM_PAGE_FREE);
    assert_int_equal(h->st.large_nmalloc, 1);
    assert_int_equal(h->st.large_nfree, 1);
    sm_mheap_check(h);
    /* Everything joined back into one run. */
    assert_int_equal(nfree_runs(h), 1);
}

static void test_join_neighbours(void **state)
{
    struct sm_mheap *h = *state;
    struct sm_mspan *a = sm_mheap_alloc(h, 3, 0, SM_PAGE_LARGE);
    struct sm_mspan *b = sm_mheap_alloc(h, 3, 0, SM_PAGE_LARGE);
    struct sm_mspan *c = sm_mheap_alloc(h, 3, 0, SM_PAGE_LARGE);
    struct sm_mspan *d = sm_mheap_alloc(h, 3, 0, SM_PAGE_LARGE);
    assert_true(a && b && c && d);
    /* Fresh runs are handed out in address order from one grown run. */
    assert_int_equal(b->base, a->base + PB(3));
    assert_int_equal(c->base, b->base + PB(3));
    size_t before = nfree_runs(h);
    sm_mheap_free(h, a);
    assert_int_equal(nfree_runs(h), before + 1);
    sm_mheap_free(h, c);
    assert_int_equal(nfree_runs(h), before + 2);
    sm_mheap_check(h);
    /* b joins a on its left and c on its right. */
    uintptr_t abase = a->base;
    sm_mheap_free(h, b);
    assert_int_equal(nfree_runs(h), before + 1);
    struct sm_mspan *run = sm_pagemap_span(abase);
    assert_int_equal(run->state, SM_SPAN_FREE);
    assert_int_equal(run->npages, 9);
    sm_mheap_check(h);
    sm_mheap_free(h, d);
    assert_int_equal(nfree_runs(h), 1);
    sm_mheap_check(h);
}

static void test_best_fit(void **state)
{
    struct sm_mheap *h = *state;
    /* Holes of 5 and 3 pages, each fenced by an in-use page. */
    struct sm_mspan *f0 = sm_mheap_alloc(h, 1, 0, SM_PAGE_LARGE);
    struct sm_mspan *h5 = sm_mheap_alloc(h, 5, 0, SM_PAGE_LARGE);
    struct sm_mspan *f1 = sm_mheap_alloc(h, 1, 0, SM_PAGE_LARGE);
    struct sm_mspan *h3 = sm_mheap_alloc(h, 3, 0, SM_PAGE_LARGE);
    struct sm_mspan *f2 = sm_mheap_alloc(h, 1, 0, SM_PAGE_LARGE);
    uintptr_t b5 = h5->base, b3 = h3->base;
    sm_mheap_free(h, h5);
    sm_mheap_free(h, h3);
    struct sm_mspan *x = sm_mheap_alloc(h, 3, 0, SM_PAGE_LARGE);
    assert_int_equal(x->base, b3);
    struct sm_mspan *y = sm_mheap_alloc(h, 4, 0, SM_PAGE_LARGE);
    assert_int_equal(y->base, b5);
    sm_mheap_check(h);
    sm_mheap_free(h, x);
    sm_mheap_free(h, y);
    sm_mheap_free(h, f0);
    sm_mheap_free(h, f1);
    sm_mheap_free(h, f2);
    sm_mheap_check(h);
    assert_int_equal(h->st.pages_inuse, 0);
}

static void test_grow_across_arenas(void **state)
{
    struct sm_mheap *h = *state;
    uint64_t sys0 = h->st.pages_sys;
    /* 80 MiB: more than one 64 MiB arena. */
    size_t n = (80u << 20) >> SM_PAGE_SHIFT;
    struct sm_mspan *s = sm_mheap_alloc(h, n, 0, SM_PAGE_LARGE);
    assert_non_null(s);
    assert_true(h->st.pages_sys >= sys0 + n);
    uintptr_t last = s->base + PB(n - 1);
    assert_ptr_equal(sm_pagemap_span(last), s);
    assert_int_equal(sm_pagemap_kind(last), SM_PAGE_LARGE);
    assert_non_null(sm_pagemap_arena(last));
    ((char *)last)[100] = 1;
    sm_mheap_check(h);
    sm_mheap_free(h, s);
    sm_mheap_check(h);
    assert_int_equal(h->st.pages_inuse, 0);
}

static void test_alignment(void **state)
{
    struct sm_mheap *h = *state;
    static const size_t aligns[] = {2, 4, 64, 256, 1024};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        struct sm_mspan *pad = sm_mheap_alloc(h, 1, 0, SM_PAGE_LARGE);
        struct sm_mspan *s = sm_mheap_alloc(h, 3, aligns[i], SM_PAGE_LARGE);
        assert_non_null(s);
        assert_int_equal(s->base % PB(aligns[i]), 0);
        assert_int_equal(s->npages, 3);
        sm_mheap_check(h);
        sm_mheap_free(h, s);
        sm_mheap_free(h, pad);
    }
    sm_mheap_check(h);
    assert_int_equal(h->st.pages_inuse, 0);
}

static void test_released_accounting(void **state)
{
    struct sm_mheap *h = *state;
    /* Fresh memory counts as released until it is handed out. */
    struct sm_mspan *s = sm_mheap_alloc(h, 64, 0, SM_PAGE_LARGE);
    assert_non_null(s);
    assert_int_equal(h->st.pages_released, h->st.pages_free);
    assert_int_equal(s->needzero, 0);
    /* Handed out and back without a release: the pages may hold old data;
     * a longer run over them and fresh pages is dirty only up front. */
    sm_mheap_free(h, s);
    s = sm_mheap_alloc(h, 80, 0, SM_PAGE_LARGE);
    assert_int_equal(s->needzero, 64);
    sm_mheap_free(h, s);
    s = sm_mheap_alloc(h, 64, 0, SM_PAGE_LARGE);
    memset((void *)s->base, 0xab, PB(64));
    uintptr_t base = s->base;
    sm_mheap_free(h, s);
    /* The 80 pages handed out are resident. */
    assert_int_equal(h->st.pages_released + 80, h->st.pages_free);
    sm_mheap_check(h);
    int saved = sm_opts.release;
    sm_opts.release = SM_RELEASE_DONTNEED;
    size_t got = sm_mheap_scavenge(h, SIZE_MAX, 0, SM_SCAV_EXPLICIT);
    sm_opts.release = saved;
    assert_int_equal(got, PB(80));
    assert_int_equal(h->st.pages_released, h->st.pages_free);
    assert_int_equal(h->st.released_bytes_total, PB(80));
    sm_mheap_check(h);
    /* DONTNEED pages read back as zero, and reusing them moves them out of
     * heap_released. */
    assert_int_equal(((unsigned char *)base)[0], 0);
    struct sm_mspan *t = sm_mheap_alloc(h, 64, 0, SM_PAGE_LARGE);
    assert_int_equal(t->base, base);
    assert_int_equal(t->needzero, 0);   /* DONTNEED'd: zero again */
    assert_int_equal(h->st.pages_released, h->st.pages_free);
    sm_mheap_free(h, t);
    sm_mheap_check(h);
}

static void test_release_off(void **state)
{
    struct sm_mheap *h = *state;
    struct sm_mspan *s = sm_mheap_alloc(h, 16, 0, SM_PAGE_LARGE);
    memset((void *)s->base, 1, PB(16));
    sm_mheap_free(h, s);
    uint64_t rel = h->st.pages_released;
    int saved = sm_opts.release;
    sm_opts.release = SM_RELEASE_NONE;
    assert_int_equal(sm_mheap_scavenge(h, SIZE_MAX, 0, SM_SCAV_EXPLICIT), 0);
    sm_opts.release = saved;
    assert_int_equal(h->st.pages_released, rel);
}

static void test_small_span(void **state)
{
    struct sm_mheap *h = *state;
    uint8_t cls = (uint8_t)sm_size_to_class(100);
    struct sm_mspan *s = sm_mheap_alloc(h, sm_class_to_npages[cls], 0, cls);
    assert_non_null(s);
    assert_int_equal(s->state, SM_SPAN_SMALL);
    assert_int_equal(s->elemsize, sm_class_to_size[cls]);
    assert_int_equal(s->nfree, sm_class_to_nobjs[cls]);
    assert_int_equal(sm_pagemap_kind(s->base), cls);
    void *head = NULL;
    assert_int_equal(sm_mspan_take(s, 5, &head), 5);
    /* Carved in address order, each at a multiple of the object size. */
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal((uintptr_t)head, s->base + i * s->elemsize);
        assert_int_equal(sm_mspan_objindex(s, (uintptr_t)head), i);
        head = sm_link_load(head);
    }
    sm_mheap_free(h, s);
    sm_mheap_check(h);
}

static void test_extend_in_place(void **state)
{
    struct sm_mheap *h = *state;
    struct sm_mspan *a = sm_mheap_alloc(h, 4, 0, SM_PAGE_LARGE);
    struct sm_mspan *b = sm_mheap_alloc(h, 4, 0, SM_PAGE_LARGE);
    assert_int_equal(b->base, a->base + PB(4));
    memset((void *)a->base, 0x33, PB(4));
    uint64_t bytes0 = h->st.large_bytes_alloc, inuse0 = h->st.pages_inuse;
    /* b is right after a: a cannot grow. */
    assert_false(sm_mheap_extend(h, a, 5));
    assert_int_equal(a->npages, 4);
    /* b grows over the free pages after it, at the same address. */
    uintptr_t bbase = b->base;
    assert_true(sm_mheap_extend(h, b, 10));
    assert_int_equal(b->base, bbase);
    assert_int_equal(b->npages, 10);
    assert_int_equal(h->st.pages_inuse, inuse0 + 6);
    assert_int_equal(h->st.large_bytes_alloc, bytes0 + PB(6));
    for (size_t i = 0; i < 10; i++) {
        assert_ptr_equal(sm_pagemap_span(bbase + PB(i)), b);
        assert_int_equal(sm_pagemap_kind(bbase + PB(i)), SM_PAGE_LARGE);
    }
    assert_int_equal(sm_pagemap_kind(bbase + PB(10)), SM_PAGE_FREE);
    sm_mheap_check(h);
    /* The grown pages were fresh (released): no longer counted so. */
    assert_int_equal(h->st.pages_released, h->st.pages_free);
    /* Not past the end of the free run: the heap grew by 1 MiB runs. */
    assert_false(sm_mheap_extend(h, b, h->st.pages_sys + 1));
    assert_int_equal(b->npages, 10);
    sm_mheap_free(h, a);
    sm_mheap_check(h);
    /* Shrink gives the tail back, joined with the free run after it. */
    uint64_t free0 = h->st.pages_free, fbytes0 = h->st.large_bytes_free;
    assert_true(sm_mheap_shrink(h, b, 3));
    assert_int_equal(b->npages, 3);
    assert_int_equal(h->st.pages_free, free0 + 7);
    assert_int_equal(h->st.large_bytes_free, fbytes0 + PB(7));
    assert_int_equal(sm_pagemap_kind(bbase + PB(3)), SM_PAGE_FREE);
    struct sm_mspan *run = sm_pagemap_span(bbase + PB(3));
    assert_int_equal(run->state, SM_SPAN_FREE);
    assert_true(run->npages > 7);   /* joined with what followed */
    sm_mheap_check(h);
    sm_mheap_free(h, b);
    sm_mheap_check(h);
    assert_int_equal(h->st.pages_inuse, 0);
    assert_int_equal(nfree_runs(h), 1);
}

static void test_extend_over_dirty_and_released(void **state)
{
    struct sm_mheap *h = *state;
    /* a, then a run of 8 pages freed dirty, then a fence. */
    struct sm_mspan *a = sm_mheap_alloc(h, 2, 0, SM_PAGE_LARGE);
    struct sm_mspan *m = sm_mheap_alloc(h, 8, 0, SM_PAGE_LARGE);
    struct sm_mspan *f = sm_mheap_alloc(h, 1, 0, SM_PAGE_LARGE);
    memset((void *)m->base, 1, PB(8));
    sm_mheap_free(h, m);
    uint64_t rel0 = h->st.pages_released;
    assert_true(sm_mheap_extend(h, a, 6));
    /* The 4 pages it took were resident; 4 stay free before the fence. */
    assert_int_equal(h->st.pages_released, rel0);
    assert_int_equal(sm_pagemap_span(a->base + PB(6))->npages, 4);
    sm_mheap_check(h);
    /* Exactly up to the fence, then no further. */
    assert_true(sm_mheap_extend(h, a, 10));
    assert_int_equal(sm_pagemap_kind(a->base + PB(10)), SM_PAGE_LARGE);
    assert_false(sm_mheap_extend(h, a, 11));
    sm_mheap_check(h);
    sm_mheap_free(h, a);
    sm_mheap_free(h, f);
    sm_mheap_check(h);
    assert_int_equal(h->st.pages_inuse, 0);
}

struct scav_arg {
    struct sm_mheap *h;
    size_t got;
};

static void *background_scavenge(void *arg)
{
    struct scav_arg *a = arg;
    a->got = sm_mheap_scavenge(a->h, SIZE_MAX, 0, SM_SCAV_BACKGROUND);
    return NULL;
}

static void test_explicit_waits_for_scavenger(void **state)
{
    struct sm_mheap *h = *state;
    int saved = sm_opts.release;
    sm_opts.release = SM_RELEASE_DONTNEED;
    /* 32 MiB: not a whole 64 MiB reservation, whose end could touch
     * another heap's memory in the shared page map. */
    size_t n = (32u << 20) >> SM_PAGE_SHIFT;
    for (int round = 0; round < 4; round++) {
        struct sm_mspan *s = sm_mheap_alloc(h, n, 0, SM_PAGE_LARGE);
        assert_non_null(s);
        memset((void *)s->base, 1, PB(n));
        sm_mheap_free(h, s);
        /* Another thread starts releasing the 32 MiB run (madvise takes
         * milliseconds); an explicit release meanwhile must not return
         * before that run is released too. */
        struct scav_arg a = {h, 0};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, background_scavenge, &a), 0);
        struct timespec ts = {0, 500 * 1000};
        nanosleep(&ts, NULL);
        sm_mheap_scavenge(h, SIZE_MAX, 0, SM_SCAV_EXPLICIT);
        assert_int_equal(h->st.pages_released, h->st.pages_free);
        assert_null(h->scavenging.first);
        pthread_join(t, NULL);
        sm_mheap_check(h);
    }
    sm_opts.release = saved;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alloc_free_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_neighbours, setup, teardown),
        cmocka_unit_test_setup_teardown(test_best_fit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grow_across_arenas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alignment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_accounting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_span, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extend_in_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extend_over_dirty_and_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explicit_waits_for_scavenger, setup, teardown),
    };
    sm_init();
    return cmocka_run_group_tests_name("mheap", tests, NULL, NULL);
}
