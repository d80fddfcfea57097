/*
 * libc_malloc.c - glibc's malloc for a program linked with another
 * allocator, so scripts/ci-long.sh can compare spanmalloc with glibc there
 * too.
 *
 * Debian's redis-server is linked with libjemalloc.so.2, which exports the
 * libc entry points under their own names; the loader binds the program's
 * malloc to jemalloc, ahead of libc.  Preloaded, this library binds them to
 * glibc's allocator instead: each libc entry point that jemalloc also
 * exports is defined here and forwards to glibc's own (the __libc_* aliases
 * glibc exports, or the definition found in libc.so.6 itself), so a pointer
 * from malloc never reaches jemalloc's free.  jemalloc keeps its own API
 * (mallctl, nallocx, mallocx, ...), which redis calls only for statistics
 * and size-class questions, and its operator new and delete, which come in
 * pairs.  It is built by ci-long.sh with the C compiler, outside the
 * library: a tool of the long tests, not part of spanmalloc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

static size_t (*libc_usable_size)(void *);

/* The definition in libc.so.6 itself, not the first one in the program's
 * lookup order (which would be jemalloc's). */
static void *libc_symbol(const char *name)
{
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void *f = libc != NULL ? dlsym(libc, name) : NULL;
    if (f == NULL) {
        static const char msg[] = "libc_malloc: cannot find glibc's own allocator entry point\n";
        ssize_t r = write(2, msg, sizeof msg - 1);
        (void)r;
        abort();
    }
    return f;
}

void *malloc(size_t size) { return __libc_malloc(size); }
void free(void *p) { __libc_free(p); }
void *calloc(size_t n, size_t size) { return __libc_calloc(n, size); }
void *realloc(void *p, size_t size) { return __libc_realloc(p, size); }
void *memalign(size_t align, size_t size) { return __libc_memalign(align, size); }
void *valloc(size_t size) { return __libc_valloc(size); }
void *pvalloc(size_t size) { return __libc_pvalloc(size); }

void *aligned_alloc(size_t align, size_t size)
{
    return __libc_memalign(align, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    void *p = __libc_memalign(align, size);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

size_t malloc_usable_size(void *p)
{
    if (libc_usable_size == NULL)
        libc_usable_size = (size_t (*)(void *))libc_symbol("malloc_usable_size");
    return libc_usable_size(p);
}
