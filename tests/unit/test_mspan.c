/*
 * test_mspan.c - a small-object span's bitmap of free objects (mspan.c):
 * a new span has every object free; objects are taken in address order,
 * whatever order they came back in; nfree and the bitmap agree; a second
 * put of the same object is reported as a double free.  Spans come from a
 * private heap.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "../common/child.h"

static struct sm_mheap *heap;

static struct sm_mspan *new_span(size_t size)
{
    uint8_t cls = (uint8_t)sm_size_to_class(size);
    struct sm_mspan *s = sm_mheap_alloc(heap, sm_class_to_npages[cls], 0, cls);
    assert_non_null(s);
    return s;
}

static uint32_t bits_set(const struct sm_mspan *s)
{
    uint32_t n = 0;
    for (int w = 0; w < SM_SPAN_BITMAP_WORDS; w++)
        n += (uint32_t)__builtin_popcountll(s->freebits[w]);
    return n;
}

/* Take n objects; check they come in ascending address order, each at an
 * object boundary, and return them in out[]. */
static uint32_t take(struct sm_mspan *s, uint32_t n, void **out)
{
    void *head = NULL;
    uint32_t got = sm_mspan_take(s, n, &head);
    uint32_t i = 0;
    for (void *p = head; p; p = sm_link_load(p)) {
        assert_true(i < got);
        assert_int_equal(((uintptr_t)p - s->base) % s->elemsize, 0);
        if (i > 0)
            assert_true((uintptr_t)p > (uintptr_t)out[i - 1]);
        out[i++] = p;
    }
    assert_int_equal(i, got);
    assert_int_equal(bits_set(s), s->nfree);
    return got;
}

static void test_new_span_all_free(void **state)
{
    (void)state;
    static const size_t sizes[] = {16, 48, 1024, 4096, 28672};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        struct sm_mspan *s = new_span(sizes[k]);
        uint32_t nobjs = sm_class_to_nobjs[s->sizeclass];
        assert_int_equal(s->nfree, nobjs);
        assert_int_equal(bits_set(s), nobjs);
        /* No bit past the last object. */
        if (nobjs % 64)
            assert_int_equal(s->freebits[nobjs / 64] >> (nobjs % 64), 0);
        sm_mheap_free(heap, s);
    }
}

static void test_reinit_clears_old_bits(void **state)
{
    (void)state;
    /* A span's structure is reused for other classes: what a 512-object
     * class left set must not survive into a 1-object class. */
    struct sm_mspan s;
    memset(&s, 0, sizeof s);
    memset(s.freebits, 0xff, sizeof s.freebits);
    sm_mspan_init_small(&s, (uint8_t)sm_size_to_class(32768));
    assert_int_equal(s.nfree, 1);
    assert_int_equal(bits_set(&s), 1);
    assert_int_equal(s.freebits[0], 1);
    sm_mspan_init_small(&s, (uint8_t)sm_size_to_class(48));   /* 170 objects */
    assert_int_equal(bits_set(&s), 170);
    assert_int_equal(s.freebits[2], ((uint64_t)1 << 42) - 1);
}

static void test_take_in_address_order(void **state)
{
    (void)state;
    struct sm_mspan *s = new_span(16);   /* 512 objects: all 8 words */
    static void *objs[512];
    assert_int_equal(take(s, 100, objs), 100);
    assert_int_equal((uintptr_t)objs[0], s->base);
    assert_int_equal((uintptr_t)objs[99], s->base + 99 * 16);
    assert_int_equal(s->freeword, 1);
    assert_int_equal(take(s, 412, objs + 100), 412);
    assert_int_equal(s->nfree, 0);
    void *none[1];
    assert_int_equal(take(s, 5, none), 0);
    /* Back in a scattered order, out again in address order. */
    for (uint32_t i = 0; i < 512; i++)
        sm_mspan_put(s, objs[(i * 7919) % 512]);
    assert_int_equal(s->nfree, 512);
    assert_int_equal(s->freeword, 0);
    static void *again[512];
    assert_int_equal(take(s, 512, again), 512);
    for (uint32_t i = 0; i < 512; i++)
        assert_ptr_equal(again[i], (void *)(s->base + i * 16));
    /* A few back, in the middle and the end: only those come out. */
    sm_mspan_put(s, again[300]);
    sm_mspan_put(s, again[511]);
    sm_mspan_put(s, again[70]);
    assert_true(s->freeword <= 1);
    void *three[3];
    assert_int_equal(take(s, 10, three), 3);
    assert_ptr_equal(three[0], again[70]);
    assert_ptr_equal(three[1], again[300]);
    assert_ptr_equal(three[2], again[511]);
    for (uint32_t i = 0; i < 512; i++)
        sm_mspan_put(s, again[i]);
    sm_mheap_free(heap, s);
}

static void test_take_appends_to_list(void **state)
{
    (void)state;
    struct sm_mspan *s = new_span(256);
    void *head = NULL;
    assert_int_equal(sm_mspan_take(s, 3, &head), 3);
    void *old = head;
    assert_int_equal(sm_mspan_take(s, 2, &head), 2);
    /* The new objects go in front of what the list held. */
    void *p = head;
    for (int i = 0; i < 2; i++)
        p = sm_link_load(p);
    assert_ptr_equal(p, old);
    sm_mheap_free(heap, s);
}

/* The second put of an object: reported, then abort (in a child). */
struct put_args {
    struct sm_mspan *s;
    void *p;
};

static void put_again(void *arg)
{
    struct put_args *a = arg;
    sm_mspan_put(a->s, a->p);
}

static void test_double_put_reported(void **state)
{
    (void)state;
    struct sm_mspan *s = new_span(64);
    void *head = NULL;
    assert_int_equal(sm_mspan_take(s, 4, &head), 4);
    void *p = sm_link_load(head);
    sm_mspan_put(s, p);
    struct put_args a = {s, p};
    struct outcome o;
    expect_abort(put_again, &a, &o);
}

int main(void)
{
    sm_init();
    heap = sm_os_alloc(sizeof *heap);
    sm_mheap_init(heap);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_span_all_free),
        cmocka_unit_test(test_reinit_clears_old_bits),
        cmocka_unit_test(test_take_in_address_order),
        cmocka_unit_test(test_take_appends_to_list),
        cmocka_unit_test(test_double_put_reported),
    };
    return cmocka_run_group_tests_name("mspan", tests, NULL, NULL);
}
