/*
 * test_pagemap.c - the page map alone, over the fake OS layer: arenas are
 * found through their biased index entries (internal.h, sm_arenas), the
 * kind byte is where free's fast path reads it, and an arena whose
 * metadata would sit at its own bias (an entry of 0, "not ours") gets
 * another copy.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "internal.h"
#include "os_fake.h"

static const size_t meta_bytes = (sizeof(struct sm_heap_arena) + 4095) & ~(size_t)4095;

/* The kind byte of the page at a, read the way sm_free_fast reads it. */
static uint8_t fast_kind(uintptr_t a)
{
    uintptr_t e = sm_arenas[a >> SM_ARENA_SHIFT];
    assert_true(e != 0);
    return *(const uint8_t *)(e + (a >> SM_PAGE_SHIFT));
}

static void test_arenas_found_through_biased_entries(void **state)
{
    (void)state;
    /* Two arenas far apart, and the address space between them. */
    uintptr_t lo = (uintptr_t)3 << SM_ARENA_SHIFT, hi = (uintptr_t)0x12345 << SM_ARENA_SHIFT;
    size_t live = os_fake_live_blocks();
    uint64_t meta = 0;
    assert_true(sm_pagemap_add_region(lo, 2 * SM_ARENA_SIZE, &meta));
    assert_true(sm_pagemap_add_region(hi, SM_ARENA_SIZE, &meta));
    assert_int_equal(os_fake_live_blocks(), live + 3);
    assert_int_equal(meta, 3 * meta_bytes);
    /* Registering again takes nothing. */
    assert_true(sm_pagemap_add_region(lo, SM_ARENA_SIZE, &meta));
    assert_int_equal(os_fake_live_blocks(), live + 3);

    assert_non_null(sm_pagemap_arena(lo));
    assert_non_null(sm_pagemap_arena(lo + SM_ARENA_SIZE + 12345));
    assert_ptr_not_equal(sm_pagemap_arena(lo), sm_pagemap_arena(lo + SM_ARENA_SIZE));
    assert_null(sm_pagemap_arena(lo + 2 * SM_ARENA_SIZE));
    assert_null(sm_pagemap_arena(hi - 1));
    assert_null(sm_pagemap_arena((uintptr_t)1 << SM_ADDR_BITS));
    assert_int_equal(sm_pagemap_kind(hi + SM_ARENA_SIZE), SM_PAGE_NONE);

    /* A run that crosses from one arena into the next. */
    uintptr_t run = lo + SM_ARENA_SIZE - 2 * SM_PAGE_SIZE;
    sm_pagemap_set_kind(run, 4, 9);
    for (uintptr_t a = run; a < run + 4 * SM_PAGE_SIZE; a += SM_PAGE_SIZE / 2) {
        assert_int_equal(sm_pagemap_kind(a), 9);
        assert_int_equal(fast_kind(a), 9);
    }
    assert_int_equal(fast_kind(run - 1), SM_PAGE_NONE);
    assert_int_equal(fast_kind(run + 4 * SM_PAGE_SIZE), SM_PAGE_NONE);
    /* The last page of the last arena of the index. */
    uintptr_t last = hi + SM_ARENA_SIZE - 1;
    sm_pagemap_set_kind(last & ~(uintptr_t)(SM_PAGE_SIZE - 1), 1, SM_PAGE_LARGE);
    assert_int_equal(fast_kind(last), SM_PAGE_LARGE);
    assert_int_equal(sm_pagemap_arena(last)->pagekind[SM_PAGES_PER_ARENA - 1], SM_PAGE_LARGE);
}

static void test_arena_at_its_own_bias_gets_another_copy(void **state)
{
    (void)state;
    /* Arena ai's entry would be 0 if its metadata sat at ai << 13. */
    uintptr_t ai = (uintptr_t)1 << 16;
    uintptr_t base = ai << SM_ARENA_SHIFT;
    void *at = (void *)sm_arena_bias(ai);
    size_t live = os_fake_live_blocks();
    uint64_t calls = os_fake_alloc_calls();
    uint64_t meta = 0;
    os_fake_place_next(at);
    assert_true(sm_pagemap_add_region(base, SM_ARENA_SIZE, &meta));
    /* The copy at its bias was made, then given back for another. */
    assert_int_equal(os_fake_alloc_calls(), calls + 2);
    assert_int_equal(os_fake_live_blocks(), live + 1);
    assert_int_equal(meta, meta_bytes);
    assert_true(sm_arenas[ai] != 0);
    struct sm_heap_arena *ar = sm_pagemap_arena(base);
    assert_non_null(ar);
    assert_ptr_not_equal(ar, at);
    sm_pagemap_set_kind(base + 5 * SM_PAGE_SIZE, 1, 7);
    assert_int_equal(fast_kind(base + 5 * SM_PAGE_SIZE + 100), 7);
    assert_int_equal(sm_pagemap_kind(base + 5 * SM_PAGE_SIZE), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arenas_found_through_biased_entries),
        cmocka_unit_test(test_arena_at_its_own_bias_gets_another_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
