/*
 * test_check.c - checked mode (SPANMALLOC_CHECK=1) through the public API.
 *
 * The program re-executes itself with SPANMALLOC_CHECK=1 when it was not
 * started with it (the mode is read once, at the first malloc), so every
 * allocation of the test, cmocka's included, is a checked one.
 *
 * Each error runs in a forked child whose stderr goes into a pipe: the
 * child must die of SIGABRT after exactly the line the case names,
 * "spanmalloc: fn(): what 0x...\n", with the pointer as %p prints it.
 * Pointers are made in the parent before the fork, or, where the child
 * must make them (so that their size class is fresh in the child), are
 * computed from what the parent allocated.
 *
 * Size classes used only by one child start with no span there: a class's
 * first span hands out its objects in address order and keeps its single
 * partial span when all of it is free, so "the next malloc of that size"
 * is a known object.  CLASS_A (13000 bytes, class 13568: three objects per
 * span) is never allocated by the parent.
 *
 * Also here: correct use makes no report (every entry point, at sizes that
 * fill their class exactly), malloc_usable_size is the requested size, the
 * stats invariants hold, and a bad SPANMALLOC_CHECK value warns once and
 * leaves checked mode off.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "spanmalloc.h"
#include "../common/child.h"

#define CLASS_A 13000
#define CLASS_A_SLOT 13568

/* The child died of SIGABRT after exactly "spanmalloc: fn(): what ptr\n". */
static void expect_report(void (*fn)(void *), void *arg, const char *func, const char *what,
                          const void *ptr)
{
    struct outcome o;
    run_in_child(fn, arg, &o);
    char want[256];
    snprintf(want, sizeof want, "spanmalloc: %s(): %s %p\n", func, what, ptr);
    print_message("# child stderr: %s", o.errlen ? o.err : "(nothing)\n");
    if (o.exited)
        fail_msg("expected SIGABRT with \"%s\", child exited %d", want, o.code);
    if (o.sig != SIGABRT)
        fail_msg("expected SIGABRT with \"%s\", child killed by signal %d", want, o.sig);
    if (strcmp(o.err, want) != 0)
        fail_msg("expected \"%s\", got \"%s\"", want, o.err);
}

/* ---- small objects ------------------------------------------------------------ */

static void free_it(void *p)
{
    free(opaque_ptr(p));
}

static void overflow_by_one_then_free(void *p)
{
    ((volatile char *)p)[malloc_usable_size(p)] = 'x';
    free(opaque_ptr(p));
}

static void test_overflow_found_at_free(void **state)
{
    (void)state;
    /* 10 bytes in a 16-byte class; 64 bytes, which fill their class: the
     * checked request gets a larger one, so there is a canary too. */
    static const size_t sizes[] = {1, 10, 24, 64, 100, 1024, 4096, 20000, 32767, 32768};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = malloc(opaque(sizes[i]));
        assert_non_null(p);
        assert_int_equal(malloc_usable_size(p), sizes[i]);
        expect_report(overflow_by_one_then_free, p, "free", "buffer overflow of", p);
        free(p);
    }
}

/* Where the first CLASS_A object of a child will be: a child that makes
 * one and tells. */
static void *first_class_a_object(void)
{
    void *where = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        void *a = opaque_ptr(malloc(opaque(CLASS_A)));
        if (write(fds[1], &a, sizeof a) != sizeof a)
            _exit(1);
        _exit(0);
    }
    assert_int_equal(read(fds[0], &where, sizeof where), sizeof where);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    close(fds[1]);
    return where;
}

/* Overflows a fresh CLASS_A object by a few bytes from its end, then
 * allocates another of its span. */
static void overflow_then_malloc(void *arg)
{
    (void)arg;
    char *a = opaque_ptr(malloc(opaque(CLASS_A)));
    memcpy(a + CLASS_A, "abc", 3);
    opaque_ptr(malloc(opaque(CLASS_A)));
}

static void test_overflow_found_at_next_malloc_from_span(void **state)
{
    (void)state;
    expect_report(overflow_then_malloc, NULL, "malloc", "buffer overflow of", first_class_a_object());
}

/* A write further into the slack, not starting at the end: found when the
 * object is freed. */
static void stray_write_then_free(void *arg)
{
    (void)arg;
    char *a = opaque_ptr(malloc(opaque(CLASS_A)));
    ((volatile char *)a)[CLASS_A + 100] = 'x';
    opaque_ptr(malloc(opaque(CLASS_A)));
    free(a);
}

static void test_stray_write_in_slack_found_at_free(void **state)
{
    (void)state;
    expect_report(stray_write_then_free, NULL, "free", "buffer overflow of", first_class_a_object());
}

static void double_free(void *p)
{
    free(opaque_ptr(p));
    free(opaque_ptr(p));
}

static void test_double_free(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 16, 100, 3000, 32000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = malloc(opaque(sizes[i]));
        assert_non_null(p);
        expect_report(double_free, p, "free", "double free of", p);
        free(p);
    }
}

struct uaf {
    size_t offset;     /* where the stale write goes */
};

static void write_after_free(void *arg)
{
    const struct uaf *u = arg;
    char *a = opaque_ptr(malloc(opaque(CLASS_A)));
    free(opaque_ptr(a));
    *(volatile uint32_t *)(a + u->offset) = 0x41414141u;
    opaque_ptr(malloc(opaque(CLASS_A)));   /* a again: its span is kept */
}

static void test_write_after_free(void **state)
{
    (void)state;
    void *a = first_class_a_object();
    /* In the poison, at the end of the slot, and over the free-list link
     * in the first word. */
    static struct uaf cases[] = {{100}, {CLASS_A_SLOT - 4}, {0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_report(write_after_free, &cases[i], "malloc", "write after free of", a);
}

/* a overflows past its slot into b, which is free: the next malloc takes b
 * and finds the object before it overflowed. */
static void overflow_into_free_neighbour(void *arg)
{
    (void)arg;
    char *a = opaque_ptr(malloc(opaque(CLASS_A)));
    char *b = opaque_ptr(malloc(opaque(CLASS_A)));
    if (b != a + CLASS_A_SLOT)
        _exit(2);
    free(opaque_ptr(b));
    memset(opaque_ptr(a), 'x', CLASS_A_SLOT + 64);
    opaque_ptr(malloc(opaque(CLASS_A)));
}

static void test_overflow_into_free_neighbour(void **state)
{
    (void)state;
    void *a = first_class_a_object();
    expect_report(overflow_into_free_neighbour, NULL, "malloc", "buffer overflow of", a);
}

static void test_interior_and_foreign_pointers(void **state)
{
    (void)state;
    char *p = malloc(opaque(200));
    assert_non_null(p);
    expect_report(free_it, p + 16, "free", "invalid pointer", p + 16);
    expect_report(free_it, p + 1, "free", "invalid pointer", p + 1);
    static char global[256];
    expect_report(free_it, global + 32, "free", "invalid pointer", global + 32);
    char local[64];
    memset(local, 0, sizeof local);
    expect_report(free_it, local + 8, "free", "invalid pointer", local + 8);
    expect_report(free_it, (void *)(uintptr_t)0x1000, "free", "invalid pointer", (void *)(uintptr_t)0x1000);
    free(p);
}

/* ---- large objects ------------------------------------------------------------------ */

static void test_large_objects(void **state)
{
    (void)state;
    /* Slack in the last page; no slack at all (two whole pages). */
    static const size_t sizes[] = {100000, 16384, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = malloc(opaque(sizes[i]));
        assert_non_null(p);
        assert_int_equal(malloc_usable_size(p), sizes[i]);
        memset(p, 1, sizes[i]);
        expect_report(overflow_by_one_then_free, p, "free", "buffer overflow of", p);
        expect_report(double_free, p, "free", "double free of", p);
        expect_report(free_it, p + 4096, "free", "invalid pointer", p + 4096);
        expect_report(free_it, p + 8192, "free", "invalid pointer", p + 8192);
        free(p);
    }
}

/* A large object freed and a smaller one of the same pages allocated, as a
 * program reusing a buffer does: the new one gets its own canary (right
 * after its 99,000 bytes), so its correct use makes no report, and a write
 * one byte past it is found at free. */
static void large_reuse(void *arg)
{
    int overflow = arg != NULL;
    for (int round = 0; round < 4; round++) {
        char *p = malloc(opaque(100000));
        if (p == NULL)
            _exit(2);
        memset(p, 'a', 100000);
        free(opaque_ptr(p));
        char *q = malloc(opaque(99000));
        if (q == NULL)
            _exit(3);
        if (malloc_usable_size(q) != 99000)
            _exit(4);
        memset(q, 'b', 99000);
        if (overflow)
            ((volatile char *)q)[99000] = 'x';
        free(opaque_ptr(q));
    }
}

static void test_large_reuse_gets_a_canary(void **state)
{
    (void)state;
    expect_clean(large_reuse, NULL);
    struct outcome o;
    run_in_child(large_reuse, (void *)1, &o);
    if (o.exited || o.sig != SIGABRT || strstr(o.err, "spanmalloc: free(): buffer overflow of 0x") != o.err)
        fail_msg("expected a buffer overflow report at free, got signal %d, stderr: %s", o.sig, o.err);
}

/* ---- realloc, memalign, calloc -------------------------------------------------------- */

struct resize {
    size_t from, to;
};

static void realloc_then_overflow(void *arg)
{
    const struct resize *r = arg;
    char *p = malloc(opaque(r->from));
    memset(p, 'a', r->from);
    char *q = realloc(opaque_ptr(p), opaque(r->to));
    if (q == NULL)
        _exit(2);
    for (size_t i = 0; i < (r->from < r->to ? r->from : r->to); i++)
        if (q[i] != 'a')
            _exit(3);
    if (malloc_usable_size(q) != r->to)
        _exit(4);
    memset(q, 'b', r->to);   /* all of it is the program's */
    /* Tell the parent where it is, then write one byte past the end. */
    if (write(STDOUT_FILENO, &q, sizeof q) != sizeof q)
        _exit(5);
    ((volatile char *)q)[r->to] = 'x';
    free(q);
}

static void test_realloc_keeps_a_canary(void **state)
{
    (void)state;
    static struct resize cases[] = {
        {100, 97},        /* shrink in place (class 112) */
        {97, 100},        /* grow in place */
        {100, 40},        /* shrink to a smaller class: moves */
        {10, 1000},       /* grow to a larger class: moves */
        {100000, 99000},  /* large, same pages */
        {100000, 300000}, /* large, moves */
        {300000, 50},     /* large to small */
        {50, 40000},      /* small to large */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* The child's object: run once to learn it (same heap, same
         * steps), then again for the report. */
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(fds[1], STDOUT_FILENO);
            int null = open("/dev/null", O_WRONLY);
            dup2(null, STDERR_FILENO);
            signal(SIGABRT, SIG_DFL);
            realloc_then_overflow(&cases[i]);
            _exit(0);
        }
        close(fds[1]);
        void *q = NULL;
        assert_int_equal(read(fds[0], &q, sizeof q), sizeof q);
        close(fds[0]);
        int status;
        waitpid(pid, &status, 0);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
            fail_msg("realloc %zu -> %zu: child did not abort (status %#x)", cases[i].from,
                     cases[i].to, status);
        int saved = dup(STDOUT_FILENO);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        expect_report(realloc_then_overflow, &cases[i], "free", "buffer overflow of", q);
        dup2(saved, STDOUT_FILENO);
        close(saved);
        close(null);
    }
}

static void realloc_freed(void *p)
{
    opaque_ptr(realloc(opaque_ptr(p), opaque(300)));
}

static void test_realloc_errors(void **state)
{
    (void)state;
    char *p = opaque_ptr(malloc(opaque(200)));
    memset(p, 0, 200);
    expect_report(realloc_freed, p + 8, "realloc", "invalid pointer", p + 8);
    /* A freed object, kept where the compiler cannot follow it. */
    static void *volatile freed;
    freed = opaque_ptr(malloc(opaque(200)));
    free(freed);
    expect_report(realloc_freed, freed, "realloc", "use after free of", freed);
    /* A freed large object too (its pages are free, not kept by a cache). */
    freed = opaque_ptr(malloc(opaque(100000)));
    free(freed);
    expect_report(realloc_freed, freed, "realloc", "use after free of", freed);
    free(p);
}

static void test_memalign(void **state)
{
    (void)state;
    static const size_t aligns[] = {32, 64, 256, 4096, 8192, 65536};
    static const size_t sizes[] = {1, 100, 4096, 8192, 40000};
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            void *p = NULL;
            assert_int_equal(posix_memalign(&p, aligns[a], sizes[s]), 0);
            assert_int_equal((uintptr_t)p % aligns[a], 0);
            assert_int_equal(malloc_usable_size(p), sizes[s]);
            memset(p, 7, sizes[s]);
            expect_report(overflow_by_one_then_free, p, "free", "buffer overflow of", p);
            free(p);
            char *q = memalign(aligns[a], sizes[s]);
            assert_int_equal((uintptr_t)q % aligns[a], 0);
            expect_report(double_free, q, "free", "double free of", q);
            free(q);
        }
}

static void test_calloc_zero_and_canary(void **state)
{
    (void)state;
    static const size_t counts[] = {1, 3, 1000, 50000};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        size_t n = counts[i] * 10;
        unsigned char *p = calloc(counts[i], 10);
        assert_non_null(p);
        assert_int_equal(malloc_usable_size(p), n);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(p[k], 0);
        expect_report(overflow_by_one_then_free, p, "free", "buffer overflow of", p);
        free(p);
    }
}

/* ---- correct use -------------------------------------------------------------------- */

static void busy_and_correct(void *arg)
{
    (void)arg;
    enum { N = 3000 };
    static char *objs[N];
    static size_t len[N];
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            if (objs[i] != NULL && (x & 3) == 0) {
                size_t n = (size_t)(x >> 20) % 70000;
                char *q = realloc(objs[i], n);
                if (q == NULL && n != 0)
                    _exit(2);
                objs[i] = q;
                len[i] = n;
                if (q)
                    memset(q, i & 0xff, n);
            } else if (objs[i] != NULL) {
                for (size_t k = 0; k < len[i]; k++)
                    if (objs[i][k] != (char)(i & 0xff))
                        _exit(3);
                free(objs[i]);
                objs[i] = NULL;
            } else {
                /* Often exactly a class size, so the canary is the
                 * padding checked mode adds. */
                size_t n = (x & 8) ? 16 * ((x >> 8) % 64 + 1) : (size_t)(x >> 24) % 40000;
                switch ((x >> 4) & 3) {
                case 0: objs[i] = malloc(n); break;
                case 1: objs[i] = calloc(1, n); break;
                case 2: objs[i] = memalign(64, n); break;
                default:
                    if (posix_memalign((void **)&objs[i], 4096, n) != 0)
                        _exit(4);
                }
                if (objs[i] == NULL)
                    _exit(5);
                if (malloc_usable_size(objs[i]) != n)
                    _exit(6);
                len[i] = n;
                memset(objs[i], i & 0xff, n);
            }
        }
    }
    for (int i = 0; i < N; i++)
        free(objs[i]);
}

static void test_correct_use_is_silent(void **state)
{
    (void)state;
    expect_clean(busy_and_correct, NULL);
}

static void test_stats_invariants(void **state)
{
    (void)state;
    struct sm_memstats a, b;
    sm_read_memstats(&a);
    enum { N = 500 };
    void *objs[N];
    for (int i = 0; i < N; i++)
        objs[i] = malloc((size_t)(i * 97) % 50000);
    sm_read_memstats(&b);
    assert_true(b.mallocs - a.mallocs >= N);
    assert_true(b.heap_alloc <= b.heap_inuse);
    for (int i = 0; i < N; i++)
        free(objs[i]);
    sm_free_os_memory();
    sm_read_memstats(&b);
    assert_int_equal(b.heap_inuse + b.heap_idle, b.heap_sys);
    assert_true(b.heap_released <= b.heap_idle);
    assert_true(b.heap_alloc <= b.heap_inuse);
    assert_int_equal(b.heap_objects, b.mallocs - b.frees);
    assert_int_equal(b.sys, b.heap_sys + b.mspan_sys + b.mcache_sys + b.other_sys);
    assert_true(b.frees - a.frees >= N);
}

/* ---- the option ----------------------------------------------------------------------- */

static char self_path[4096];

/* Run this program as "--usable" with SPANMALLOC_CHECK=value; its stdout
 * (malloc_usable_size(malloc(10))) in *usable, its stderr in o. */
static void run_usable(const char *value, size_t *usable, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    int out[2], err[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(err), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        setenv("SPANMALLOC_CHECK", value, 1);
        execl(self_path, self_path, "--usable", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    char buf[64] = {0};
    ssize_t n = read(out[0], buf, sizeof buf - 1);
    ssize_t m;
    while ((m = read(err[0], o->err + o->errlen, sizeof o->err - 1 - o->errlen)) > 0)
        o->errlen += (size_t)m;
    close(out[0]);
    close(err[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(n > 0);
    *usable = (size_t)strtoull(buf, NULL, 10);
}

static void test_option_values(void **state)
{
    (void)state;
    size_t usable;
    struct outcome o;
    run_usable("1", &usable, &o);
    assert_int_equal(usable, 10);
    assert_int_equal(o.errlen, 0);
    run_usable("0", &usable, &o);
    assert_int_equal(usable, 16);
    assert_int_equal(o.errlen, 0);
    /* Every boolean takes the same words (options.c). */
    run_usable("yes", &usable, &o);
    assert_int_equal(usable, 10);
    assert_int_equal(o.errlen, 0);
    run_usable("off", &usable, &o);
    assert_int_equal(usable, 16);
    assert_int_equal(o.errlen, 0);
    run_usable("maybe", &usable, &o);
    assert_int_equal(usable, 16);
    if (strcmp(o.err, "spanmalloc: SPANMALLOC_CHECK: ignoring bad value maybe\n") != 0)
        fail_msg("expected one warning line, got \"%s\"", o.err);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--usable") == 0) {
        printf("%zu\n", malloc_usable_size(opaque_ptr(malloc(opaque(10)))));
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n <= 0)
        return 99;
    self_path[n] = '\0';
    const char *mode = getenv("SPANMALLOC_CHECK");
    if (mode == NULL || strcmp(mode, "1") != 0) {
        setenv("SPANMALLOC_CHECK", "1", 1);
        execv(self_path, argv);
        return 98;
    }
    if (dlsym(RTLD_DEFAULT, "sm_version") == NULL || malloc_usable_size(opaque_ptr(malloc(opaque(10)))) != 10) {
        fprintf(stderr, "test_check: spanmalloc is not in checked mode\n");
        return 97;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overflow_found_at_free),
        cmocka_unit_test(test_overflow_found_at_next_malloc_from_span),
        cmocka_unit_test(test_stray_write_in_slack_found_at_free),
        cmocka_unit_test(test_double_free),
        cmocka_unit_test(test_write_after_free),
        cmocka_unit_test(test_overflow_into_free_neighbour),
        cmocka_unit_test(test_interior_and_foreign_pointers),
        cmocka_unit_test(test_large_objects),
        cmocka_unit_test(test_large_reuse_gets_a_canary),
        cmocka_unit_test(test_realloc_keeps_a_canary),
        cmocka_unit_test(test_realloc_errors),
        cmocka_unit_test(test_memalign),
        cmocka_unit_test(test_calloc_zero_and_canary),
        cmocka_unit_test(test_correct_use_is_silent),
        cmocka_unit_test(test_stats_invariants),
        cmocka_unit_test(test_option_values),
    };
    return cmocka_run_group_tests_name("check", tests, NULL, NULL);
}
