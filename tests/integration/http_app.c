/* http_app.c - the program the endpoint tests run under LD_PRELOAD with
 * SPANMALLOC_HTTP set.  It knows nothing of spanmalloc.
 *
 *   http_app SECONDS THREADS [STOPFILE]
 *
 * THREADS threads allocate and free for SECONDS seconds (or until STOPFILE
 * exists), each keeping a
 * ring of 2,000 live objects of 64 to 2,047 bytes (so the heap profile
 * has live samples at http_app_churn), and each measures the longest time
 * between two of its malloc/free pairs: if the endpoint's thread ever kept
 * malloc waiting (a lock held while it talks to a client), that gap shows
 * it.  Each thread pauses 0.2 ms between batches of 64.  At the end: "ops N max_stall_ms M" on stdout, exit 0. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <unistd.h>

#define RING 2000

static double seconds;
static int stop;
static uint64_t ops_total;
static double stall_max;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static void *http_app_churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    char **ring = calloc(RING, sizeof *ring);
    double start = now(), last = start, stall = 0;
    uint64_t ops = 0;
    for (;;) {
        for (int k = 0; k < 64; k++) {
            size_t i = (size_t)rand_r(&seed) % RING;
            free(ring[i]);
            size_t n = 64 + (size_t)rand_r(&seed) % 1984;
            ring[i] = malloc(n);
            memset(ring[i], (int)n, n);
            ops++;
        }
        /* A service, not a spinning benchmark: on two cores, eight threads
         * that never sleep would leave the endpoint (and the test's
         * clients) a sliver of CPU, which tests the scheduler. */
        struct timespec pause = {0, 200 * 1000};
        nanosleep(&pause, NULL);
        double t = now();
        if (t - last > stall)
            stall = t - last;
        last = t;
        if (t - start >= seconds || __atomic_load_n(&stop, __ATOMIC_RELAXED))
            break;
    }
    for (size_t i = 0; i < RING; i++)
        free(ring[i]);
    free(ring);
    __atomic_add_fetch(&ops_total, ops, __ATOMIC_RELAXED);
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    if (stall > stall_max)
        stall_max = stall;
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void *short_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        free(malloc(100));
    usleep(500000);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "fork") == 0 || strcmp(argv[1], "pthread_exit") == 0)) {
        /* Allocations the compiler may not elide: the endpoint starts
         * with the allocator's background worker, at its first refill. */
        for (int i = 0; i < 1000; i++) {
            void *volatile p = malloc(1000);
            free(p);
        }
        if (argv[1][0] == 'f') {
            sleep(1);
            pid_t pid = fork();
            if (pid == 0) {
                sleep(4);
                _exit(0);
            }
            printf("child %d\n", (int)pid);
            return pid > 0 ? 0 : 1;
        }
        pthread_t th;
        pthread_create(&th, NULL, short_worker, NULL);
        pthread_exit(NULL);
    }
    seconds = argc > 1 ? atof(argv[1]) : 5;
    int nthreads = argc > 2 ? atoi(argv[2]) : 8;
    pthread_t t[64];
    if (nthreads < 1 || nthreads > 64)
        return 2;
    for (int i = 0; i < nthreads; i++)
        pthread_create(&t[i], NULL, http_app_churn, (void *)(uintptr_t)(i + 1));
    const char *stopfile = argc > 3 ? argv[3] : NULL;
    double start = now();
    while (stopfile != NULL && now() - start < seconds) {
        if (access(stopfile, F_OK) == 0) {
            __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
            break;
        }
        usleep(50000);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    printf("ops %llu max_stall_ms %.0f\n", (unsigned long long)ops_total, stall_max * 1000);
    return 0;
}
