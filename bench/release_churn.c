/*
 * release_churn.c - the cost of giving large freed memory back at free:
 * a loop that frees and reallocates large buffers, run under LD_PRELOAD
 * with each release policy, timed with getrusage (system time counts the
 * madvise calls and the page faults that bring released pages back).
 *
 *   release_churn NLIVE MIN_KIB MAX_KIB ITERS
 *
 * keeps NLIVE buffers of MIN_KIB-MAX_KIB (random, fixed seed), every page
 * written; each iteration frees one at random and allocates another of a
 * new random size, writing its pages.  Then frees everything and prints
 * user and system seconds, minor faults, and Rss after the last free.
 * Sizes in the doc/release.md table: 4 x 2-4 MiB, 32 x 1-4 MiB,
 * 16 x 64 KiB-1 MiB.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static long rss_kib(void)
{
    char buf[4096];
    int fd = open("/proc/self/smaps_rollup", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = strstr(buf, "\nRss:");
    return p ? strtol(p + 5, NULL, 10) : -1;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s NLIVE MIN_KIB MAX_KIB ITERS\n", argv[0]);
        return 2;
    }
    size_t nlive = strtoul(argv[1], NULL, 10);
    size_t lo = strtoul(argv[2], NULL, 10) * 1024, hi = strtoul(argv[3], NULL, 10) * 1024;
    long iters = strtol(argv[4], NULL, 10);
    char **v = calloc(nlive, sizeof *v);
    for (long i = -(long)nlive; i < iters; i++) {
        size_t k = i < 0 ? (size_t)(i + (long)nlive) : next() % nlive;
        free(v[k]);
        size_t sz = lo + next() % (hi - lo + 1);
        v[k] = malloc(sz);
        for (size_t j = 0; j < sz; j += 4096)
            v[k][j] = (char)j;
    }
    for (size_t k = 0; k < nlive; k++)
        free(v[k]);
    long rss = rss_kib();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("user %.3f s sys %.3f s minflt %ld rss_after_free %ld KiB\n",
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
           ru.ru_minflt, rss);
    free(v);
    return 0;
}
