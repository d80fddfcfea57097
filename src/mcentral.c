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
 * Locking: c->lock guards the lists and every span on them.  The heap lock
 * is taken inside it (order: mcentral, then heap), or with it dropped while
 * a new span is made.
 */
#include <string.h>

#include "internal.h"

SM_HIDDEN struct sm_mcentral sm_central[SM_NUM_SIZE_CLASSES];

void sm_mcentral_init(struct sm_mcentral *c, uint32_t sizeclass)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    c->sizeclass = sizeclass;
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
    uint32_t got = 0;
    void *list = NULL;
    pthread_mutex_lock(&c->lock);
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
void sm_mcentral_free_batch(struct sm_mcentral *c, struct sm_mheap *h, void *head, uint32_t n)
{
    struct sm_mspan *empty = NULL;   /* spans to give back, linked by next */
    void *from = NULL;
    uintptr_t key = sm_freelist_key;
    uint32_t cls = c->sizeclass;
    uint64_t magic = sm_class_to_divmagic[cls];
    uint32_t nobjs = sm_class_to_nobjs[cls];
    uintptr_t elem = sm_class_to_size[cls];
    uintptr_t span_bytes = (uintptr_t)sm_class_to_npages[cls] << SM_PAGE_SHIFT;
    struct sm_mspan *s = NULL;       /* the current run's span */
    uintptr_t base = 0;
    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < n; i++) {
        void *p = head;
        uintptr_t off = (uintptr_t)p - base;
        if (s == NULL || off >= span_bytes) {
            if (s != NULL)
                settle(c, s, &empty);
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
        settle(c, s, &empty);
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
