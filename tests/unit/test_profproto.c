/*
 * test_profproto.c - the heap profile writer (profproto.c) and the stack
 * capture it is fed from (stack.c).
 *
 * Build this file with -O2 -fomit-frame-pointer -g and link with -rdynamic:
 * the stack tests must pass on code without frame pointers, dladdr names
 * the frames, and pprof reads the line tables.
 *
 *   stack       sm_stack_capture through three nested functions gives their
 *               return addresses in order, honours skip and max, and calls
 *               no malloc once sm_stack_init has run (this file defines
 *               malloc and friends, forwarding to glibc and counting), not
 *               even on a thread that never ran sm_stack_init.
 *   proto       the file gunzips to a protobuf whose top-level fields walk
 *               cleanly, with the string table, sample types, period,
 *               samples, one location per distinct PC at PC - 1, and the
 *               test binary as the first mapping with its build id (read
 *               here through dl_iterate_phdr, independently of the writer).
 *   resources   writing calls no malloc, returns all OS memory, reports
 *               ENOMEM for every failed sm_os_alloc and write errors as
 *               errno, without leaking.
 *   pprof       `go tool pprof` (skipped if Go is not installed) names the
 *               functions, at the right source line, with exact values at
 *               rate 1, Go's scaled values at rate 524288, alloc_space, and
 *               the difference of two profiles with -base.
 *
 * Links profproto.c and stack.c with os_fake.c (not os_linux.c), whose
 * counters show what the writer leaves mapped.  Files go to a fresh
 * directory under $TMPDIR, removed at the end unless SM_TEST_KEEP is set;
 * SM_TEST_VERBOSE=1 prints every pprof command and its output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <link.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "os.h"
#include "profproto.h"
#include "stack.h"
#include "os_fake.h"
#include "stack_shapes.h"

/* ---- a counting malloc ------------------------------------------------- */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static uint64_t malloc_calls;

static void count_call(void)
{
    __atomic_add_fetch(&malloc_calls, 1, __ATOMIC_RELAXED);
}

static uint64_t calls(void)
{
    return __atomic_load_n(&malloc_calls, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
    count_call();
    return __libc_malloc(n);
}

void free(void *p)
{
    count_call();
    __libc_free(p);
}

void *calloc(size_t a, size_t b)
{
    count_call();
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    count_call();
    return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n)
{
    count_call();
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    count_call();
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    count_call();
    void *p = __libc_memalign(align, n);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

/* ---- functions whose stacks we capture --------------------------------- */

/* FRAME and KEEP_FRAME (stack_shapes.h) keep each function below one real
 * frame under its own name. */

struct trace {
    uintptr_t pcs[SM_STACK_MAX];
    int n;
    uintptr_t ret[3];   /* __builtin_return_address(0) of the three levels */
};

FRAME int nest_inner(struct trace *t, int skip, int max)
{
    t->ret[0] = (uintptr_t)__builtin_return_address(0);
    int n = sm_stack_capture(t->pcs, max, skip);
    KEEP_FRAME(n);
    t->n = n;
    return n;
}

FRAME int nest_middle(struct trace *t, int skip, int max)
{
    t->ret[1] = (uintptr_t)__builtin_return_address(0);
    int n = nest_inner(t, skip, max);
    KEEP_FRAME(n);
    return n + 1;
}

FRAME int nest_outer(struct trace *t, int skip, int max)
{
    t->ret[2] = (uintptr_t)__builtin_return_address(0);
    int n = nest_middle(t, skip, max);
    KEEP_FRAME(n);
    return n + 1;
}

/* Source lines of the calls, for checking pprof's symbolization.  Each
 * capture has its line recorded on the same line; group_setup's three calls
 * are on consecutive lines from setup_call_line. */
static int leak_site_line, churn_site_line, spike_site_line, setup_call_line;

/* A growing chain: the leak the inuse_space view should find.  Recursion
 * puts the same return address in the stack twice. */
FRAME int leak_chain_grow(struct trace *t, int depth)
{
    if (depth > 0) {
        int n = leak_chain_grow(t, depth - 1);
        KEEP_FRAME(n);
        return n;
    }
    int n = sm_stack_capture(t->pcs, SM_STACK_MAX, 0); leak_site_line = __LINE__;
    KEEP_FRAME(n);
    t->n = n;
    return n;
}

FRAME int churn_once(struct trace *t)
{
    int n = sm_stack_capture(t->pcs, SM_STACK_MAX, 0); churn_site_line = __LINE__;
    KEEP_FRAME(n);
    t->n = n;
    return n;
}

/* Buffers allocated and freed again: what alloc_space shows. */
FRAME int churn_buffers(struct trace *t)
{
    int n = churn_once(t);
    KEEP_FRAME(n);
    return n;
}

/* Big blocks all freed: in alloc_space, absent from inuse_space. */
FRAME int spike_then_free(struct trace *t)
{
    int n = sm_stack_capture(t->pcs, SM_STACK_MAX, 0); spike_site_line = __LINE__;
    KEEP_FRAME(n);
    t->n = n;
    return n;
}

static const char *frame_name(uintptr_t pc)
{
    Dl_info info;
    if (dladdr((void *)(pc - 1), &info) == 0 || info.dli_sname == NULL)
        return "?";
    return info.dli_sname;
}

/* ---- stack capture -------------------------------------------------------- */

static void test_stack_nesting(void **state)
{
    (void)state;
    struct trace t;

    sm_stack_init();
    memset(&t, 0, sizeof t);
    nest_outer(&t, 0, SM_STACK_MAX);
    assert_true(t.n >= 5);
    assert_string_equal(frame_name(t.pcs[0]), "nest_inner");
    assert_int_equal(t.pcs[1], t.ret[0]);
    assert_int_equal(t.pcs[2], t.ret[1]);
    assert_int_equal(t.pcs[3], t.ret[2]);
    assert_string_equal(frame_name(t.pcs[1]), "nest_middle");
    assert_string_equal(frame_name(t.pcs[2]), "nest_outer");
    /* pcs[3] is in this function, which is static: dladdr has no name. */
    /* and on through cmocka to main */
    bool saw_main = false;
    for (int i = 4; i < t.n; i++)
        saw_main |= strcmp(frame_name(t.pcs[i]), "main") == 0;
    assert_true(saw_main);
}

static void test_stack_skip_and_max(void **state)
{
    (void)state;
    struct trace all, t;

    memset(&all, 0, sizeof all);
    nest_outer(&all, 0, SM_STACK_MAX);

    memset(&t, 0, sizeof t);
    nest_outer(&t, 2, SM_STACK_MAX);
    assert_int_equal(t.n, all.n - 2);
    assert_int_equal(t.pcs[0], t.ret[1]);       /* nest_inner, nest_middle gone */
    assert_string_equal(frame_name(t.pcs[0]), "nest_outer");

    memset(&t, 0, sizeof t);
    nest_outer(&t, 0, 2);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.pcs[1], t.ret[0]);
    assert_int_equal(t.pcs[2], 0);              /* nothing past max */

    assert_int_equal(sm_stack_capture(t.pcs, 0, 0), 0);
    memset(&t, 0, sizeof t);
    nest_outer(&t, 1000, SM_STACK_MAX);
    assert_int_equal(t.n, 0);
}

struct count_run {
    uint64_t before, after;
    int n;
};

static void *capture_on_new_thread(void *arg)
{
    struct count_run *r = arg;
    struct trace t;
    r->before = calls();
    r->n = nest_outer(&t, 0, SM_STACK_MAX);
    r->after = calls();
    return NULL;
}

static void test_stack_no_malloc(void **state)
{
    (void)state;
    struct trace t;

    /* The counter sees this program's mallocs. */
    uint64_t c0 = calls();
    void *volatile p = malloc(64);
    free(p);
    assert_int_equal(calls() - c0, 2);

    sm_stack_init();
    uint64_t before = calls();
    for (int i = 0; i < 1000; i++) {
        nest_outer(&t, 0, SM_STACK_MAX);
        leak_chain_grow(&t, i % 5);
        churn_buffers(&t);
    }
    assert_int_equal(calls() - before, 0);

    /* The unwinder keeps no per-thread state to set up. */
    pthread_t th;
    struct count_run r = {0, 0, 0};
    assert_int_equal(pthread_create(&th, NULL, capture_on_new_thread, &r), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(r.n >= 4);
    assert_int_equal(r.after - r.before, 0);
}

/* ---- profile fixtures ---------------------------------------------------- */

static char tmpdir[PATH_MAX];
static char exe[PATH_MAX];

/* Three call sites, captured once. */
static struct trace leak_t, churn_t, spike_t;

enum { LEAK, CHURN, SPIKE, NSITES };

static void fill(struct sm_prof_record *r, const struct trace *t,
                 uint64_t an, uint64_t ab, uint64_t fn, uint64_t fb)
{
    r->alloc_objects = an;
    r->alloc_bytes = ab;
    r->free_objects = fn;
    r->free_bytes = fb;
    r->nstack = t->n;
    r->stack = t->pcs;
}

/* The leak holds leak_objects blocks of 1 KiB; churn allocated 5000 4 KiB
 * buffers and freed all but 10; the spike's three 1 MiB blocks are gone. */
static void records(struct sm_prof_record *r, uint64_t leak_objects)
{
    fill(&r[LEAK], &leak_t, leak_objects, leak_objects * 1024, 0, 0);
    fill(&r[CHURN], &churn_t, 5000, 5000 * 4096, 4990, 4990 * 4096);
    fill(&r[SPIKE], &spike_t, 3, 3 << 20, 3, 3 << 20);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    int len = snprintf(tmpdir, sizeof tmpdir, "%s/test_profproto.XXXXXX", base && *base ? base : "/tmp");
    if (len <= 0 || (size_t)len >= sizeof tmpdir || mkdtemp(tmpdir) == NULL)
        return -1;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';

    sm_stack_init();
    enum { SETUP_CALL_LINE = __LINE__ + 1 };
    leak_chain_grow(&leak_t, 2);
    churn_buffers(&churn_t);
    spike_then_free(&spike_t);
    setup_call_line = SETUP_CALL_LINE;
    return leak_t.n > 3 && churn_t.n > 2 && spike_t.n > 1 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (getenv("SM_TEST_KEEP") == NULL)
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void path_in_tmp(char *out, size_t cap, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", tmpdir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

static void write_profile(const char *name, uint64_t leak_objects, uint64_t rate)
{
    struct sm_prof_record r[NSITES];
    char path[PATH_MAX];

    records(r, leak_objects);
    path_in_tmp(path, sizeof path, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(sm_profproto_write(fd, r, NSITES, rate, 1700000000123456789LL), 0);
    close(fd);
}

/* ---- a minimal protobuf reader ------------------------------------------ */

struct pb {
    const uint8_t *p, *end;
    bool bad;
};

static uint64_t pb_varint(struct pb *b)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end)
            break;
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
    }
    b->bad = true;
    return 0;
}

/* Next field: its number and wire type; a varint's value in *v, a length-
 * delimited field's body in *sub.  False at the end or on bad input. */
static bool pb_next(struct pb *b, int *field, int *wire, uint64_t *v, struct pb *sub)
{
    if (b->bad || b->p >= b->end)
        return false;
    uint64_t key = pb_varint(b);
    *field = (int)(key >> 3);
    *wire = (int)(key & 7);
    if (*wire == 0) {
        *v = pb_varint(b);
    } else if (*wire == 2) {
        uint64_t n = pb_varint(b);
        if (n > (uint64_t)(b->end - b->p)) {
            b->bad = true;
            return false;
        }
        sub->p = b->p;
        sub->end = b->p + n;
        sub->bad = false;
        b->p += n;
    } else {
        b->bad = true;      /* we write no fixed-width fields */
        return false;
    }
    return !b->bad && *field > 0;
}

static uint8_t *gunzip_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *gz = malloc((size_t)st.st_size);
    assert_non_null(gz);
    assert_int_equal(read(fd, gz, (size_t)st.st_size), st.st_size);
    close(fd);
    assert_true(st.st_size > 18);
    assert_int_equal(gz[0], 0x1f);      /* gzip magic */
    assert_int_equal(gz[1], 0x8b);

    size_t cap = 1 << 20;
    uint8_t *out = malloc(cap);
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = gz;
    z.avail_in = (uInt)st.st_size;
    int rc;
    do {
        if (z.total_out == cap) {
            cap *= 2;
            out = realloc(out, cap);
        }
        z.next_out = out + z.total_out;
        z.avail_out = (uInt)(cap - z.total_out);
        rc = inflate(&z, Z_NO_FLUSH);
    } while (rc == Z_OK);
    assert_int_equal(rc, Z_STREAM_END);
    assert_int_equal(z.avail_in, 0);    /* nothing after the gzip member */
    *len = z.total_out;
    inflateEnd(&z);
    free(gz);
    return out;
}

/* Without zlib the writer still makes gzip: stored blocks, whose CRC and
 * length zlib's inflate checks, at the block size's edges. */
static void test_gzip_stored(void **state)
{
    (void)state;
    static const size_t sizes[] = { 0, 1, 65534, 65535, 65536, 131070, 200001 };
    uint8_t *data = malloc(200001);
    assert_non_null(data);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < 200001; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    char path[] = "/tmp/sm-stored-XXXXXX";
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(sm_profproto_gzip_stored(fd, data, sizes[k]), 0);
        close(fd);
        size_t len = 0;
        uint8_t *out = gunzip_file(path, &len);
        assert_int_equal(len, sizes[k]);
        if (sizes[k] > 0)
            assert_memory_equal(out, data, sizes[k]);
        free(out);
        unlink(path);
        memcpy(path + sizeof path - 7, "XXXXXX", 6);
    }
    /* A write error is reported. */
    assert_int_equal(sm_profproto_gzip_stored(-1, data, 10), -1);
    assert_int_equal(errno, EBADF);
    free(data);
    /* This build (not the shared library's) calls zlib directly. */
    assert_true(sm_profproto_have_zlib());
}

struct parsed {
    char strings[4096][256];
    int nstrings;
    int64_t sample_type[4][2];
    int nsample_types;
    int64_t period_type[2];
    int64_t period, time_nanos, default_sample_type;
    int nsamples, nlocations, nmappings;
    uint64_t loc_addr[512];
    uint64_t loc_mapping[512];
    uint64_t loc_function[512];      /* the function id of its one line */
    int nfunctions;
    int64_t func_name[1024], func_system_name[1024];
    uint64_t map_has_functions[256];
    int64_t values[8][4];
    uint64_t sample_locs[8][SM_STACK_MAX];
    int sample_nlocs[8];
    uint64_t map_start[256], map_limit[256];
    int64_t map_file[256], map_build[256];
    int first_field;
};

static void parse_value_type(struct pb b, int64_t out[2])
{
    int f, w;
    uint64_t v;
    struct pb sub;
    out[0] = out[1] = 0;
    while (pb_next(&b, &f, &w, &v, &sub))
        if (w == 0 && (f == 1 || f == 2))
            out[f - 1] = (int64_t)v;
    assert_false(b.bad);
}

static void parse_profile(const uint8_t *msg, size_t len, struct parsed *P)
{
    struct pb b = { msg, msg + len, false }, sub;
    int f, w;
    uint64_t v;

    memset(P, 0, sizeof *P);
    P->first_field = -1;
    while (pb_next(&b, &f, &w, &v, &sub)) {
        if (P->first_field < 0)
            P->first_field = f;
        switch (f) {
        case 1:
            assert_int_equal(w, 2);
            assert_true(P->nsample_types < 4);
            parse_value_type(sub, P->sample_type[P->nsample_types++]);
            break;
        case 2: {
            assert_int_equal(w, 2);
            int s = P->nsamples++;
            assert_true(s < 8);
            int f2, w2;
            struct pb sub2;
            while (pb_next(&sub, &f2, &w2, &v, &sub2)) {
                if (f2 == 1) {              /* packed location ids */
                    assert_int_equal(w2, 2);
                    while (sub2.p < sub2.end)
                        P->sample_locs[s][P->sample_nlocs[s]++] = pb_varint(&sub2);
                } else if (f2 == 2) {       /* packed values */
                    int i = 0;
                    assert_int_equal(w2, 2);
                    while (sub2.p < sub2.end && i < 4)
                        P->values[s][i++] = (int64_t)pb_varint(&sub2);
                    assert_int_equal(i, 4);
                    assert_true(sub2.p == sub2.end);
                }
            }
            assert_false(sub.bad);
            break;
        }
        case 3: {
            assert_int_equal(w, 2);
            int m = P->nmappings++;
            int f2, w2;
            struct pb sub2;
            while (pb_next(&sub, &f2, &w2, &v, &sub2)) {
                assert_int_equal(w2, 0);
                if (f2 == 1)
                    assert_int_equal(v, (uint64_t)m + 1);
                else if (f2 == 2)
                    P->map_start[m] = v;
                else if (f2 == 3)
                    P->map_limit[m] = v;
                else if (f2 == 5)
                    P->map_file[m] = (int64_t)v;
                else if (f2 == 6)
                    P->map_build[m] = (int64_t)v;
                else if (f2 == 7)
                    P->map_has_functions[m] = v;
            }
            assert_false(sub.bad);
            break;
        }
        case 4: {
            assert_int_equal(w, 2);
            int l = P->nlocations++;
            int f2, w2;
            struct pb sub2;
            while (pb_next(&sub, &f2, &w2, &v, &sub2)) {
                if (f2 == 1)
                    assert_int_equal(v, (uint64_t)l + 1);   /* ids 1, 2, ... */
                else if (f2 == 2)
                    P->loc_mapping[l] = v;
                else if (f2 == 3)
                    P->loc_addr[l] = v;
                else if (f2 == 4) {         /* one Line: its function */
                    int f3, w3;
                    struct pb sub3;
                    assert_int_equal(P->loc_function[l], 0);
                    while (pb_next(&sub2, &f3, &w3, &v, &sub3))
                        if (f3 == 1)
                            P->loc_function[l] = v;
                    assert_false(sub2.bad);
                }
            }
            assert_false(sub.bad);
            break;
        }
        case 5: {
            assert_int_equal(w, 2);
            int fi = P->nfunctions++;
            int f2, w2;
            struct pb sub2;
            assert_true(fi < 1024);
            while (pb_next(&sub, &f2, &w2, &v, &sub2)) {
                if (f2 == 1)
                    assert_int_equal(v, (uint64_t)fi + 1);  /* ids 1, 2, ... */
                else if (f2 == 2)
                    P->func_name[fi] = (int64_t)v;
                else if (f2 == 3)
                    P->func_system_name[fi] = (int64_t)v;
            }
            assert_false(sub.bad);
            break;
        }
        case 6: {
            assert_int_equal(w, 2);
            size_t n = (size_t)(sub.end - sub.p);
            assert_true(n < 256 && P->nstrings < 4096);
            memcpy(P->strings[P->nstrings], sub.p, n);
            P->strings[P->nstrings++][n] = '\0';
            break;
        }
        case 9: P->time_nanos = (int64_t)v; break;
        case 11: parse_value_type(sub, P->period_type); break;
        case 12: P->period = (int64_t)v; break;
        case 14: P->default_sample_type = (int64_t)v; break;
        default:
            fail_msg("unexpected field %d", f);
        }
    }
    assert_false(b.bad);
    assert_true(b.p == b.end);
}

static const char *str(const struct parsed *P, int64_t i)
{
    assert_true(i >= 0 && i < P->nstrings);
    return P->strings[i];
}

/* The build id of the main program from its loaded PT_NOTE segments. */
static int main_build_id(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    char *hex = arg;
    if (info->dlpi_name[0] != '\0')     /* the main program comes first, unnamed */
        return 1;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        size_t off = 0, align = ph->p_align == 8 ? 8 : 4;
        while (off + sizeof(ElfW(Nhdr)) <= ph->p_memsz) {
            const ElfW(Nhdr) *nh = (const void *)(p + off);
            size_t name = off + sizeof *nh;
            size_t desc = (name + nh->n_namesz + align - 1) & ~(align - 1);
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(p + name, "GNU", 4) == 0) {
                for (size_t j = 0; j < nh->n_descsz; j++)
                    sprintf(hex + 2 * j, "%02x", p[desc + j]);
                return 1;
            }
            off = (desc + nh->n_descsz + align - 1) & ~(align - 1);
        }
    }
    return 1;
}

static void test_proto_fields(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct parsed *P = malloc(sizeof *P);
    size_t len;

    write_profile("fields.pb.gz", 100, 524288);
    path_in_tmp(path, sizeof path, "fields.pb.gz");
    uint8_t *msg = gunzip_file(path, &len);
    parse_profile(msg, len, P);
    free(msg);

    assert_int_equal(P->first_field, 1);                 /* sample_type leads */
    assert_true(P->nstrings > 10);
    assert_string_equal(P->strings[0], "");
    assert_int_equal(P->nsample_types, 4);
    static const char *types[4][2] = {
        {"alloc_objects", "count"}, {"alloc_space", "bytes"},
        {"inuse_objects", "count"}, {"inuse_space", "bytes"},
    };
    for (int i = 0; i < 4; i++) {
        assert_string_equal(str(P, P->sample_type[i][0]), types[i][0]);
        assert_string_equal(str(P, P->sample_type[i][1]), types[i][1]);
    }
    assert_string_equal(str(P, P->period_type[0]), "space");
    assert_string_equal(str(P, P->period_type[1]), "bytes");
    assert_int_equal(P->period, 524288);
    assert_int_equal(P->time_nanos, 1700000000123456789LL);
    assert_string_equal(str(P, P->default_sample_type), "inuse_space");

    /* Samples in record order, scaled (numbers from Go's scaleHeapSample). */
    assert_int_equal(P->nsamples, NSITES);
    int64_t want[NSITES][4] = {
        {51250, 52480016, 51250, 52480016},
        {642503, 2631693333, 1285, 5263386},
        {3, 3638089, 0, 0},
    };
    for (int s = 0; s < NSITES; s++)
        for (int i = 0; i < 4; i++)
            assert_int_equal(P->values[s][i], want[s][i]);

    /* One location per distinct PC, at PC - 1, each in a mapping. */
    const struct trace *tr[NSITES] = { &leak_t, &churn_t, &spike_t };
    uintptr_t distinct[512];
    int ndistinct = 0;
    for (int s = 0; s < NSITES; s++) {
        assert_int_equal(P->sample_nlocs[s], tr[s]->n);
        for (int i = 0; i < tr[s]->n; i++) {
            uint64_t id = P->sample_locs[s][i];
            assert_true(id >= 1 && id <= (uint64_t)P->nlocations);
            assert_int_equal(P->loc_addr[id - 1], tr[s]->pcs[i] - 1);
            uint64_t m = P->loc_mapping[id - 1];
            assert_true(m >= 1 && m <= (uint64_t)P->nmappings);
            assert_true(P->map_start[m - 1] <= tr[s]->pcs[i] - 1 && tr[s]->pcs[i] - 1 < P->map_limit[m - 1]);
            int j;
            for (j = 0; j < ndistinct && distinct[j] != tr[s]->pcs[i]; j++)
                ;
            if (j == ndistinct)
                distinct[ndistinct++] = tr[s]->pcs[i];
        }
    }
    assert_int_equal(P->nlocations, ndistinct);
    assert_true(ndistinct < leak_t.n + churn_t.n + spike_t.n);   /* shared and repeated PCs */

    /* The first mapping is this program, with the build id the loader saw. */
    char hex[130] = "";
    dl_iterate_phdr(main_build_id, hex);
    assert_true(P->nmappings >= 2);                       /* us, libc, ... */
    assert_string_equal(str(P, P->map_file[0]), exe);
    assert_true(strlen(hex) >= 16);
    assert_string_equal(str(P, P->map_build[0]), hex);
    /* Every location of this program (linked -rdynamic, not stripped) is
     * named from its symbol table, so pprof needs no binary; a name is the
     * symbol as written, in name and system_name alike. */
    assert_int_equal(P->map_has_functions[0], 1);
    bool named[NSITES] = { false };
    static const char *site_fn[NSITES] = { "leak_chain_grow", "churn_once", "spike_then_free" };
    for (int l = 0; l < P->nlocations; l++) {
        if (P->loc_mapping[l] != 1)
            continue;
        uint64_t f = P->loc_function[l];
        assert_true(f >= 1 && f <= (uint64_t)P->nfunctions);
        assert_int_equal(P->func_name[f - 1], P->func_system_name[f - 1]);
        const char *name = str(P, P->func_name[f - 1]);
        assert_true(name[0] != '\0');
        for (int s = 0; s < NSITES; s++)
            if (strcmp(name, site_fn[s]) == 0)
                named[s] = true;
    }
    for (int s = 0; s < NSITES; s++)
        if (!named[s])
            fail_msg("no location named %s", site_fn[s]);
    /* One Function per name. */
    for (int a = 0; a < P->nfunctions; a++)
        for (int b = a + 1; b < P->nfunctions; b++)
            assert_true(P->func_name[a] != P->func_name[b]);
    for (int m = 0; m < P->nmappings; m++) {
        assert_true(str(P, P->map_file[m])[0] == '/');
        assert_true(P->map_start[m] < P->map_limit[m]);
        if (m > 0)
            assert_true(P->map_limit[m - 1] <= P->map_start[m]);
    }
    free(P);
}

/* ---- resources ------------------------------------------------------------ */

static void test_write_no_malloc_no_leak(void **state)
{
    (void)state;
    struct sm_prof_record r[NSITES];
    records(r, 100);
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);

    size_t live = os_fake_live_bytes();
    uint64_t before = calls();
    assert_int_equal(sm_profproto_write(fd, r, NSITES, 524288, 1), 0);
    assert_int_equal(calls() - before, 0);
    assert_int_equal(os_fake_live_bytes(), live);

    /* Every sm_os_alloc the write makes, failed in turn: ENOMEM, no leak. */
    uint64_t a0 = os_fake_alloc_calls();
    assert_int_equal(sm_profproto_write(fd, r, NSITES, 524288, 1), 0);
    uint64_t nalloc = os_fake_alloc_calls() - a0;
    assert_true(nalloc >= 5);
    for (uint64_t k = 1; k <= nalloc; k++) {
        sm_os_fail_nth(k);
        errno = 0;
        assert_int_equal(sm_profproto_write(fd, r, NSITES, 524288, 1), -1);
        assert_int_equal(errno, ENOMEM);
        assert_int_equal(os_fake_live_bytes(), live);
    }
    sm_os_fail_nth(0);
    close(fd);
}

static void test_write_errors(void **state)
{
    (void)state;
    struct sm_prof_record r[NSITES];
    records(r, 100);
    size_t live = os_fake_live_bytes();

    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);      /* not writable */
    assert_true(fd >= 0);
    errno = 0;
    assert_int_equal(sm_profproto_write(fd, r, NSITES, 1, 1), -1);
    assert_int_equal(errno, EBADF);
    close(fd);

    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    close(pipefd[0]);
    signal(SIGPIPE, SIG_IGN);
    errno = 0;
    assert_int_equal(sm_profproto_write(pipefd[1], r, NSITES, 1, 1), -1);
    assert_int_equal(errno, EPIPE);
    close(pipefd[1]);
    signal(SIGPIPE, SIG_DFL);
    assert_int_equal(os_fake_live_bytes(), live);

    /* No records at all is still a valid profile. */
    fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_int_equal(sm_profproto_write(fd, NULL, 0, 0, 0), 0);
    close(fd);
}

/* A profile bigger than the first buffers, so every one of them grows. */
static void test_write_large(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct sm_prof_record *r = calloc(N, sizeof *r);
    uintptr_t *stacks = calloc((size_t)N * 8, sizeof *stacks);
    uintptr_t base = leak_t.pcs[0];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < 8; j++)
            stacks[i * 8 + j] = base + (uintptr_t)((i * 7 + j * 13) % 40000);
        fill(&r[i], &leak_t, (uint64_t)i + 1, ((uint64_t)i + 1) * 48, (uint64_t)i / 2, (uint64_t)i / 2 * 48);
        r[i].nstack = 8;
        r[i].stack = &stacks[i * 8];
    }
    char path[PATH_MAX];
    path_in_tmp(path, sizeof path, "large.pb.gz");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t live = os_fake_live_bytes();
    assert_int_equal(sm_profproto_write(fd, r, N, 1, 1), 0);
    assert_int_equal(os_fake_live_bytes(), live);
    close(fd);

    size_t len;
    uint8_t *msg = gunzip_file(path, &len);
    struct pb b = { msg, msg + len, false }, sub;
    int f, w, nsamples = 0, nlocs = 0;
    uint64_t v;
    while (pb_next(&b, &f, &w, &v, &sub)) {
        nsamples += f == 2;
        nlocs += f == 4;
    }
    assert_false(b.bad);
    assert_int_equal(nsamples, N);
    static bool seen[40000];
    int ndistinct = 0;
    for (int i = 0; i < N * 8; i++) {
        ndistinct += !seen[stacks[i] - base];
        seen[stacks[i] - base] = true;
    }
    assert_int_equal(nlocs, ndistinct);
    free(msg);
    free(stacks);
    free(r);
}

static void test_scale(void **state)
{
    (void)state;
    int64_t n, b;
    sm_profproto_scale(100, 102400, 1, &n, &b);
    assert_int_equal(n, 100);
    assert_int_equal(b, 102400);
    sm_profproto_scale(100, 102400, 0, &n, &b);
    assert_int_equal(b, 102400);
    sm_profproto_scale(0, 5, 524288, &n, &b);
    assert_int_equal(n + b, 0);
    /* Go's scaleHeapSample on the same inputs. */
    static const int64_t go[][4] = {
        {100, 102400, 51250, 52480016}, {300, 307200, 153750, 157440050},
        {5000, 20480000, 642503, 2631693333}, {10, 40960, 1285, 5263386},
        {3, 3145728, 3, 3638089}, {1, 16, 32768, 524296}, {7, 21000000, 7, 21068958},
    };
    for (size_t i = 0; i < sizeof go / sizeof go[0]; i++) {
        sm_profproto_scale((uint64_t)go[i][0], (uint64_t)go[i][1], 524288, &n, &b);
        assert_int_equal(n, go[i][2]);
        assert_int_equal(b, go[i][3]);
    }
}

/* ---- go tool pprof ------------------------------------------------------- */

/* Whether a go command is on PATH, where execvp will look for it. */
static bool have_go(void)
{
    const char *path = getenv("PATH");
    char dir[PATH_MAX];

    while (path && *path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n + 4 < sizeof dir) {
            memcpy(dir, path, n);
            memcpy(dir + n, "/go", 4);
            if (access(dir, X_OK) == 0)
                return true;
        }
        path += n + (path[n] == ':');
    }
    return false;
}

/* A sandbox for the go command: its own HOME and caches, no module
 * downloads, no remote symbolization. */
static void pprof_env(void)
{
    char p[PATH_MAX + 32];
    path_in_tmp(p, sizeof p, "home");
    mkdir(p, 0755);
    setenv("HOME", p, 1);
    path_in_tmp(p, sizeof p, "home/gocache");
    setenv("GOCACHE", p, 1);
    path_in_tmp(p, sizeof p, "home/gopath");
    setenv("GOPATH", p, 1);
    path_in_tmp(p, sizeof p, "home/pproftmp");
    mkdir(p, 0755);
    setenv("PPROF_TMPDIR", p, 1);
    path_in_tmp(p, sizeof p, "home/binaries");
    setenv("PPROF_BINARY_PATH", p, 1);
    setenv("GOFLAGS", "", 1);
    setenv("GOPROXY", "off", 1);
    setenv("GOTOOLCHAIN", "local", 1);
    setenv("GOTELEMETRY", "off", 1);
    unsetenv("PPROF_TOOLS");
}

/* Run go tool pprof with the given arguments; its output (stdout and
 * stderr) in a buffer the caller frees. */
static char *pprof(const char *const *args)
{
    const char *argv[24];
    int argc = 0;
    char out_path[PATH_MAX];

    argv[argc++] = "go";
    argv[argc++] = "tool";
    argv[argc++] = "pprof";
    argv[argc++] = "-symbolize=local";
    while (*args)
        argv[argc++] = *args++;
    argv[argc] = NULL;

    path_in_tmp(out_path, sizeof out_path, "pprof.out");
    pprof_env();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        /* Away from any go.mod that might ask for another toolchain. */
        if (chdir(tmpdir) != 0)
            _exit(126);
        execvp("go", (char *const *)argv);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);

    int fd = open(out_path, O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    char *text = malloc((size_t)st.st_size + 1);
    ssize_t n = read(fd, text, (size_t)st.st_size);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    if (getenv("SM_TEST_VERBOSE") || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "# $");
        for (int i = 0; argv[i]; i++)
            fprintf(stderr, " %s", argv[i]);
        fprintf(stderr, "\n# exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        for (char *l = text, *nl; *l; l = nl + 1) {
            nl = strchr(l, '\n');
            if (nl == NULL)
                nl = l + strlen(l) - 1;
            fprintf(stderr, "# %.*s\n", (int)(nl - l), l);
        }
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return text;
}

/* A -top value printed with -unit=B: "102400B", or "0" with no unit. */
static bool top_value(const char *tok, long long *out)
{
    char *end;
    errno = 0;
    *out = strtoll(tok, &end, 10);
    return errno == 0 && end != tok && (strcmp(end, "B") == 0 || *end == '\0');
}

/* The line of pprof -top output for function fn: its flat and cum values.
 * A line is "flat flat% sum% cum cum% name". */
static bool top_line(const char *text, const char *fn, long long *flat, long long *cum)
{
    for (const char *l = text; *l; ) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        char line[512], *tok[8], *save = NULL;
        int ntok = 0;
        if (n < sizeof line) {
            memcpy(line, l, n);
            line[n] = '\0';
            for (char *t = strtok_r(line, " \t", &save); t && ntok < 8; t = strtok_r(NULL, " \t", &save))
                tok[ntok++] = t;
            if (ntok == 6 && strcmp(tok[5], fn) == 0 &&
                top_value(tok[0], flat) && top_value(tok[3], cum))
                return true;
        }
        if (nl == NULL)
            break;
        l = nl + 1;
    }
    return false;
}

static void expect_top(const char *text, const char *fn, long long flat, long long cum)
{
    long long f = -1, c = -1;
    if (!top_line(text, fn, &f, &c))
        fail_msg("%s not in pprof -top output:\n%s", fn, text);
    if (f != flat || c != cum)
        fail_msg("%s: flat %lld cum %lld, want %lld %lld\n%s", fn, f, c, flat, cum, text);
}

static char *pprof_top(const char *index, const char *file, const char *base)
{
    char sample_index[64], path[PATH_MAX], base_path[PATH_MAX + 8];
    snprintf(sample_index, sizeof sample_index, "-sample_index=%s", index);
    path_in_tmp(path, sizeof path, file);
    const char *args[10];
    int n = 0;
    args[n++] = "-top";
    args[n++] = "-unit=B";
    args[n++] = "-nodefraction=0";     /* keep small nodes */
    args[n++] = sample_index;
    if (base) {
        char b[PATH_MAX];
        path_in_tmp(b, sizeof b, base);
        int len = snprintf(base_path, sizeof base_path, "-base=%s", b);
        assert_true(len > 0 && (size_t)len < sizeof base_path);
        args[n++] = base_path;
    }
    args[n++] = exe;
    args[n++] = path;
    args[n] = NULL;
    return pprof(args);
}

/* Whether pprof -raw lists a location in function fn at line of this
 * file ("  3: 0x55... M=1 fn dir/test_profproto.c:175 s=0"). */
static void expect_raw_frame(const char *raw, const char *fn, int line, bool present)
{
    char want_fn[128], want_line[64];
    snprintf(want_fn, sizeof want_fn, " %s ", fn);
    snprintf(want_line, sizeof want_line, "test_profproto.c:%d ", line);
    bool found = false;
    for (const char *l = raw; *l && !found; ) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        char buf[1024];
        if (n < sizeof buf) {
            memcpy(buf, l, n);
            buf[n] = '\0';
            found = strstr(buf, want_fn) && strstr(buf, want_line);
        }
        if (nl == NULL)
            break;
        l = nl + 1;
    }
    if (found != present)
        fail_msg("%s at line %d is %s in pprof -raw output:\n%s", fn, line,
                 found ? "unexpectedly" : "not", raw);
}

static void test_pprof_rate1(void **state)
{
    (void)state;
    if (!have_go())
        skip();
    write_profile("rate1.pb.gz", 100, 1);

    char *top = pprof_top("inuse_space", "rate1.pb.gz", NULL);
    expect_top(top, "leak_chain_grow", 102400, 102400);
    expect_top(top, "churn_once", 40960, 40960);
    expect_top(top, "churn_buffers", 0, 40960);
    assert_null(strstr(top, "spike_then_free"));    /* all freed */
    free(top);

    top = pprof_top("alloc_space", "rate1.pb.gz", NULL);
    expect_top(top, "spike_then_free", 3 << 20, 3 << 20);
    expect_top(top, "churn_once", 5000 * 4096, 5000 * 4096);
    expect_top(top, "leak_chain_grow", 102400, 102400);
    free(top);

    top = pprof_top("inuse_objects", "rate1.pb.gz", NULL);
    expect_top(top, "leak_chain_grow", 100, 100);
    expect_top(top, "churn_once", 10, 10);
    free(top);

    /* -raw: the samples' values as written, and each frame symbolized at
     * the line of the call (the address is inside the call instruction).
     * Lines come from pprof's own symbolizer, which replaces the names the
     * profile holds only when forced to. */
    char path[PATH_MAX];
    path_in_tmp(path, sizeof path, "rate1.pb.gz");
    const char *raw_args[] = { "-raw", "-symbolize=local:force", exe, path, NULL };
    char *raw = pprof(raw_args);
    assert_non_null(strstr(raw, "PeriodType: space bytes"));
    assert_non_null(strstr(raw, "Period: 1\n"));
    assert_non_null(strstr(raw, "alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"));
    assert_non_null(strstr(raw, "100     102400        100     102400"));
    assert_non_null(strstr(raw, "5000   20480000         10      40960"));
    expect_raw_frame(raw, "leak_chain_grow", leak_site_line, true);
    expect_raw_frame(raw, "churn_once", churn_site_line, true);
    expect_raw_frame(raw, "spike_then_free", spike_site_line, true);
    /* The calls in group_setup are on lines L, L+1, L+2 and L+3 is the
     * next statement: return addresses not stepped back into the call
     * would be attributed to L+1, L+2, L+3. */
    expect_raw_frame(raw, "group_setup", setup_call_line, true);
    expect_raw_frame(raw, "group_setup", setup_call_line + 1, true);
    expect_raw_frame(raw, "group_setup", setup_call_line + 2, true);
    expect_raw_frame(raw, "group_setup", setup_call_line + 3, false);
    free(raw);
}

static void test_pprof_scaled(void **state)
{
    (void)state;
    if (!have_go())
        skip();
    write_profile("rate512k.pb.gz", 100, 524288);

    /* Numbers from Go's scaleHeapSample (see test_scale). */
    char *top = pprof_top("inuse_space", "rate512k.pb.gz", NULL);
    expect_top(top, "leak_chain_grow", 52480016, 52480016);
    expect_top(top, "churn_once", 5263386, 5263386);
    free(top);
    top = pprof_top("alloc_space", "rate512k.pb.gz", NULL);
    expect_top(top, "churn_buffers", 0, 2631693333LL);
    expect_top(top, "spike_then_free", 3638089, 3638089);
    free(top);
    top = pprof_top("alloc_objects", "rate512k.pb.gz", NULL);
    expect_top(top, "churn_once", 642503, 642503);
    free(top);
}

static void test_pprof_base(void **state)
{
    (void)state;
    if (!have_go())
        skip();
    write_profile("before.pb.gz", 100, 1);
    write_profile("after.pb.gz", 300, 1);

    /* The leak grew by 200 KiB; the churn and spike did not change. */
    char *top = pprof_top("inuse_space", "after.pb.gz", "before.pb.gz");
    expect_top(top, "leak_chain_grow", 204800, 204800);
    assert_null(strstr(top, "churn_once"));
    assert_non_null(strstr(top, "204800B total"));
    free(top);
    top = pprof_top("alloc_objects", "after.pb.gz", "before.pb.gz");
    expect_top(top, "leak_chain_grow", 200, 200);
    free(top);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stack_nesting),
        cmocka_unit_test(test_stack_skip_and_max),
        cmocka_unit_test(test_stack_no_malloc),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_proto_fields),
        cmocka_unit_test(test_write_no_malloc_no_leak),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_gzip_stored),
        cmocka_unit_test(test_write_large),
        cmocka_unit_test(test_pprof_rate1),
        cmocka_unit_test(test_pprof_scaled),
        cmocka_unit_test(test_pprof_base),
    };
    return cmocka_run_group_tests_name("profproto", tests, group_setup, group_teardown);
}
