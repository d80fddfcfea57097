/*
 * vg_errors.c - a program for test_valgrind.sh: with "errors" it makes one
 * memory error of each kind memcheck finds, each in a function of its own
 * so the reports can be matched by name; with "clean" it uses every
 * allocation entry point correctly and frees everything.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

static void *volatile sink;

static void *launder(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

NOINLINE static void make_leak(void)
{
    char *p = malloc(40);
    memset(p, 1, 40);
    sink = NULL;
}

NOINLINE static void make_large_leak(void)
{
    char *p = malloc(100000);
    p[0] = 1;
    sink = NULL;
}

NOINLINE static int read_after_free(void)
{
    char *p = launder(malloc(64));
    memset(p, 2, 64);
    free(p);
    return ((volatile char *)p)[10];
}

NOINLINE static void write_past_end(void)
{
    char *p = launder(malloc(24));
    memset(p, 3, 24);
    ((volatile char *)p)[24] = 4;
    free(p);
}

NOINLINE static int read_past_large_end(void)
{
    char *p = launder(malloc(100000));
    memset(p, 5, 100000);
    int v = ((volatile char *)p)[100000];
    free(p);
    return v;
}

NOINLINE static int use_uninit(void)
{
    int *p = launder(malloc(sizeof(int) * 8));
    int r = 0;
    if (p[3] > 10)
        r = 1;
    free(p);
    return r;
}

static void *thread_body(void *arg)
{
    char **slot = arg;
    *slot = strdup("made in a thread, freed in main");
    void *v[100];
    for (int i = 0; i < 100; i++)
        v[i] = malloc((size_t)i * 37 + 1);
    for (int i = 0; i < 100; i++)
        free(v[i]);
    return NULL;
}

static int clean(void)
{
    unsigned long sum = 0;
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(i * 131) % 5000 + 1;
        char *p = malloc(n);
        memset(p, i & 0xff, n);
        p = realloc(p, n + 17);          /* often in place */
        memset(p + n, 0, 17);
        p = realloc(p, n / 2 + 1);       /* shrink */
        sum += (unsigned char)p[n / 2];
        free(p);
    }
    /* calloc, small and large: every byte must read as defined zero. */
    unsigned char *z = calloc(1000, 1), *zz = calloc(1, 1 << 20);
    for (int i = 0; i < 1000; i++)
        sum += z[i];
    for (int i = 0; i < (1 << 20); i += 4096)
        sum += zz[i];
    free(z);
    free(zz);
    void *a = memalign(4096, 100), *b = aligned_alloc(64, 640), *c = NULL;
    if (posix_memalign(&c, 65536, 70000) != 0)
        return 1;
    memset(a, 0, 100);
    memset(b, 0, 640);
    memset(c, 0, 70000);
    sum += malloc_usable_size(a);
    free(a);
    free(b);
    free(c);
    char *big = malloc(300000);
    memset(big, 1, 300000);
    big = realloc(big, 200000);
    sum += (unsigned char)big[199999];
    free(big);
    char *from_thread = NULL;
    pthread_t t;
    if (pthread_create(&t, NULL, thread_body, &from_thread) != 0 || pthread_join(t, NULL) != 0)
        return 1;
    sum += strlen(from_thread);
    free(from_thread);
    printf("clean %lu\n", sum);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "clean") == 0)
        return clean();
    if (argc != 2 || strcmp(argv[1], "errors") != 0) {
        fprintf(stderr, "usage: vg_errors clean|errors\n");
        return 2;
    }
    make_leak();
    make_large_leak();
    int r = read_after_free();
    write_past_end();
    r += read_past_large_end();
    r += use_uninit();
    printf("errors done\n");
    return r > 1000;
}
