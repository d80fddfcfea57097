/*
 * static_app.c - a program linked fully statically with libspanmalloc.a,
 * for test_static.sh: it allocates and frees, writes a heap profile to
 * argv[1], and checks that spanmalloc serves its malloc.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spanmalloc.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    enum { N = 2000 };
    static char *keep[N];
    for (int i = 0; i < N; i++) {
        keep[i] = malloc(100 + (size_t)i * 7);
        if (keep[i] == NULL)
            return 3;
        memset(keep[i], i & 0xff, 100);
    }
    for (int i = 0; i < N; i += 2) {
        free(keep[i]);
        keep[i] = NULL;
    }
    void *big = malloc(1 << 20);
    free(big);
    struct sm_memstats st;
    sm_read_memstats(&st);
    if (st.heap_alloc == 0 || st.mallocs < N) {
        fprintf(stderr, "static_app: spanmalloc saw no allocation\n");
        return 4;
    }
    if (sm_active() != 1) {
        fprintf(stderr, "static_app: sm_active() is not 1\n");
        return 6;
    }
    if (sm_write_heap_profile(argv[1]) != 0) {
        perror("static_app: sm_write_heap_profile");
        return 5;
    }
    for (int i = 1; i < N; i += 2)
        free(keep[i]);
    printf("static_app: ok\n");
    return 0;
}
