/*
 * test_threads.c - threads and processes around the allocator: caches that
 * go back when their thread exits, objects freed by a thread other than the
 * one that allocated them, fork() while other threads allocate, and a
 * process whose last thread leaves through pthread_exit, which must end
 * (exit status 0) even though the allocator's background worker is running.
 *
 * Worker threads never call cmocka's assertions (they long-jump to the main
 * thread's context); they count failures, and the main thread asserts that
 * the count is zero.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proc.h"
#include "../common/pattern.h"

static void require_spanmalloc(void)
{
    assert_non_null(dlsym(RTLD_DEFAULT, "sm_version"));
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* An object's bytes are a function of a key made from its address, size
 * and a tag when it is filled, so a block that overlaps another, was handed
 * out twice, or lost bytes, shows.  Word by word: cheap for big blocks. */
static uint64_t make_key(const void *p, size_t size, uint64_t tag)
{
    return ((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15u ^ size * 0xff51afd7ed558ccdu ^ tag;
}

static int pattern_ok(const void *p, size_t size, uint64_t key)
{
    return pattern_mismatch(p, size, key) == SIZE_MAX;
}

/* Mostly small, now and then up to 64 KiB. */
static size_t churn_size(uint64_t *s)
{
    uint64_t r = rnd(s) % 100;
    if (r < 85)
        return rnd(s) % 256;
    if (r < 98)
        return 256 + rnd(s) % 4096;
    return 4096 + rnd(s) % 61440;
}

/* ---- thread churn ------------------------------------------------------------ */

enum { CHURN_OBJS = 300, CHURN_LEFT = 20 };

struct churn_arg {
    uint64_t seed;
    int failures;
    void *left[CHURN_LEFT];   /* for the main thread to check and free */
    size_t left_size[CHURN_LEFT];
};

static void *churn_thread(void *argp)
{
    struct churn_arg *a = argp;
    uint64_t s = a->seed;
    void *p[CHURN_OBJS];
    size_t sz[CHURN_OBJS];
    for (int i = 0; i < CHURN_OBJS; i++) {
        sz[i] = churn_size(&s);
        p[i] = malloc(sz[i]);
        if (p[i] == NULL) {
            a->failures++;
            sz[i] = 0;
            continue;
        }
        pattern_fill(p[i], sz[i], make_key(p[i], sz[i], a->seed));
    }
    /* Free all but the last CHURN_LEFT, in a scattered order. */
    int start = (int)(rnd(&s) % (CHURN_OBJS - CHURN_LEFT));
    for (int k = 0; k < CHURN_OBJS - CHURN_LEFT; k++) {
        int i = (start + k * 3) % (CHURN_OBJS - CHURN_LEFT);   /* 3 is prime to 280 */
        if (p[i] && !pattern_ok(p[i], sz[i], make_key(p[i], sz[i], a->seed)))
            a->failures++;
        free(p[i]);
    }
    for (int i = 0; i < CHURN_LEFT; i++) {
        a->left[i] = p[CHURN_OBJS - CHURN_LEFT + i];
        a->left_size[i] = sz[CHURN_OBJS - CHURN_LEFT + i];
    }
    return NULL;
}

/* Run threads [first, last) a few at a time; the main thread checks and
 * frees what each one left. */
static int run_churn(int first, int last)
{
    enum { AT_ONCE = 4 };
    int failures = 0;
    for (int t = first; t < last; t += AT_ONCE) {
        pthread_t th[AT_ONCE];
        struct churn_arg arg[AT_ONCE];
        int n = last - t < AT_ONCE ? last - t : AT_ONCE;
        for (int i = 0; i < n; i++) {
            memset(&arg[i], 0, sizeof arg[i]);
            arg[i].seed = (uint64_t)(t + i) * 0x100000001b3u + 1;
            if (pthread_create(&th[i], NULL, churn_thread, &arg[i]) != 0)
                return -1;
        }
        for (int i = 0; i < n; i++) {
            pthread_join(th[i], NULL);
            failures += arg[i].failures;
            for (int k = 0; k < CHURN_LEFT; k++) {
                void *lp = arg[i].left[k];
                size_t ls = arg[i].left_size[k];
                if (lp && !pattern_ok(lp, ls, make_key(lp, ls, arg[i].seed)))
                    failures++;
                free(arg[i].left[k]);
            }
        }
    }
    return failures;
}

/* 10,000 threads, each with its own cache.  What a thread cached goes back
 * when it exits, so after the first 1,000 (which bring the heap, the central
 * lists and libc's thread stacks near their steady state) RSS stays nearly
 * flat.
 *
 * Measured on x86-64, 2 cores, six runs two at a time: RSS grows by 1.4 to
 * 2.0 MiB between thread 1,000 and 10,000 (about 7 to 9 MiB in all), and
 * stays level from about thread 11,000 to 30,000: the heap's free runs are
 * touched a little more as they fragment, then no more.  A leak is far
 * bigger: caches that were not given back would keep their 2 KiB structure
 * each (19 MiB over 9,000 threads) and up to two batches of objects per
 * class they used (hundreds of MiB).  The bound, 6 MiB, is three times the
 * largest growth seen and a third of the smallest leak. */
#define CHURN_RSS_BOUND_KIB (6 * 1024)

static void test_thread_churn_rss_flat(void **state)
{
    (void)state;
    require_spanmalloc();
    uint64_t t0 = now_ns();
    assert_int_equal(run_churn(0, 1000), 0);
    long rss1 = rss_kib();
    assert_true(rss1 > 0);
    assert_int_equal(run_churn(1000, 10000), 0);
    long rss2 = rss_kib();
    assert_true(rss2 > 0);
    print_message("# thread churn: RSS after 1000 threads %ld KiB, after 10000 %ld KiB (%.1f s)\n",
                  rss1, rss2, (double)(now_ns() - t0) / 1e9);
    if (rss2 - rss1 > CHURN_RSS_BOUND_KIB)
        fail_msg("RSS grew by %ld KiB over 9000 threads (bound %d KiB)", rss2 - rss1,
                 CHURN_RSS_BOUND_KIB);
}

/* ---- cross-thread free -------------------------------------------------------- */

/* A ring of threads: each allocates objects and puts them in the next
 * thread's mailbox; each takes objects from its own mailbox, checks and
 * frees them.  So every object is freed by a thread that did not allocate
 * it, while that thread keeps allocating. */
enum { RING = 4, MAILBOX = 256, RING_OBJS = 40000 };

struct mailbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    void *obj[MAILBOX];
    size_t size[MAILBOX];
    uint64_t key[MAILBOX];
    int head, len;
    int done;   /* the sender has finished */
};

static struct mailbox boxes[RING];

struct ring_arg {
    int id;
    int failures;
    long received;
};

static void *ring_thread(void *argp)
{
    struct ring_arg *a = argp;
    struct mailbox *out = &boxes[(a->id + 1) % RING], *in = &boxes[a->id];
    uint64_t s = (uint64_t)a->id * 7919 + 3;
    int sent = 0, in_done = 0;
    while (sent < RING_OBJS || !in_done) {
        if (sent < RING_OBJS) {
            size_t size = churn_size(&s);
            void *p = malloc(size);
            if (p == NULL) {
                a->failures++;
            } else {
                uint64_t key = make_key(p, size, ((uint64_t)a->id << 32) | (uint64_t)sent);
                pattern_fill(p, size, key);
                pthread_mutex_lock(&out->lock);
                while (out->len == MAILBOX)
                    pthread_cond_wait(&out->cond, &out->lock);
                int slot = (out->head + out->len) % MAILBOX;
                out->obj[slot] = p;
                out->size[slot] = size;
                out->key[slot] = key;
                out->len++;
                pthread_cond_broadcast(&out->cond);
                pthread_mutex_unlock(&out->lock);
            }
            if (++sent == RING_OBJS) {
                pthread_mutex_lock(&out->lock);
                out->done = 1;
                pthread_cond_broadcast(&out->cond);
                pthread_mutex_unlock(&out->lock);
            }
        }
        /* Take everything waiting (wait only once our own sending is done). */
        void *got[MAILBOX];
        size_t gsize[MAILBOX];
        uint64_t gkey[MAILBOX];
        int n = 0;
        pthread_mutex_lock(&in->lock);
        while (sent == RING_OBJS && in->len == 0 && !in->done)
            pthread_cond_wait(&in->cond, &in->lock);
        while (in->len > 0) {
            got[n] = in->obj[in->head];
            gsize[n] = in->size[in->head];
            gkey[n] = in->key[in->head];
            n++;
            in->head = (in->head + 1) % MAILBOX;
            in->len--;
        }
        if (in->done && in->len == 0)
            in_done = 1;
        pthread_cond_broadcast(&in->cond);
        pthread_mutex_unlock(&in->lock);
        for (int i = 0; i < n; i++) {
            if (!pattern_ok(got[i], gsize[i], gkey[i]))
                a->failures++;
            free(got[i]);
            a->received++;
        }
    }
    return NULL;
}

static void test_cross_thread_free(void **state)
{
    (void)state;
    require_spanmalloc();
    pthread_t th[RING];
    struct ring_arg arg[RING];
    for (int i = 0; i < RING; i++) {
        memset(&boxes[i], 0, sizeof boxes[i]);
        pthread_mutex_init(&boxes[i].lock, NULL);
        pthread_cond_init(&boxes[i].cond, NULL);
    }
    for (int i = 0; i < RING; i++) {
        arg[i] = (struct ring_arg){.id = i};
        assert_int_equal(pthread_create(&th[i], NULL, ring_thread, &arg[i]), 0);
    }
    int failures = 0;
    long received = 0;
    for (int i = 0; i < RING; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        failures += arg[i].failures;
        received += arg[i].received;
    }
    assert_int_equal(failures, 0);
    assert_int_equal(received, (long)RING * RING_OBJS);
    /* The memory those frees gave back is sound: reuse it here. */
    uint64_t s = 42;
    void *p[1000];
    size_t sz[1000];
    for (int i = 0; i < 1000; i++) {
        sz[i] = churn_size(&s);
        p[i] = malloc(sz[i]);
        assert_non_null(p[i]);
        pattern_fill(p[i], sz[i], make_key(p[i], sz[i], 5));
    }
    for (int i = 0; i < 1000; i++) {
        assert_true(pattern_ok(p[i], sz[i], make_key(p[i], sz[i], 5)));
        free(p[i]);
    }
}

/* ---- fork while threads allocate ------------------------------------------------ */

static volatile int stop_workers;
static int worker_failures;

static void *busy_thread(void *argp)
{
    uint64_t s = (uint64_t)(uintptr_t)argp * 1000003u + 11;
    enum { SLOTS = 64 };
    void *p[SLOTS] = {0};
    size_t sz[SLOTS] = {0};
    uint64_t n = 0;
    while (!__atomic_load_n(&stop_workers, __ATOMIC_RELAXED)) {
        int i = (int)(rnd(&s) % SLOTS);
        if (p[i]) {
            if (!pattern_ok(p[i], sz[i], make_key(p[i], sz[i], 9)))
                __atomic_add_fetch(&worker_failures, 1, __ATOMIC_RELAXED);
            free(p[i]);
        }
        /* Now and then a large object, so the heap lock is busy too. */
        sz[i] = (n++ % 64 == 0) ? 40000 + rnd(&s) % 300000 : churn_size(&s);
        p[i] = malloc(sz[i]);
        if (p[i] == NULL) {
            __atomic_add_fetch(&worker_failures, 1, __ATOMIC_RELAXED);
            continue;
        }
        /* Only the head: the point is to keep the locks busy. */
        if (sz[i] > 512)
            sz[i] = 512;
        pattern_fill(p[i], sz[i], make_key(p[i], sz[i], 9));
    }
    for (int i = 0; i < SLOTS; i++)
        free(p[i]);
    return NULL;
}

/* What a child does: allocate, check, free, small and large, and free an
 * object its parent allocated before the fork.  The exit code names the
 * first thing that went wrong. */
static void child_work(void *inherited, size_t inherited_size)
{
    alarm(60);   /* a deadlocked child dies; the parent sees SIGALRM */
    if (!pattern_ok(inherited, inherited_size, make_key(inherited, inherited_size, 77)))
        _exit(2);
    free(inherited);
    uint64_t s = (uint64_t)getpid();
    enum { N = 200 };
    void *p[N];
    size_t sz[N];
    uint64_t key[N];
    for (int i = 0; i < N; i++) {
        sz[i] = i % 20 == 0 ? 100000 + rnd(&s) % (1u << 20) : churn_size(&s);
        p[i] = i % 3 == 0 ? calloc(1, sz[i]) : malloc(sz[i]);
        if (p[i] == NULL)
            _exit(3);
        key[i] = make_key(p[i], sz[i], (uint64_t)i);
        pattern_fill(p[i], sz[i], key[i]);
    }
    for (int i = 0; i < N; i++) {
        if (!pattern_ok(p[i], sz[i], key[i]))
            _exit(4);
        void *q = realloc(p[i], sz[i] + 1000);
        if (q == NULL || !pattern_ok(q, sz[i], key[i]))
            _exit(5);
        free(q);
    }
    _exit(0);
}

/* Wait for a child for at most timeout_ns; on timeout kill it and report. */
static int wait_child(pid_t pid, uint64_t timeout_ns, int *status)
{
    uint64_t deadline = now_ns() + timeout_ns;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            return -2;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static void test_fork_while_threads_allocate(void **state)
{
    (void)state;
    require_spanmalloc();
    enum { WORKERS = 4, FORKS = 50 };
    /* On a loaded machine a child takes milliseconds; a minute means a
     * deadlock.  The parent side of fork() itself is covered by a process
     * alarm: if fork's handlers deadlock, the program dies of SIGALRM and
     * the TAP driver reports the missing results. */
    const uint64_t child_timeout_ns = 60ull * 1000000000u;
    alarm(600);
    uint64_t t0 = now_ns();
    stop_workers = 0;
    worker_failures = 0;
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, busy_thread, (void *)(uintptr_t)i), 0);
    int bad = 0;
    for (int f = 0; f < FORKS; f++) {
        size_t isz = f % 2 ? 300 : 70000;
        void *inherited = malloc(isz);
        assert_non_null(inherited);
        pattern_fill(inherited, isz, make_key(inherited, isz, 77));
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            child_work(inherited, isz);
        int status = 0;
        int w = wait_child(pid, child_timeout_ns, &status);
        if (w == -2) {
            print_message("# fork %d: child %d did not finish in time (deadlock?)\n", f, (int)pid);
            bad++;
        } else if (w < 0) {
            print_message("# fork %d: waitpid failed: %s\n", f, strerror(errno));
            bad++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (WIFSIGNALED(status))
                print_message("# fork %d: child killed by signal %d\n", f, WTERMSIG(status));
            else
                print_message("# fork %d: child exited %d\n", f, WEXITSTATUS(status));
            bad++;
        }
        /* The parent's copy is untouched by the child's free. */
        assert_true(pattern_ok(inherited, isz, make_key(inherited, isz, 77)));
        free(inherited);
    }
    __atomic_store_n(&stop_workers, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    alarm(0);
    print_message("# fork: %d children while %d threads allocate (%.1f s)\n", FORKS, WORKERS,
                  (double)(now_ns() - t0) / 1e9);
    assert_int_equal(bad, 0);
    assert_int_equal(worker_failures, 0);
}

/* ---- the last thread leaves with pthread_exit --------------------------------- */

/* glibc ends the process with exit(0) when its last thread exits; the
 * allocator's worker thread must not keep it alive.  Each case runs in a
 * child process, which the parent waits for with a deadline. */

/* Threads the kernel counts in this process (/proc/self/stat, field 20). */
static long kernel_threads(void)
{
    char buf[1024];
    if (!proc_read("/proc/self/stat", buf, sizeof buf))
        return -1;
    char *p = strrchr(buf, ')');
    for (int field = 2; p != NULL && field < 20; field++) {
        p = strchr(p + 1, ' ');
    }
    return p != NULL ? strtol(p + 1, NULL, 10) : -1;
}

static int last_pipe[2];

/* Start the worker with a large allocation; exit 3 if it is not running,
 * since the case would then prove nothing. */
static void child_start_worker(void)
{
    alarm(60);
    char *volatile p = malloc(1 << 20);   /* volatile: the pair must not be optimized away */
    if (p == NULL)
        _exit(5);
    p[0] = 1;
    free(p);
    if (kernel_threads() != 2)
        _exit(3);
}

/* The program's last thread: allocate, free, report through the pipe. */
static void *last_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++) {
        char *p = malloc(i % 2 ? 100000 : 100);
        if (p == NULL)
            _exit(5);
        p[0] = 1;
        free(p);
    }
    char c = 'd';
    if (write(last_pipe[1], &c, 1) != 1)
        _exit(6);
    return NULL;
}

/* The first case's child: main() starts the last thread and leaves through
 * pthread_exit. */
static void child_main_pthread_exit(void)
{
    child_start_worker();
    pthread_t t;
    if (pthread_create(&t, NULL, last_thread, NULL) != 0)
        _exit(4);
    pthread_exit(NULL);
}

/* The second case: fork from a thread; in the child that thread is the only
 * one, and it ends by returning from its function (what Python's
 * test_threading does in test_3_join_in_forked_from_thread). */
static void *forking_thread(void *arg)
{
    (void)arg;
    pid_t pid = fork();
    if (pid == 0) {
        child_start_worker();
        return last_thread(NULL);
    }
    return (void *)(intptr_t)pid;
}

static void check_last_thread_exit(const char *what, pid_t pid)
{
    assert_true(pid > 0);
    close(last_pipe[1]);
    int status = 0;
    uint64_t t0 = now_ns();
    int w = wait_child(pid, 30ull * 1000000000u, &status);
    char c = 0;
    ssize_t n = read(last_pipe[0], &c, 1);
    close(last_pipe[0]);
    print_message("# %s: child ended after %.2f s\n", what, (double)(now_ns() - t0) / 1e9);
    if (w == -2)
        fail_msg("%s: the child did not exit within 30 s", what);
    assert_int_equal(w, 0);
    if (WIFSIGNALED(status))
        fail_msg("%s: the child was killed by signal %d", what, WTERMSIG(status));
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 3)
        fail_msg("%s: the allocator's worker thread was not running in the child", what);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(n, 1);
    assert_int_equal(c, 'd');
}

static void test_main_pthread_exit_ends_process(void **state)
{
    (void)state;
    require_spanmalloc();
    assert_int_equal(pipe(last_pipe), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(last_pipe[0]);
        child_main_pthread_exit();
    }
    check_last_thread_exit("main() leaves with pthread_exit", pid);
}

static void test_forked_thread_return_ends_process(void **state)
{
    (void)state;
    require_spanmalloc();
    assert_int_equal(pipe(last_pipe), 0);
    fflush(stdout);
    fflush(stderr);
    pthread_t t;
    void *ret = NULL;
    assert_int_equal(pthread_create(&t, NULL, forking_thread, NULL), 0);
    assert_int_equal(pthread_join(t, &ret), 0);
    check_last_thread_exit("fork from a thread, which returns in the child", (pid_t)(intptr_t)ret);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thread_churn_rss_flat),
        cmocka_unit_test(test_cross_thread_free),
        cmocka_unit_test(test_fork_while_threads_allocate),
        cmocka_unit_test(test_main_pthread_exit_ends_process),
        cmocka_unit_test(test_forked_thread_return_ends_process),
    };
    return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
