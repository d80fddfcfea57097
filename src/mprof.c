/*
 * mprof.c - the sampling heap profiler (Go's mprof.go and the sampling in
 * malloc.go): when to sample, what a sample records, how the free of a
 * sampled object finds it again, and when a profile is written.
 *
 * When.  Each thread cache counts bytes down to its next sample
 * (sample_left; the fast path pays one subtraction in memory and a branch
 * on its sign, sm_sample_countdown).  The distance between samples is drawn from
 * an exponential distribution with mean SPANMALLOC_PROFILE_RATE, as Go's
 * runtime.MemProfileRate does, so objects of every size are sampled
 * without bias: a Poisson process over allocated bytes, under which an
 * object of s bytes is sampled with probability 1 - exp(-s/rate), which is
 * what the writer divides by.  With profiling off the countdown is
 * SM_MPROF_RECHECK bytes, not infinite, so that sm_set_profile_rate reaches
 * every thread: a countdown that ran out while off is not a sample (the
 * thread remembers whether its running countdown was drawn, tls_armed),
 * and the next one is drawn with the rate then in effect.
 *
 * What.  sm_mprof_record_alloc runs on the slow path after the object is
 * allocated, with no allocator lock held.  It captures the stack (stack.c:
 * the DWARF call frame information, through cached rules, so programs
 * without frame pointers unwind), leaves out our own frames (its own and
 * the slow path's, always ours, then any whose address is in this library's
 * text, then C++'s operator new, so the leaf is the function that
 * allocated), and charges the bucket of that stack and size band (the
 * bucket of the thread's last sample when the capture says its frames are
 * the last capture's, which spares the hash and the table: a loop that
 * allocates samples from one stack).  The size must
 * be what the countdown was decreased by, or the writer's scaling is
 * biased.  Go keys its buckets by stack and exact size; a C program that
 * samples strings, buffers grown by realloc or sizes drawn at random then
 * makes a bucket of 100-odd bytes per sample (BM_MallocRandom_HeavyTail
 * made some 4000, 640 KiB).  Here a bucket covers a size band: sizes up to
 * 128 bytes exactly, larger ones eight bands per power of two (as
 * jemalloc's size classes are spaced), and counts objects and the bytes
 * they asked for.  The writer scales each bucket with its mean size, so
 * bytes stay unbiased; the objects estimate, which goes as the mean of
 * rate/size, is low by the ratio of the band's arithmetic to its harmonic
 * mean, at most 0.35% for a band whose sizes are within 1/8 of each
 * other.  Buckets live in a hash table in memory from the OS layer (never
 * malloc), are never freed, and count with atomic adds.
 *
 * Free.  A sampled large object's bucket goes in its span (prof_bucket):
 * the span is the allocating thread's until the object is handed out and
 * the freeing thread's while it is freed, so neither needs a lock, and
 * the large slow free path sees the field.  A sampled small object gets a
 * struct sm_special (mprof.h) on its span's
 * list, sorted by address (Go's mspan.specials).  A small span with a
 * special has SM_PAGE_SLOW or'ed into its pages' kind bytes, so the free
 * fast path sends frees of its objects to the slow path, which calls
 * sm_mprof_record_free; the bit is cleared when the span's last special
 * goes.  A free walks its span's short list, not a hash table, and
 * only frees in marked spans pay even that.  Most frees in a marked span
 * are of objects that were not sampled (a span of 4 KiB objects holds 8 of
 * them; of 16 B objects, 512), so the span also keeps s->sampled, a bit
 * per object index mod 64, set under prof_lock before the sampled
 * object is handed out and recomputed from the list when a special goes:
 * a free whose bit is clear returns at once, with no lock.  That is safe
 * without one because the bit of a live sampled object stays set, and the
 * thread freeing it got the object after the bit was set.
 *
 * Locks:
 *   prof_lock   the bucket table, the specials' fixalloc, every span's
 *               specials list and its sampled bits (writes).  Taken once
 *               per small sample and once per free of a sampled small
 *               object (or of an object sharing its bit), and by a large
 *               sample, or a small one in a span of one object (which
 *               keeps its bucket in the span as a large one does), only
 *               to find or make its bucket in the table (not when it
 *               reuses the thread's last one); held for a few
 *               hundred instructions.  Locks of their own for the span
 *               lists would make that two locks a sample and two a
 *               sampled free; with the sampled bits few frees need one.
 * SM_PAGE_SLOW is set and cleared under prof_lock alone, or for spans of
 * one object by its sample and its free (span_set_slow).
 * Nothing under it calls malloc or the unwinder; the stack is captured
 * before it is taken.  The fork handlers take it before the allocator's
 * own (malloc.c).
 *
 * A sample's cost is mostly cache misses (the lock, the span, the bucket
 * table, a special: each a line the program's own work has evicted since
 * the last sample), so record_alloc prefetches the lines it knows before
 * it walks the stack, which hides their latency, and the bucket's slot
 * before it puts the special on its span's list.
 *
 * Recursion.  If the unwinder (or anything the profiler calls) allocates,
 * that allocation is not sampled: tls_busy is set while the profiler runs
 * on a thread.  Frees are never skipped: they take no lock the thread
 * could already hold.
 *
 * Writing.  The buckets are copied under prof_lock into memory from the OS
 * layer; the file is encoded and gzipped without any lock (profproto.c,
 * which calls no malloc either), so a profile can be written from a signal
 * writer, at exit, or in a fork child.  Each write reports one line on
 * stderr.  Triggers: sm_write_heap_profile; SPANMALLOC_PROFILE=prefix at
 * exit (prefix.<pid>.heap.pb.gz); SPANMALLOC_PROFILE_SIGNAL, whose handler
 * only counts, and SPANMALLOC_PROFILE_INTERVAL, both written by the
 * background worker (scavenge.c) at its next tick, at most 250 ms later,
 * to prefix.<pid>.<n>.heap.pb.gz, n = 1, 2, ... (prefix "spanmalloc" when
 * SPANMALLOC_PROFILE is unset); SPANMALLOC_PROFILE_GROWTH, by the worker
 * too, to the same sequence of names (grown() below).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fmath.h"
#include "internal.h"
#include "mprof.h"
#include "spanmalloc.h"

/* With profiling off, look at the rate again after this many bytes. */
#define SM_MPROF_RECHECK ((intptr_t)1 << 20)
/* Frames left out above the capture in every build: sm_mprof_record_alloc
 * (or _large) and the slow path that called it (sm_mcache_alloc_slow, or
 * sm_large_alloc, perhaps inlined into an entry point): both are ours. */
#define SM_MPROF_SKIP 2
#define SM_MPROF_CHUNK ((size_t)64 * 1024)
#define SM_MPROF_TABLE_MIN 1024
#define SM_MPROF_MAX_RANGES 16
/* Writes per worker tick for signals that arrived since the last one. */
#define SM_MPROF_MAX_SIGNAL_WRITES 4

/* Objects and the bytes they asked for. */
struct mprof_count {
    uint64_t objects, bytes;
};

struct sm_mprof_bucket {
    struct sm_mprof_bucket *allnext;   /* every bucket, newest first */
    size_t band;                       /* size_band() of its objects */
    /* Counts.  The thread that made the
     * bucket (owner: its cache) counts in own_* with plain loads and
     * stores, any other thread in the shared ones, atomically (a large
     * object's sample and free take no lock); a count is the sum.  Most
     * samples of a stack, and their frees, are one thread's: a locked add
     * was two fifths of a 1 MiB malloc+free sampled every time. */
    struct sm_mcache *owner;
    struct mprof_count own_alloc, own_free;
    struct mprof_count alloc, free;
    uint32_t nstk;
    uintptr_t stk[];                   /* return addresses, leaf first */
};

/* ---- under prof_lock ---- */
static pthread_mutex_t prof_lock = PTHREAD_MUTEX_INITIALIZER;
/* The bucket table: open addressing, linear probing, at most half full.
 * A slot holds the hash beside the pointer, so a probe touches no bucket
 * but the one that matches, and growing reads the table alone. */
struct bucket_slot {
    uint64_t hash;
    struct sm_mprof_bucket *b;         /* NULL: empty */
};
static struct bucket_slot *table;
static size_t table_cap, nbuckets;
static struct sm_mprof_bucket *all_buckets;
static char *bump;                     /* bucket memory: rest of a chunk */
static size_t bump_left;
static struct sm_fixalloc special_alloc;

/* ---- read without a lock ---- */
static uint64_t prof_sys;              /* bytes from the OS layer (atomic) */
static size_t last_rate;               /* last rate that was not 0 (atomic) */
static int ready;                      /* sm_mprof_init done (atomic) */
static int stack_warm;                 /* sm_stack_init done (atomic) */
static uint64_t file_seq;              /* numbered files written (atomic) */
static uint64_t signals_got;           /* incremented by the handler */

/* ---- the worker's own ---- */
static uint64_t signals_seen;
static uint64_t next_interval;
static uint64_t growth_mark;    /* heap_inuse at the last growth profile */

/* Frames to leave out at the leaf: this library's text (empty when it is
 * linked into the executable: then the executable's own code is there
 * too) and operator new. */
struct pc_range {
    uintptr_t lo, hi;
};
static struct pc_range own_text[SM_MPROF_MAX_RANGES];
static int nown_text;

static __thread uint8_t tls_busy __attribute__((tls_model("initial-exec")));
static __thread uint8_t tls_armed __attribute__((tls_model("initial-exec")));
static __thread uint8_t tls_expired_armed __attribute__((tls_model("initial-exec")));
/* The thread's last sample: the id of its stack capture and its bucket.
 * A capture with the same id has the same frames, so a sample of the same
 * size goes to the same bucket without hashing the stack or probing the
 * table (buckets are never freed, and their size never changes). */
static __thread uint64_t tls_last_id __attribute__((tls_model("initial-exec")));
static __thread struct sm_mprof_bucket *tls_last_bucket __attribute__((tls_model("initial-exec")));

/* ---- when to sample ------------------------------------------------------ */

static uint64_t next_random(struct sm_mcache *c)
{
    /* xorshift64*: cheap and good enough for sampling gaps. */
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A gap between samples: exponential with mean rate bytes. */
static intptr_t draw_gap(struct sm_mcache *c, size_t rate)
{
    /* u = q / 2^52 in (0, 1]; -ln(u) * rate, capped at 20 means as Go
     * does. */
    double d = sm_neg_ln_unit((next_random(c) >> 12) + 1, 52) * (double)rate;
    if (d > 20.0 * (double)rate)
        d = 20.0 * (double)rate;
    if (d > (double)(INTPTR_MAX / 2))
        d = (double)(INTPTR_MAX / 2);
    return (intptr_t)d;
}

intptr_t sm_mprof_next_sample(struct sm_mcache *c)
{
    size_t rate = __atomic_load_n(&sm_opts.profile_rate, __ATOMIC_RELAXED);
    tls_expired_armed = tls_armed;
    tls_armed = rate != 0;
    if (rate == 0)
        return SM_MPROF_RECHECK;
    if (rate == 1)
        return 0;
    return draw_gap(c, rate);
}

size_t sm_set_profile_rate(size_t bytes)
{
    sm_init();
    if (bytes != 0) {
        if (!__atomic_load_n(&stack_warm, __ATOMIC_ACQUIRE)) {
            sm_stack_init();
            __atomic_store_n(&stack_warm, 1, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&last_rate, bytes, __ATOMIC_RELAXED);
    }
    size_t old = __atomic_exchange_n(&sm_opts.profile_rate, bytes, __ATOMIC_RELAXED);
    /* The calling thread draws its next sample with the new rate now. */
    struct sm_mcache *c = sm_tls_mcache;
    if (c != &sm_mcache_empty)
        c->sample_left = sm_mprof_next_sample(c);
    return old;
}

size_t sm_mprof_period(void)
{
    size_t rate = __atomic_load_n(&sm_opts.profile_rate, __ATOMIC_RELAXED);
    return rate ? rate : __atomic_load_n(&last_rate, __ATOMIC_RELAXED);
}

/* ---- buckets (prof_lock) ------------------------------------------------- */

/* The band of a size: the size itself up to 128, above that the size
 * rounded up to an eighth of its power of two (129..144 -> 144, 241..256
 * -> 256, 257..288 -> 288): the largest size of a band is at most 9/8 of
 * its smallest. */
static size_t size_band(size_t size)
{
    if (size <= 128)
        return size;
    size_t g = (size_t)1 << (63 - __builtin_clzll((unsigned long long)size) - 3);
    return (size + g - 1) & ~(g - 1);
}

static uint64_t hash_stack(const uintptr_t *stk, int n, size_t band)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ band;
    for (int i = 0; i < n; i++) {
        h = (h ^ stk[i]) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return h;
}

static void *bucket_mem(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (bump_left < n) {
        char *chunk = sm_os_alloc(SM_MPROF_CHUNK);
        if (chunk == NULL)
            return NULL;
        __atomic_add_fetch(&prof_sys, SM_MPROF_CHUNK, __ATOMIC_RELAXED);
        bump = chunk;
        bump_left = SM_MPROF_CHUNK;
    }
    void *p = bump;
    bump += n;
    bump_left -= n;
    return p;
}

/* Double the table; false if the OS gives no memory (the old one stays). */
static bool table_grow(void)
{
    size_t cap = table_cap ? table_cap * 2 : SM_MPROF_TABLE_MIN;
    struct bucket_slot *t = sm_os_alloc(cap * sizeof *t);
    if (t == NULL)
        return false;
    for (size_t i = 0; i < table_cap; i++) {
        if (table[i].b == NULL)
            continue;
        size_t j = table[i].hash & (cap - 1);
        while (t[j].b != NULL)
            j = (j + 1) & (cap - 1);
        t[j] = table[i];
    }
    if (table) {
        sm_os_free(table, table_cap * sizeof *t);
        __atomic_sub_fetch(&prof_sys, table_cap * sizeof *t, __ATOMIC_RELAXED);
    }
    __atomic_add_fetch(&prof_sys, cap * sizeof *t, __ATOMIC_RELAXED);
    table = t;
    table_cap = cap;
    return true;
}

/* The bucket of stack stk[0..n) and size, whose hash_stack is h: found, or
 * made.  NULL when there is no memory for a new one. */
static struct sm_mprof_bucket *bucket_get(uint64_t h, const uintptr_t *stk, int n, size_t band)
{
    /* Grow at half full; if that fails, go on up to 7/8 full. */
    if (2 * (nbuckets + 1) > table_cap && !table_grow() &&
        (table_cap == 0 || 8 * (nbuckets + 1) > 7 * table_cap))
        return NULL;
    size_t mask = table_cap - 1, i = h & mask;
    for (; table[i].b != NULL; i = (i + 1) & mask) {
        struct sm_mprof_bucket *b = table[i].b;
        if (table[i].hash == h && b->band == band && b->nstk == (uint32_t)n &&
            memcmp(b->stk, stk, (size_t)n * sizeof *stk) == 0)
            return b;
    }
    struct sm_mprof_bucket *b = bucket_mem(sizeof *b + (size_t)n * sizeof *stk);
    if (b == NULL)
        return NULL;
    memset(b, 0, sizeof *b);
    b->owner = sm_tls_mcache == &sm_mcache_empty ? NULL : sm_tls_mcache;
    b->band = band;
    b->nstk = (uint32_t)n;
    memcpy(b->stk, stk, (size_t)n * sizeof *stk);
    table[i].hash = h;
    table[i].b = b;
    b->allnext = all_buckets;
    all_buckets = b;
    nbuckets++;
    return b;
}

static struct sm_special *special_new(void)
{
    uint64_t before = special_alloc.sys;
    struct sm_special *sp = sm_fixalloc_alloc(&special_alloc);
    if (special_alloc.sys != before)
        __atomic_add_fetch(&prof_sys, special_alloc.sys - before, __ATOMIC_RELAXED);
    return sp;
}

/* ---- specials (prof_lock) ------------------------------------------------ */

/* The heap writes the kind bytes of a span only when it hands the span out
 * or takes it back, and a span with a live object (the one being sampled
 * or freed here) is neither; the profiler's own writes are under
 * prof_lock, but for spans of one object, whose sample and free are
 * ordered by the object's own life, and every kind byte is stored and
 * loaded whole (atomic).  So
 * no heap lock: with classes of one object a span (32 KiB), every small
 * sample and its free set and clear the bit, and the lock was two more
 * lock pairs a sample. */
static void span_set_slow(struct sm_mspan *s, bool slow)
{
    sm_pagemap_set_kind(s->base, s->npages, (uint8_t)(s->sizeclass | (slow ? SM_PAGE_SLOW : 0)));
}

/* sp's bit in s->sampled: the object's index mod 64. */
static uint64_t special_bit(const struct sm_mspan *s, uintptr_t a)
{
    return (uint64_t)1 << (sm_mspan_objindex(s, a) & 63);
}

/* Recompute s->sampled from its list. */
static void span_sampled_update(struct sm_mspan *s)
{
    uint64_t m = 0;
    for (struct sm_special *sp = s->specials; sp != NULL; sp = sp->next)
        m |= special_bit(s, sp->addr);
    __atomic_store_n(&s->sampled, m, __ATOMIC_RELAXED);
}

/* Put sp on its span's list.  A special already there for the same address
 * (its free went unseen) is taken off and returned, to be counted freed. */
static struct sm_special *span_add_special(struct sm_mspan *s, struct sm_special *sp)
{
    struct sm_special *stale = NULL;
    bool first = s->specials == NULL;
    struct sm_special **pp = &s->specials;
    while (*pp != NULL && (*pp)->addr < sp->addr)
        pp = &(*pp)->next;
    if (*pp != NULL && (*pp)->addr == sp->addr) {
        stale = *pp;
        *pp = stale->next;
    }
    sp->next = *pp;
    *pp = sp;
    /* Set before the object is handed out: whoever frees it got it after
     * this store, through the program's own synchronisation. */
    __atomic_store_n(&s->sampled, s->sampled | special_bit(s, sp->addr), __ATOMIC_RELAXED);
    if (first)
        span_set_slow(s, true);
    return stale;
}

static struct sm_special *span_take_special(struct sm_mspan *s, uintptr_t a)
{
    struct sm_special *sp = NULL;
    struct sm_special **pp = &s->specials;
    while (*pp != NULL && (*pp)->addr < a)
        pp = &(*pp)->next;
    if (*pp != NULL && (*pp)->addr == a) {
        sp = *pp;
        *pp = sp->next;
        span_sampled_update(s);
        if (s->specials == NULL)
            span_set_slow(s, false);
    }
    return sp;
}

/* One more object allocated, or freed, in b's counts.  The owner's own
 * counts have one writer: a cache is another thread's only after its
 * thread gave it back (sm_mcache_thread_exit, under sm_mcache_lock), and a
 * thread with no cache is never an owner. */
static void count(const struct sm_mprof_bucket *b, struct mprof_count *own,
                  struct mprof_count *shared, size_t size)
{
    if (b->owner == sm_tls_mcache) {
        __atomic_store_n(&own->objects, __atomic_load_n(&own->objects, __ATOMIC_RELAXED) + 1,
                         __ATOMIC_RELAXED);
        __atomic_store_n(&own->bytes, __atomic_load_n(&own->bytes, __ATOMIC_RELAXED) + size,
                         __ATOMIC_RELAXED);
    } else {
        __atomic_add_fetch(&shared->objects, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&shared->bytes, size, __ATOMIC_RELAXED);
    }
}

static void count_alloc(struct sm_mprof_bucket *b, size_t size)
{
    count(b, &b->own_alloc, &b->alloc, size);
}

static void count_free(struct sm_mprof_bucket *b, size_t size)
{
    count(b, &b->own_free, &b->free, size);
}

/* Count sp's object freed and give sp back. */
static void special_done(struct sm_special *sp)
{
    count_free(sp->bucket, sp->size);
    sm_fixalloc_free(&special_alloc, sp);
}

/* A large span's sampled object, if it has one, counted freed and taken
 * off the span.  No lock: the span is the calling thread's (it is
 * allocating or freeing the object). */
static void large_sample_done(struct sm_mspan *s)
{
    struct sm_mprof_bucket *b = s->prof_bucket;
    if (b != NULL) {
        s->prof_bucket = NULL;
        count_free(b, s->reqsize);
    }
}

/* ---- the hooks ------------------------------------------------------------ */

static bool in_ranges(const struct pc_range *r, int n, uintptr_t pc)
{
    for (int i = 0; i < n; i++)
        if (pc >= r[i].lo && pc < r[i].hi)
            return true;
    return false;
}

/* C++'s operator new, in all its forms, as weak references: not linked in
 * when the program has no C++ runtime. */
extern void _Znwm(void) __attribute__((weak));
extern void _Znam(void) __attribute__((weak));
extern void _ZnwmRKSt9nothrow_t(void) __attribute__((weak));
extern void _ZnamRKSt9nothrow_t(void) __attribute__((weak));
extern void _ZnwmSt11align_val_t(void) __attribute__((weak));
extern void _ZnamSt11align_val_t(void) __attribute__((weak));
extern void _ZnwmSt11align_val_tRKSt9nothrow_t(void) __attribute__((weak));
extern void _ZnamSt11align_val_tRKSt9nothrow_t(void) __attribute__((weak));

static struct pc_range op_new[8];
static int nop_new;

/* The size of the dynamic symbol name defined at fn, by the GNU hash table
 * of fn's object, or 0.  dladdr1 would find it too, but by reading the
 * object's whole symbol table (libstdc++'s is 100 KiB and more, which
 * stay resident); the hash reads the few lines of one chain, which the
 * loader's own look-ups have mostly touched already. */
static size_t dynsym_size(void (*fn)(void), const char *name)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    struct dl_find_object fo;
    if (_dl_find_object((void *)(uintptr_t)fn, &fo) != 0 || fo.dlfo_link_map == NULL)
        return 0;
    const struct link_map *lm = fo.dlfo_link_map;
    const uint32_t *gh = NULL;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    for (const ElfW(Dyn) *d = lm->l_ld; d != NULL && d->d_tag != DT_NULL; d++) {
        /* glibc relocates these in place on most targets; not on all. */
        uintptr_t v = d->d_un.d_ptr;
        if (v < lm->l_addr)
            v += lm->l_addr;
        if (d->d_tag == DT_GNU_HASH)
            gh = (const uint32_t *)v;
        else if (d->d_tag == DT_SYMTAB)
            symtab = (const ElfW(Sym) *)v;
        else if (d->d_tag == DT_STRTAB)
            strtab = (const char *)v;
    }
    if (gh == NULL || symtab == NULL || strtab == NULL || gh[0] == 0)
        return 0;
    uint32_t nbuckets = gh[0], symoffset = gh[1], bloom_size = gh[2];
    const uint32_t *buckets = (const uint32_t *)((const ElfW(Addr) *)(gh + 4) + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t h = 5381;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = h * 33 + *c;
    uint32_t i = buckets[h % nbuckets];
    if (i < symoffset)
        return 0;
    for (;; i++) {
        uint32_t h2 = chain[i - symoffset];
        const ElfW(Sym) *sym = &symtab[i];
        if ((h | 1) == (h2 | 1) && strcmp(strtab + sym->st_name, name) == 0 &&
            lm->l_addr + sym->st_value == (uintptr_t)fn)
            return sym->st_size;
        if (h2 & 1)
            return 0;
    }
#else
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    (void)name;
    if (dladdr1((void *)(uintptr_t)fn, &info, (void **)&sym, RTLD_DL_SYMENT) == 0 || sym == NULL ||
        info.dli_saddr != (void *)(uintptr_t)fn)
        return 0;
    return sym->st_size;
#endif
}

static void find_operator_new(void)
{
    static const struct {
        void (*fn)(void);
        const char *name;
    } fns[] = {
        { _Znwm, "_Znwm" },
        { _Znam, "_Znam" },
        { _ZnwmRKSt9nothrow_t, "_ZnwmRKSt9nothrow_t" },
        { _ZnamRKSt9nothrow_t, "_ZnamRKSt9nothrow_t" },
        { _ZnwmSt11align_val_t, "_ZnwmSt11align_val_t" },
        { _ZnamSt11align_val_t, "_ZnamSt11align_val_t" },
        { _ZnwmSt11align_val_tRKSt9nothrow_t, "_ZnwmSt11align_val_tRKSt9nothrow_t" },
        { _ZnamSt11align_val_tRKSt9nothrow_t, "_ZnamSt11align_val_tRKSt9nothrow_t" },
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        if (fns[i].fn == NULL)
            continue;
        size_t size = dynsym_size(fns[i].fn, fns[i].name);
        if (size == 0)
            continue;
        op_new[nop_new].lo = (uintptr_t)fns[i].fn;
        op_new[nop_new].hi = (uintptr_t)fns[i].fn + size;
        nop_new++;
    }
}

static int own_text_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t me = (uintptr_t)arg;
    bool mine = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && me >= lo && me < lo + ph->p_memsz)
            mine = true;
    }
    if (!mine)
        return 0;
    /* The executable (listed first, with no name) holds the program's code
     * too: leave nothing out by address then. */
    if (info->dlpi_name == NULL || info->dlpi_name[0] == '\0')
        return 1;
    for (int i = 0; i < info->dlpi_phnum && nown_text < SM_MPROF_MAX_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            own_text[nown_text].lo = info->dlpi_addr + ph->p_vaddr;
            own_text[nown_text].hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
            nown_text++;
        }
    }
    return 1;
}

/* Leading frames that are ours or operator new's; returns how many. */
static int frames_to_strip(const uintptr_t *pcs, int n)
{
    int i = 0;
    /* Return addresses: the call is the byte before. */
    while (i < n && in_ranges(own_text, nown_text, pcs[i] - 1))
        i++;
    while (i < n && in_ranges(op_new, nop_new, pcs[i] - 1))
        i++;
    return i;
}

/* A large object's sample, or a small one in a span of one object (the
 * classes of 8, 16, 24 and 32 KiB): one object, this thread's until it
 * returns it, so the bucket goes in the span, and the counts are atomic: with the
 * thread's last bucket (b) no lock is taken (tcmalloc keeps a sampled large
 * object's record beside its span the same way).  Otherwise the bucket of
 * stk[0..n) and band, whose hash is h, is found or made.  The size its
 * free counts is the span's reqsize.  Returns the bucket charged, or NULL
 * when there was no memory for one. */
static struct sm_mprof_bucket *record_large(struct sm_mspan *s, struct sm_mprof_bucket *b,
                                            uint64_t h, const uintptr_t *stk, int n,
                                            size_t size, size_t band)
{
    if (b == NULL) {
        pthread_mutex_lock(&prof_lock);
        b = bucket_get(h, stk, n, band);
        pthread_mutex_unlock(&prof_lock);
    }
    large_sample_done(s);   /* a stale one: its free went unseen */
    s->prof_bucket = b;
    s->reqsize = size;      /* a large span's already; a small one's for the free */
    if (b != NULL) {
        count_alloc(b, size);
        /* A small span's free must come to sm_mprof_record_free.  Only the
         * sample of its one object and that object's free write its kind
         * bytes, one after the other (see span_set_slow). */
        if (s->state == SM_SPAN_SMALL)
            span_set_slow(s, true);
    }
    return b;
}

/* A small object's sample at a: a special on its span's list, under
 * prof_lock.  b, h, stk, n, size, band and the result as record_large's. */
static struct sm_mprof_bucket *record_small(struct sm_mspan *s, uintptr_t a,
                                            struct sm_mprof_bucket *b, uint64_t h,
                                            const uintptr_t *stk, int n, size_t size,
                                            size_t band)
{
    pthread_mutex_lock(&prof_lock);
    /* The bucket's slot is fetched while the special goes in. */
    if (b == NULL && table_cap != 0)
        __builtin_prefetch(&table[h & (table_cap - 1)]);
    struct sm_special *sp = special_new();
    if (sp == NULL) {
        b = NULL;
    } else {
        sp->addr = a;
        sp->size = size;
        struct sm_special *stale = span_add_special(s, sp);
        if (stale != NULL)
            special_done(stale);
        if (b == NULL)
            b = bucket_get(h, stk, n, band);
        if (b != NULL) {
            count_alloc(b, size);
            sp->bucket = b;
        } else {
            /* No memory for a bucket: the sample is lost. */
            span_take_special(s, a);
            sm_fixalloc_free(&special_alloc, sp);
        }
    }
    pthread_mutex_unlock(&prof_lock);
    return b;
}

/* The sample of p in span s, inlined into both entry points below so that
 * the capture leaves out the same SM_MPROF_SKIP frames from either. */
static inline __attribute__((always_inline)) void record_alloc(void *p, struct sm_mspan *s, size_t size)
{
    uintptr_t a = (uintptr_t)p;
    /* Lines the work below needs, fetched while the stack is walked. */
    __builtin_prefetch(&prof_lock, 1);
    __builtin_prefetch(&s->specials, 1);
    __builtin_prefetch(&special_alloc, 1);
    tls_busy = 1;
    uintptr_t pcs[SM_STACK_MAX + 16];
    uint64_t id;
    size_t band = size_band(size);
    /* The last sample's bucket serves if the capture is of its frames:
     * then the capture need not copy them. */
    struct sm_mprof_bucket *last = tls_last_bucket;
    uint64_t known = last != NULL && last->band == band ? tls_last_id : 0;
    int n = sm_stack_capture_id(pcs, SM_STACK_MAX + 16, SM_MPROF_SKIP, known, &id);
    const uintptr_t *stk = pcs;
    uint64_t h = 0;
    if (id == 0 || id != known) {
        last = NULL;
        int skip = frames_to_strip(pcs, n);
        stk = pcs + skip;
        n -= skip;
        if (n > SM_STACK_MAX)
            n = SM_STACK_MAX;
        h = hash_stack(stk, n, band);
    }
    struct sm_mprof_bucket *got = s->state == SM_SPAN_LARGE || sm_class_to_nobjs[s->sizeclass] == 1
                                      ? record_large(s, last, h, stk, n, size, band)
                                      : record_small(s, a, last, h, stk, n, size, band);
    tls_last_id = id;
    tls_last_bucket = got;
    tls_busy = 0;
}

/* A sample is taken now: the countdown that ran out was armed, the
 * profiler is not already running on this thread, and it is set up. */
static inline bool sampling(void)
{
    return tls_expired_armed && !tls_busy && __atomic_load_n(&ready, __ATOMIC_ACQUIRE);
}

SM_NOINLINE void sm_mprof_record_alloc(void *p, size_t size)
{
    if (!sampling())
        return;
    struct sm_mspan *s = sm_pagemap_span((uintptr_t)p);
    if (s == NULL || (s->state != SM_SPAN_SMALL && s->state != SM_SPAN_LARGE))
        return;
    record_alloc(p, s, size);
}

SM_NOINLINE void sm_mprof_record_alloc_large(struct sm_mspan *s, size_t size)
{
    if (!sampling())
        return;
    record_alloc((void *)s->base, s, size);
}

void sm_mprof_record_free(void *p, struct sm_mspan *s)
{
    if (s == NULL)
        return;
    if (s->state != SM_SPAN_SMALL) {
        large_sample_done(s);
        return;
    }
    if (s->prof_bucket != NULL) {   /* a span of one object (record_large) */
        large_sample_done(s);
        span_set_slow(s, false);
        return;
    }
    /* Most frees in a marked span are of objects that were not sampled:
     * their bit is clear, and they take no lock. */
    if ((__atomic_load_n(&s->sampled, __ATOMIC_RELAXED) & special_bit(s, (uintptr_t)p)) == 0)
        return;
    pthread_mutex_lock(&prof_lock);
    struct sm_special *sp = span_take_special(s, (uintptr_t)p);
    if (sp != NULL)
        special_done(sp);
    pthread_mutex_unlock(&prof_lock);
}

uint64_t sm_mprof_sys(void)
{
    return __atomic_load_n(&prof_sys, __ATOMIC_RELAXED) + sm_stack_sys();
}

/* ---- writing --------------------------------------------------------------- */

int sm_mprof_snapshot(struct sm_prof_record **recs, size_t *nrecs)
{
    *recs = NULL;
    *nrecs = 0;
    pthread_mutex_lock(&prof_lock);
    size_t n = nbuckets;
    struct sm_prof_record *r = NULL;
    if (n > 0) {
        r = sm_os_alloc(n * sizeof *r);
        if (r == NULL) {
            pthread_mutex_unlock(&prof_lock);
            errno = ENOMEM;
            return -1;
        }
        size_t i = 0;
        for (struct sm_mprof_bucket *b = all_buckets; b && i < n; b = b->allnext, i++) {
            /* Frees first: an object is counted allocated before freed,
             * so in use is never negative. */
            r[i].free_objects = __atomic_load_n(&b->free.objects, __ATOMIC_RELAXED) +
                                __atomic_load_n(&b->own_free.objects, __ATOMIC_RELAXED);
            r[i].free_bytes = __atomic_load_n(&b->free.bytes, __ATOMIC_RELAXED) +
                              __atomic_load_n(&b->own_free.bytes, __ATOMIC_RELAXED);
            r[i].alloc_objects = __atomic_load_n(&b->alloc.objects, __ATOMIC_RELAXED) +
                                 __atomic_load_n(&b->own_alloc.objects, __ATOMIC_RELAXED);
            r[i].alloc_bytes = __atomic_load_n(&b->alloc.bytes, __ATOMIC_RELAXED) +
                               __atomic_load_n(&b->own_alloc.bytes, __ATOMIC_RELAXED);
            /* Another thread's pair may be half counted (objects before
             * bytes), and a stale large sample's free counts the span's
             * new size: never more bytes freed than allocated. */
            if (r[i].free_bytes > r[i].alloc_bytes)
                r[i].free_bytes = r[i].alloc_bytes;
            r[i].nstack = (int)b->nstk;
            r[i].stack = b->stk;
        }
    }
    pthread_mutex_unlock(&prof_lock);
    *recs = r;
    *nrecs = n;
    return 0;
}

void sm_mprof_snapshot_free(struct sm_prof_record *recs, size_t nrecs)
{
    if (recs != NULL)
        sm_os_free(recs, nrecs * sizeof *recs);
}

static size_t append(char *buf, size_t len, size_t cap, const char *s, size_t n)
{
    if (n > cap - len)
        n = cap - len;
    memcpy(buf + len, s, n);
    return len + n;
}

static void report(const char *path, int err)
{
    char buf[256];
    size_t len = 0;
    if (err == 0) {
        sm_warn("heap profile written to ", path, NULL);
        return;
    }
    const char *desc = strerrordesc_np(err);
    len = append(buf, len, sizeof buf - 1, ": ", 2);
    if (desc != NULL) {
        len = append(buf, len, sizeof buf - 1, desc, strlen(desc));
    } else {
        char num[24];
        len = append(buf, len, sizeof buf - 1, "error ", 6);
        len = append(buf, len, sizeof buf - 1, num, sm_fmt_u64(num, (uint64_t)err));
    }
    buf[len] = '\0';
    sm_warn("cannot write heap profile to ", path, buf);
}

int sm_mprof_write_fd(int fd, const char *default_type)
{
    struct sm_prof_record *recs;
    size_t n;
    int ret = -1;
    uint8_t busy = tls_busy;
    tls_busy = 1;
    if (sm_mprof_snapshot(&recs, &n) == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        ret = sm_profproto_write_typed(fd, recs, n, sm_mprof_period(), now, default_type);
        int saved = errno;
        sm_mprof_snapshot_free(recs, n);
        errno = saved;
    }
    tls_busy = busy;
    return ret;
}

static int write_profile(const char *path)
{
    struct sm_prof_record *recs;
    size_t n;
    int err = 0;
    uint8_t busy = tls_busy;
    tls_busy = 1;
    if (sm_mprof_snapshot(&recs, &n) < 0) {
        err = errno;
    } else {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd < 0) {
            err = errno;
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
            if (sm_profproto_write(fd, recs, n, sm_mprof_period(), now) < 0)
                err = errno;
            if (close(fd) < 0 && err == 0 && errno != EINTR)
                err = errno;
        }
        sm_mprof_snapshot_free(recs, n);
    }
    report(path, err);
    tls_busy = busy;
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

int sm_write_heap_profile(const char *path)
{
    if (path == NULL || *path == '\0') {
        errno = path == NULL ? EINVAL : ENOENT;
        return -1;
    }
    sm_init();
    if (!sm_active()) {
        static const char msg[] = "spanmalloc: sm_write_heap_profile: this process's malloc is "
                                  "another allocator's, not spanmalloc's; no profile written\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        errno = ENOTSUP;
        return -1;
    }
    return write_profile(path);
}

int sm_mprof_write_named(uint64_t n)
{
    char path[sizeof sm_opts.profile_prefix + 64];
    char num[24];
    size_t cap = sizeof path - 1, len = 0;
    const char *prefix = sm_opts.profile_prefix[0] ? sm_opts.profile_prefix : "spanmalloc";
    len = append(path, len, cap, prefix, strlen(prefix));
    len = append(path, len, cap, ".", 1);
    len = append(path, len, cap, num, sm_fmt_u64(num, (uint64_t)getpid()));
    if (n != 0) {
        len = append(path, len, cap, ".", 1);
        len = append(path, len, cap, num, sm_fmt_u64(num, n));
    }
    len = append(path, len, cap, ".heap.pb.gz", 11);
    path[len] = '\0';
    return write_profile(path);
}

/* ---- triggers ---------------------------------------------------------------- */

static void on_signal(int sig)
{
    (void)sig;
    __atomic_add_fetch(&signals_got, 1, __ATOMIC_RELAXED);
}

bool sm_mprof_wants_worker(void)
{
    return sm_opts.profile_signal != 0 || sm_opts.profile_interval_ns != 0 ||
           sm_opts.profile_growth != 0;
}

/* SPANMALLOC_PROFILE_GROWTH: a profile each time heap_inuse passes the
 * high-water mark of the last one by the growth, as gperftools'
 * HEAP_PROFILE_INUSE_INTERVAL and jemalloc's prof_gdump write one when
 * the heap reaches a new peak.  Both of those check on the allocating
 * thread; here the worker looks at heap_inuse each tick, so malloc pays
 * nothing, and the profile shows the heap at most a tick after it grew.
 * A heap that grows by several steps within a tick gets one profile. */
static bool grown(void)
{
    size_t growth = sm_opts.profile_growth;
    if (growth == 0)
        return false;
    uint64_t inuse = __atomic_load_n(&sm_heap.st.pages_inuse, __ATOMIC_RELAXED) << SM_PAGE_SHIFT;
    if (inuse < growth_mark + growth)
        return false;
    growth_mark = inuse;
    return true;
}

void sm_mprof_tick(uint64_t now)
{
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
        return;
    uint64_t got = __atomic_load_n(&signals_got, __ATOMIC_RELAXED);
    for (int i = 0; signals_seen != got && i < SM_MPROF_MAX_SIGNAL_WRITES; i++) {
        signals_seen++;
        sm_mprof_write_named(__atomic_add_fetch(&file_seq, 1, __ATOMIC_RELAXED));
    }
    signals_seen = got;
    if (sm_opts.profile_interval_ns != 0 && now >= next_interval) {
        sm_mprof_write_named(__atomic_add_fetch(&file_seq, 1, __ATOMIC_RELAXED));
        next_interval = now + sm_opts.profile_interval_ns;
    }
    if (grown())
        sm_mprof_write_named(__atomic_add_fetch(&file_seq, 1, __ATOMIC_RELAXED));
}

void sm_mprof_init(void)
{
    uint8_t busy = tls_busy;
    tls_busy = 1;
    sm_fixalloc_init(&special_alloc, sizeof(struct sm_special));
    /* Before the program can have loaded anything with dlopen. */
    sm_stack_boot();
    size_t rate = __atomic_load_n(&sm_opts.profile_rate, __ATOMIC_RELAXED);
    if (rate != 0) {
        __atomic_store_n(&last_rate, rate, __ATOMIC_RELAXED);
        sm_stack_init();
        __atomic_store_n(&stack_warm, 1, __ATOMIC_RELEASE);
    }
    dl_iterate_phdr(own_text_cb, (void *)(uintptr_t)sm_mprof_init);
    find_operator_new();
    next_interval = sm_nanotime() + sm_opts.profile_interval_ns;
    if (sm_opts.profile_signal != 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(sm_opts.profile_signal, &sa, NULL);
    }
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    tls_busy = busy;
}

void sm_mprof_at_exit(void)
{
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE) || sm_opts.profile_prefix[0] == '\0')
        return;
    sm_mprof_write_named(0);
}

/* ---- fork: the profiler's lock is taken, before the allocator's ---- */

void sm_mprof_fork_prepare(void)
{
    pthread_mutex_lock(&prof_lock);
}

void sm_mprof_fork_parent(void)
{
    pthread_mutex_unlock(&prof_lock);
}

void sm_mprof_fork_child(void)
{
    sm_mprof_fork_parent();
}
