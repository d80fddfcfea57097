/*
 * rss_demo.c - "RSS grows while the heap stays flat", told with spanmalloc.
 *
 * An ordinary program (built without spanmalloc) allocates 256 MiB in a
 * burst, frees it, and watches for three seconds, printing the kernel's RSS
 * next to what spanmalloc's stats say.  Run it under LD_PRELOAD twice:
 *   SPANMALLOC_RELEASE=free      pages go back with MADV_FREE: the kernel
 *                                takes them only under memory pressure, so
 *                                RSS stays up although heap_inuse fell and
 *                                heap_released says they were given back;
 *                                lazy_free shows where they are.
 *   SPANMALLOC_RELEASE=dontneed  RSS falls as soon as the scavenger runs.
 * Finally it calls sm_free_os_memory(), Go's debug.FreeOSMemory.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spanmalloc.h"

static void (*read_stats)(struct sm_memstats *);
static size_t (*free_os_memory)(void);

static void line(const char *when)
{
    struct sm_memstats m;
    read_stats(&m);
    printf("%-22s rss %6.1f  heap_inuse %6.1f  heap_idle %6.1f  heap_released %6.1f  lazy_free %6.1f MiB\n",
           when, m.rss / 1048576.0, m.heap_inuse / 1048576.0, m.heap_idle / 1048576.0,
           m.heap_released / 1048576.0, m.lazy_free / 1048576.0);
}

int main(void)
{
    read_stats = (void (*)(struct sm_memstats *))dlsym(RTLD_DEFAULT, "sm_read_memstats");
    free_os_memory = (size_t (*)(void))dlsym(RTLD_DEFAULT, "sm_free_os_memory");
    if (!read_stats || !free_os_memory) {
        printf("not running on spanmalloc: run with LD_PRELOAD=libspanmalloc.so\n");
        return 1;
    }
    const char *policy = getenv("SPANMALLOC_RELEASE");
    printf("== SPANMALLOC_RELEASE=%s\n", policy ? policy : "dontneed (default)");
    line("start");
    enum { N = 8192 };
    static char *objs[N];
    for (int i = 0; i < N; i++) {          /* 256 MiB: 8 KiB .. 56 KiB objects */
        size_t sz = 8192 + (size_t)(i % 7) * 8192;
        objs[i] = malloc(sz);
        memset(objs[i], 1, sz);
    }
    line("after the burst");
    for (int i = 0; i < N; i++)
        free(objs[i]);
    line("right after free");
    for (int s = 1; s <= 3; s++) {
        sleep(1);
        char when[32];
        snprintf(when, sizeof when, "%d s later", s);
        line(when);
    }
    size_t got = free_os_memory();
    char when[48];
    snprintf(when, sizeof when, "sm_free_os_memory()");
    line(when);
    printf("   (released %.1f MiB more)\n", got / 1048576.0);
    return 0;
}
