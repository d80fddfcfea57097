/*
 * fixalloc.c - fixed-size allocator for metadata (spans, thread caches,
 * profile records), as Go's mfixalloc.go: chunks from the OS layer carved
 * into equal elements, freed elements on a list.  Never calls malloc.
 *
 * Not thread-safe: the owner's lock guards it (the heap lock for spans,
 * sm_mcache_lock for caches).  inuse and sys feed mspan_*, mcache_* stats.
 */
#include <string.h>

#include "internal.h"

#define SM_FIXALLOC_CHUNK (64 * 1024)

void sm_fixalloc_init(struct sm_fixalloc *f, size_t size)
{
    memset(f, 0, sizeof *f);
    f->size = (size + 15) & ~(size_t)15;
}

void *sm_fixalloc_alloc(struct sm_fixalloc *f)
{
    void *p;
    if (f->list != NULL) {
        p = f->list;
        f->list = *(void **)p;
    } else {
        if (f->nchunk < f->size) {
            char *chunk = sm_os_alloc(SM_FIXALLOC_CHUNK);
            if (chunk == NULL)
                return NULL;
            f->chunk = chunk;
            f->nchunk = SM_FIXALLOC_CHUNK;
            f->sys += SM_FIXALLOC_CHUNK;
        }
        p = f->chunk;
        f->chunk += f->size;
        f->nchunk -= f->size;
    }
    f->inuse += f->size;
    memset(p, 0, f->size);
    return p;
}

void sm_fixalloc_free(struct sm_fixalloc *f, void *p)
{
    *(void **)p = f->list;
    f->list = p;
    f->inuse -= f->size;
}
