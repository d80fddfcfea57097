/*
 * test_stress.c - many threads allocating, resizing and freeing at once,
 * every byte checked.
 *
 * Eight threads (STRESS_THREADS, 1 to 64) each keep a table of live objects and, op after op, pick a
 * slot at random: an empty slot gets a new object (malloc, calloc, memalign
 * or posix_memalign, size from 0 to 1 MiB, most small, a heavy tail of large
 * ones); a full one is checked and then freed, resized with realloc (the
 * kept prefix is checked, then the whole object is filled anew), or handed
 * to another thread through a shared exchange table (the thread that takes
 * it checks and frees it: the cross-thread free).
 *
 * Each object is filled with a pattern derived from its address, its size
 * and a tag unique to the object, so two objects that overlap, an object
 * handed out twice, a lost byte in realloc or a free-list link written into
 * live memory all show as a mismatch.
 *
 * Meanwhile a monitor thread reads the MemStats every few milliseconds and
 * checks what spanmalloc.h promises while threads run: no count goes
 * negative (frees never exceed mallocs, heap_alloc never exceeds
 * total_alloc), the cumulative counters never go backwards, and the heap's
 * pages add up; every tenth read it calls sm_free_os_memory, so caches are
 * flushed and idle pages released while the workers allocate into them.
 * Over glibc (below) the monitor does the same with mallinfo2 and
 * malloc_trim(0).
 *
 * The run is a number of operations, not a time: STRESS_OPS (default
 * 8,000,000, about 10 to 20 seconds on 2 cores) split between the threads.
 * STRESS_SEED changes the random sequence.  With STRESS_SECONDS set, the run
 * is a time instead: every thread works until that many seconds have passed
 * (scripts/ci-long.sh runs it for minutes; STRESS_THREADS sets the threads).
 * test_stress_checked.sh runs it again in checked mode (SPANMALLOC_CHECK=1),
 * where any report is a false one and aborts the run.  The totals go out as a TAP
 * diagnostic line.
 *
 * Built with -DSTRESS_LIBC_MALLOC (tests/stress/test_stress_libc, made on
 * demand) the same program runs over glibc's malloc, so the long runs can
 * compare speed and peak RSS; that build checks that spanmalloc is absent.
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "spanmalloc.h"
#include "../common/pattern.h"

enum {
    DEFAULT_THREADS = 8,
    MAX_THREADS = 64,
    CLOCK_EVERY = 1024,  /* ops between two looks at the clock in a timed run */
    SLOTS = 1000,        /* live objects per thread, at most */
    EXCHANGE = 256,      /* objects in transit between threads, at most */
    DEFAULT_OPS = 8000000,
};

/* ---- objects and their patterns ------------------------------------------------ */

struct obj {
    void *p;
    size_t size;
    uint64_t key;   /* from address, size and tag when the object was filled */
};

static uint64_t make_key(const void *p, size_t size, uint64_t tag)
{
    uint64_t k = ((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15u ^ size * 0xff51afd7ed558ccdu ^ tag;
    return k ^ (k >> 29);
}

/* pattern_fill and pattern_mismatch: tests/common/pattern.h. */

/* ---- failures, collected from every thread -------------------------------------- */

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static long nfailures;
static char first_failure[256];

static void record_failure(const char *fmt, ...)
{
    pthread_mutex_lock(&fail_lock);
    if (nfailures++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_failure, sizeof first_failure, fmt, ap);
        va_end(ap);
        /* Now, too: a corrupt heap may crash the run before it reports. */
        fprintf(stderr, "test_stress: %s\n", first_failure);
    }
    pthread_mutex_unlock(&fail_lock);
}

static void check_obj(const struct obj *o, size_t len, const char *when)
{
    size_t bad = pattern_mismatch(o->p, len, o->key);
    if (bad != SIZE_MAX)
        record_failure("%s: object %p (%zu bytes) differs at offset %zu", when, o->p, o->size, bad);
}

/* ---- the exchange between threads ------------------------------------------------ */

static pthread_mutex_t exchange_lock = PTHREAD_MUTEX_INITIALIZER;
static struct obj exchange[EXCHANGE];

/* ---- a thread -------------------------------------------------------------------- */

struct counts {
    uint64_t ops, mallocs, callocs, memaligns, frees, reallocs, handoffs, remote_frees;
    uint64_t large;   /* objects over 32 KiB */
};

struct worker {
    int id;
    uint64_t rng;
    uint64_t nops;
    uint64_t deadline_ns;   /* a timed run: stop then (CLOCK_MONOTONIC); 0: run nops */
    uint64_t next_tag;
    struct counts n;
    struct obj slot[SLOTS];
};

static uint64_t rnd(struct worker *w)
{
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* 0 .. 1 MiB: 60% up to 128 bytes, 25% up to 2 KiB, 10% up to 32 KiB,
 * 4% up to 256 KiB, 1% up to 1 MiB. */
static size_t random_size(struct worker *w)
{
    uint64_t r = rnd(w) % 100;
    if (r < 60)
        return rnd(w) % 129;
    if (r < 85)
        return 129 + rnd(w) % (2048 - 128);
    if (r < 95)
        return 2049 + rnd(w) % (32768 - 2048);
    if (r < 99)
        return 32769 + rnd(w) % (262144 - 32768);
    return 262145 + rnd(w) % ((1 << 20) - 262144 + 1);
}

static void fill_new(struct worker *w, struct obj *o)
{
    o->key = make_key(o->p, o->size, ((uint64_t)w->id << 48) | w->next_tag++);
    pattern_fill(o->p, o->size, o->key);
    if (o->size > 32768)
        w->n.large++;
}

static void op_alloc(struct worker *w, struct obj *o)
{
    size_t size = random_size(w);
    uint64_t how = rnd(w) % 10;
    void *p;
    if (how < 6) {
        p = malloc(size);
        w->n.mallocs++;
    } else if (how < 8) {
        p = calloc(1, size);
        w->n.callocs++;
        if (p != NULL) {
            const uint8_t *c = p;
            for (size_t i = 0; i < size; i++)
                if (c[i] != 0) {
                    record_failure("calloc(1, %zu) = %p: byte %zu is %#x", size, p, i, c[i]);
                    break;
                }
        }
    } else {
        size_t align = (size_t)16 << (rnd(w) % 9);   /* 16 .. 4096 */
        if (rnd(w) % 8 == 0)
            align = (size_t)8192 << (rnd(w) % 4);    /* up to 64 KiB */
        if (how == 8) {
            p = memalign(align, size);
        } else if (posix_memalign(&p, align, size) != 0) {
            p = NULL;
        }
        w->n.memaligns++;
        if (p != NULL && ((uintptr_t)p & (align - 1)) != 0)
            record_failure("aligned allocation of %zu bytes at %zu: %p", size, align, p);
    }
    if (p == NULL) {
        record_failure("allocation of %zu bytes failed: %s", size, strerror(errno));
        return;
    }
    if (malloc_usable_size(p) < size)
        record_failure("%p: usable %zu < %zu", p, malloc_usable_size(p), size);
    o->p = p;
    o->size = size;
    fill_new(w, o);
}

static void op_realloc(struct worker *w, struct obj *o)
{
    check_obj(o, o->size, "before realloc");
    size_t size = random_size(w);
    void *q = realloc(o->p, size);
    if (q == NULL && size != 0) {
        record_failure("realloc(%p, %zu) failed: %s", o->p, size, strerror(errno));
        return;
    }
    w->n.reallocs++;
    if (size == 0) {   /* realloc(p, 0) freed it */
        o->p = NULL;
        return;
    }
    struct obj moved = {q, size, o->key};
    size_t keep = o->size < size ? o->size : size;
    size_t bad = pattern_mismatch(q, keep, o->key);
    if (bad != SIZE_MAX)
        record_failure("realloc(%p, %zu -> %zu) = %p lost byte %zu", o->p, o->size, size, q, bad);
    *o = moved;
    fill_new(w, o);
}

static void op_handoff(struct worker *w, struct obj *o)
{
    check_obj(o, o->size, "before handoff");
    uint64_t i = rnd(w) % EXCHANGE;
    pthread_mutex_lock(&exchange_lock);
    struct obj got = exchange[i];
    exchange[i] = *o;
    pthread_mutex_unlock(&exchange_lock);
    o->p = NULL;
    w->n.handoffs++;
    if (got.p != NULL) {
        check_obj(&got, got.size, "received from another thread");
        free(got.p);
        w->n.remote_frees++;
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (uint64_t k = 0; w->deadline_ns != 0 || k < w->nops; k++) {
        if (w->deadline_ns != 0 && k % CLOCK_EVERY == 0 && now_ns() >= w->deadline_ns)
            break;
        struct obj *o = &w->slot[rnd(w) % SLOTS];
        if (o->p == NULL) {
            op_alloc(w, o);
        } else {
            uint64_t r = rnd(w) % 100;
            if (r < 55) {
                check_obj(o, o->size, "before free");
                free(o->p);
                o->p = NULL;
                w->n.frees++;
            } else if (r < 80) {
                op_realloc(w, o);
            } else {
                op_handoff(w, o);
            }
        }
        w->n.ops++;
    }
    for (int i = 0; i < SLOTS; i++) {
        struct obj *o = &w->slot[i];
        if (o->p != NULL) {
            check_obj(o, o->size, "at the end");
            free(o->p);
            o->p = NULL;
            w->n.frees++;
        }
    }
    return NULL;
}

/* ---- the monitor: stats read while the workers run ------------------------------ */

static int workers_done;
static uint64_t monitor_reads, monitor_releases;

static void *monitor_main(void *arg)
{
    (void)arg;
#ifdef STRESS_LIBC_MALLOC
    /* The same work over glibc, so that the two builds' speeds compare:
     * its statistics (mallinfo2) at the same pace, and every tenth read its
     * nearest to sm_free_os_memory, malloc_trim(0), which gives the free
     * memory of every arena back to the OS. */
    while (!__atomic_load_n(&workers_done, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        struct mallinfo2 mi = mallinfo2();
        monitor_reads++;
        if (mi.uordblks > mi.arena + mi.hblkhd)
            record_failure("glibc stats: in use %zu > arena %zu + mmapped %zu", mi.uordblks,
                           mi.arena, mi.hblkhd);
        if (monitor_reads % 10 == 0) {
            malloc_trim(0);
            monitor_releases++;
        }
    }
#else
    struct sm_memstats prev, cur;
    sm_read_memstats(&prev);
    while (!__atomic_load_n(&workers_done, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        sm_read_memstats(&cur);
        monitor_reads++;
        if (cur.frees > cur.mallocs)
            record_failure("stats: frees %llu > mallocs %llu", (unsigned long long)cur.frees,
                           (unsigned long long)cur.mallocs);
        if (cur.heap_alloc > cur.total_alloc)
            record_failure("stats: heap_alloc %llu > total_alloc %llu",
                           (unsigned long long)cur.heap_alloc, (unsigned long long)cur.total_alloc);
        if (cur.heap_inuse + cur.heap_idle != cur.heap_sys || cur.heap_released > cur.heap_idle)
            record_failure("stats: heap pages do not add up: inuse %llu idle %llu released %llu "
                           "sys %llu", (unsigned long long)cur.heap_inuse,
                           (unsigned long long)cur.heap_idle, (unsigned long long)cur.heap_released,
                           (unsigned long long)cur.heap_sys);
        if (cur.mallocs < prev.mallocs || cur.frees < prev.frees ||
            cur.total_alloc < prev.total_alloc || cur.released_total < prev.released_total)
            record_failure("stats: a cumulative counter went backwards (mallocs %llu -> %llu, "
                           "frees %llu -> %llu, total_alloc %llu -> %llu)",
                           (unsigned long long)prev.mallocs, (unsigned long long)cur.mallocs,
                           (unsigned long long)prev.frees, (unsigned long long)cur.frees,
                           (unsigned long long)prev.total_alloc,
                           (unsigned long long)cur.total_alloc);
        prev = cur;
        if (monitor_reads % 10 == 0) {
            sm_free_os_memory();
            monitor_releases++;
        }
    }
#endif
    return NULL;
}

static uint64_t env_u64(const char *name, uint64_t def)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0')
        return def;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0')
        return def;
    return v;
}

static void test_stress(void **state)
{
    (void)state;
#ifdef STRESS_LIBC_MALLOC
    const char *allocator = "glibc";
    assert_null(dlsym(RTLD_DEFAULT, "sm_version"));
#else
    const char *allocator = "spanmalloc";
    assert_non_null(dlsym(RTLD_DEFAULT, "sm_version"));
    /* Under SPANMALLOC_CHECK=1 (test_stress_checked.sh) make sure checked
     * mode is on: there the usable size is the requested size. */
    const char *check = getenv("SPANMALLOC_CHECK");
    if (check != NULL && strcmp(check, "1") == 0) {
        void *probe = malloc(10);
        assert_int_equal(malloc_usable_size(probe), 10);
        free(probe);
    }
#endif
    uint64_t total = env_u64("STRESS_OPS", DEFAULT_OPS);
    uint64_t seed = env_u64("STRESS_SEED", 1);
    uint64_t seconds = env_u64("STRESS_SECONDS", 0);
    uint64_t nthreads = env_u64("STRESS_THREADS", DEFAULT_THREADS);
    if (nthreads < 1 || nthreads > MAX_THREADS) {
        print_message("# STRESS_THREADS=%llu is not in 1..%d; using %d\n",
                      (unsigned long long)nthreads, MAX_THREADS, DEFAULT_THREADS);
        nthreads = DEFAULT_THREADS;
    }
    static struct worker workers[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t monitor;
    __atomic_store_n(&workers_done, 0, __ATOMIC_RELAXED);
    assert_int_equal(pthread_create(&monitor, NULL, monitor_main, NULL), 0);
    uint64_t deadline = seconds != 0 ? now_ns() + seconds * 1000000000u : 0;
    for (uint64_t i = 0; i < nthreads; i++) {
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].id = (int)i;
        workers[i].rng = seed * 0x100000001b3u + i * 0x9e3779b97f4a7c15u;
        workers[i].nops = total / nthreads + (i < total % nthreads);
        workers[i].deadline_ns = deadline;
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &workers[i]), 0);
    }
    struct counts sum = {0};
    for (uint64_t i = 0; i < nthreads; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        struct counts *c = &workers[i].n;
        sum.ops += c->ops;
        sum.mallocs += c->mallocs;
        sum.callocs += c->callocs;
        sum.memaligns += c->memaligns;
        sum.frees += c->frees;
        sum.reallocs += c->reallocs;
        sum.handoffs += c->handoffs;
        sum.remote_frees += c->remote_frees;
        sum.large += c->large;
    }
    __atomic_store_n(&workers_done, 1, __ATOMIC_RELEASE);
    assert_int_equal(pthread_join(monitor, NULL), 0);
    /* What is still in the exchange was handed off and never taken. */
    for (int i = 0; i < EXCHANGE; i++) {
        if (exchange[i].p != NULL) {
            check_obj(&exchange[i], exchange[i].size, "left in the exchange");
            free(exchange[i].p);
            exchange[i].p = NULL;
            sum.remote_frees++;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("# stress: %llu operations by %d threads in %.1f s (seed %llu, %s, %.0f ops/s): "
                  "%llu malloc, %llu calloc, %llu aligned, %llu realloc, %llu free, "
                  "%llu handed off, %llu freed by another thread, %llu over 32 KiB; "
                  "stats read %llu times, released %llu times\n",
                  (unsigned long long)sum.ops, (int)nthreads, secs, (unsigned long long)seed,
                  allocator, secs > 0 ? (double)sum.ops / secs : 0.0,
                  (unsigned long long)sum.mallocs, (unsigned long long)sum.callocs,
                  (unsigned long long)sum.memaligns, (unsigned long long)sum.reallocs,
                  (unsigned long long)sum.frees, (unsigned long long)sum.handoffs,
                  (unsigned long long)sum.remote_frees, (unsigned long long)sum.large,
                  (unsigned long long)monitor_reads, (unsigned long long)monitor_releases);
    if (nfailures != 0)
        fail_msg("%ld failures; the first: %s", nfailures, first_failure);
    if (seconds == 0)
        assert_int_equal(sum.ops, total);
    else
        assert_true(sum.ops > 0);
    /* Every handoff was freed by some thread. */
    assert_int_equal(sum.remote_frees, sum.handoffs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress),
    };
    return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}
