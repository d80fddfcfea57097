/*
 * mspan.c - a small-object span: a run of pages cut into objects of one size
 * class.  Objects are handed out from the span's free list (objects given
 * back) and then by bumping ncarved over objects never used, so a new span
 * costs nothing until its objects are taken (Go allocates from a bitmap
 * instead; without a GC to sweep, an explicit list is simpler and O(1)).
 *
 * Links are encoded (sm_link_load/sm_link_store, internal.h).  Every link
 * taken from the span's list is checked before it is followed: it must be
 * the end of the list or an object boundary inside this span, which is a
 * subtraction, a multiply and two compares.  A link that is not names the
 * object it was read from (sm_freelist_corrupt).
 *
 * Under valgrind a new span's memory is made inaccessible: its objects
 * become accessible only while they are handed out (check.c).
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
    SM_DEBUG_ASSERT(s->checkstate == NULL);
    if (sm_unlikely(sm_check_slow & SM_CHECK_VALGRIND))
        sm_valgrind_span_new(s);
}

uint32_t sm_mspan_take(struct sm_mspan *s, uint32_t n, void **head)
{
    uint32_t got = 0;
    void *h = *head;
    while (got < n && s->freelist != NULL) {
        void *p = s->freelist;
        void *next = sm_link_load(p);
        if (sm_unlikely(next != NULL && !sm_mspan_is_object(s, (uintptr_t)next)))
            sm_freelist_corrupt("malloc", p, next);
        s->freelist = next;
        sm_link_store(p, h);
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
            sm_link_store(p, h);
            h = p;
        }
        s->ncarved += k;
        got += k;
    }
    s->nfree -= got;
    *head = h;
    return got;
}
