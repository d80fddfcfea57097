/*
 * sm_prefix.h - gives the allocator's libc entry points an sm_test_ prefix,
 * for builds where another runtime owns malloc: ThreadSanitizer's (which
 * must intercept malloc to work) and libFuzzer's.
 *
 * It is force-included (cc -include tests/sanitize/sm_prefix.h) into every
 * source of the allocator and into the test built with it, nowhere else:
 * src/malloc.c's "void *malloc(size_t size)" becomes "void
 * *sm_test_malloc(size_t size)", the test's malloc(n) calls become
 * sm_test_malloc(n), and everything else in the process (libc, cmocka, the
 * sanitizer, libFuzzer) keeps the runtime's malloc.  The allocator's own
 * code is instrumented and serves every allocation the test makes; the
 * normal build is unchanged, and so is the fast path.
 *
 * The macros are function-like, so only calls and definitions are renamed,
 * not struct fields that happen to share a name (the heap's free lists).
 * The libc headers come first, so their declarations keep the real names.
 * The public sm_* API keeps its names.  C++'s operator new and delete,
 * which src/malloc.c defines otherwise, are left to the runtime as well
 * (libFuzzer's own C++ allocations would otherwise be counted in the
 * heap's statistics the fuzz target checks).
 */
#ifndef SM_PREFIX_H
#define SM_PREFIX_H

#include <stddef.h>
#include <stdlib.h>
#include <malloc.h>

#define SM_TEST_PREFIX 1

#ifdef __cplusplus
extern "C" {
#endif
void *sm_test_malloc(size_t size);
void sm_test_free(void *p);
void *sm_test_calloc(size_t n, size_t size);
void *sm_test_realloc(void *p, size_t size);
void *sm_test_reallocarray(void *p, size_t n, size_t size);
void *sm_test_memalign(size_t align, size_t size);
int sm_test_posix_memalign(void **out, size_t align, size_t size);
void *sm_test_aligned_alloc(size_t align, size_t size);
void *sm_test_valloc(size_t size);
void *sm_test_pvalloc(size_t size);
size_t sm_test_malloc_usable_size(void *p);
int sm_test_malloc_trim(size_t pad);
#ifdef __cplusplus
}
#endif

#define malloc(size) sm_test_malloc(size)
#define free(p) sm_test_free(p)
#define calloc(n, size) sm_test_calloc(n, size)
#define realloc(p, size) sm_test_realloc(p, size)
#define reallocarray(p, n, size) sm_test_reallocarray(p, n, size)
#define memalign(align, size) sm_test_memalign(align, size)
#define posix_memalign(out, align, size) sm_test_posix_memalign(out, align, size)
#define aligned_alloc(align, size) sm_test_aligned_alloc(align, size)
#define valloc(size) sm_test_valloc(size)
#define pvalloc(size) sm_test_pvalloc(size)
#define malloc_usable_size(p) sm_test_malloc_usable_size(p)
#define malloc_trim(pad) sm_test_malloc_trim(pad)

#endif
