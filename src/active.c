/*
 * active.c - whether spanmalloc serves this process's malloc.
 *
 * A program linked with -lspanmalloc gets the sm_* functions, but its
 * malloc is spanmalloc's only if no other allocator came first in symbol
 * look-up: an LD_PRELOADed jemalloc or tcmalloc, or a library linked
 * before us.  The sm_* calls then see an empty heap and would answer with
 * zeros; sm_active lets the program (and sm_write_heap_profile) tell.
 *
 * The test is the one that cannot be fooled by wrappers: allocate one
 * byte through the malloc the process's symbol look-up finds (dlsym
 * RTLD_DEFAULT, as the program's own calls bind), and ask our page map
 * whether the pointer is in one of our spans; then free it through the
 * matching free.  In a static program dlsym finds nothing and the linked
 * malloc is ours.  The answer cannot change once the process runs, so it
 * is computed once and kept; the first call makes that one malloc and
 * free, with no lock of ours held.
 */
#include <dlfcn.h>
#include <stdlib.h>

#include "internal.h"
#include "spanmalloc.h"

static int active_state;   /* 0 unknown, 1 inactive, 2 active */

int sm_active(void)
{
    int s = __atomic_load_n(&active_state, __ATOMIC_ACQUIRE);
    if (s != 0)
        return s == 2;
    void *(*process_malloc)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "malloc");
    void (*process_free)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "free");
    if (process_malloc == NULL || process_free == NULL) {
        process_malloc = malloc;
        process_free = free;
    }
    void *p = process_malloc(1);
    if (p == NULL)
        return 0;          /* no memory: ask again next time */
    bool ours = sm_pagemap_span((uintptr_t)p) != NULL;
    process_free(p);
    __atomic_store_n(&active_state, ours ? 2 : 1, __ATOMIC_RELEASE);
    return ours;
}
