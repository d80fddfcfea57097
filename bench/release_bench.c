/*
 * release_bench.c - how fast does freed memory go back to the OS?
 *
 * A plain C program that uses whatever malloc the process has: run it with
 * an allocator's library in LD_PRELOAD (bench/release_run.sh does, for every
 * allocator).  It
 *   1. allocates a burst of memory (default 256 MiB: half in small objects
 *      of 16 B-4 KiB, half in large ones of 64 KiB-1 MiB; every page is
 *      written),
 *   2. frees all of it,
 *   3. sleeps, sampling the process's RSS at fixed times after the free
 *      (default 1, 5 and 15 s),
 *   4. calls the allocator's own "give memory back now" function, found with
 *      dlsym(RTLD_DEFAULT, ...), and samples once more.
 *
 * RSS and LazyFree come from /proc/self/smaps_rollup (read with open/read,
 * so sampling does not allocate).  LazyFree counts pages given back with
 * MADV_FREE that the kernel has not reclaimed yet: they are still in Rss
 * but cost nothing under memory pressure.
 *
 * Output, one line per sample, comma-separated:
 *   allocator,phase,seconds,rss_bytes,lazyfree_bytes
 * phase: start (before the burst), peak (before the free), freed (right after
 * it), wait (at each configured time), release (after the explicit release
 * call), and with --timeline also sample (every --interval ms from the free
 * until the release).  seconds = time since the free finished (0 for start
 * and peak).  A line starting with '#' is a comment (what was detected, how
 * long things took).
 *
 * Options:
 *   --quick            wait times 0.5, 1, 2 s
 *   --waits LIST       wait times in seconds, comma-separated (default 1,5,15)
 *   --mib N            size of the burst in MiB (default 256)
 *   --timeline         also print a sample every --interval ms
 *   --interval MS      sampling interval for --timeline (default 100)
 *   --name NAME        allocator name to print (default: detected)
 *   --no-release       skip the explicit release call
 *
 * Build: cc -O2 -o release_bench release_bench.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_WAITS 32

static const char *alloc_name = "unknown";
static const char *malloc_lib = "?";

/* ---- output without stdio buffers (they would be malloc'ed) ------------- */

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(1, p, (size_t)n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (int)w;
    }
}

/* ---- RSS ------------------------------------------------------------------ */

static uint64_t field_kib(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return 0;
    p += strlen(key);
    return strtoull(p, NULL, 10);
}

static void read_rss(uint64_t *rss, uint64_t *lazy)
{
    static char buf[8192];
    *rss = *lazy = 0;
    int fd = open("/proc/self/smaps_rollup", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[len] = 0;
    *rss = field_kib(buf, "\nRss:") * 1024;
    *lazy = field_kib(buf, "\nLazyFree:") * 1024;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void sample(const char *phase, double seconds)
{
    uint64_t rss, lazy;
    read_rss(&rss, &lazy);
    out("%s,%s,%.3f,%llu,%llu\n", alloc_name, phase, seconds,
        (unsigned long long)rss, (unsigned long long)lazy);
}

/* ---- which allocator, and how to make it give memory back --------------- */

static void detect(void)
{
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    if (m && dladdr(m, &info) && info.dli_fname)
        malloc_lib = info.dli_fname;
    const char *base = strrchr(malloc_lib, '/');
    base = base ? base + 1 : malloc_lib;
    if (strstr(base, "spanmalloc"))
        alloc_name = "spanmalloc";
    else if (strstr(base, "jemalloc"))
        alloc_name = "jemalloc";
    else if (strstr(base, "tcmalloc"))
        alloc_name = "tcmalloc";
    else if (strstr(base, "mimalloc"))
        alloc_name = "mimalloc";
    else if (strncmp(base, "libc.so", 7) == 0 || strncmp(base, "libc-", 5) == 0)
        alloc_name = "glibc";
    else
        alloc_name = "unknown";
}

/* Calls the explicit release function of the allocator serving malloc.
 * Returns a short description of what was called. */
static const char *explicit_release(void)
{
    const char *a = alloc_name;
    if (strcmp(a, "spanmalloc") == 0) {
        size_t (*f)(void) = (size_t(*)(void))dlsym(RTLD_DEFAULT, "sm_free_os_memory");
        if (f) {
            f();
            return "sm_free_os_memory()";
        }
    } else if (strcmp(a, "jemalloc") == 0) {
        int (*f)(const char *, void *, size_t *, void *, size_t) =
            (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
        if (f && f("arena.4096.purge", NULL, NULL, NULL, 0) == 0)
            return "mallctl(\"arena.4096.purge\")";
    } else if (strcmp(a, "tcmalloc") == 0) {
        void (*f)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory");
        if (f) {
            f();
            return "MallocExtension_ReleaseFreeMemory()";
        }
    } else if (strcmp(a, "mimalloc") == 0) {
        void (*f)(_Bool) = (void (*)(_Bool))dlsym(RTLD_DEFAULT, "mi_collect");
        if (f) {
            f(1);
            return "mi_collect(true)";
        }
    } else if (strcmp(a, "glibc") == 0) {
        /* Only here: with another allocator preloaded, malloc_trim may
         * still resolve to glibc's, which would trim an unused heap. */
        int (*f)(size_t) = (int (*)(size_t))dlsym(RTLD_DEFAULT, "malloc_trim");
        if (f) {
            f(0);
            return "malloc_trim(0)";
        }
    }
    return NULL;
}

/* ---- the burst ------------------------------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_rand(void)
{ /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ULL;
}

static size_t rand_between(size_t lo, size_t hi)
{
    return lo + (size_t)(next_rand() % (uint64_t)(hi - lo + 1));
}

static void touch(unsigned char *p, size_t n, unsigned char v)
{
    if (n <= 4096) {
        memset(p, v, n);
        return;
    }
    for (size_t i = 0; i < n; i += 4096)
        p[i] = v;
    p[n - 1] = v;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--quick] [--waits S,S,...] [--mib N] [--timeline] [--interval MS]\n"
            "          [--name NAME] [--no-release]\n"
            "Allocates a burst, frees it, prints RSS at fixed times after the free\n"
            "and after the allocator's explicit release call, as\n"
            "  allocator,phase,seconds,rss_bytes,lazyfree_bytes\n",
            prog);
}

int main(int argc, char **argv)
{
    double waits[MAX_WAITS] = {1, 5, 15};
    int nwaits = 3;
    size_t mib = 256;
    int timeline = 0, do_release = 1;
    double interval = 0.1;
    const char *name = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            waits[0] = 0.5, waits[1] = 1, waits[2] = 2;
            nwaits = 3;
        } else if (strcmp(a, "--waits") == 0 && v) {
            char *s = (char *)v, *end;
            nwaits = 0;
            while (*s && nwaits < MAX_WAITS) {
                double w = strtod(s, &end);
                if (end == s || w < 0) {
                    fprintf(stderr, "bad --waits '%s'\n", v);
                    return 2;
                }
                if (nwaits > 0 && w <= waits[nwaits - 1]) {
                    fprintf(stderr, "--waits must increase\n");
                    return 2;
                }
                waits[nwaits++] = w;
                s = *end == ',' ? end + 1 : end;
            }
            i++;
        } else if (strcmp(a, "--mib") == 0 && v) {
            mib = strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--timeline") == 0) {
            timeline = 1;
        } else if (strcmp(a, "--interval") == 0 && v) {
            interval = strtod(v, NULL) / 1000.0;
            if (interval <= 0.001)
                interval = 0.001;
            i++;
        } else if (strcmp(a, "--name") == 0 && v) {
            name = v;
            i++;
        } else if (strcmp(a, "--no-release") == 0) {
            do_release = 0;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, argv[0]);
            return 0;
        } else {
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (mib == 0)
        mib = 1;

    detect();
    const char *detected = alloc_name;
    if (name)
        alloc_name = name;
    out("# malloc_from=%s detected=%s\n", malloc_lib, detected);

    /* The pointer table comes from mmap, so it is not part of any heap. */
    const size_t budget = mib << 20;
    const size_t small_budget = budget / 2;
    const size_t max_objs = small_budget / 16 + budget / (64 << 10) + 16;
    void **ptrs = mmap(NULL, max_objs * sizeof *ptrs, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ptrs == MAP_FAILED) {
        perror("mmap");
        return 1;
    }

    sample("start", 0);

    /* Small and large objects interleaved: one large object whenever the
     * large share falls behind the small one, so both kinds are spread over
     * the whole burst as in a real program. */
    double t0 = now_s();
    size_t n = 0, small_bytes = 0, large_bytes = 0;
    while (small_bytes + large_bytes < budget && n < max_objs) {
        size_t sz;
        int large = large_bytes < small_bytes && large_bytes < budget - small_budget;
        if (large || small_bytes >= small_budget)
            sz = rand_between(64 << 10, 1 << 20);
        else
            sz = rand_between(16, 4096);
        unsigned char *p = malloc(sz);
        if (!p) {
            fprintf(stderr, "malloc(%zu) failed\n", sz);
            return 1;
        }
        touch(p, sz, (unsigned char)n);
        ptrs[n++] = p;
        if (sz >= (64 << 10))
            large_bytes += sz;
        else
            small_bytes += sz;
    }
    double t1 = now_s();
    sample("peak", 0);

    /* Free in a fixed random order (not the allocation order, which would
     * let some allocators coalesce everything trivially). */
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(next_rand() % i);
        void *tmp = ptrs[i - 1];
        ptrs[i - 1] = ptrs[j];
        ptrs[j] = tmp;
    }
    for (size_t i = 0; i < n; i++)
        free(ptrs[i]);
    double tf = now_s();
    sample("freed", 0);
    out("# objects=%zu small_bytes=%zu large_bytes=%zu alloc_s=%.3f free_s=%.3f\n", n,
        small_bytes, large_bytes, t1 - t0, tf - t1);

    /* Sleep, waking at every --interval tick (with --timeline) and at every
     * wait time. */
    double end = waits[nwaits - 1];
    int wi = 0;
    long tick = 1;
    for (;;) {
        double next_tick = timeline ? (double)tick * interval : 1e300;
        double next_wait = wi < nwaits ? waits[wi] : 1e300;
        double t = next_tick < next_wait ? next_tick : next_wait;
        if (t > end + 1e-9)
            break;
        sleep_until(tf + t);
        double el = now_s() - tf;
        int is_wait = wi < nwaits && next_wait <= t + 1e-9;
        int is_tick = timeline && next_tick <= t + 1e-9;
        if (is_tick) {
            sample("sample", el);
            tick++;
        }
        if (is_wait) {
            sample("wait", waits[wi]);
            wi++;
        }
    }

    if (do_release) {
        double tr = now_s();
        const char *how = explicit_release();
        double tr1 = now_s();
        double el = tr1 - tf;
        sample("release", el);
        if (timeline)
            sample("sample", el);
        out("# release_call=%s release_s=%.3f\n", how ? how : "none", tr1 - tr);
    }
    munmap(ptrs, max_objs * sizeof *ptrs);
    return 0;
}
