/*
 * test_badptr.c - what the allocator does with input it must not accept,
 * and with an operating system that says no.
 *
 * A pointer that spanmalloc did not hand out (a stack address, the middle of
 * a global, a small integer, the inside of a large object) and a second
 * free of a large object end the process with SIGABRT after one line on
 * stderr that names spanmalloc, says what is wrong and gives the pointer as
 * %p prints it.  Each case runs in a forked child whose stderr goes into a
 * pipe; the parent checks the signal and the text.
 *
 * The pointers are made in the parent before the fork, so the parent knows
 * them (a child's address space is a copy of its parent's).
 *
 * A free object's first word is its free-list link, stored encoded.  A
 * plain address written over it (a global, the stack, another live
 * object, as an overflow from the object before would) must never come
 * back from malloc: the allocator reports the corrupted list and aborts,
 * whether the link is followed by malloc or by a cache being drained.
 *
 * Running out of address space (RLIMIT_AS) makes a large malloc return NULL
 * with ENOMEM; small requests keep working, and once the limit is raised a
 * large one works again.
 */
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "spanmalloc.h"
#include "../common/child.h"

static void require_spanmalloc(void)
{
    assert_non_null(dlsym(RTLD_DEFAULT, "sm_version"));
}

/* The child died of SIGABRT after one line that names spanmalloc, contains
 * what, and the pointer as %p prints it. */
static void expect_abort_report(void (*fn)(void *), void *arg, const void *ptr, const char *what)
{
    struct outcome o;
    run_in_child(fn, arg, &o);
    char hex[32];
    snprintf(hex, sizeof hex, "%p", ptr);
    print_message("# child stderr: %s", o.errlen ? o.err : "(nothing)\n");
    if (o.exited)
        fail_msg("expected SIGABRT for %s %s, child exited %d", what, hex, o.code);
    if (o.sig != SIGABRT)
        fail_msg("expected SIGABRT for %s %s, child killed by signal %d", what, hex, o.sig);
    char *nl = strchr(o.err, '\n');
    if (o.errlen == 0 || nl == NULL || (size_t)(nl - o.err) != o.errlen - 1)
        fail_msg("expected exactly one line on stderr, got \"%s\"", o.err);
    assert_non_null(strstr(o.err, "spanmalloc"));
    if (strstr(o.err, what) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", o.err, what);
    /* The pointer, not followed by another hex digit. */
    char *at = strstr(o.err, hex);
    if (at == NULL || isxdigit((unsigned char)at[strlen(hex)]))
        fail_msg("\"%s\" does not give the pointer %s", o.err, hex);
}

/* ---- the cases ---------------------------------------------------------------- */

static void do_free(void *p)
{
    free(opaque_ptr(p));
}

static void do_double_free(void *p)
{
    free(opaque_ptr(p));
    free(opaque_ptr(p));
}

static void do_realloc(void *p)
{
    void *q = realloc(opaque_ptr(p), opaque(100));
    (void)q;
}

static void do_usable_size(void *p)
{
    volatile size_t n = malloc_usable_size(opaque_ptr(p));
    (void)n;
}

static char global_array[4096];

static void test_free_stack_address(void **state)
{
    (void)state;
    require_spanmalloc();
    char local[64];
    memset(local, 1, sizeof local);
    void *p = opaque_ptr(local + 8);
    expect_abort_report(do_free, p, p, "invalid");
}

static void test_free_middle_of_global(void **state)
{
    (void)state;
    require_spanmalloc();
    void *p = opaque_ptr(global_array + 1000);
    expect_abort_report(do_free, p, p, "invalid");
}

static void test_free_small_integer(void **state)
{
    (void)state;
    require_spanmalloc();
    void *p = (void *)(uintptr_t)0x1234;
    expect_abort_report(do_free, p, p, "invalid");
}

static void test_free_inside_large_object(void **state)
{
    (void)state;
    require_spanmalloc();
    char *big = malloc(opaque(100000));
    assert_non_null(big);
    expect_abort_report(do_free, big + 16, big + 16, "invalid");
    /* A page further in, too: still the same object. */
    expect_abort_report(do_free, big + 40000, big + 40000, "invalid");
    free(big);
}

static void test_double_free_large(void **state)
{
    (void)state;
    require_spanmalloc();
    void *p = malloc(opaque((size_t)1 << 20));
    assert_non_null(p);
    memset(p, 7, (size_t)1 << 20);
    expect_abort_report(do_double_free, p, p, "double free");
    /* Only the child freed it. */
    free(p);
}

static void test_realloc_and_usable_size_invalid(void **state)
{
    (void)state;
    require_spanmalloc();
    void *p = opaque_ptr(global_array + 16);
    expect_abort_report(do_realloc, p, p, "invalid");
    expect_abort_report(do_usable_size, p, p, "invalid");
}

static void free_null_twice(void *arg)
{
    (void)arg;
    free(opaque_ptr(NULL));
    free(opaque_ptr(NULL));
    void *q = realloc(opaque_ptr(NULL), opaque(0));
    free(q);
}

static void test_free_null_is_fine(void **state)
{
    (void)state;
    require_spanmalloc();
    struct outcome o;
    run_in_child(free_null_twice, NULL, &o);
    assert_true(o.exited);
    assert_int_equal(o.code, 0);
    if (o.errlen != 0)
        fail_msg("free(NULL) wrote \"%s\"", o.err);
}

/* ---- corrupted free lists ------------------------------------------------------ */

/* The child died of SIGABRT after one line that starts with prefix (and,
 * if ptr is not NULL, names it). */
static void expect_corruption_report(void (*fn)(void *), void *arg, const char *prefix, const void *ptr)
{
    struct outcome o;
    run_in_child(fn, arg, &o);
    print_message("# child stderr: %s", o.errlen ? o.err : "(nothing)\n");
    if (o.exited && o.code == 3)
        fail_msg("malloc handed out the address written over a free-list link");
    if (o.exited)
        fail_msg("expected SIGABRT, child exited %d", o.code);
    if (o.sig != SIGABRT)
        fail_msg("expected SIGABRT, child killed by signal %d", o.sig);
    char *nl = strchr(o.err, '\n');
    if (nl == NULL || (size_t)(nl - o.err) != o.errlen - 1)
        fail_msg("expected exactly one line on stderr, got \"%s\"", o.err);
    if (strncmp(o.err, prefix, strlen(prefix)) != 0)
        fail_msg("\"%s\" does not start with \"%s\"", o.err, prefix);
    if (ptr != NULL) {
        char hex[32];
        snprintf(hex, sizeof hex, "%p", ptr);
        char *at = strstr(o.err, hex);
        if (at == NULL || isxdigit((unsigned char)at[strlen(hex)]))
            fail_msg("\"%s\" does not give the pointer %s", o.err, hex);
    }
}

/* Free an object, write target over its link, malloc its size twice. */
static void overwrite_link_then_malloc(void *target)
{
    /* The stale pointer goes through a volatile, as a program's would
     * through its data structures. */
    static void *volatile stale;
    stale = opaque_ptr(malloc(opaque(48)));
    free(stale);
    *(void *volatile *)stale = target;
    void *a = opaque_ptr(malloc(opaque(48)));
    void *b = opaque_ptr(malloc(opaque(48)));
    if (a == target || b == target)
        _exit(3);
    _exit(4);
}

static char victim_global[256];

static void test_corrupted_link_never_followed(void **state)
{
    (void)state;
    require_spanmalloc();
    char local[64];
    memset(local, 0, sizeof local);
    void *live = malloc(opaque(48));   /* an object in use: must not be handed out twice */
    void *targets[] = {victim_global + 16, local + 16, live, (void *)(uintptr_t)0x4141414141414140ull};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        expect_corruption_report(overwrite_link_then_malloc, targets[i],
                                 "spanmalloc: malloc(): free list corrupted: ", NULL);
    free(live);
}

/* The corrupted link is followed when the cache is drained instead:
 * sm_free_os_memory gives this thread's whole cache back. */
static void overwrite_link_then_drain(void *arg)
{
    static void *volatile stale;
    stale = arg;
    char *q = opaque_ptr(malloc(opaque(48)));
    free(stale);
    *(void *volatile *)stale = victim_global;
    free(q);
    sm_free_os_memory();
    _exit(4);
}

static void test_corrupted_link_found_by_drain(void **state)
{
    (void)state;
    require_spanmalloc();
    char *p = malloc(opaque(48));
    expect_corruption_report(overwrite_link_then_drain, p, "spanmalloc: free(): free list corrupted: ", p);
    free(p);
}

/* ---- mmap failure ------------------------------------------------------------- */

static size_t vm_size(void)
{
    char buf[8192];
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return 0;
    size_t kib = 0;
    while (fgets(buf, sizeof buf, f))
        if (strncmp(buf, "VmSize:", 7) == 0)
            kib = (size_t)strtoull(buf + 7, NULL, 10);
    fclose(f);
    return kib << 10;
}

/* Exit codes name the step that failed. */
static void address_space_limit(void *arg)
{
    (void)arg;
    const size_t GiB = (size_t)1 << 30;
    struct rlimit old;
    if (getrlimit(RLIMIT_AS, &old) != 0)
        _exit(10);
    size_t used = vm_size();
    if (used == 0)
        _exit(11);
    /* Room for small things, none for a GiB. */
    struct rlimit low = {.rlim_cur = used + ((size_t)32 << 20), .rlim_max = old.rlim_max};
    if (setrlimit(RLIMIT_AS, &low) != 0)
        _exit(12);
    errno = 0;
    void *big = opaque_ptr(malloc(opaque(GiB)));
    if (big != NULL)
        _exit(13);
    if (errno != ENOMEM)
        _exit(14);
    errno = 0;
    big = opaque_ptr(calloc(opaque(1024), opaque(1 << 20)));
    if (big != NULL || errno != ENOMEM)
        _exit(15);
    /* Small requests still work, in several classes. */
    void *small[300];
    for (int i = 0; i < 300; i++) {
        small[i] = malloc(opaque(16 + (size_t)i * 37));
        if (small[i] == NULL)
            _exit(16);
        memset(small[i], i, 16 + (size_t)i * 37);
    }
    for (int i = 0; i < 300; i++)
        free(small[i]);
    /* Raise the soft limit back: a GiB works again. */
    if (setrlimit(RLIMIT_AS, &old) != 0)
        _exit(17);
    big = malloc(opaque(GiB));
    if (big == NULL)
        _exit(18);
    ((char *)big)[0] = 1;
    ((char *)big)[GiB - 1] = 1;
    free(big);
    _exit(0);
}

static void test_mmap_failure_is_enomem(void **state)
{
    (void)state;
    require_spanmalloc();
    expect_clean(address_space_limit, NULL);
}

/* No address space left at all: allocations fail one by one with ENOMEM
 * (no crash, no abort), the objects already handed out stay good, and all
 * is well once the limit goes back up. */
static void address_space_exhausted(void *arg)
{
    (void)arg;
    enum { MAXN = 200000, SZ = 48 * 1024 };
    static void *objs[MAXN];
    struct rlimit old;
    if (getrlimit(RLIMIT_AS, &old) != 0)
        _exit(10);
    struct rlimit none = {.rlim_cur = vm_size(), .rlim_max = old.rlim_max};
    if (none.rlim_cur == 0 || setrlimit(RLIMIT_AS, &none) != 0)
        _exit(11);
    int n = 0;
    for (; n < MAXN; n++) {
        size_t size = n % 2 ? SZ : (size_t)(n % 5000) + 1;
        errno = 0;
        objs[n] = opaque_ptr(malloc(opaque(size)));
        if (objs[n] == NULL)
            break;
        memset(objs[n], n & 0xff, size < 64 ? size : 64);
    }
    if (n == MAXN)
        _exit(12);   /* the limit never bit */
    if (errno != ENOMEM)
        _exit(13);
    for (int i = 0; i < n; i++) {
        size_t size = i % 2 ? SZ : (size_t)(i % 5000) + 1;
        const unsigned char *c = objs[i];
        for (size_t k = 0; k < (size < 64 ? size : 64); k++)
            if (c[k] != (unsigned char)(i & 0xff))
                _exit(14);
        free(objs[i]);
    }
    if (setrlimit(RLIMIT_AS, &old) != 0)
        _exit(15);
    void *big = malloc(opaque((size_t)256 << 20));
    if (big == NULL)
        _exit(16);
    memset(big, 1, 4096);
    free(big);
    for (size_t size = 1; size <= 70000; size = size * 3 / 2 + 1) {
        void *p = malloc(opaque(size));
        if (p == NULL)
            _exit(17);
        memset(p, 2, size);
        free(p);
    }
    _exit(0);
}

static void test_address_space_exhausted(void **state)
{
    (void)state;
    require_spanmalloc();
    expect_clean(address_space_exhausted, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_stack_address),
        cmocka_unit_test(test_free_middle_of_global),
        cmocka_unit_test(test_free_small_integer),
        cmocka_unit_test(test_free_inside_large_object),
        cmocka_unit_test(test_double_free_large),
        cmocka_unit_test(test_realloc_and_usable_size_invalid),
        cmocka_unit_test(test_free_null_is_fine),
        cmocka_unit_test(test_corrupted_link_never_followed),
        cmocka_unit_test(test_corrupted_link_found_by_drain),
        cmocka_unit_test(test_mmap_failure_is_enomem),
        cmocka_unit_test(test_address_space_exhausted),
    };
    return cmocka_run_group_tests_name("badptr", tests, NULL, NULL);
}
