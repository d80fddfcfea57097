/*
 * workloads.h - allocation workloads run against every allocator.
 *
 * Each workload is a plain C function that performs a fixed, deterministic
 * amount of allocation work and returns how many operations it did, so a
 * driver can report time per operation.  The same binary runs under every
 * allocator (the allocator is chosen with LD_PRELOAD), so these functions
 * only call the standard malloc/free/realloc.
 *
 * An "operation" is one allocation (malloc or realloc) together with the
 * free that eventually releases it.  Every object is touched (one byte
 * written when allocated, read back before it is freed) and the bytes are
 * summed into wl_sink, so the compiler cannot remove the allocations.
 *
 * The PRNG is seeded from wl_params.seed, so a given case does exactly the
 * same sequence of calls in every run and under every allocator (threaded
 * cases differ only in how the threads interleave).
 */
#ifndef SPANMALLOC_BENCH_WORKLOADS_H
#define SPANMALLOC_BENCH_WORKLOADS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How a workload picks the size of each allocation. */
enum wl_sizes {
	WL_SIZES_FIXED,      /* always size */
	WL_SIZES_UNIFORM,    /* uniform in [size, max_size] */
	WL_SIZES_HEAVY_TAIL  /* Pareto-like in [size, max_size): P(n >= s) ~ size/s */
};

/* Order in which wl_batch frees a batch. */
enum wl_order {
	WL_ORDER_LIFO,       /* newest first */
	WL_ORDER_FIFO,       /* oldest first */
	WL_ORDER_RANDOM      /* a fixed random permutation */
};

struct wl_params {
	uint64_t ops;          /* operations per call; per thread for threaded cases */
	size_t size;           /* the fixed size, or the low end of the size range */
	size_t max_size;       /* high end of the size range; realloc target size */
	enum wl_sizes sizes;   /* size distribution */
	size_t count;          /* batch length, live-set slots or window, by workload */
	enum wl_order order;   /* wl_batch only */
	unsigned threads;      /* threads the workload runs on; 0 = the calling thread
	                        * alone (wl_cross_thread_free always runs on 2, the
	                        * caller and a consumer, and ignores it) */
	uint64_t seed;         /* PRNG seed; threads derive theirs from it */
};

/* malloc(size) then free, ops times: the allocator's fast path. */
uint64_t wl_malloc_free(const struct wl_params *p);

/* A FIFO window of count objects of random sizes: each op frees the object
 * allocated count ops earlier and allocates a new one. */
uint64_t wl_malloc_random(const struct wl_params *p);

/* Allocate count objects, then free them all in p->order; repeated until
 * ops objects were allocated. */
uint64_t wl_batch(const struct wl_params *p);

/* Grow count buffers, each from empty to max_size by realloc steps of
 * 1..2*size-1 bytes, with a small malloc/free every 16 steps so the buffer
 * is not always the last object of the heap.  Ops are reallocs plus the
 * small mallocs. */
uint64_t wl_realloc_grow(const struct wl_params *p);

/* The calling thread allocates ops objects in batches of count and hands
 * each batch through a lock-free single-producer single-consumer ring to a
 * consumer thread, which frees them. */
uint64_t wl_cross_thread_free(const struct wl_params *p);

/* threads threads, each replacing random slots of its own set of count
 * objects ops times.  Ops are summed over threads. */
uint64_t wl_threads(const struct wl_params *p);

/* Larson-like server: threads threads each keep count live slots and, in
 * rounds of 1024 replacements, replace random slots and pass an eighth of
 * their slots to the next thread, which frees them later. */
uint64_t wl_larson(const struct wl_params *p);

/* A live set of count slots (a power of two) with heavy-tailed sizes and
 * heavy-tailed lifetimes (low slots are replaced far more often than high
 * ones), ops replacements after the set is built. */
uint64_t wl_heavy_tail(const struct wl_params *p);

/* One benchmark case: a name (without the BM_ prefix), a workload and its
 * default parameters. */
struct wl_case {
	const char *name;
	uint64_t (*run)(const struct wl_params *p);
	struct wl_params params;
};

extern const struct wl_case wl_cases[];
extern const size_t wl_ncases;

/* Sum of every byte read back from freed objects; keeps the work alive. */
extern volatile uint64_t wl_sink;

#ifdef __cplusplus
}
#endif

#endif /* SPANMALLOC_BENCH_WORKLOADS_H */
