/*
 * mheap.c - the page heap: owns every page, hands out runs of pages as
 * spans (small-object spans for mcentral, whole spans for large objects),
 * joins free runs, grows from the OS and gives idle pages back.
 *
 * Free runs live in exact-size lists for 1..127 pages and one list for longer
 * runs, searched best fit (tcmalloc's classic page heap; Go's radix-tree page
 * allocator is address-ordered first fit, which we do not need without a
 * moving GC).  A bitmap of the non-empty exact-size lists finds the first
 * fit in two word scans instead of a walk over up to 127 list heads.
 * Within a list, runs whose pages are all resident go first, so allocation
 * prefers dirty pages and leaves released ones released.
 *
 * A large span comes back either live (SM_SPAN_LARGE: counted as a free of
 * a large object) or from a thread's large cache (SM_SPAN_CACHED: its free
 * was counted when it went into the cache; large.c).
 *
 * Page states (per page, in the arena's released bitmap) and the stats:
 *   pages_sys      = pages_inuse + pages_free          (always)
 *   pages_released <= pages_free                       (always)
 * Memory grown from the OS counts as released: it is not resident until the
 * program touches it (Go does the same).  A free run records how many of its
 * pages are released and since when it is idle; joining runs adds the first
 * and keeps the newer of the second, so the scavenger never takes a run that
 * was just freed for an old one.
 *
 * Locking: h->lock guards everything here, the page map's writes, and the
 * span fixalloc.  Lock order: sm_mcache_lock, then an mcentral lock, then the
 * heap lock.  madvise runs without the heap lock: the run being released is
 * taken out of the free lists (state SCAVENGING) meanwhile.  Before growing
 * past the soft memory limit the heap calls h->reclaim with its lock
 * dropped, which takes sm_mcache_lock and then the heap lock again; so
 * sm_mheap_alloc is never called with sm_mcache_lock held.
 *
 * The soft limit holds whenever pages are taken, not only when the heap
 * grows (Go's allocSpan): taking released or fresh pages makes them
 * resident, and if the heap's resident pages (sys - released) then pass
 * the limit, the allocation first takes its pages (so they cannot be
 * released under it), then, with the lock dropped, reclaims the threads'
 * large caches and releases that many idle pages elsewhere.  The test costs
 * nothing more on the common path: it sits behind the branch that clears
 * the taken pages' released bits, which reusing dirty pages never enters.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "spanmalloc.h"

SM_HIDDEN struct sm_mheap sm_heap;

/* Grow by at least this much: fewer, longer runs; it costs no RSS. */
#define SM_HEAP_GROW_MIN_PAGES ((size_t)(1u << 20) >> SM_PAGE_SHIFT)

#define PAGE_BYTES(n) ((uintptr_t)(n) << SM_PAGE_SHIFT)

void sm_mheap_lock(struct sm_mheap *h) { pthread_mutex_lock(&h->lock); }
void sm_mheap_unlock(struct sm_mheap *h) { pthread_mutex_unlock(&h->lock); }

void sm_mheap_init(struct sm_mheap *h)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->lock, NULL);
    sm_fixalloc_init(&h->spanalloc, sizeof(struct sm_mspan));
}

/* ---- free lists ---------------------------------------------------------- */

static struct sm_spanlist *free_list_for(struct sm_mheap *h, size_t npages)
{
    return npages < SM_HEAP_NLISTS ? &h->free[npages] : &h->freelarge;
}

static void list_push_front(struct sm_spanlist *l, struct sm_mspan *s)
{
    s->prev = NULL;
    s->next = l->first;
    if (l->first)
        l->first->prev = s;
    l->first = s;
    l->len++;
}

static void list_push_back(struct sm_spanlist *l, struct sm_mspan *s)
{
    /* Lists are short or the order barely matters; a tail walk is fine for
     * the exact-size lists, which rarely hold more than a few runs. */
    s->next = NULL;
    if (l->first == NULL) {
        s->prev = NULL;
        l->first = s;
    } else {
        struct sm_mspan *t = l->first;
        while (t->next)
            t = t->next;
        t->next = s;
        s->prev = t;
    }
    l->len++;
}

static void list_remove(struct sm_spanlist *l, struct sm_mspan *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        l->first = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    l->len--;
}

static void free_insert(struct sm_mheap *h, struct sm_mspan *s)
{
    struct sm_spanlist *l = free_list_for(h, s->npages);
    if (s->nreleased == 0 || l == &h->freelarge)
        list_push_front(l, s);
    else
        list_push_back(l, s);
    if (s->npages < SM_HEAP_NLISTS)
        h->nonempty[s->npages / 64] |= (uint64_t)1 << (s->npages % 64);
}

static void free_remove(struct sm_mheap *h, struct sm_mspan *s)
{
    size_t n = s->npages;
    struct sm_spanlist *l = free_list_for(h, n);
    list_remove(l, s);
    if (n < SM_HEAP_NLISTS && l->first == NULL)
        h->nonempty[n / 64] &= ~((uint64_t)1 << (n % 64));
}

static struct sm_mspan *span_new(struct sm_mheap *h)
{
    return sm_fixalloc_alloc(&h->spanalloc);
}

static void span_dispose(struct sm_mheap *h, struct sm_mspan *s)
{
    s->state = SM_SPAN_DEAD;
    sm_fixalloc_free(&h->spanalloc, s);
}

/* Join s (state FREE, not in a list, kind FREE on its pages) with free
 * neighbours, then put it in its list. */
static void free_join_insert(struct sm_mheap *h, struct sm_mspan *s)
{
    uintptr_t before = s->base - SM_PAGE_SIZE;
    if (sm_pagemap_kind(before) == SM_PAGE_FREE) {
        struct sm_mspan *n = sm_pagemap_span(before);
        if (n->state == SM_SPAN_FREE) {
            free_remove(h, n);
            s->base = n->base;
            s->npages += n->npages;
            s->nreleased += n->nreleased;
            if (n->idle_since > s->idle_since)
                s->idle_since = n->idle_since;
            span_dispose(h, n);
        }
    }
    uintptr_t after = s->base + PAGE_BYTES(s->npages);
    if (sm_pagemap_kind(after) == SM_PAGE_FREE) {
        struct sm_mspan *n = sm_pagemap_span(after);
        if (n->state == SM_SPAN_FREE) {
            free_remove(h, n);
            s->npages += n->npages;
            s->nreleased += n->nreleased;
            if (n->idle_since > s->idle_since)
                s->idle_since = n->idle_since;
            span_dispose(h, n);
        }
    }
    sm_pagemap_set_span(s->base, s);
    sm_pagemap_set_span(s->base + PAGE_BYTES(s->npages - 1), s);
    free_insert(h, s);
}

/* Best fit: the smallest run of at least npages; among equals, the first,
 * which is a dirty one when there is one. */
static struct sm_mspan *find_fit(struct sm_mheap *h, size_t npages)
{
    /* The first non-empty exact-size list from npages on, by its bit. */
    for (size_t w = npages / 64; npages < SM_HEAP_NLISTS && w < SM_HEAP_NLISTS / 64; w++) {
        uint64_t bits = h->nonempty[w];
        if (w == npages / 64)
            bits &= ~(uint64_t)0 << (npages % 64);
        if (bits)
            return h->free[w * 64 + (size_t)__builtin_ctzll(bits)].first;
    }
    struct sm_mspan *best = NULL;
    for (struct sm_mspan *s = h->freelarge.first; s; s = s->next) {
        if (s->npages < npages)
            continue;
        if (best == NULL || s->npages < best->npages ||
            (s->npages == best->npages && s->nreleased < best->nreleased))
            best = s;
    }
    return best;
}

/* A new free run over [base, base + npages pages) of fresh memory. */
static bool add_fresh_run(struct sm_mheap *h, uintptr_t base, size_t npages)
{
    struct sm_mspan *s = span_new(h);
    if (s == NULL)
        return false;
    s->base = base;
    s->npages = npages;
    s->state = SM_SPAN_FREE;
    s->nreleased = (uint32_t)npages;
    s->idle_since = 0;
    sm_pagemap_set_kind(base, npages, SM_PAGE_FREE);
    sm_pagemap_mark_released(base, npages, true);
    sm_pagemap_mark_zero(base, npages);
    h->st.pages_sys += npages;
    h->st.pages_free += npages;
    h->st.pages_released += npages;
    free_join_insert(h, s);
    return true;
}

/* Make at least npages more pages free, in one run. */
static bool grow(struct sm_mheap *h, size_t npages)
{
    size_t ask = (npages + SM_HEAP_GROW_MIN_PAGES - 1) & ~(SM_HEAP_GROW_MIN_PAGES - 1);
    uintptr_t bytes = PAGE_BYTES(ask);
    if (h->cur_end - h->cur_base < bytes) {
        size_t rsize = (bytes + SM_ARENA_SIZE - 1) & ~(SM_ARENA_SIZE - 1);
        void *r = sm_os_reserve(rsize, SM_ARENA_SIZE);
        if (r == NULL)
            return false;
        if (!sm_pagemap_add_region((uintptr_t)r, rsize, &h->st.arena_meta_sys)) {
            sm_os_unmap(r, rsize);
            return false;
        }
        if ((uintptr_t)r == h->cur_end) {
            h->cur_end += rsize;
        } else {
            /* Not contiguous: the rest of the old reservation joins the
             * heap now, so it is not lost.  If it cannot (no span
             * structure), the old rest stays for the next grow and the new
             * reservation goes back, or nothing would ever refer to it. */
            if (h->cur_end > h->cur_base &&
                !add_fresh_run(h, h->cur_base, (h->cur_end - h->cur_base) >> SM_PAGE_SHIFT)) {
                sm_os_unmap(r, rsize);
                return false;
            }
            h->cur_base = (uintptr_t)r;
            h->cur_end = (uintptr_t)r + rsize;
        }
    }
    if (!add_fresh_run(h, h->cur_base, ask))
        return false;
    h->cur_base += bytes;
    return true;
}

/* Released pages of [base, base + npages), a part of a free run of
 * run_pages pages of which run_released_pages are released: none or all
 * without looking at the bitmap when the run is all resident or all
 * released. */
static size_t run_released(uint32_t run_released_pages, size_t run_pages, uintptr_t base,
                           size_t npages)
{
    if (run_released_pages == 0)
        return 0;
    if (run_released_pages == run_pages)
        return npages;
    return sm_pagemap_count_released(base, npages);
}

/* Carve [base, base + npages) out of free run s (already out of its list),
 * giving the head and tail back as free runs. */
static bool carve(struct sm_mheap *h, struct sm_mspan *s, size_t npages, size_t align_pages)
{
    uintptr_t start = s->base;
    if (align_pages > 1) {
        uintptr_t ab = PAGE_BYTES(align_pages);
        start = (s->base + ab - 1) & ~(ab - 1);
    }
    size_t head = (start - s->base) >> SM_PAGE_SHIFT;
    size_t tail = s->npages - head - npages;
    struct sm_mspan *hs = NULL, *ts = NULL;
    if (head && (hs = span_new(h)) == NULL)
        return false;
    if (tail && (ts = span_new(h)) == NULL) {
        if (hs)
            span_dispose(h, hs);
        return false;
    }
    if (hs) {
        hs->base = s->base;
        hs->npages = head;
        hs->state = SM_SPAN_FREE;
        hs->idle_since = s->idle_since;
        hs->nreleased = (uint32_t)run_released(s->nreleased, s->npages, hs->base, head);
        sm_pagemap_set_span(hs->base, hs);
        sm_pagemap_set_span(hs->base + PAGE_BYTES(head - 1), hs);
        free_insert(h, hs);
    }
    if (ts) {
        ts->base = start + PAGE_BYTES(npages);
        ts->npages = tail;
        ts->state = SM_SPAN_FREE;
        ts->idle_since = s->idle_since;
        ts->nreleased = (uint32_t)run_released(s->nreleased, s->npages, ts->base, tail);
        sm_pagemap_set_span(ts->base, ts);
        sm_pagemap_set_span(ts->base + PAGE_BYTES(tail - 1), ts);
        free_insert(h, ts);
    }
    s->base = start;
    s->npages = npages;
    return true;
}

/* Bytes by which the heap's resident pages exceed the soft memory limit,
 * if there is anything to give back (idle resident pages, or the threads'
 * large caches); else 0.  Heap lock held. */
static size_t over_limit(struct sm_mheap *h)
{
    size_t limit = __atomic_load_n(&sm_opts.memlimit, __ATOMIC_RELAXED);
    if (limit == SIZE_MAX)
        return 0;
    uint64_t resident = PAGE_BYTES(h->st.pages_sys - h->st.pages_released);
    if (resident <= limit || (h->reclaim == NULL && h->st.pages_free == h->st.pages_released))
        return 0;
    return resident - limit;
}

/* Bring the heap back under the soft limit by over bytes: no lock held. */
static void limit_release(struct sm_mheap *h, size_t over)
{
    if (h->reclaim != NULL)
        h->reclaim();
    sm_mheap_scavenge(h, over, 0, SM_SCAV_LIMIT);
}

struct sm_mspan *sm_mheap_alloc(struct sm_mheap *h, size_t npages, size_t align_pages, uint8_t kind)
{
    size_t need = npages + (align_pages > 1 ? align_pages - 1 : 0);
    size_t over = 0;
    bool limited = false;   /* the limit was enforced before growing */
    sm_mheap_lock(h);
    struct sm_mspan *s = find_fit(h, need);
    if (s == NULL) {
        size_t limit = __atomic_load_n(&sm_opts.memlimit, __ATOMIC_RELAXED);
        uint64_t resident = PAGE_BYTES(h->st.pages_sys - h->st.pages_released + need);
        if (limit != SIZE_MAX && resident > limit &&
            (h->reclaim != NULL || h->st.pages_free > h->st.pages_released)) {
            /* Soft limit (GOMEMLIMIT): take back the spans the threads
             * keep for reuse, and give idle pages back, before mapping
             * more.  The allocation goes on either way. */
            sm_mheap_unlock(h);
            if (h->reclaim != NULL)
                h->reclaim();
            sm_mheap_scavenge(h, resident - limit, 0, SM_SCAV_LIMIT);
            sm_mheap_lock(h);
            s = find_fit(h, need);
            limited = true;
        }
    }
    if (s == NULL) {
        if (!grow(h, need) || (s = find_fit(h, need)) == NULL) {
            sm_mheap_unlock(h);
            return NULL;
        }
    }
    free_remove(h, s);
    uint32_t run_nreleased = s->nreleased;
    size_t run_npages = s->npages;
    if (!carve(h, s, npages, align_pages)) {
        free_insert(h, s);
        sm_mheap_unlock(h);
        return NULL;
    }
    size_t released = run_released(run_nreleased, run_npages, s->base, npages);
    h->st.pages_free -= npages;
    h->st.pages_inuse += npages;
    if (released) {
        sm_pagemap_mark_released(s->base, npages, false);
        h->st.pages_released -= released;
        if (!limited)
            over = over_limit(h);
    }
    s->nreleased = 0;
    s->idle_since = 0;
    s->needzero = sm_pagemap_take_needzero(s->base, npages);
    s->specials = NULL;
    s->prof_bucket = NULL;
    s->sampled = 0;
    sm_pagemap_set_spans(s->base, npages, s);
    if (kind == SM_PAGE_LARGE) {
        s->state = SM_SPAN_LARGE;
        s->sizeclass = 0;
        s->elemsize = 0;
        h->st.large_nmalloc++;
        h->st.large_bytes_alloc += PAGE_BYTES(npages);
    } else {
        s->state = SM_SPAN_SMALL;
        sm_mspan_init_small(s, kind);
    }
    /* Publish the kind last: the free fast path trusts it. */
    sm_pagemap_set_kind(s->base, npages, kind);
    sm_mheap_unlock(h);
    if (sm_unlikely(over != 0))
        limit_release(h, over);
    return s;
}

/* The most idle resident memory a free keeps for reuse beyond the retain
 * target: twice the largest large span freed lately, at most 64 MiB (glibc
 * keeps up to twice its mmap threshold at the top of its heap, and that
 * threshold follows the largest chunk freed, up to 32 MiB). */
#define SM_FREE_KEEP_MAX_PAGES ((size_t)(64u << 20) >> SM_PAGE_SHIFT)

/* Bytes a free of a large span releases now: the heap keeps idle resident
 * memory up to the retain target (SPANMALLOC_RETAIN percent of the heap in
 * use, as the scavenger does) plus twice the largest large span freed
 * lately, so a program that frees and allocates buffers of the same sizes
 * in turn keeps them resident.  Only when the idle resident memory passes
 * twice that does the free release it, down to that: hysteresis, because
 * best fit often puts the next allocation into a released run rather than
 * a larger dirty one, and every released page reused is a page fault.
 * Measured on bench/release_churn.c (doc/release.md): releasing everything
 * over the target at every free cost 3 to 8 times the system time of
 * glibc; the floor alone, 1.3 to 6 times; floor and hysteresis, 0.7 to 3.3
 * times, with RSS after the last free 8-16 MiB instead of 20-118 MiB.
 * 0 when there is nothing to release, or less than the 64 KiB a release
 * takes at least.  Heap lock held. */
static size_t free_excess(struct sm_mheap *h, size_t npages, bool moved)
{
    /* The largest span freed lately decays by 1/16 at every large free. */
    h->free_big_pages -= h->free_big_pages >> 4;
    uint64_t keep_pages = h->st.pages_inuse / 100 * sm_opts.retain_percent;
    uint64_t idle_dirty = h->st.pages_free - h->st.pages_released;
    if (moved) {
        /* The old pages of an object realloc moved: a buffer that grows is
         * not asked for at its old size again, so they get no keep of
         * their own and no hysteresis, and go back once the idle resident
         * memory passes the retain target by their size -- the RSS glibc
         * gets from mremap, which moves a grown chunk's pages instead of
         * copying them. */
        if (idle_dirty <= keep_pages + npages || idle_dirty - keep_pages < (64 * 1024) >> SM_PAGE_SHIFT)
            return 0;
        return PAGE_BYTES(idle_dirty - keep_pages);
    }
    if (npages > h->free_big_pages)
        h->free_big_pages = npages;
    keep_pages += 2 * h->free_big_pages < SM_FREE_KEEP_MAX_PAGES
                      ? 2 * h->free_big_pages : SM_FREE_KEEP_MAX_PAGES;
    if (idle_dirty <= 2 * keep_pages || idle_dirty - keep_pages < (64 * 1024) >> SM_PAGE_SHIFT)
        return 0;
    return PAGE_BYTES(idle_dirty - keep_pages);
}

void sm_mheap_free(struct sm_mheap *h, struct sm_mspan *s)
{
    sm_mheap_free_ex(h, s, false);
}

void sm_mheap_free_ex(struct sm_mheap *h, struct sm_mspan *s, bool moved)
{
    /* Idle times matter to the scavenger in seconds: the coarse clock. */
    uint64_t now = sm_nanotime_coarse();
    size_t excess = 0;
    sm_mheap_lock(h);
    if (s->state == SM_SPAN_LARGE) {
        h->st.large_nfree++;
        h->st.large_bytes_free += PAGE_BYTES(s->npages);
    }
    /* A large object's pages go back to the OS at once when the heap
     * already holds more idle resident memory than it keeps (glibc returns
     * a large chunk at free); the scavenger would take them only at its
     * next tick.  Small spans come back a few pages at a time and are left
     * to the scavenger. */
    bool large = s->state == SM_SPAN_LARGE || s->state == SM_SPAN_CACHED;
    size_t npages = s->npages;
    sm_pagemap_set_kind(s->base, s->npages, SM_PAGE_FREE);
    h->st.pages_inuse -= s->npages;
    h->st.pages_free += s->npages;
    s->state = SM_SPAN_FREE;
    s->list = SM_LIST_NONE;
    s->sizeclass = 0;
    s->specials = NULL;
    s->prof_bucket = NULL;
    s->sampled = 0;
    s->nreleased = 0;
    s->idle_since = now;
    free_join_insert(h, s);
    if (large)
        excess = free_excess(h, npages, moved);
    sm_mheap_unlock(h);
    /* Oldest runs first: the span just freed is the newest, the likeliest
     * to be reused, and goes last.  madvise runs without the heap lock. */
    if (sm_unlikely(excess != 0))
        sm_mheap_scavenge(h, excess, 0, SM_SCAV_FREE);
}

/* ---- resizing a large span in place (realloc) ---------------------------- */

bool sm_mheap_extend(struct sm_mheap *h, struct sm_mspan *s, size_t npages)
{
    SM_DEBUG_ASSERT(s->state == SM_SPAN_LARGE && npages > s->npages);
    size_t more = npages - s->npages;
    uintptr_t after = s->base + PAGE_BYTES(s->npages);
    sm_mheap_lock(h);
    if (sm_pagemap_kind(after) != SM_PAGE_FREE) {
        sm_mheap_unlock(h);
        return false;
    }
    struct sm_mspan *n = sm_pagemap_span(after);
    if (n->state != SM_SPAN_FREE || n->base != after || n->npages < more) {
        sm_mheap_unlock(h);
        return false;
    }
    free_remove(h, n);
    uint32_t run_nreleased = n->nreleased;
    size_t run_npages = n->npages;
    if (!carve(h, n, more, 0)) {
        free_insert(h, n);
        sm_mheap_unlock(h);
        return false;
    }
    size_t released = run_released(run_nreleased, run_npages, after, more);
    size_t over = 0;
    h->st.pages_free -= more;
    h->st.pages_inuse += more;
    if (released) {
        sm_pagemap_mark_released(after, more, false);
        h->st.pages_released -= released;
        over = over_limit(h);
    }
    h->st.large_bytes_alloc += PAGE_BYTES(more);
    (void)sm_pagemap_take_needzero(after, more);
    sm_pagemap_set_spans(after, more, s);
    sm_pagemap_set_kind(after, more, SM_PAGE_LARGE);
    s->npages = npages;
    span_dispose(h, n);
    sm_mheap_unlock(h);
    if (sm_unlikely(over != 0))
        limit_release(h, over);
    return true;
}

bool sm_mheap_shrink(struct sm_mheap *h, struct sm_mspan *s, size_t npages)
{
    SM_DEBUG_ASSERT(s->state == SM_SPAN_LARGE && npages > 0 && npages < s->npages);
    uint64_t now = sm_nanotime_coarse();
    size_t less = s->npages - npages;
    sm_mheap_lock(h);
    struct sm_mspan *t = span_new(h);
    if (t == NULL) {
        sm_mheap_unlock(h);
        return false;
    }
    t->base = s->base + PAGE_BYTES(npages);
    t->npages = less;
    t->state = SM_SPAN_FREE;
    t->nreleased = 0;
    t->idle_since = now;
    sm_pagemap_set_kind(t->base, less, SM_PAGE_FREE);
    h->st.pages_inuse -= less;
    h->st.pages_free += less;
    h->st.large_bytes_free += PAGE_BYTES(less);
    s->npages = npages;
    if (s->needzero > npages)
        s->needzero = npages;
    free_join_insert(h, t);
    sm_mheap_unlock(h);
    return true;
}

/* ---- giving pages back --------------------------------------------------- */

/* The oldest free run with resident pages, idle since before idle_before
 * (0: any) and at least min_pages long. */
static struct sm_mspan *oldest_dirty(struct sm_mheap *h, uint64_t idle_before, size_t min_pages)
{
    struct sm_mspan *best = NULL;
    for (size_t i = min_pages < SM_HEAP_NLISTS ? min_pages : SM_HEAP_NLISTS; i <= SM_HEAP_NLISTS; i++) {
        struct sm_spanlist *l = i < SM_HEAP_NLISTS ? &h->free[i] : &h->freelarge;
        for (struct sm_mspan *s = l->first; s; s = s->next) {
            if (s->nreleased >= s->npages || s->npages < min_pages)
                continue;
            if (idle_before && s->idle_since > idle_before)
                continue;
            if (best == NULL || s->idle_since < best->idle_since)
                best = s;
        }
    }
    return best;
}

size_t sm_mheap_scavenge(struct sm_mheap *h, size_t max_bytes, uint64_t idle_before_ns, int why)
{
    int policy = __atomic_load_n(&sm_opts.release, __ATOMIC_RELAXED);
    if (policy == SM_RELEASE_NONE)
        return 0;
    /* Background and limit releases go in runs of at least 64 KiB so page
     * tables and huge pages are not shredded; an explicit call takes all. */
    size_t min_pages = why == SM_SCAV_EXPLICIT ? 1 : (64 * 1024) >> SM_PAGE_SHIFT;
    size_t done = 0;
    sm_mheap_lock(h);
    for (;;) {
        struct sm_mspan *s = done < max_bytes ? oldest_dirty(h, idle_before_ns, min_pages) : NULL;
        if (s == NULL) {
            /* An explicit release returns only when every idle page is
             * released: runs another thread (the scavenger) has out for
             * madvise are waited for, and what they kept resident goes
             * next time round. */
            if (why != SM_SCAV_EXPLICIT || done >= max_bytes || h->scavenging.first == NULL)
                break;
            sm_mheap_unlock(h);
            struct timespec ts = {0, 50 * 1000};
            nanosleep(&ts, NULL);
            sm_mheap_lock(h);
            continue;
        }
        free_remove(h, s);
        s->state = SM_SPAN_SCAVENGING;
        list_push_front(&h->scavenging, s);
        /* Release the highest resident pages of the run first (as Go
         * does), no more than asked, rounded up to the minimum run. */
        size_t left = max_bytes - done;
        size_t want = left >= PAGE_BYTES(s->npages) ? s->npages
                                                    : (left + SM_PAGE_SIZE - 1) >> SM_PAGE_SHIFT;
        if (want < min_pages)
            want = min_pages;
        size_t end = s->npages;   /* one past the last resident page */
        while (end > 0 && sm_pagemap_count_released(s->base + PAGE_BYTES(end - 1), 1))
            end--;
        if (want > end)
            want = end;
        uintptr_t rbase = s->base + PAGE_BYTES(end - want);
        size_t before = sm_pagemap_count_released(rbase, want);
        sm_mheap_unlock(h);

        bool ok = sm_os_release((void *)rbase, PAGE_BYTES(want), policy);

        sm_mheap_lock(h);
        list_remove(&h->scavenging, s);
        if (ok) {
            size_t fresh = want - before;
            sm_pagemap_mark_released(rbase, want, true);
            if (policy == SM_RELEASE_DONTNEED)
                sm_pagemap_mark_zero(rbase, want);
            s->nreleased += (uint32_t)fresh;
            h->st.pages_released += fresh;
            h->st.released_bytes_total += PAGE_BYTES(fresh);
            done += PAGE_BYTES(fresh);
            if (why == SM_SCAV_BACKGROUND)
                h->st.nrelease_scavenger++;
            else if (why == SM_SCAV_LIMIT)
                h->st.nrelease_limit++;
            else if (why == SM_SCAV_FREE)
                h->st.nrelease_free++;
            else
                h->st.nrelease_explicit++;
        }
        s->state = SM_SPAN_FREE;
        free_join_insert(h, s);
        if (!ok)
            break;
    }
    sm_mheap_unlock(h);
    return done;
}

void sm_mheap_fork_child(struct sm_mheap *h)
{
    /* The thread that was releasing these is gone; their released bits
     * were not set, so they count as resident, which is safe. */
    while (h->scavenging.first) {
        struct sm_mspan *s = h->scavenging.first;
        list_remove(&h->scavenging, s);
        s->state = SM_SPAN_FREE;
        free_join_insert(h, s);
    }
}

/* ---- validation ----------------------------------------------------------- */

void sm_mheap_check(struct sm_mheap *h)
{
    sm_mheap_lock(h);
    /* Runs the scavenger has out for madvise are in no free list: wait
     * for them to come back, as an explicit release does. */
    while (h->scavenging.first != NULL) {
        sm_mheap_unlock(h);
        struct timespec ts = {0, 50 * 1000};
        nanosleep(&ts, NULL);
        sm_mheap_lock(h);
    }
    uint64_t free_pages = 0, released = 0;
    for (size_t i = 1; i <= SM_HEAP_NLISTS; i++) {
        struct sm_spanlist *l = i < SM_HEAP_NLISTS ? &h->free[i] : &h->freelarge;
        size_t len = 0;
        for (struct sm_mspan *s = l->first; s; s = s->next) {
            len++;
            if (s->state != SM_SPAN_FREE)
                sm_throw("mheap: span in free list is not free");
            if (i < SM_HEAP_NLISTS ? s->npages != i : s->npages < SM_HEAP_NLISTS)
                sm_throw("mheap: span in the wrong free list");
            if (sm_pagemap_span(s->base) != s ||
                sm_pagemap_span(s->base + PAGE_BYTES(s->npages - 1)) != s)
                sm_throw("mheap: free run ends not in page map");
            if (sm_pagemap_kind(s->base) != SM_PAGE_FREE)
                sm_throw("mheap: free run page not marked free");
            if (sm_pagemap_count_released(s->base, s->npages) != s->nreleased)
                sm_throw("mheap: released count disagrees with bitmap");
            if (sm_pagemap_kind(s->base - SM_PAGE_SIZE) == SM_PAGE_FREE &&
                sm_pagemap_span(s->base - SM_PAGE_SIZE)->state == SM_SPAN_FREE)
                sm_throw("mheap: free runs not joined");
            free_pages += s->npages;
            released += s->nreleased;
        }
        if (len != l->len)
            sm_throw("mheap: free list length");
        if (i < SM_HEAP_NLISTS && ((h->nonempty[i / 64] >> (i % 64)) & 1) != (l->first != NULL))
            sm_throw("mheap: non-empty list bitmap disagrees with the lists");
    }
    if (free_pages != h->st.pages_free)
        sm_throw("mheap: pages_free disagrees with free lists");
    if (released != h->st.pages_released)
        sm_throw("mheap: pages_released disagrees with free runs");
    if (h->st.pages_inuse + h->st.pages_free != h->st.pages_sys)
        sm_throw("mheap: inuse + free != sys");
    sm_mheap_unlock(h);
}
