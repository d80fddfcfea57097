/*
 * stack.h - capture the caller's call stack for the heap profiler.
 *
 * See stack.c for the unwinder used, what its first use costs, and when it
 * falls back to libgcc's.
 */
#ifndef SM_STACK_H
#define SM_STACK_H

#include <stddef.h>
#include <stdint.h>

/* Most frames the profiler records per sample. */
#define SM_STACK_MAX 64

/* Note the code of the objects loaded now: call once at start-up, before
 * the program can have called dlopen.  That code is never unloaded, so
 * walks through it alone skip the check for unloaded code. */
void sm_stack_boot(void);

/* Set the unwinder up: call once when profiling starts, with no allocator
 * lock held, so any lazy initialisation happens then and not in a sample.
 * Captures before it still work, through libgcc alone. */
void sm_stack_init(void);

/* Store up to max return addresses of the calling thread's stack in pcs,
 * leaf first, and return how many.  pcs[0] is the return address into the
 * caller of sm_stack_capture unless skip > 0, in which case the skip
 * innermost frames (physical frames: inlined functions have none) are left
 * out.  Must be called with no allocator lock held. */
int sm_stack_capture(uintptr_t *pcs, int max, int skip);

/* sm_stack_capture, and *id: nonzero when the frames are those of the
 * thread's last capture with the same max and skip that gave the same
 * nonzero *id (the walk followed its memo of that capture step by step),
 * else 0 or a new id.  Two captures on one thread that give the same
 * nonzero id returned the same frames.  known: an id the caller has the
 * frames of (0: none); when *id comes out equal to it, pcs is not
 * written (the frames are the ones the caller has). */
int sm_stack_capture_id(uintptr_t *pcs, int max, int skip, uint64_t known, uint64_t *id);

/* The same through libgcc's _Unwind_Backtrace alone: the reference the
 * cached walk must agree with, and its fallback. */
int sm_stack_capture_unwind(uintptr_t *pcs, int max, int skip);

/* The calling thread was started by pthread_create: note where its start
 * routine returns to (__builtin_return_address(0) in the start routine),
 * so that stacks end there, as they end at the frame that called main. */
void sm_stack_note_thread_root(uintptr_t ra);

/* Bytes of OS memory the unwinder holds (its rule cache). */
size_t sm_stack_sys(void);

/* ---- for tests ---- */

/* How to find a frame's caller from the frame's CFA rule, reduced to the
 * forms the cached walk follows. */
enum {
    SM_FRAME_SIMPLE = 1,   /* CFA = rsp or rbp + cfa_off, return address at
                            * CFA - 8, rbp at CFA - rbp_at or unchanged (0) */
    SM_FRAME_END = 2,      /* the return address is undefined: outermost */
    SM_FRAME_COMPLEX = 3,  /* anything else: libgcc walks the stack */
};
struct sm_frame_rule {
    uint8_t kind;
    uint8_t cfa_rbp;       /* CFA from rbp, not rsp */
    uint32_t cfa_off;
    uint32_t rbp_at;
};

/* The rule at code address pc (a return address minus one), computed from
 * its FDE without the cache; SM_FRAME_END if pc is in a loaded object whose
 * unwind table has no FDE for it (libgcc ends the stack there too); -1 if
 * pc is in no loaded object and libgcc knows no FDE for it. */
int sm_stack_rule(uintptr_t pc, struct sm_frame_rule *r);

/* Nonzero if the return address ra is where stacks end: into the frame
 * that called main, or a thread's start routine (see stack.c). */
int sm_stack_is_root(uintptr_t ra);

/* Put a rule for pc in the cache, right or wrong (a test of the walk's
 * checks); dropped if it cannot be cached. */
void sm_stack_cache_set(uintptr_t pc, const struct sm_frame_rule *r);

/* Captures by the cached walk (exact on one thread; captures at the same
 * moment on several may count as one) and by libgcc, rules computed,
 * checks for unloaded code, and cache flushes after a library was
 * unloaded. */
struct sm_stack_counters {
    uint64_t fast;
    uint64_t fallback;
    uint64_t rule_misses;
    uint64_t unload_checks;
    uint64_t flushes;
};
void sm_stack_counters(struct sm_stack_counters *out);

#endif
