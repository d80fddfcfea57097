/*
 * valgrind.c - describing our blocks to valgrind's memcheck, the only file
 * that includes valgrind's headers.
 *
 * memcheck replaces the malloc of libc, not ours: a program that preloads
 * spanmalloc under memcheck gets our allocator, and memcheck sees only
 * what we tell it with client requests.  When sm_valgrind_running() says
 * memcheck is there, check.c sends every malloc and free through the slow
 * path and calls these:
 *
 *   a new small span      all its bytes no-access (sm_mspan_init_small);
 *   an object handed out  its whole slot no-access, then MALLOCLIKE_BLOCK
 *                         for the requested bytes (undefined), so the slack
 *                         past them stays no-access: reads and writes past
 *                         the end are reported, uninitialised reads too,
 *                         and a block no pointer reaches is a leak with the
 *                         stack that allocated it;
 *   an object freed       FREELIKE_BLOCK: no-access, and memcheck keeps the
 *                         freeing stack for its use-after-free reports;
 *   realloc in place      RESIZEINPLACE_BLOCK;
 *   calloc                its bytes defined (pages fresh from the OS are
 *                         zero without being written);
 *   a free-list link      objects move one at a time under memcheck and
 *                         nothing is written in them; a link read or
 *                         written by a slow path (sm_link_load/store) is
 *                         bracketed all the same: defined for the access,
 *                         no-access again after it, so the allocator is
 *                         never reported and the program is.
 *
 * Leaks.  memcheck's leak check takes every aligned, defined word of every
 * writable mapping that its own malloc did not make as a possible root:
 * our metadata, and our heap pages too.  So nothing in our metadata may
 * hold the address of a live object:
 *   - a span's base is the address of its first object (a large span's
 *     only one): it is stored off 8-byte alignment (types.h), which the
 *     leak check does not read;
 *   - the profiler records the address of each sampled object: it is off
 *     under memcheck (check.c; sm_set_profile_rate turns it back on);
 *   - thread caches hold no objects and large caches no spans (check.c),
 *     spans keep their free objects in a bitmap, and links are encoded
 *     anyway.
 * Free objects and the slack after each block are no-access, so they are
 * not scanned either.  What memcheck cannot tell from a root is a live
 * block's own contents: a block that only another leaked block points to
 * is "still reachable" rather than "indirectly lost" (doc/valgrind.md).
 * Its own malloc avoids that by marking its arena as client heap, which
 * no client request can do.
 *
 * Which tool: RUNNING_ON_VALGRIND is true under every tool, and under
 * callgrind the fast path is what is being measured.  Only memcheck
 * answers VALGRIND_GET_VBITS (other tools return the request's default,
 * 0), so that is the test.
 *
 * Built without valgrind's headers (configure sets SM_HAVE_VALGRIND=0) the
 * requests are empty and sm_valgrind_running() is false; every line still
 * compiles.  None of this is reached unless memcheck is running.
 */
#include "internal.h"

#ifndef SM_HAVE_VALGRIND
#define SM_HAVE_VALGRIND 0
#endif

#if SM_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_GET_VBITS(a, v, n) ((void)(a), (void)(v), (void)(n), 0u)
#define VALGRIND_MAKE_MEM_NOACCESS(a, n) ((void)(a), (void)(n))
#define VALGRIND_MAKE_MEM_DEFINED(a, n) ((void)(a), (void)(n))
#define VALGRIND_MALLOCLIKE_BLOCK(a, n, rz, z) ((void)(a), (void)(n), (void)(rz), (void)(z))
#define VALGRIND_FREELIKE_BLOCK(a, rz) ((void)(a), (void)(rz))
#define VALGRIND_RESIZEINPLACE_BLOCK(a, o, n, rz) ((void)(a), (void)(o), (void)(n), (void)(rz))
#endif

bool sm_valgrind_running(void)
{
    if (!SM_HAVE_VALGRIND || !RUNNING_ON_VALGRIND)
        return false;
    uint64_t word = 0, vbits = 0;
    return VALGRIND_GET_VBITS(&word, &vbits, sizeof word) == 1;
}

void *sm_valgrind_link_load(void *p)
{
    VALGRIND_MAKE_MEM_DEFINED(p, sizeof(void *));
    void *next = sm_freelist_decode(p, *(void **)p);
    VALGRIND_MAKE_MEM_NOACCESS(p, sizeof(void *));
    return next;
}

void sm_valgrind_link_store(void *p, void *next)
{
    VALGRIND_MAKE_MEM_DEFINED(p, sizeof(void *));
    *(void **)p = sm_freelist_encode(p, next);
    VALGRIND_MAKE_MEM_NOACCESS(p, sizeof(void *));
}

void sm_valgrind_span_new(const struct sm_mspan *s)
{
    VALGRIND_MAKE_MEM_NOACCESS((void *)s->base, s->npages << SM_PAGE_SHIFT);
}

void sm_valgrind_malloc(void *p, size_t size, size_t room, bool zeroed)
{
    VALGRIND_MAKE_MEM_NOACCESS(p, room);
    VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, zeroed);
}

void sm_valgrind_free(void *p)
{
    VALGRIND_FREELIKE_BLOCK(p, 0);
}

void sm_valgrind_resize(void *p, size_t oldsize, size_t newsize)
{
    VALGRIND_RESIZEINPLACE_BLOCK(p, oldsize, newsize, 0);
}

void sm_valgrind_defined(void *p, size_t size)
{
    VALGRIND_MAKE_MEM_DEFINED(p, size);
}
