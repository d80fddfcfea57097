/*
 * test_os_faults.c - the OS saying no, at every point where the allocator
 * asks it for memory.
 *
 * One fixed workload runs first to count the mappings it asks the OS layer
 * for (sm_os_map_calls) and what each was for: small objects of every
 * class across span boundaries, started with no free page in the heap and
 * the span structures' chunk used up (the test sets that state), so they
 * meet a carve without a span structure, growth and a new reservation;
 * large objects by the hundred, so the span structures need new chunks;
 * calloc; aligned allocations of every kind; realloc growth chains; huge
 * objects that make the heap reserve new arenas with new page-map metadata,
 * one of them when the old reservation cannot be extended and its rest
 * must join the heap as a free run; and forty threads alive at once, so
 * the thread caches need a new chunk.  Then, for every N from 1 to that
 * count, a fresh child of the same parent runs it again with the Nth
 * mapping failing (sm_os_fail_nth), and checks:
 *   - a failure surfaces only as NULL (or posix_memalign's or
 *     pthread_create's error code) with errno ENOMEM, during the one call
 *     that made the failing mapping; the fault is one-shot, so every other
 *     call must succeed, and some faults are absorbed (a thread whose cache
 *     cannot be made allocates without one);
 *   - every pointer handed out is ours (page map), aligned as asked, with
 *     malloc_usable_size >= the request, calloc memory is zero, and every
 *     live object keeps its pattern (so no object overlaps another and
 *     realloc keeps its prefix, also when it fails);
 *   - after every phase the MemStats invariants of DESIGN 4 hold, the live
 *     objects and bytes in the stats are exactly the test's own, the heap
 *     validator (sm_mheap_check) finds nothing, and every byte the OS
 *     layer has mapped (sm_os_mapped_bytes) is in sys or in the unused
 *     tail of the heap's reservation, so a failure leaks no mapping;
 *   - after the fault, everything is freed and the whole workload runs a
 *     second time without any failure.
 * A child per N keeps the runs independent: each starts from the parent's
 * heap, untouched by the others, so mapping N is the same call in every
 * run.  The walk runs twice: with the profiler off, and sampling every
 * allocation (rate 1), which adds the profiler's own mappings (bucket
 * chunks, the bucket table, its specials).
 *
 * The same workload then runs under RLIMIT_AS set a little above the
 * process's address space, for a spread of margins, so real mmap calls
 * fail partway through growth (reservations, metadata after a successful
 * reservation, thread stacks): every failure is ENOMEM, the invariants
 * hold, and once the limit is raised the workload runs through cleanly.
 *
 * The scavenger is turned off (the test re-executes itself with
 * SPANMALLOC_SCAVENGE=off and SPANMALLOC_PROFILE_RATE=0), since a run it
 * takes out for madvise can make a concurrent allocation grow the heap and
 * shift the numbering of the mappings.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "spanmalloc.h"
#include "../common/pattern.h"

/* ---- what a child reports, in memory shared with the parent ---------------- */

enum kind { K_RESERVE, K_SPAN, K_CACHE, K_ARENA, K_PROF, K_NKINDS };
static const char *const kind_name[K_NKINDS] = {
    "heap reservations", "span chunks", "cache chunks", "page-map arenas", "profiler",
};

struct report {
    int failed;                /* the child found something wrong */
    char msg[512];
    uint64_t calls;            /* mappings the first run of the workload asked for */
    uint64_t kinds[K_NKINDS];  /* counting run: the calls by what they were for */
    int nnull;                 /* allocations that failed */
    int fault_fired;           /* the Nth mapping was asked for */
    int phase_of_failure;      /* where the failing call was (-1: none) */
};

static struct report *rep;
static bool verbose;            /* SM_TEST_VERBOSE: progress on stderr */
static double now_s(void);

static void child_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void child_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->msg, sizeof rep->msg, fmt, ap);
    va_end(ap);
    rep->failed = 1;
    _exit(1);
}

/* ---- the run: its mode and the accounting of each call --------------------- */

enum mode {
    M_COUNT,    /* no fault: count and classify the mappings */
    M_FAULT,    /* mapping n fails, once */
    M_LIMIT,    /* RLIMIT_AS: any allocation may fail */
    M_CLEAN,    /* no fault: nothing may fail */
};

static const char *const phase_name[] = {
    "small", "large", "calloc", "aligned", "realloc", "huge", "threads", "end",
};

static struct {
    enum mode mode;
    uint64_t n;             /* M_FAULT: the failing mapping, from the start */
    uint64_t c0;            /* sm_os_map_calls() when the workload started */
    uint64_t before;        /* calls when the current call started */
    int phase;
    /* M_COUNT: the metadata totals seen after the previous call */
    uint64_t span_sys, cache_sys, arena_sys, prof_sys;
    uintptr_t cur_end;
} R;

static uint64_t calls_now(void)
{
    return sm_os_map_calls() - R.c0;
}

static void observe_reset(void)
{
    R.span_sys = sm_heap.spanalloc.sys;
    R.cache_sys = sm_mcache_cachealloc.sys;
    R.arena_sys = sm_heap.st.arena_meta_sys;
    R.prof_sys = sm_mprof_sys();
    R.cur_end = sm_heap.cur_end;
}

static void call_begin(void)
{
    R.before = calls_now();
}

/* After a call in the counting run: what were its mappings for?  Chunks of
 * the span and cache fixallocs and arena metadata show in their byte
 * counts; a reservation moves the heap's reserved end; what is left is the
 * profiler's (its byte count grows).  Only single-threaded moments call
 * this, so the plain reads are safe. */
static void call_end(void)
{
    if (R.mode != M_COUNT)
        return;
    uint64_t made = calls_now() - R.before;
    if (made == 0)
        return;
    uint64_t span = (sm_heap.spanalloc.sys - R.span_sys) / (64 * 1024);
    uint64_t cache = (sm_mcache_cachealloc.sys - R.cache_sys) / (64 * 1024);
    uint64_t arena = (sm_heap.st.arena_meta_sys - R.arena_sys) /
                     ((sizeof(struct sm_heap_arena) + 4095) & ~(size_t)4095);
    if (span + cache + arena > made)
        child_fail("call made %llu mappings but metadata grew by %llu chunks",
                   (unsigned long long)made, (unsigned long long)(span + cache + arena));
    uint64_t rest = made - span - cache - arena;
    if (verbose)
        fprintf(stderr, "  %s: %llu mappings: span %llu cache %llu arena %llu reserve %d\n",
                phase_name[R.phase], (unsigned long long)made, (unsigned long long)span,
                (unsigned long long)cache, (unsigned long long)arena, sm_heap.cur_end != R.cur_end);
    rep->kinds[K_SPAN] += span;
    rep->kinds[K_CACHE] += cache;
    rep->kinds[K_ARENA] += arena;
    if (rest > 0 && sm_heap.cur_end != R.cur_end) {
        rep->kinds[K_RESERVE]++;
        rest--;
    }
    if (rest > 0 && sm_mprof_sys() != R.prof_sys)
        rep->kinds[K_PROF] += rest;
    else if (rest > 0)
        rep->kinds[K_RESERVE] += rest;
    observe_reset();
}

/* An allocation returned NULL (or an error code): is that allowed here? */
static void call_failed(const char *what, size_t size, int err)
{
    rep->nnull++;
    if (err != ENOMEM)
        child_fail("%s: %s(%zu) failed with errno %d, not ENOMEM", phase_name[R.phase], what,
                   size, err);
    uint64_t after = calls_now();
    switch (R.mode) {
    case M_COUNT:
    case M_CLEAN:
        child_fail("%s: %s(%zu) failed with no fault injected", phase_name[R.phase], what, size);
    case M_FAULT:
        if (rep->nnull > 1)
            child_fail("%s: %s(%zu) failed again after the one injected fault", phase_name[R.phase],
                       what, size);
        if (!(R.before < R.n && R.n <= after))
            child_fail("%s: %s(%zu) failed, but its mappings were %llu..%llu and the fault is %llu",
                       phase_name[R.phase], what, size, (unsigned long long)R.before + 1,
                       (unsigned long long)after, (unsigned long long)R.n);
        rep->phase_of_failure = R.phase;
        break;
    case M_LIMIT:
        break;
    }
}

/* ---- objects and their patterns ------------------------------------------------ */

enum { MAXOBJ = 8192 };

struct obj {
    void *p;
    size_t size;
    uint64_t key;
};

static struct obj objs[MAXOBJ];
static int nobjs;               /* slots used so far (the end of the table) */
static uint64_t live, live_bytes, next_key = 1;
static bool track_exact;        /* stats must show exactly our objects */
static uint64_t base_objects, base_alloc;

static void fill(struct obj *o)
{
    o->key = next_key++;
    FOR_EACH_PART(o->size, lo, hi, fill_part(o->p, o->key, lo, hi));
}

/* Check the pattern on [0, limit) of o (limit <= o->size), at address at. */
static void check_prefix(const struct obj *o, const void *at, size_t limit, const char *when)
{
    FOR_EACH_PART(o->size, lo, hi, {
        if (lo < limit) {
            size_t bad = check_part(at, o->key, lo, hi < limit ? hi : limit);
            if (bad != SIZE_MAX)
                child_fail("%s: %s: object %p of %zu bytes differs at byte %zu",
                           phase_name[R.phase], when, at, o->size, bad);
        }
    });
}

static void check_obj(const struct obj *o, const char *when)
{
    check_prefix(o, o->p, o->size, when);
}

static void check_all(const char *when)
{
    for (int i = 0; i < nobjs; i++)
        if (objs[i].p)
            check_obj(&objs[i], when);
}

/* A pointer just handed out: ours, aligned, big enough, not live already. */
static void check_new(void *p, size_t size, size_t align, const char *what)
{
    uintptr_t a = (uintptr_t)p;
    uint8_t kind = sm_pagemap_kind(a);
    if (kind == SM_PAGE_NONE || kind == SM_PAGE_FREE)
        child_fail("%s: %s(%zu) = %p: not a live heap page (kind %#x)", phase_name[R.phase], what,
                   size, p, kind);
    if (kind == SM_PAGE_LARGE && sm_pagemap_span(a)->base != a)
        child_fail("%s: %s(%zu) = %p: inside a large object", phase_name[R.phase], what, size, p);
    if (align < 16)
        align = 16;
    if (a & (align - 1))
        child_fail("%s: %s(%zu) = %p: not aligned to %zu", phase_name[R.phase], what, size, p,
                   align);
    if (malloc_usable_size(p) < size)
        child_fail("%s: %s(%zu) = %p: usable size %zu", phase_name[R.phase], what, size, p,
                   malloc_usable_size(p));
}

static void track(struct obj *o)
{
    live++;
    live_bytes += malloc_usable_size(o->p);
}

static void untrack(struct obj *o)
{
    live--;
    live_bytes -= malloc_usable_size(o->p);
}

enum how { H_MALLOC, H_CALLOC, H_MEMALIGN, H_POSIX_MEMALIGN, H_ALIGNED_ALLOC, H_VALLOC, H_PVALLOC };
static const char *const how_name[] = {
    "malloc", "calloc", "memalign", "posix_memalign", "aligned_alloc", "valloc", "pvalloc",
};

/* Allocate into a new slot; returns it, or NULL if the allocation failed
 * (and that was allowed). */
static struct obj *obj_new(enum how how, size_t size, size_t align)
{
    if (nobjs == MAXOBJ)
        child_fail("object table full");
    struct obj *o = &objs[nobjs++];
    void *p = NULL;
    int err = 0;
    call_begin();
    errno = 0;
    switch (how) {
    case H_MALLOC: p = malloc(size); break;
    case H_CALLOC: p = calloc(1, size); break;
    case H_MEMALIGN: p = memalign(align, size); break;
    case H_POSIX_MEMALIGN: {
        int saved = errno = 12345;
        err = posix_memalign(&p, align, size);
        if (errno != saved)
            child_fail("posix_memalign changed errno to %d", errno);
        if (err == 0 && p == NULL)
            child_fail("posix_memalign returned 0 and NULL");
        if (err != 0)
            p = NULL;
        break;
    }
    case H_ALIGNED_ALLOC: p = aligned_alloc(align, size); break;
    case H_VALLOC: p = valloc(size); align = 4096; break;
    case H_PVALLOC: p = pvalloc(size); align = 4096; break;
    }
    if (how != H_POSIX_MEMALIGN)
        err = errno;
    call_end();
    if (p == NULL) {
        call_failed(how_name[how], size, err);
        return NULL;
    }
    check_new(p, size, align, how_name[how]);
    if (how == H_CALLOC) {
        static const uint8_t zero[4096];
        const uint8_t *c = p;
        for (size_t i = 0; i < size; i += sizeof zero) {
            size_t n = size - i < sizeof zero ? size - i : sizeof zero;
            if (memcmp(c + i, zero, n) != 0)
                child_fail("%s: calloc(1, %zu) = %p: not zero in [%zu, %zu)", phase_name[R.phase],
                           size, p, i, i + n);
        }
    }
    o->p = p;
    o->size = size;
    fill(o);
    track(o);
    return o;
}

static void obj_free(struct obj *o)
{
    if (o->p == NULL)
        return;
    check_obj(o, "before free");
    untrack(o);
    free(o->p);
    o->p = NULL;
}

/* realloc o to size; on failure o must be untouched. */
static void obj_realloc(struct obj *o, size_t size)
{
    check_obj(o, "before realloc");
    size_t old_usable = malloc_usable_size(o->p);
    call_begin();
    errno = 0;
    void *q = realloc(o->p, size);
    int err = errno;
    call_end();
    if (size == 0) {
        /* glibc's realloc(p, 0): frees p, returns NULL. */
        if (q != NULL)
            child_fail("realloc(%p, 0) = %p, not NULL", o->p, q);
        untrack(o);
        o->p = NULL;
        return;
    }
    if (q == NULL) {
        call_failed("realloc", size, err);
        check_obj(o, "after a failed realloc");
        return;
    }
    size_t keep = o->size < size ? o->size : size;
    check_prefix(o, q, keep, "realloc's copy");
    /* Track the old pointer out and the new one in: the usable sizes may
     * differ even when realloc keeps the pointer. */
    live--;
    live_bytes -= old_usable;
    o->p = q;
    o->size = size;
    check_new(q, size, 16, "realloc");
    fill(o);
    track(o);
}

/* ---- the stats ---------------------------------------------------------------- */

static void check_stats(const char *where)
{
    struct sm_memstats ms;
    sm_read_memstats(&ms);
#define INV(cond)                                                                         \
    do {                                                                                  \
        if (!(cond))                                                                      \
            child_fail("%s (%s): %s fails: heap_sys %llu inuse %llu idle %llu released "  \
                       "%llu alloc %llu objects %llu mallocs %llu frees %llu sys %llu",   \
                       phase_name[R.phase], where, #cond,                                 \
                       (unsigned long long)ms.heap_sys, (unsigned long long)ms.heap_inuse, \
                       (unsigned long long)ms.heap_idle,                                  \
                       (unsigned long long)ms.heap_released,                              \
                       (unsigned long long)ms.heap_alloc,                                 \
                       (unsigned long long)ms.heap_objects, (unsigned long long)ms.mallocs, \
                       (unsigned long long)ms.frees, (unsigned long long)ms.sys);         \
    } while (0)
    INV(ms.heap_inuse + ms.heap_idle == ms.heap_sys);
    INV(ms.heap_released <= ms.heap_idle);
    INV(ms.heap_alloc <= ms.heap_inuse);
    INV(ms.heap_objects == ms.mallocs - ms.frees);
    INV(ms.sys == ms.heap_sys + ms.mspan_sys + ms.mcache_sys + ms.other_sys);
    INV(ms.alloc == ms.heap_alloc);
    /* Every byte the OS layer has mapped is in sys, or in the part of the
     * heap's reservation not grown into yet: nothing leaks. */
    uint64_t mapped = sm_os_mapped_bytes();
    uint64_t tail = sm_heap.cur_end - sm_heap.cur_base;
    if (mapped != ms.sys + tail)
        child_fail("%s (%s): the OS layer has %llu bytes mapped, sys %llu + reserved tail %llu "
                   "= %llu", phase_name[R.phase], where, (unsigned long long)mapped,
                   (unsigned long long)ms.sys, (unsigned long long)tail,
                   (unsigned long long)(ms.sys + tail));
    if (track_exact) {
        INV(ms.heap_objects == base_objects + live);
        INV(ms.heap_alloc == base_alloc + live_bytes);
    }
#undef INV
    sm_mheap_check(&sm_heap);
}

/* ---- the workload ------------------------------------------------------------- */

/* Hides a constant from the compiler's allocation-size warnings. */
static size_t opaque(size_t x)
{
    __asm__ volatile("" : "+r"(x));
    return x;
}


static void phase(int p)
{
    static double t;
    if (verbose && R.mode == M_COUNT && t != 0)
        fprintf(stderr, "  phase %s: %.3fs\n", phase_name[R.phase], now_s() - t);
    t = now_s();
    R.phase = p;
}

/* Take every free page of the heap and the rest of its reservation as
 * large objects of the test (straight from the page heap: the sizes are
 * whatever the runs are), so what comes next must grow the heap. */
static void heap_squeeze(void)
{
    enum { MAXRUNS = 512 };
    static size_t runs[MAXRUNS];
    size_t n = 0;
    sm_mheap_lock(&sm_heap);
    for (size_t i = 1; i <= SM_HEAP_NLISTS; i++) {
        struct sm_spanlist *l = i < SM_HEAP_NLISTS ? &sm_heap.free[i] : &sm_heap.freelarge;
        for (struct sm_mspan *s = l->first; s && n < MAXRUNS; s = s->next)
            runs[n++] = s->npages;
    }
    if (sm_heap.cur_end > sm_heap.cur_base && n < MAXRUNS)
        runs[n++] = (sm_heap.cur_end - sm_heap.cur_base) >> SM_PAGE_SHIFT;
    sm_mheap_unlock(&sm_heap);
    for (size_t i = 0; i < n; i++) {
        if (nobjs == MAXOBJ)
            child_fail("object table full");
        call_begin();
        struct sm_mspan *s = sm_mheap_alloc(&sm_heap, runs[i], 0, SM_PAGE_LARGE);
        call_end();
        if (s == NULL) {
            call_failed("sm_mheap_alloc", runs[i] << SM_PAGE_SHIFT, ENOMEM);
            continue;
        }
        struct obj *o = &objs[nobjs++];
        o->p = (void *)s->base;
        o->size = runs[i] << SM_PAGE_SHIFT;
        check_new(o->p, o->size, SM_PAGE_SIZE, "sm_mheap_alloc");
        fill(o);
        track(o);
    }
}

/* The span structures' current chunk is used up: the next one needs a new
 * chunk from the OS.  The test sets that state directly; the free
 * structures and the rest of the chunk stay counted in mspan_sys and not in
 * mspan_inuse, as before. */
static void span_chunk_used_up(void)
{
    sm_mheap_lock(&sm_heap);
    sm_heap.spanalloc.list = NULL;
    sm_heap.spanalloc.nchunk = 0;
    sm_mheap_unlock(&sm_heap);
}

/* Every class, at its size, one byte less, and one byte more than the
 * class below: one span and one object more, then every other one freed.
 * The heap has no free page before it starts and one free run of 16 pages
 * once a span of 16 pages has come and gone, and the span structures need
 * a new chunk first: so small allocations meet a carve that cannot get a
 * span structure, a grow from the reservation's rest, and a new
 * reservation with its page-map arena. */
static void phase_small(void)
{
    phase(0);
    heap_squeeze();
    call_begin();
    struct sm_mspan *s = sm_mheap_alloc(&sm_heap, 16, 0, SM_PAGE_LARGE);
    call_end();
    if (s == NULL)
        call_failed("sm_mheap_alloc", 16 << SM_PAGE_SHIFT, ENOMEM);
    else
        sm_mheap_free(&sm_heap, s);
    span_chunk_used_up();
    int first = nobjs;
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
        size_t size = sm_class_to_size[cls];
        size_t below = sm_class_to_size[cls - 1];
        uint32_t n = sm_class_to_nobjs[cls] + 1u;
        for (uint32_t i = 0; i < n; i++) {
            size_t sz = i % 3 == 0 ? size : i % 3 == 1 ? size - 1 : below + 1;
            obj_new(H_MALLOC, sz, 0);
        }
    }
    obj_new(H_MALLOC, 0, 0);
    check_all("small objects");
    for (int i = first; i < nobjs; i += 2)
        obj_free(&objs[i]);
    check_stats("after small");
}

/* Hundreds of large objects (5 to 7 pages), so the span structures need
 * more chunks, a third freed (holes), then a few of up to 2 MiB. */
static void phase_large(void)
{
    phase(1);
    int first = nobjs;
    for (int i = 0; i < 900; i++)
        obj_new(H_MALLOC, 32769 + (size_t)(i * 977) % 20000, 0);
    for (int i = first; i < nobjs; i += 3)
        obj_free(&objs[i]);
    for (int i = 0; i < 24; i++)
        obj_new(H_MALLOC, ((size_t)256 << 10) + (size_t)i * 77777, 0);
    check_all("large objects");
    check_stats("after large");
}

static void phase_calloc(void)
{
    phase(2);
    static const size_t sizes[] = {1, 15, 16, 17, 100, 1000, 4096, 32768, 32769, 100000,
                                   1000000, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        obj_new(H_CALLOC, sizes[i], 0);
    /* Reused memory must come back zeroed: free some and ask again. */
    struct obj *a = obj_new(H_MALLOC, 200000, 0);
    if (a)
        obj_free(a);
    obj_new(H_CALLOC, 200000, 0);
    /* An overflowing count is ENOMEM in every mode, mapping nothing. */
    errno = 0;
    uint64_t c = calls_now();
    if (calloc(opaque(SIZE_MAX / 2), 3) != NULL || errno != ENOMEM || calls_now() != c)
        child_fail("calloc(SIZE_MAX / 2, 3) is not NULL with ENOMEM and no mapping");
    check_all("calloc");
    check_stats("after calloc");
}

static void phase_aligned(void)
{
    phase(3);
    for (size_t align = 32; align <= 8192; align *= 2) {
        obj_new(H_MEMALIGN, 100, align);
        obj_new(H_MEMALIGN, align * 3, align);
        obj_new(H_POSIX_MEMALIGN, 1000, align);
        obj_new(H_ALIGNED_ALLOC, align, align);
    }
    obj_new(H_POSIX_MEMALIGN, 100000, 65536);
    obj_new(H_MEMALIGN, 40000, 16384);
    obj_new(H_ALIGNED_ALLOC, (size_t)3 << 20, (size_t)2 << 20);
    obj_new(H_VALLOC, 5000, 0);
    obj_new(H_PVALLOC, 10000, 0);
    check_all("aligned");
    check_stats("after aligned");
}

/* Growth chains from nothing to 8 MiB and back down, then to zero. */
static void phase_realloc(void)
{
    phase(4);
    for (int chain = 0; chain < 3; chain++) {
        struct obj *o = obj_new(H_MALLOC, (size_t)1 + (size_t)chain * 40000, 0);
        if (o == NULL)
            continue;
        /* A failed realloc leaves the size as it was: the chain stops. */
        size_t size = o->size;
        while (size < ((size_t)8 << 20)) {
            size = size * 17 / 10 + 3;
            obj_realloc(o, size);
            if (o->size != size)
                break;
        }
        size = o->size;
        while (size > 100) {
            size = size / 3;
            obj_realloc(o, size);
            if (o->size != size)
                break;
        }
        if (o->p != NULL && chain != 1)
            obj_realloc(o, 0);
    }
    check_all("realloc");
    check_stats("after realloc");
}

/* Objects larger than the heap's reservation: new reservations and new
 * page-map arenas.  Then a grow that cannot extend the reservation: the
 * address right after it is taken (the kernel puts new mappings below the
 * old ones anyway, but this makes sure), no free run is big enough, and
 * the span structures' chunk is used up (the test sets that state
 * directly), so the rest of the old reservation joins the heap as a free
 * run in a span from a new chunk: failing that chunk must not leak the new
 * reservation. */
static void phase_huge(void)
{
    phase(5);
    struct obj *a = obj_new(H_MALLOC, (size_t)100 << 20, 0);
    obj_new(H_MALLOC, (size_t)150 << 20, 0);

    uintptr_t end = sm_heap.cur_end;
    void *block = mmap((void *)end, 1 << 16, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (block != MAP_FAILED && (uintptr_t)block != end)
        munmap(block, 1 << 16);
    sm_mheap_lock(&sm_heap);
    size_t biggest = sm_heap.cur_end - sm_heap.cur_base;
    for (struct sm_mspan *s = sm_heap.freelarge.first; s; s = s->next)
        if (s->npages << SM_PAGE_SHIFT > biggest)
            biggest = s->npages << SM_PAGE_SHIFT;
    sm_mheap_unlock(&sm_heap);
    span_chunk_used_up();
    obj_new(H_MALLOC, biggest + ((size_t)1 << 20), 0);

    obj_new(H_CALLOC, (size_t)20 << 20, 0);
    if (a)
        obj_free(a);
    check_all("huge");
    check_stats("after huge");
}

/* Forty threads alive at once, made one after another, each allocating a
 * few objects that the main thread checks and frees later: more thread
 * caches than one chunk holds. */
enum { NTHREADS = 40, PER_THREAD = 6 };
static pthread_mutex_t tlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tcond = PTHREAD_COND_INITIALIZER;
static int tdone, trelease;

static void *thread_body(void *arg)
{
    (void)arg;
    for (int k = 0; k < PER_THREAD; k++)
        obj_new(H_MALLOC, (size_t)24 + (size_t)k * 1500, 0);
    pthread_mutex_lock(&tlock);
    tdone++;
    pthread_cond_broadcast(&tcond);
    while (!trelease)
        pthread_cond_wait(&tcond, &tlock);
    pthread_mutex_unlock(&tlock);
    return NULL;
}

static void phase_threads(void)
{
    phase(6);
    /* glibc keeps allocations for the threads it caches: from here the
     * stats hold more than our objects. */
    track_exact = false;
    pthread_t th[NTHREADS];
    bool made[NTHREADS] = {false};
    tdone = trelease = 0;
    int created = 0;
    for (int i = 0; i < NTHREADS; i++) {
        call_begin();
        int rc = pthread_create(&th[i], NULL, thread_body, NULL);
        call_end();
        if (rc != 0) {
            if (rc != EAGAIN)
                child_fail("pthread_create: %d", rc);
            /* glibc could not get the new thread's memory: ENOMEM for us. */
            call_failed("pthread_create", 0, ENOMEM);
            continue;
        }
        made[i] = true;
        created++;
        /* One thread at a time: the numbering of mappings stays fixed. */
        pthread_mutex_lock(&tlock);
        while (tdone < created)
            pthread_cond_wait(&tcond, &tlock);
        pthread_mutex_unlock(&tlock);
    }
    pthread_mutex_lock(&tlock);
    trelease = 1;
    pthread_cond_broadcast(&tcond);
    pthread_mutex_unlock(&tlock);
    for (int i = 0; i < NTHREADS; i++)
        if (made[i] && pthread_join(th[i], NULL) != 0)
            child_fail("pthread_join failed");
    check_all("threads");
    check_stats("after threads");
}

static void free_everything(void)
{
    phase(7);
    for (int i = 0; i < nobjs; i++)
        obj_free(&objs[i]);
    nobjs = 0;
    if (live != 0)
        child_fail("%llu objects still counted live", (unsigned long long)live);
    check_stats("everything freed");
    sm_free_os_memory();
    check_stats("after sm_free_os_memory");
}

static void workload(enum mode mode, uint64_t n)
{
    R.mode = mode;
    R.n = n;
    struct sm_memstats ms;
    sm_read_memstats(&ms);
    base_objects = ms.heap_objects;
    base_alloc = ms.heap_alloc;
    live = live_bytes = 0;
    track_exact = true;
    observe_reset();
    R.c0 = sm_os_map_calls();
    if (mode == M_FAULT)
        sm_os_fail_nth(n);
    phase_small();
    phase_large();
    phase_calloc();
    phase_aligned();
    phase_realloc();
    phase_huge();
    phase_threads();
    if (mode == M_FAULT) {
        rep->fault_fired = calls_now() >= n;
        sm_os_fail_nth(0);
    }
    free_everything();
}

/* ---- running children ---------------------------------------------------------- */

struct walk_result {
    int runs, failures, surfaced, absorbed, unfired;
    int by_phase[8];
    char first[3][600];
};

static void record_failure(struct walk_result *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void record_failure(struct walk_result *w, const char *fmt, ...)
{
    if (w->failures < 3) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->first[w->failures], sizeof w->first[0], fmt, ap);
        va_end(ap);
    }
    w->failures++;
}

typedef void (*child_fn)(uint64_t arg);

/* Run fn(arg) in a child; true if it exited 0 without reporting a failure.
 * The report stays in *rep; *why says what went wrong. */
static bool run_child(child_fn fn, uint64_t arg, char *why, size_t whylen)
{
    memset(rep, 0, sizeof *rep);
    rep->phase_of_failure = -1;
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "fork: %s", strerror(errno));
        return false;
    }
    if (pid == 0) {
        alarm(120);
        fn(arg);
        _exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) {
        snprintf(why, whylen, "waitpid: %s", strerror(errno));
        return false;
    }
    if (WIFSIGNALED(st)) {
        snprintf(why, whylen, "killed by signal %d in phase %s%s%s", WTERMSIG(st),
                 phase_name[R.phase], rep->failed ? ": " : "", rep->failed ? rep->msg : "");
        return false;
    }
    if (rep->failed || WEXITSTATUS(st) != 0) {
        snprintf(why, whylen, "exit %d: %s", WEXITSTATUS(st), rep->msg);
        return false;
    }
    return true;
}

static void child_count(uint64_t unused)
{
    (void)unused;
    workload(M_COUNT, 0);
    rep->calls = calls_now();
    workload(M_CLEAN, 0);
}

static void child_fault(uint64_t n)
{
    workload(M_FAULT, n);
    /* The fault is gone: the same workload, nothing may fail. */
    int failed_before = rep->nnull;
    workload(M_CLEAN, 0);
    rep->nnull = failed_before;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void walk(bool profiled)
{
    static char why[700];
    /* Sampling every allocation makes the profiler's mappings part of
     * the numbering; the parent samples nothing meanwhile. */
    size_t old_rate = sm_set_profile_rate(profiled ? 1 : 0);
    uint64_t kinds[K_NKINDS];
    if (!run_child(child_count, 0, why, sizeof why))
        fail_msg("counting run: %s", why);
    uint64_t count = rep->calls;
    memcpy(kinds, rep->kinds, sizeof kinds);
    if (verbose)
        fprintf(stderr, "counting run: %llu mappings\n", (unsigned long long)count);

    /* Every N up to 400; past that the first 200 and 200 spread evenly. */
    static struct walk_result w;
    memset(&w, 0, sizeof w);
    uint64_t step = count <= 400 ? 1 : (count - 200 + 199) / 200;
    for (uint64_t n = 1; n <= count; n += n < 200 ? 1 : step) {
        w.runs++;
        double t0 = now_s();
        bool ok = run_child(child_fault, n, why, sizeof why);
        if (verbose)
            fprintf(stderr, "N=%llu: %s %.3fs, %d failed, fault %s, phase %d %s\n",
                    (unsigned long long)n, ok ? "ok" : "FAIL", now_s() - t0, rep->nnull,
                    rep->fault_fired ? "fired" : "not fired", rep->phase_of_failure,
                    ok ? "" : why);
        if (!ok) {
            record_failure(&w, "mapping %llu of %llu: %s", (unsigned long long)n,
                           (unsigned long long)count, why);
            continue;
        }
        if (!rep->fault_fired) {
            w.unfired++;
            record_failure(&w, "mapping %llu of %llu was never asked for", (unsigned long long)n,
                           (unsigned long long)count);
        } else if (rep->nnull > 0) {
            w.surfaced++;
            if (rep->phase_of_failure >= 0)
                w.by_phase[rep->phase_of_failure]++;
        } else {
            w.absorbed++;
        }
    }

    /* The numbering must not drift between runs. */
    if (!run_child(child_count, 0, why, sizeof why))
        fail_msg("second counting run: %s", why);
    uint64_t count2 = rep->calls;
    sm_set_profile_rate(old_rate);

    print_message("# fault walk%s: the workload asks for %llu mappings: ",
                  profiled ? " (profiling every allocation)" : "", (unsigned long long)count);
    for (int k = 0; k < K_NKINDS; k++)
        print_message("%s%llu %s", k ? ", " : "", (unsigned long long)kinds[k], kind_name[k]);
    print_message("\n# %d runs, each failing one mapping: %d failed an allocation with ENOMEM "
                  "(small %d, large %d, calloc %d, aligned %d, realloc %d, huge %d, threads %d), "
                  "%d absorbed; %d wrong\n",
                  w.runs, w.surfaced, w.by_phase[0], w.by_phase[1], w.by_phase[2], w.by_phase[3],
                  w.by_phase[4], w.by_phase[5], w.by_phase[6], w.absorbed, w.failures);
    for (int i = 0; i < w.failures && i < 3; i++)
        print_message("# %s\n", w.first[i]);
    if (w.failures)
        fail_msg("%d of %d fault runs went wrong; the first: %s", w.failures, w.runs, w.first[0]);
    assert_int_equal(count2, count);
    assert_true(count >= 10);
    /* Metadata failures are part of the walk, not only heap growth. */
    assert_true(kinds[K_RESERVE] >= 2);
    assert_true(kinds[K_SPAN] >= 1);
    assert_true(kinds[K_CACHE] >= 1);
    assert_true(kinds[K_ARENA] >= 2);
    if (profiled)
        assert_true(kinds[K_PROF] >= 1);
    assert_true(w.surfaced > 0);
}

static void test_fault_walk(void **state)
{
    (void)state;
    walk(false);
}

static void test_fault_walk_profiled(void **state)
{
    (void)state;
    walk(true);
}

/* ---- RLIMIT_AS ------------------------------------------------------------------ */

static size_t vm_size(void)
{
    /* /proc/self/statm's first field is the size in pages; read(2) into a
     * stack buffer, no stdio. */
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return (size_t)strtoull(buf, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE);
}

static void child_limit(uint64_t margin)
{
    struct rlimit old;
    if (getrlimit(RLIMIT_AS, &old) != 0)
        child_fail("getrlimit: %d", errno);
    size_t used = vm_size();
    if (used == 0)
        child_fail("cannot read /proc/self/statm");
    struct rlimit low = {.rlim_cur = used + margin, .rlim_max = old.rlim_max};
    if (setrlimit(RLIMIT_AS, &low) != 0)
        child_fail("setrlimit: %d", errno);
    workload(M_LIMIT, 0);
    if (setrlimit(RLIMIT_AS, &old) != 0)
        child_fail("setrlimit back: %d", errno);
    int failed = rep->nnull;
    workload(M_CLEAN, 0);
    rep->nnull = failed;
}

static void test_rlimit_walk(void **state)
{
    (void)state;
    static char why[700];
    static const unsigned margins_mib[] = {0, 1, 2, 3, 5, 8, 12, 20, 40, 64, 66, 70, 80, 100,
                                           130, 140, 160, 200, 260, 300, 330, 400, 600, 2048};
    int nfail = 0, nlimited = 0, min_failed = -1;
    char first[700] = "";
    for (size_t i = 0; i < sizeof margins_mib / sizeof margins_mib[0]; i++) {
        uint64_t margin = (uint64_t)margins_mib[i] << 20;
        double t0 = now_s();
        bool ok = run_child(child_limit, margin, why, sizeof why);
        if (verbose)
            fprintf(stderr, "margin %u MiB: %s %.3fs nnull %d %s\n", margins_mib[i],
                    ok ? "ok" : "FAIL", now_s() - t0, rep->nnull, ok ? "" : why);
        if (!ok) {
            if (nfail++ == 0)
                snprintf(first, sizeof first, "margin %u MiB: %s", margins_mib[i], why);
            continue;
        }
        if (rep->nnull > 0) {
            nlimited++;
            if (min_failed < 0 || rep->nnull < min_failed)
                min_failed = rep->nnull;
        }
    }
    print_message("# RLIMIT_AS walk: %zu margins from 0 to 2 GiB over the process's size; "
                  "%d runs had allocations fail with ENOMEM, all recovered; %d wrong\n",
                  sizeof margins_mib / sizeof margins_mib[0], nlimited, nfail);
    if (nfail)
        fail_msg("%d limit runs went wrong; the first: %s", nfail, first);
    /* The small margins must bite, the largest must not. */
    assert_true(nlimited >= 5);
    assert_int_equal(rep->nnull, 0);
}

/* ---- main ---------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    (void)argc;
    /* Fixed settings for a fixed numbering of the mappings: options are
     * read at the first malloc, so they must be in the environment from
     * the start. */
    if (getenv("SM_TEST_OS_FAULTS_SETUP") == NULL) {
        setenv("SM_TEST_OS_FAULTS_SETUP", "1", 1);
        setenv("SPANMALLOC_SCAVENGE", "off", 1);
        setenv("SPANMALLOC_PROFILE_RATE", "0", 1);
        unsetenv("SPANMALLOC_MEMLIMIT");
        unsetenv("SPANMALLOC_STATS");
        unsetenv("SPANMALLOC_PROFILE");
        execv("/proc/self/exe", argv);
        fprintf(stderr, "test_os_faults: cannot re-execute: %s\n", strerror(errno));
        return 1;
    }
    verbose = getenv("SM_TEST_VERBOSE") != NULL;
    rep = mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rep == MAP_FAILED)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_walk),
        cmocka_unit_test(test_fault_walk_profiled),
        cmocka_unit_test(test_rlimit_walk),
    };
    return cmocka_run_group_tests_name("os_faults", tests, NULL, NULL);
}
