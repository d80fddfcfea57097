/*
 * malloc.c - spanmalloc's entry points and the overview of the allocator.
 *
 * spanmalloc is built like Go's runtime allocator, in three tiers over one
 * OS layer:
 *
 *   mcache    per thread (mcache.c): a free list per size class; no lock.
 *   mcentral  per size class (mcentral.c): spans with free objects; a lock
 *             per class; fills and drains caches in batches.
 *   mheap     one (mheap.c): runs of 8 KiB pages, joined when freed, grown
 *             from the OS, released to it; serves large objects directly.
 *   os layer  (os_linux.c): mmap, munmap, madvise and nothing else does.
 *
 * Sizes up to 32 KiB map to one of Go's size classes (sizeclasses.h, every
 * class a multiple of 16 so every pointer is 16-byte aligned); larger ones
 * get whole pages.  The page map (pagemap.c) finds the span of any pointer
 * we handed out in O(1); a pointer with no span is not ours.
 *
 * malloc(n), n <= 32 KiB:
 *   1. class c = size_to_class(n), a table look-up;
 *   2. pop the head of this thread's list c (sm_alloc_class, internal.h);
 *   3. if the list is empty (or this is a new thread, whose cache is the
 *      static empty one, or the profiler's countdown ran out): the slow path
 *      makes the thread's cache or takes a batch from mcentral[c], which
 *      takes spans from mheap, which grows from the OS.
 * malloc(n), n > 32 KiB: a span of ceil(n / 8 KiB) pages: one this thread
 *   freed recently, or a new one from mheap (large.c).
 *
 * realloc(p, n) keeps p when n fits its class and is at least half of it, or
 * fits its pages; a small object that grows out of its class moves to a class
 * at least a quarter larger; a large object
 * grows over the free pages after it and shrinks by giving its tail back
 * (mheap.c, large.c); when it has to move to grow, it gets a quarter more pages
 * than asked, so growing step by step copies O(n) bytes in all.
 *
 * free(p):
 *   1. the page map gives p's page kind (one load from its arena);
 *   2. a small class: push p on this thread's list (sm_free_fast);
 *   3. if the list is at its bound, give a batch to mcentral first; a span
 *      whose objects are all free goes back to mheap, and joins its free
 *      neighbours there;
 *   4. a large object: its span goes to this thread's large cache, or back
 *      to mheap;
 *   5. a page that is free is a double free, and no page at all an invalid
 *      pointer: both are reported on stderr and abort.
 *
 * Free lists are linked through encoded pointers, checked before they are
 * followed (internal.h, freelist.c).  In checked mode (SPANMALLOC_CHECK=1) and
 * under valgrind's memcheck, the caches stay empty so that every malloc and
 * free takes the slow path, where check.c keeps each object's state and
 * canary, or describes it to memcheck (valgrind.c); realloc, calloc and
 * malloc_usable_size hand their object to check.c too.
 *
 * Initialisation happens in the first slow path (and in a constructor): the
 * options, the heap, the central lists, the fork handlers (init.c).  It
 * must not call malloc until the heap is usable, since libc may call back
 * into us.  The background worker (worker.c) runs the scavenger
 * (scavenge.c), the stats log and the profiler's signal writes.
 *
 * This file holds only the libc entry points and what they share.  The
 * states, the lock order and the reasons for the fast paths' shape are in
 * doc/design.md.
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "spanmalloc.h"

/* ---- helpers for the entry points ---- */

SM_INLINE void *alloc_small(size_t size)
{
    return sm_alloc_class(sm_size_to_class(size), size);
}

SM_INLINE void *alloc_any(size_t size)
{
    if (sm_likely(size <= SM_SIZE_TABLE16_MAX))
        return sm_alloc_small16(size);
    if (sm_likely(size <= SM_MAX_SMALL_SIZE))
        return alloc_small(size);
    return sm_large_alloc(size, 0);
}

/* Bytes the caller may use at p; reports p on stderr if it is not ours. */
static size_t usable_size(const void *p, const char *fn)
{
    uintptr_t a = (uintptr_t)p;
    uint8_t kind = sm_pagemap_kind(a);
    if (kind == SM_PAGE_NONE)
        sm_bad_pointer(fn, "invalid pointer", p);
    if (kind == SM_PAGE_FREE)
        sm_bad_pointer(fn, "use after free of", p);
    if (kind == SM_PAGE_LARGE) {
        struct sm_mspan *s = sm_pagemap_span(a);
        if (s->base != a)
            sm_bad_pointer(fn, "invalid pointer", p);
        if (s->state != SM_SPAN_LARGE)
            sm_bad_pointer(fn, "use after free of", p);
        return s->npages << SM_PAGE_SHIFT;
    }
    return sm_class_to_size[kind & ~SM_PAGE_SLOW];
}

static void *alloc_aligned(size_t align, size_t size)
{
    if (align <= 16)
        return alloc_any(size);
    if (align > SM_MAX_ALIGN || size > SM_MAX_ALLOC) {
        errno = ENOMEM;
        return NULL;
    }
    if (size <= SM_MAX_SMALL_SIZE && align <= SM_PAGE_SIZE) {
        /* A class whose size is a multiple of align: its objects sit at
         * multiples of the size from a page-aligned span base. */
        sm_init();
        unsigned k = (unsigned)__builtin_ctzll(align);
        /* Checked mode: a class with room for a canary byte (check.c). */
        size_t fit = size + (sm_check_slow && size < SM_MAX_SMALL_SIZE);
        uint8_t cls = sm_aligned_class[k][sm_size_to_class(fit)];
        if (cls)
            return sm_alloc_class(cls, size);
    }
    return sm_large_alloc(size ? size : 1, align);
}

/* ---- the libc entry points ---- */

SM_EXPORT void *malloc(size_t size)
{
    return alloc_any(size);
}

SM_EXPORT void free(void *p)
{
    sm_free_fast(p);
}

SM_EXPORT void *calloc(size_t n, size_t size)
{
    size_t total;
    if (sm_unlikely(__builtin_mul_overflow(n, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    if (sm_likely(total <= SM_MAX_SMALL_SIZE)) {
        void *p = alloc_small(total);
        if (sm_likely(p != NULL))
            memset(p, 0, total);
        return p;
    }
    void *p = sm_large_alloc(total, 0);
    if (p != NULL) {
        /* Pages fresh from the OS are zero already: do not touch them. */
        struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
        size_t dirty = s->needzero << SM_PAGE_SHIFT;
        memset(p, 0, dirty < total ? dirty : total);
        if (sm_unlikely(sm_check_slow))
            sm_check_calloc(p, total);
    }
    return p;
}

SM_EXPORT void *realloc(void *p, size_t size)
{
    if (sm_unlikely(sm_check_slow))
        return sm_check_realloc(p, size);
    if (p == NULL)
        return alloc_any(size);
    if (size == 0) {
        /* glibc frees and returns NULL (REALLOC_ZERO_BYTES_FREES). */
        sm_free_fast(p);
        return NULL;
    }
    uint8_t kind = sm_pagemap_kind((uintptr_t)p);
    if (kind == SM_PAGE_LARGE)
        return sm_large_realloc(p, size);
    size_t old = usable_size(p, "realloc");
    /* In place when it fits and does not shrink to less than half (an
     * object grown a quarter ahead is not moved back down), as tcmalloc. */
    if (size <= old && size >= old / 2)
        return p;
    void *q;
    if (size > old && size <= SM_MAX_SMALL_SIZE) {
        /* Growing out of its class: to a class at least a quarter larger,
         * as tcmalloc's realloc does, since a buffer that grew is likely to
         * grow again.  A buffer grown step by step then passes through every
         * other class, not each of them, each leaving a span and a list in
         * the thread's cache, and is copied half as often.  The profiler
         * counts the size asked for. */
        size_t want = old + old / 4;
        want = want < size ? size : want > SM_MAX_SMALL_SIZE ? SM_MAX_SMALL_SIZE : want;
        q = sm_alloc_class(sm_size_to_class(want), size);
    } else {
        q = alloc_any(size);
    }
    if (q == NULL)
        return NULL;   /* errno is ENOMEM; p is untouched */
    memcpy(q, p, old < size ? old : size);
    sm_free_fast(p);
    return q;
}

SM_EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, total);
}

SM_EXPORT void *memalign(size_t align, size_t size)
{
    /* glibc: an alignment that is not a power of two is rounded up; one
     * above half the address space is EINVAL. */
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (align & (align - 1))
        align = (size_t)1 << (64 - __builtin_clzll(align));
    return alloc_aligned(align, size);
}

SM_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (align == 0 || (align & (align - 1)) || align % sizeof(void *))
        return EINVAL;
    int saved = errno;
    void *p = alloc_aligned(align, size);
    if (p == NULL) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

SM_EXPORT void *aligned_alloc(size_t align, size_t size)
{
    /* C17 and glibc 2.38: the alignment must be a power of two. */
    if (align == 0 || (align & (align - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(align, size);
}

SM_EXPORT void *valloc(size_t size)
{
    return alloc_aligned(sm_os_page_size(), size);
}

SM_EXPORT void *pvalloc(size_t size)
{
    size_t ps = sm_os_page_size();
    if (size > SIZE_MAX - ps) {
        errno = ENOMEM;
        return NULL;
    }
    size = size ? (size + ps - 1) & ~(ps - 1) : ps;
    return alloc_aligned(ps, size);
}

SM_EXPORT size_t malloc_usable_size(void *p)
{
    if (p == NULL)
        return 0;
    if (sm_unlikely(sm_check_slow))
        return sm_check_usable_size(p);
    return usable_size(p, "malloc_usable_size");
}

/* ---- C++'s operator new and delete ----
 *
 * The C++ runtime's own operators end in malloc and free, so C++ programs
 * work without these; defining them here, as tcmalloc, jemalloc and
 * mimalloc do, spares every new and delete a call through the runtime
 * and two PLT jumps (83 -> 62 instructions for a new[]+delete[] pair of
 * 64 bytes), and the profiler's stack walk no longer passes through the
 * runtime's operator new, so its unwind tables (libstdc++'s: 64 KiB and
 * more) need not be read and stay out of the process's RSS.
 *
 * Out of memory, the standard wants the new_handler called in a loop, then
 * std::bad_alloc thrown (the nothrow forms: NULL returned).  C cannot
 * throw, so the next definition of the same operator (the C++ runtime's,
 * found with dlsym(RTLD_NEXT)) is asked to do it: it calls our malloc or
 * aligned_alloc again, and runs the handler and throws exactly as it does
 * without us.  Only failures go there. */

#ifndef SM_TEST_PREFIX   /* tests/sanitize/sm_prefix.h: the runtime keeps them */

struct sm_nothrow;   /* std::nothrow_t, passed by reference, never read */

/* The C++ runtime's definition of operator name, for a request that failed
 * here. */
static SM_NOINLINE SM_COLD void *cxx_next(const char *name)
{
    void *fn = dlsym(RTLD_NEXT, name);
    if (fn == NULL)
        sm_throw("operator new: out of memory, and no C++ runtime to throw std::bad_alloc");
    return fn;
}

/* operator new(size_t) and new[](size_t): new of 0 bytes is a unique
 * pointer, which malloc(0) already is. */
#define SM_CXX_NEW(sym)                                                     \
    SM_EXPORT void *sym(size_t size)                                        \
    {                                                                       \
        void *p = alloc_any(size);                                          \
        return sm_likely(p != NULL) ? p : ((void *(*)(size_t))cxx_next(#sym))(size); \
    }
#define SM_CXX_NEW_NOTHROW(sym)                                             \
    SM_EXPORT void *sym(size_t size, const struct sm_nothrow *tag)          \
    {                                                                       \
        void *p = alloc_any(size);                                          \
        return sm_likely(p != NULL) ? p                                   \
                                 : ((void *(*)(size_t, const struct sm_nothrow *))cxx_next(#sym))(size, tag); \
    }
/* The aligned forms (C++17): std::align_val_t is a size_t; the runtime's
 * own rejects an alignment that is not a power of two the same way. */
#define SM_CXX_NEW_ALIGNED(sym)                                             \
    SM_EXPORT void *sym(size_t size, size_t align)                          \
    {                                                                       \
        void *p = (align & (align - 1)) ? NULL : alloc_aligned(align, size ? size : 1); \
        return sm_likely(p != NULL) ? p                                   \
                                 : ((void *(*)(size_t, size_t))cxx_next(#sym))(size, align); \
    }
#define SM_CXX_NEW_ALIGNED_NOTHROW(sym)                                     \
    SM_EXPORT void *sym(size_t size, size_t align, const struct sm_nothrow *tag) \
    {                                                                       \
        void *p = (align & (align - 1)) ? NULL : alloc_aligned(align, size ? size : 1); \
        return sm_likely(p != NULL) ? p                                   \
                                 : ((void *(*)(size_t, size_t, const struct sm_nothrow *))cxx_next(#sym))(size, align, tag); \
    }

SM_CXX_NEW(_Znwm)
SM_CXX_NEW(_Znam)
SM_CXX_NEW_NOTHROW(_ZnwmRKSt9nothrow_t)
SM_CXX_NEW_NOTHROW(_ZnamRKSt9nothrow_t)
SM_CXX_NEW_ALIGNED(_ZnwmSt11align_val_t)
SM_CXX_NEW_ALIGNED(_ZnamSt11align_val_t)
SM_CXX_NEW_ALIGNED_NOTHROW(_ZnwmSt11align_val_tRKSt9nothrow_t)
SM_CXX_NEW_ALIGNED_NOTHROW(_ZnamSt11align_val_tRKSt9nothrow_t)

/* Every operator delete is free: the size and alignment they may pass are
 * the page map's to know. */
#define SM_UNUSED_ARG unused1 __attribute__((unused))
#define SM_UNUSED_ARG2 unused2 __attribute__((unused))
#define SM_CXX_DELETE(sym, ...)                                             \
    SM_EXPORT void sym(void *p, ##__VA_ARGS__)                              \
    {                                                                       \
        sm_free_fast(p);                                                    \
    }

SM_CXX_DELETE(_ZdlPv)
SM_CXX_DELETE(_ZdaPv)
SM_CXX_DELETE(_ZdlPvm, size_t SM_UNUSED_ARG)
SM_CXX_DELETE(_ZdaPvm, size_t SM_UNUSED_ARG)
SM_CXX_DELETE(_ZdlPvRKSt9nothrow_t, const struct sm_nothrow *SM_UNUSED_ARG)
SM_CXX_DELETE(_ZdaPvRKSt9nothrow_t, const struct sm_nothrow *SM_UNUSED_ARG)
SM_CXX_DELETE(_ZdlPvSt11align_val_t, size_t SM_UNUSED_ARG)
SM_CXX_DELETE(_ZdaPvSt11align_val_t, size_t SM_UNUSED_ARG)
SM_CXX_DELETE(_ZdlPvmSt11align_val_t, size_t SM_UNUSED_ARG, size_t SM_UNUSED_ARG2)
SM_CXX_DELETE(_ZdaPvmSt11align_val_t, size_t SM_UNUSED_ARG, size_t SM_UNUSED_ARG2)
SM_CXX_DELETE(_ZdlPvSt11align_val_tRKSt9nothrow_t, size_t SM_UNUSED_ARG,
              const struct sm_nothrow *SM_UNUSED_ARG2)
SM_CXX_DELETE(_ZdaPvSt11align_val_tRKSt9nothrow_t, size_t SM_UNUSED_ARG,
              const struct sm_nothrow *SM_UNUSED_ARG2)

#endif /* SM_TEST_PREFIX */

SM_EXPORT const char *sm_version(void)
{
    return SPANMALLOC_VERSION;
}
