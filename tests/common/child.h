/*
 * child.h - for the tests that expect an abort: run a case in a forked
 * child and collect how it ended and what it wrote on stderr.  Included by
 * unit and integration tests (each a single file, so the functions are
 * static).  Needs cmocka.h included before it.
 */
#ifndef SM_TEST_CHILD_H
#define SM_TEST_CHILD_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Values the compiler cannot see through, so that a test's bad call is
 * made as written (no warning folded into a build error, no call removed). */
static inline void *opaque_ptr(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

static inline size_t opaque(size_t x)
{
    __asm__ volatile("" : "+r"(x));
    return x;
}

/* ---- running a case in a child -------------------------------------------- */

struct outcome {
    int exited;          /* 1: exit status in code; 0: killed by sig */
    int code;
    int sig;
    char err[4096];      /* what the child wrote on stderr */
    size_t errlen;
};

/* Run fn(arg) in a child with stderr on a pipe; collect its stderr and how
 * it ended.  A child that does not end within 30 s is killed (and reported
 * as killed by SIGKILL), so a hang fails the test instead of stalling it. */
static inline void run_in_child(void (*fn)(void *), void *arg, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        signal(SIGABRT, SIG_DFL);
        alarm(30);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int status = 0, done = 0;
    for (;;) {
        ssize_t n = read(fds[0], o->err + o->errlen, sizeof o->err - 1 - o->errlen);
        if (n > 0) {
            o->errlen += (size_t)n;
            continue;
        }
        if (n == 0 && done)
            break;   /* end of file and the child is reaped */
        if (!done && waitpid(pid, &status, WNOHANG) == pid)
            done = 1;
        if (o->errlen == sizeof o->err - 1)
            break;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!done && now.tv_sec - start.tv_sec > 30) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            done = 1;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    close(fds[0]);
    o->err[o->errlen] = '\0';
    if (WIFEXITED(status)) {
        o->exited = 1;
        o->code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        o->sig = WTERMSIG(status);
    }
}

/* fn(arg) in a child was ended by SIGABRT (a report, then abort()); its
 * stderr is left in *o for the caller to look at. */
static inline void expect_abort(void (*fn)(void *), void *arg, struct outcome *o)
{
    run_in_child(fn, arg, o);
    if (o->exited)
        fail_msg("child exited %d instead of aborting; stderr: %s", o->code, o->err);
    if (o->sig != SIGABRT)
        fail_msg("child killed by signal %d instead of SIGABRT; stderr: %s", o->sig, o->err);
}

/* fn(arg) in a child exited 0 and wrote nothing on stderr; a nonzero exit
 * status names the step that failed. */
static inline void expect_clean(void (*fn)(void *), void *arg)
{
    struct outcome o;
    run_in_child(fn, arg, &o);
    if (!o.exited)
        fail_msg("child killed by signal %d; stderr: %s", o.sig, o.err);
    if (o.code != 0)
        fail_msg("child failed at step %d; stderr: %s", o.code, o.err);
    if (o.errlen != 0)
        fail_msg("unexpected stderr: %s", o.err);
}

#endif
