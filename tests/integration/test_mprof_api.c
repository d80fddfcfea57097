/*
 * test_mprof_api.c - the heap profile API through the shared library, as a
 * program uses it: sm_set_profile_rate and sm_write_heap_profile.
 *
 *   errors      a NULL path is EINVAL, a missing directory ENOENT, and the
 *               failure is reported on stderr; a success is reported with
 *               the path.
 *   file        the file is gzip holding a profile.proto whose top-level
 *               fields parse, with the four sample types and samples.
 *   threads     profiles written while 4 threads allocate and free (every
 *               allocation sampled), all valid.
 *   fork        a child forked from a process with sampled objects writes
 *               a valid profile that holds them; forks while 4 threads
 *               sample constantly never deadlock (each child allocates,
 *               samples and writes before it exits).
 *
 * Files go to a fresh directory under $TMPDIR, removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include "spanmalloc.h"

static char tmpdir[PATH_MAX];

static void path_in_tmp(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

/* ---- reading a profile back ------------------------------------------------ */

struct profile_summary {
    bool ok;                  /* gunzipped and every top-level field parsed */
    int samples, locations, mappings, strings;
    bool has_types;           /* the four sample type names are strings */
    int64_t inuse_space;      /* sum of the samples' fourth values */
};

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* The fourth of a Sample's packed values (inuse_space), 0 if none. */
static int64_t sample_inuse(const uint8_t *p, const uint8_t *end)
{
    while (p < end) {
        uint64_t tag, v;
        if (!read_varint(&p, end, &tag))
            return 0;
        if ((tag & 7) == 0) {
            if (!read_varint(&p, end, &v))
                return 0;
            continue;
        }
        if ((tag & 7) != 2 || !read_varint(&p, end, &v) || v > (uint64_t)(end - p))
            return 0;
        if (tag >> 3 == 2) {
            const uint8_t *q = p, *qend = p + v;
            uint64_t val = 0;
            for (int i = 0; i < 4; i++)
                if (!read_varint(&q, qend, &val))
                    return 0;
            return (int64_t)val;
        }
        p += v;
    }
    return 0;
}

static uint8_t *gunzip_file(const char *path, size_t *len)
{
    gzFile gz = gzopen(path, "rb");
    if (gz == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (n == cap)
            buf = realloc(buf, cap *= 2);
        int r = gzread(gz, buf + n, (unsigned)(cap - n));
        if (r < 0) {
            free(buf);
            gzclose(gz);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    gzclose(gz);
    *len = n;
    return buf;
}

static struct profile_summary summarize(const char *path)
{
    struct profile_summary s = {0};
    size_t len;
    uint8_t *buf = gunzip_file(path, &len);
    if (buf == NULL || len == 0) {
        free(buf);
        return s;
    }
    const uint8_t *p = buf, *end = buf + len;
    int types_seen = 0;
    static const char *const types[] = {"alloc_objects", "alloc_space", "inuse_objects", "inuse_space"};
    while (p < end) {
        uint64_t tag, v;
        if (!read_varint(&p, end, &tag))
            goto out;
        switch (tag & 7) {
        case 0:
            if (!read_varint(&p, end, &v))
                goto out;
            break;
        case 2:
            if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p))
                goto out;
            switch (tag >> 3) {
            case 2:
                s.samples++;
                s.inuse_space += sample_inuse(p, p + v);
                break;
            case 3: s.mappings++; break;
            case 4: s.locations++; break;
            case 6:
                s.strings++;
                for (int i = 0; i < 4; i++)
                    if (v == strlen(types[i]) && memcmp(p, types[i], v) == 0)
                        types_seen |= 1 << i;
                break;
            }
            p += v;
            break;
        default:
            goto out;
        }
    }
    s.ok = true;
    s.has_types = types_seen == 15;
out:
    free(buf);
    return s;
}

/* ---- stderr capture ------------------------------------------------------------ */

static int saved_stderr = -1;
static char err_path[PATH_MAX + 32];

static void capture_stderr(void)
{
    path_in_tmp(err_path, sizeof err_path, "stderr.txt");
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}

/* Stop capturing; the text, which the caller frees. */
static char *captured_stderr(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    FILE *f = fopen(err_path, "r");
    assert_non_null(f);
    char *text = calloc(1, 4096);
    size_t n = fread(text, 1, 4095, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* ---- tests -------------------------------------------------------------------------- */

__attribute__((noinline)) static void *keep_alloc(size_t n)
{
    void *p = malloc(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

static void test_errors_and_report(void **state)
{
    (void)state;
    char path[PATH_MAX + 32];

    errno = 0;
    assert_int_equal(sm_write_heap_profile(NULL), -1);
    assert_int_equal(errno, EINVAL);

    path_in_tmp(path, sizeof path, "no/such/dir/x.pb.gz");
    capture_stderr();
    errno = 0;
    int rc = sm_write_heap_profile(path);
    int err = errno;
    char *text = captured_stderr();
    assert_int_equal(rc, -1);
    assert_int_equal(err, ENOENT);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "spanmalloc: cannot write heap profile to %s: ", path);
    assert_non_null(strstr(text, want));
    free(text);

    path_in_tmp(path, sizeof path, "ok.pb.gz");
    capture_stderr();
    rc = sm_write_heap_profile(path);
    text = captured_stderr();
    assert_int_equal(rc, 0);
    snprintf(want, sizeof want, "spanmalloc: heap profile written to %s\n", path);
    assert_string_equal(text, want);
    free(text);
}

static void test_file_parses(void **state)
{
    (void)state;
    char path[PATH_MAX + 32];
    size_t old = sm_set_profile_rate(1);
    void *p[100];
    int64_t asked = 0;
    for (int i = 0; i < 100; i++) {
        p[i] = keep_alloc(16 + (size_t)i * 97);
        asked += 16 + i * 97;
    }
    path_in_tmp(path, sizeof path, "file.pb.gz");
    assert_int_equal(sm_write_heap_profile(path), 0);
    for (int i = 0; i < 100; i++)
        free(p[i]);
    sm_set_profile_rate(old);
    struct profile_summary s = summarize(path);
    assert_true(s.ok);
    assert_true(s.has_types);
    /* One sample per size class the sizes fall in; rate 1: unscaled. */
    assert_true(s.samples >= 30);
    assert_true(s.inuse_space >= asked);
    assert_true(s.locations > 0);
    assert_true(s.mappings > 0);
}

/* ---- threads ---- */

static int stop;

static void *churn(void *arg)
{
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    void *slots[256] = {0};
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        for (int i = 0; i < 1000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int k = (int)(x % 256);
            free(slots[k]);
            size_t n = (x >> 20) % 16 == 0 ? 40000 + (x >> 40) % 100000 : 8 + (x >> 40) % 2000;
            slots[k] = keep_alloc(n);
            memset(slots[k], 0x5a, n < 64 ? n : 64);
        }
    }
    for (int k = 0; k < 256; k++)
        free(slots[k]);
    return NULL;
}

static void start_churn(pthread_t t[4])
{
    __atomic_store_n(&stop, 0, __ATOMIC_RELAXED);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1)), 0);
}

static void stop_churn(pthread_t t[4])
{
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
}

static void test_write_while_threads_allocate(void **state)
{
    (void)state;
    pthread_t t[4];
    size_t old = sm_set_profile_rate(1);
    start_churn(t);
    for (int i = 0; i < 12; i++) {
        char name[32], path[PATH_MAX + 32];
        snprintf(name, sizeof name, "threads.%d.pb.gz", i);
        path_in_tmp(path, sizeof path, name);
        assert_int_equal(sm_write_heap_profile(path), 0);
        struct profile_summary s = summarize(path);
        assert_true(s.ok);
        assert_true(s.has_types);
        assert_true(s.samples > 0);
        usleep(20000);
    }
    stop_churn(t);
    sm_set_profile_rate(old);
}

/* ---- fork ---- */

static void test_child_writes_profile(void **state)
{
    (void)state;
    char path[PATH_MAX + 32];
    size_t old = sm_set_profile_rate(1);
    void *held[50];
    for (int i = 0; i < 50; i++)
        held[i] = keep_alloc(3000);
    path_in_tmp(path, sizeof path, "child.pb.gz");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child allocates (sampled), frees, writes. */
        for (int i = 0; i < 1000; i++)
            free(keep_alloc(100));
        _exit(sm_write_heap_profile(path) == 0 ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct profile_summary s = summarize(path);
    assert_true(s.ok);
    assert_true(s.has_types);
    assert_true(s.samples > 0);
    /* The parent's objects are in the child's profile (rate 1: unscaled). */
    assert_true(s.inuse_space >= 50 * 3000);
    for (int i = 0; i < 50; i++)
        free(held[i]);
    sm_set_profile_rate(old);
}

static void test_fork_while_sampling(void **state)
{
    (void)state;
    pthread_t t[4];
    size_t old = sm_set_profile_rate(1);
    start_churn(t);
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            alarm(20);   /* a deadlock in the child fails, not hangs */
            for (int k = 0; k < 200; k++)
                free(keep_alloc(50 + (size_t)k * 300));
            _exit(sm_write_heap_profile("/dev/null") == 0 ? 0 : 1);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("child %d: %s %d", i, WIFEXITED(status) ? "exit" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    stop_churn(t);
    sm_set_profile_rate(old);
}

/* ---- setup ---- */

static int remove_tree(const char *dir)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/sm-mprof-api.XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return remove_tree(tmpdir) == 0 ? 0 : -1;
}

int main(void)
{
    /* Linked with the shared library: its malloc is ours. */
    if (sm_version() == NULL)
        return 1;
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_and_report),
        cmocka_unit_test(test_file_parses),
        cmocka_unit_test(test_write_while_threads_allocate),
        cmocka_unit_test(test_child_writes_profile),
        cmocka_unit_test(test_fork_while_sampling),
    };
    return cmocka_run_group_tests_name("mprof_api", tests, setup, teardown);
}
