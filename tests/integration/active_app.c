/*
 * active_app.c - a program linked with -lspanmalloc, for test_active.sh:
 * prints sm_active() and what sm_write_heap_profile(argv[1]) returned,
 * with errno's name, after allocating a little through malloc.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spanmalloc.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    void *keep[64];
    for (int i = 0; i < 64; i++)
        keep[i] = malloc(1000);
    int active = sm_active();
    errno = 0;
    int rc = sm_write_heap_profile(argv[1]);
    int err = errno;
    printf("active %d\nwrite %d %s\nactive_again %d\n", active, rc,
           rc == 0 ? "-" : err == ENOTSUP ? "ENOTSUP" : strerror(err), sm_active());
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    return 0;
}
