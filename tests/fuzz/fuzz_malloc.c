/*
 * fuzz_malloc.c - a libFuzzer target that drives the whole allocation API
 * with sequences of operations decoded from its input, and checks every
 * object's bytes, alignment, usable size and the MemStats after them.
 *
 * How it links.  The allocator is compiled into the fuzzer with its entry
 * points renamed (tests/sanitize/sm_prefix.h, force-included into every
 * source and into this file): this file's malloc(n) is sm_test_malloc(n),
 * served by spanmalloc, while libFuzzer and the sanitizers keep their own
 * malloc.  So (1) every byte of spanmalloc is instrumented for coverage,
 * AddressSanitizer and UndefinedBehaviorSanitizer; (2) libFuzzer's own
 * allocations do not disturb the heap under test, so the stats can be
 * checked exactly: the live objects and bytes they report are precisely
 * this target's slots, after every few operations and at the end of every
 * input; (3) a bug in spanmalloc cannot take libFuzzer's bookkeeping down
 * with it before the crash is reported.  Replacing malloc for the whole
 * fuzzer process (linking libspanmalloc.a first) would test symbol
 * interposition too, but that is what the integration tests and the real
 * programs under LD_PRELOAD already do, and it would lose (2).
 *
 * The input.  Each operation is an opcode byte and its operands; a slot
 * byte picks one of NSLOTS slots; sizes are decoded with a bias to the
 * edges: tiny sizes, every size class's size and one byte either side,
 * 32 KiB (the largest small class) and its neighbours, multiples of the
 * 8 KiB page plus or minus one, and anything up to 4 MiB (rarer: a large
 * object costs its pages at every check and copy).  Input that runs
 * out reads as zeros.  Operations:
 *   malloc, calloc (sometimes with a count that overflows: must be NULL
 *   with ENOMEM), realloc (from NULL, to 0, up and down), memalign,
 *   posix_memalign and aligned_alloc with alignments from 1 to 16 MiB and
 *   some that are not powers of two (EINVAL where glibc says so), valloc,
 *   pvalloc, free, malloc_usable_size, sm_read_memstats,
 *   sm_free_os_memory, the release policy, the soft memory limit, and the
 *   profiler's sampling rate.
 *
 * The checks.  Each object is filled with a pattern from its slot's seed
 * (all of it up to 16 KiB; beyond, the first and last KiB and 64 bytes
 * every 16 KiB) and checked before it is freed or reallocated, after
 * sm_free_os_memory (which must not release a live page), and at the end.
 * A new pointer must be aligned (16 bytes at least, the asked alignment
 * for the aligned calls, a page for valloc and pvalloc), have a usable
 * size of at least the request (pvalloc: the request rounded up to a
 * page), and calloc's bytes must be zero.  Every STATS_EVERY operations,
 * where the input asks, and at the end with everything live and again with
 * everything freed: the invariants of DESIGN 4, and heap_objects and
 * heap_alloc equal to the live slots' count and usable bytes (a read costs
 * about 2 ms here: the kernel walks the sanitizers' shadow mappings for
 * the rss field, so the reads are not more frequent).  At the end
 * of the input everything is freed and the settings go back to their
 * defaults, so inputs do not depend on each other.
 *
 * A failed check prints one line and aborts; libFuzzer saves the input.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sizeclasses.h"
#include "spanmalloc.h"
#include "../common/pattern.h"

#ifndef SM_TEST_PREFIX
#error "build with -include tests/sanitize/sm_prefix.h: the target calls the renamed entry points"
#endif

enum {
    NSLOTS = 64,
    STATS_EVERY = 64,
    MAX_OPS = 2048,
    MAX_SIZE = 4 << 20,
    PAGE = 4096,
};

struct slot {
    unsigned char *p;
    size_t size;      /* bytes asked for */
    size_t usable;    /* malloc_usable_size when it was made */
    uint64_t seed;
};

static struct slot slots[NSLOTS];
static uint64_t next_seed = 1;
static int nops;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_malloc: operation %d: ", nops);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* ---- decoding ---------------------------------------------------------------- */

struct input {
    const uint8_t *d;
    size_t n, i;
};

static uint8_t next8(struct input *in)
{
    return in->i < in->n ? in->d[in->i++] : 0;
}

static uint16_t next16(struct input *in)
{
    uint16_t v = next8(in);
    return (uint16_t)(v | (uint16_t)next8(in) << 8);
}

static uint32_t next32(struct input *in)
{
    uint32_t v = next16(in);
    return v | (uint32_t)next16(in) << 16;
}

/* Sizes, weighted towards the edges and the small ones (a large object
 * costs its pages at every check and copy). */
static size_t decode_size(struct input *in)
{
    uint8_t sel = next8(in);
    switch (sel % 16) {
    case 0: case 1:
        return next8(in) % 33;
    case 2: case 3: case 4: {
        /* A class's size and one byte either side. */
        uint32_t cls = 1 + next8(in) % (SM_NUM_SIZE_CLASSES - 1);
        return sm_class_to_size[cls] + next8(in) % 3 - 1;
    }
    case 5: case 6:
        return next16(in) % 4097;
    case 7:
        return next16(in) % (SM_MAX_SMALL_SIZE + 2);
    case 8:
        return SM_MAX_SMALL_SIZE + next8(in) % 3 - 1;
    case 9: case 10: {
        size_t k = 1 + next8(in) % 64;
        return k * SM_PAGE_SIZE + next8(in) % 3 - 1;
    }
    case 11: {
        size_t k = 1 + next16(in) % (MAX_SIZE / SM_PAGE_SIZE);
        return k * SM_PAGE_SIZE + next8(in) % 3 - 1;
    }
    case 12:
        return next32(in) % (MAX_SIZE + 1);
    case 13:
        return next32(in) % (256 * 1024 + 1);
    default:
        return 0;
    }
}

/* Mostly powers of two from 1 to 16 MiB; one in eight is any 16-bit value
 * (not a power of two, most of the time). */
static size_t decode_align(struct input *in)
{
    uint8_t a = next8(in);
    if (a % 8 == 7)
        return next16(in);
    return (size_t)1 << (a % 25);
}

/* ---- patterns ------------------------------------------------------------------ */

static void fill(struct slot *s)
{
    s->seed = next_seed++;
    FOR_EACH_PART(s->size, lo, hi, fill_part(s->p, s->seed, lo, hi));
}

/* The pattern of s, on its first limit bytes, read at q. */
static void check_at(const struct slot *s, const unsigned char *q, size_t limit, const char *when)
{
    FOR_EACH_PART(s->size, lo, hi, {
        size_t i = check_part(q, s->seed, lo, hi < limit ? hi : limit);
        if (i != SIZE_MAX)
            fail("%s: object %p of %zu bytes: byte %zu is %#x, not %#x", when, (void *)q,
                 s->size, i, q[i], pattern_byte(s->seed, i));
    });
}

static void check_slot(const struct slot *s, const char *when)
{
    if (s->p == NULL)
        return;
    check_at(s, s->p, s->size, when);
    size_t u = malloc_usable_size(s->p);
    if (u != s->usable)
        fail("%s: malloc_usable_size(%p) changed from %zu to %zu", when, (void *)s->p, s->usable, u);
}

static void check_zero(const char *what, const unsigned char *p, size_t size)
{
    static const unsigned char zero[4096];
    for (size_t i = 0; i < size; i += sizeof zero) {
        size_t n = size - i < sizeof zero ? size - i : sizeof zero;
        if (memcmp(p + i, zero, n) != 0)
            for (size_t k = i; k < i + n; k++)
                if (p[k] != 0)
                    fail("%s = %p: byte %zu of %zu is %#x, not 0", what, (const void *)p, k, size,
                         p[k]);
    }
}

/* ---- new objects ------------------------------------------------------------------ */

/* Check a pointer just returned for size bytes at alignment align. */
static void check_new(const char *what, void *p, size_t size, size_t align)
{
    if (align < 16)
        align = 16;
    if ((uintptr_t)p & (align - 1))
        fail("%s(%zu): %p is not aligned to %zu", what, size, p, align);
    size_t u = malloc_usable_size(p);
    if (u < size)
        fail("%s(%zu): %p has usable size %zu", what, size, p, u);
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].p == p)
            fail("%s(%zu): %p is live already in slot %d", what, size, p, i);
}

static void put(struct slot *s, void *p, size_t size)
{
    s->p = p;
    s->size = size;
    s->usable = malloc_usable_size(p);
    fill(s);
}

static void release(struct slot *s)
{
    if (s->p == NULL)
        return;
    check_slot(s, "before free");
    free(s->p);
    s->p = NULL;
}

static void expect_null(const char *what, void *p, int err, int want)
{
    if (p != NULL)
        fail("%s: %p, expected NULL with errno %d", what, p, want);
    if (err != want)
        fail("%s: NULL with errno %d, expected %d", what, err, want);
}

static size_t round_pow2(size_t a)
{
    if (a <= 1)
        return 1;
    return (size_t)1 << (64 - __builtin_clzll(a - 1));
}

static void op_alloc(struct input *in, struct slot *s, int how)
{
    release(s);
    size_t size = decode_size(in);
    size_t align = 16;
    void *p = NULL;
    errno = 0;
    switch (how) {
    case 0:
        p = malloc(size);
        break;
    case 1: {
        /* One in sixteen asks for a count whose product overflows. */
        uint8_t k = next8(in);
        size_t n = 1 + next8(in) % 4;
        if (k % 16 == 15) {
            if (size < 2)
                size = 2;
            n = SIZE_MAX / size + 1;
            p = calloc(n, size);
            expect_null("calloc overflow", p, errno, ENOMEM);
            return;
        }
        if (size > MAX_SIZE / n)
            size = MAX_SIZE / n;
        p = calloc(n, size);
        if (p == NULL)
            fail("calloc(%zu, %zu) failed: errno %d", n, size, errno);
        check_new("calloc", p, n * size, 16);
        check_zero("calloc", p, n * size);
        put(s, p, n * size);
        return;
    }
    case 2:
        align = decode_align(in);
        p = memalign(align, size);
        /* glibc rounds an alignment that is not a power of two up. */
        align = round_pow2(align);
        break;
    case 3: {
        align = decode_align(in);
        int saved = errno = 4242;
        int rc = posix_memalign(&p, align, size);
        if (errno != saved)
            fail("posix_memalign changed errno");
        bool valid = align != 0 && (align & (align - 1)) == 0 && align % sizeof(void *) == 0;
        if (!valid) {
            if (rc != EINVAL)
                fail("posix_memalign(%zu, %zu) = %d, expected EINVAL", align, size, rc);
            return;
        }
        if (rc != 0)
            fail("posix_memalign(%zu, %zu) = %d", align, size, rc);
        break;
    }
    case 4:
        align = decode_align(in);
        p = aligned_alloc(align, size);
        if (align == 0 || (align & (align - 1))) {
            expect_null("aligned_alloc with a bad alignment", p, errno, EINVAL);
            return;
        }
        break;
    case 5:
        p = valloc(size);
        align = PAGE;
        break;
    default:
        p = pvalloc(size);
        align = PAGE;
        size = size ? (size + PAGE - 1) & ~(size_t)(PAGE - 1) : PAGE;
        break;
    }
    if (p == NULL)
        fail("allocation %d of %zu bytes at %zu failed: errno %d", how, size, align, errno);
    check_new("alloc", p, size, align);
    put(s, p, size);
}

static void op_realloc(struct input *in, struct slot *s)
{
    size_t size = decode_size(in);
    if (s->p == NULL) {
        void *p = realloc(NULL, size);
        if (p == NULL)
            fail("realloc(NULL, %zu) failed", size);
        check_new("realloc(NULL)", p, size, 16);
        put(s, p, size);
        return;
    }
    check_slot(s, "before realloc");
    errno = 0;
    void *q = realloc(s->p, size);
    if (size == 0) {
        /* glibc: frees and returns NULL. */
        if (q != NULL)
            fail("realloc(%p, 0) = %p, expected NULL", (void *)s->p, q);
        s->p = NULL;
        return;
    }
    if (q == NULL)
        fail("realloc(%p, %zu) failed: errno %d", (void *)s->p, size, errno);
    size_t keep = s->size < size ? s->size : size;
    check_at(s, q, keep, "after realloc");
    s->p = NULL;   /* so check_new does not see the old pointer as live */
    check_new("realloc", q, size, 16);
    put(s, q, size);
}

/* ---- stats ------------------------------------------------------------------------- */

static void check_stats(const char *when)
{
    struct sm_memstats ms;
    sm_read_memstats(&ms);
    uint64_t live = 0, bytes = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].p) {
            live++;
            bytes += slots[i].usable;
        }
    if (ms.heap_inuse + ms.heap_idle != ms.heap_sys)
        fail("%s: heap_inuse %llu + heap_idle %llu != heap_sys %llu", when,
             (unsigned long long)ms.heap_inuse, (unsigned long long)ms.heap_idle,
             (unsigned long long)ms.heap_sys);
    if (ms.heap_released > ms.heap_idle)
        fail("%s: heap_released %llu > heap_idle %llu", when, (unsigned long long)ms.heap_released,
             (unsigned long long)ms.heap_idle);
    if (ms.heap_alloc > ms.heap_inuse)
        fail("%s: heap_alloc %llu > heap_inuse %llu", when, (unsigned long long)ms.heap_alloc,
             (unsigned long long)ms.heap_inuse);
    if (ms.heap_objects != ms.mallocs - ms.frees)
        fail("%s: heap_objects %llu != mallocs %llu - frees %llu", when,
             (unsigned long long)ms.heap_objects, (unsigned long long)ms.mallocs,
             (unsigned long long)ms.frees);
    if (ms.sys != ms.heap_sys + ms.mspan_sys + ms.mcache_sys + ms.other_sys)
        fail("%s: sys %llu is not the sum of its parts", when, (unsigned long long)ms.sys);
    if (ms.heap_objects != live)
        fail("%s: heap_objects %llu, but %llu objects are live", when,
             (unsigned long long)ms.heap_objects, (unsigned long long)live);
    if (ms.heap_alloc != bytes)
        fail("%s: heap_alloc %llu, but the live objects' usable bytes are %llu", when,
             (unsigned long long)ms.heap_alloc, (unsigned long long)bytes);
}

/* ---- the target ---------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Profiling only where an input asks for it: buckets are never freed,
     * and random sizes would make a new one for nearly every sample. */
    sm_set_profile_rate(0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size, 0};
    nops = 0;
    while (in.i < in.n && nops < MAX_OPS) {
        uint8_t op = next8(&in);
        struct slot *s = &slots[next8(&in) % NSLOTS];
        nops++;
        switch (op % 16) {
        case 0: case 1: op_alloc(&in, s, 0); break;            /* malloc */
        case 2: op_alloc(&in, s, 1); break;                    /* calloc */
        case 3: op_alloc(&in, s, 2); break;                    /* memalign */
        case 4: op_alloc(&in, s, 3); break;                    /* posix_memalign */
        case 5: op_alloc(&in, s, 4); break;                    /* aligned_alloc */
        case 6: op_alloc(&in, s, 5 + (op >> 4) % 2); break;    /* valloc, pvalloc */
        case 7: case 8: op_realloc(&in, s); break;
        case 9: case 10: release(s); break;
        case 11: check_slot(s, "malloc_usable_size"); break;
        case 12: check_stats("on request"); break;
        case 13:
            sm_free_os_memory();
            for (int i = 0; i < NSLOTS; i++)
                check_slot(&slots[i], "after sm_free_os_memory");
            break;
        case 14: {
            uint8_t k = next8(&in);
            if (k % 2)
                sm_set_release_policy((enum sm_release)(k / 2 % 3));
            else
                sm_set_memory_limit(k / 2 % 4 == 0 ? SIZE_MAX : ((size_t)(k / 2) << 20));
            break;
        }
        default: {
            static const size_t rates[] = {0, 4096, 65536, 524288};
            sm_set_profile_rate(rates[next8(&in) % 4]);
            break;
        }
        }
        if (nops % STATS_EVERY == 0)
            check_stats("periodic");
    }
    for (int i = 0; i < NSLOTS; i++)
        check_slot(&slots[i], "at the end");
    check_stats("at the end, all live");
    for (int i = 0; i < NSLOTS; i++)
        release(&slots[i]);
    check_stats("at the end, all freed");
    sm_set_release_policy(SM_RELEASE_DONTNEED);
    sm_set_memory_limit(SIZE_MAX);
    sm_set_profile_rate(0);
    return 0;
}
