/* leak_app.c - a program with a leak, for the README's "Finding the leak"
 * and the tests that run it.  It knows nothing of spanmalloc.
 *
 *   leak_app SECONDS
 *
 * Every millisecond it opens a "session" (open_session: 1,536 bytes kept on
 * a list that is never emptied: the leak) and formats a reply (make_reply:
 * 4 KiB, freed at once: churn, not a leak), for SECONDS seconds; then it
 * prints how many bytes it leaked and exits.  Built with plain -O2 -g. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct session {
    struct session *next;
    char data[1536 - sizeof(struct session *)];
};

static struct session *sessions;

__attribute__((noinline)) struct session *open_session(int id)
{
    struct session *s = malloc(sizeof *s);
    snprintf(s->data, sizeof s->data, "session %d", id);
    s->next = sessions;
    sessions = s;
    return s;
}

__attribute__((noinline)) char *make_reply(int id)
{
    char *r = malloc(4096);
    memset(r, ' ', 4095);
    r[4095] = '\0';
    snprintf(r, 4096, "reply %d", id);
    return r;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    struct timespec start, now, ms = {0, 1000000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    long n = 0;
    unsigned sum = 0;
    do {
        open_session((int)n);
        char *r = make_reply((int)n);
        sum += (unsigned char)r[n % 4096];
        free(r);
        n++;
        nanosleep(&ms, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
    printf("leaked %ld bytes in %ld sessions (%u)\n", n * (long)sizeof(struct session), n, sum);
    return 0;
}
