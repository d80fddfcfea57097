/*
 * test_stack.c - the cached unwinder (stack.c) against libgcc's
 * _Unwind_Backtrace: from the same frame, both captures must give the same
 * return addresses, frame for frame, to the end of the stack.
 *
 *   rules     the rule computed from the FDE of a frame-pointer function
 *             (CFA = rbp + 16, rbp saved at CFA - 16), of functions without
 *             one (CFA from rsp; from rbp with a variable-length array), of
 *             large frames, and of _start (the end of the stack).
 *   shapes    recursion 100 deep, frame pointers and none alternating,
 *             alloca and variable-length arrays, frames of 64 KiB and
 *             1.5 MiB (too big for the cache: computed every time), C++
 *             (a template, std::function, a try block with a handler, a
 *             virtual call, after an exception was thrown and caught), a
 *             shared library loaded with dlopen, on another thread; every
 *             one by the cached walk, with no fallback; skip and max.
 *   fallback  a signal handler (the signal frame's rule is an expression)
 *             and one on an alternate signal stack: libgcc walks them, and
 *             the result is the same.
 *   unload    walks through code loaded at run time check for unloaded
 *             code, also when they fall back (walks through start-up code
 *             alone do not); after dlclose the next such walk empties the
 *             cache and falls back, even where a stale rule sent it to
 *             libgcc.
 *   bad rule  a rule planted in the cache that points off the stack makes
 *             the walk give up and fall back, with the right stack; one
 *             that ends the stack early shortens it, and nothing crashes.
 *   memo      the thread's last walk: the same stack again gives the same
 *             frames and id, a stack that differs deeper down does not.
 *   threads   two threads capturing many shapes at once agree with libgcc
 *             every time (cache slots are written whole).
 *
 * The shapes are in stack_shapes_fp.c (-fno-omit-frame-pointer),
 * stack_shapes_nofp.c and stack_shapes.cc (-fomit-frame-pointer) and
 * stack_shlib.c (a shared library, STACK_SHLIB).  Links stack.c with
 * os_fake.c, dynamically, so the objects have their own .eh_frame.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "stack.h"
#include "stack_shapes.h"

#define NPCS 512

struct stack_pair {
    int max, skip;
    int nfast, nref;
    uintptr_t fast[NPCS];
    uintptr_t ref[NPCS];
};

/* The id of the last cached walk through sm_stack_capture_id, when
 * use_id is set; pass_known: that id is passed as the one whose frames
 * the caller has. */
static __thread bool use_id, pass_known;
static __thread uint64_t last_id;

FRAME static int capture_one(int fast, uintptr_t *pcs, int max, int skip)
{
    int n;
    if (fast && use_id)
        n = sm_stack_capture_id(pcs, max, skip, pass_known ? last_id : 0, &last_id);
    else
        n = fast ? sm_stack_capture(pcs, max, skip) : sm_stack_capture_unwind(pcs, max, skip);
    KEEP_FRAME(n);
    return n;
}

/* Both captures leave out capture_one and this function, so pcs[0] is the
 * return address into the shape that called stack_leaf. */
FRAME int stack_leaf(struct stack_pair *p)
{
    p->nfast = capture_one(1, p->fast, p->max, p->skip + 2);
    KEEP_FRAME(p);
    p->nref = capture_one(0, p->ref, p->max, p->skip + 2);
    KEEP_FRAME(p);
    return p->nfast;
}

static const char *frame_name(uintptr_t pc)
{
    Dl_info info;
    if (dladdr((void *)(pc - 1), &info) == 0)
        return "?";
    return info.dli_sname ? info.dli_sname : info.dli_fname;
}

static bool same(const struct stack_pair *p)
{
    return p->nfast == p->nref &&
           memcmp(p->fast, p->ref, (size_t)p->nref * sizeof p->ref[0]) == 0;
}

static void print_pair(const char *what, const struct stack_pair *p)
{
    print_message("# %s: cached walk %d frames, libgcc %d\n", what, p->nfast, p->nref);
    int n = p->nfast > p->nref ? p->nfast : p->nref;
    for (int i = 0; i < n; i++) {
        uintptr_t a = i < p->nfast ? p->fast[i] : 0, b = i < p->nref ? p->ref[i] : 0;
        print_message("#  %3d %c %#14lx %#14lx %s\n", i, a == b ? ' ' : '!',
                      (unsigned long)a, (unsigned long)b, frame_name(b ? b : a));
    }
}

static void pair_init(struct stack_pair *p, int max, int skip)
{
    memset(p, 0, sizeof *p);
    p->max = max;
    p->skip = skip;
}

static struct sm_stack_counters counters(void)
{
    struct sm_stack_counters c;
    sm_stack_counters(&c);
    return c;
}

/* ---- the shapes, as a table ------------------------------------------------- */

struct shape_case {
    const char *name;
    int (*run)(struct stack_pair *p);
    int min_frames;   /* at least this many frames above main's */
    bool big;         /* needs more than 1.5 MiB of stack */
};

static int run_recurse_0(struct stack_pair *p) { return nofp_recurse(0, p); }
static int run_recurse_100(struct stack_pair *p) { return nofp_recurse(100, p); }
static int run_fp_chain(struct stack_pair *p) { return fp_chain(9, p); }
static int run_nofp_chain(struct stack_pair *p) { return nofp_chain(20, p); }
static int run_alloca_small(struct stack_pair *p) { return fp_alloca(100, p); }
static int run_alloca_large(struct stack_pair *p) { return fp_alloca(50000, p); }
static int run_vla_small(struct stack_pair *p) { return nofp_vla(33, p); }
static int run_vla_large(struct stack_pair *p) { return nofp_vla(10000, p); }
static int run_big_frame(struct stack_pair *p) { return nofp_big_frame(p); }
static int run_huge_frame(struct stack_pair *p) { return nofp_huge_frame(p); }
static int run_leaf_offset(struct stack_pair *p) { return nofp_leaf_offset(p); }
static int run_cxx_template(struct stack_pair *p) { return cxx_shape(0, p); }
static int run_cxx_lambda(struct stack_pair *p) { return cxx_shape(1, p); }
static int run_cxx_try(struct stack_pair *p) { return cxx_shape(2, p); }
static int run_cxx_virtual(struct stack_pair *p) { return cxx_shape(3, p); }
static int run_cxx_after_catch(struct stack_pair *p) { return cxx_shape(4, p); }

static const struct shape_case shapes[] = {
    { "recursion, depth 0", run_recurse_0, 1, false },
    { "recursion, depth 100", run_recurse_100, 101, false },
    { "frame pointers first, alternating", run_fp_chain, 10, false },
    { "no frame pointers first, alternating", run_nofp_chain, 21, false },
    { "alloca, 100 bytes", run_alloca_small, 1, false },
    { "alloca, 50000 bytes", run_alloca_large, 1, false },
    { "variable-length array, 33 bytes", run_vla_small, 1, false },
    { "variable-length array, 10000 bytes", run_vla_large, 1, false },
    { "64 KiB frame", run_big_frame, 1, false },
    { "1.5 MiB frame", run_huge_frame, 1, true },
    { "rsp-based leaf frame", run_leaf_offset, 1, false },
    { "C++ template", run_cxx_template, 5, false },
    { "C++ std::function", run_cxx_lambda, 3, false },
    { "C++ try block", run_cxx_try, 2, false },
    { "C++ virtual call", run_cxx_virtual, 2, false },
    { "C++ after a caught exception", run_cxx_after_catch, 3, false },
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

enum {
    SHAPES_VERBOSE = 1,   /* print the stacks of a shape that fails */
    SHAPES_COUNTS = 2,    /* and check the counters (one thread only) */
    SHAPES_SMALL = 4,     /* leave out the shapes that need a big stack */
};

/* Run every shape with max and skip; each must match libgcc, and with
 * SHAPES_COUNTS by the cached walk alone.  Returns the shapes that did
 * not. */
static int check_shapes(int max, int skip, int flags)
{
    static __thread struct stack_pair p;
    int bad = 0;
    for (size_t i = 0; i < NSHAPES; i++) {
        if ((flags & SHAPES_SMALL) && shapes[i].big)
            continue;
        struct sm_stack_counters c0 = counters();
        pair_init(&p, max, skip);
        shapes[i].run(&p);
        struct sm_stack_counters c1 = counters();
        bool ok = same(&p);
        if (flags & SHAPES_COUNTS)
            ok = ok && c1.fallback == c0.fallback && c1.fast == c0.fast + 1;
        if (skip == 0 && max == NPCS)
            ok = ok && p.nref >= shapes[i].min_frames + 1;
        if (!ok) {
            bad++;
            if (flags & SHAPES_VERBOSE) {
                print_message("# shape '%s' (max %d skip %d): fallbacks %lu\n", shapes[i].name,
                              max, skip, (unsigned long)(c1.fallback - c0.fallback));
                print_pair(shapes[i].name, &p);
            }
        }
    }
    return bad;
}

static void test_shapes(void **state)
{
    (void)state;
    const int flags = SHAPES_VERBOSE | SHAPES_COUNTS;
    assert_int_equal(check_shapes(NPCS, 0, flags), 0);
    /* Again, now from the cache: the 1.5 MiB frame's rule is too big to
     * cache; the rest are there (a few may have lost their slot). */
    struct sm_stack_counters c0 = counters();
    assert_int_equal(check_shapes(NPCS, 0, flags), 0);
    struct sm_stack_counters c1 = counters();
    assert_true(c1.rule_misses - c0.rule_misses >= 1);
    assert_true(c1.rule_misses - c0.rule_misses <= 6);
}

static void test_skip_and_max(void **state)
{
    (void)state;
    static const int cases[][2] = {
        { 1, 0 }, { 2, 0 }, { 5, 0 }, { 5, 3 }, { 64, 10 }, { NPCS, 1 }, { NPCS, 40 },
        { 3, 99 }, { 200, 100 }, { NPCS, 1000 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(check_shapes(cases[i][0], cases[i][1], SHAPES_VERBOSE | SHAPES_COUNTS), 0);

    static struct stack_pair p;
    pair_init(&p, NPCS, 1000);
    nofp_recurse(10, &p);
    assert_int_equal(p.nfast, 0);
    assert_int_equal(p.nref, 0);
    pair_init(&p, 7, 0);
    nofp_recurse(10, &p);
    assert_int_equal(p.nfast, 7);
    assert_true(same(&p));
    assert_int_equal(sm_stack_capture(p.fast, 0, 0), 0);
}

/* The thread's last walk: the same stack again is the same frames with the
 * same id (not copied when the caller says it has them); a stack that differs only deeper down (same leaf, same call
 * into the capture) is walked anew; frame-pointer code and stacks deeper
 * than the memo get no id; a rule put in the cache retires the memo. */
static void test_memo(void **state)
{
    (void)state;
    static struct stack_pair p;
    use_id = true;
    /* One call site, so each capture's stack is the same. */
    static volatile int times = 4;
    uint64_t id3 = 0;
    for (int i = 0; i <= times; i++) {
        /* The last time, told that the caller has the frames of id3, the
         * capture of them writes none. */
        pass_known = i == times;
        pair_init(&p, NPCS, 0);
        if (pass_known)
            memset(p.fast, 0xa5, sizeof p.fast);
        nofp_recurse(3, &p);
        assert_true(last_id != 0);
        if (i == 0)
            id3 = last_id;
        assert_true(last_id == id3);
        if (!pass_known) {
            assert_true(same(&p));
            continue;
        }
        assert_true(p.nfast == p.nref && p.nfast > 3);
        for (int j = 0; j < NPCS; j++)
            assert_true(p.fast[j] == (uintptr_t)0xa5a5a5a5a5a5a5a5ull);
    }
    /* Of another stack, it writes them all. */
    pair_init(&p, NPCS, 0);
    nofp_recurse(4, &p);
    assert_true(same(&p));
    pass_known = false;
    uint64_t id4 = last_id;
    assert_true(id4 != 0 && id4 != id3);
    /* Another max or skip is another capture. */
    pair_init(&p, 5, 0);
    nofp_recurse(4, &p);
    assert_true(same(&p));
    assert_true(last_id != id4);
    pair_init(&p, NPCS, 0);
    nofp_recurse(3, &p);
    assert_true(same(&p));
    assert_true(last_id != id3);
    id3 = last_id;
    /* Frame pointers (CFA from rbp): walked each time, no id. */
    pair_init(&p, NPCS, 0);
    fp_chain(3, &p);
    assert_true(same(&p));
    assert_true(last_id == 0);
    /* Deeper than the memo holds. */
    pair_init(&p, NPCS, 0);
    nofp_recurse(100, &p);
    assert_true(same(&p));
    assert_true(last_id == 0);
    /* A rule put in the cache retires every memo. */
    pair_init(&p, NPCS, 0);
    nofp_recurse(3, &p);
    id3 = last_id;
    assert_true(id3 != 0);
    struct sm_frame_rule r;
    assert_int_equal(sm_stack_rule(p.ref[0] - 1, &r), 0);
    sm_stack_cache_set(p.ref[0] - 1, &r);
    pair_init(&p, NPCS, 0);
    nofp_recurse(3, &p);
    assert_true(same(&p));
    assert_true(last_id != id3 && last_id != 0);
    use_id = false;
}

/* ---- rules ------------------------------------------------------------------ */

static void rule_of_leaf(int (*run)(struct stack_pair *), struct sm_frame_rule *r)
{
    static struct stack_pair p;
    pair_init(&p, NPCS, 0);
    run(&p);
    assert_true(p.nref > 0);
    assert_int_equal(sm_stack_rule(p.ref[0] - 1, r), 0);
}

static int run_fp_leaf(struct stack_pair *p) { return fp_chain(0, p); }

static void test_rules(void **state)
{
    (void)state;
    struct sm_frame_rule r;

    /* push %rbp; mov %rsp,%rbp: CFA = rbp + 16, the caller's rbp at CFA - 16. */
    rule_of_leaf(run_fp_leaf, &r);
    assert_int_equal(r.kind, SM_FRAME_SIMPLE);
    assert_int_equal(r.cfa_rbp, 1);
    assert_int_equal(r.cfa_off, 16);
    assert_int_equal(r.rbp_at, 16);

    rule_of_leaf(run_recurse_0, &r);
    assert_int_equal(r.kind, SM_FRAME_SIMPLE);
    assert_int_equal(r.cfa_rbp, 0);
    assert_true(r.cfa_off >= 8 && r.cfa_off < 256);

    rule_of_leaf(run_vla_small, &r);
    assert_int_equal(r.kind, SM_FRAME_SIMPLE);
    assert_int_equal(r.cfa_rbp, 1);
    assert_int_equal(r.cfa_off, 16);

    rule_of_leaf(run_leaf_offset, &r);
    assert_int_equal(r.kind, SM_FRAME_SIMPLE);
    assert_int_equal(r.cfa_rbp, 0);
    assert_true(r.cfa_off >= 37 * sizeof(int));

    rule_of_leaf(run_big_frame, &r);
    assert_int_equal(r.kind, SM_FRAME_SIMPLE);
    assert_int_equal(r.cfa_rbp, 0);
    assert_true(r.cfa_off > 64 * 1024);

    rule_of_leaf(run_huge_frame, &r);
    assert_int_equal(r.kind, SM_FRAME_SIMPLE);
    assert_true(r.cfa_off > 1536 * 1024);

    /* The outermost frame recorded, main's caller in the C library, ends
     * the stack (sm_stack_is_root; test_roots). */
    static struct stack_pair p;
    pair_init(&p, NPCS, 0);
    nofp_recurse(0, &p);
    assert_int_equal(sm_stack_rule(p.ref[p.nref - 1] - 1, &r), 0);
    assert_int_equal(r.kind, SM_FRAME_END);

    /* No FDE in a loaded object (its read-only data here, start-up code
     * in assembly in a program): libgcc reports that frame and stops, and
     * so does the rule. */
    static const char data[64];
    assert_int_equal(sm_stack_rule((uintptr_t)data + 8, &r), 0);
    assert_int_equal(r.kind, SM_FRAME_END);

    /* In no object at all (code made at run time and not registered): no
     * rule, the walk goes to libgcc. */
    char *anon = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(anon != MAP_FAILED);
    assert_int_equal(sm_stack_rule((uintptr_t)anon + 8, &r), -1);
    munmap(anon, 4096);
}

/* ---- a shared library, and unloading it -------------------------------------- */

static void test_shared_library(void **state)
{
    (void)state;
    static struct stack_pair p;

    void *h = dlopen(STACK_SHLIB, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        fail_msg("dlopen %s: %s", STACK_SHLIB, dlerror());
    shlib_chain_fn chain = (shlib_chain_fn)dlsym(h, "shlib_chain");
    assert_non_null(chain);

    /* Through code loaded at run time: one check for unloaded code. */
    for (int i = 0; i < 2; i++) {
        struct sm_stack_counters c0 = counters();
        pair_init(&p, NPCS, 0);
        chain(6, stack_leaf, &p);
        struct sm_stack_counters c1 = counters();
        if (!same(&p))
            print_pair("shared library", &p);
        assert_true(same(&p));
        assert_int_equal(c1.fallback, c0.fallback);
        assert_int_equal(c1.unload_checks, c0.unload_checks + 1);
        assert_int_equal(c1.flushes, c0.flushes);
    }
    /* pcs[0] returns into the library. */
    Dl_info info;
    assert_true(dladdr((void *)(p.ref[0] - 1), &info) != 0);
    assert_non_null(strstr(info.dli_fname, "libstackshape"));

    /* Through code loaded at start-up only: no check. */
    struct sm_stack_counters c0 = counters();
    pair_init(&p, NPCS, 0);
    nofp_recurse(2, &p);
    struct sm_stack_counters c1 = counters();
    assert_true(same(&p));
    assert_int_equal(c1.unload_checks, c0.unload_checks);

    /* A rule for the library that libgcc must follow: every walk through
     * it falls back, and checks for unloaded code. */
    pair_init(&p, NPCS, 0);
    chain(6, stack_leaf, &p);
    struct sm_frame_rule complex_rule = { SM_FRAME_COMPLEX, 0, 0, 0 };
    sm_stack_cache_set(p.ref[0] - 1, &complex_rule);
    c0 = counters();
    pair_init(&p, NPCS, 0);
    chain(6, stack_leaf, &p);
    c1 = counters();
    assert_true(same(&p));
    assert_int_equal(c1.fallback, c0.fallback + 1);
    assert_int_equal(c1.unload_checks, c0.unload_checks + 1);

    /* Unloaded and loaded again (perhaps elsewhere, perhaps at the same
     * address, where the rule above would now be stale): the first walk
     * through it finds the cache out of date, empties it and lets libgcc
     * walk; the next is the cached walk's. */
    assert_int_equal(dlclose(h), 0);
    h = dlopen(STACK_SHLIB, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(h);
    chain = (shlib_chain_fn)dlsym(h, "shlib_chain");
    c0 = counters();
    pair_init(&p, NPCS, 0);
    chain(3, stack_leaf, &p);
    c1 = counters();
    assert_true(same(&p));
    assert_int_equal(c1.flushes, c0.flushes + 1);
    assert_int_equal(c1.fallback, c0.fallback + 1);
    pair_init(&p, NPCS, 0);
    chain(4, stack_leaf, &p);
    struct sm_stack_counters c2 = counters();
    assert_true(same(&p));
    assert_int_equal(c2.flushes, c1.flushes);
    assert_int_equal(c2.fallback, c1.fallback);
    assert_int_equal(dlclose(h), 0);
}

/* ---- another thread ----------------------------------------------------------- */

static void *shapes_on_thread(void *arg)
{
    int flags = SHAPES_VERBOSE | SHAPES_COUNTS | (int)(intptr_t)arg;
    return (void *)(intptr_t)check_shapes(NPCS, 0, flags);
}

static void test_other_thread(void **state)
{
    (void)state;
    pthread_t th;
    void *bad;
    assert_int_equal(pthread_create(&th, NULL, shapes_on_thread, NULL), 0);
    assert_int_equal(pthread_join(th, &bad), 0);
    assert_int_equal((intptr_t)bad, 0);

    /* A stack of the caller's own (glibc puts the thread descriptor at its
     * top too); big enough for ThreadSanitizer, too small for the 1.5 MiB
     * frame. */
    pthread_attr_t attr;
    static char stackmem[2048 * 1024] __attribute__((aligned(64)));
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstack(&attr, stackmem, sizeof stackmem), 0);
    assert_int_equal(pthread_create(&th, &attr, shapes_on_thread, (void *)(intptr_t)SHAPES_SMALL), 0);
    assert_int_equal(pthread_join(th, &bad), 0);
    assert_int_equal((intptr_t)bad, 0);
    pthread_attr_destroy(&attr);
}

/* ---- where stacks end -------------------------------------------------------- */

static bool in_file(uintptr_t pc, const char *part)
{
    Dl_info info;
    return dladdr((void *)(pc - 1), &info) != 0 && info.dli_fname != NULL &&
           strstr(info.dli_fname, part) != NULL;
}

static struct stack_pair root_pair;
static uintptr_t noted_root;

static void *capture_as_thread_root(void *arg)
{
    (void)arg;
    noted_root = (uintptr_t)__builtin_return_address(0);
    sm_stack_note_thread_root(noted_root);
    pair_init(&root_pair, NPCS, 0);
    nofp_recurse(3, &root_pair);
    return NULL;
}

/* A stack ends at the frame that called main (in the C library's
 * start-up), not at _start two frames further, and a thread's at
 * start_thread once the return address into it is noted. */
static void test_roots(void **state)
{
    (void)state;
    static struct stack_pair p;
    pair_init(&p, NPCS, 0);
    nofp_recurse(3, &p);
    assert_true(same(&p));
    assert_true(p.nfast >= 3);
    uintptr_t last = p.fast[p.nfast - 1];
    assert_true(sm_stack_is_root(last));
    assert_true(in_file(last, "libc.so"));
    /* The frame above it is main's, in this program. */
    assert_false(in_file(p.fast[p.nfast - 2], "libc.so"));
    assert_false(sm_stack_is_root(p.fast[p.nfast - 2]));
    struct sm_frame_rule r;
    assert_int_equal(sm_stack_rule(last - 1, &r), 0);
    assert_int_equal(r.kind, SM_FRAME_END);

    /* A thread that notes where it returns to: its stack ends there. */
    sm_stack_note_thread_root(0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, capture_as_thread_root, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(same(&root_pair));
    int n = root_pair.nfast;
    assert_true(n >= 2);
    assert_int_equal(root_pair.fast[n - 1], noted_root);
    assert_true(in_file(noted_root, "libc.so"));
    /* Every thread pthread_create starts returns to the same place. */
    static uintptr_t first_root;
    first_root = noted_root;
    assert_int_equal(pthread_create(&th, NULL, capture_as_thread_root, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(noted_root, first_root);
    assert_true(same(&root_pair));
    assert_int_equal(root_pair.nfast, n);
    sm_stack_note_thread_root(0);
}

/* ---- signal handlers: libgcc's part --------------------------------------------- */

static struct stack_pair sig_pair;

static void on_signal(int sig)
{
    (void)sig;
    nofp_recurse(3, &sig_pair);
}

static void signal_case(bool altstack)
{
    static char altmem[64 * 1024] __attribute__((aligned(16)));
    struct sigaction sa, old;
    stack_t ss, oldss;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (altstack) {
        ss.ss_sp = altmem;
        ss.ss_size = sizeof altmem;
        ss.ss_flags = 0;
        assert_int_equal(sigaltstack(&ss, &oldss), 0);
        sa.sa_flags = SA_ONSTACK;
    }
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
    pair_init(&sig_pair, NPCS, 0);
    struct sm_stack_counters c0 = counters();
    raise(SIGUSR1);
    struct sm_stack_counters c1 = counters();
    sigaction(SIGUSR1, &old, NULL);
    if (altstack)
        sigaltstack(&oldss, NULL);

    if (!same(&sig_pair))
        print_pair(altstack ? "alternate stack" : "signal handler", &sig_pair);
    assert_true(same(&sig_pair));
    assert_int_equal(c1.fallback, c0.fallback + 1);
    /* Through the handler and the signal frame, on to main. */
    bool saw_main = false;
    for (int i = 0; i < sig_pair.nref; i++)
        saw_main |= strcmp(frame_name(sig_pair.ref[i]), "main") == 0;
    assert_true(saw_main);
    assert_true(sig_pair.nref >= 8);
}

static void test_signal_handler(void **state)
{
    (void)state;
    signal_case(false);
    signal_case(true);
}

/* ---- bad rules ------------------------------------------------------------------ */

/* nofp_recurse(4) from one call site: its return address is the same in
 * every capture. */
FRAME static int recurse_4(struct stack_pair *p)
{
    int n = nofp_recurse(4, p);
    KEEP_FRAME(n);
    return n;
}

static void test_bad_rules(void **state)
{
    (void)state;
    static struct stack_pair p;
    struct sm_frame_rule good, bad;

    pair_init(&p, NPCS, 0);
    recurse_4(&p);
    assert_true(same(&p));
    /* The frame that called nofp_recurse (the recursive frames share one
     * return address): recurse_4's, one call site for every capture. */
    assert_true(p.nref > 7);
    uintptr_t at = p.ref[5] - 1;
    assert_int_equal(sm_stack_rule(at, &good), 0);

    /* CFA far above the top of this stack: the walk gives up. */
    memset(&bad, 0, sizeof bad);
    bad.kind = SM_FRAME_SIMPLE;
    bad.cfa_off = ((1u << 14) - 1) * 8;   /* the largest the cache holds */
    sm_stack_cache_set(at, &bad);
    struct sm_stack_counters c0 = counters();
    pair_init(&p, NPCS, 0);
    recurse_4(&p);
    struct sm_stack_counters c1 = counters();
    assert_true(same(&p));
    assert_int_equal(c1.fallback, c0.fallback + 1);

    /* CFA below the stack pointer: the same. */
    bad.cfa_rbp = 1;
    bad.cfa_off = 8;
    sm_stack_cache_set(at, &bad);
    pair_init(&p, NPCS, 0);
    recurse_4(&p);
    assert_in_range(p.nfast, 6, NPCS);

    /* A frame said to be the last: a shorter stack, the same up to it. */
    memset(&bad, 0, sizeof bad);
    bad.kind = SM_FRAME_END;
    sm_stack_cache_set(at, &bad);
    pair_init(&p, NPCS, 0);
    recurse_4(&p);
    assert_int_equal(p.nfast, 6);
    assert_memory_equal(p.fast, p.ref, 6 * sizeof p.ref[0]);

    /* A wrong rule that stays on the stack reads wrong values, which the
     * walk follows only while they stay on the stack too. */
    memset(&bad, 0, sizeof bad);
    bad.kind = SM_FRAME_SIMPLE;
    bad.cfa_off = 8;
    bad.rbp_at = 0;
    sm_stack_cache_set(at, &bad);
    pair_init(&p, NPCS, 0);
    recurse_4(&p);
    assert_in_range(p.nfast, 6, NPCS);

    sm_stack_cache_set(at, &good);
    pair_init(&p, NPCS, 0);
    recurse_4(&p);
    assert_true(same(&p));
}

/* ---- two threads at once ------------------------------------------------------------ */

static void *churn(void *arg)
{
    int rounds = (int)(intptr_t)arg, bad = 0;
    for (int i = 0; i < rounds; i++)
        bad += check_shapes(i % 7 == 0 ? 9 : NPCS, i % 3, i == 0 ? SHAPES_VERBOSE : 0);
    return (void *)(intptr_t)bad;
}

static void test_threads_at_once(void **state)
{
    (void)state;
    pthread_t th[2];
    void *bad[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, churn, (void *)(intptr_t)200), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], &bad[i]), 0);
        assert_int_equal((intptr_t)bad[i], 0);
    }
}

int main(void)
{
    sm_stack_boot();
    sm_stack_init();
    assert_true(sm_stack_sys() > 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_skip_and_max),
        cmocka_unit_test(test_memo),
        cmocka_unit_test(test_shared_library),
        cmocka_unit_test(test_other_thread),
        cmocka_unit_test(test_roots),
        cmocka_unit_test(test_signal_handler),
        cmocka_unit_test(test_bad_rules),
        cmocka_unit_test(test_threads_at_once),
    };
    return cmocka_run_group_tests_name("stack", tests, NULL, NULL);
}
