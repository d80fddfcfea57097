/*
 * test_init.c - the end of a process (init.c): in a debug build
 * (configure --enable-debug) the destructor validates the heap with
 * sm_mheap_check, so a heap whose counts disagree with its free lists
 * aborts the process as it exits; in a release build nothing is checked
 * and the process exits normally.  Each case runs in a forked child that
 * returns through exit(), so the destructor runs.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "../common/child.h"

/* A consistent heap: a few objects live and freed, then exit. */
static void exit_clean(void *arg)
{
    (void)arg;
    void *p[64];
    for (int i = 0; i < 64; i++)
        p[i] = opaque_ptr(malloc(opaque((size_t)i * 1000 + 1)));
    for (int i = 0; i < 64; i += 2)
        free(p[i]);
    exit(0);
}

/* The heap's free-page count made to disagree with its free lists. */
static void exit_inconsistent(void *arg)
{
    (void)arg;
    free(opaque_ptr(malloc(opaque(100000))));
    sm_mheap_lock(&sm_heap);
    sm_heap.st.pages_free++;
    sm_heap.st.pages_sys++;
    sm_mheap_unlock(&sm_heap);
    exit(0);
}

static void test_clean_exit(void **state)
{
    (void)state;
    expect_clean(exit_clean, NULL);
}

static void test_inconsistent_heap_at_exit(void **state)
{
    (void)state;
    struct outcome o;
    if (SM_DEBUG) {
        expect_abort(exit_inconsistent, NULL, &o);
        assert_non_null(strstr(o.err, "spanmalloc: fatal error: mheap: pages_free disagrees with free lists"));
    } else {
        run_in_child(exit_inconsistent, NULL, &o);
        assert_true(o.exited);
        assert_int_equal(o.code, 0);
        assert_int_equal(o.errlen, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_exit),
        cmocka_unit_test(test_inconsistent_heap_at_exit),
    };
    sm_init();
    print_message("# debug build: %s\n", SM_DEBUG ? "yes" : "no");
    return cmocka_run_group_tests_name("init", tests, NULL, NULL);
}
