/*
 * test_mcentral.c - central lists on their own (refill and drain in
 * batches, full and partial spans, empty spans back to the heap, whole
 * lists parked and taken again, their bounds and their flush) over a
 * private heap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"

struct fixture {
    struct sm_mheap h;
    struct sm_mcentral c;
    struct sm_parked slots[SM_PARK_SLOTS];   /* not the class's global ones */
};

static int setup(void **state)
{
    struct fixture *f = sm_os_alloc(sizeof *f);
    sm_mheap_init(&f->h);
    sm_mcentral_init(&f->c, sm_size_to_class(256));
    f->c.parked = f->slots;
    *state = f;
    return 0;
}

static uint32_t list_len(void *head)
{
    uint32_t n = 0;
    for (; head; head = sm_link_load(head))
        n++;
    return n;
}

static uint32_t spans_on(struct sm_mspan *s)
{
    uint32_t n = 0;
    for (; s; s = s->next)
        n++;
    return n;
}

static void test_refill_batch(void **state)
{
    struct fixture *f = *state;
    void *head = NULL;
    uint32_t n = sm_mcentral_alloc_batch(&f->c, &f->h, 10, &head);
    assert_int_equal(n, 10);
    assert_int_equal(list_len(head), 10);
    assert_int_equal(f->c.nspans, 1);
    assert_int_equal(spans_on(f->c.partial), 1);
    for (void *p = head; p; p = sm_link_load(p)) {
        struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
        assert_int_equal(s->sizeclass, f->c.sizeclass);
        assert_int_equal(((uintptr_t)p - s->base) % s->elemsize, 0);
    }
    sm_mcentral_free_batch(&f->c, &f->h, head, n);
    /* The only partial span is kept for the next refill. */
    assert_int_equal(f->c.nspans, 1);
    assert_int_equal(f->c.partial->nfree, sm_class_to_nobjs[f->c.sizeclass]);
}

static void test_full_and_partial(void **state)
{
    struct fixture *f = *state;
    uint32_t per_span = sm_class_to_nobjs[f->c.sizeclass];
    void *head = NULL;
    /* Two spans and a bit: two full, one partial. */
    uint32_t want = 2 * per_span + 3;
    assert_int_equal(sm_mcentral_alloc_batch(&f->c, &f->h, want, &head), want);
    assert_int_equal(f->c.nspans, 3);
    assert_int_equal(spans_on(f->c.full), 2);
    assert_int_equal(spans_on(f->c.partial), 1);
    uint64_t inuse = f->h.st.pages_inuse;
    assert_int_equal(inuse, 3 * sm_class_to_npages[f->c.sizeclass]);
    /* Give everything back: spans go to the heap but one. */
    sm_mcentral_free_batch(&f->c, &f->h, head, want);
    assert_int_equal(f->c.nspans, 1);
    assert_null(f->c.full);
    assert_int_equal(f->h.st.pages_inuse, sm_class_to_npages[f->c.sizeclass]);
    sm_mcentral_release_empty(&f->c, &f->h);
    assert_int_equal(f->c.nspans, 0);
    assert_int_equal(f->h.st.pages_inuse, 0);
    sm_mheap_check(&f->h);
}

/* free_batch settles a span once per run of its objects: runs of one
 * object (two spans interleaved) and long runs leave each span's count and
 * list as one object at a time would. */
static void test_free_batch_runs(void **state)
{
    struct fixture *f = *state;
    uint32_t per_span = sm_class_to_nobjs[f->c.sizeclass];
    enum { MAX = 512 };
    static void *a[MAX], *b[MAX];
    assert_true(per_span <= MAX && per_span >= 8);
    void *head = NULL;
    assert_int_equal(sm_mcentral_alloc_batch(&f->c, &f->h, 2 * per_span, &head), 2 * per_span);
    assert_int_equal(spans_on(f->c.full), 2);
    struct sm_mspan *sa = sm_pagemap_span((uintptr_t)head), *sb = NULL;
    uint32_t na = 0, nb = 0;
    for (void *p = head; p; p = sm_link_load(p)) {
        if (sm_pagemap_span((uintptr_t)p) == sa) {
            a[na++] = p;
        } else {
            sb = sm_pagemap_span((uintptr_t)p);
            b[nb++] = p;
        }
    }
    assert_int_equal(na, per_span);
    assert_int_equal(nb, per_span);
    /* Half of each, alternating: a run per object. */
    void *list = NULL;
    uint32_t n = 0;
    for (uint32_t i = 0; i < per_span / 2; i++) {
        sm_link_store(a[i], list);
        list = a[i];
        sm_link_store(b[i], list);
        list = b[i];
        n += 2;
    }
    sm_mcentral_free_batch(&f->c, &f->h, list, n);
    assert_int_equal(sa->nfree, per_span / 2);
    assert_int_equal(sb->nfree, per_span / 2);
    assert_null(f->c.full);
    assert_int_equal(spans_on(f->c.partial), 2);
    /* The rest in two long runs: one span goes to the heap, the other
     * stays as the only partial span. */
    list = NULL;
    n = 0;
    for (uint32_t i = per_span / 2; i < per_span; i++) {
        sm_link_store(b[i], list);
        list = b[i];
        n++;
    }
    for (uint32_t i = per_span / 2; i < per_span; i++) {
        sm_link_store(a[i], list);
        list = a[i];
        n++;
    }
    sm_mcentral_free_batch(&f->c, &f->h, list, n);
    assert_int_equal(f->c.nspans, 1);
    assert_int_equal(f->c.partial->nfree, per_span);
    assert_int_equal(f->h.st.pages_inuse, sm_class_to_npages[f->c.sizeclass]);
    sm_mheap_check(&f->h);
}

static void test_objects_unique(void **state)
{
    struct fixture *f = *state;
    enum { N = 2000 };
    static void *objs[N];
    uint32_t got = 0;
    while (got < N) {
        void *head = NULL;
        uint32_t n = sm_mcentral_alloc_batch(&f->c, &f->h, 7, &head);
        assert_true(n > 0);
        for (void *p = head; p && got < N; p = sm_link_load(p))
            objs[got++] = p;
    }
    for (uint32_t i = 0; i < N; i++)
        memset(objs[i], (int)(i & 0xff), sm_class_to_size[f->c.sizeclass]);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(((unsigned char *)objs[i])[255], i & 0xff);
    /* Free in a scattered order, in batches of 5. */
    for (uint32_t start = 0; start < 5; start++) {
        void *head = NULL;
        uint32_t n = 0;
        for (uint32_t i = start; i < N; i += 5) {
            sm_link_store(objs[i], head);
            head = objs[i];
            n++;
        }
        sm_mcentral_free_batch(&f->c, &f->h, head, n);
    }
    assert_true(f->c.nspans <= 1);
    assert_null(f->c.full);
    sm_mheap_check(&f->h);
}

/* Free objects of all spans of f->c (c->lock not needed: one thread). */
static uint32_t free_in_spans(struct fixture *f)
{
    uint32_t n = 0;
    for (struct sm_mspan *s = f->c.partial; s; s = s->next)
        n += s->nfree;
    return n;
}

static void test_park_taken_whole(void **state)
{
    struct fixture *f = *state;
    void *head = NULL;
    uint32_t n = sm_mcentral_alloc_batch(&f->c, &f->h, 40, &head);
    assert_int_equal(n, 40);
    uint32_t in_spans = free_in_spans(f);
    uint64_t total = __atomic_load_n(&sm_parked_total, __ATOMIC_RELAXED);
    sm_mcentral_park(&f->c, &f->h, head, n);
    /* Parked as it is: nothing went to the spans. */
    assert_int_equal(f->c.nparked, 1);
    assert_int_equal(free_in_spans(f), in_spans);
    assert_int_equal(f->c.parked_bytes, 40 * sm_class_to_size[f->c.sizeclass]);
    assert_int_equal(__atomic_load_n(&sm_parked_total, __ATOMIC_RELAXED),
                     total + 40 * sm_class_to_size[f->c.sizeclass]);
    /* A refill that may not take 40 gets objects from the spans. */
    void *other = NULL;
    uint32_t m = sm_mcentral_refill(&f->c, &f->h, 8, 39, &other);
    assert_int_equal(m, 8);
    assert_ptr_not_equal(other, head);
    assert_int_equal(f->c.nparked, 1);
    sm_mcentral_free_batch(&f->c, &f->h, other, m);
    /* One that may takes the list whole, more than it wanted. */
    void *again = NULL;
    m = sm_mcentral_refill(&f->c, &f->h, 8, 128, &again);
    assert_int_equal(m, 40);
    assert_ptr_equal(again, head);
    assert_int_equal(list_len(again), 40);
    assert_int_equal(f->c.nparked, 0);
    assert_int_equal(f->c.parked_bytes, 0);
    assert_int_equal(__atomic_load_n(&sm_parked_total, __ATOMIC_RELAXED), total);
    assert_int_equal(free_in_spans(f), in_spans);
    sm_mcentral_free_batch(&f->c, &f->h, again, m);
    sm_mheap_check(&f->h);
}

static void test_park_bounded(void **state)
{
    struct fixture *f = *state;
    /* Lists of 8 objects: the slots run out first. */
    enum { LISTS = SM_PARK_SLOTS + 10 };
    static void *heads[LISTS];
    for (int i = 0; i < LISTS; i++)
        assert_int_equal(sm_mcentral_alloc_batch(&f->c, &f->h, 8, &heads[i]), 8);
    uint32_t nobjs = sm_class_to_nobjs[f->c.sizeclass];
    assert_int_equal(nobjs % 8, 0);
    for (int i = 0; i < LISTS; i++)
        sm_mcentral_park(&f->c, &f->h, heads[i], 8);
    assert_int_equal(f->c.nparked, SM_PARK_SLOTS);
    /* The lists past the slots went to their spans: the spans they filled
     * alone are all free and went back to the heap, and the last one,
     * partly taken before, is kept as the only partial span. */
    assert_int_equal(f->c.nspans, SM_PARK_SLOTS * 8 / nobjs + 1);
    assert_int_equal(spans_on(f->c.partial), 1);
    assert_int_equal(free_in_spans(f), nobjs);
    sm_mcentral_flush_parked(&f->c, &f->h, true);
    assert_int_equal(f->c.nparked, 0);
    /* By bytes: lists of a class's whole share do not fit twice. */
    uint32_t big = (uint32_t)(SM_PARK_CLASS_BYTES / sm_class_to_size[f->c.sizeclass]);
    void *a = NULL, *b = NULL;
    assert_int_equal(sm_mcentral_alloc_batch(&f->c, &f->h, big, &a), big);
    assert_int_equal(sm_mcentral_alloc_batch(&f->c, &f->h, big, &b), big);
    sm_mcentral_park(&f->c, &f->h, a, big);
    sm_mcentral_park(&f->c, &f->h, b, big);
    assert_int_equal(f->c.nparked, 1);
    assert_int_equal(f->c.parked_bytes, SM_PARK_CLASS_BYTES);
    sm_mcentral_flush_parked(&f->c, &f->h, true);
    assert_null(f->c.full);
    assert_true(f->c.nspans <= 1);
    sm_mheap_check(&f->h);
}

static void test_park_flushed_when_idle(void **state)
{
    struct fixture *f = *state;
    void *a = NULL, *b = NULL;
    uint32_t nobjs = sm_class_to_nobjs[f->c.sizeclass];
    /* Two spans' worth, both full: all their objects parked. */
    assert_int_equal(sm_mcentral_alloc_batch(&f->c, &f->h, nobjs, &a), nobjs);
    assert_int_equal(sm_mcentral_alloc_batch(&f->c, &f->h, nobjs, &b), nobjs);
    assert_int_equal(f->c.nspans, 2);
    sm_mcentral_park(&f->c, &f->h, a, nobjs);
    sm_mcentral_park(&f->c, &f->h, b, nobjs);
    void *t = NULL;
    assert_int_equal(sm_mcentral_refill(&f->c, &f->h, 1, nobjs, &t), nobjs);
    sm_mcentral_park(&f->c, &f->h, t, nobjs);
    /* A refill took a list since the last look: the scavenger leaves
     * them... */
    sm_mcentral_flush_parked(&f->c, &f->h, false);
    assert_int_equal(f->c.nparked, 2);
    assert_int_equal(f->c.nspans, 2);
    /* ...and flushes them at its next look, when none was taken. */
    sm_mcentral_flush_parked(&f->c, &f->h, false);
    assert_int_equal(f->c.nparked, 0);
    assert_int_equal(f->c.parked_bytes, 0);
    /* Both spans all free: back to the heap. */
    assert_int_equal(f->c.nspans, 0);
    assert_null(f->c.full);
    assert_int_equal(free_in_spans(f), 0);
    sm_mheap_check(&f->h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_refill_batch, setup),
        cmocka_unit_test_setup(test_full_and_partial, setup),
        cmocka_unit_test_setup(test_free_batch_runs, setup),
        cmocka_unit_test_setup(test_objects_unique, setup),
        cmocka_unit_test_setup(test_park_taken_whole, setup),
        cmocka_unit_test_setup(test_park_bounded, setup),
        cmocka_unit_test_setup(test_park_flushed_when_idle, setup),
    };
    sm_init();
    return cmocka_run_group_tests_name("mcentral", tests, NULL, NULL);
}
