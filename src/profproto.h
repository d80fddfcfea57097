/*
 * profproto.h - write a heap profile in pprof's profile.proto format.
 *
 * See profproto.c for the format and why it never calls malloc.
 */
#ifndef SM_PROFPROTO_H
#define SM_PROFPROTO_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

/* One bucket of the heap profile: a call stack and what was sampled at it. */
struct sm_prof_record {
    uint64_t alloc_objects, alloc_bytes;   /* sampled counts, unscaled */
    uint64_t free_objects, free_bytes;     /* sampled frees of those objects */
    int nstack;                            /* number of PCs, leaf first */
    const uintptr_t *stack;                /* return addresses, leaf first, as
                                            * sm_stack_capture returns them */
};

/* Write a gzipped profile.proto to fd.  rate = mean sampling bytes (0 or 1
 * means every allocation; no scaling).  time_nanos = wall clock of the
 * snapshot.  Returns 0, or -1 with errno (ENOMEM if the OS layer gave no
 * memory, the error of write(2), EIO if zlib failed).  Calls no malloc. */
int sm_profproto_write(int fd, const struct sm_prof_record *recs, size_t nrecs,
                       uint64_t rate, int64_t time_nanos);

/* The same with another default sample type: "alloc_space" for the
 * allocs profile, as Go's /debug/pprof/allocs sets it. */
int sm_profproto_write_typed(int fd, const struct sm_prof_record *recs, size_t nrecs,
                             uint64_t rate, int64_t time_nanos, const char *default_type);

/* Find zlib now if it has not been looked for (the shared library opens
 * libz.so.1 on first use; see profproto.c): call from an ordinary thread
 * before profiles are written.  sm_profproto_have_zlib says whether it was
 * found; without it profiles are gzip files of stored blocks. */
void sm_profproto_prepare(void);
bool sm_profproto_have_zlib(void);

/* n bytes at p as a gzip file of stored (uncompressed) deflate blocks, to
 * fd: 0, or -1 with errno.  Exposed for the unit test. */
int sm_profproto_gzip_stored(int fd, const uint8_t *p, size_t n);

/* Go's runtime/pprof scaleHeapSample: the estimated number of objects and
 * bytes allocated, given count objects of size bytes in all were sampled at
 * a mean of one sample per rate bytes.  Exposed for the unit test. */
void sm_profproto_scale(uint64_t count, uint64_t size, uint64_t rate,
                        int64_t *count_out, int64_t *size_out);

#endif
