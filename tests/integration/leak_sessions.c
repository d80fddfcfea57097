/*
 * leak_sessions.c - a plain C program that leaks, for test_symbolize.sh.
 *
 * Each call of open_session keeps a session record, its name (strdup, so
 * the allocation is made inside libc) and a 1400-byte buffer: about 1.5 KB
 * that is never freed.  The program knows nothing of spanmalloc: it looks
 * up sm_write_heap_profile with dlsym and calls it, when it is there,
 * after each of two phases of N sessions.  It prints what one session
 * holds and how many were opened, so the test knows the truth.
 *
 * Usage: leak_sessions DIR N   (writes DIR/p1.pb.gz and DIR/p2.pb.gz)
 *        leak_sessions DIR N wait
 * With "wait" it writes no profile: after each phase it creates
 * DIR/p1.ready (p2.ready) and waits for DIR/p1.go (p2.go), so that the
 * test can fetch the profile from the live endpoint meanwhile.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct session {
    char *name;
    char *buf;
    struct session *next;
};

static struct session *sessions;

#define NAME_LEN 95
#define BUF_LEN 1400

void open_session(int id)
{
    char name[NAME_LEN + 1];
    struct session *s = malloc(sizeof *s);
    if (s == NULL)
        exit(2);
    memset(name, 'a' + id % 26, NAME_LEN);
    name[NAME_LEN] = '\0';
    s->name = strdup(name);
    s->buf = malloc(BUF_LEN);
    if (s->name == NULL || s->buf == NULL)
        exit(2);
    s->buf[0] = (char)id;
    s->next = sessions;
    sessions = s;
}

static int waiting;

static void wait_for(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%.2s.ready", dir, name);
    fclose(fopen(path, "w"));
    snprintf(path, sizeof path, "%s/%.2s.go", dir, name);
    for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void profile(const char *dir, const char *name)
{
    if (waiting) {
        wait_for(dir, name);
        return;
    }
    int (*write_profile)(const char *) =
        (int (*)(const char *))dlsym(RTLD_DEFAULT, "sm_write_heap_profile");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (write_profile == NULL || write_profile(path) != 0)
        fprintf(stderr, "leak_sessions: no profile %s\n", path);
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 4 && strcmp(argv[3], "wait") == 0))
        return 2;
    waiting = argc == 4;
    int n = atoi(argv[2]);
    for (int i = 0; i < n; i++)
        open_session(i);
    profile(argv[1], "p1.pb.gz");
    for (int i = 0; i < n; i++)
        open_session(n + i);
    profile(argv[1], "p2.pb.gz");
    printf("session_bytes %zu\nsessions_per_phase %d\n",
           sizeof(struct session) + (NAME_LEN + 1) + BUF_LEN, n);
    return 0;
}
