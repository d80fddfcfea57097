/*
 * check.c - checked mode (SPANMALLOC_CHECK=1), and the object states that
 * valgrind support shares with checked mode.  The always-on free-list
 * hardening is freelist.c's; when it finds a corrupted link in checked
 * mode it asks sm_check_blame_link here which object overflowed.
 *
 * Routing.  In checked mode, and under valgrind's memcheck, sm_check_slow
 * is set before the first cache exists: caches keep bounds of 0 and empty
 * lists, so the one test of each fast path sends every malloc and free to
 * mcache.c's slow path, which takes or gives one object at a time from
 * mcentral (sm_mcentral_alloc_one, _free_one: nothing is read or written
 * in the object) through the functions here.  A large object freed goes
 * straight back to the heap, never to the thread's large cache, so every
 * large malloc gets its span from the heap, and sm_check_alloc_large runs
 * on whatever span large_alloc found anyway.  realloc in checked mode is
 * sm_check_realloc's: in place only within the object's class or pages
 * (the canary moved to the new end), otherwise malloc, copy and free; the
 * heap's extend and shrink in place are not used.  Nothing here relies on the page
 * kinds' SM_PAGE_SLOW bit, which the profiler sets and clears for its own
 * reasons.
 *
 * Object states.  Every small span that hands out an object in this mode
 * gets an array with one uint16_t per object (s->checkstate, from a
 * fixalloc per size class over the OS layer, never malloc, counted in
 * other_sys): 0 never handed out, 1 free, n >= 2 live with n - 2 bytes
 * requested.  A free must name a live object's first byte: anything else
 * in one of our spans is an interior pointer ("invalid pointer") or an
 * object that is not live ("double free"); a large object's pages say the
 * same (free pages: double free; not its base: invalid pointer).  A double
 * free is caught while the object is still free: once it is handed out
 * again the second free is a valid free of the new object, as in every
 * allocator without a quarantine.
 *
 * Canaries and poison (checked mode, not under valgrind, which finds the
 * same errors itself when they happen).  A request gets a class with room
 * for at least one byte past it (sm_check_class: the class of one byte
 * more when the request fills its own, and memalign looks for its aligned
 * class from one byte more; past 32 KiB a large object; a large object one
 * more page when its pages would be full), and everything after the requested bytes, to the end of the
 * object or of the large object's last page, is filled with SM_CANARY.
 * The canary is verified when the object is freed or resized, and the
 * first canary byte of every live object of a span (the byte any overflow
 * that runs on from the end writes first) each time the span hands out an
 * object: a write past the end is reported as "buffer overflow" then.
 * (Checking every canary byte of every live object at each allocation
 * made a perl script 7.6 times slower than the default mode instead of
 * 2.5 times.)  A freed object is filled with SM_POISON, all of it: spans
 * keep their free objects in a bitmap and no link is written in an object
 * that moves one at a time.  When it is handed out again the poison is
 * verified (a change: "write after free", unless the object before it is
 * live and its canary is broken too: then that object overflowed into it).
 * malloc's usable size is the requested size, so the slack is never the
 * program's.
 *
 * Reports are one line, "spanmalloc: fn(): what 0x...", then abort().
 *
 * Locks.  stripes[i] guard the states of the spans that hash to i (the
 * array's creation, every state change, canaries being written or read);
 * state_lock guards the fixallocs and is taken inside a stripe or alone.
 * Neither is held while calling mcentral or the heap, and nothing under
 * them calls malloc.  Reports read without locks: they abort.  The fork
 * handlers take them all first (malloc.c).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

SM_HIDDEN int sm_check_slow;

#define SM_CANARY 0xFD
#define SM_POISON 0xDD
#define SM_STATE_FREE 1
#define SM_STATE_LIVE 2 /* + requested bytes */
#define SM_CHECK_STRIPES 16

struct stripe {
    pthread_mutex_t lock;
} __attribute__((aligned(64)));

static struct stripe stripes[SM_CHECK_STRIPES] = {
    [0 ... SM_CHECK_STRIPES - 1] = { PTHREAD_MUTEX_INITIALIZER },
};
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sm_fixalloc state_alloc[SM_NUM_SIZE_CLASSES];
static uint64_t state_sys;   /* bytes from the OS layer (atomic) */

/* ---- start ------------------------------------------------------------------- */

void sm_check_init(void)
{
    int flags = 0;
    if (sm_opts.check)
        flags |= SM_CHECK_ON | SM_CHECK_FILL;
    if (sm_valgrind_running()) {
        flags = SM_CHECK_ON | SM_CHECK_VALGRIND;
        /* The scavenger's thread would be the program's to memcheck: its
         * thread block shows as possibly lost at exit.  Returning pages
         * early buys nothing under memcheck. */
        sm_opts.scavenge = false;
        /* Its records hold object addresses, which memcheck's leak check
         * would take for pointers (valgrind.c). */
        sm_opts.profile_rate = 0;
    }
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        sm_fixalloc_init(&state_alloc[cls], sm_class_to_nobjs[cls] * sizeof(uint16_t));
    sm_check_slow = flags;
}

/* ---- reports --------------------------------------------------------------------- */

static struct stripe *stripe_of(const struct sm_mspan *s)
{
    return &stripes[(((uintptr_t)s >> 4) * 0x9e3779b97f4a7c15ull) >> 60];
}

/* Every byte of [p, p + n) is b.  Reads only those bytes (the program
 * may be writing the ones before them), eight at a time where aligned. */
SM_INLINE bool all_bytes(const void *p, size_t n, uint8_t b)
{
    const unsigned char *c = p;
    uint64_t w = 0x0101010101010101ull * b;
    while (n > 0 && ((uintptr_t)c & 7)) {
        if (*c != b)
            return false;
        c++, n--;
    }
    uint64_t diff = 0;
    for (; n >= 8; c += 8, n -= 8)
        diff |= *(const uint64_t *)(const void *)c ^ w;
    for (; n > 0; c++, n--)
        diff |= *c ^ b;
    return diff == 0;
}

static void *object_at(const struct sm_mspan *s, uint32_t i)
{
    return (void *)(s->base + (uintptr_t)i * s->elemsize);
}

/* Object i of s is live and its canary broken. */
static bool overflowed(const struct sm_mspan *s, uint32_t i)
{
    uint16_t st = s->checkstate[i];
    if (st < SM_STATE_LIVE)
        return false;
    size_t req = st - SM_STATE_LIVE;
    return !all_bytes((char *)object_at(s, i) + req, s->elemsize - req, SM_CANARY);
}

/* Free object i of s was written: name the object before it if it is the
 * one that overflowed, else this one. */
static void __attribute__((noreturn)) blame(const char *fn, const struct sm_mspan *s, uint32_t i)
{
    if (i > 0 && overflowed(s, i - 1))
        sm_bad_pointer(fn, "buffer overflow of", object_at(s, i - 1));
    sm_bad_pointer(fn, "write after free of", object_at(s, i));
}

void sm_check_blame_link(const char *fn, const void *obj)
{
    /* In checked mode a free object's link is written only by us. */
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)obj);
    if (s != NULL && s->state == SM_SPAN_SMALL && s->checkstate != NULL &&
        sm_mspan_is_object(s, (uintptr_t)obj))
        blame(fn, s, sm_mspan_objindex(s, (uintptr_t)obj));
}

/* ---- small objects ------------------------------------------------------------------ */

uint32_t sm_check_class(uint32_t cls, size_t size)
{
    if (size < sm_class_to_size[cls])
        return cls;
    /* Only malloc's 16 bytes of alignment to keep: memalign asked for
     * size + 1 already (malloc.c). */
    return size < SM_MAX_SMALL_SIZE ? sm_size_to_class(size + 1) : 0;
}

static uint16_t *states_new(uint32_t cls)
{
    struct sm_fixalloc *f = &state_alloc[cls];
    pthread_mutex_lock(&state_lock);
    uint64_t before = f->sys;
    uint16_t *st = sm_fixalloc_alloc(f);
    if (f->sys != before)
        __atomic_add_fetch(&state_sys, f->sys - before, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&state_lock);
    return st;
}

void sm_check_span_release(struct sm_mspan *s)
{
    struct stripe *sp = stripe_of(s);
    pthread_mutex_lock(&sp->lock);
    uint16_t *st = s->checkstate;
    s->checkstate = NULL;
    pthread_mutex_unlock(&sp->lock);
    if (st == NULL)
        return;
    pthread_mutex_lock(&state_lock);
    sm_fixalloc_free(&state_alloc[s->sizeclass], st);
    pthread_mutex_unlock(&state_lock);
}

/* Object i of s is live and the byte right after its requested bytes is
 * not the canary's: every overflow that runs on from the end writes it. */
static bool overflowed_quick(const struct sm_mspan *s, uint32_t i)
{
    uint16_t st = s->checkstate[i];
    return st >= SM_STATE_LIVE &&
           *((const unsigned char *)object_at(s, i) + (st - SM_STATE_LIVE)) != SM_CANARY;
}

/* Verify the first canary byte of every live object of s (its stripe
 * held); the whole canary is verified when the object is freed.  States
 * are read four at a time: a group with none live (all 0 or 1) is skipped
 * in one test. */
static void verify_span(const struct sm_mspan *s)
{
    uint32_t n = sm_class_to_nobjs[s->sizeclass];
    const uint16_t *st = s->checkstate;
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t group;
        memcpy(&group, st + i, sizeof group);
        if ((group & 0xfffefffefffefffeull) == 0)
            continue;
        for (uint32_t k = i; k < i + 4; k++)
            if (sm_unlikely(overflowed_quick(s, k)))
                sm_bad_pointer("malloc", "buffer overflow of", object_at(s, k));
    }
    for (; i < n; i++)
        if (sm_unlikely(overflowed_quick(s, i)))
            sm_bad_pointer("malloc", "buffer overflow of", object_at(s, i));
}

void *sm_check_alloc_small(uint32_t cls, size_t size)
{
    void *p = sm_mcentral_alloc_one(&sm_central[cls], &sm_heap);
    if (p == NULL)
        return NULL;
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    uint32_t i = sm_mspan_objindex(s, (uintptr_t)p);
    struct stripe *sp = stripe_of(s);
    pthread_mutex_lock(&sp->lock);
    if (s->checkstate == NULL && (s->checkstate = states_new(cls)) == NULL) {
        pthread_mutex_unlock(&sp->lock);
        sm_mcentral_free_one(&sm_central[cls], &sm_heap, p);
        return NULL;
    }
    uint16_t st = s->checkstate[i];
    if (sm_unlikely(st >= SM_STATE_LIVE))
        sm_freelist_corrupt("malloc", NULL, p);   /* a live object on a free list */
    if (sm_check_slow & SM_CHECK_FILL) {
        /* Objects come and go one at a time, and no link is ever written
         * in them: all of a free object is poison. */
        if (st == SM_STATE_FREE && !all_bytes(p, s->elemsize, SM_POISON))
            blame("malloc", s, i);
        verify_span(s);
        memset((char *)p + size, SM_CANARY, s->elemsize - size);
    }
    s->checkstate[i] = (uint16_t)(size + SM_STATE_LIVE);
    pthread_mutex_unlock(&sp->lock);
    if (sm_check_slow & SM_CHECK_VALGRIND)
        sm_valgrind_malloc(p, size, s->elemsize, false);
    return p;
}

/* p's span (a small class) and index, or an invalid-pointer report. */
static struct sm_mspan *small_object(const char *fn, const void *p, uint32_t *idx)
{
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    if (s == NULL || s->state != SM_SPAN_SMALL || !sm_mspan_is_object(s, (uintptr_t)p))
        sm_bad_pointer(fn, "invalid pointer", p);
    *idx = sm_mspan_objindex(s, (uintptr_t)p);
    return s;
}

void sm_check_bad_free(const char *what, const void *p)
{
    if (sm_check_slow & SM_CHECK_VALGRIND)
        sm_valgrind_free((void *)p);
    sm_bad_pointer("free", what, p);
}

void sm_check_free_small(void *p, uint32_t cls)
{
    (void)cls;
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    if (s == NULL || s->state != SM_SPAN_SMALL || !sm_mspan_is_object(s, (uintptr_t)p))
        sm_check_bad_free("invalid pointer", p);
    uint32_t i = sm_mspan_objindex(s, (uintptr_t)p);
    struct stripe *sp = stripe_of(s);
    pthread_mutex_lock(&sp->lock);
    uint16_t st = s->checkstate ? s->checkstate[i] : 0;
    if (sm_unlikely(st < SM_STATE_LIVE))
        sm_check_bad_free("double free of", p);
    if ((sm_check_slow & SM_CHECK_FILL) && overflowed(s, i))
        sm_bad_pointer("free", "buffer overflow of", p);
    s->checkstate[i] = SM_STATE_FREE;
    pthread_mutex_unlock(&sp->lock);
    if (sm_check_slow & SM_CHECK_FILL)
        memset(p, SM_POISON, s->elemsize);
    if (sm_check_slow & SM_CHECK_VALGRIND)
        sm_valgrind_free(p);
}

/* ---- large objects --------------------------------------------------------------------- */

static size_t span_bytes(const struct sm_mspan *s)
{
    return s->npages << SM_PAGE_SHIFT;
}

/* The canary runs from the requested size to the end of the last page. */
static bool large_overflowed(const struct sm_mspan *s)
{
    return !all_bytes((char *)s->base + s->reqsize, span_bytes(s) - s->reqsize, SM_CANARY);
}

void sm_check_alloc_large(struct sm_mspan *s)
{
    if (sm_check_slow & SM_CHECK_FILL)
        memset((char *)s->base + s->reqsize, SM_CANARY, span_bytes(s) - s->reqsize);
    if (sm_check_slow & SM_CHECK_VALGRIND)
        sm_valgrind_malloc((void *)s->base, s->reqsize, span_bytes(s), false);
}

void sm_check_free_large(struct sm_mspan *s)
{
    if ((sm_check_slow & SM_CHECK_FILL) && large_overflowed(s))
        sm_bad_pointer("free", "buffer overflow of", (void *)s->base);
    if (sm_check_slow & SM_CHECK_VALGRIND)
        sm_valgrind_free((void *)s->base);
}

/* ---- the other entry points ---------------------------------------------------------------- */

/* The requested size of live object p; reports what p is otherwise. */
static size_t live_size(const char *fn, const void *p)
{
    uint8_t kind = sm_pagemap_kind((uintptr_t)p);
    if (kind == SM_PAGE_NONE)
        sm_bad_pointer(fn, "invalid pointer", p);
    if (kind == SM_PAGE_FREE)
        sm_bad_pointer(fn, "use after free of", p);
    if (kind == SM_PAGE_LARGE) {
        struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
        if (s->base != (uintptr_t)p)
            sm_bad_pointer(fn, "invalid pointer", p);
        if (s->state != SM_SPAN_LARGE)
            sm_bad_pointer(fn, "use after free of", p);   /* in a large cache */
        return s->reqsize;
    }
    uint32_t i;
    struct sm_mspan *s = small_object(fn, p, &i);
    struct stripe *sp = stripe_of(s);
    pthread_mutex_lock(&sp->lock);
    uint16_t st = s->checkstate ? s->checkstate[i] : 0;
    pthread_mutex_unlock(&sp->lock);
    if (st < SM_STATE_LIVE)
        sm_bad_pointer(fn, "use after free of", p);
    return st - SM_STATE_LIVE;
}

size_t sm_check_usable_size(const void *p)
{
    return live_size("malloc_usable_size", p);
}

/* Resize p in place if it keeps its class (small) or its pages (large). */
static bool resize_in_place(void *p, size_t old, size_t size)
{
    uintptr_t a = (uintptr_t)p;
    struct sm_mspan *s = sm_pagemap_span(a);
    if (s->state == SM_SPAN_LARGE) {
        if (size <= SM_MAX_SMALL_SIZE || ((size + SM_PAGE_SIZE) >> SM_PAGE_SHIFT) != s->npages)
            return false;
        if ((sm_check_slow & SM_CHECK_FILL) && large_overflowed(s))
            sm_bad_pointer("realloc", "buffer overflow of", p);
        s->reqsize = size;
        if (sm_check_slow & SM_CHECK_FILL)
            memset((char *)p + size, SM_CANARY, span_bytes(s) - size);
    } else {
        if (size > SM_MAX_SMALL_SIZE || sm_check_class(sm_size_to_class(size), size) != s->sizeclass)
            return false;
        uint32_t i = sm_mspan_objindex(s, a);
        struct stripe *sp = stripe_of(s);
        pthread_mutex_lock(&sp->lock);
        if ((sm_check_slow & SM_CHECK_FILL) && overflowed(s, i))
            sm_bad_pointer("realloc", "buffer overflow of", p);
        if (sm_check_slow & SM_CHECK_FILL)
            memset((char *)p + size, SM_CANARY, s->elemsize - size);
        s->checkstate[i] = (uint16_t)(size + SM_STATE_LIVE);
        pthread_mutex_unlock(&sp->lock);
    }
    if (sm_check_slow & SM_CHECK_VALGRIND)
        sm_valgrind_resize(p, old, size);
    return true;
}

void *sm_check_realloc(void *p, size_t size)
{
    if (p == NULL)
        return malloc(size);
    if (size == 0) {
        free(p);
        return NULL;
    }
    size_t old = live_size("realloc", p);
    if (resize_in_place(p, old, size))
        return p;
    void *q = malloc(size);
    if (q == NULL)
        return NULL;
    memcpy(q, p, old < size ? old : size);
    free(p);   /* verifies p's canary */
    return q;
}

void sm_check_calloc(void *p, size_t size)
{
    /* Pages fresh from the OS were not written: memcheck must be told. */
    if (sm_check_slow & SM_CHECK_VALGRIND)
        sm_valgrind_defined(p, size);
}

uint64_t sm_check_sys(void)
{
    return __atomic_load_n(&state_sys, __ATOMIC_RELAXED);
}

/* ---- fork ---------------------------------------------------------------------------------- */

void sm_check_fork_prepare(void)
{
    for (int i = 0; i < SM_CHECK_STRIPES; i++)
        pthread_mutex_lock(&stripes[i].lock);
    pthread_mutex_lock(&state_lock);
}

static void unlock_all(void)
{
    pthread_mutex_unlock(&state_lock);
    for (int i = SM_CHECK_STRIPES - 1; i >= 0; i--)
        pthread_mutex_unlock(&stripes[i].lock);
}

void sm_check_fork_parent(void)
{
    unlock_all();
}

void sm_check_fork_child(void)
{
    unlock_all();
}
