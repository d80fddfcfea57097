/*
 * test_api.c - the libc allocation API as a program sees it, through the
 * shared library: malloc, free, calloc, realloc, reallocarray, memalign,
 * posix_memalign, aligned_alloc, valloc, pvalloc, malloc_usable_size.
 *
 * The reference is glibc's documented behaviour, errno included: a request
 * that cannot be met is NULL with ENOMEM, a bad alignment EINVAL,
 * realloc(p, 0) frees p and returns NULL, memalign rounds an alignment that
 * is not a power of two up.  Where spanmalloc promises more than glibc (a
 * realloc within the size class stays in place, an aligned small object
 * costs no page, calloc does not touch memory fresh from the OS) the test
 * says so.
 *
 * Sizes that must reach the library unchanged go through opaque(), so the
 * compiler cannot fold a malloc(SIZE_MAX) to NULL on its own; results that
 * are only compared with NULL go through opaque_ptr(), or clang may remove
 * the call and assume it succeeded.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "spanmalloc.h"
#include "proc.h"

#define MiB ((size_t)1 << 20)

/* ---- helpers -------------------------------------------------------------- */

/* Every test first makes sure the malloc it calls is spanmalloc's. */
static void require_spanmalloc(void)
{
    assert_non_null(dlsym(RTLD_DEFAULT, "sm_version"));
}

static size_t opaque(size_t x)
{
    __asm__ volatile("" : "+r"(x));
    return x;
}

static void *opaque_ptr(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

static int is_aligned(const void *p, size_t align)
{
    return ((uintptr_t)p & (align - 1)) == 0;
}

/* splitmix64: a fixed seed gives the same run every time. */
static uint64_t rng_state = 0x5eed5eed12345678u;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Fill n bytes with one byte value; check_fill says whether they still hold
 * it.  Word-wise, so megabytes are cheap. */
static void fill(void *p, size_t n, uint8_t b)
{
    memset(p, b, n);
}

static int check_fill(const void *p, size_t n, uint8_t b)
{
    const unsigned char *c = p;
    uint64_t w = 0x0101010101010101u * b;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, c + i, 8);
        if (v != w)
            return 0;
    }
    for (; i < n; i++)
        if (c[i] != b)
            return 0;
    return 1;
}

static int all_zero(const void *p, size_t n)
{
    return check_fill(p, n, 0);
}

/* A byte pattern that differs from one position to the next, for content
 * that must survive realloc. */
static void fill_seq(void *p, size_t n, uint32_t seed)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        c[i] = (unsigned char)((i * 131u + seed) ^ (i >> 8));
}

static int check_seq(const void *p, size_t n, uint32_t seed)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != (unsigned char)((i * 131u + seed) ^ (i >> 8)))
            return 0;
    return 1;
}

/* ---- identity ------------------------------------------------------------- */

static void test_version(void **state)
{
    (void)state;
    require_spanmalloc();
    const char *(*version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "sm_version");
    assert_string_equal(version(), SPANMALLOC_VERSION);
    assert_string_equal(sm_version(), SPANMALLOC_VERSION);
}

/* ---- calloc of memory fresh from the OS -------------------------------------
 * First in the list, while the heap is young: pages that come straight from
 * mmap are zero already, and calloc must not write them (an allocator that
 * clears them makes them all resident). */

enum { CALLOC_BIG = 256 << 20 };
/* RSS may move a little for reasons of its own (the page map's span
 * pointers for 32768 pages: 256 KiB; page tables; cmocka's output).
 * Clearing the block would add 256 MiB. */
#define RSS_SLACK_KIB (8 * 1024)

static void calloc_big_check_rss(void)
{
    long before = rss_kib();
    assert_true(before > 0);
    unsigned char *p = calloc(1, opaque(CALLOC_BIG));
    assert_non_null(p);
    long after = rss_kib();
    assert_true(after > 0);
    print_message("# calloc(256 MiB): RSS %ld KiB -> %ld KiB\n", before, after);
    if (after - before >= RSS_SLACK_KIB)
        fail_msg("calloc(256 MiB) made %ld KiB resident: it cleared memory fresh from the OS",
                 after - before);
    /* And it is zero: one byte per 4 KiB page, and both ends. */
    for (size_t i = 0; i < CALLOC_BIG; i += 4096)
        assert_int_equal(p[i], 0);
    assert_true(all_zero(p, 4096));
    assert_true(all_zero(p + CALLOC_BIG - 4096, 4096));
    free(p);
}

static void test_calloc_fresh_not_touched(void **state)
{
    (void)state;
    require_spanmalloc();
    calloc_big_check_rss();
}

/* The heap has just freed dirty pages that sit next to where it grows: a
 * large calloc that takes them together with fresh pages must clear the
 * dirty ones and leave the fresh ones alone. */
static void test_calloc_fresh_not_touched_after_dirty_free(void **state)
{
    (void)state;
    require_spanmalloc();
    /* Pages given back with MADV_DONTNEED read as zero again: after this,
     * the earlier calloc's pages count as fresh. */
    sm_set_release_policy(SM_RELEASE_DONTNEED);
    sm_free_os_memory();
    size_t n = opaque(4 * MiB);
    unsigned char *d = malloc(n);
    assert_non_null(d);
    fill(d, n, 0xAB);
    free(d);
    calloc_big_check_rss();
}

/* ---- malloc --------------------------------------------------------------- */

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

static void test_malloc_zero_unique(void **state)
{
    (void)state;
    require_spanmalloc();
    enum { N = 2000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(opaque(0));
        assert_non_null(p[i]);
        assert_true(is_aligned(p[i], 16));
        /* Whatever it says is usable, is. */
        fill(p[i], malloc_usable_size(p[i]), (uint8_t)i);
    }
    for (int i = 0; i < N; i++)
        assert_true(check_fill(p[i], malloc_usable_size(p[i]), (uint8_t)i));
    qsort(p, N, sizeof p[0], cmp_ptr);
    for (int i = 1; i < N; i++)
        assert_ptr_not_equal(p[i - 1], p[i]);
    for (int i = 0; i < N; i++)
        free(p[i]);
}

static void test_alignment_every_size(void **state)
{
    (void)state;
    require_spanmalloc();
    for (size_t n = 0; n <= 70000; n++) {
        void *p = malloc(opaque(n));
        assert_non_null(p);
        if (!is_aligned(p, 16))
            fail_msg("malloc(%zu) = %p is not 16-byte aligned", n, p);
        if (malloc_usable_size(p) < n)
            fail_msg("malloc_usable_size(malloc(%zu)) = %zu", n, malloc_usable_size(p));
        free(p);
    }
    /* Bigger sizes: a geometric sample, each next to a page boundary. */
    for (size_t base = 70000; base <= 64 * MiB; base += base / 3) {
        for (int d = -1; d <= 1; d++) {
            size_t n = ((base + 8191) & ~(size_t)8191) + (size_t)d;
            void *p = malloc(opaque(n));
            assert_non_null(p);
            assert_true(is_aligned(p, 16));
            assert_true(malloc_usable_size(p) >= n);
            free(p);
        }
    }
}

/* Every usable byte of every size up to 70000 can be written, and no object
 * overlaps the ones next to it: 64 stay alive at a time, each filled with its
 * own byte and checked when it leaves. */
static void test_usable_size_is_usable(void **state)
{
    (void)state;
    require_spanmalloc();
    enum { LIVE = 64 };
    void *live[LIVE] = {0};
    size_t usable[LIVE] = {0};
    uint8_t tag[LIVE] = {0};
    size_t sizes_done = 0;
    for (size_t n = 0; n <= 70000 + 30; n++) {
        /* Every size up to 4 KiB, then a stride that hits every class. */
        if (n > 4096 && n <= 70000 && n % 61 != 0)
            continue;
        size_t size = n <= 70000 ? n : MiB + (n - 70000) * 40009;
        int slot = (int)(sizes_done++ % LIVE);
        if (live[slot]) {
            if (!check_fill(live[slot], usable[slot], tag[slot]))
                fail_msg("object %p (usable %zu) was overwritten", live[slot], usable[slot]);
            free(live[slot]);
        }
        void *p = malloc(opaque(size));
        assert_non_null(p);
        size_t u = malloc_usable_size(p);
        if (u < size)
            fail_msg("malloc_usable_size(malloc(%zu)) = %zu", size, u);
        tag[slot] = (uint8_t)(sizes_done * 37 + 1);
        fill(p, u, tag[slot]);
        live[slot] = p;
        usable[slot] = u;
    }
    for (int i = 0; i < LIVE; i++) {
        if (live[i]) {
            assert_true(check_fill(live[i], usable[i], tag[i]));
            free(live[i]);
        }
    }
}

static void test_malloc_huge_enomem(void **state)
{
    (void)state;
    require_spanmalloc();
    const size_t sizes[] = {
        SIZE_MAX, SIZE_MAX - 4096, SIZE_MAX / 2, SIZE_MAX / 2 + 1,
        (size_t)1 << 50, (size_t)PTRDIFF_MAX,
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 0;
        void *p = opaque_ptr(malloc(opaque(sizes[i])));
        if (p != NULL)
            fail_msg("malloc(%#zx) = %p, expected NULL", sizes[i], p);
        assert_int_equal(errno, ENOMEM);
    }
    /* The heap is still fine. */
    void *p = malloc(opaque(100));
    assert_non_null(p);
    free(p);
}

static void test_free_null(void **state)
{
    (void)state;
    require_spanmalloc();
    errno = 1234;
    free(opaque_ptr(NULL));
    assert_int_equal(errno, 1234);
    assert_int_equal(malloc_usable_size(opaque_ptr(NULL)), 0);
}

/* ---- calloc --------------------------------------------------------------- */

static const size_t calloc_sizes[] = {
    1, 8, 16, 17, 100, 1000, 4096, 8191, 8192, 20000, 32768,
    32769, 40000, 100000, 1 << 20, (5 << 20) + 123,
};
#define NCALLOC (sizeof calloc_sizes / sizeof calloc_sizes[0])

static void test_calloc_zeroes(void **state)
{
    (void)state;
    require_spanmalloc();
    for (size_t i = 0; i < NCALLOC; i++) {
        size_t n = calloc_sizes[i];
        unsigned char *p = calloc(opaque(n), 1);
        assert_non_null(p);
        assert_true(is_aligned(p, 16));
        assert_true(all_zero(p, n));
        fill(p, n, 0xCD);
        free(p);
        p = calloc(1, opaque(n));
        assert_non_null(p);
        assert_true(all_zero(p, n));
        free(p);
    }
    /* n * size with neither a whole page */
    unsigned char *p = calloc(opaque(3000), 37);
    assert_non_null(p);
    assert_true(all_zero(p, 3000 * 37));
    free(p);
    p = calloc(opaque(0), 10);
    assert_non_null(p);
    free(p);
}

/* Dirty memory that is freed and handed out again by calloc is cleared.
 * Several objects per size, so the reuse is certain (and checked). */
static void test_calloc_reuses_dirty_memory_zeroed(void **state)
{
    (void)state;
    require_spanmalloc();
    enum { K = 16 };
    for (size_t i = 0; i < NCALLOC; i++) {
        size_t n = calloc_sizes[i];
        void *dirty[K], *clean[K];
        for (int k = 0; k < K; k++) {
            dirty[k] = malloc(opaque(n));
            assert_non_null(dirty[k]);
            fill(dirty[k], n, 0xAB);
        }
        for (int k = K - 1; k >= 0; k--)
            free(dirty[k]);
        int reused = 0;
        for (int k = 0; k < K; k++) {
            clean[k] = calloc(1, opaque(n));
            assert_non_null(clean[k]);
            if (!all_zero(clean[k], n))
                fail_msg("calloc(1, %zu) = %p holds old bytes", n, clean[k]);
            for (int j = 0; j < K; j++)
                reused += clean[k] == dirty[j];
        }
        /* The test means something only if old memory came back. */
        if (reused == 0)
            fail_msg("calloc(1, %zu) reused none of %d freed objects", n, K);
        for (int k = 0; k < K; k++)
            free(clean[k]);
    }
}

static void test_calloc_overflow(void **state)
{
    (void)state;
    require_spanmalloc();
    const size_t pairs[][2] = {
        {SIZE_MAX / 2, 3}, {3, SIZE_MAX / 2}, {SIZE_MAX, SIZE_MAX},
        {(size_t)1 << 32, (size_t)1 << 32}, {SIZE_MAX, 2},
        /* no overflow, but too big */
        {(size_t)1 << 25, (size_t)1 << 25}, {1, SIZE_MAX},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        errno = 0;
        void *p = opaque_ptr(calloc(opaque(pairs[i][0]), opaque(pairs[i][1])));
        if (p != NULL)
            fail_msg("calloc(%#zx, %#zx) = %p, expected NULL", pairs[i][0], pairs[i][1], p);
        assert_int_equal(errno, ENOMEM);
    }
}

/* ---- realloc -------------------------------------------------------------- */

static void test_realloc_null_is_malloc(void **state)
{
    (void)state;
    require_spanmalloc();
    void *p = realloc(opaque_ptr(NULL), opaque(100));
    assert_non_null(p);
    assert_true(is_aligned(p, 16));
    assert_true(malloc_usable_size(p) >= 100);
    fill(p, 100, 1);
    free(p);
    p = realloc(opaque_ptr(NULL), opaque(200000));
    assert_non_null(p);
    assert_true(malloc_usable_size(p) >= 200000);
    fill(p, 200000, 2);
    free(p);
    /* realloc(NULL, 0) is malloc(0): a unique pointer. */
    p = realloc(opaque_ptr(NULL), opaque(0));
    assert_non_null(p);
    free(p);
}

/* glibc frees and returns NULL.  Evidence that it was freed: the thread
 * cache hands the same object out again next (its lists are LIFO). */
static void test_realloc_zero_frees(void **state)
{
    (void)state;
    require_spanmalloc();
    void *p = malloc(opaque(100));
    assert_non_null(p);
    fill(p, 100, 7);
    errno = 0;
    void *r = opaque_ptr(realloc(p, opaque(0)));
    assert_null(r);
    void *q = opaque_ptr(malloc(opaque(100)));
    assert_ptr_equal(q, p);
    free(q);
}

struct resize {
    size_t from, to;
    const char *what;
};

static void test_realloc_keeps_content(void **state)
{
    (void)state;
    require_spanmalloc();
    static const struct resize cases[] = {
        {100, 1000, "small to small"},
        {24, 30000, "small to largest class"},
        {1000, 100000, "small to large"},
        {32768, 32769, "largest class to large"},
        {100000, 5 << 20, "large to larger"},
        {5 << 20, (40 << 20) + 5, "large to much larger"},
        {100000, 500, "large to small"},
        {1000, 100, "small shrink"},
        {(5 << 20) + 17, 100000, "large shrink by more than half"},
        {100000, 90000, "large shrink by less than half"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct resize *c = &cases[i];
        unsigned char *p = malloc(opaque(c->from));
        assert_non_null(p);
        fill_seq(p, c->from, (uint32_t)i);
        unsigned char *q = realloc(p, opaque(c->to));
        if (q == NULL)
            fail_msg("%s: realloc(%zu -> %zu) failed", c->what, c->from, c->to);
        assert_true(is_aligned(q, 16));
        size_t keep = c->from < c->to ? c->from : c->to;
        if (!check_seq(q, keep, (uint32_t)i))
            fail_msg("%s: realloc(%zu -> %zu) lost content", c->what, c->from, c->to);
        size_t u = malloc_usable_size(q);
        assert_true(u >= c->to);
        fill(q, u, 0x5A);
        assert_true(check_fill(q, u, 0x5A));
        free(q);
    }
}

/* A new size the object's block still holds needs no move: the same class
 * (100 and 110 are both in the 112-byte class), or any size up to what
 * malloc_usable_size reports.  Like glibc, which also resizes in place when
 * the chunk fits. */
static void test_realloc_in_place(void **state)
{
    (void)state;
    require_spanmalloc();
    void *p = malloc(opaque(100));
    assert_non_null(p);
    assert_int_equal(malloc_usable_size(p), 112);
    fill_seq(p, 100, 3);
    void *q = realloc(p, opaque(110));
    assert_ptr_equal(q, p);
    assert_true(check_seq(q, 100, 3));
    free(q);

    for (size_t n = 1; n <= 300000; n = n < 4096 ? n + 1 : n + 4093) {
        p = malloc(opaque(n));
        assert_non_null(p);
        size_t u = malloc_usable_size(p);
        fill_seq(p, n, (uint32_t)n);
        q = realloc(p, opaque(u));
        if (q != p)
            fail_msg("realloc(malloc(%zu), usable %zu) moved %p -> %p", n, u, p, q);
        assert_true(check_seq(q, n, (uint32_t)n));
        fill(q, u, 0x11);
        free(q);
    }
}

static void test_realloc_failure_keeps_block(void **state)
{
    (void)state;
    require_spanmalloc();
    const size_t sizes[] = {40, 5000, 100000, 3 << 20};
    const size_t huge[] = {SIZE_MAX, SIZE_MAX / 2, (size_t)1 << 50};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = malloc(opaque(sizes[i]));
        assert_non_null(p);
        fill_seq(p, sizes[i], 99);
        for (size_t h = 0; h < sizeof huge / sizeof huge[0]; h++) {
            errno = 0;
            void *q = opaque_ptr(realloc(opaque_ptr(p), opaque(huge[h])));
            assert_null(q);
            assert_int_equal(errno, ENOMEM);
            assert_true(malloc_usable_size(p) >= sizes[i]);
            assert_true(check_seq(p, sizes[i], 99));
        }
        /* Still a live block: it can grow for real and be freed. */
        p = realloc(p, opaque(sizes[i] * 2));
        assert_non_null(p);
        assert_true(check_seq(p, sizes[i], 99));
        free(p);
    }
}

static void test_reallocarray(void **state)
{
    (void)state;
    require_spanmalloc();
    unsigned char *p = reallocarray(opaque_ptr(NULL), opaque(10), opaque(100));
    assert_non_null(p);
    assert_true(malloc_usable_size(p) >= 1000);
    fill_seq(p, 1000, 5);
    unsigned char *q = reallocarray(p, opaque(1000), opaque(100));
    assert_non_null(q);
    assert_true(check_seq(q, 1000, 5));
    p = q;

    errno = 0;
    q = opaque_ptr(reallocarray(opaque_ptr(p), opaque(SIZE_MAX / 2), opaque(3)));
    assert_null(q);
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    q = opaque_ptr(reallocarray(opaque_ptr(p), opaque((size_t)1 << 33), opaque((size_t)1 << 33)));
    assert_null(q);
    assert_int_equal(errno, ENOMEM);
    /* p is untouched by the failures */
    assert_true(check_seq(p, 1000, 5));
    assert_true(malloc_usable_size(p) >= 100000);
    errno = 0;
    q = opaque_ptr(reallocarray(opaque_ptr(NULL), opaque(SIZE_MAX / 2), opaque(3)));
    assert_null(q);
    assert_int_equal(errno, ENOMEM);
    free(p);
}

/* ---- aligned allocation ------------------------------------------------------ */

enum { ALIGN_FN_MEMALIGN, ALIGN_FN_POSIX, ALIGN_FN_ALIGNED_ALLOC, ALIGN_FN_N };
static const char *const align_fn_name[] = {"memalign", "posix_memalign", "aligned_alloc"};

static void *aligned_by(int fn, size_t align, size_t size)
{
    switch (fn) {
    case ALIGN_FN_MEMALIGN:
        return memalign(opaque(align), opaque(size));
    case ALIGN_FN_POSIX: {
        void *p = NULL;
        int rc = posix_memalign(&p, opaque(align), opaque(size));
        return rc == 0 ? p : NULL;
    }
    default:
        return aligned_alloc(opaque(align), opaque(size));
    }
}

static void test_aligned_every_power_of_two(void **state)
{
    (void)state;
    require_spanmalloc();
    static const size_t sizes[] = {1, 100, 5000, 100000};
    enum { NS = 4, NA = 23 };   /* 2^0 .. 2^22 = 4 MiB */
    static void *objs[ALIGN_FN_N][NA][NS];
    for (int fn = 0; fn < ALIGN_FN_N; fn++) {
        size_t min_align = fn == ALIGN_FN_POSIX ? sizeof(void *) : 1;
        for (int a = 0; a < NA; a++) {
            size_t align = (size_t)1 << a;
            for (int s = 0; s < NS; s++) {
                objs[fn][a][s] = NULL;
                if (align < min_align)
                    continue;
                void *p = aligned_by(fn, align, sizes[s]);
                if (p == NULL)
                    fail_msg("%s(%zu, %zu) failed", align_fn_name[fn], align, sizes[s]);
                if (!is_aligned(p, align) || !is_aligned(p, 16))
                    fail_msg("%s(%zu, %zu) = %p is misaligned", align_fn_name[fn], align, sizes[s], p);
                size_t u = malloc_usable_size(p);
                if (u < sizes[s])
                    fail_msg("%s(%zu, %zu): usable %zu", align_fn_name[fn], align, sizes[s], u);
                fill(p, u, (uint8_t)(fn * 100 + a * 4 + s));
                objs[fn][a][s] = p;
            }
        }
    }
    /* All alive at once: none overlapped another. */
    for (int fn = 0; fn < ALIGN_FN_N; fn++)
        for (int a = 0; a < NA; a++)
            for (int s = 0; s < NS; s++) {
                void *p = objs[fn][a][s];
                if (p == NULL)
                    continue;
                if (!check_fill(p, malloc_usable_size(p), (uint8_t)(fn * 100 + a * 4 + s)))
                    fail_msg("%s(%zu, %zu) = %p was overwritten", align_fn_name[fn],
                             (size_t)1 << a, sizes[s], p);
                free(p);
            }
}

/* A small aligned object comes from a size class whose objects are aligned,
 * not from a page of its own. */
static void test_aligned_small_is_cheap(void **state)
{
    (void)state;
    require_spanmalloc();
    void *p = memalign(opaque(64), opaque(10));
    assert_non_null(p);
    assert_true(is_aligned(p, 64));
    assert_true(malloc_usable_size(p) < 4096);
    free(p);
    p = memalign(opaque(4096), opaque(10));
    assert_non_null(p);
    assert_true(is_aligned(p, 4096));
    assert_true(malloc_usable_size(p) <= 8192);
    free(p);
    for (size_t align = 32; align <= 2048; align *= 2) {
        for (int fn = 0; fn < ALIGN_FN_N; fn++) {
            p = aligned_by(fn, align, 10);
            assert_non_null(p);
            assert_true(is_aligned(p, align));
            if (malloc_usable_size(p) >= 4096)
                fail_msg("%s(%zu, 10): usable %zu", align_fn_name[fn], align, malloc_usable_size(p));
            free(p);
        }
    }
}

static void test_posix_memalign_einval(void **state)
{
    (void)state;
    require_spanmalloc();
    const size_t bad[] = {0, 1, 2, 3, 4, 24, 48, 100, 4097, SIZE_MAX};
    void *const sentinel = (void *)0x5e71;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *out = sentinel;
        errno = 4321;
        int rc = posix_memalign(&out, opaque(bad[i]), opaque(10));
        if (rc != EINVAL)
            fail_msg("posix_memalign(align %zu) = %d, expected EINVAL", bad[i], rc);
        assert_ptr_equal(out, sentinel);
        assert_int_equal(errno, 4321);
    }
    /* ENOMEM is returned too, and *out is left alone. */
    void *out = sentinel;
    assert_int_equal(posix_memalign(&out, opaque(64), opaque(SIZE_MAX)), ENOMEM);
    assert_ptr_equal(out, sentinel);
    assert_int_equal(posix_memalign(&out, opaque(1 << 20), opaque(SIZE_MAX / 2)), ENOMEM);
    assert_ptr_equal(out, sentinel);
    /* The smallest good alignment. */
    assert_int_equal(posix_memalign(&out, opaque(sizeof(void *)), opaque(10)), 0);
    assert_ptr_not_equal(out, sentinel);
    free(out);
}

/* glibc 2.38 and C17 (DR 460): an alignment that is not a power of two is
 * EINVAL (glibc before 2.38 accepted any). */
static void test_aligned_alloc_einval(void **state)
{
    (void)state;
    require_spanmalloc();
    const size_t bad[] = {0, 3, 24, 100, 4097, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        void *p = opaque_ptr(aligned_alloc(opaque(bad[i]), opaque(10)));
        if (p != NULL)
            fail_msg("aligned_alloc(%zu, 10) = %p, expected NULL", bad[i], p);
        assert_int_equal(errno, EINVAL);
    }
    errno = 0;
    assert_null(opaque_ptr(aligned_alloc(opaque(64), opaque(SIZE_MAX))));
    assert_int_equal(errno, ENOMEM);
}

/* memalign rounds an alignment that is not a power of two up to the next
 * one, as glibc does; one above half the address space is EINVAL. */
static void test_memalign_rounds_up(void **state)
{
    (void)state;
    require_spanmalloc();
    const size_t odd[][2] = {{3, 4}, {5, 8}, {24, 32}, {100, 128}, {3000, 4096}, {5000, 8192},
                             {40000, 65536}, {3 << 20, 4 << 20}};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        void *p = memalign(opaque(odd[i][0]), opaque(10));
        assert_non_null(p);
        if (!is_aligned(p, odd[i][1]))
            fail_msg("memalign(%zu, 10) = %p, not %zu-aligned", odd[i][0], p, odd[i][1]);
        fill(p, 10, 1);
        free(p);
    }
    errno = 0;
    assert_null(opaque_ptr(memalign(opaque(SIZE_MAX / 2 + 2), opaque(10))));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(opaque_ptr(memalign(opaque(64), opaque(SIZE_MAX))));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(opaque_ptr(memalign(opaque(1 << 20), opaque((size_t)1 << 50))));
    assert_int_equal(errno, ENOMEM);
    /* Alignment 0 is no alignment. */
    void *p = memalign(opaque(0), opaque(10));
    assert_non_null(p);
    assert_true(is_aligned(p, 16));
    free(p);
}

static void test_valloc_pvalloc(void **state)
{
    (void)state;
    require_spanmalloc();
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    const size_t sizes[] = {0, 1, 100, 4095, 4096, 4097, 10000, 70000, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = valloc(opaque(sizes[i]));
        assert_non_null(p);
        assert_true(is_aligned(p, ps));
        assert_true(malloc_usable_size(p) >= sizes[i]);
        fill(p, malloc_usable_size(p), 3);
        free(p);
        p = pvalloc(opaque(sizes[i]));
        assert_non_null(p);
        assert_true(is_aligned(p, ps));
        /* pvalloc rounds the size up to whole pages. */
        size_t want = (sizes[i] + ps - 1) / ps * ps;
        if (malloc_usable_size(p) < want)
            fail_msg("pvalloc(%zu): usable %zu < %zu", sizes[i], malloc_usable_size(p), want);
        fill(p, malloc_usable_size(p), 4);
        free(p);
    }
    void *p = pvalloc(opaque(1));
    assert_non_null(p);
    assert_true(malloc_usable_size(p) >= 4096);
    free(p);
    const size_t huge[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - ps + 1, SIZE_MAX / 2};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        errno = 0;
        assert_null(opaque_ptr(pvalloc(opaque(huge[i]))));
        assert_int_equal(errno, ENOMEM);
        errno = 0;
        assert_null(opaque_ptr(valloc(opaque(huge[i]))));
        assert_int_equal(errno, ENOMEM);
    }
}

/* ---- many objects ----------------------------------------------------------- */

/* Mostly small, some medium, a few large: average about 150 bytes. */
static size_t mixed_size(void)
{
    uint64_t r = rnd() % 1000;
    if (r < 800)
        return rnd() % 65;
    if (r < 990)
        return 65 + rnd() % 448;
    if (r < 999)
        return 513 + rnd() % 3584;
    return 4097 + rnd() % 96000;
}

struct obj {
    uint32_t *p;
    uint32_t size;
};

static uint32_t obj_word(const struct obj *o)
{
    return (uint32_t)((uintptr_t)o->p >> 4) * 2654435761u ^ o->size;
}

/* The first word, the last word and every 64th hold a value derived from the
 * address and size; cheap enough for a million objects, and an overlap or a
 * stale free list link shows. */
static void obj_mark(struct obj *o)
{
    size_t words = o->size / 4;
    uint32_t w = obj_word(o);
    for (size_t i = 0; i < words; i += 64)
        o->p[i] = w + (uint32_t)i;
    if (words)
        o->p[words - 1] = ~w;
}

static int obj_ok(const struct obj *o)
{
    size_t words = o->size / 4;
    if (words == 0)
        return 1;
    uint32_t w = obj_word(o);
    for (size_t i = 0; i < words - 1; i += 64)
        if (o->p[i] != w + (uint32_t)i)
            return 0;
    return o->p[words - 1] == ~w;
}

static void test_million_objects(void **state)
{
    (void)state;
    require_spanmalloc();
    enum { N = 1000000 };
    struct obj *objs = malloc(N * sizeof *objs);
    uint32_t *order = malloc(N * sizeof *order);
    assert_non_null(objs);
    assert_non_null(order);
    for (uint32_t i = 0; i < N; i++) {
        objs[i].size = (uint32_t)mixed_size();
        objs[i].p = malloc(opaque(objs[i].size));
        if (objs[i].p == NULL)
            fail_msg("malloc(%u) failed at object %u", objs[i].size, i);
        assert_true(is_aligned(objs[i].p, 16));
        obj_mark(&objs[i]);
        order[i] = i;
    }
    /* Free in random order (Fisher-Yates), half of them first, then refill
     * those slots, so freed memory is reused while the rest is live. */
    for (uint32_t i = N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rnd() % (i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (uint32_t k = 0; k < N / 2; k++) {
        struct obj *o = &objs[order[k]];
        if (!obj_ok(o))
            fail_msg("object %u (%p, %u bytes) corrupted", order[k], (void *)o->p, o->size);
        free(o->p);
        o->size = (uint32_t)mixed_size();
        o->p = malloc(opaque(o->size));
        assert_non_null(o->p);
        obj_mark(o);
    }
    for (uint32_t i = N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rnd() % (i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (uint32_t k = 0; k < N; k++) {
        struct obj *o = &objs[order[k]];
        if (!obj_ok(o))
            fail_msg("object %u (%p, %u bytes) corrupted", order[k], (void *)o->p, o->size);
        free(o->p);
    }
    free(order);
    free(objs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* while the heap is young; see the comment above them */
        cmocka_unit_test(test_calloc_fresh_not_touched),
        cmocka_unit_test(test_calloc_fresh_not_touched_after_dirty_free),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_malloc_zero_unique),
        cmocka_unit_test(test_alignment_every_size),
        cmocka_unit_test(test_usable_size_is_usable),
        cmocka_unit_test(test_malloc_huge_enomem),
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_calloc_zeroes),
        cmocka_unit_test(test_calloc_reuses_dirty_memory_zeroed),
        cmocka_unit_test(test_calloc_overflow),
        cmocka_unit_test(test_realloc_null_is_malloc),
        cmocka_unit_test(test_realloc_zero_frees),
        cmocka_unit_test(test_realloc_keeps_content),
        cmocka_unit_test(test_realloc_in_place),
        cmocka_unit_test(test_realloc_failure_keeps_block),
        cmocka_unit_test(test_reallocarray),
        cmocka_unit_test(test_aligned_every_power_of_two),
        cmocka_unit_test(test_aligned_small_is_cheap),
        cmocka_unit_test(test_posix_memalign_einval),
        cmocka_unit_test(test_aligned_alloc_einval),
        cmocka_unit_test(test_memalign_rounds_up),
        cmocka_unit_test(test_valloc_pvalloc),
        cmocka_unit_test(test_million_objects),
    };
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
