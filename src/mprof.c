/*
 * mprof.c - the sampling heap profiler: when to sample.
 *
 * Each thread cache counts bytes down to its next sample (sample_left; the
 * fast path pays one subtraction and shares its one test with the empty
 * list check).  The distance between samples is drawn from an exponential
 * distribution with mean SPANMALLOC_PROFILE_RATE, as Go's
 * runtime.MemProfileRate does, so objects of every size are sampled
 * without bias (a Poisson process over allocated bytes).
 */
#include <math.h>

#include "internal.h"

static size_t profile_rate;

static uint64_t next_random(struct sm_mcache *c)
{
    /* xorshift64*: cheap and good enough for sampling gaps. */
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

intptr_t sm_mprof_next_sample(struct sm_mcache *c)
{
    size_t rate = __atomic_load_n(&profile_rate, __ATOMIC_RELAXED);
    if (rate == 0)
        return INTPTR_MAX;
    if (rate == 1)
        return 0;
    /* u in (0, 1]; -ln(u) * rate, capped at 20 means as Go does. */
    double u = ((double)(next_random(c) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double d = -log(u) * (double)rate;
    if (d > 20.0 * (double)rate)
        d = 20.0 * (double)rate;
    return (intptr_t)d;
}

void sm_mprof_init(void)
{
    __atomic_store_n(&profile_rate, sm_opts.profile_rate, __ATOMIC_RELAXED);
}

void sm_mprof_record_alloc(void *p, size_t size) { (void)p; (void)size; }
void sm_mprof_record_free(void *p, struct sm_mspan *s) { (void)p; (void)s; }
uint64_t sm_mprof_sys(void) { return 0; }
bool sm_mprof_wants_worker(void) { return false; }
void sm_mprof_tick(uint64_t now) { (void)now; }
void sm_mprof_at_exit(void) {}
void sm_mprof_fork_prepare(void) {}
void sm_mprof_fork_parent(void) {}
void sm_mprof_fork_child(void) {}
