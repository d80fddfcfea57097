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
#include <string.h>
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
    size_t lim = __atomic_load_n(&sm_opts.memlimit, __ATOMIC_RELAXED);
    out->memory_limit = lim == SIZE_MAX ? UINT64_MAX : lim;
    read_kernel(&out->rss, &out->lazy_free);
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

void sm_print_memstats_json(FILE *out)
{
    struct sm_memstats ms;
    sm_read_memstats(&ms);
    fprintf(out, "{\"version\":\"%s\"", SPANMALLOC_VERSION);
#define JSON_FIELD(name, go, doc) fprintf(out, ",\"%s\":%" PRIu64, #name, ms.name);
    SM_MEMSTATS_FIELDS(JSON_FIELD)
#undef JSON_FIELD
    fprintf(out, ",\"by_size\":[");
    for (uint32_t i = 0; i < ms.num_by_size; i++)
        fprintf(out, "%s{\"size\":%" PRIu64 ",\"mallocs\":%" PRIu64 ",\"frees\":%" PRIu64 "}",
                i ? "," : "", ms.by_size[i].size, ms.by_size[i].mallocs, ms.by_size[i].frees);
    fprintf(out, "]}\n");
}

/* One log line for SPANMALLOC_STATS=<interval>, written with write(2). */
void sm_mstats_log_line(void)
{
    struct sm_memstats ms;
    sm_read_memstats(&ms);
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "spanmalloc: alloc=%" PRIu64 " heap_inuse=%" PRIu64 " heap_idle=%" PRIu64
                     " heap_released=%" PRIu64 " sys=%" PRIu64 " rss=%" PRIu64 " lazy_free=%" PRIu64
                     " mallocs=%" PRIu64 " frees=%" PRIu64 "\n",
                     ms.alloc, ms.heap_inuse, ms.heap_idle, ms.heap_released, ms.sys, ms.rss,
                     ms.lazy_free, ms.mallocs, ms.frees);
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        (void)w;
    }
}
