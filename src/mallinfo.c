/*
 * mallinfo.c - glibc's malloc introspection calls, answered from our stats.
 *
 * Programs and tools (python's tracemalloc helpers, monitoring agents,
 * test suites) call mallinfo2, mallinfo, malloc_stats and malloc_info.
 * Under LD_PRELOAD, glibc's versions would describe glibc's empty arena:
 * zeros.  So we export them too, each from one sm_read_memstats snapshot.
 * glibc's fields name its own structures (arenas, bins, fastbins, mmapped
 * chunks); each is given the spanmalloc quantity with the same use:
 *
 *   arena     heap_sys      bytes of heap obtained from the OS
 *   uordblks  heap_alloc    bytes in live objects
 *   fordblks  heap_sys - heap_alloc: bytes of heap not in live objects
 *             (idle page runs, free objects in spans and thread caches)
 *   fsmblks   heap_inuse - heap_alloc: of those, free objects in spans
 *             and caches (glibc: free bytes in fastbins, its small caches)
 *   keepcost  heap_idle - heap_released: idle resident bytes, what
 *             malloc_trim would give back (glibc: the releasable top chunk)
 *   ordblks, smblks, hblks, hblkhd, usmblks: 0.  We keep no count of free
 *             runs or free objects, map no chunk of its own (every large
 *             object is pages of the heap), and glibc itself always sets
 *             usmblks to 0.
 *
 * mallinfo has int fields: values above INT_MAX are clamped rather than
 * wrapped as glibc's are.  malloc_stats prints glibc's lines on stderr;
 * malloc_info writes glibc's XML document, with one <size> element per
 * size class holding live objects (glibc lists its free chunks per bin:
 * we have no per-class free count) and the totals.  Nothing here holds an
 * allocator lock while it prints; malloc_stats formats into a buffer on
 * the stack and writes it with write(2).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "spanmalloc.h"

SM_EXPORT struct mallinfo2 mallinfo2(void)
{
    struct sm_memstats ms;
    struct mallinfo2 mi;

    sm_read_memstats(&ms);
    memset(&mi, 0, sizeof mi);
    mi.arena = ms.heap_sys;
    mi.uordblks = ms.heap_alloc;
    mi.fordblks = ms.heap_sys - ms.heap_alloc;
    mi.fsmblks = ms.heap_inuse - ms.heap_alloc;
    mi.keepcost = ms.heap_idle - ms.heap_released;
    return mi;
}

static int clamp_int(size_t v)
{
    return v > INT_MAX ? INT_MAX : (int)v;
}

SM_EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo mi;

    memset(&mi, 0, sizeof mi);
    mi.arena = clamp_int(m2.arena);
    mi.uordblks = clamp_int(m2.uordblks);
    mi.fordblks = clamp_int(m2.fordblks);
    mi.fsmblks = clamp_int(m2.fsmblks);
    mi.keepcost = clamp_int(m2.keepcost);
    return mi;
}

SM_EXPORT void malloc_stats(void)
{
    struct sm_memstats ms;
    char buf[512];

    sm_read_memstats(&ms);
    int n = snprintf(buf, sizeof buf,
                     "Arena 0:\n"
                     "system bytes     = %10" PRIu64 "\n"
                     "in use bytes     = %10" PRIu64 "\n"
                     "Total (incl. mmap):\n"
                     "system bytes     = %10" PRIu64 "\n"
                     "in use bytes     = %10" PRIu64 "\n"
                     "max mmap regions = %10d\n"
                     "max mmap bytes   = %10d\n",
                     ms.heap_sys, ms.heap_alloc, ms.sys, ms.heap_alloc, 0, 0);
    if (n > 0) {
        ssize_t w = write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        (void)w;
    }
}

SM_EXPORT int malloc_info(int options, FILE *fp)
{
    struct sm_memstats ms;

    if (options != 0) {       /* glibc: no options are defined */
        errno = EINVAL;
        return -1;
    }
    sm_read_memstats(&ms);
    uint64_t count = 0, bytes = 0, prev = 0;
    fputs("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", fp);
    for (uint32_t i = 0; i < ms.num_by_size; i++) {
        const struct sm_class_stats *c = &ms.by_size[i];
        uint64_t live = c->mallocs > c->frees ? c->mallocs - c->frees : 0;
        if (c->size == 0)      /* large objects: their bytes are not per class */
            continue;
        if (live > 0) {
            fprintf(fp, "  <size from=\"%" PRIu64 "\" to=\"%" PRIu64 "\" total=\"%" PRIu64
                        "\" count=\"%" PRIu64 "\"/>\n",
                    prev + 1, c->size, live * c->size, live);
            count += live;
            bytes += live * c->size;
        }
        prev = c->size;
    }
    uint64_t large_n = ms.heap_objects > count ? ms.heap_objects - count : 0;
    uint64_t large_b = ms.heap_alloc > bytes ? ms.heap_alloc - bytes : 0;
    if (large_n > 0)
        fprintf(fp, "  <unsorted from=\"%" PRIu64 "\" to=\"%" PRIu64 "\" total=\"%" PRIu64
                    "\" count=\"%" PRIu64 "\"/>\n", prev + 1, (uint64_t)UINT64_MAX, large_b, large_n);
    fprintf(fp, "</sizes>\n"
                "<total type=\"fast\" count=\"%" PRIu64 "\" size=\"%" PRIu64 "\"/>\n"
                "<total type=\"rest\" count=\"%" PRIu64 "\" size=\"%" PRIu64 "\"/>\n"
                "<system type=\"current\" size=\"%" PRIu64 "\"/>\n"
                "<system type=\"max\" size=\"%" PRIu64 "\"/>\n"
                "<aspace type=\"total\" size=\"%" PRIu64 "\"/>\n"
                "<aspace type=\"mprotect\" size=\"%" PRIu64 "\"/>\n"
                "</heap>\n",
            count, bytes, large_n, large_b, ms.heap_sys, ms.heap_sys,
            ms.heap_sys, ms.heap_sys - ms.heap_released);
    fprintf(fp, "<total type=\"fast\" count=\"%" PRIu64 "\" size=\"%" PRIu64 "\"/>\n"
                "<total type=\"rest\" count=\"%" PRIu64 "\" size=\"%" PRIu64 "\"/>\n"
                "<total type=\"mmap\" count=\"0\" size=\"0\"/>\n"
                "<system type=\"current\" size=\"%" PRIu64 "\"/>\n"
                "<system type=\"max\" size=\"%" PRIu64 "\"/>\n"
                "<aspace type=\"total\" size=\"%" PRIu64 "\"/>\n"
                "<aspace type=\"mprotect\" size=\"%" PRIu64 "\"/>\n"
                "</malloc>\n",
            count, bytes, large_n, large_b, ms.sys, ms.sys, ms.sys,
            ms.heap_sys - ms.heap_released);
    return ferror(fp) ? -1 : 0;
}
