/* hello.c - an ordinary program, built without spanmalloc, that asks the
 * dynamic linker who serves its mallocs.  Run it plainly and under
 * LD_PRELOAD=libspanmalloc.so to see the difference. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    const char *(*version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "sm_version");
    Dl_info info;
    dladdr((void *)malloc, &info);
    printf("malloc comes from %s\n", info.dli_fname);
    if (version)
        printf("served by spanmalloc %s\n", version());
    else
        printf("not running on spanmalloc\n");
    char *p = malloc(100);
    printf("malloc(100) = %p, usable %zu bytes\n", (void *)p, malloc_usable_size(p));
    free(p);
    return 0;
}
