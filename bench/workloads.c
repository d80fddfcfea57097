/*
 * workloads.c - the allocation workloads and the table of benchmark cases.
 *
 * What each workload does is described in workloads.h; the cases and their
 * default parameters are the table at the end of this file, which the
 * google-benchmark driver (bench_main.cc) registers as BM_<name>.
 *
 * Choices that matter for the numbers:
 * - Random numbers come from xorshift64* seeded through splitmix64, and are
 *   bounded by a multiply-shift instead of a division, so drawing a size
 *   costs a few cycles next to a malloc of tens.
 * - Every object has one byte written when it is allocated and read back
 *   just before it is freed (obj_new, obj_free).  That keeps the compiler
 *   from removing malloc/free pairs and makes the allocator pay for handing
 *   out memory that is not yet mapped, but it does not measure memset-like
 *   costs: a 1 MiB object touches one page.
 * - Bookkeeping (slot tables, permutations, rings) is allocated once per
 *   call with calloc; it is small next to the work and is not counted.
 * - Threaded workloads start and join their threads on every call, so thread
 *   start-up and exit (when allocators flush thread caches) are measured, as
 *   in a server with short-lived workers.  A call lasts tens of milliseconds,
 *   so this is a small share.
 * - Waiting threads spin briefly and then yield, because the machine may have
 *   fewer cores than the workload has threads.
 * - Default parameters aim at 1-50 ms per call on one core, so
 *   google-benchmark runs several calls per measurement and the first call,
 *   which warms the heap up, is not the one reported.
 */
#define _POSIX_C_SOURCE 200809L

#include "workloads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

volatile uint64_t wl_sink;

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

__extension__ typedef unsigned __int128 u128;

static void die(const char *what, size_t n)
{
	fprintf(stderr, "workloads: %s(%zu) failed\n", what, n);
	abort();
}

/* Bookkeeping memory: not an operation, never touched by the timing. */
static void *table_alloc(size_t n, size_t size)
{
	void *t = calloc(n, size);
	if (t == NULL)
		die("calloc", n * size);
	return t;
}

/* ---- PRNG ---------------------------------------------------------------- */

struct rng {
	uint64_t s;
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* stream separates the sequences of threads that share one seed. */
static void rng_init(struct rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ULL);
	r->s = splitmix64(&x);
	if (r->s == 0)
		r->s = 1;
}

static inline uint64_t rng_next(struct rng *r)
{
	uint64_t x = r->s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n). */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return (uint64_t)(((u128)rng_next(r) * n) >> 64);
}

/* ---- sizes --------------------------------------------------------------- */

struct sizegen {
	enum wl_sizes kind;
	size_t lo;
	uint64_t span;      /* uniform: hi - lo + 1 */
	unsigned last_band; /* heavy tail: index of the top band */
};

static void sizegen_init(struct sizegen *g, const struct wl_params *p)
{
	g->kind = p->sizes;
	g->lo = p->size;
	g->span = p->max_size >= p->size ? p->max_size - p->size + 1 : 1;
	g->last_band = 0;
	while (g->kind == WL_SIZES_HEAVY_TAIL && (p->size << (g->last_band + 1)) < p->max_size)
		g->last_band++;
}

/*
 * Heavy tail: band k is [lo << k, lo << (k+1)) and is chosen with
 * probability 2^-(k+1) (the top band also takes what is left), uniform
 * within the band.  So P(n >= s) is about lo/s, a Pareto tail with
 * alpha = 1: half the objects are under 2*lo, yet every band holds about
 * the same share of the bytes.
 */
static inline size_t size_draw(const struct sizegen *g, struct rng *r)
{
	uint64_t x, base;

	switch (g->kind) {
	case WL_SIZES_UNIFORM:
		return g->lo + (size_t)rng_below(r, g->span);
	case WL_SIZES_HEAVY_TAIL:
		x = rng_next(r);
		base = (uint64_t)g->lo << __builtin_ctzll(x | (1ULL << g->last_band));
		return (size_t)(base + (((x >> 32) * base) >> 32));
	case WL_SIZES_FIXED:
	default:
		return g->lo;
	}
}

/* ---- objects ------------------------------------------------------------- */

static inline void *obj_new(size_t n, uint64_t tag)
{
	void *q = malloc(n);
	if (__builtin_expect(q == NULL, 0))
		die("malloc", n);
	*(volatile unsigned char *)q = (unsigned char)tag;
	return q;
}

static inline uint64_t obj_free(void *q)
{
	uint64_t v = *(volatile unsigned char *)q;
	free(q);
	return v;
}

static uint64_t free_all(void **slots, size_t n)
{
	uint64_t acc = 0;
	for (size_t i = 0; i < n; i++) {
		if (slots[i] != NULL)
			acc += obj_free(slots[i]);
		slots[i] = NULL;
	}
	return acc;
}

/* ---- threads ------------------------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* Spin a little, then give the core away: there may be more threads than cores. */
static inline void backoff(unsigned *spins)
{
	if (++*spins < 100)
		cpu_relax();
	else
		sched_yield();
}

struct worker {
	pthread_t tid;
	const struct wl_params *p;
	void *shared;       /* the workload's state shared by its threads */
	unsigned index;
	uint64_t ops;       /* out */
	uint64_t acc;       /* out */
};

static uint64_t run_workers(const struct wl_params *p, void *shared, void *(*fn)(void *))
{
	unsigned n = p->threads ? p->threads : 1;
	struct worker *w = table_alloc(n, sizeof *w);
	uint64_t ops = 0, acc = 0;
	unsigned i;

	for (i = 0; i < n; i++) {
		w[i].p = p;
		w[i].shared = shared;
		w[i].index = i;
		if (pthread_create(&w[i].tid, NULL, fn, &w[i]) != 0)
			die("pthread_create", i);
	}
	for (i = 0; i < n; i++) {
		pthread_join(w[i].tid, NULL);
		ops += w[i].ops;
		acc += w[i].acc;
	}
	free(w);
	wl_sink += acc;
	return ops;
}

/* ---- workloads ----------------------------------------------------------- */

uint64_t wl_malloc_free(const struct wl_params *p)
{
	uint64_t acc = 0;

	for (uint64_t i = 0; i < p->ops; i++)
		acc += obj_free(obj_new(p->size, i));
	wl_sink += acc;
	return p->ops;
}

uint64_t wl_malloc_random(const struct wl_params *p)
{
	void **win = table_alloc(p->count, sizeof *win);
	struct sizegen g;
	struct rng r;
	uint64_t acc = 0;
	size_t j = 0;

	sizegen_init(&g, p);
	rng_init(&r, p->seed, 0);
	for (uint64_t i = 0; i < p->ops; i++) {
		if (win[j] != NULL)
			acc += obj_free(win[j]);
		win[j] = obj_new(size_draw(&g, &r), i);
		if (++j == p->count)
			j = 0;
	}
	acc += free_all(win, p->count);
	free(win);
	wl_sink += acc;
	return p->ops;
}

uint64_t wl_batch(const struct wl_params *p)
{
	size_t n = p->count, i;
	void **a = table_alloc(n, sizeof *a);
	size_t *perm = NULL;
	uint64_t rounds = p->ops / n ? p->ops / n : 1;
	struct sizegen g;
	struct rng r;
	uint64_t acc = 0;

	sizegen_init(&g, p);
	rng_init(&r, p->seed, 0);
	if (p->order == WL_ORDER_RANDOM) {
		perm = table_alloc(n, sizeof *perm);
		for (i = 0; i < n; i++)
			perm[i] = i;
		for (i = n - 1; i > 0; i--) {
			size_t k = (size_t)rng_below(&r, i + 1), t = perm[i];
			perm[i] = perm[k];
			perm[k] = t;
		}
	}
	for (uint64_t round = 0; round < rounds; round++) {
		for (i = 0; i < n; i++)
			a[i] = obj_new(size_draw(&g, &r), i);
		switch (p->order) {
		case WL_ORDER_LIFO:
			for (i = n; i-- > 0;)
				acc += obj_free(a[i]);
			break;
		case WL_ORDER_FIFO:
			for (i = 0; i < n; i++)
				acc += obj_free(a[i]);
			break;
		case WL_ORDER_RANDOM:
			for (i = 0; i < n; i++)
				acc += obj_free(a[perm[i]]);
			break;
		}
	}
	free(perm);
	free(a);
	wl_sink += acc;
	return rounds * n;
}

#define REALLOC_NOISE 64 /* small objects kept live between the buffer's steps */

uint64_t wl_realloc_grow(const struct wl_params *p)
{
	void *noise[REALLOC_NOISE] = { 0 };
	size_t nj = 0;
	uint64_t ops = 0, acc = 0;
	struct rng r;

	rng_init(&r, p->seed, 0);
	for (size_t b = 0; b < p->count; b++) {
		unsigned char *buf = NULL;
		size_t len = 0;
		unsigned steps = 0;

		while (len < p->max_size) {
			len += 1 + (size_t)rng_below(&r, 2 * p->size - 1);
			buf = realloc(buf, len);
			if (buf == NULL)
				die("realloc", len);
			if (steps == 0)
				*(volatile unsigned char *)buf = (unsigned char)b;
			((volatile unsigned char *)buf)[len - 1] = (unsigned char)len;
			ops++;
			if ((++steps & 15) == 0) {
				if (noise[nj] != NULL)
					acc += obj_free(noise[nj]);
				noise[nj] = obj_new(16 + (size_t)rng_below(&r, 113), steps);
				nj = (nj + 1) % REALLOC_NOISE;
				ops++;
			}
		}
		acc += *(volatile unsigned char *)buf;
		acc += ((volatile unsigned char *)buf)[len - 1];
		free(buf);
	}
	acc += free_all(noise, REALLOC_NOISE);
	wl_sink += acc;
	return ops;
}

#define XT_RING 64 /* batches in flight between producer and consumer */

struct xt_ring {
	_Alignas(64) atomic_uint_fast64_t head; /* batches published */
	_Alignas(64) atomic_uint_fast64_t tail; /* batches freed */
	_Alignas(64) void **slots;              /* XT_RING batches of batch pointers */
	size_t batch;
	uint64_t nbatches;
	uint64_t acc;                           /* written by the consumer */
};

static void *xt_consumer(void *arg)
{
	struct xt_ring *q = arg;
	uint64_t acc = 0;

	for (uint64_t t = 0; t < q->nbatches; t++) {
		unsigned spins = 0;
		while (atomic_load_explicit(&q->head, memory_order_acquire) == t)
			backoff(&spins);
		void **b = q->slots + (t % XT_RING) * q->batch;
		for (size_t i = 0; i < q->batch; i++)
			acc += obj_free(b[i]);
		atomic_store_explicit(&q->tail, t + 1, memory_order_release);
	}
	q->acc = acc;
	return NULL;
}

uint64_t wl_cross_thread_free(const struct wl_params *p)
{
	struct xt_ring *q = table_alloc(1, sizeof *q);
	pthread_t consumer;
	struct sizegen g;
	struct rng r;

	sizegen_init(&g, p);
	rng_init(&r, p->seed, 0);
	q->batch = p->count;
	q->nbatches = p->ops / p->count ? p->ops / p->count : 1;
	q->slots = table_alloc(XT_RING * q->batch, sizeof *q->slots);
	atomic_init(&q->head, 0);
	atomic_init(&q->tail, 0);
	if (pthread_create(&consumer, NULL, xt_consumer, q) != 0)
		die("pthread_create", 1);
	for (uint64_t t = 0; t < q->nbatches; t++) {
		unsigned spins = 0;
		while (t - atomic_load_explicit(&q->tail, memory_order_acquire) >= XT_RING)
			backoff(&spins);
		void **b = q->slots + (t % XT_RING) * q->batch;
		for (size_t i = 0; i < q->batch; i++)
			b[i] = obj_new(size_draw(&g, &r), i);
		atomic_store_explicit(&q->head, t + 1, memory_order_release);
	}
	pthread_join(consumer, NULL);

	uint64_t ops = q->nbatches * q->batch;
	wl_sink += q->acc;
	free(q->slots);
	free(q);
	return ops;
}

static void *threads_worker(void *arg)
{
	struct worker *w = arg;
	const struct wl_params *p = w->p;
	void **slots = table_alloc(p->count, sizeof *slots);
	struct sizegen g;
	struct rng r;
	uint64_t acc = 0;

	sizegen_init(&g, p);
	rng_init(&r, p->seed, 1 + w->index);
	for (uint64_t i = 0; i < p->ops; i++) {
		size_t j = (size_t)rng_below(&r, p->count);
		if (slots[j] != NULL)
			acc += obj_free(slots[j]);
		slots[j] = obj_new(size_draw(&g, &r), i);
	}
	acc += free_all(slots, p->count);
	free(slots);
	w->ops = p->ops;
	w->acc = acc;
	return NULL;
}

uint64_t wl_threads(const struct wl_params *p)
{
	return run_workers(p, NULL, threads_worker);
}

#define LARSON_ROUND 1024 /* replacements between two hand-offs */

/* Objects passed to a thread by its predecessor, waiting to be adopted. */
struct mailbox {
	_Alignas(64) pthread_mutex_t lock;
	size_t n, cap;
	void **items;
};

static void *larson_worker(void *arg)
{
	struct worker *w = arg;
	const struct wl_params *p = w->p;
	struct mailbox *boxes = w->shared;
	unsigned nthreads = p->threads ? p->threads : 1;
	struct mailbox *mine = &boxes[w->index];
	struct mailbox *next = &boxes[(w->index + 1) % nthreads];
	size_t nslots = p->count, handoff = nslots / 8, j, k;
	void **slots = table_alloc(nslots, sizeof *slots);
	uint64_t ops = 0, acc = 0, left = p->ops;
	struct sizegen g;
	struct rng r;

	sizegen_init(&g, p);
	rng_init(&r, p->seed, 1 + w->index);
	for (j = 0; j < nslots; j++)
		slots[j] = obj_new(size_draw(&g, &r), j);
	ops += nslots;

	while (left > 0) {
		uint64_t n = left < LARSON_ROUND ? left : LARSON_ROUND;
		for (uint64_t i = 0; i < n; i++) {
			j = (size_t)rng_below(&r, nslots);
			if (slots[j] != NULL)
				acc += obj_free(slots[j]);
			slots[j] = obj_new(size_draw(&g, &r), i);
		}
		ops += n;
		left -= n;

		/* Pass a run of slots to the next thread, which will free them. */
		size_t off = (size_t)rng_below(&r, nslots);
		pthread_mutex_lock(&next->lock);
		for (k = 0; k < handoff && next->n < next->cap; k++) {
			j = (off + k) % nslots;
			if (slots[j] != NULL) {
				next->items[next->n++] = slots[j];
				slots[j] = NULL;
			}
		}
		pthread_mutex_unlock(&next->lock);

		/* Adopt what the previous thread passed us into the emptied slots;
		 * slots left empty are refilled by later replacements. */
		pthread_mutex_lock(&mine->lock);
		for (k = 0; k < handoff && mine->n > 0; k++) {
			j = (off + k) % nslots;
			if (slots[j] == NULL)
				slots[j] = mine->items[--mine->n];
		}
		pthread_mutex_unlock(&mine->lock);
	}
	acc += free_all(slots, nslots);
	free(slots);
	w->ops = ops;
	w->acc = acc;
	return NULL;
}

uint64_t wl_larson(const struct wl_params *p)
{
	unsigned n = p->threads ? p->threads : 1, i;
	struct mailbox *boxes = table_alloc(n, sizeof *boxes);
	uint64_t ops, acc = 0;

	for (i = 0; i < n; i++) {
		pthread_mutex_init(&boxes[i].lock, NULL);
		boxes[i].cap = 4 * (p->count / 8);
		boxes[i].items = table_alloc(boxes[i].cap ? boxes[i].cap : 1, sizeof(void *));
	}
	ops = run_workers(p, boxes, larson_worker);
	for (i = 0; i < n; i++) {
		acc += free_all(boxes[i].items, boxes[i].n);
		free(boxes[i].items);
		pthread_mutex_destroy(&boxes[i].lock);
	}
	free(boxes);
	wl_sink += acc;
	return ops;
}

uint64_t wl_heavy_tail(const struct wl_params *p)
{
	size_t nslots = p->count, j;
	void **slots = table_alloc(nslots, sizeof *slots);
	unsigned bits = 0;
	struct sizegen g;
	struct rng r;
	uint64_t acc = 0;

	while (((size_t)2 << bits) <= nslots)
		bits++; /* nslots >= 2^bits */
	sizegen_init(&g, p);
	rng_init(&r, p->seed, 0);
	for (j = 0; j < nslots; j++)
		slots[j] = obj_new(size_draw(&g, &r), j);

	/*
	 * Pick a prefix of 2^m slots, m uniform in [4, bits], then a slot in it:
	 * slot j is replaced at a rate about proportional to 1/j, so lifetimes
	 * are heavy-tailed too (a few objects churn, most live long).
	 */
	unsigned lowest = bits < 4 ? bits : 4;
	for (uint64_t i = 0; i < p->ops; i++) {
		unsigned m = lowest + (unsigned)rng_below(&r, bits - lowest + 1);
		j = (size_t)(rng_next(&r) & (((uint64_t)1 << m) - 1));
		acc += obj_free(slots[j]);
		slots[j] = obj_new(size_draw(&g, &r), i);
	}
	acc += free_all(slots, nslots);
	free(slots);
	wl_sink += acc;
	return nslots + p->ops;
}

/* ---- cases --------------------------------------------------------------- */

#define SEED 0x5EED5EEDULL

#define FIXED(n, nops) \
	{ .ops = (nops), .size = (n), .max_size = (n), .sizes = WL_SIZES_FIXED, .seed = SEED }
#define BATCH(ord, n) \
	{ .ops = 262144, .size = 16, .max_size = 256, .sizes = WL_SIZES_UNIFORM, \
	  .count = (n), .order = (ord), .seed = SEED }
#define THREADS(t) \
	{ .ops = 131072, .size = 16, .max_size = 1024, .sizes = WL_SIZES_UNIFORM, \
	  .count = 256, .threads = (t), .seed = SEED }

const struct wl_case wl_cases[] = {
	{ "MallocFree_16", wl_malloc_free, FIXED(16, 1 << 19) },
	{ "MallocFree_64", wl_malloc_free, FIXED(64, 1 << 19) },
	{ "MallocFree_256", wl_malloc_free, FIXED(256, 1 << 19) },
	{ "MallocFree_1024", wl_malloc_free, FIXED(1024, 1 << 19) },
	{ "MallocFree_4096", wl_malloc_free, FIXED(4096, 1 << 19) },
	{ "MallocFree_32768", wl_malloc_free, FIXED(32 * KiB, 1 << 18) },
	{ "MallocFree_65536", wl_malloc_free, FIXED(64 * KiB, 1 << 16) },
	{ "MallocFree_1048576", wl_malloc_free, FIXED(MiB, 1 << 14) },
	{ "MallocRandom_Uniform", wl_malloc_random,
	  { .ops = 1 << 19, .size = 16, .max_size = 1024, .sizes = WL_SIZES_UNIFORM,
	    .count = 32, .seed = SEED } },
	{ "MallocRandom_HeavyTail", wl_malloc_random,
	  { .ops = 1 << 18, .size = 16, .max_size = 256 * KiB, .sizes = WL_SIZES_HEAVY_TAIL,
	    .count = 32, .seed = SEED } },
	{ "BatchLifo_1024", wl_batch, BATCH(WL_ORDER_LIFO, 1024) },
	{ "BatchFifo_1024", wl_batch, BATCH(WL_ORDER_FIFO, 1024) },
	{ "BatchRandom_1024", wl_batch, BATCH(WL_ORDER_RANDOM, 1024) },
	{ "BatchLifo_65536", wl_batch, BATCH(WL_ORDER_LIFO, 65536) },
	{ "BatchFifo_65536", wl_batch, BATCH(WL_ORDER_FIFO, 65536) },
	{ "BatchRandom_65536", wl_batch, BATCH(WL_ORDER_RANDOM, 65536) },
	{ "ReallocGrow", wl_realloc_grow,
	  { .size = 64, .max_size = MiB, .count = 16, .seed = SEED } },
	{ "CrossThreadFree", wl_cross_thread_free,
	  { .ops = 1 << 18, .size = 16, .max_size = 256, .sizes = WL_SIZES_UNIFORM,
	    .count = 256, .threads = 2, .seed = SEED } },
	{ "Threads_1", wl_threads, THREADS(1) },
	{ "Threads_2", wl_threads, THREADS(2) },
	{ "Threads_4", wl_threads, THREADS(4) },
	{ "Threads_8", wl_threads, THREADS(8) },
	{ "Larson", wl_larson,
	  { .ops = 1 << 17, .size = 16, .max_size = 1024, .sizes = WL_SIZES_UNIFORM,
	    .count = 4096, .threads = 4, .seed = SEED } },
	{ "HeavyTail", wl_heavy_tail,
	  { .ops = 1 << 19, .size = 16, .max_size = 256 * KiB, .sizes = WL_SIZES_HEAVY_TAIL,
	    .count = 1 << 15, .seed = SEED } },
};

const size_t wl_ncases = sizeof wl_cases / sizeof wl_cases[0];
