/*
 * internal.h - prototypes shared between spanmalloc's files, grouped by the
 * file that defines them, and the static inline fast paths.
 *
 * Everything here has hidden visibility: the shared library exports only the
 * libc allocation entry points and the public sm_* API.
 */
#ifndef SM_INTERNAL_H
#define SM_INTERNAL_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>

#include "types.h"
#include "os.h"

#ifndef SM_STATS
#define SM_STATS 1
#endif

/* ---- hints and attributes ------------------------------------------------ */
#define sm_likely(x) __builtin_expect(!!(x), 1)
#define sm_unlikely(x) __builtin_expect(!!(x), 0)
#define SM_NOINLINE __attribute__((noinline))
#define SM_INLINE static inline __attribute__((always_inline))
#define SM_HIDDEN __attribute__((visibility("hidden")))
#define SM_EXPORT __attribute__((visibility("default")))
#define SM_COLD __attribute__((cold))

/* Invariants in levels: SM_ASSERT always (cheap), SM_DEBUG_ASSERT only in
 * debug builds (configure --enable-debug defines SM_DEBUG=1). */
#ifndef SM_DEBUG
#define SM_DEBUG 0
#endif
#define SM_ASSERT(c) do { if (sm_unlikely(!(c))) sm_throw("assertion failed: " #c); } while (0)
#define SM_DEBUG_ASSERT(c) do { if (SM_DEBUG && sm_unlikely(!(c))) sm_throw("assertion failed: " #c); } while (0)

/* Counters that one thread writes and others read for stats: a plain add,
 * no lock prefix.  Readers load them atomically; on x86-64 an aligned
 * 8-byte store is never torn.  Under ThreadSanitizer the add is a relaxed
 * atomic load and store, so the race is declared. */
#if defined(__SANITIZE_THREAD__)
#define SM_COUNTER_ADD(x, v)                                                           \
    do {                                                                               \
        if (SM_STATS)                                                                  \
            __atomic_store_n(&(x), __atomic_load_n(&(x), __ATOMIC_RELAXED) + (v),      \
                             __ATOMIC_RELAXED);                                        \
    } while (0)
#else
#define SM_COUNTER_ADD(x, v)                                                           \
    do {                                                                               \
        if (SM_STATS)                                                                  \
            (x) += (v);                                                                \
    } while (0)
#endif
#define SM_COUNTER_READ(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* Largest request we try to serve; anything bigger is ENOMEM at once, so no
 * page arithmetic can wrap. */
#define SM_MAX_ALLOC ((size_t)1 << 46)
#define SM_MAX_ALIGN ((size_t)1 << 40)

/* ---- panic.c ---------------------------------------------------------- */
SM_HIDDEN __attribute__((noreturn)) SM_COLD void sm_throw(const char *msg);
SM_HIDDEN __attribute__((noreturn)) SM_COLD void sm_bad_pointer(const char *fn, const char *what, const void *p);
/* One line on stderr, "spanmalloc: " then the parts; no malloc. */
SM_HIDDEN void sm_warn(const char *a, const char *b, const char *c);
SM_HIDDEN size_t sm_fmt_u64(char *buf, uint64_t v);
SM_HIDDEN size_t sm_fmt_hex(char *buf, uint64_t v);
SM_HIDDEN uint64_t sm_nanotime(void);
/* The same clock at a few milliseconds' resolution, cheaper to read. */
SM_HIDDEN uint64_t sm_nanotime_coarse(void);

/* ---- options.c -------------------------------------------------------- */
enum sm_stats_mode { SM_STATS_OFF = 0, SM_STATS_EXIT, SM_STATS_INTERVAL };

struct sm_options {
    int release;              /* enum sm_release (spanmalloc.h) */
    bool scavenge;
    uint32_t retain_percent;
    size_t memlimit;          /* SIZE_MAX: none */
    size_t profile_rate;
    char profile_prefix[512]; /* empty: unset */
    int profile_signal;       /* 0: none */
    uint64_t profile_interval_ns; /* 0: none */
    size_t profile_growth;    /* SPANMALLOC_PROFILE_GROWTH bytes; 0: none */
    int stats_mode;
    uint64_t stats_interval_ns;
    bool check;
    bool verbose;             /* print the options in effect at start */
    char http_addr[108];      /* SPANMALLOC_HTTP; empty: no endpoint */
    int stats_json;           /* SPANMALLOC_STATS_FORMAT: 0 text, 1 json */
};
SM_HIDDEN extern struct sm_options sm_opts;
SM_HIDDEN void sm_options_init(void);
/* The options table: one line per variable; the kind picks the parser and
 * the printer (options.c). */
enum sm_option_kind {
    SM_OPT_BOOL,      /* bool: on/off, 1/0, true/false, yes/no */
    SM_OPT_ENUM,      /* int: the index of one of names[] */
    SM_OPT_PERCENT,   /* uint32_t: 0..10000, '%' optional */
    SM_OPT_SIZE,      /* size_t: bytes, with a unit or not */
    SM_OPT_LIMIT,     /* size_t: bytes above 0, or none (SIZE_MAX) */
    SM_OPT_STRING,    /* char[size]: not empty */
    SM_OPT_PATH,      /* char[size]: not empty, 64 bytes left for a suffix */
    SM_OPT_DURATION,  /* uint64_t ns above 0 */
    SM_OPT_SIGNAL,    /* int: a signal number */
    SM_OPT_STATS,     /* "exit", "off" or an interval: stats_mode and stats_interval_ns */
    SM_OPT_ADDR,      /* char[size]: host:port, :port or unix:/path */
};
struct sm_option {
    const char *name;          /* the environment variable */
    enum sm_option_kind kind;
    const char *def;           /* the default, spelt as the variable takes it; "": unset */
    void *value;               /* its field in sm_opts */
    size_t size;               /* the field's size */
    const char *const *names;  /* SM_OPT_ENUM: the values' names, NULL-terminated */
    const char *help;          /* one line for the README's table */
};
SM_HIDDEN extern const struct sm_option sm_options[];
SM_HIDDEN extern const size_t sm_noptions;
/* Parse s into o's field; false (the field untouched) if s is bad. */
SM_HIDDEN bool sm_option_parse(const struct sm_option *o, const char *s);
/* o's value in effect, spelt as the variable would take it. */
SM_HIDDEN size_t sm_option_print(const struct sm_option *o, char *buf, size_t cap);
SM_HIDDEN void sm_options_set_defaults(void);
/* One line per option on stderr: NAME=value (SPANMALLOC_VERBOSE). */
SM_HIDDEN void sm_options_print(void);
/* The README's environment table, in markdown, to fd. */
SM_HIDDEN void sm_options_write_doc(int fd);
/* Parsers, exposed for the unit test. */
SM_HIDDEN bool sm_parse_size(const char *s, size_t *out);
SM_HIDDEN bool sm_parse_duration(const char *s, uint64_t *ns);

/* ---- fixalloc.c ------------------------------------------------------- */
SM_HIDDEN void sm_fixalloc_init(struct sm_fixalloc *f, size_t size);
SM_HIDDEN void *sm_fixalloc_alloc(struct sm_fixalloc *f);   /* zeroed; NULL on OOM */
SM_HIDDEN void sm_fixalloc_free(struct sm_fixalloc *f, void *p);

/* ---- pagemap.c -------------------------------------------------------- */
/* Entry ai is 0 for address space that is not ours, or else the address of
 * arena ai's pagekind array minus ai << (SM_ARENA_SHIFT - SM_PAGE_SHIFT):
 * the kind byte of the page at a is then at sm_arenas[ai] + (a >>
 * SM_PAGE_SHIFT), with no mask to take the page's index in its arena (one
 * instruction off free's fast path).  pagekind is the arena's first field,
 * so the same sum locates the arena. */
SM_HIDDEN extern uintptr_t sm_arenas[SM_ARENA_INDEX_LEN];
SM_INLINE uintptr_t sm_arena_bias(uintptr_t ai)
{
    return ai << (SM_ARENA_SHIFT - SM_PAGE_SHIFT);
}

SM_INLINE struct sm_heap_arena *sm_pagemap_arena(uintptr_t a)
{
    if (sm_unlikely(a >> SM_ADDR_BITS))
        return NULL;
    uintptr_t ai = a >> SM_ARENA_SHIFT;
    uintptr_t e = __atomic_load_n(&sm_arenas[ai], __ATOMIC_ACQUIRE);
    return e ? (struct sm_heap_arena *)(e + sm_arena_bias(ai)) : NULL;
}
SM_INLINE size_t sm_pagemap_index(uintptr_t a)
{
    return (a >> SM_PAGE_SHIFT) & (SM_PAGES_PER_ARENA - 1);
}
/* Register arena metadata for [base, base+size), both arena-aligned. */
SM_HIDDEN bool sm_pagemap_add_region(uintptr_t base, size_t size, uint64_t *meta_bytes);
SM_HIDDEN void sm_pagemap_set_kind(uintptr_t base, size_t npages, uint8_t kind);
SM_HIDDEN void sm_pagemap_set_spans(uintptr_t base, size_t npages, struct sm_mspan *s);
SM_HIDDEN void sm_pagemap_set_span(uintptr_t addr, struct sm_mspan *s);
SM_INLINE struct sm_mspan *sm_pagemap_span(uintptr_t addr)
{
    struct sm_heap_arena *ar = sm_pagemap_arena(addr);
    return ar ? ar->spans[sm_pagemap_index(addr)] : NULL;
}
SM_INLINE uint8_t sm_pagemap_kind(uintptr_t addr)
{
    struct sm_heap_arena *ar = sm_pagemap_arena(addr);
    return ar ? __atomic_load_n(&ar->pagekind[sm_pagemap_index(addr)], __ATOMIC_RELAXED) : SM_PAGE_NONE;
}
/* Released-page bitmap: count the set bits in a range, set or clear them. */
SM_HIDDEN size_t sm_pagemap_count_released(uintptr_t base, size_t npages);
SM_HIDDEN void sm_pagemap_mark_released(uintptr_t base, size_t npages, bool released);
/* Pages known to be zero: set for fresh or MADV_DONTNEED'd pages. */
SM_HIDDEN void sm_pagemap_mark_zero(uintptr_t base, size_t npages);
/* The range is being handed out: returns how many pages from base may hold
 * old data (the pages after them are zero), and forgets the zero marks. */
SM_HIDDEN size_t sm_pagemap_take_needzero(uintptr_t base, size_t npages);

/* ---- mheap.c ---------------------------------------------------------- */
SM_HIDDEN extern struct sm_mheap sm_heap;
SM_HIDDEN void sm_mheap_init(struct sm_mheap *h);
/* A span of npages pages whose base is aligned to align_pages pages (0 or 1:
 * no alignment beyond a page).  kind is a size class or SM_PAGE_LARGE.
 * NULL if the OS gives no more memory.  Takes the heap lock. */
SM_HIDDEN struct sm_mspan *sm_mheap_alloc(struct sm_mheap *h, size_t npages, size_t align_pages, uint8_t kind);
/* Give a small or large span back; it joins its free neighbours. */
SM_HIDDEN void sm_mheap_free(struct sm_mheap *h, struct sm_mspan *s);
/* moved: s held a large object that realloc moved elsewhere; its pages
 * are released sooner (free_excess). */
SM_HIDDEN void sm_mheap_free_ex(struct sm_mheap *h, struct sm_mspan *s, bool moved);
/* Resize the live large span s in place to npages pages: extend it over
 * the free pages right after it (false if they are not free or too few), or
 * give its last pages back as a free run.  The object's bytes are counted
 * as allocated or freed (total_alloc, heap_alloc). */
SM_HIDDEN bool sm_mheap_extend(struct sm_mheap *h, struct sm_mspan *s, size_t npages);
SM_HIDDEN bool sm_mheap_shrink(struct sm_mheap *h, struct sm_mspan *s, size_t npages);
/* Release idle pages to the OS: at most max_bytes, only runs idle since
 * before idle_before_ns (0: any), oldest first.  Returns bytes released. */
SM_HIDDEN size_t sm_mheap_scavenge(struct sm_mheap *h, size_t max_bytes, uint64_t idle_before_ns, int why);
enum { SM_SCAV_EXPLICIT, SM_SCAV_BACKGROUND, SM_SCAV_LIMIT, SM_SCAV_FREE };
/* Validate every free list and the stats; throws on corruption. */
SM_HIDDEN void sm_mheap_check(struct sm_mheap *h);
SM_HIDDEN void sm_mheap_lock(struct sm_mheap *h);
/* In a fork child: runs taken out for madvise go back to the free lists. */
SM_HIDDEN void sm_mheap_fork_child(struct sm_mheap *h);
SM_HIDDEN void sm_mheap_unlock(struct sm_mheap *h);

/* ---- mspan.c ---------------------------------------------------------- */
SM_HIDDEN void sm_mspan_init_small(struct sm_mspan *s, uint8_t sizeclass);
/* Take up to n objects from a small span, linked (encoded links) in front
 * of the list *head; returns count. */
SM_HIDDEN uint32_t sm_mspan_take(struct sm_mspan *s, uint32_t n, void **head);
/* One object from a small span with nfree > 0, nothing written in it. */
SM_HIDDEN void *sm_mspan_take_one(struct sm_mspan *s);
/* Mark p free in its span (a bit already set: a double free, reported). */
SM_HIDDEN void sm_mspan_put(struct sm_mspan *s, void *p);
/* Index of p's object in its span (exact division by multiply). */
SM_INLINE uint32_t sm_mspan_objindex(const struct sm_mspan *s, uintptr_t p)
{
    return (uint32_t)(((uint64_t)(p - s->base) * sm_class_to_divmagic[s->sizeclass]) >> 32);
}
/* p is the start of one of s's objects (s a small span), for any p: the
 * index is exact inside the span, and outside it no index below nobjs
 * times the object size can equal the offset. */
SM_INLINE bool sm_mspan_is_object(const struct sm_mspan *s, uintptr_t p)
{
    uintptr_t off = p - s->base;
    uint32_t idx = (uint32_t)(((uint64_t)off * sm_class_to_divmagic[s->sizeclass]) >> 32);
    return idx < sm_class_to_nobjs[s->sizeclass] && (uintptr_t)idx * s->elemsize == off;
}
/* Mark object idx of s (p, for the report) free: a double free aborts.
 * The owning mcentral's lock held. */
SM_INLINE void sm_mspan_put_index(struct sm_mspan *s, uint32_t idx, const void *p)
{
    uint32_t w = idx / 64;
    uint64_t bit = (uint64_t)1 << (idx % 64);
    if (sm_unlikely(s->freebits[w] & bit))
        sm_bad_pointer("free", "double free of", p);
    s->freebits[w] |= bit;
    s->nfree++;
    if (w < s->freeword)
        s->freeword = w;
}

/* ---- mcentral.c ------------------------------------------------------- */
SM_HIDDEN extern struct sm_mcentral sm_central[SM_NUM_SIZE_CLASSES];
SM_HIDDEN void sm_mcentral_init(struct sm_mcentral *c, uint32_t sizeclass);
/* Up to want objects as a list in *head; returns how many (0: no memory). */
SM_HIDDEN uint32_t sm_mcentral_alloc_batch(struct sm_mcentral *c, struct sm_mheap *h, uint32_t want, void **head);
/* Give back n objects linked through their first word. */
SM_HIDDEN void sm_mcentral_free_batch(struct sm_mcentral *c, struct sm_mheap *h, void *head, uint32_t n);
/* One object, nothing read or written in it: NULL if no memory. */
SM_HIDDEN void *sm_mcentral_alloc_one(struct sm_mcentral *c, struct sm_mheap *h);
SM_HIDDEN void sm_mcentral_free_one(struct sm_mcentral *c, struct sm_mheap *h, void *p);
/* Return every fully free span to the heap (for sm_free_os_memory). */
SM_HIDDEN void sm_mcentral_release_empty(struct sm_mcentral *c, struct sm_mheap *h);
/* A thread cache's refill: a parked list of at most max objects if there
 * is one (then possibly more than want), else up to want from spans. */
SM_HIDDEN uint32_t sm_mcentral_refill(struct sm_mcentral *c, struct sm_mheap *h, uint32_t want, uint32_t max, void **head);
/* A thread cache's whole list of n objects: parked as it is if there is
 * room, else its objects go back to their spans. */
SM_HIDDEN void sm_mcentral_park(struct sm_mcentral *c, struct sm_mheap *h, void *head, uint32_t n);
/* Parked lists to their spans: all of them (all true), or, for the
 * scavenger, only if none was parked or taken since its last call. */
SM_HIDDEN void sm_mcentral_flush_parked(struct sm_mcentral *c, struct sm_mheap *h, bool all);
/* Every class's parked lists to their spans. */
SM_HIDDEN void sm_mcentral_flush_parked_all(void);
/* Bytes of objects parked in all classes (atomic). */
SM_HIDDEN extern uint64_t sm_parked_total;

/* ---- mcache.c --------------------------------------------------------- */
SM_HIDDEN extern struct sm_mcache sm_mcache_empty;
SM_HIDDEN extern __thread struct sm_mcache *sm_tls_mcache __attribute__((tls_model("initial-exec")));
SM_HIDDEN extern uint32_t sm_class_batch[SM_NUM_SIZE_CLASSES];
SM_HIDDEN extern pthread_mutex_t sm_mcache_lock;   /* registry and dead stats */
SM_HIDDEN void sm_mcache_init_classes(void);
SM_HIDDEN void *sm_mcache_alloc_slow(uint32_t cls, size_t size);
/* The calling thread's cache, made now if it has none (a thread whose first
 * allocations are large); sm_mcache_empty if it cannot have one. */
SM_HIDDEN struct sm_mcache *sm_mcache_ensure(void);
/* free(p) when the fast path cannot: looks p's page kind up itself. */
SM_HIDDEN void sm_mcache_free_slow(void *p);
SM_HIDDEN void sm_mcache_flush(struct sm_mcache *c);
SM_HIDDEN void sm_mcache_thread_exit(void *arg);
/* The budget all caches share (bytes; SM_CACHE_BUDGET), and its
 * generation: bumped when a cache comes or goes, so each thread's slow
 * path rescales its bounds. */
SM_HIDDEN extern size_t sm_cache_budget;
SM_HIDDEN extern uint64_t sm_cache_budget_gen;
/* Ask every cache with no slow path since scavenger epoch before_epoch to
 * give its lists back at its next one.  Takes sm_mcache_lock. */
SM_HIDDEN void sm_mcache_mark_idle(uint32_t before_epoch);
/* Bytes c's lists and large bins hold now (its owner's view). */
SM_HIDDEN size_t sm_mcache_cached_bytes(const struct sm_mcache *c);

/* Totals kept for threads that have exited (under sm_mcache_lock). */
struct sm_dead_stats {
    uint64_t nmalloc[SM_NUM_SIZE_CLASSES];
    uint64_t nfree[SM_NUM_SIZE_CLASSES];
    uint64_t large_nmalloc, large_nfree;          /* their large caches' */
    uint64_t large_bytes_alloc, large_bytes_free;
};
SM_HIDDEN extern struct sm_dead_stats sm_dead;
SM_HIDDEN extern struct sm_mcache *sm_mcache_all;
/* The mcache structures themselves (Go's mheap_.cachealloc). */
SM_HIDDEN extern struct sm_fixalloc sm_mcache_cachealloc;

/* ---- large.c ---------------------------------------------------------- */
/* The owner's operations on its bins are inline here: a cached large
 * malloc+free pair is a few dozen instructions, and a call each way would
 * be a sizeable part of it (large.c says how the bins work). */

/* Take the top span of bin n (nheld[n] != 0); NULL if another thread
 * gave it back meanwhile. */
SM_INLINE struct sm_mspan *sm_largecache_bin_take(struct sm_largecache *lc, size_t n)
{
    uint32_t k = lc->nheld[n] - 1u;
    lc->nheld[n] = (uint8_t)k;
    lc->held -= (uint32_t)n;
    struct sm_mspan **slot = &lc->slot[n][k];
    struct sm_mspan *s;
    /* busy, then steal: a thread that takes from this cache sets steal,
     * makes every thread execute a barrier, then waits for busy to be 0
     * (large.c, sm_largecache_reclaim), so either it sees busy or this
     * sees steal. */
    __atomic_store_n(&lc->busy, 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    bool plain = __atomic_load_n(&lc->steal, __ATOMIC_ACQUIRE) == 0;
    s = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (sm_likely(plain))
        __atomic_store_n(slot, NULL, __ATOMIC_RELAXED);
    else if (s != NULL)
        s = __atomic_exchange_n(slot, NULL, __ATOMIC_ACQUIRE);
    __atomic_store_n(&lc->busy, 0, __ATOMIC_RELEASE);
    return s;
}

/* s, taken from a bin, becomes a live large object again. */
SM_INLINE struct sm_mspan *sm_largecache_took(struct sm_largecache *lc, struct sm_mspan *s)
{
    if (s == NULL)
        return NULL;
    s->state = SM_SPAN_LARGE;
    s->needzero = s->npages;
    SM_COUNTER_ADD(lc->nmalloc, 1);
    SM_COUNTER_ADD(lc->bytes_alloc, (uint64_t)s->npages << SM_PAGE_SHIFT);
    return s;
}

/* Bin npages is empty: a span up to an eighth larger, or NULL. */
SM_HIDDEN struct sm_mspan *sm_largecache_alloc_near(struct sm_largecache *lc, size_t npages);

/* A cached span of npages pages (exactly, or a little more) for this
 * thread, now a live large object; NULL if none.  The static empty cache
 * has empty bins, so any thread may ask. */
SM_INLINE struct sm_mspan *sm_largecache_alloc(struct sm_mcache *c, size_t npages)
{
    struct sm_largecache *lc = &c->large;
    if (sm_likely(lc->nheld[npages] != 0))
        return sm_largecache_took(lc, sm_largecache_bin_take(lc, npages));
    return sm_largecache_alloc_near(lc, npages);
}

SM_HIDDEN extern uint32_t sm_scav_epoch;  /* scavenge.c */

/* Push s (n pages) onto bin n, which has room. */
SM_INLINE bool sm_largecache_bin_put(struct sm_largecache *lc, struct sm_mspan *s, size_t n)
{
    uint32_t k = lc->nheld[n];
    s->state = SM_SPAN_CACHED;
    SM_COUNTER_ADD(lc->nfree, 1);
    SM_COUNTER_ADD(lc->bytes_free, (uint64_t)n << SM_PAGE_SHIFT);
    lc->nheld[n] = (uint8_t)(k + 1);
    lc->held += (uint32_t)n;
    __atomic_store_n(&lc->epoch[n], __atomic_load_n(&sm_scav_epoch, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&lc->slot[n][k], s, __ATOMIC_RELEASE);
    return true;
}

/* Put s in bin n, which has room, evicting other spans first to stay
 * under the byte bound. */
SM_HIDDEN bool sm_largecache_free_over_bound(struct sm_largecache *lc, struct sm_mspan *s, size_t n);

/* Keep the freed large span s for reuse; false if it does not fit (the
 * caller gives it to the heap).  c is not the static empty cache. */
SM_INLINE bool sm_largecache_free(struct sm_mcache *c, struct sm_mspan *s)
{
    struct sm_largecache *lc = &c->large;
    size_t n = s->npages;
    if (n - SM_LARGECACHE_MIN_PAGES > SM_LARGECACHE_MAX_PAGES - SM_LARGECACHE_MIN_PAGES ||
        lc->nheld[n] == SM_LARGECACHE_WAYS)
        return false;
    if (sm_unlikely(lc->held + n > lc->limit))
        return sm_largecache_free_over_bound(lc, s, n);
    return sm_largecache_bin_put(lc, s, n);
}
/* Evict spans until c's large cache holds at most its limit. */
SM_HIDDEN void sm_largecache_trim(struct sm_mcache *c);
/* Give every span of c's large cache back to the heap. */
SM_HIDDEN void sm_largecache_flush(struct sm_mcache *c);
/* From every thread's large cache, take the spans stored at scavenger
 * epoch before_epoch or earlier (UINT32_MAX: all) back to the heap.
 * Returns bytes given back.  Takes sm_mcache_lock. */
SM_HIDDEN size_t sm_largecache_reclaim(uint32_t before_epoch);
SM_HIDDEN void sm_largecache_reclaim_all(void);
/* A large object of size bytes (align: 0, or a power of two); NULL with
 * errno ENOMEM if there is no memory. */
SM_HIDDEN void *sm_large_alloc(size_t size, size_t align);
/* free(p) of a pointer on a page of kind SM_PAGE_LARGE, whose span is s. */
SM_HIDDEN void sm_large_free(void *p, struct sm_mspan *s);
/* realloc(p, size) for a large object p (size > 0). */
SM_HIDDEN void *sm_large_realloc(void *p, size_t size);

/* ---- init.c ----------------------------------------------------------- */
SM_HIDDEN extern int sm_initialized;
SM_HIDDEN void sm_init_slow(void);
SM_INLINE void sm_init(void)
{
    if (sm_unlikely(!__atomic_load_n(&sm_initialized, __ATOMIC_ACQUIRE)))
        sm_init_slow();
}
/* Smallest class >= cls whose size is a multiple of 2^k, for k = 5..13
 * (alignments 32 .. 8 KiB); 0: none (use a large span). */
SM_HIDDEN extern uint8_t sm_aligned_class[SM_PAGE_SHIFT + 1][SM_NUM_SIZE_CLASSES];

/* ---- mstats.c --------------------------------------------------------- */
SM_HIDDEN void sm_mstats_log_line(void);
struct sm_memstats;
/* The JSON object of sm_print_memstats_json, without the newline. */
SM_HIDDEN void sm_mstats_print_json(FILE *out, const struct sm_memstats *ms);
/* Prometheus text exposition format (version 0.0.4). */
SM_HIDDEN void sm_mstats_print_prometheus(FILE *out, const struct sm_memstats *ms);

/* ---- scavenge.c ------------------------------------------------------- */
SM_HIDDEN extern uint64_t sm_flush_gen;   /* sm_free_os_memory requests */
SM_HIDDEN extern uint32_t sm_scav_epoch;  /* scavenger ticks so far */
SM_HIDDEN void sm_release_central_empty(void);
/* The heap's reclaim hook (soft memory limit): the threads' large caches
 * and the central parked lists go back. */
SM_HIDDEN void sm_reclaim_above_heap(void);
SM_HIDDEN size_t sm_scavenge_tick(uint64_t now);

/* ---- worker.c --------------------------------------------------------- */
SM_HIDDEN bool sm_worker_wanted(void);
SM_HIDDEN void sm_worker_start_slow(void);
SM_HIDDEN int sm_worker_running(void);
SM_HIDDEN void sm_worker_after_fork_child(void);
/* Start the background worker if it is wanted and not running: one load on
 * a slow path.  Call with no allocator lock held. */
SM_INLINE void sm_worker_start(void)
{
    if (sm_unlikely(!sm_worker_running()))
        sm_worker_start_slow();
}

/* ---- http.c ------------------------------------------------------------ */
SM_HIDDEN bool sm_http_wanted(void);      /* SPANMALLOC_HTTP is set */
/* Bind and start the server thread, once per program (the worker calls it
 * with every signal blocked and no lock held); a failure warns once. */
SM_HIDDEN void sm_http_start(void);
SM_HIDDEN int sm_http_running(void);      /* 1 while its thread is alive */
SM_HIDDEN void sm_http_fork_child(void);

/* ---- mprof.c ---------------------------------------------------------- */
/* Bytes until the next sample for this cache: exponentially distributed
 * with mean SPANMALLOC_PROFILE_RATE.  When profiling is off, a distance
 * after which the rate is looked at again (the countdown running out then
 * records nothing). */
SM_HIDDEN intptr_t sm_mprof_next_sample(struct sm_mcache *c);
/* Record a sampled allocation of size bytes at p (already allocated, no
 * allocator lock held).  Marks p's span so its free comes to
 * sm_mprof_record_free. */
SM_HIDDEN void sm_mprof_record_alloc(void *p, size_t size);
/* The same for the large object of span s (SM_SPAN_LARGE, the caller's). */
SM_HIDDEN void sm_mprof_record_alloc_large(struct sm_mspan *s, size_t size);
/* p is being freed and its span is marked (SM_PAGE_SLOW or specials). */
SM_HIDDEN void sm_mprof_record_free(void *p, struct sm_mspan *s);
SM_HIDDEN uint64_t sm_mprof_sys(void);
SM_HIDDEN bool sm_mprof_wants_worker(void);
SM_HIDDEN void sm_mprof_tick(uint64_t now);
SM_HIDDEN void sm_mprof_init(void);        /* phase 2 of init */
SM_HIDDEN void sm_mprof_at_exit(void);
SM_HIDDEN void sm_mprof_fork_prepare(void);
SM_HIDDEN void sm_mprof_fork_parent(void);
SM_HIDDEN void sm_mprof_fork_child(void);

/* ---- freelist.c ------------------------------------------------------- */
/* Free-list links.  Every free list (a thread cache's, a batch between
 * it and mcentral) links its objects through their first word, stored
 * encoded: the next object's address xor the address of the word itself
 * xor a per-process random key (glibc's safe-linking with mimalloc's key).
 * A plain address written over a link (an overflow from the object
 * before, a write after free) decodes to a value with the key's high bits,
 * never a canonical address, so the next pop catches it instead of handing
 * the address out.  The key is drawn once, before the first list is made. */
SM_HIDDEN extern uintptr_t sm_freelist_key;
SM_HIDDEN void sm_freelist_init(void);   /* draws the key; before the heap */
SM_INLINE void *sm_freelist_encode(const void *slot, const void *next)
{
    return (void *)((uintptr_t)next ^ (uintptr_t)slot ^ sm_freelist_key);
}
SM_INLINE void *sm_freelist_decode(const void *slot, const void *word)
{
    return (void *)((uintptr_t)word ^ (uintptr_t)slot ^ sm_freelist_key);
}
/* NULL, or not a 16-byte aligned address below 2^48: the end of a list,
 * or a corrupted link.  One shift for both: rotate the alignment bits to
 * the top, subtract one so that NULL wraps round to the largest value.
 * (2^48 itself passes: it is not a canonical address, so following it
 * faults.) */
SM_INLINE bool sm_freelist_bad(const void *p)
{
    uintptr_t r = ((uintptr_t)p >> 4) | ((uintptr_t)p << 60);
    return (r - 1) >> (SM_ADDR_BITS - 4) != 0;
}
/* Report a corrupted link and abort: obj is the object whose first word
 * held it (NULL if no longer known), link what it decoded to. */
SM_HIDDEN __attribute__((noreturn)) SM_COLD void sm_freelist_corrupt(const char *fn, const void *obj, const void *link);

/* ---- check.c ---------------------------------------------------------- */

/* Checked mode (SPANMALLOC_CHECK=1) and running under valgrind both send
 * every malloc and free to the slow path: thread caches keep no room
 * and empty lists, so both fast paths fail their one test.  The slow paths
 * test sm_check_slow (a plain load) and hand the object to check.c. */
enum {
    SM_CHECK_ON = 1,        /* object states, reports (checked or valgrind) */
    SM_CHECK_FILL = 2,      /* canaries and poison (checked, not valgrind) */
    SM_CHECK_VALGRIND = 4,  /* describe blocks to memcheck */
};
SM_HIDDEN extern int sm_check_slow;           /* SM_CHECK_* bits; 0: off */
SM_HIDDEN void sm_check_init(void);          /* after options, before the heap */
/* The class a checked allocation of size bytes asked for as cls really
 * uses: one with room for a canary byte; 0 if none (a large object). */
SM_HIDDEN uint32_t sm_check_class(uint32_t cls, size_t size);
/* Take one object of class cls from mcentral for a request of size bytes:
 * verify it was untouched while free, set its state, write its canary. */
SM_HIDDEN void *sm_check_alloc_small(uint32_t cls, size_t size);
/* Validate a free of p (class cls): boundary, state, canary; poison it. */
SM_HIDDEN void sm_check_free_small(void *p, uint32_t cls);
/* A bad free of p: under memcheck, memcheck's own report (with its stacks)
 * first; then ours, and abort. */
SM_HIDDEN __attribute__((noreturn)) SM_COLD void sm_check_bad_free(const char *what, const void *p);
SM_HIDDEN void sm_check_alloc_large(struct sm_mspan *s);
SM_HIDDEN void sm_check_free_large(struct sm_mspan *s);
/* A small span goes back to the heap: drop its object states. */
SM_HIDDEN void sm_check_span_release(struct sm_mspan *s);
SM_HIDDEN void *sm_check_realloc(void *p, size_t size);
SM_HIDDEN size_t sm_check_usable_size(const void *p);
/* calloc's object is zero (some of it without being written). */
SM_HIDDEN void sm_check_calloc(void *p, size_t size);
SM_HIDDEN uint64_t sm_check_sys(void);
SM_HIDDEN void sm_check_fork_prepare(void);
SM_HIDDEN void sm_check_fork_parent(void);
SM_HIDDEN void sm_check_fork_child(void);
/* Checked mode found obj's link corrupted: if obj is a free object whose
 * neighbour overflowed into it, or was written after free, report that
 * and abort; else return. */
SM_HIDDEN SM_COLD void sm_check_blame_link(const char *fn, const void *obj);

/* ---- valgrind.c: memcheck client requests (no-ops without the header) */
SM_HIDDEN bool sm_valgrind_running(void);
/* A free object's link, read or written by the allocator: made accessible
 * for the access and left inaccessible, as free objects are. */
SM_HIDDEN void *sm_valgrind_link_load(void *p);
SM_HIDDEN void sm_valgrind_link_store(void *p, void *next);
/* A new small span: all its memory inaccessible until handed out. */
SM_HIDDEN void sm_valgrind_span_new(const struct sm_mspan *s);
/* p, with room bytes behind it, is handed out for size bytes. */
SM_HIDDEN void sm_valgrind_malloc(void *p, size_t size, size_t room, bool zeroed);
SM_HIDDEN void sm_valgrind_free(void *p);
SM_HIDDEN void sm_valgrind_resize(void *p, size_t oldsize, size_t newsize);
SM_HIDDEN void sm_valgrind_defined(void *p, size_t size);

/* A link read or written by a slow path (the fast paths never run under
 * valgrind). */
SM_INLINE void *sm_link_load(void *p)
{
    if (sm_unlikely(sm_check_slow & SM_CHECK_VALGRIND))
        return sm_valgrind_link_load(p);
    return sm_freelist_decode(p, *(void **)p);
}
SM_INLINE void sm_link_store(void *p, void *next)
{
    if (sm_unlikely(sm_check_slow & SM_CHECK_VALGRIND))
        sm_valgrind_link_store(p, next);
    else
        *(void **)p = sm_freelist_encode(p, next);
}

/* ---- the fast paths ----------------------------------------------------- */

/* Objects on a list. */
SM_INLINE uint32_t sm_cacheclass_count(const struct sm_cacheclass *cc)
{
    return cc->bound - cc->room;
}

/* The profiler's countdown: c->sample_left -= size; true if it went below
 * zero.  It goes by requested bytes.  On x86-64 the subtraction is made in
 * memory and its sign is the test (subq, js): two instructions instead of
 * a load, a subtraction, a test and a store.  Every malloc fast path
 * counts down before it tests its list, so sm_mcache_alloc_slow finds the
 * request already counted.  The static empty cache is counted down too,
 * by any thread without a cache of its own: its countdown is never read
 * (its lists are empty, so the slow path runs anyway and counts on the
 * thread's real cache), and under ThreadSanitizer the subtraction is a
 * relaxed atomic, so that race is declared. */
SM_INLINE bool sm_sample_countdown(struct sm_mcache *c, size_t size)
{
#if defined(__SANITIZE_THREAD__)
    return __atomic_sub_fetch(&c->sample_left, (intptr_t)size, __ATOMIC_RELAXED) < 0;
#elif defined(__x86_64__) && (__GNUC__ >= 11 || __clang_major__ >= 11)
    __asm__ goto("subq %1, %0\n\tjs %l[expired]"
                 : "+m"(c->sample_left)
                 : "r"((intptr_t)size)
                 : "cc"
                 : expired);
    return false;
expired:
    return true;
#else
    return (c->sample_left -= (intptr_t)size) < 0;
#endif
}

/* Pop an object from list cc of this thread's cache c.  One test: the list
 * is empty (a new thread's cache is the static empty one, so this also
 * covers "not initialised"; so is checked mode's), its head is not a valid
 * address (a corrupted link), or the profiler's countdown ran out.  The
 * link is stored encoded (sm_freelist_encode).  The slow path is told the
 * list's index, its class (0 for the empty cache's stand-in list: the slow
 * path then finds the class from the size). */
SM_INLINE void *sm_alloc_list(struct sm_mcache *c, struct sm_cacheclass *cc, size_t size)
{
    void *p = cc->head;
    if (sm_unlikely(sm_sample_countdown(c, size) || sm_freelist_bad(p)))
        return sm_mcache_alloc_slow((uint32_t)(cc - c->c), size);
    void *next = sm_freelist_decode(p, *(void **)p);
    cc->head = next;
    /* The next malloc of this class reads next's link: start bringing it
     * in now (tcmalloc prefetches the next object of its lists too).  A
     * list that came from mcentral or from frees long ago is cold, and a
     * prefetch of NULL or of a corrupted link does not fault. */
    __builtin_prefetch(next);
    cc->room++;
    SM_COUNTER_ADD(cc->nmalloc, 1);
    return p;
}

SM_INLINE void *sm_alloc_class(uint32_t cls, size_t size)
{
    struct sm_mcache *c = sm_tls_mcache;
    return sm_alloc_list(c, &c->c[cls], size);
}

/* malloc(size) for size <= SM_SIZE_TABLE16_MAX: one load from the cache
 * gives the list. */
SM_INLINE void *sm_alloc_small16(size_t size)
{
    struct sm_mcache *c = sm_tls_mcache;
    return sm_alloc_list(c, c->bysize[(size + SM_SIZE_TABLE16_DIV - 1) / SM_SIZE_TABLE16_DIV], size);
}

/* cc->room != 0.  On x86-64 the test is made on the field in memory
 * (cmpl): with its value never in a register, the decrement after it is one
 * instruction (subl) instead of a load, a test, a subtraction and a store.
 * A compiler left to itself keeps the value it tested. */
SM_INLINE bool sm_has_room(const struct sm_cacheclass *cc)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_THREAD__)
    __asm__ goto("cmpl $0, %0\n\tje %l[none]" : : "m"(cc->room) : "cc" : none);
    return true;
none:
    return false;
#else
    return cc->room != 0;
#endif
}

/* Push a freed object onto this thread's cache.  Pointers the cache cannot
 * take (not ours, large, free pages, profiled spans, a full list, the empty
 * cache) go to the slow path: every kind byte indexes a list, and those
 * lists have no room. */
SM_INLINE void sm_free_fast(void *p)
{
    uintptr_t a = (uintptr_t)p;
    uintptr_t ai = a >> SM_ARENA_SHIFT;
    if (sm_likely(ai < SM_ARENA_INDEX_LEN)) {
        uintptr_t kinds = __atomic_load_n(&sm_arenas[ai], __ATOMIC_RELAXED);
        if (sm_likely(kinds != 0)) {
            /* Relaxed: the profiler may flip SM_PAGE_SLOW meanwhile
             * (pagemap.c); the slow path looks the kind up again. */
            size_t off = (size_t)__atomic_load_n((const uint8_t *)(kinds + (a >> SM_PAGE_SHIFT)),
                                                 __ATOMIC_RELAXED)
                         << SM_CACHECLASS_SHIFT;
            struct sm_cacheclass *cc = (struct sm_cacheclass *)((char *)sm_tls_mcache + off);
            if (sm_likely(sm_has_room(cc))) {
                SM_COUNTER_ADD(cc->nfree, 1);
                cc->room--;
                *(void **)p = sm_freelist_encode(p, cc->head);
                cc->head = p;
                return;
            }
        }
    }
    sm_mcache_free_slow(p);
}

#endif
