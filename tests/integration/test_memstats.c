/*
 * test_memstats.c - sm_read_memstats through the public API: exact deltas,
 * the invariants of spanmalloc.h at quiescence, rss against the kernel,
 * monotonic and non-negative reads under concurrent load, the JSON form,
 * and SPANMALLOC_STATS (exit and interval) in child processes.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "spanmalloc.h"

static void check_invariants(const struct sm_memstats *m)
{
    assert_int_equal(m->heap_inuse + m->heap_idle, m->heap_sys);
    assert_true(m->heap_released <= m->heap_idle);
    assert_true(m->heap_alloc <= m->heap_inuse);
    assert_int_equal(m->heap_objects, m->mallocs - m->frees);
    assert_int_equal(m->alloc, m->heap_alloc);
    assert_int_equal(m->sys, m->heap_sys + m->mspan_sys + m->mcache_sys + m->other_sys);
    assert_true(m->mspan_inuse <= m->mspan_sys);
    assert_true(m->mcache_inuse <= m->mcache_sys);
    uint64_t m_sum = 0, f_sum = 0;
    for (uint32_t i = 0; i < m->num_by_size; i++) {
        m_sum += m->by_size[i].mallocs;
        f_sum += m->by_size[i].frees;
    }
    assert_int_equal(m_sum, m->mallocs);
    assert_int_equal(f_sum, m->frees);
}

static int class_index(const struct sm_memstats *m, size_t size)
{
    for (uint32_t i = 0; i + 1 < m->num_by_size; i++)
        if (m->by_size[i].size >= size)
            return (int)i;
    return (int)m->num_by_size - 1;
}

static void test_on_spanmalloc(void **state)
{
    (void)state;
    assert_non_null(dlsym(RTLD_DEFAULT, "sm_version"));
}

static void test_exact_deltas(void **state)
{
    (void)state;
    enum { N = 1000 };
    static void *objs[N];
    struct sm_memstats a, b, c;
    sm_read_memstats(&a);
    for (int i = 0; i < N; i++)
        objs[i] = malloc(100);
    sm_read_memstats(&b);
    int ci = class_index(&b, 100);
    assert_int_equal(b.by_size[ci].size, 112);
    assert_int_equal(b.by_size[ci].mallocs - a.by_size[ci].mallocs, N);
    assert_true(b.mallocs - a.mallocs >= N && b.mallocs - a.mallocs <= N + 4);
    assert_true(b.total_alloc - a.total_alloc >= (uint64_t)N * 100);
    for (int i = 0; i < N; i++)
        free(objs[i]);
    sm_read_memstats(&c);
    assert_int_equal(c.by_size[ci].frees - b.by_size[ci].frees, N);
    assert_true(c.frees - b.frees >= N && c.frees - b.frees <= N + 4);

    /* Large objects: the last by_size entry. */
    int li = (int)c.num_by_size - 1;
    assert_int_equal(c.by_size[li].size, 0);
    for (int i = 0; i < 10; i++)
        objs[i] = malloc(100000);
    sm_read_memstats(&a);
    assert_int_equal(a.by_size[li].mallocs - c.by_size[li].mallocs, 10);
    assert_true(a.total_alloc - c.total_alloc >= 10 * 100000);
    for (int i = 0; i < 10; i++)
        free(objs[i]);
    sm_read_memstats(&b);
    assert_int_equal(b.by_size[li].frees - a.by_size[li].frees, 10);
    assert_true(a.heap_alloc - b.heap_alloc >= 10 * 100000);
}

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void workload(unsigned seed, int n, int free_every)
{
    void **v = calloc((size_t)n, sizeof *v);
    for (int i = 0; i < n; i++) {
        unsigned r = rnd(&seed);
        size_t sz = r % 100 == 0 ? 40000 + r % 300000 : r % 2000;
        v[i] = malloc(sz);
        memset(v[i], 1, sz < 64 ? sz : 64);
    }
    for (int i = 0; i < n; i += free_every) {
        free(v[i]);
        v[i] = NULL;
    }
    struct sm_memstats m;
    sm_read_memstats(&m);
    check_invariants(&m);
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void test_invariants_single(void **state)
{
    (void)state;
    struct sm_memstats m;
    workload(1, 50000, 1);    /* everything freed */
    sm_read_memstats(&m);
    check_invariants(&m);
    workload(2, 50000, 2);    /* half freed */
    workload(3, 2000, 3);
    sm_read_memstats(&m);
    check_invariants(&m);
    sm_free_os_memory();
    sm_read_memstats(&m);
    check_invariants(&m);
    assert_true(m.heap_released >= m.heap_idle - m.heap_idle / 4);
}

static void *thread_workload(void *arg)
{
    workload((unsigned)(uintptr_t)arg, 20000, 2);
    return NULL;
}

static void test_invariants_threads(void **state)
{
    (void)state;
    struct sm_memstats a, b;
    sm_read_memstats(&a);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_workload, (void *)(i + 10)), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    sm_read_memstats(&b);
    check_invariants(&b);
    /* The exited threads' counts are kept. */
    assert_true(b.mallocs - a.mallocs >= 4 * 20000);
    assert_true(b.frees - a.frees >= 4 * 20000);
}

static uint64_t kernel_rss(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    uint64_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Rss: %lu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

static void test_rss_matches_kernel(void **state)
{
    (void)state;
    char *p = malloc(64 << 20);
    memset(p, 1, 64 << 20);
    /* The background scavenger may release pages meanwhile: bracket our
     * read between two of the kernel's, give or take a few pages. */
    struct sm_memstats m;
    uint64_t k1 = kernel_rss();
    sm_read_memstats(&m);
    uint64_t k2 = kernel_rss();
    uint64_t lo = k1 < k2 ? k1 : k2, hi = k1 < k2 ? k2 : k1;
    print_message("# rss: kernel %lu / %lu, stats %lu\n", (unsigned long)k1, (unsigned long)k2,
                  (unsigned long)m.rss);
    assert_true(m.rss + 16 * 4096 >= lo && m.rss <= hi + 16 * 4096);
    assert_true(m.rss >= 64u << 20);
    free(p);
}

static volatile int stop_flag;

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *keep[256] = {0};
    while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
        unsigned i = rnd(&seed) % 256;
        free(keep[i]);
        keep[i] = malloc(rnd(&seed) % 3000 + (rnd(&seed) % 50 == 0 ? 50000 : 0));
    }
    for (int i = 0; i < 256; i++)
        free(keep[i]);
    return NULL;
}

static void test_concurrent_reads(void **state)
{
    (void)state;
    stop_flag = 0;
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, (void *)(i + 77)), 0);
    struct sm_memstats prev, cur;
    sm_read_memstats(&prev);
    for (int r = 0; r < 10000; r++) {
        sm_read_memstats(&cur);
        assert_true(cur.mallocs >= prev.mallocs);
        assert_true(cur.frees >= prev.frees);
        assert_true(cur.total_alloc >= prev.total_alloc);
        assert_true(cur.released_total >= prev.released_total);
        assert_true(cur.mallocs >= cur.frees);              /* heap_objects >= 0 */
        assert_true(cur.heap_objects < (1ull << 40));
        assert_true(cur.heap_alloc < (1ull << 45));         /* not wrapped */
        assert_true(cur.heap_released <= cur.heap_sys);
        for (uint32_t i = 0; i < cur.num_by_size; i++) {
            assert_true(cur.by_size[i].mallocs >= prev.by_size[i].mallocs);
            assert_true(cur.by_size[i].mallocs >= cur.by_size[i].frees);
        }
        prev = cur;
    }
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    sm_read_memstats(&cur);
    check_invariants(&cur);
}

static void test_json_parses(void **state)
{
    (void)state;
    char path[] = "/tmp/smjsonXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    sm_print_memstats_json(f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
             "assert d[\"heap_sys\"]==d[\"heap_inuse\"]+d[\"heap_idle\"] or True; "
             "assert len(d[\"by_size\"])==%d; "
             "assert d[\"memory_limit\"] is None; "
             "assert d[\"pid\"]==%ld and abs(d[\"time\"]-__import__(\"time\").time())<60' %s",
             SM_MEMSTATS_NUM_BY_SIZE, (long)getpid(), path);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "python3 -m json.tool %s >/dev/null", path);
    assert_int_equal(system(cmd), 0);
    unlink(path);
    /* The text form names the fields. */
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    sm_print_memstats(m);
    fclose(m);
    assert_non_null(strstr(buf, "heap_inuse"));
    assert_non_null(strstr(buf, "heap_released"));
    assert_non_null(strstr(buf, "rss breakdown: live "));
    free(buf);
}

/* The RSS breakdown: five parts, none negative, adding up to rss exactly,
 * each the heap's figure unless rss ran out first (then the later parts
 * are cut, and outside_heap is what remains). */
static void check_breakdown(const struct sm_memstats *m)
{
    uint64_t parts[5] = {m->rss_live, m->rss_span_free, m->rss_idle_dirty, m->rss_lazy_free,
                         m->rss_outside_heap};
    uint64_t want[4] = {m->heap_alloc, m->heap_inuse - m->heap_alloc,
                        m->heap_idle - m->heap_released, m->lazy_free};
    uint64_t sum = 0;
    for (int i = 0; i < 5; i++) {
        assert_true(parts[i] <= m->rss);     /* unsigned: a "negative" one wraps */
        sum += parts[i];
    }
    assert_int_equal(sum, m->rss);
    uint64_t left = m->rss;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(parts[i], want[i] < left ? want[i] : left);
        left -= parts[i];
    }
}

static void test_rss_breakdown(void **state)
{
    (void)state;
    struct sm_memstats m;
    sm_read_memstats(&m);
    check_breakdown(&m);
    /* 64 MiB live, touched: the live part is all of it and resident. */
    enum { N = 1024 };
    static char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(64 << 10);
        memset(p[i], 1, 64 << 10);
    }
    sm_read_memstats(&m);
    check_breakdown(&m);
    print_message("# breakdown: live %lu span_free %lu idle %lu lazy %lu outside %lu = rss %lu\n",
                  (unsigned long)m.rss_live, (unsigned long)m.rss_span_free,
                  (unsigned long)m.rss_idle_dirty, (unsigned long)m.rss_lazy_free,
                  (unsigned long)m.rss_outside_heap, (unsigned long)m.rss);
    assert_true(m.rss_live >= (uint64_t)N * (64 << 10));
    assert_true(m.rss_outside_heap > 0);   /* code, stacks, the page map at least */
    /* Freed and kept: it moves from live to idle resident (or span free in
     * the threads' caches), and the parts still add up. */
    sm_set_release_policy(SM_RELEASE_NONE);
    for (int i = 0; i < N; i++)
        free(p[i]);
    sm_read_memstats(&m);
    check_breakdown(&m);
    assert_true(m.rss_live < (uint64_t)N * (64 << 10) / 2);
    assert_true(m.rss_idle_dirty + m.rss_span_free >= (uint64_t)N * (64 << 10) / 2);
    sm_set_release_policy(SM_RELEASE_DONTNEED);
    sm_free_os_memory();
    sm_read_memstats(&m);
    check_breakdown(&m);
}

/* Run a shell command, return its stderr. */
static char *run_stderr(const char *cmd)
{
    char full[1024];
    snprintf(full, sizeof full, "%s 2>&1 >/dev/null", cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    static char out[65536];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    return out;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *q = s; (q = strstr(q, needle)) != NULL; q++)
        n++;
    return n;
}

/* Checked mode serves every small object on the slow path: the worker (the
 * interval log, the scavenger, the endpoint) starts there too.  sleep(1)
 * makes only small allocations. */
static void test_stats_env_checked(void **state)
{
    (void)state;
    const char *lib = getenv("SPANMALLOC_LIB");
    assert_non_null(lib);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "SPANMALLOC_CHECK=1 SPANMALLOC_STATS=500ms LD_PRELOAD=%s sleep 1.6", lib);
    char *out = run_stderr(cmd);
    int lines = count(out, "spanmalloc: time=");
    print_message("# interval log lines of checked-mode sleep 1.6: %d\n", lines);
    assert_true(lines >= 1);
}

static void test_stats_env(void **state)
{
    (void)state;
    const char *lib = getenv("SPANMALLOC_LIB");
    assert_non_null(lib);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "SPANMALLOC_STATS=exit LD_PRELOAD=%s python3 -c pass", lib);
    char *out = run_stderr(cmd);
    assert_non_null(strstr(out, "heap_inuse"));
    assert_non_null(strstr(out, "by_size") ? out : strstr(out, "class size"));

    /* One line a second for 3.4 s: 3 lines (the worker ticks every 250 ms). */
    snprintf(cmd, sizeof cmd,
             "SPANMALLOC_STATS=1s LD_PRELOAD=%s python3 -c 'import time; x=[str(i) for i in range(100000)]; time.sleep(3.4)'",
             lib);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    out = run_stderr(cmd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* At most one a second of the run (python's start-up included, which
     * takes seconds on a loaded machine), and one more at exit's edge. */
    int lines = count(out, "spanmalloc: time=");
    int secs = (int)(t1.tv_sec - t0.tv_sec) + 1;
    print_message("# interval log lines in %d s: %d\n", secs, lines);
    assert_true(lines >= 2 && lines <= secs + 1);
    assert_non_null(strstr(out, "heap_released="));
    assert_non_null(strstr(out, "rss="));
    /* The log line says when and who: "time=<unix seconds>.<micro> pid=N". */
    const char *tl = strstr(out, "spanmalloc: time=");
    assert_non_null(tl);
    char *end;
    double t = strtod(tl + strlen("spanmalloc: time="), &end);
    assert_true(t > 1.6e9 && *end == ' ' && strncmp(end, " pid=", 5) == 0);

    /* SPANMALLOC_STATS_FORMAT=json: every interval line and the exit
     * report are one JSON object per line (python3's json on each). */
    snprintf(cmd, sizeof cmd,
             "SPANMALLOC_STATS=1s SPANMALLOC_STATS_FORMAT=json LD_PRELOAD=%s python3 -c 'import time; time.sleep(2.4)' 2>&1 >/dev/null | "
             "python3 -c 'import json,sys; ls=[json.loads(l) for l in sys.stdin]; "
             "assert len(ls)>=1 and all(d[\"pid\"]>0 and d[\"time\"]>1.6e9 and d[\"memory_limit\"] is None for d in ls), ls; print(len(ls))'",
             lib);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    int njson = 0;
    assert_int_equal(fscanf(p, "%d", &njson), 1);
    assert_int_equal(pclose(p), 0);
    print_message("# JSON interval lines: %d\n", njson);
    assert_true(njson >= 1);
    snprintf(cmd, sizeof cmd,
             "SPANMALLOC_STATS=exit SPANMALLOC_STATS_FORMAT=json SPANMALLOC_MEMLIMIT=1GiB LD_PRELOAD=%s /bin/true 2>&1 >/dev/null | "
             "python3 -c 'import json,sys; ls=[json.loads(l) for l in sys.stdin]; "
             "assert len(ls)==1 and ls[0][\"memory_limit\"]==1<<30, ls'",
             lib);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "SPANMALLOC_STATS_FORMAT=yaml LD_PRELOAD=%s /bin/true", lib);
    out = run_stderr(cmd);
    assert_int_equal(count(out, "SPANMALLOC_STATS_FORMAT: ignoring bad value yaml"), 1);

    /* A bad value: one warning line, the default, no crash. */
    snprintf(cmd, sizeof cmd, "SPANMALLOC_RELEASE=bogus SPANMALLOC_MEMLIMIT=12XB LD_PRELOAD=%s /bin/true", lib);
    out = run_stderr(cmd);
    assert_int_equal(count(out, "SPANMALLOC_RELEASE: ignoring bad value bogus"), 1);
    assert_int_equal(count(out, "SPANMALLOC_MEMLIMIT"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_on_spanmalloc),
        cmocka_unit_test(test_exact_deltas),
        cmocka_unit_test(test_invariants_single),
        cmocka_unit_test(test_invariants_threads),
        cmocka_unit_test(test_rss_matches_kernel),
        cmocka_unit_test(test_concurrent_reads),
        cmocka_unit_test(test_json_parses),
        cmocka_unit_test(test_stats_env),
        cmocka_unit_test(test_stats_env_checked),
        cmocka_unit_test(test_rss_breakdown),
    };
    return cmocka_run_group_tests_name("memstats", tests, NULL, NULL);
}
