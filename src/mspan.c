/*
 * mspan.c - a small-object span: a run of pages cut into objects of one size
 * class.  Objects are handed out from the span's free list (objects given
 * back) and then by bumping ncarved over objects never used, so a new span
 * costs nothing until its objects are taken (Go allocates from a bitmap
 * instead; without a GC to sweep, an explicit list is simpler and O(1)).
 *
 * Invariant: nfree == length(freelist) + (nobjs - ncarved).
 * The owning mcentral's lock guards every field used here.
 */
#include "internal.h"

void sm_mspan_init_small(struct sm_mspan *s, uint8_t sizeclass)
{
    s->sizeclass = sizeclass;
    s->elemsize = sm_class_to_size[sizeclass];
    s->nfree = sm_class_to_nobjs[sizeclass];
    s->ncarved = 0;
    s->freelist = NULL;
    s->list = SM_LIST_NONE;
}

uint32_t sm_mspan_take(struct sm_mspan *s, uint32_t n, void **head)
{
    uint32_t got = 0;
    void *h = *head;
    while (got < n && s->freelist != NULL) {
        void *p = s->freelist;
        s->freelist = *(void **)p;
        *(void **)p = h;
        h = p;
        got++;
    }
    uint32_t nobjs = sm_class_to_nobjs[s->sizeclass];
    if (got < n && s->ncarved < nobjs) {
        uint32_t k = n - got;
        if (k > nobjs - s->ncarved)
            k = nobjs - s->ncarved;
        /* Link the carved objects so the cache pops them in address order. */
        char *p = (char *)s->base + (size_t)(s->ncarved + k - 1) * s->elemsize;
        for (uint32_t i = 0; i < k; i++, p -= s->elemsize) {
            *(void **)p = h;
            h = p;
        }
        s->ncarved += k;
        got += k;
    }
    s->nfree -= got;
    *head = h;
    return got;
}

void sm_mspan_put(struct sm_mspan *s, void *p)
{
    *(void **)p = s->freelist;
    s->freelist = p;
    s->nfree++;
}
