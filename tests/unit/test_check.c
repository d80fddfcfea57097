/*
 * test_check.c - the free-list encoding and its checks, and checked mode's
 * choice of class, seen from inside (the library linked statically, in
 * default mode).
 *
 * A plain address written over a link must decode to something every
 * check rejects; a refill's list is encoded; a span keeps no links, so
 * what is written in its free objects cannot mislead it; mcentral must
 * reject a bad link in a list given back before following it, naming the
 * object it came from, in one line, then abort.  Those cases run in a forked
 * child whose stderr is read back.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "../common/child.h"

static char a_global[64];

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_key(void **state)
{
    (void)state;
    assert_true((sm_freelist_key >> SM_ADDR_BITS) != 0);
}

static void test_roundtrip(void **state)
{
    (void)state;
    for (int i = 0; i < 100000; i++) {
        void *slot = (void *)(uintptr_t)((next_rand() & ((1ull << 47) - 1)) & ~(uintptr_t)15);
        void *next = (void *)(uintptr_t)((next_rand() & ((1ull << 47) - 1)) & ~(uintptr_t)15);
        if (i % 7 == 0)
            next = NULL;
        void *word = sm_freelist_encode(slot, next);
        assert_ptr_equal(sm_freelist_decode(slot, word), next);
        /* The stored word is not the address itself. */
        if (next != NULL)
            assert_ptr_not_equal(word, next);
    }
}

static void test_bad_pointers(void **state)
{
    (void)state;
    assert_true(sm_freelist_bad(NULL));
    assert_true(sm_freelist_bad((void *)(uintptr_t)8));
    assert_true(sm_freelist_bad((void *)(uintptr_t)0x7f0000001008ull));
    assert_true(sm_freelist_bad((void *)(uintptr_t)0x7f0000001001ull));
    assert_true(sm_freelist_bad((void *)(((uintptr_t)1 << SM_ADDR_BITS) + 16)));
    assert_true(sm_freelist_bad((void *)((uintptr_t)1 << (SM_ADDR_BITS + 1))));
    assert_true(sm_freelist_bad((void *)~(uintptr_t)0));
    assert_true(sm_freelist_bad((void *)(uintptr_t)0xffff800000000000ull));
    assert_false(sm_freelist_bad((void *)(uintptr_t)16));
    assert_false(sm_freelist_bad((void *)(uintptr_t)0x7f0000001010ull));
    assert_false(sm_freelist_bad((void *)(((uintptr_t)1 << SM_ADDR_BITS) - 16)));
}

/* Any address a program could write over a link decodes to a bad one. */
static void test_plain_address_decodes_bad(void **state)
{
    (void)state;
    char local[64];
    void *heap = malloc(100);
    void *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    void *slot = malloc(48);
    uintptr_t plain[] = {
        0, 1, 0x41414141, 0x4141414141414141ull, (uintptr_t)a_global, (uintptr_t)local,
        (uintptr_t)heap, (uintptr_t)map, (uintptr_t)slot, (uintptr_t)slot + 48,
        ((uintptr_t)1 << 47) - 16,
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        assert_true(sm_freelist_bad(sm_freelist_decode(slot, (void *)plain[i])));
    for (int i = 0; i < 100000; i++) {
        uintptr_t a = (uintptr_t)(next_rand() & ((1ull << 47) - 1));
        assert_true(sm_freelist_bad(sm_freelist_decode(slot, (void *)a)));
    }
    munmap(map, 4096);
    free(heap);
    free(slot);
}

static void test_check_class(void **state)
{
    (void)state;
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
        uint32_t size = sm_class_to_size[cls];
        /* Room left in the class: it stays. */
        assert_int_equal(sm_check_class(cls, size - 1), cls);
        assert_int_equal(sm_check_class(cls, 0), cls);
        /* A request that fills its class moves to the next one. */
        uint32_t up = sm_check_class(cls, size);
        if (size == SM_MAX_SMALL_SIZE) {
            assert_int_equal(up, 0);
            continue;
        }
        assert_int_equal(up, cls + 1);
        assert_true(sm_class_to_size[up] > size);
    }
}

/* ---- walkers reject a bad link ------------------------------------------------ */

static void expect_corrupt(void (*fn)(void *), void *arg, const char *want)
{
    struct outcome o;
    run_in_child(fn, arg, &o);
    print_message("# child stderr: %s", o.err[0] ? o.err : "(nothing)\n");
    if (o.sig != SIGABRT)
        fail_msg("expected SIGABRT, got signal %d, exit %d", o.sig, o.code);
    if (strncmp(o.err, want, strlen(want)) != 0 || strchr(o.err, '\n') != o.err + strlen(o.err) - 1)
        fail_msg("expected one line starting \"%s\", got \"%s\"", want, o.err);
}

/* A refill's list is encoded: no object's first word holds the plain
 * address of the next, and each decodes to it; the last links to what the
 * list held before. */
static void test_take_links_encoded(void **state)
{
    (void)state;
    uint8_t cls = (uint8_t)sm_size_to_class(100);
    struct sm_mspan *s = sm_mheap_alloc(&sm_heap, sm_class_to_npages[cls], 0, cls);
    assert_non_null(s);
    void *head = NULL;
    assert_int_equal(sm_mspan_take(s, 2, &head), 2);
    void *old = head;
    assert_int_equal(sm_mspan_take(s, 3, &head), 3);
    /* Objects 2, 3, 4 in front of 0, 1. */
    static const int order[5] = {2, 3, 4, 0, 1};
    void *p = head;
    assert_int_equal((uintptr_t)p, s->base + 2 * s->elemsize);
    for (int i = 0; i < 4; i++) {
        void *next = sm_link_load(p);
        assert_false(sm_freelist_bad(next));
        assert_true(*(void **)p != next);
        assert_int_equal((uintptr_t)next, s->base + (uintptr_t)order[i + 1] * s->elemsize);
        if (i == 2)
            assert_ptr_equal(next, old);
        p = next;
    }
    assert_null(sm_link_load(p));
    assert_true(*(void **)p != NULL);
    for (p = head; p != NULL;) {
        void *next = sm_link_load(p);
        sm_mspan_put(s, p);
        p = next;
    }
    assert_int_equal(s->nfree, sm_class_to_nobjs[cls]);
    sm_mheap_free(&sm_heap, s);
}

/* A free object in a span holds no link: whatever is written over its
 * first words, objects come out of the span at their own addresses. */
static void test_span_ignores_free_object_contents(void **state)
{
    (void)state;
    uint8_t cls = (uint8_t)sm_size_to_class(100);
    struct sm_mspan *s = sm_mheap_alloc(&sm_heap, sm_class_to_npages[cls], 0, cls);
    assert_non_null(s);
    void *o[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(o[i] = sm_mspan_take_one(s));
    sm_mspan_put(s, o[1]);
    sm_mspan_put(s, o[0]);
    *(uintptr_t *)o[0] = (uintptr_t)a_global;
    *(uintptr_t *)o[1] = 0x4141414141414141ull;
    assert_ptr_equal(sm_mspan_take_one(s), o[0]);
    assert_ptr_equal(sm_mspan_take_one(s), o[1]);
    /* The one-object take writes nothing in the object. */
    assert_int_equal(*(uintptr_t *)o[0], (uintptr_t)a_global);
    assert_int_equal(*(uintptr_t *)o[1], 0x4141414141414141ull);
    for (int i = 0; i < 3; i++)
        sm_mspan_put(s, o[i]);
    sm_mheap_free(&sm_heap, s);
}

/* A batch given back to mcentral whose second link is foreign. */
static void batch_corrupted(void *arg)
{
    (void)arg;
    uint32_t cls = sm_size_to_class(100);
    void *head = NULL;
    if (sm_mcentral_alloc_batch(&sm_central[cls], &sm_heap, 2, &head) != 2)
        _exit(2);
    sm_link_store(head, a_global);
    sm_mcentral_free_batch(&sm_central[cls], &sm_heap, head, 2);
    _exit(3);
}

static void test_batch_checked(void **state)
{
    (void)state;
    expect_corrupt(batch_corrupted, NULL, "spanmalloc: free(): free list corrupted: 0x");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_bad_pointers),
        cmocka_unit_test(test_plain_address_decodes_bad),
        cmocka_unit_test(test_check_class),
        cmocka_unit_test(test_take_links_encoded),
        cmocka_unit_test(test_span_ignores_free_object_contents),
        cmocka_unit_test(test_batch_checked),
    };
    sm_init();
    return cmocka_run_group_tests_name("check", tests, NULL, NULL);
}
