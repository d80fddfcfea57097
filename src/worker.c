/*
 * worker.c - the background thread: every SM_WORKER_TICK_NS it runs the
 * scavenger's tick (scavenge.c), writes the periodic stats line
 * (SPANMALLOC_STATS=<interval>) and lets the profiler write the profiles
 * its signal asked for (mprof.c).
 *
 * The worker is started lazily, from a slow path with no lock held, once
 * the heap has memory to manage (or stats logging is asked for).  fork()
 * leaves the child without it; the child's next slow path starts a new one.
 * It runs with every signal blocked, so the program's handlers never run
 * on it.
 *
 * The worker must not keep the process alive.  glibc ends a process with
 * exit(0) when its last thread leaves through pthread_exit (main() may call
 * it and let other threads finish the work; a child forked from a thread
 * ends that way when the thread function returns).  glibc counts the worker
 * among those threads, so without care the program's last thread would
 * leave behind a zombie main thread and the worker, ticking forever and
 * deaf to every signal but SIGKILL (it blocks them all).  So each tick the
 * worker asks the kernel whether it is alone (the main thread's stat in
 * /proc: a zombie, and two threads counted, that zombie and the worker) and
 * if so does what glibc would have done: exit(0), at most a tick late.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "profproto.h"
#include "stack.h"

#define SM_WORKER_TICK_NS (250ull * 1000 * 1000)

static int worker_state;   /* 0: not running, 1: starting or running */

/* True when the worker is the process's only live thread: the main thread
 * has exited (a zombie until the whole group is gone) and the kernel counts
 * two threads, it and the worker.  Reads the main thread's stat file,
 * /proc/self/task/<pid>/stat (the process's /proc/self/stat would make the
 * kernel walk every thread to add up their times), without malloc; without
 * /proc the answer is no, and the process lives on as before. */
static bool worker_alone(void)
{
    char buf[1024];
    char path[64] = "/proc/self/task/";
    char digits[24];
    int nd = 0;
    for (unsigned long pid = (unsigned long)getpid(); pid != 0 || nd == 0; pid /= 10)
        digits[nd++] = (char)('0' + pid % 10);
    size_t len = strlen(path);
    while (nd > 0)
        path[len++] = digits[--nd];
    memcpy(path + len, "/stat", sizeof "/stat");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    /* pid (comm) state ppid ...: comm may hold spaces and parentheses, so
     * the fields start after the last ')'.  Field 3 is the state, field 20
     * num_threads. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return false;
    char state = p[2];
    p += 2;
    for (int field = 3; field < 20; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return false;
        p++;
    }
    char *end;
    long threads = strtol(p, &end, 10);
    if (end == p)
        return false;
    /* The endpoint's thread (http.c) waits alongside the worker. */
    return state == 'Z' && threads == 2 + sm_http_running();
}

static void *worker_main(void *arg)
{
    (void)arg;
    /* Where every thread pthread_create starts returns to: stacks end
     * there (stack.c). */
    sm_stack_note_thread_root((uintptr_t)__builtin_return_address(0));
    uint64_t next_stats = sm_nanotime() + sm_opts.stats_interval_ns;
    /* The endpoint starts here: never inside a malloc, and its thread
     * inherits the worker's blocked signals. */
    sm_http_start();
    /* A profile will be written: find zlib now, in this ordinary thread
     * (dlopen allocates and takes the loader's lock), not at exit or in
     * a fork child. */
    if (sm_mprof_wants_worker() || sm_http_wanted() || sm_opts.profile_prefix[0] != '\0')
        sm_profproto_prepare();
    for (;;) {
        struct timespec ts = {0, (long)SM_WORKER_TICK_NS};
        nanosleep(&ts, NULL);
        uint64_t now = sm_nanotime();
        if (sm_opts.scavenge)
            sm_scavenge_tick(now);
        if (sm_opts.stats_mode == SM_STATS_INTERVAL && now >= next_stats) {
            sm_mstats_log_line();
            next_stats += sm_opts.stats_interval_ns;
            if (next_stats < now)
                next_stats = now + sm_opts.stats_interval_ns;
        }
        sm_mprof_tick(now);
        if (worker_alone())
            exit(0);
    }
    return NULL;
}

bool sm_worker_wanted(void)
{
    return sm_opts.scavenge || sm_opts.stats_mode == SM_STATS_INTERVAL || sm_mprof_wants_worker() ||
           sm_http_wanted();
}

void sm_worker_start_slow(void)
{
    int expected = 0;
    if (!sm_worker_wanted() ||
        !__atomic_compare_exchange_n(&worker_state, &expected, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        return;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    /* The worker must not run with the program's signals: block them all. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    if (pthread_create(&t, &attr, worker_main, NULL) != 0)
        __atomic_store_n(&worker_state, 0, __ATOMIC_RELAXED);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

int sm_worker_running(void)
{
    return __atomic_load_n(&worker_state, __ATOMIC_RELAXED);
}

void sm_worker_after_fork_child(void)
{
    worker_state = 0;
}
