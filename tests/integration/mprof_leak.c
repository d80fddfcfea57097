/*
 * mprof_leak.c - a C program with a leak, a churn and a bounded cache, for
 * test_mprof_pprof.sh to profile.  It links spanmalloc, writes its
 * profiles with sm_write_heap_profile, and prints what each function
 * really holds, so the script can compare pprof's estimates with the
 * truth.
 *
 *   leak_context_chain  appends nodes to a list that is never freed, like a
 *                       context chain that never ends
 *   churn_buffers       allocates and frees short-lived buffers
 *   cache_store         keeps a bounded cache, replacing its oldest entries
 *
 * Usage: mprof_leak DIR.  Phase 1 fills the cache, leaks, churns and writes
 * DIR/a.pb.gz; phase 2 leaks more, churns more, replaces a quarter of the
 * cache and writes DIR/b.pb.gz.  Each "truth" line on stdout is
 * "truth PHASE FUNCTION INUSE_BYTES ALLOC_BYTES", in bytes asked for: the
 * sampling counts down requested bytes, so that is what pprof estimates.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spanmalloc.h"

#define MiB ((size_t)1 << 20)
#define NOINLINE __attribute__((noinline))

struct counts {
    size_t inuse, alloc;
};

static uint64_t rng = 0x853c49e6748fea9bull;

static uint64_t next_random(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

/* ---- the leak: a chain of contexts, each pointing at its parent ---- */

struct ctx {
    struct ctx *parent;
    size_t len;
    char data[];
};

static struct ctx *chain;
static struct counts leak;

NOINLINE void leak_context_chain(size_t bytes)
{
    size_t done = 0;
    while (done < bytes) {
        size_t len = 64 + next_random() % 2000;
        struct ctx *c = malloc(sizeof *c + len);
        if (c == NULL)
            abort();
        c->parent = chain;
        c->len = len;
        memset(c->data, 'c', len);
        chain = c;
        size_t b = sizeof *c + len;
        done += b;
        leak.inuse += b;
        leak.alloc += b;
    }
}

/* ---- the churn: buffers that live for one step ---- */

static struct counts churn;
static volatile unsigned char sink;

NOINLINE void churn_buffers(size_t bytes)
{
    size_t done = 0;
    while (done < bytes) {
        size_t len = 1024 + next_random() % (256 * 1024);
        unsigned char *buf = malloc(len);
        if (buf == NULL)
            abort();
        buf[0] = 1;
        buf[len - 1] = 2;
        sink = (unsigned char)(buf[0] + buf[len - 1]);
        size_t b = len;
        done += b;
        churn.alloc += b;
        free(buf);
    }
}

/* ---- the bounded cache: a ring of entries, oldest replaced first ---- */

#define CACHE_ENTRIES 64
#define CACHE_ENTRY (1 * MiB)

static void *cache[CACHE_ENTRIES];
static size_t cache_bytes[CACHE_ENTRIES];
static size_t cache_next;
static struct counts cached;

NOINLINE void cache_store(size_t entries)
{
    for (size_t i = 0; i < entries; i++) {
        size_t slot = cache_next++ % CACHE_ENTRIES;
        if (cache[slot] != NULL) {
            free(cache[slot]);
            cached.inuse -= cache_bytes[slot];
        }
        size_t len = CACHE_ENTRY - 4096 + next_random() % 4096;
        char *e = malloc(len);
        if (e == NULL)
            abort();
        memset(e, 'e', len);
        cache[slot] = e;
        cache_bytes[slot] = len;
        cached.inuse += cache_bytes[slot];
        cached.alloc += cache_bytes[slot];
    }
}

static void print_truth(const char *phase)
{
    printf("truth %s leak_context_chain %zu %zu\n", phase, leak.inuse, leak.alloc);
    printf("truth %s churn_buffers %zu %zu\n", phase, churn.inuse, churn.alloc);
    printf("truth %s cache_store %zu %zu\n", phase, cached.inuse, cached.alloc);
    fflush(stdout);
}

static void write_profile(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (sm_write_heap_profile(path) != 0) {
        perror(path);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    cache_store(CACHE_ENTRIES);
    leak_context_chain(48 * MiB);
    churn_buffers(160 * MiB);
    print_truth("a");
    write_profile(argv[1], "a.pb.gz");

    leak_context_chain(160 * MiB);
    churn_buffers(160 * MiB);
    cache_store(CACHE_ENTRIES / 4);
    print_truth("b");
    write_profile(argv[1], "b.pb.gz");
    return 0;
}
