/*
 * mcentral.c - per size class, the spans that thread caches refill from and
 * drain to, in batches (Go's mcentral, tcmalloc's central free list).
 *
 * Two lists: partial (spans with a free object) and full (none).  A span all
 * of whose objects come back returns to the heap, except that one such span
 * is kept while it is the only partial span, so a loop that allocates and
 * frees around a span boundary does not go to the heap each time.
 *
 * Objects go to thread caches and come back as encoded lists (internal.h).
 * Each object given back is looked up in the page map anyway, so it is
 * checked there before its link is read: a span of this class, at an
 * object boundary.  A thread with no cache, checked mode and valgrind take
 * and give one object at a time (sm_mcentral_alloc_one, _free_one), which
 * reads and writes nothing in the object: in checked mode all of a free
 * object is poison, verified when it is handed out again (check.c).  In
 * checked mode a span keeps its objects' states (s->checkstate), dropped
 * when it goes back to the heap.
 *
 * Locking: c->lock guards the lists, the parked lists (below) and every
 * span on them.  The heap lock
 * is taken inside it (order: mcentral, then heap), or with it dropped while
 * a new span is made.
 */
#include <string.h>

#include "internal.h"

SM_HIDDEN struct sm_mcentral sm_central[SM_NUM_SIZE_CLASSES];
SM_HIDDEN uint64_t sm_parked_total;
static struct sm_parked parked_slots[SM_NUM_SIZE_CLASSES][SM_PARK_SLOTS];

void sm_mcentral_init(struct sm_mcentral *c, uint32_t sizeclass)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    c->sizeclass = sizeclass;
    c->parked = parked_slots[sizeclass];
}

static void link_span(struct sm_mspan **list, struct sm_mspan *s)
{
    s->prev = NULL;
    s->next = *list;
    if (*list)
        (*list)->prev = s;
    *list = s;
}

static void unlink_span(struct sm_mspan **list, struct sm_mspan *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

static void set_list(struct sm_mcentral *c, struct sm_mspan *s, uint8_t list)
{
    if (s->list == list)
        return;
    if (s->list == SM_LIST_PARTIAL)
        unlink_span(&c->partial, s);
    else if (s->list == SM_LIST_FULL)
        unlink_span(&c->full, s);
    if (list == SM_LIST_PARTIAL)
        link_span(&c->partial, s);
    else if (list == SM_LIST_FULL)
        link_span(&c->full, s);
    s->list = list;
}

/* An empty span goes back to the heap (no lock held). */
static void give_back(struct sm_mheap *h, struct sm_mspan *s)
{
    if (sm_unlikely(s->checkstate != NULL))
        sm_check_span_release(s);
    sm_mheap_free(h, s);
}

/* A span with a free object (c->lock held, dropped while a new span is
 * made); NULL if the heap has no memory. */
static struct sm_mspan *span_with_free(struct sm_mcentral *c, struct sm_mheap *h)
{
    struct sm_mspan *s = c->partial;
    if (s == NULL) {
        pthread_mutex_unlock(&c->lock);
        s = sm_mheap_alloc(h, sm_class_to_npages[c->sizeclass], 0, (uint8_t)c->sizeclass);
        pthread_mutex_lock(&c->lock);
        if (s == NULL)
            return NULL;
        c->nspans++;
        set_list(c, s, SM_LIST_PARTIAL);
    }
    return s;
}

uint32_t sm_mcentral_alloc_batch(struct sm_mcentral *c, struct sm_mheap *h, uint32_t want, void **head)
{
    return sm_mcentral_refill(c, h, want, 0, head);
}

/* The top parked list, taken off (c->lock held, c->nparked != 0). */
static struct sm_parked parked_pop(struct sm_mcentral *c)
{
    struct sm_parked pk = c->parked[c->nparked - 1];
    __atomic_store_n(&c->nparked, c->nparked - 1, __ATOMIC_RELAXED);
    c->parked_bytes -= (uint64_t)pk.n * sm_class_to_size[c->sizeclass];
    return pk;
}

uint32_t sm_mcentral_refill(struct sm_mcentral *c, struct sm_mheap *h, uint32_t want, uint32_t max, void **head)
{
    uint32_t got = 0;
    void *list = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->nparked != 0 && c->parked[c->nparked - 1].n <= max) {
        struct sm_parked pk = parked_pop(c);
        c->parked_used = 1;
        pthread_mutex_unlock(&c->lock);
        __atomic_sub_fetch(&sm_parked_total, (uint64_t)pk.n * sm_class_to_size[c->sizeclass],
                           __ATOMIC_RELAXED);
        *head = pk.head;
        return pk.n;
    }
    while (got < want) {
        struct sm_mspan *s = span_with_free(c, h);
        if (s == NULL)
            break;
        got += sm_mspan_take(s, want - got, &list);
        if (s->nfree == 0)
            set_list(c, s, SM_LIST_FULL);
    }
    pthread_mutex_unlock(&c->lock);
    *head = list;
    return got;
}

void *sm_mcentral_alloc_one(struct sm_mcentral *c, struct sm_mheap *h)
{
    void *p = NULL;
    pthread_mutex_lock(&c->lock);
    struct sm_mspan *s = span_with_free(c, h);
    if (s != NULL) {
        p = sm_mspan_take_one(s);
        if (s->nfree == 0)
            set_list(c, s, SM_LIST_FULL);
    }
    pthread_mutex_unlock(&c->lock);
    return p;
}

/* After objects of s were marked free (c->lock held): a span now all free
 * goes on *empty, to be given back, unless it is the only partial span;
 * one that was full becomes partial. */
static void settle(struct sm_mcentral *c, struct sm_mspan *s, struct sm_mspan **empty)
{
    if (s->nfree == sm_class_to_nobjs[c->sizeclass] && (c->partial != s || s->next != NULL)) {
        set_list(c, s, SM_LIST_NONE);
        c->nspans--;
        s->next = *empty;
        *empty = s;
    } else if (s->list != SM_LIST_PARTIAL) {
        set_list(c, s, SM_LIST_PARTIAL);
    }
}

/* The span of p, an object given back to c, checked before anything reads
 * through p: a small span of this class.  from: the object whose link
 * gave p.  The page map already has to be read: the check costs little. */
static struct sm_mspan *span_of(struct sm_mcentral *c, void *p, const void *from)
{
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    if (sm_unlikely(s == NULL || s->state != SM_SPAN_SMALL || s->sizeclass != c->sizeclass))
        sm_freelist_corrupt("free", from, p);
    SM_DEBUG_ASSERT(s->npages == sm_class_to_npages[c->sizeclass]);
    return s;
}

/* Mark p free in its span (c->lock held), checked first: an object of this
 * class, at an object boundary. */
static void put(struct sm_mcentral *c, void *p, const void *from, struct sm_mspan **empty)
{
    struct sm_mspan *s = span_of(c, p, from);
    if (sm_unlikely(!sm_mspan_is_object(s, (uintptr_t)p)))
        sm_freelist_corrupt("free", from, p);
    sm_mspan_put(s, p);
    settle(c, s, empty);
}

static void give_back_all(struct sm_mheap *h, struct sm_mspan *empty)
{
    while (empty) {
        struct sm_mspan *s = empty;
        empty = s->next;
        give_back(h, s);
    }
}

/* A thread cache's list comes back in the order its objects were freed,
 * so runs of them share a span (objects allocated together and freed
 * together come from one span or two).  So the loop looks the span up in
 * the page map, checks it and settles its lists once per run rather than
 * once per object: tcmalloc's central free list finds the span of every
 * object; mimalloc frees each object straight to its page's own list.
 * Each object is still checked to be an object boundary of the span and
 * not already free before its link is read. */
/* n objects of the list at head back to their spans (c->lock held);
 * spans all free go on *empty. */
static void put_list(struct sm_mcentral *c, void *head, uint32_t n, struct sm_mspan **empty)
{
    void *from = NULL;
    uintptr_t key = sm_freelist_key;
    uint32_t cls = c->sizeclass;
    uint64_t magic = sm_class_to_divmagic[cls];
    uint32_t nobjs = sm_class_to_nobjs[cls];
    uintptr_t elem = sm_class_to_size[cls];
    uintptr_t span_bytes = (uintptr_t)sm_class_to_npages[cls] << SM_PAGE_SHIFT;
    struct sm_mspan *s = NULL;       /* the current run's span */
    uintptr_t base = 0;
    for (uint32_t i = 0; i < n; i++) {
        void *p = head;
        uintptr_t off = (uintptr_t)p - base;
        if (s == NULL || off >= span_bytes) {
            if (s != NULL)
                settle(c, s, empty);
            s = span_of(c, p, from);
            base = s->base;
            off = (uintptr_t)p - base;
        }
        /* sm_mspan_is_object, the class's constants in registers. */
        uint32_t idx = (uint32_t)(((uint64_t)off * magic) >> 32);
        if (sm_unlikely(idx >= nobjs || (uintptr_t)idx * elem != off))
            sm_freelist_corrupt("free", from, p);
        sm_mspan_put_index(s, idx, p);
        head = (void *)((uintptr_t)*(void **)p ^ (uintptr_t)p ^ key);   /* sm_freelist_decode */
        from = p;
    }
    if (s != NULL)
        settle(c, s, empty);
}

void sm_mcentral_free_batch(struct sm_mcentral *c, struct sm_mheap *h, void *head, uint32_t n)
{
    struct sm_mspan *empty = NULL;   /* spans to give back, linked by next */
    pthread_mutex_lock(&c->lock);
    put_list(c, head, n, &empty);
    pthread_mutex_unlock(&c->lock);
    give_back_all(h, empty);
}

void sm_mcentral_free_one(struct sm_mcentral *c, struct sm_mheap *h, void *p)
{
    struct sm_mspan *empty = NULL;
    pthread_mutex_lock(&c->lock);
    put(c, p, NULL, &empty);
    pthread_mutex_unlock(&c->lock);
    give_back_all(h, empty);
}

void sm_mcentral_release_empty(struct sm_mcentral *c, struct sm_mheap *h)
{
    struct sm_mspan *empty = NULL;
    uint32_t nobjs = sm_class_to_nobjs[c->sizeclass];
    pthread_mutex_lock(&c->lock);
    struct sm_mspan *s = c->partial;
    while (s) {
        struct sm_mspan *next = s->next;
        if (s->nfree == nobjs) {
            set_list(c, s, SM_LIST_NONE);
            c->nspans--;
            s->next = empty;
            empty = s;
        }
        s = next;
    }
    pthread_mutex_unlock(&c->lock);
    give_back_all(h, empty);
}

/* ---- parked lists --------------------------------------------------------
 * A thread cache at its bound gives its whole list back (mcache.c).  Taking
 * that list apart into its spans (a page-map look-up, a check and a bit
 * per object) and building a new one at the next refill (a link written
 * into each object) is most of what a program pays when its working set
 * moves through the caches: a program that allocates 65536 objects and
 * frees them again spent 43% of its time there.  So the list is parked as
 * it is, and the next refill of any thread takes it whole: both moves are
 * a few stores under the lock (tcmalloc's transfer cache).
 *
 * What it costs: objects on a parked list keep their spans from being
 * given back to the heap.  So parked lists are bounded (SM_PARK_SLOTS
 * lists and SM_PARK_CLASS_BYTES per class, SM_PARK_BYTES in all; past that
 * a list goes to its spans as before), and they go to their spans when a
 * whole scavenger tick passes with no list of their class parked or taken,
 * when sm_free_os_memory is called, and before the heap passes the soft
 * memory limit.  A parked list
 * is not checked when it is parked: its objects get the allocation path's
 * checks when handed out, and mcentral's own when they go to their spans.
 */

void sm_mcentral_park(struct sm_mcentral *c, struct sm_mheap *h, void *head, uint32_t n)
{
    uint64_t bytes = (uint64_t)n * sm_class_to_size[c->sizeclass];
    struct sm_mspan *empty = NULL;
    pthread_mutex_lock(&c->lock);
    /* The total is read and then added to: threads parking in other
     * classes at the same moment may pass it by a list each. */
    if (c->nparked < SM_PARK_SLOTS && c->parked_bytes + bytes <= SM_PARK_CLASS_BYTES &&
        __atomic_load_n(&sm_parked_total, __ATOMIC_RELAXED) + bytes <= SM_PARK_BYTES) {
        c->parked[c->nparked].head = head;
        c->parked[c->nparked].n = n;
        __atomic_store_n(&c->nparked, c->nparked + 1, __ATOMIC_RELAXED);
        c->parked_bytes += bytes;
        c->parked_used = 1;
        pthread_mutex_unlock(&c->lock);
        __atomic_add_fetch(&sm_parked_total, bytes, __ATOMIC_RELAXED);
        return;
    }
    put_list(c, head, n, &empty);
    pthread_mutex_unlock(&c->lock);
    give_back_all(h, empty);
}

void sm_mcentral_flush_parked(struct sm_mcentral *c, struct sm_mheap *h, bool all)
{
    if (__atomic_load_n(&c->nparked, __ATOMIC_RELAXED) == 0)
        return;
    struct sm_mspan *empty = NULL;
    uint64_t bytes = 0;
    pthread_mutex_lock(&c->lock);
    if (all || !c->parked_used) {
        bytes = c->parked_bytes;
        while (c->nparked != 0) {
            struct sm_parked pk = parked_pop(c);
            put_list(c, pk.head, pk.n, &empty);
        }
    }
    c->parked_used = 0;
    pthread_mutex_unlock(&c->lock);
    __atomic_sub_fetch(&sm_parked_total, bytes, __ATOMIC_RELAXED);
    give_back_all(h, empty);
}

void sm_mcentral_flush_parked_all(void)
{
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        sm_mcentral_flush_parked(&sm_central[cls], &sm_heap, true);
}
