/*
 * mallinfo_app.c - calls glibc's introspection functions, for
 * test_mallinfo.sh: holds 2000 objects of 5000 bytes and one of 1 MiB,
 * then prints mallinfo2's and mallinfo's fields and spanmalloc's own
 * heap_alloc and heap_sys (through dlsym, so the program also runs without
 * spanmalloc), calls malloc_stats (stderr) and malloc_info (stdout after a
 * line "xml"), and malloc_info with an option, which must fail.
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spanmalloc.h"

int main(void)
{
    static char *keep[2000];
    for (int i = 0; i < 2000; i++) {
        keep[i] = malloc(5000);
        memset(keep[i], 1, 5000);
    }
    char *big = malloc(1 << 20);
    memset(big, 2, 1 << 20);

    /* Whatever allocates on the way (stdout's buffer, dlsym) does so
     * before the three reads, which must see the same heap. */
    printf("start\n");
    fflush(stdout);
    void (*read_stats)(struct sm_memstats *) =
        (void (*)(struct sm_memstats *))dlsym(RTLD_DEFAULT, "sm_read_memstats");
    static struct sm_memstats ms;
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m1 = mallinfo();
    if (read_stats != NULL)
        read_stats(&ms);
    printf("arena %zu\nuordblks %zu\nfordblks %zu\nfsmblks %zu\nkeepcost %zu\n",
           m2.arena, m2.uordblks, m2.fordblks, m2.fsmblks, m2.keepcost);
    printf("mallinfo_uordblks %d\nmallinfo_arena %d\n", m1.uordblks, m1.arena);
    if (read_stats != NULL)
        printf("sm_heap_alloc %llu\nsm_heap_sys %llu\n", (unsigned long long)ms.heap_alloc,
               (unsigned long long)ms.heap_sys);
    fflush(stdout);
    malloc_stats();
    errno = 0;
    int bad = malloc_info(1, stdout);
    printf("malloc_info_option %d %s\n", bad, errno == EINVAL ? "EINVAL" : "other");
    printf("xml\n");
    if (malloc_info(0, stdout) != 0)
        return 1;
    for (int i = 0; i < 2000; i++)
        free(keep[i]);
    free(big);
    return 0;
}
