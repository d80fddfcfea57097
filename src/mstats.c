/*
 * mstats.c - MemStats for C programs: reading, printing, logging.
 *
 * Counters are kept where they are cheap to keep: per thread in the cache
 * (objects allocated and freed per class, one plain add on the fast path;
 * large objects served from and freed into the thread's large cache;
 * merged on read as Go merges per-P stats), in the heap under its lock
 * (pages, large objects it handed out and got back, releases), in the
 * fixallocs (metadata).
 *
 * A read takes sm_mcache_lock (so no thread can exit and move its counts
 * meanwhile), sums every cache's frees, then takes the heap's fields under
 * the heap lock, and only then sums the caches' mallocs: a free is counted
 * only after its malloc, so reading frees first keeps mallocs >= frees
 * while other threads run, whichever of the cache or the heap counted each.
 * At quiescence every invariant in spanmalloc.h holds exactly.
 *
 * The field list is SM_MEMSTATS_FIELDS in spanmalloc.h: the struct, both
 * printers and doc/stats.md come from it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "spanmalloc.h"

/* by_size holds every small class and one entry for large objects. */
_Static_assert(SM_NUM_SIZE_CLASSES <= SM_MEMSTATS_NUM_BY_SIZE,
               "spanmalloc.h: SM_MEMSTATS_NUM_BY_SIZE is too small for the size classes");

/* Rss and LazyFree from /proc/self/smaps_rollup, without malloc. */
static void read_kernel(uint64_t *rss, uint64_t *lazy)
{
    char buf[4096];
    *rss = *lazy = 0;
    int fd = open("/proc/self/smaps_rollup", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        uint64_t *dst = NULL;
        if (strncmp(line, "Rss:", 4) == 0)
            dst = rss;
        else if (strncmp(line, "LazyFree:", 9) == 0)
            dst = lazy;
        if (dst == NULL)
            continue;
        char *p = strchr(line, ':') + 1;
        while (*p == ' ')
            p++;
        uint64_t v = 0;
        while (*p >= '0' && *p <= '9')
            v = v * 10 + (uint64_t)(*p++ - '0');
        *dst = v * 1024;
    }
}

/* The RSS breakdown: five parts that add up to rss exactly.  The heap's
 * counts are page-granular promises, not residency: a span handed out but
 * never touched is in heap_inuse and not in rss, and rss and the heap are
 * read a few microseconds apart.  So each part is cut to what rss leaves
 * after the parts before it, in the order below, and the last part, what
 * is resident outside the heap, is the rest; none is negative.  (mimalloc's
 * and jemalloc's stats leave "resident" unexplained; Go's MemStats add up
 * to Sys, not to RSS.) */
static void rss_breakdown(struct sm_memstats *ms)
{
    uint64_t left = ms->rss;
    uint64_t want[4] = {
        ms->heap_alloc,
        ms->heap_inuse > ms->heap_alloc ? ms->heap_inuse - ms->heap_alloc : 0,
        ms->heap_idle > ms->heap_released ? ms->heap_idle - ms->heap_released : 0,
        ms->lazy_free,
    };
    uint64_t *part[4] = {&ms->rss_live, &ms->rss_span_free, &ms->rss_idle_dirty, &ms->rss_lazy_free};
    for (int i = 0; i < 4; i++) {
        *part[i] = want[i] < left ? want[i] : left;
        left -= *part[i];
    }
    ms->rss_outside_heap = left;
}

void sm_read_memstats(struct sm_memstats *out)
{
    memset(out, 0, sizeof *out);
    sm_init();
    uint64_t nfree[SM_NUM_SIZE_CLASSES] = {0}, nmalloc[SM_NUM_SIZE_CLASSES] = {0};
    uint64_t large_nfree, large_nmalloc, large_bytes_free, large_bytes_alloc;
    pthread_mutex_lock(&sm_mcache_lock);
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        nfree[cls] = sm_dead.nfree[cls];
    large_nfree = sm_dead.large_nfree;
    large_bytes_free = sm_dead.large_bytes_free;
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next) {
        for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
            nfree[cls] += SM_COUNTER_READ(c->c[cls].nfree);
        large_nfree += SM_COUNTER_READ(c->large.nfree);
        large_bytes_free += SM_COUNTER_READ(c->large.bytes_free);
    }
    /* The heap's large counts sit between the caches' frees and mallocs:
     * every free counted so far had its malloc counted before the reads
     * below, wherever each was counted. */
    sm_mheap_lock(&sm_heap);
    struct sm_heap_stats st = sm_heap.st;
    out->mspan_inuse = sm_heap.spanalloc.inuse;
    out->mspan_sys = sm_heap.spanalloc.sys;
    sm_mheap_unlock(&sm_heap);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
        nmalloc[cls] = sm_dead.nmalloc[cls];
    large_nmalloc = sm_dead.large_nmalloc;
    large_bytes_alloc = sm_dead.large_bytes_alloc;
    for (struct sm_mcache *c = sm_mcache_all; c; c = c->all_next) {
        for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++)
            nmalloc[cls] += SM_COUNTER_READ(c->c[cls].nmalloc);
        large_nmalloc += SM_COUNTER_READ(c->large.nmalloc);
        large_bytes_alloc += SM_COUNTER_READ(c->large.bytes_alloc);
    }
    out->mcache_inuse = sm_mcache_cachealloc.inuse;
    out->mcache_sys = sm_mcache_cachealloc.sys;
    pthread_mutex_unlock(&sm_mcache_lock);

    large_nfree += st.large_nfree;
    large_bytes_free += st.large_bytes_free;
    large_nmalloc += st.large_nmalloc;
    large_bytes_alloc += st.large_bytes_alloc;
    uint64_t alloc_bytes = large_bytes_alloc, free_bytes = large_bytes_free;
    out->mallocs = large_nmalloc;
    out->frees = large_nfree;
    for (uint32_t cls = 1; cls < SM_NUM_SIZE_CLASSES; cls++) {
        struct sm_class_stats *b = &out->by_size[cls - 1];
        b->size = sm_class_to_size[cls];
        b->mallocs = nmalloc[cls];
        b->frees = nfree[cls];
        out->mallocs += nmalloc[cls];
        out->frees += nfree[cls];
        alloc_bytes += nmalloc[cls] * sm_class_to_size[cls];
        free_bytes += nfree[cls] * sm_class_to_size[cls];
    }
    struct sm_class_stats *large = &out->by_size[SM_NUM_SIZE_CLASSES - 1];
    large->size = 0;
    large->mallocs = large_nmalloc;
    large->frees = large_nfree;
    out->num_by_size = SM_NUM_SIZE_CLASSES;

    out->total_alloc = alloc_bytes;
    out->heap_alloc = alloc_bytes - free_bytes;
    out->alloc = out->heap_alloc;
    out->heap_objects = out->mallocs - out->frees;
    out->heap_sys = st.pages_sys << SM_PAGE_SHIFT;
    out->heap_inuse = st.pages_inuse << SM_PAGE_SHIFT;
    out->heap_idle = st.pages_free << SM_PAGE_SHIFT;
    out->heap_released = st.pages_released << SM_PAGE_SHIFT;
    out->other_sys = st.arena_meta_sys + sm_mprof_sys() + sm_check_sys();
    out->sys = out->heap_sys + out->mspan_sys + out->mcache_sys + out->other_sys;
    out->released_total = st.released_bytes_total;
    out->num_release_scavenger = st.nrelease_scavenger;
    out->num_release_limit = st.nrelease_limit;
    out->num_release_explicit = st.nrelease_explicit;
    out->num_release_free = st.nrelease_free;
    size_t lim = __atomic_load_n(&sm_opts.memlimit, __ATOMIC_RELAXED);
    out->memory_limit = lim == SIZE_MAX ? UINT64_MAX : lim;
    read_kernel(&out->rss, &out->lazy_free);
    rss_breakdown(out);
}

/* ---- printing ------------------------------------------------------------ */

static bool is_bytes(const char *name)
{
    return strcmp(name, "mallocs") && strcmp(name, "frees") && strcmp(name, "heap_objects") &&
           strncmp(name, "num_", 4);
}

static void human(char *buf, size_t n, uint64_t v)
{
    if (v == UINT64_MAX)
        snprintf(buf, n, "none");
    else if (v >= (10ull << 30))
        snprintf(buf, n, "%.1f GiB", (double)v / (1 << 30));
    else if (v >= (10ull << 20))
        snprintf(buf, n, "%.1f MiB", (double)v / (1 << 20));
    else if (v >= (10ull << 10))
        snprintf(buf, n, "%.1f KiB", (double)v / (1 << 10));
    else
        snprintf(buf, n, "%" PRIu64 " B", v);
}

void sm_print_memstats(FILE *out)
{
    struct sm_memstats ms;
    sm_read_memstats(&ms);
    char h[32];
    fprintf(out, "spanmalloc %s memory statistics\n", SPANMALLOC_VERSION);
#define PRINT_FIELD(name, go, doc)                                              \
    if (is_bytes(#name)) {                                                      \
        human(h, sizeof h, ms.name);                                            \
        fprintf(out, "  %-22s %14s  (%" PRIu64 ")\n", #name, h, ms.name);       \
    } else {                                                                    \
        fprintf(out, "  %-22s %14" PRIu64 "\n", #name, ms.name);                \
    }
    SM_MEMSTATS_FIELDS(PRINT_FIELD)
#undef PRINT_FIELD
    char p1[32], p2[32], p3[32], p4[32], p5[32];
    human(p1, sizeof p1, ms.rss_live);
    human(p2, sizeof p2, ms.rss_span_free);
    human(p3, sizeof p3, ms.rss_idle_dirty);
    human(p4, sizeof p4, ms.rss_lazy_free);
    human(p5, sizeof p5, ms.rss_outside_heap);
    human(h, sizeof h, ms.rss);
    fprintf(out, "  rss breakdown: live %s + span free %s + idle resident %s + lazy free %s"
                 " + outside heap %s = rss %s\n", p1, p2, p3, p4, p5, h);
    fprintf(out, "  %-10s %12s %12s %12s %14s\n", "class size", "mallocs", "frees", "live", "live bytes");
    for (uint32_t i = 0; i < ms.num_by_size; i++) {
        const struct sm_class_stats *b = &ms.by_size[i];
        if (b->mallocs == 0)
            continue;
        uint64_t live = b->mallocs - b->frees;
        char sz[24];
        if (b->size)
            snprintf(sz, sizeof sz, "%" PRIu64, b->size);
        else
            snprintf(sz, sizeof sz, "large");
        if (b->size)
            human(h, sizeof h, live * b->size);
        else
            snprintf(h, sizeof h, "-");
        fprintf(out, "  %-10s %12" PRIu64 " %12" PRIu64 " %12" PRIu64 " %14s\n", sz, b->mallocs,
                b->frees, live, h);
    }
}

/* Wall-clock seconds with a fraction, for the JSON and the log line. */
static void wall_time(char *buf, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, n, "%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
}

/* The JSON object, no newline: also the "memstats" of /debug/vars. */
void sm_mstats_print_json(FILE *out, const struct sm_memstats *ms)
{
    char now[40];
    wall_time(now, sizeof now);
    fprintf(out, "{\"version\":\"%s\",\"time\":%s,\"pid\":%ld", SPANMALLOC_VERSION, now,
            (long)getpid());
    /* UINT64_MAX is "none" (memory_limit); jq and JavaScript read numbers
     * as doubles, so it becomes null rather than a rounded number. */
#define JSON_FIELD(name, go, doc)                                                 \
    if (ms->name == UINT64_MAX)                                                   \
        fprintf(out, ",\"%s\":null", #name);                                     \
    else                                                                          \
        fprintf(out, ",\"%s\":%" PRIu64, #name, ms->name);
    SM_MEMSTATS_FIELDS(JSON_FIELD)
#undef JSON_FIELD
    fprintf(out, ",\"by_size\":[");
    for (uint32_t i = 0; i < ms->num_by_size; i++)
        fprintf(out, "%s{\"size\":%" PRIu64 ",\"mallocs\":%" PRIu64 ",\"frees\":%" PRIu64 "}",
                i ? "," : "", ms->by_size[i].size, ms->by_size[i].mallocs, ms->by_size[i].frees);
    fprintf(out, "]}");
}

void sm_print_memstats_json(FILE *out)
{
    struct sm_memstats ms;
    sm_read_memstats(&ms);
    sm_mstats_print_json(out, &ms);
    fputc('\n', out);
}

/* ---- Prometheus text format ------------------------------------------------
 * Go's client_golang names (go_memstats_*) where the meaning is the same
 * field of runtime.MemStats, so dashboards made for Go services work; the
 * rest under spanmalloc_*.  Cumulative counts are counters (_total). */

static void prom_metric(FILE *out, const char *name, const char *type, const char *help,
                        uint64_t v)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    if (v == UINT64_MAX)
        fprintf(out, "%s +Inf\n", name);
    else
        fprintf(out, "%s %" PRIu64 "\n", name, v);
}

void sm_mstats_print_prometheus(FILE *out, const struct sm_memstats *ms)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } go[] = {
#define G(name, type, field, help) {name, type, help, offsetof(struct sm_memstats, field)}
        G("go_memstats_alloc_bytes", "gauge", alloc, "Number of bytes allocated and still in use."),
        G("go_memstats_alloc_bytes_total", "counter", total_alloc, "Total number of bytes allocated, even if freed."),
        G("go_memstats_sys_bytes", "gauge", sys, "Number of bytes obtained from system."),
        G("go_memstats_mallocs_total", "counter", mallocs, "Total number of mallocs."),
        G("go_memstats_frees_total", "counter", frees, "Total number of frees."),
        G("go_memstats_heap_alloc_bytes", "gauge", heap_alloc, "Number of heap bytes allocated and still in use."),
        G("go_memstats_heap_sys_bytes", "gauge", heap_sys, "Number of heap bytes obtained from system."),
        G("go_memstats_heap_idle_bytes", "gauge", heap_idle, "Number of heap bytes waiting to be used."),
        G("go_memstats_heap_inuse_bytes", "gauge", heap_inuse, "Number of heap bytes that are in use."),
        G("go_memstats_heap_released_bytes", "gauge", heap_released, "Number of heap bytes released to OS."),
        G("go_memstats_heap_objects", "gauge", heap_objects, "Number of allocated objects."),
        G("go_memstats_mspan_inuse_bytes", "gauge", mspan_inuse, "Number of bytes in use by mspan structures."),
        G("go_memstats_mspan_sys_bytes", "gauge", mspan_sys, "Number of bytes used for mspan structures obtained from system."),
        G("go_memstats_mcache_inuse_bytes", "gauge", mcache_inuse, "Number of bytes in use by mcache structures."),
        G("go_memstats_mcache_sys_bytes", "gauge", mcache_sys, "Number of bytes used for mcache structures obtained from system."),
        G("go_memstats_other_sys_bytes", "gauge", other_sys, "Number of bytes used for other system allocations."),
        G("spanmalloc_rss_bytes", "gauge", rss, "Resident bytes of the process (Rss of /proc/self/smaps_rollup)."),
        G("spanmalloc_lazy_free_bytes", "gauge", lazy_free, "Bytes given back with MADV_FREE that the kernel has not reclaimed yet."),
        G("spanmalloc_memory_limit_bytes", "gauge", memory_limit, "Soft memory limit; +Inf when none."),
        G("spanmalloc_released_bytes_total", "counter", released_total, "Bytes ever given back to the OS."),
#undef G
    };
    for (size_t i = 0; i < sizeof go / sizeof go[0]; i++)
        prom_metric(out, go[i].name, go[i].type, go[i].help,
                    *(const uint64_t *)((const char *)ms + go[i].off));
    fprintf(out, "# HELP spanmalloc_rss_breakdown_bytes Resident bytes by part; the parts add up to spanmalloc_rss_bytes.\n"
                 "# TYPE spanmalloc_rss_breakdown_bytes gauge\n");
    static const char *parts[] = {"live", "span_free", "idle_dirty", "lazy_free", "outside_heap"};
    const uint64_t vals[] = {ms->rss_live, ms->rss_span_free, ms->rss_idle_dirty, ms->rss_lazy_free,
                             ms->rss_outside_heap};
    for (int i = 0; i < 5; i++)
        fprintf(out, "spanmalloc_rss_breakdown_bytes{part=\"%s\"} %" PRIu64 "\n", parts[i], vals[i]);
    /* Per size class, by the class's object size ("large" for objects over
     * 32 KiB), as Go's BySize: one family per count. */
    static const char *what[] = {"mallocs", "frees"};
    for (int w = 0; w < 2; w++) {
        fprintf(out, "# HELP spanmalloc_size_class_%s_total Objects %s, by size class.\n"
                     "# TYPE spanmalloc_size_class_%s_total counter\n",
                what[w], w ? "freed" : "allocated", what[w]);
        for (uint32_t i = 0; i < ms->num_by_size; i++) {
            const struct sm_class_stats *b = &ms->by_size[i];
            char size[24];
            if (b->size)
                snprintf(size, sizeof size, "%" PRIu64, b->size);
            else
                snprintf(size, sizeof size, "large");
            fprintf(out, "spanmalloc_size_class_%s_total{size=\"%s\"} %" PRIu64 "\n", what[w], size,
                    w ? b->frees : b->mallocs);
        }
    }
}

/* One log line for SPANMALLOC_STATS=<interval>, written with write(2); with
 * SPANMALLOC_STATS_FORMAT=json, one JSON object per line instead (that one
 * goes through stdio, from the worker thread, which holds no lock). */
void sm_mstats_log_line(void)
{
    if (sm_opts.stats_json) {
        sm_print_memstats_json(stderr);
        fflush(stderr);
        return;
    }
    struct sm_memstats ms;
    sm_read_memstats(&ms);
    char buf[640], now[40];
    wall_time(now, sizeof now);
    int n = snprintf(buf, sizeof buf,
                     "spanmalloc: time=%s pid=%ld alloc=%" PRIu64 " heap_inuse=%" PRIu64 " heap_idle=%" PRIu64
                     " heap_released=%" PRIu64 " sys=%" PRIu64 " rss=%" PRIu64 " lazy_free=%" PRIu64
                     " mallocs=%" PRIu64 " frees=%" PRIu64 "\n",
                     now, (long)getpid(), ms.alloc, ms.heap_inuse, ms.heap_idle, ms.heap_released,
                     ms.sys, ms.rss, ms.lazy_free, ms.mallocs, ms.frees);
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        (void)w;
    }
}
