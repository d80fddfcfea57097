/*
 * growth_app.c - a heap that grows in steps, for test_profile_growth.sh:
 * grow_cache keeps 64 blocks of 2 MiB (128 MiB in all), written so they
 * are resident, one every 40 ms, then holds them for a second (the worker
 * looks at the heap every 250 ms) and frees them.  Knows nothing of
 * spanmalloc: it runs under LD_PRELOAD.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBLOCKS 64
#define BLOCK ((size_t)2 << 20)

static void *blocks[NBLOCKS];

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

__attribute__((noinline)) static void grow_cache(int i)
{
    blocks[i] = malloc(BLOCK);
    if (blocks[i] != NULL)
        memset(blocks[i], i, BLOCK);
}

int main(void)
{
    for (int i = 0; i < NBLOCKS; i++) {
        grow_cache(i);
        if (blocks[i] == NULL)
            return 1;
        pause_ms(40);
    }
    pause_ms(1000);
    for (int i = 0; i < NBLOCKS; i++)
        free(blocks[i]);
    return 0;
}
