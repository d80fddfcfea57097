/*
 * spanmalloc.h - the public interface of spanmalloc.
 *
 * spanmalloc replaces malloc, free and the rest of the libc allocation API
 * (link with -lspanmalloc, or LD_PRELOAD=libspanmalloc.so).  This header
 * adds what libc does not have: Go-style memory statistics, control over how
 * idle memory goes back to the OS, and a sampling heap profiler whose files
 * open in pprof.  Every function here is safe to call from any thread.
 */
#ifndef SPANMALLOC_H
#define SPANMALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SPANMALLOC_VERSION_MAJOR 0
#define SPANMALLOC_VERSION_MINOR 1
#define SPANMALLOC_VERSION_PATCH 0
#define SPANMALLOC_VERSION "0.1.0"

#if defined(__GNUC__)
#define SM_API __attribute__((visibility("default")))
#else
#define SM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* How idle pages go back to the OS (SPANMALLOC_RELEASE). */
enum sm_release {
    SM_RELEASE_DONTNEED = 0,  /* madvise(MADV_DONTNEED): RSS drops at once */
    SM_RELEASE_FREE = 1,      /* madvise(MADV_FREE): the kernel reclaims the
                                 pages when it needs memory; until then they
                                 stay in RSS (and in LazyFree) */
    SM_RELEASE_NONE = 2       /* keep everything */
};

/* ---- statistics (always on; names and meanings follow Go's runtime.MemStats) */

/* Every scalar field of struct sm_memstats, in order, with its meaning and
 * its Go equivalent.  X(name, go_name, description). */
#define SM_MEMSTATS_FIELDS(X) \
    X(alloc, "Alloc", "bytes in live objects (= heap_alloc)") \
    X(total_alloc, "TotalAlloc", "bytes ever allocated; never decreases") \
    X(sys, "Sys", "bytes obtained from the OS: heap_sys + mspan_sys + mcache_sys + other_sys") \
    X(mallocs, "Mallocs", "objects ever allocated") \
    X(frees, "Frees", "objects ever freed") \
    X(heap_alloc, "HeapAlloc", "bytes in live objects (small objects count their class size, large ones their pages)") \
    X(heap_sys, "HeapSys", "bytes of heap memory obtained from the OS = heap_inuse + heap_idle") \
    X(heap_idle, "HeapIdle", "bytes in free page runs, resident or released") \
    X(heap_inuse, "HeapInuse", "bytes in spans holding objects, or kept by a thread for reuse (cached small objects, freed large spans); heap_inuse - heap_alloc bounds fragmentation and caching") \
    X(heap_released, "HeapReleased", "bytes of idle pages given back to the OS (or never touched)") \
    X(heap_objects, "HeapObjects", "live objects = mallocs - frees") \
    X(mspan_inuse, "MSpanInuse", "bytes of span descriptors in use") \
    X(mspan_sys, "MSpanSys", "bytes obtained from the OS for span descriptors") \
    X(mcache_inuse, "MCacheInuse", "bytes of thread caches in use") \
    X(mcache_sys, "MCacheSys", "bytes obtained from the OS for thread caches") \
    X(other_sys, "OtherSys", "other metadata: the page map, profile buckets") \
    X(rss, "-", "resident bytes of the whole process (kernel's Rss in /proc/self/smaps_rollup)") \
    X(lazy_free, "-", "bytes given back with MADV_FREE that the kernel has not reclaimed yet (LazyFree)") \
    X(released_total, "-", "bytes ever given back to the OS") \
    X(num_release_scavenger, "-", "release calls by the background scavenger") \
    X(num_release_limit, "-", "release calls forced by the memory limit") \
    X(num_release_explicit, "-", "release calls by sm_free_os_memory and malloc_trim") \
    X(num_release_free, "-", "release calls by a large free over the retained target") \
    X(memory_limit, "-", "the soft memory limit in bytes; UINT64_MAX: none (null in JSON, +Inf in Prometheus)") \
    X(rss_live, "-", "RSS breakdown, part 1: bytes in live objects (heap_alloc)") \
    X(rss_span_free, "-", "RSS breakdown, part 2: free room in spans in use (heap_inuse - heap_alloc): objects cached by threads and free objects of partly used spans, span tails, large spans kept by threads") \
    X(rss_idle_dirty, "-", "RSS breakdown, part 3: idle pages still resident (heap_idle - heap_released)") \
    X(rss_lazy_free, "-", "RSS breakdown, part 4: pages given back with MADV_FREE and not reclaimed yet (lazy_free)") \
    X(rss_outside_heap, "-", "RSS breakdown, part 5: resident bytes outside the heap (metadata, code, stacks, other mappings): rss minus parts 1-4; the five parts add up to rss exactly (each part is cut to what rss leaves after the parts before it, so none is negative)")

/* Per size class, like Go's MemStats.BySize. */
struct sm_class_stats {
    uint64_t size;     /* largest object of the class in bytes; 0 for the
                          last entry, which counts large objects (> 32 KiB) */
    uint64_t mallocs;
    uint64_t frees;
};

#define SM_MEMSTATS_NUM_BY_SIZE 70

struct sm_memstats {
#define SM_MEMSTATS_FIELD_(name, go, doc) uint64_t name;
    SM_MEMSTATS_FIELDS(SM_MEMSTATS_FIELD_)
#undef SM_MEMSTATS_FIELD_
    uint32_t num_by_size;  /* entries used in by_size */
    struct sm_class_stats by_size[SM_MEMSTATS_NUM_BY_SIZE];
};

/* A consistent snapshot: with no other thread allocating, heap_inuse +
 * heap_idle == heap_sys, heap_released <= heap_idle, heap_alloc <=
 * heap_inuse, heap_objects == mallocs - frees, sys is the sum of the *_sys
 * fields.  While threads run, no field is negative and the cumulative
 * counters never go backwards between two reads.  Reads rss and lazy_free
 * from the kernel (a few microseconds). */
SM_API void sm_read_memstats(struct sm_memstats *out);

/* Human text: the fields in KiB/MiB and a table of the classes in use. */
SM_API void sm_print_memstats(FILE *out);

/* The same as one JSON object (for log pipelines), newline-terminated. */
SM_API void sm_print_memstats_json(FILE *out);

/* ---- giving memory back ------------------------------------------------ */

/* Return every idle page of the heap to the OS now, like Go's
 * debug.FreeOSMemory: this thread's cache is flushed, fully free spans of
 * the central lists go back to the heap, and the heap's idle pages are
 * released with the current policy.  Other threads flush their caches at
 * their next slow path.  Returns the bytes released (0 with
 * SM_RELEASE_NONE). */
SM_API size_t sm_free_os_memory(void);

/* Choose how idle pages go back (SPANMALLOC_RELEASE sets the default).
 * Returns the previous policy, or -1 (errno EINVAL) for a bad value. */
SM_API int sm_set_release_policy(enum sm_release policy);

/* Soft memory limit in bytes, like GOMEMLIMIT: when the heap would grow
 * past it, idle pages are released first.  An allocation never fails
 * because of it.  SIZE_MAX: no limit.  Returns the previous limit. */
SM_API size_t sm_set_memory_limit(size_t bytes);

/* ---- heap profiles ------------------------------------------------------ */

/* Mean bytes allocated between two samples of the heap profiler, like Go's
 * runtime.MemProfileRate (SPANMALLOC_PROFILE_RATE sets the default,
 * 524288).  0 turns sampling off; 1 samples every allocation.  The calling
 * thread uses the new rate at once, every other thread from its next
 * sample.  Objects sampled before stay in the profile until freed.  Returns
 * the previous rate. */
SM_API size_t sm_set_profile_rate(size_t bytes);

/* Write a heap profile of the samples so far to path: pprof's
 * profile.proto, gzipped, with the sample types alloc_objects,
 * alloc_space, inuse_objects and inuse_space scaled for the sampling as Go
 * does, and the process's mappings, so `go tool pprof path` opens and
 * symbolizes it.  Prints one line on stderr saying where it went.  Returns
 * 0, or -1 with errno set (open's or write's error, or ENOMEM; ENOTSUP,
 * with a line on stderr, when spanmalloc does not serve malloc: see
 * sm_active).  Calls no malloc (but for sm_active's first answer), so it
 * may run in a fork child. */
SM_API int sm_write_heap_profile(const char *path);

/* 1 if spanmalloc serves this process's malloc, 0 if another allocator
 * does (one preloaded or linked before it): then every sm_* statistic is
 * about an empty heap and sm_write_heap_profile fails.  The first call
 * makes one malloc and free through the process's malloc to find out. */
SM_API int sm_active(void);

/* The version of the library actually loaded, as "major.minor.patch". */
SM_API const char *sm_version(void);

#ifdef __cplusplus
}
#endif

#endif
