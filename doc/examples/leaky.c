/* leaky.c - a small server loop with a leak, for doc/profiling.md.  It is
 * built without spanmalloc and knows nothing of it.  Every 100 ms it
 * handles a batch of requests (short-lived buffers), remembers each
 * client in a list that nothing ever trims (the leak), and keeps
 * recent responses in a cache of bounded size.  It runs for the number of
 * seconds given (default 6). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct client {
    struct client *prev;
    char token[1000];
};

static struct client *clients;

/* The leak: clients are added and never forgotten. */
__attribute__((noinline)) static void remember_client(unsigned id)
{
    struct client *s = malloc(sizeof *s);
    snprintf(s->token, sizeof s->token, "client-%u", id);
    s->prev = clients;
    clients = s;
}

#define CACHE_SLOTS 256
static char *cache[CACHE_SLOTS];

/* Bounded: each slot holds the latest response for its key. */
__attribute__((noinline)) static void cache_put(unsigned key, const char *body, size_t len)
{
    char *copy = malloc(len);
    memcpy(copy, body, len);
    free(cache[key % CACHE_SLOTS]);
    cache[key % CACHE_SLOTS] = copy;
}

/* Churn: a response buffer per request, freed at once. */
__attribute__((noinline)) static void handle_request(unsigned id)
{
    size_t len = 16384 + id % 4096;
    char *body = malloc(len);
    memset(body, 'x', len);
    cache_put(id, body, len);
    free(body);
    if (id % 2 == 0)
        remember_client(id);
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 6;
    unsigned id = 0;
    for (int tick = 0; tick < seconds * 10; tick++) {
        for (int i = 0; i < 2000; i++)
            handle_request(id++);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("handled %u requests\n", id);
    return 0;
}
