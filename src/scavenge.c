/*
 * scavenge.c - giving memory back: sm_free_os_memory, the release policy,
 * the soft memory limit, and the background worker that runs the scavenger
 * and the periodic stats log.
 *
 * The scavenger (Go's mgcscavenge.go, simplified): every tick it looks at
 * the heap's idle resident bytes (heap_idle - heap_released) and releases,
 * oldest runs first, whatever exceeds SPANMALLOC_RETAIN percent of
 * heap_inuse; runs idle for longer than SM_SCAV_MAX_IDLE go back even below
 * that.  It releases in runs of at least 64 KiB (mheap.c), and never holds
 * the heap lock while madvise runs.  A tick costs a lock and a walk of the
 * free lists; at 4 ticks a second that stays far below 1% of a core.
 *
 * The worker is started lazily, from a slow path with no lock held, once
 * the heap has memory to manage (or stats logging is asked for).  fork()
 * leaves the child without it; the child's next slow path starts a new one.
 *
 * Each tick also counts sm_scav_epoch, and first takes back the large spans
 * that have sat unused in a thread's large cache for SM_LARGECACHE_IDLE_TICKS
 * ticks (largecache.c).
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
 *
 * sm_free_os_memory flushes the calling thread's cache, asks every other
 * thread to flush at its next slow path (a generation counter; nobody is
 * stopped or signalled), takes every thread's cached large spans back (they
 * can be taken without the owner: largecache.c), returns fully free spans
 * from the central lists and releases every idle page.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "spanmalloc.h"

#define SM_SCAV_TICK_NS (250ull * 1000 * 1000)
#define SM_SCAV_MAX_IDLE_NS (5ull * 1000 * 1000 * 1000)

SM_HIDDEN uint64_t sm_flush_gen;
SM_HIDDEN uint32_t sm_scav_epoch;
static int worker_state;   /* 0: not running, 1: starting or running */

/* ---- explicit release ---------------------------------------------------- */

void sm_release_central_empty(void)
{
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        sm_mcentral_release_empty(&sm_central[cls], &sm_heap);
}

size_t sm_free_os_memory(void)
{
    sm_init();
    __atomic_add_fetch(&sm_flush_gen, 1, __ATOMIC_RELAXED);
    struct sm_mcache *c = sm_tls_mcache;
    if (c != &sm_mcache_empty) {
        sm_mcache_flush(c);
        c->flush_gen = __atomic_load_n(&sm_flush_gen, __ATOMIC_RELAXED);
    }
    sm_largecache_reclaim_all();
    sm_release_central_empty();
    return sm_mheap_scavenge(&sm_heap, SIZE_MAX, 0, SM_SCAV_EXPLICIT);
}

SM_EXPORT int malloc_trim(size_t pad)
{
    (void)pad;   /* glibc keeps pad bytes at the top of the heap; we have no top */
    return sm_free_os_memory() > 0;
}

int sm_set_release_policy(enum sm_release policy)
{
    if ((int)policy < SM_RELEASE_DONTNEED || policy > SM_RELEASE_NONE) {
        errno = EINVAL;
        return -1;
    }
    sm_init();
    return __atomic_exchange_n(&sm_opts.release, (int)policy, __ATOMIC_RELAXED);
}

size_t sm_set_memory_limit(size_t bytes)
{
    sm_init();
    if (bytes == 0)
        bytes = 1;
    return __atomic_exchange_n(&sm_opts.memlimit, bytes, __ATOMIC_RELAXED);
}

/* ---- the background worker ------------------------------------------------ */

/* One scavenger step; returns bytes released. */
size_t sm_scavenge_tick(uint64_t now)
{
    /* Large spans no thread has reused for a while go back to the heap
     * first, where the rules below apply to them. */
    uint32_t epoch = __atomic_add_fetch(&sm_scav_epoch, 1, __ATOMIC_RELAXED);
    if (epoch > SM_LARGECACHE_IDLE_TICKS)
        sm_largecache_reclaim(epoch - SM_LARGECACHE_IDLE_TICKS);
    sm_mheap_lock(&sm_heap);
    uint64_t idle_dirty = (sm_heap.st.pages_free - sm_heap.st.pages_released) << SM_PAGE_SHIFT;
    uint64_t inuse = sm_heap.st.pages_inuse << SM_PAGE_SHIFT;
    sm_mheap_unlock(&sm_heap);
    uint64_t keep = inuse / 100 * sm_opts.retain_percent;
    size_t done = 0;
    if (idle_dirty > keep)
        done += sm_mheap_scavenge(&sm_heap, idle_dirty - keep, 0, SM_SCAV_BACKGROUND);
    if (now > SM_SCAV_MAX_IDLE_NS)
        done += sm_mheap_scavenge(&sm_heap, SIZE_MAX, now - SM_SCAV_MAX_IDLE_NS, SM_SCAV_BACKGROUND);
    return done;
}

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
    uint64_t next_stats = sm_nanotime() + sm_opts.stats_interval_ns;
    /* The endpoint starts here: never inside a malloc, and its thread
     * inherits the worker's blocked signals. */
    sm_http_start();
    for (;;) {
        struct timespec ts = {0, (long)SM_SCAV_TICK_NS};
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
