/*
 * mprof.h - the heap profiler's private structures, shared with its unit
 * test.  The hooks the allocator calls are in internal.h; the design is at
 * the top of mprof.c.
 */
#ifndef SM_MPROF_H
#define SM_MPROF_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "profproto.h"
#include "stack.h"

struct sm_mprof_bucket;

/* A sampled object that is still live, on its span's list (mspan.specials,
 * sorted by address, as Go's mspan.specials): its free finds the bucket to
 * charge here, with no hash look-up.  One list per span, guarded by the
 * profiler's lock in mprof.c. */
struct sm_special {
    struct sm_special *next;           /* next object of the span, higher address */
    uintptr_t addr;                    /* the object */
    struct sm_mprof_bucket *bucket;    /* where it was counted */
    size_t size;                       /* bytes it asked for */
};

/* Every bucket as a profile record, copied under the profiler's lock: the
 * stacks point into the buckets, which are never freed.  *recs comes from
 * the OS layer (free it with sm_mprof_snapshot_free); 0, or -1 with errno
 * ENOMEM. */
SM_HIDDEN int sm_mprof_snapshot(struct sm_prof_record **recs, size_t *nrecs);
SM_HIDDEN void sm_mprof_snapshot_free(struct sm_prof_record *recs, size_t nrecs);

/* The rate the samples were taken at, as the file's period: the current
 * rate, or the last one that was not 0. */
SM_HIDDEN size_t sm_mprof_period(void);

/* Write the profile to prefix.<pid>.<n>.heap.pb.gz (n from 1, counting the
 * signal and interval writes of this process) or, at exit (n == 0),
 * prefix.<pid>.heap.pb.gz.  The prefix is SPANMALLOC_PROFILE, "spanmalloc"
 * when unset.  Returns as sm_write_heap_profile. */
SM_HIDDEN int sm_mprof_write_named(uint64_t n);

/* Write the profile to fd (for the HTTP endpoint) with default_type as
 * its default sample type; no message on stderr.  0, or -1 with errno. */
SM_HIDDEN int sm_mprof_write_fd(int fd, const char *default_type);

#endif
