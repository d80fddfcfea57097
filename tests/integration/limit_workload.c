/*
 * limit_workload.c - the soft memory limit's workload, as a plain program
 * that any allocator can serve (run it with LD_PRELOAD; it links to no
 * allocator).  test_memlimit runs it under spanmalloc and checks its peak
 * RSS; bench/limit_run.sh runs it under each allocator for the chart in
 * doc/release.md.
 *
 * At most about 200 MiB are live at any time, in rounds:
 *   1. small objects of 4-32 KiB, 160 MiB of them, every byte written;
 *      then 90% of them freed, in random order, and the survivors of the
 *      round before freed too (so about 16 MiB survive a round);
 *   2. large objects of 1-4 MiB, 180 MiB of them, written, then all freed.
 * The survivors scatter the small objects' pages, so the freed runs between
 * them are too short for the large objects: every large phase takes pages
 * the heap does not have resident (released or new) while the small
 * phase's freed pages are still resident.  An allocator that does not give
 * idle pages back before it takes new ones holds both.
 *
 * A thread samples Rss from /proc/self/smaps_rollup every 2 ms (open and
 * read only: no malloc in the sampler); at the end the program prints the
 * sampled peak and the kernel's VmHWM.  With --csv it also prints every
 * sample as "ms,rss_bytes" on stdout.  ROUNDS (default 6) sets the rounds.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
    /* xorshift64*: the same sequence under every allocator. */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

/* The value after "key:" in a /proc file, in kB; 0 if absent. */
static uint64_t proc_kb(const char *path, const char *key)
{
    char buf[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    size_t klen = strlen(key);
    for (char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, key, klen) == 0 && p[klen] == ':')
            return strtoull(p + klen + 1, NULL, 10);
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static volatile int stop;
static volatile uint64_t peak_kb;
static int csv;
static uint64_t t0;

static void *sampler(void *arg)
{
    (void)arg;
    while (!stop) {
        uint64_t kb = proc_kb("/proc/self/smaps_rollup", "Rss");
        if (kb > peak_kb)
            peak_kb = kb;
        if (csv) {
            char line[64];
            int len = snprintf(line, sizeof line, "%llu,%llu\n",
                               (unsigned long long)(now_ms() - t0), (unsigned long long)kb * 1024);
            if (write(1, line, (size_t)len) < 0)
                break;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void touch(char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 4096)
        p[i] = (char)i;
    p[n - 1] = 1;
}

int main(int argc, char **argv)
{
    csv = argc > 1 && strcmp(argv[1], "--csv") == 0;
    int rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 6;
    enum { MAXSMALL = 160 * 1024 * 1024 / 4096, MAXLARGE = 180 };
    static void *small[MAXSMALL], *kept[MAXSMALL];
    static void *large[MAXLARGE];
    size_t nkept = 0;

    t0 = now_ms();
    pthread_t t;
    if (pthread_create(&t, NULL, sampler, NULL) != 0)
        return 2;
    for (int r = 0; r < rounds; r++) {
        size_t n = 0, bytes = 0;
        while (bytes < 160 * MiB && n < MAXSMALL) {
            size_t sz = 4 * KiB + next() % (28 * KiB + 1);
            if ((small[n] = malloc(sz)) == NULL)
                return 3;
            touch(small[n++], sz);
            bytes += sz;
        }
        /* Survivors of the round before go now; a tenth of this round's,
         * chosen at random, stay. */
        for (size_t i = 0; i < nkept; i++)
            free(kept[i]);
        nkept = 0;
        for (size_t i = n; i > 1; i--) {   /* Fisher-Yates: free in random order */
            size_t j = next() % i;
            void *x = small[i - 1];
            small[i - 1] = small[j];
            small[j] = x;
        }
        for (size_t i = 0; i < n; i++) {
            if (i % 10 == 0)
                kept[nkept++] = small[i];
            else
                free(small[i]);
        }
        size_t m = 0;
        bytes = 0;
        while (bytes < 180 * MiB - 4 * MiB && m < MAXLARGE) {
            size_t sz = 1 * MiB + next() % (3 * MiB + 1);
            if ((large[m] = malloc(sz)) == NULL)
                return 3;
            touch(large[m++], sz);
            bytes += sz;
        }
        for (size_t i = 0; i < m; i++)
            free(large[i]);
    }
    for (size_t i = 0; i < nkept; i++)
        free(kept[i]);
    usleep(20 * 1000);
    stop = 1;
    pthread_join(t, NULL);
    uint64_t hwm = proc_kb("/proc/self/status", "VmHWM");
    fprintf(csv ? stderr : stdout, "peak_rss_kib=%llu vmhwm_kib=%llu ms=%llu\n",
            (unsigned long long)peak_kb, (unsigned long long)hwm,
            (unsigned long long)(now_ms() - t0));
    return 0;
}
