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

/* The version of the library actually loaded, as "major.minor.patch". */
SM_API const char *sm_version(void);

#ifdef __cplusplus
}
#endif

#endif
