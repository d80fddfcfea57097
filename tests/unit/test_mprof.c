/*
 * test_mprof.c - the heap profiler inside the allocator (mprof.c): the
 * marks a sample leaves on its span, the buckets, the rate, and whether
 * the estimates it gives are right on average and as noisy as the
 * sampling says.
 *
 *   marks        a sampled small object puts a special on its span's list,
 *                sorted by address, and SM_PAGE_SLOW on the span's pages;
 *                the bit goes when the last special does; a large object's
 *                span carries its special without the bit.
 *   buckets      one bucket per stack and size band (sizes up to 128
 *                exactly, eight bands per power of two above), counting
 *                allocations and frees and the bytes they asked for; the
 *                stack starts at the allocating function, with at most the
 *                entry point (malloc) above it.
 *   rate         sm_set_profile_rate returns the previous rate; 0 samples
 *                nothing; 1 everything; a thread whose sampling was off
 *                picks up a new rate after at most a MiB of allocation.
 *   statistics   with rate R, the in-use bytes estimated for a known mix
 *                of small and large objects, over 40 runs: every run within
 *                5 standard deviations of the truth, their mean within 3.5
 *                standard errors, their spread within a factor of 1.6 of
 *                the one the sampling predicts.
 *   recursion    when the unwinder itself calls malloc (libgcc does, the
 *                first time it searches frames registered with
 *                __register_frame), that allocation is not sampled and
 *                nothing deadlocks.
 *   metadata     buckets and specials are counted in other_sys.
 *
 * Links the static library, so everything here runs through spanmalloc's
 * malloc; the statistics are drawn from the profiler's own snapshot and
 * profproto.c's scaling, the numbers pprof would show.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "fmath.h"
#include "internal.h"
#include "mprof.h"
#include "spanmalloc.h"
#include "stack.h"

/* ---- snapshots ------------------------------------------------------------ */

struct snap {
    struct sm_prof_record *r;
    size_t n;
};

static void snap_take(struct snap *s)
{
    assert_int_equal(sm_mprof_snapshot(&s->r, &s->n), 0);
}

static void snap_drop(struct snap *s)
{
    sm_mprof_snapshot_free(s->r, s->n);
    s->r = NULL;
    s->n = 0;
}

/* The record of the same bucket in s (buckets never move), or NULL. */
static const struct sm_prof_record *snap_find(const struct snap *s, const struct sm_prof_record *r)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->r[i].stack == r->stack)
            return &s->r[i];
    return NULL;
}

/* What changed between a and b, summed over buckets whose stack holds a
 * return address in [lo, hi) (lo == hi: every bucket). */
struct delta {
    uint64_t alloc_objects, alloc_bytes, free_objects, free_bytes;
    size_t buckets;
};

static bool stack_has(const struct sm_prof_record *r, uintptr_t lo, uintptr_t hi)
{
    if (lo == hi)
        return true;
    for (int i = 0; i < r->nstack; i++)
        if (r->stack[i] > lo && r->stack[i] <= hi)
            return true;
    return false;
}

static struct delta snap_delta(const struct snap *a, const struct snap *b, uintptr_t lo, uintptr_t hi)
{
    struct delta d = {0};
    for (size_t i = 0; i < b->n; i++) {
        const struct sm_prof_record *r = &b->r[i], *o = snap_find(a, r);
        if (!stack_has(r, lo, hi))
            continue;
        struct sm_prof_record z = {0};
        if (o == NULL)
            o = &z;
        if (r->alloc_objects != o->alloc_objects || r->free_objects != o->free_objects)
            d.buckets++;
        d.alloc_objects += r->alloc_objects - o->alloc_objects;
        d.alloc_bytes += r->alloc_bytes - o->alloc_bytes;
        d.free_objects += r->free_objects - o->free_objects;
        d.free_bytes += r->free_bytes - o->free_bytes;
    }
    return d;
}

/* ---- an allocation site we can find in a stack ------------------------------ */

#define SITE_BYTES 128   /* more than alloc_at_site's code */

__attribute__((noinline)) static void *alloc_at_site(size_t n)
{
    void *p = malloc(n);
    /* Keeps the call from being a tail jump: this frame stays. */
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

static uintptr_t site_lo(void)
{
    return (uintptr_t)alloc_at_site;
}

static uintptr_t site_hi(void)
{
    return (uintptr_t)alloc_at_site + SITE_BYTES;
}

static size_t set_rate(size_t r)
{
    return sm_set_profile_rate(r);
}

/* ---- marks --------------------------------------------------------------------- */

static bool span_has_special(struct sm_mspan *s, uintptr_t a)
{
    for (struct sm_special *sp = s->specials; sp; sp = sp->next)
        if (sp->addr == a)
            return true;
    return false;
}

static bool specials_sorted(struct sm_mspan *s)
{
    for (struct sm_special *sp = s->specials; sp && sp->next; sp = sp->next)
        if (sp->addr >= sp->next->addr)
            return false;
    return true;
}

static void test_small_object_marks_span(void **state)
{
    (void)state;
    size_t old = set_rate(1);
    void *p = alloc_at_site(48);
    void *q = alloc_at_site(48);
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    assert_non_null(s);
    assert_int_equal(s->state, SM_SPAN_SMALL);
    assert_int_equal(sm_pagemap_kind((uintptr_t)p), s->sizeclass | SM_PAGE_SLOW);
    assert_true(span_has_special(s, (uintptr_t)p));
    assert_true(specials_sorted(s));
    if (sm_pagemap_span((uintptr_t)q) == s) {
        assert_true(span_has_special(s, (uintptr_t)q));
        free(p);
        /* q still holds the span on the slow path. */
        assert_false(span_has_special(s, (uintptr_t)p));
        assert_int_equal(sm_pagemap_kind((uintptr_t)q), s->sizeclass | SM_PAGE_SLOW);
        free(q);
    } else {
        free(q);
        free(p);
    }
    assert_null(s->specials);
    assert_int_equal(sm_pagemap_kind((uintptr_t)p), s->sizeclass);
    set_rate(old);
}

static void test_specials_sorted_any_order(void **state)
{
    (void)state;
    enum { N = 300 };
    static void *objs[N];
    size_t old = set_rate(1);
    for (int i = 0; i < N; i++)
        objs[i] = alloc_at_site(96);
    for (int i = 0; i < N; i++) {
        struct sm_mspan *s = sm_pagemap_span((uintptr_t)objs[i]);
        assert_true(span_has_special(s, (uintptr_t)objs[i]));
        assert_true(specials_sorted(s));
        assert_true(sm_pagemap_kind((uintptr_t)objs[i]) & SM_PAGE_SLOW);
    }
    /* Free in a scrambled order; every list stays sorted. */
    for (int k = 0; k < N; k++) {
        int i = (k * 7919) % N;
        struct sm_mspan *s = sm_pagemap_span((uintptr_t)objs[i]);
        free(objs[i]);
        assert_false(span_has_special(s, (uintptr_t)objs[i]));
        assert_true(specials_sorted(s));
    }
    for (int i = 0; i < N; i++)
        assert_false(sm_pagemap_kind((uintptr_t)objs[i]) & SM_PAGE_SLOW);
    set_rate(old);
}

static void test_large_object_special(void **state)
{
    (void)state;
    size_t old = set_rate(1);
    struct snap a, b;
    snap_take(&a);
    void *p = alloc_at_site(300000);
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    assert_int_equal(s->state, SM_SPAN_LARGE);
    assert_int_equal(sm_pagemap_kind((uintptr_t)p), SM_PAGE_LARGE);
    /* The bucket is in the span, with no special and no lock. */
    assert_null(s->specials);
    assert_non_null(s->prof_bucket);
    free(p);
    assert_null(s->prof_bucket);
    snap_take(&b);
    /* Charged with the bytes asked for, freed once. */
    struct delta d = snap_delta(&a, &b, site_lo(), site_hi());
    assert_int_equal(d.alloc_objects, 1);
    assert_int_equal(d.alloc_bytes, 300000);
    assert_int_equal(d.free_objects, 1);
    assert_int_equal(d.free_bytes, 300000);
    snap_drop(&a);
    snap_drop(&b);
    set_rate(old);
}

/* A small object alone in its span (the 8, 16, 24 and 32 KiB classes) is
 * sampled as a large one is: its bucket in the span, no special; the span
 * is marked so that its free comes to the profiler, and unmarked by it. */
static void test_single_object_span_sample(void **state)
{
    (void)state;
    size_t old = set_rate(1);
    struct snap a, b;
    snap_take(&a);
    void *p = alloc_at_site(32768);
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    assert_int_equal(s->state, SM_SPAN_SMALL);
    assert_int_equal(sm_class_to_nobjs[s->sizeclass], 1);
    assert_null(s->specials);
    assert_non_null(s->prof_bucket);
    assert_true(sm_pagemap_kind((uintptr_t)p) & SM_PAGE_SLOW);
    free(p);
    assert_null(s->prof_bucket);
    assert_false(sm_pagemap_kind((uintptr_t)p) & SM_PAGE_SLOW);
    snap_take(&b);
    struct delta d = snap_delta(&a, &b, site_lo(), site_hi());
    assert_int_equal(d.alloc_objects, 1);
    assert_int_equal(d.alloc_bytes, 32768);
    assert_int_equal(d.free_objects, 1);
    assert_int_equal(d.free_bytes, 32768);
    snap_drop(&a);
    snap_drop(&b);
    set_rate(old);
}

/* Threads whose only allocations are large sample them at once (no lock:
 * atomic counts), and another thread frees most: every one is counted once
 * each way. */
enum { LT_THREADS = 4, LT_OBJS = 500 };
static void *large_objs[LT_THREADS][LT_OBJS];

static size_t lt_base = 65536, lt_step = 4096;   /* sizes: base, base + step */

static void *large_sampler(void *arg)
{
    void **objs = arg;
    for (int i = 0; i < LT_OBJS; i++) {
        objs[i] = alloc_at_site(lt_base + (size_t)(i & 1) * lt_step);
        if (i % 3 == 0) {   /* some freed by their own thread, at once */
            free(objs[i]);
            objs[i] = NULL;
        }
    }
    return NULL;
}

static void samples_threads(size_t base, size_t step)
{
    lt_base = base;
    lt_step = step;
    size_t old = set_rate(1);
    struct snap a, b;
    snap_take(&a);
    pthread_t t[LT_THREADS];
    for (int i = 0; i < LT_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, large_sampler, large_objs[i]), 0);
    for (int i = 0; i < LT_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < LT_THREADS; i++)
        for (int k = 0; k < LT_OBJS; k++)
            free(large_objs[i][k]);
    snap_take(&b);
    struct delta d = snap_delta(&a, &b, site_lo(), site_hi());
    assert_int_equal(d.alloc_objects, LT_THREADS * LT_OBJS);
    assert_int_equal(d.free_objects, LT_THREADS * LT_OBJS);
    assert_int_equal(d.alloc_bytes, (uint64_t)LT_THREADS * (LT_OBJS / 2) * (2 * base + step));
    assert_int_equal(d.free_bytes, d.alloc_bytes);
    snap_drop(&a);
    snap_drop(&b);
    set_rate(old);
}

static void test_large_samples_threads(void **state)
{
    (void)state;
    samples_threads(65536, 4096);
}

/* The same with objects alone in their spans (16 and 32 KiB): the span's
 * mark is set and cleared without prof_lock, by threads that sample and
 * free concurrently (each span by one thread at a time). */
static void test_single_object_samples_threads(void **state)
{
    (void)state;
    samples_threads(16384, 16384);
}

/* ---- buckets --------------------------------------------------------------------- */

static void test_bucket_per_stack_and_size(void **state)
{
    (void)state;
    enum { N = 10 };
    void *p[N], *q[N];
    size_t old = set_rate(1);
    struct snap a, b, c;
    snap_take(&a);
    for (int i = 0; i < N; i++) {
        p[i] = alloc_at_site(64);
        q[i] = alloc_at_site(1024);
    }
    snap_take(&b);
    struct delta d = snap_delta(&a, &b, site_lo(), site_hi());
    /* Same stack, two sizes: two buckets.  (Both are class sizes, so the
     * bytes are the same whether a sample records the size asked for or
     * its class.) */
    assert_int_equal(d.buckets, 2);
    assert_int_equal(d.alloc_objects, 2 * N);
    assert_int_equal(d.alloc_bytes, N * (64 + 1024));
    assert_int_equal(d.free_objects, 0);
    for (int i = 0; i < N; i++) {
        free(p[i]);
        free(q[i]);
    }
    snap_take(&c);
    d = snap_delta(&b, &c, site_lo(), site_hi());
    assert_int_equal(d.alloc_objects, 0);
    assert_int_equal(d.free_objects, 2 * N);
    assert_int_equal(d.free_bytes, N * (64 + 1024));
    /* In use never exceeds allocated in any bucket. */
    for (size_t i = 0; i < c.n; i++) {
        assert_true(c.r[i].free_objects <= c.r[i].alloc_objects);
        assert_true(c.r[i].free_bytes <= c.r[i].alloc_bytes);
    }
    snap_drop(&a);
    snap_drop(&b);
    snap_drop(&c);
    set_rate(old);
}

/* Sizes within 1/8 of each other share a bucket, which counts the bytes
 * each asked for; sizes up to 128 bytes and sizes in other bands do not. */
static void test_bucket_per_size_band(void **state)
{
    (void)state;
    /* 1000..1020: the band of 1024 (961..1024); 1100: the band of 1152;
     * 100 and 101: bands of their own. */
    static const size_t sizes[] = {1000, 1010, 1020, 1100, 100, 101};
    enum { N = 8, K = sizeof sizes / sizeof sizes[0] };
    void *p[N][K];
    size_t old = set_rate(1);
    struct snap a, b, c;
    snap_take(&a);
    uint64_t want = 0;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            p[i][k] = alloc_at_site(sizes[k]);
            want += sizes[k];
        }
    snap_take(&b);
    struct delta d = snap_delta(&a, &b, site_lo(), site_hi());
    assert_int_equal(d.buckets, 4);
    assert_int_equal(d.alloc_objects, N * K);
    assert_int_equal(d.alloc_bytes, want);
    /* The band's bucket holds the three sizes' bytes, exactly. */
    size_t found = 0;
    for (size_t i = 0; i < b.n; i++) {
        const struct sm_prof_record *r = &b.r[i], *o = snap_find(&a, r);
        if (!stack_has(r, site_lo(), site_hi()) || r->alloc_objects - (o ? o->alloc_objects : 0) != 3 * N)
            continue;
        assert_int_equal(r->alloc_bytes - (o ? o->alloc_bytes : 0), N * (1000 + 1010 + 1020));
        found++;
    }
    assert_int_equal(found, 1);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++)
            free(p[i][k]);
    snap_take(&c);
    d = snap_delta(&b, &c, site_lo(), site_hi());
    assert_int_equal(d.free_objects, N * K);
    assert_int_equal(d.free_bytes, want);
    snap_drop(&a);
    snap_drop(&b);
    snap_drop(&c);
    set_rate(old);
}

/* Two callers of the same site, each its own frame. */
__attribute__((noipa)) static void *via_a(size_t n)
{
    void *p = alloc_at_site(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noipa)) static void *via_b(size_t n)
{
    void *p = alloc_at_site(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

/* One call site for both callers, so the stacks differ only there. */
__attribute__((noipa)) static void *via(int which, size_t n)
{
    void *p = which ? via_b(n) : via_a(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

/* A thread's samples from one stack reuse its bucket; one whose caller
 * differs deeper down, with the same leaf and the same size, gets its
 * own.  Alternating, then in runs. */
static void test_bucket_per_caller(void **state)
{
    (void)state;
    enum { N = 12 };
    void *p[4 * N];
    size_t old = set_rate(1);
    struct snap a, b;
    snap_take(&a);
    /* Read from memory, so the loop is one loop with one call. */
    static volatile int which[4 * N];
    for (int k = 0; k < 4 * N; k++)
        which[k] = k < 2 * N ? k & 1 : k >= 3 * N;
    for (int k = 0; k < 4 * N; k++)
        p[k] = via(which[k], 96);
    for (int k = 0; k < 3 * N; k++)
        free(p[k]);
    snap_take(&b);
    struct delta d = snap_delta(&a, &b, site_lo(), site_hi());
    assert_int_equal(d.buckets, 2);
    assert_int_equal(d.alloc_objects, 4 * N);
    assert_int_equal(d.free_objects, 3 * N);
    /* Each caller's bucket holds its own 2N, of which it freed 2N or N. */
    for (size_t i = 0; i < b.n; i++) {
        const struct sm_prof_record *r = &b.r[i];
        if (snap_find(&a, r) != NULL || !stack_has(r, site_lo(), site_hi()))
            continue;
        /* The frame above the site's returns into via_a or via_b: the
         * nearer function start below its return address. */
        int at = 0;
        while (at < r->nstack && !(r->stack[at] > site_lo() && r->stack[at] <= site_hi()))
            at++;
        assert_true(at + 1 < r->nstack);
        uintptr_t ra = r->stack[at + 1], fa = (uintptr_t)via_a, fb = (uintptr_t)via_b;
        assert_true(ra > fa || ra > fb);
        bool from_a = ra > fa && (ra <= fb || fa > fb);
        assert_int_equal(r->alloc_objects, 2 * N);
        assert_int_equal(r->free_objects, from_a ? 2 * N : N);
    }
    for (int k = 3 * N; k < 4 * N; k++)
        free(p[k]);
    snap_drop(&a);
    snap_drop(&b);
    set_rate(old);
}

static void test_stack_starts_at_caller(void **state)
{
    (void)state;
    size_t old = set_rate(1);
    struct snap a, b;
    snap_take(&a);
    void *p = alloc_at_site(200);
    snap_take(&b);
    free(p);
    int found = 0;
    for (size_t i = 0; i < b.n; i++) {
        const struct sm_prof_record *r = &b.r[i];
        if (snap_find(&a, r) != NULL || !stack_has(r, site_lo(), site_hi()))
            continue;
        found++;
        /* None of the profiler's or the slow path's frames; linked
         * statically, malloc's own frame may come first. */
        int at = r->stack[0] > site_lo() && r->stack[0] <= site_hi() ? 0 : 1;
        assert_true(r->stack[at] > site_lo() && r->stack[at] <= site_hi());
        assert_true(r->nstack > at + 1);
        assert_true(r->nstack <= SM_STACK_MAX);
    }
    assert_int_equal(found, 1);
    snap_drop(&a);
    snap_drop(&b);
    set_rate(old);
}

/* ---- rate ------------------------------------------------------------------------- */

static void test_rate_returns_previous(void **state)
{
    (void)state;
    size_t old = set_rate(12345);
    assert_int_equal(set_rate(777), 12345);
    assert_int_equal(set_rate(old), 777);
}

static void test_rate_zero_samples_nothing(void **state)
{
    (void)state;
    size_t old = set_rate(0);
    struct snap a, b;
    snap_take(&a);
    for (int i = 0; i < 20000; i++)
        free(alloc_at_site(100 + (size_t)i % 5000));
    free(alloc_at_site(5 << 20));
    snap_take(&b);
    struct delta d = snap_delta(&a, &b, 0, 0);
    assert_int_equal(d.alloc_objects, 0);
    snap_drop(&a);
    snap_drop(&b);
    set_rate(old);
}

static pthread_barrier_t phase;

static void *alloc_across_rate_change(void *arg)
{
    (void)arg;
    /* Sampling off: the countdown is the re-check distance. */
    for (int i = 0; i < 256; i++)
        free(alloc_at_site(256));
    pthread_barrier_wait(&phase);     /* the main thread sets the rate */
    pthread_barrier_wait(&phase);
    for (size_t done = 0; done < ((size_t)3 << 20); done += 256)
        free(alloc_at_site(256));
    return NULL;
}

/* A thread that allocated with sampling off picks up the rate another
 * thread sets within SM_MPROF_RECHECK (1 MiB) of allocation. */
static void test_rate_reaches_other_threads(void **state)
{
    (void)state;
    size_t old = set_rate(0);
    pthread_t t;
    struct snap a, b;
    pthread_barrier_init(&phase, NULL, 2);
    assert_int_equal(pthread_create(&t, NULL, alloc_across_rate_change, NULL), 0);
    pthread_barrier_wait(&phase);
    snap_take(&a);
    set_rate(1);
    pthread_barrier_wait(&phase);
    assert_int_equal(pthread_join(t, NULL), 0);
    set_rate(0);
    snap_take(&b);
    struct delta d = snap_delta(&a, &b, site_lo(), site_hi());
    /* Every allocation after the old countdown ran out was sampled. */
    assert_true(d.alloc_objects >= (2u << 20) / 256);
    assert_true(d.alloc_objects < (3u << 20) / 256);
    assert_int_equal(d.alloc_objects, d.free_objects);
    pthread_barrier_destroy(&phase);
    snap_drop(&a);
    snap_drop(&b);
    set_rate(old);
}

/* ---- statistics ------------------------------------------------------------------- */

#define STAT_RATE (64 * 1024)
#define STAT_RUNS 40

/* count objects of size, size - step, ..., size - 7 step, in turn. */
struct kind {
    size_t size, count, step;
};
/* Small objects, middle ones of eight sizes that fall in two size bands
 * (5040..5376: the bands of 5120 and 5632), so a bucket's objects differ
 * in size, and large ones, some larger than the rate. */
static const struct kind mix[] = {
    {112, 2000, 0}, {5376, 500, 48}, {100000, 40, 0}, {1 << 20, 8, 0},
};

static size_t kind_size(size_t k, size_t i)
{
    return mix[k].size - (i % 8) * mix[k].step;
}

static void *live[4000];

__attribute__((noinline)) static size_t stat_alloc(void)
{
    size_t n = 0;
    for (size_t k = 0; k < sizeof mix / sizeof mix[0]; k++)
        for (size_t i = 0; i < mix[k].count; i++)
            live[n++] = alloc_at_site(kind_size(k, i));
    return n;
}

static void test_sampling_statistics(void **state)
{
    (void)state;
    double truth = 0, var = 0;
    for (size_t k = 0; k < sizeof mix / sizeof mix[0]; k++)
        for (size_t i = 0; i < mix[k].count; i++) {
            double s = (double)kind_size(k, i), p = 1 - exp(-s / STAT_RATE);
            truth += s;
            var += s * s * (1 - p) / p;
        }
    double sigma = sqrt(var);
    size_t old = set_rate(STAT_RATE);
    double est[STAT_RUNS], sum = 0;
    for (int run = 0; run < STAT_RUNS; run++) {
        struct snap a, b;
        snap_take(&a);
        size_t n = stat_alloc();
        snap_take(&b);
        /* The estimate pprof shows: each bucket's in-use pair scaled. */
        double e = 0;
        for (size_t i = 0; i < b.n; i++) {
            const struct sm_prof_record *r = &b.r[i], *o = snap_find(&a, r);
            if (!stack_has(r, site_lo(), site_hi()))
                continue;
            int64_t n1, b1, n0 = 0, b0 = 0;
            sm_profproto_scale(r->alloc_objects - r->free_objects, r->alloc_bytes - r->free_bytes,
                               STAT_RATE, &n1, &b1);
            if (o != NULL)
                sm_profproto_scale(o->alloc_objects - o->free_objects, o->alloc_bytes - o->free_bytes,
                                   STAT_RATE, &n0, &b0);
            e += (double)(b1 - b0);
        }
        for (size_t i = 0; i < n; i++)
            free(live[i]);
        snap_drop(&a);
        snap_drop(&b);
        est[run] = e;
        sum += e;
        if (fabs(e - truth) > 5 * sigma)
            fail_msg("run %d: estimated %.0f bytes, truth %.0f, sigma %.0f", run, e, truth, sigma);
    }
    double mean = sum / STAT_RUNS, ss = 0;
    for (int run = 0; run < STAT_RUNS; run++)
        ss += (est[run] - mean) * (est[run] - mean);
    double sd = sqrt(ss / (STAT_RUNS - 1));
    print_message("# truth %.0f B, mean estimate %.0f B (%+.2f%%), sd %.0f B, predicted %.0f B\n",
                  truth, mean, 100 * (mean - truth) / truth, sd, sigma);
    assert_true(fabs(mean - truth) < 3.5 * sigma / sqrt(STAT_RUNS));
    assert_true(sd > sigma / 1.6 && sd < sigma * 1.6);
    set_rate(old);
}

/* ---- recursion ---------------------------------------------------------------------- */

/* Unwind tables for a made-up function, as __register_frame takes them: a
 * CIE, one FDE, and the zero terminator.  JIT compilers register theirs
 * this way; libgcc sorts a registered object's FDEs into an array from
 * malloc the first time it searches it, inside the unwinder. */
extern void __register_frame(void *begin);
extern void __deregister_frame(void *begin);

static unsigned char fake_code[64];
static uint32_t fake_eh_frame[16] __attribute__((aligned(8)));

static void build_fake_eh_frame(void)
{
    unsigned char *p = (unsigned char *)fake_eh_frame;
    static const unsigned char cie[] = {
        20, 0, 0, 0,              /* length */
        0, 0, 0, 0,               /* CIE id */
        1, 'z', 'R', 0,           /* version, augmentation */
        1, 0x78, 16,              /* code align 1, data align -8, RA = r16 */
        1, 0x1b,                  /* augmentation data: FDE pc pcrel|sdata4 */
        0x0c, 7, 8,               /* DW_CFA_def_cfa rsp+8 */
        0x90, 1,                  /* DW_CFA_offset r16 at cfa-8 */
        0, 0,                     /* padding */
    };
    memset(fake_eh_frame, 0, sizeof fake_eh_frame);
    memcpy(p, cie, sizeof cie);
    unsigned char *fde = p + sizeof cie;
    uint32_t len = 20, cie_ptr = (uint32_t)(fde + 4 - p);
    int32_t pc_rel = (int32_t)((intptr_t)fake_code - (intptr_t)(fde + 8));
    uint32_t range = sizeof fake_code;
    memcpy(fde, &len, 4);
    memcpy(fde + 4, &cie_ptr, 4);
    memcpy(fde + 8, &pc_rel, 4);
    memcpy(fde + 12, &range, 4);
    /* fde + 16: augmentation length 0, then DW_CFA_nop padding; the
     * terminator follows at fde + 24 (zero from the memset). */
}

static void test_unwinder_malloc_not_sampled(void **state)
{
    (void)state;
    build_fake_eh_frame();
    /* The cached walk finds FDEs itself and never calls libgcc for code
     * of a loaded object: a rule that libgcc must follow, at every return
     * address in alloc_at_site, sends the capture to libgcc's walk, whose
     * first look-up in a newly registered object sorts its FDEs in memory
     * from malloc.  The rules live in a two-way cache: the site's
     * addresses either side of a 1 KiB boundary can share a set, and a
     * rule the walk computes (the library's own frames, whose rules the
     * site's displaced) can take a way, so an attempt in which the
     * capture did not reach libgcc (its fallback count) is made again,
     * with the object registered afresh. */
    static struct sm_frame_rule orig[SITE_BYTES];
    struct sm_frame_rule complex_rule = { SM_FRAME_COMPLEX, 0, 0, 0 };
    int attempt;
    for (attempt = 1; attempt <= 20; attempt++) {
        __register_frame(fake_eh_frame);
        struct sm_memstats m0, m1;
        struct sm_stack_counters c0, c1;
        struct snap a, b;
        snap_take(&a);
        for (uintptr_t at = site_lo(); at < site_hi(); at++) {
            sm_stack_rule(at, &orig[at - site_lo()]);
            sm_stack_cache_set(at, &complex_rule);
        }
        size_t old = set_rate(1);
        sm_stack_counters(&c0);
        sm_read_memstats(&m0);
        void *p = alloc_at_site(40);     /* sampled: the unwinder runs */
        sm_read_memstats(&m1);
        sm_stack_counters(&c1);
        set_rate(old);
        for (uintptr_t at = site_lo(); at < site_hi(); at++)
            sm_stack_cache_set(at, &orig[at - site_lo()]);
        snap_take(&b);
        free(p);
        __deregister_frame(fake_eh_frame);
        struct delta d = snap_delta(&a, &b, 0, 0);
        snap_drop(&a);
        snap_drop(&b);
        print_message("# attempt %d: %llu mallocs, %llu sampled, %llu libgcc walks, %llu rules computed\n",
                      attempt, (unsigned long long)(m1.mallocs - m0.mallocs),
                      (unsigned long long)d.alloc_objects, (unsigned long long)(c1.fallback - c0.fallback),
                      (unsigned long long)(c1.rule_misses - c0.rule_misses));
        if (c1.fallback == c0.fallback)
            continue;
        /* libgcc walked: its own mallocs happened inside the capture, and
         * only the program's one was sampled. */
        assert_true(m1.mallocs - m0.mallocs >= 2);
        assert_int_equal(d.alloc_objects, 1);
        return;
    }
    fail_msg("no attempt's capture reached libgcc's walk");
}

/* ---- metadata ------------------------------------------------------------------------ */

/* The sampler's ln and the profile writer's exp (src/fmath.h, which spare
 * the library libm) agree with libm's to a few units in the last place
 * over the arguments they get: u in (0, 1] down to 2^-53, and -size/rate
 * from 0 to far below the underflow. */
/* The sampler's draw: within the table's bound of -ln(q / 2^52), at the
 * ends and in between, and its mean over uniform q is 1. */
static void test_sampler_draw(void **state)
{
    (void)state;
    assert_true(sm_neg_ln_unit((uint64_t)1 << 52, 52) == 0.0);
    assert_true(fabs(sm_neg_ln_unit(1, 52) - 52 * M_LN2) < 1e-12);
    assert_true(fabs(sm_neg_ln_unit((uint64_t)1 << 51, 52) - M_LN2) < 1e-12);
    double worst = 0, sum = 0;
    uint64_t x = 88172645463325252ull;
    enum { N = 1000000 };
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t q = (x >> 12) + 1;
        double got = sm_neg_ln_unit(q, 52), want = -log((double)q / 4503599627370496.0);
        assert_true(got >= want - 1e-12);   /* the chords lie below ln */
        if (got - want > worst)
            worst = got - want;
        sum += got;
    }
    printf("# sampler draw: worst error %.3g, mean %.5f\n", worst, sum / N);
    assert_true(worst <= 3.1e-5);
    assert_true(fabs(sum / N - 1.0) < 0.005);   /* sigma of the mean: 0.001 */
}

static void test_fmath_matches_libm(void **state)
{
    (void)state;
    double worst_ln = 0, worst_exp = 0;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double u = ((double)(x >> 11) + 1.0) * (1.0 / 9007199254740992.0);
        if (i % 4 == 1)
            u = ldexp(u, -(int)(x % 1000)); /* tiny and subnormal too */
        double want = log(u), got = sm_ln(u);
        double err = want == 0 ? fabs(got) : fabs(got - want) / fabs(want);
        if (err > worst_ln)
            worst_ln = err;
        double t = -(double)(x % 800000) / 1000.0 * (i % 2 ? 1.0 : 0.001);
        want = exp(t), got = sm_exp(t);
        if (want >= 0x1p-1022) {
            err = fabs(got - want) / want;
            if (err > worst_exp)
                worst_exp = err;
        } else {
            assert_true(fabs(got - want) <= 0x1p-1070);
        }
    }
    printf("# worst relative error: ln %.3g, exp %.3g\n", worst_ln, worst_exp);
    assert_true(worst_ln < 1e-15); /* 4.5 units in the last place */
    assert_true(worst_exp < 1e-15);
    assert_true(sm_ln(1.0) == 0.0);
    assert_true(sm_exp(0.0) == 1.0);
    assert_true(sm_exp(-800.0) == 0.0);
    assert_true(isinf(sm_ln(0.0)) && sm_ln(0.0) < 0);
    assert_true(fabs(sm_exp(1.0) - M_E) <= 2 * M_E * 0x1p-53);
    assert_true(fabs(sm_ln(M_E) - 1.0) <= 2 * 0x1p-53);
}

static void test_metadata_in_other_sys(void **state)
{
    (void)state;
    size_t old = set_rate(1);
    free(alloc_at_site(10));
    set_rate(old);
    assert_true(sm_mprof_sys() > 0);
    struct sm_memstats ms;
    sm_read_memstats(&ms);
    assert_true(ms.other_sys >= sm_mprof_sys());
    assert_int_equal(ms.sys, ms.heap_sys + ms.mspan_sys + ms.mcache_sys + ms.other_sys);
}

int main(void)
{
    /* A deadlock (say, a sample taken inside the unwinder) fails the test
     * instead of hanging make check. */
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_object_marks_span),
        cmocka_unit_test(test_specials_sorted_any_order),
        cmocka_unit_test(test_large_object_special),
        cmocka_unit_test(test_large_samples_threads),
        cmocka_unit_test(test_single_object_span_sample),
        cmocka_unit_test(test_single_object_samples_threads),
        cmocka_unit_test(test_bucket_per_stack_and_size),
        cmocka_unit_test(test_bucket_per_size_band),
        cmocka_unit_test(test_bucket_per_caller),
        cmocka_unit_test(test_stack_starts_at_caller),
        cmocka_unit_test(test_rate_returns_previous),
        cmocka_unit_test(test_rate_zero_samples_nothing),
        cmocka_unit_test(test_rate_reaches_other_threads),
        cmocka_unit_test(test_sampling_statistics),
        cmocka_unit_test(test_unwinder_malloc_not_sampled),
        cmocka_unit_test(test_metadata_in_other_sys),
        cmocka_unit_test(test_fmath_matches_libm),
        cmocka_unit_test(test_sampler_draw),
    };
    return cmocka_run_group_tests_name("mprof", tests, NULL, NULL);
}
