/*
 * types.h - every structure of spanmalloc, hot fields first.
 *
 * The tiers (see malloc.c for the overview):
 *   struct sm_mcache    per thread, no lock: free lists per size class.
 *   struct sm_mcentral  per size class, own lock: spans with free objects.
 *   struct sm_mheap     one, own lock: page runs, the arenas, large objects.
 *   struct sm_mspan     a run of pages: free, a small-object span, or one
 *                       large object.
 *   struct sm_heap_arena  per 64 MiB of address space: the page map.
 */
#ifndef SM_TYPES_H
#define SM_TYPES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sizeclasses.h"

/* ---- address space and the page map ------------------------------------ */

/* Go's heap arenas: 64 MiB each; an index of all 2^48 / 2^26 = 4 Mi possible
 * arenas is a 32 MiB array in .bss, resident only where touched. */
#define SM_ARENA_SHIFT 26
#define SM_ARENA_SIZE ((uintptr_t)1 << SM_ARENA_SHIFT)
#define SM_PAGES_PER_ARENA (SM_ARENA_SIZE >> SM_PAGE_SHIFT)
#define SM_ADDR_BITS 48
#define SM_ARENA_INDEX_LEN ((size_t)1 << (SM_ADDR_BITS - SM_ARENA_SHIFT))

/* What a page holds, one byte per page in its arena.  The free fast path
 * reads only this byte: values 1 .. SM_NUM_SIZE_CLASSES-1 are small-object
 * pages it may handle itself; every other value sends it to the slow path. */
enum {
    SM_PAGE_NONE = 0,        /* not part of the heap: a foreign pointer */
    SM_PAGE_SLOW = 0x80,     /* or'ed into a class: frees go the slow way
                                (the span holds profiled objects) */
    SM_PAGE_LARGE = 0xF0,    /* a page of a large object */
    SM_PAGE_FREE = 0xF1,     /* a page of a free run */
};

struct sm_mspan;

struct sm_heap_arena {
    uint8_t pagekind[SM_PAGES_PER_ARENA];          /* read by free's fast path */
    struct sm_mspan *spans[SM_PAGES_PER_ARENA];    /* in-use span: every page;
                                                      free run: first and last */
    uint64_t released[SM_PAGES_PER_ARENA / 64];    /* bit set: page not resident
                                                      (fresh or given back) */
    uint64_t zero[SM_PAGES_PER_ARENA / 64];        /* bit set: page known to be
                                                      zero (fresh from the OS,
                                                      or given back with
                                                      MADV_DONTNEED) */
    /* No copy of the arena's address: it is the address of the first
     * object of the arena's first span, which memcheck's leak check would
     * take for a pointer to it (valgrind.c). */
};

/* ---- spans -------------------------------------------------------------- */

enum sm_span_state {
    SM_SPAN_DEAD = 0,       /* on the fixalloc free list */
    SM_SPAN_FREE,           /* a free run in the heap's free lists */
    SM_SPAN_SCAVENGING,     /* a free run taken out while madvise runs */
    SM_SPAN_SMALL,          /* objects of one size class */
    SM_SPAN_LARGE,          /* one large object */
    SM_SPAN_CACHED,         /* a freed large object's span, kept by a
                               thread's large cache (large.c) */
};

enum sm_span_list { SM_LIST_NONE = 0, SM_LIST_PARTIAL, SM_LIST_FULL };

struct sm_special;
struct sm_mprof_bucket;

/* The most objects a small span holds (8192 / 16), one bit each. */
#define SM_SPAN_MAX_OBJS 512
#define SM_SPAN_BITMAP_WORDS (SM_SPAN_MAX_OBJS / 64)

struct sm_mspan {
    struct sm_mspan *next;     /* list links: mcentral or heap free list */
    struct sm_mspan *prev;
    uint32_t base_offset_;     /* unused: puts base off 8-byte alignment */
    uintptr_t base __attribute__((packed));
                               /* first byte.  Stored unaligned on purpose:
                                  memcheck's leak check reads only aligned
                                  words, so under valgrind a span does not
                                  keep its first object (a large span's
                                  only one) reachable (valgrind.c) */
    size_t npages;
    uint32_t nfree;            /* small: free objects (bits set in freebits) */
    uint32_t freeword;         /* small: freebits[0 .. freeword-1] are zero */
    uint32_t elemsize;         /* small: class size; large: 0 */
    uint8_t sizeclass;         /* small: class; else 0 */
    uint8_t state;             /* enum sm_span_state */
    uint8_t list;              /* small: enum sm_span_list */
    uint8_t grown;             /* large: realloc grew it (large.c) */
    uint32_t nreleased;        /* free: pages of the run not resident */
    uint64_t idle_since;       /* free: monotonic ns when it became free */
    struct sm_special *specials; /* small: profiled objects in this span, by address */
    struct sm_mprof_bucket *prof_bucket; /* large, sampled: the object's bucket */
    uint64_t sampled;          /* bit (object index % 64) set for each object
                                  on specials: a free whose bit is clear is
                                  not profiled (read without a lock) */
    size_t reqsize;            /* large, or small of one object and sampled:
                                  requested bytes (for the profiler) */
    size_t needzero;           /* pages from base that may hold old data;
                                  the rest are fresh from the OS: zero */
    uint16_t *checkstate;      /* small, checked mode: per object, 0 never
                                  handed out, 1 free, n >= 2 live with n - 2
                                  bytes requested (check.c) */
    uint64_t freebits[SM_SPAN_BITMAP_WORDS];  /* small: bit i set: object i
                                                 is free in the span (in no
                                                 cache, not live) */
};

struct sm_spanlist {
    struct sm_mspan *first;
    size_t len;
};

/* ---- fixed-size metadata allocator -------------------------------------- */

struct sm_fixalloc {
    size_t size;               /* bytes per element */
    void *list;                /* freed elements */
    char *chunk;               /* bump area of the current chunk */
    size_t nchunk;             /* bytes left in it */
    uint64_t inuse;            /* bytes handed out (stats) */
    uint64_t sys;              /* bytes obtained from the OS (stats) */
};

/* ---- page heap ---------------------------------------------------------- */

/* Free runs of 1..SM_HEAP_NLISTS-1 pages sit in exact-size lists; longer runs
 * in one list searched best-fit (tcmalloc's classic page heap). */
#define SM_HEAP_NLISTS 128

struct sm_heap_stats {
    uint64_t pages_sys;        /* pages grown into the heap */
    uint64_t pages_inuse;      /* pages in small or large spans */
    uint64_t pages_free;       /* pages in free runs (incl. released) */
    uint64_t pages_released;   /* free pages not resident */
    uint64_t pages_lazy;       /* released with MADV_FREE, not reused since */
    uint64_t large_nmalloc, large_nfree;
    uint64_t large_bytes_alloc, large_bytes_free;
    uint64_t released_bytes_total;    /* bytes ever given back */
    uint64_t nrelease_scavenger, nrelease_limit, nrelease_explicit;
    uint64_t nrelease_free;    /* releases by a large free (mheap.c) */
    uint64_t arena_meta_sys;   /* bytes of struct sm_heap_arena */
};

struct sm_mheap {
    pthread_mutex_t lock;
    uint64_t nonempty[SM_HEAP_NLISTS / 64];    /* bit n: free[n] has a run */
    struct sm_spanlist free[SM_HEAP_NLISTS];   /* index npages; [0] unused */
    struct sm_spanlist freelarge;              /* runs >= SM_HEAP_NLISTS pages */
    struct sm_spanlist scavenging;             /* runs out for madvise */
    uintptr_t cur_base, cur_end;               /* reserved, not yet grown */
    struct sm_fixalloc spanalloc;
    struct sm_heap_stats st;
    /* Called with no lock held before the heap grows past the soft memory
     * limit: gives back spans held above the heap (the threads' large
     * caches).  NULL: nothing to call (a heap of its own in a unit test). */
    void (*reclaim)(void);
    size_t free_big_pages;     /* largest large span freed lately (decays) */
};

/* ---- central lists ------------------------------------------------------ */

/* Whole lists that thread caches gave back, kept as they are for the next
 * refill of any thread (tcmalloc's transfer cache; mcentral.c). */
#define SM_PARK_SLOTS 64                        /* lists per class */
#define SM_PARK_CLASS_BYTES ((uint64_t)2 << 20) /* objects' bytes per class */
#define SM_PARK_BYTES ((uint64_t)8 << 20)       /* all classes together */

struct sm_parked {
    void *head;                /* an encoded list, as the thread cache had it */
    uint32_t n;                /* objects on it */
};

struct sm_mcentral {
    pthread_mutex_t lock;
    struct sm_mspan *partial;  /* spans with at least one free object */
    struct sm_mspan *full;     /* spans with none */
    uint32_t sizeclass;
    uint32_t nspans;
    uint32_t nparked;          /* lists in parked[] (the scavenger peeks
                                  without the lock: atomic) */
    uint32_t parked_used;      /* a list was parked or taken since the
                                  scavenger's last look */
    uint64_t parked_bytes;     /* objects' bytes on them */
    /* The lists, SM_PARK_SLOTS of them: apart from the struct, so that
     * the central lists of all classes, which start-up writes, stay in a
     * few pages, and only a class that parks touches its slots. */
    struct sm_parked *parked;
} __attribute__((aligned(64)));

/* ---- per-thread cache --------------------------------------------------- */

struct sm_cacheclass {
    void *head;                /* free objects, linked through their first word */
    uint32_t room;             /* objects the list may still take: bound minus
                                  its length (sm_cacheclass_count); 0 when it
                                  takes none: the empty cache, checked mode,
                                  and every kind byte that is no class */
    uint32_t bound;            /* most it may hold */
    uint64_t nmalloc;          /* stats: objects handed out from this class */
    uint64_t nfree;            /* stats: objects given back to it */
};

/* Recently freed large spans of one thread (large.c): a bin per page
 * count, indexed by it, each a small stack of slots. */
#define SM_LARGECACHE_MIN_PAGES ((SM_MAX_SMALL_SIZE >> SM_PAGE_SHIFT) + 1)
#define SM_LARGECACHE_MAX_PAGES 128            /* spans up to 1 MiB */
#define SM_LARGECACHE_WAYS 4                   /* spans per bin */
#define SM_LARGECACHE_MAX_BYTES ((size_t)1 << 20)
/* All threads' caches together hold at most this many bytes, small lists
 * and large bins (mcache.c): tcmalloc's default overall thread cache size. */
#define SM_CACHE_BUDGET ((size_t)32 << 20)
#define SM_LARGECACHE_IDLE_TICKS 4                 /* scavenger ticks unused
                                                      before it goes back */

/* sm_largecache.steal */
#define SM_LC_STEAL_NOW 1    /* another thread is taking spans: take by exchange */
#define SM_LC_ATOMIC 2       /* no membarrier: always take by exchange */

struct sm_largecache {
    uint8_t busy;                               /* owner: 1 while it takes a
                                                   span from a slot (large.c) */
    uint8_t steal;                              /* SM_LC_* bits; 0: the owner
                                                   takes with plain loads and
                                                   stores */
    uint8_t nheld[SM_LARGECACHE_MAX_PAGES + 1]; /* owner: slots filled in each
                                                   bin and not taken by the
                                                   owner (another thread may
                                                   have taken some since) */
    uint32_t held;                              /* owner: pages in them */
    uint32_t limit;                             /* owner: most pages held, its
                                                   share of the cache budget
                                                   (mcache.c) */
    uint32_t next;                              /* owner: bin to evict next */
    uint64_t nmalloc, nfree;                    /* stats: objects served from,
                                                   freed into the cache */
    uint64_t bytes_alloc, bytes_free;           /* stats: their span bytes */
    uint32_t epoch[SM_LARGECACHE_MAX_PAGES + 1];  /* scavenger tick of the
                                                     bin's last store */
    struct sm_mspan *slot[SM_LARGECACHE_MAX_PAGES + 1][SM_LARGECACHE_WAYS];
                                                /* NULL: empty; the owner
                                                   stores and takes, another
                                                   thread takes with an atomic
                                                   exchange (large.c) */
};

/* The lists come first, indexed by a page's kind byte (types.h, SM_PAGE_*):
 * the list of class cls is at byte offset cls << SM_CACHECLASS_SHIFT, and
 * the kinds that are no class (none, large, free, a marked span's class)
 * have lists that take nothing, so free's fast path needs no range test of
 * the kind (c[0] is no class: its list stays empty).  The lists past the
 * last class are never written: their bytes stay as the cache was made,
 * zero. */
#define SM_CACHECLASS_SHIFT 5
#define SM_CACHE_KINDS 256
_Static_assert(sizeof(struct sm_cacheclass) == (1u << SM_CACHECLASS_SHIFT),
               "the fast paths index the lists by shifting");
#define SM_CACHE_BYSIZE (SM_SIZE_TABLE16_MAX / SM_SIZE_TABLE16_DIV + 1)

struct sm_mcache {
    struct sm_cacheclass c[SM_CACHE_KINDS];
    /* The list for a request of n <= SM_SIZE_TABLE16_MAX bytes, indexed by
     * (n + 15) / 16 (mimalloc's pages_free_direct): one load from the
     * cache, no table of our own to address.  In the empty cache every
     * entry is &c[0]. */
    struct sm_cacheclass *bysize[SM_CACHE_BYSIZE];
    intptr_t sample_left;      /* bytes until the next profile sample */
    struct sm_mcache *all_next, *all_prev;  /* registry, for stats */
    uint64_t flush_gen;        /* sm_free_os_memory generation seen */
    uint64_t budget_gen;       /* sm_cache_budget_gen its bounds follow */
    uint32_t active_epoch;     /* sm_scav_epoch at its last slow path
                                  (owner writes, scavenger reads) */
    uint32_t drain_req;        /* set by the scavenger: idle, give the
                                  lists back at the next slow path */
    uint64_t rng;              /* profiler's random state */
    uint8_t fetch[SM_NUM_SIZE_CLASSES];  /* objects the class's next refill
                                  takes (slow start, mcache.c); 0: the first */
    uint8_t unparked[SM_NUM_SIZE_CLASSES];  /* the list came whole from a
                                  parked list since the last drain */
    struct sm_largecache large;  /* freed large spans for reuse */
};

#endif
