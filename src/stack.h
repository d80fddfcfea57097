/*
 * stack.h - capture the caller's call stack for the heap profiler.
 *
 * See stack.c for the unwinder used and what its first use costs.
 */
#ifndef SM_STACK_H
#define SM_STACK_H

#include <stdint.h>

/* Most frames the profiler records per sample. */
#define SM_STACK_MAX 64

/* Warm up the unwinder: call once when profiling starts, with no allocator
 * lock held, so any lazy initialisation happens then and not in a sample. */
void sm_stack_init(void);

/* Store up to max return addresses of the calling thread's stack in pcs,
 * leaf first, and return how many.  pcs[0] is the return address into the
 * caller of sm_stack_capture unless skip > 0, in which case the skip
 * innermost frames (physical frames: inlined functions have none) are left
 * out.  Must be called with no allocator lock held. */
int sm_stack_capture(uintptr_t *pcs, int max, int skip);

#endif
