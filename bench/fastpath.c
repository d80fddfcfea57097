/*
 * fastpath.c - a loop of malloc+free pairs of one size, for instruction
 * counting under callgrind (bench/callgrind.sh).
 *
 *   fastpath ITERATIONS [SIZE] [none]
 *
 * Runs a warm-up of WARMUP pairs (so caches, size classes and thread state
 * exist), then ITERATIONS pairs of malloc(SIZE) + free (SIZE defaults to 64).
 * KEEP objects of SIZE stay allocated around the loop, so the page or span
 * the pairs use never becomes empty: otherwise allocators that retire an
 * empty page on free (mimalloc) would run that slow path on every pair, which
 * a program with any other live object of the size never sees.
 * Each object gets one byte written and read back so the pair cannot be
 * optimized away.  With "none" the loop touches a static buffer instead of
 * allocating, which measures the loop's own instructions.
 *
 * callgrind.sh runs this twice with different ITERATIONS and divides the
 * difference of the totals by the difference of the counts, so start-up,
 * warm-up and exit cancel out and what remains is the cost of one pair.
 * The first line of output names the shared object that defines malloc, to
 * show which allocator was measured.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WARMUP 10000
#define KEEP 16

static unsigned char scratch[64];

static uint64_t pairs(uint64_t n, size_t size)
{
	uint64_t acc = 0;
	for (uint64_t i = 0; i < n; i++) {
		unsigned char *q = malloc(size);
		if (q == NULL)
			abort();
		*(volatile unsigned char *)q = (unsigned char)i;
		acc += *(volatile unsigned char *)q;
		free(q);
	}
	return acc;
}

static uint64_t no_pairs(uint64_t n)
{
	uint64_t acc = 0;
	for (uint64_t i = 0; i < n; i++) {
		unsigned char *q = scratch;
		__asm__ __volatile__("" : "+r"(q));
		*(volatile unsigned char *)q = (unsigned char)i;
		acc += *(volatile unsigned char *)q;
	}
	return acc;
}

int main(int argc, char **argv)
{
	uint64_t n, acc;
	size_t size = 64;
	int none = 0;
	Dl_info info;
	void *sym;

	if (argc < 2) {
		fprintf(stderr, "usage: fastpath ITERATIONS [SIZE] [none]\n");
		return 2;
	}
	n = strtoull(argv[1], NULL, 10);
	if (argc > 2)
		size = (size_t)strtoull(argv[2], NULL, 10);
	if (argc > 3 && strcmp(argv[3], "none") == 0)
		none = 1;

	sym = dlsym(RTLD_DEFAULT, "malloc");
	printf("malloc from %s\n",
	       sym != NULL && dladdr(sym, &info) != 0 && info.dli_fname != NULL ? info.dli_fname
										  : "unknown");
	fflush(stdout);

	if (none) {
		acc = no_pairs(WARMUP) + no_pairs(n);
	} else {
		void *keep[KEEP];
		for (int i = 0; i < KEEP; i++) {
			keep[i] = malloc(size);
			if (keep[i] == NULL)
				abort();
		}
		acc = pairs(WARMUP, size) + pairs(n, size);
		for (int i = 0; i < KEEP; i++)
			free(keep[i]);
	}
	printf("%llu pairs of %zu bytes (checksum %llu)\n", (unsigned long long)n, size,
	       (unsigned long long)acc);
	return 0;
}
