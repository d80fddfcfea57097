/*
 * test_options.c - the options table (options.c): each kind's parser, the
 * defaults, bad values (one warning, the default kept), SPANMALLOC_VERBOSE
 * in a real process, and the README's table against the one the table
 * prints.
 *
 * Parsers are called through the table's own lines, so a line with the
 * wrong kind fails here.  Warnings are read back from a temporary file put
 * in place of stderr around the call.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "spanmalloc.h"

/* ---- helpers ------------------------------------------------------------------- */

static const struct sm_option *opt(const char *name)
{
    for (size_t i = 0; i < sm_noptions; i++)
        if (strcmp(sm_options[i].name, name) == 0)
            return &sm_options[i];
    fail_msg("no option %s", name);
    return NULL;
}

static const char *printed(const struct sm_option *o)
{
    static char buf[600];
    sm_option_print(o, buf, sizeof buf);
    return buf;
}

/* stderr goes to a temporary file between capture_start and capture_end,
 * which returns what was written. */
static int saved_err = -1, capture_fd = -1;
static char captured[8192];

static void capture_start(void)
{
    char path[] = "/tmp/test_options.XXXXXX";
    capture_fd = mkstemp(path);
    assert_true(capture_fd >= 0);
    unlink(path);
    fflush(stderr);
    saved_err = dup(STDERR_FILENO);
    dup2(capture_fd, STDERR_FILENO);
}

static const char *capture_end(void)
{
    dup2(saved_err, STDERR_FILENO);
    close(saved_err);
    ssize_t n = pread(capture_fd, captured, sizeof captured - 1, 0);
    close(capture_fd);
    captured[n > 0 ? n : 0] = '\0';
    return captured;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void clear_env(void)
{
    for (size_t i = 0; i < sm_noptions; i++)
        unsetenv(sm_options[i].name);
}

/* ---- defaults ---------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    sm_options_set_defaults();
    for (size_t i = 0; i < sm_noptions; i++) {
        const struct sm_option *o = &sm_options[i];
        assert_non_null(o->help);
        assert_true(strncmp(o->name, "SPANMALLOC_", 11) == 0);
        /* The default is spelt as the variable takes it, and printed back
         * the same way ("unset" when there is none). */
        if (*o->def) {
            struct sm_options keep = sm_opts;
            assert_true(sm_option_parse(o, o->def));
            assert_memory_equal(&keep, &sm_opts, sizeof keep);
            assert_string_equal(printed(o), o->def);
        } else {
            assert_string_equal(printed(o), "unset");
        }
    }
    /* DESIGN's defaults (doc/design.md, the README). */
    assert_int_equal(sm_opts.release, SM_RELEASE_DONTNEED);
    assert_true(sm_opts.scavenge);
    assert_int_equal(sm_opts.retain_percent, 10);
    assert_true(sm_opts.memlimit == SIZE_MAX);
    assert_int_equal(sm_opts.profile_rate, 524288);
    assert_string_equal(sm_opts.profile_prefix, "");
    assert_int_equal(sm_opts.profile_signal, 0);
    assert_int_equal(sm_opts.profile_interval_ns, 0);
    assert_int_equal(sm_opts.stats_mode, SM_STATS_OFF);
    assert_false(sm_opts.check);
    assert_false(sm_opts.verbose);
}

/* ---- each kind ----------------------------------------------------------------- */

static void test_bool(void **state)
{
    (void)state;
    static const char *const yes[] = {"on", "1", "true", "yes", "ON", "True", "YES"};
    static const char *const no[] = {"off", "0", "false", "no", "OFF", "False", "No"};
    static const char *const bad[] = {"", "2", "onn", "y", "n", "enable", " on", "on "};
    size_t nbool = 0;
    for (size_t i = 0; i < sm_noptions; i++) {
        const struct sm_option *o = &sm_options[i];
        if (o->kind != SM_OPT_BOOL)
            continue;
        nbool++;
        bool *v = o->value;
        for (size_t k = 0; k < sizeof yes / sizeof yes[0]; k++) {
            *v = false;
            assert_true(sm_option_parse(o, yes[k]));
            assert_true(*v);
            assert_string_equal(printed(o), "on");
        }
        for (size_t k = 0; k < sizeof no / sizeof no[0]; k++) {
            *v = true;
            assert_true(sm_option_parse(o, no[k]));
            assert_false(*v);
            assert_string_equal(printed(o), "off");
        }
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            *v = true;
            assert_false(sm_option_parse(o, bad[k]));
            assert_true(*v);
        }
    }
    assert_int_equal(nbool, 3);   /* SCAVENGE, CHECK, VERBOSE */
    sm_options_set_defaults();
}

static void test_enum(void **state)
{
    (void)state;
    const struct sm_option *o = opt("SPANMALLOC_RELEASE");
    assert_int_equal(o->kind, SM_OPT_ENUM);
    static const struct { const char *s; int v; } good[] = {
        {"dontneed", SM_RELEASE_DONTNEED}, {"free", SM_RELEASE_FREE}, {"off", SM_RELEASE_NONE},
    };
    for (size_t k = 0; k < 3; k++) {
        sm_opts.release = -1;
        assert_true(sm_option_parse(o, good[k].s));
        assert_int_equal(sm_opts.release, good[k].v);
        assert_string_equal(printed(o), good[k].s);
    }
    static const char *const bad[] = {"", "none", "dontneed ", "Free", "madv_free"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        sm_opts.release = SM_RELEASE_FREE;
        assert_false(sm_option_parse(o, bad[k]));
        assert_int_equal(sm_opts.release, SM_RELEASE_FREE);
    }
    sm_options_set_defaults();
}

static void test_percent(void **state)
{
    (void)state;
    const struct sm_option *o = opt("SPANMALLOC_RETAIN");
    assert_int_equal(o->kind, SM_OPT_PERCENT);
    static const struct { const char *s; uint32_t v; } good[] = {
        {"0", 0}, {"10", 10}, {"25%", 25}, {"10000", 10000},
    };
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        assert_true(sm_option_parse(o, good[k].s));
        assert_int_equal(sm_opts.retain_percent, good[k].v);
    }
    static const char *const bad[] = {"", "10001", "-1", "10 %", "1.5", "%", "ten"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        sm_opts.retain_percent = 7;
        assert_false(sm_option_parse(o, bad[k]));
        assert_int_equal(sm_opts.retain_percent, 7);
    }
    sm_options_set_defaults();
}

static void test_size_and_limit(void **state)
{
    (void)state;
    const struct sm_option *rate = opt("SPANMALLOC_PROFILE_RATE");
    const struct sm_option *limit = opt("SPANMALLOC_MEMLIMIT");
    assert_int_equal(rate->kind, SM_OPT_SIZE);
    assert_int_equal(limit->kind, SM_OPT_LIMIT);
    static const struct { const char *s; size_t v; } good[] = {
        {"0", 0}, {"4096", 4096}, {"64KiB", 65536}, {"2M", 2 << 20}, {"1GiB", (size_t)1 << 30},
        {"3GB", (size_t)3 << 30}, {"1TiB", (size_t)1 << 40}, {"7B", 7},
    };
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        assert_true(sm_option_parse(rate, good[k].s));
        assert_int_equal(sm_opts.profile_rate, good[k].v);
        if (good[k].v == 0) {
            assert_false(sm_option_parse(limit, good[k].s));   /* a limit of 0 is no limit */
        } else {
            assert_true(sm_option_parse(limit, good[k].s));
            assert_int_equal(sm_opts.memlimit, good[k].v);
        }
    }
    assert_true(sm_option_parse(limit, "off"));
    assert_true(sm_opts.memlimit == SIZE_MAX);
    assert_string_equal(printed(limit), "none");
    assert_true(sm_option_parse(limit, "1MiB"));
    assert_string_equal(printed(limit), "1048576");
    assert_true(sm_option_parse(limit, "none"));
    assert_true(sm_opts.memlimit == SIZE_MAX);
    static const char *const bad[] = {"", "1X", "-5", "KiB", "1 KiB", "99999999999999999999",
                                      "17000000TiB", "1kib"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        sm_opts.profile_rate = 123;
        sm_opts.memlimit = 456;
        assert_false(sm_option_parse(rate, bad[k]));
        assert_false(sm_option_parse(limit, bad[k]));
        assert_int_equal(sm_opts.profile_rate, 123);
        assert_int_equal(sm_opts.memlimit, 456);
    }
    sm_options_set_defaults();
}

static void test_path(void **state)
{
    (void)state;
    const struct sm_option *o = opt("SPANMALLOC_PROFILE");
    assert_int_equal(o->kind, SM_OPT_PATH);
    assert_true(sm_option_parse(o, "/tmp/heap"));
    assert_string_equal(sm_opts.profile_prefix, "/tmp/heap");
    assert_string_equal(printed(o), "/tmp/heap");
    /* Room is kept for the suffix: a prefix that fills the field is bad. */
    char big[sizeof sm_opts.profile_prefix];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_false(sm_option_parse(o, big));
    big[sizeof big - 64] = '\0';   /* 64 bytes short of the field: no room */
    assert_false(sm_option_parse(o, big));
    big[sizeof big - 65] = '\0';
    assert_true(sm_option_parse(o, big));
    assert_string_equal(sm_opts.profile_prefix, big);
    assert_false(sm_option_parse(o, ""));
    assert_string_equal(sm_opts.profile_prefix, big);
    sm_options_set_defaults();
    assert_string_equal(printed(o), "unset");
}

static void test_duration_and_stats(void **state)
{
    (void)state;
    const struct sm_option *o = opt("SPANMALLOC_PROFILE_INTERVAL");
    assert_int_equal(o->kind, SM_OPT_DURATION);
    static const struct { const char *s; uint64_t ns; const char *shown; } good[] = {
        {"10s", 10000000000ull, "10s"}, {"500ms", 500000000ull, "500ms"},
        {"2m", 120000000000ull, "2m"}, {"1h", 3600000000000ull, "1h"},
        {"5", 5000000000ull, "5s"}, {"120s", 120000000000ull, "2m"},
        {"1500ms", 1500000000ull, "1500ms"},
    };
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        assert_true(sm_option_parse(o, good[k].s));
        assert_int_equal(sm_opts.profile_interval_ns, good[k].ns);
        assert_string_equal(printed(o), good[k].shown);
    }
    static const char *const bad[] = {"", "0", "0s", "10x", "s", "-1s", "1.5s", "10 s"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        sm_opts.profile_interval_ns = 42;
        assert_false(sm_option_parse(o, bad[k]));
        assert_int_equal(sm_opts.profile_interval_ns, 42);
    }

    const struct sm_option *st = opt("SPANMALLOC_STATS");
    assert_int_equal(st->kind, SM_OPT_STATS);
    assert_true(sm_option_parse(st, "exit"));
    assert_int_equal(sm_opts.stats_mode, SM_STATS_EXIT);
    assert_string_equal(printed(st), "exit");
    assert_true(sm_option_parse(st, "10s"));
    assert_int_equal(sm_opts.stats_mode, SM_STATS_INTERVAL);
    assert_int_equal(sm_opts.stats_interval_ns, 10000000000ull);
    assert_string_equal(printed(st), "10s");
    assert_true(sm_option_parse(st, ""));
    assert_int_equal(sm_opts.stats_mode, SM_STATS_OFF);
    assert_true(sm_option_parse(st, "exit"));
    assert_true(sm_option_parse(st, "off"));
    assert_int_equal(sm_opts.stats_mode, SM_STATS_OFF);
    assert_string_equal(printed(st), "off");
    assert_false(sm_option_parse(st, "sometimes"));
    assert_false(sm_option_parse(st, "0s"));
    assert_int_equal(sm_opts.stats_mode, SM_STATS_OFF);
    sm_options_set_defaults();
}

static void test_signal(void **state)
{
    (void)state;
    const struct sm_option *o = opt("SPANMALLOC_PROFILE_SIGNAL");
    assert_int_equal(o->kind, SM_OPT_SIGNAL);
    static const struct { const char *s; int sig; const char *shown; } good[] = {
        {"USR1", SIGUSR1, "USR1"}, {"SIGUSR2", SIGUSR2, "USR2"}, {"HUP", SIGHUP, "HUP"},
        {"12", SIGUSR2, "USR2"}, {"WINCH", SIGWINCH, "WINCH"}, {"SIGURG", SIGURG, "URG"},
        {"1", SIGHUP, "HUP"}, {"10", SIGUSR1, "USR1"},
    };
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        sm_opts.profile_signal = 0;
        assert_true(sm_option_parse(o, good[k].s));
        assert_int_equal(sm_opts.profile_signal, good[k].sig);
        assert_string_equal(printed(o), good[k].shown);
    }
    /* The real-time signals, by number. */
    char num[8];
    snprintf(num, sizeof num, "%d", SIGRTMIN);
    assert_true(sm_option_parse(o, num));
    assert_int_equal(sm_opts.profile_signal, SIGRTMIN);
    assert_string_equal(printed(o), num);
    snprintf(num, sizeof num, "%d", SIGRTMAX);
    assert_true(sm_option_parse(o, num));
    assert_int_equal(sm_opts.profile_signal, SIGRTMAX);
    /* Signals that end, stop or core the process, or that the program
     * and its libraries use, by name and by number. */
    static const char *const bad[] = {
        "", "FOO", "0", "65", "usr1", "SIG", "-10",
        "TERM", "SIGTERM", "INT", "QUIT", "SEGV", "BUS", "FPE", "ILL", "ABRT", "KILL",
        "STOP", "TSTP", "TTIN", "TTOU", "CHLD", "PIPE", "ALRM", "PROF", "TRAP", "SYS",
        "XCPU", "XFSZ", "VTALRM", "CONT", "IO",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        sm_opts.profile_signal = SIGUSR1;
        assert_false(sm_option_parse(o, bad[k]));
        assert_int_equal(sm_opts.profile_signal, SIGUSR1);
    }
    static const int badsig[] = {
        SIGTERM, SIGINT, SIGQUIT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGKILL, SIGSTOP,
        SIGTSTP, SIGTTIN, SIGTTOU, SIGCHLD, SIGPIPE, SIGALRM, SIGPROF, SIGTRAP, SIGSYS,
        SIGXCPU, SIGXFSZ, SIGVTALRM, SIGCONT, SIGIO, 32, 33,
    };
    for (size_t k = 0; k < sizeof badsig / sizeof badsig[0]; k++) {
        snprintf(num, sizeof num, "%d", badsig[k]);
        sm_opts.profile_signal = SIGUSR1;
        assert_false(sm_option_parse(o, num));
        assert_int_equal(sm_opts.profile_signal, SIGUSR1);
    }
    sm_options_set_defaults();
}

/* ---- reading the environment ---------------------------------------------------- */

static void test_env_good_values(void **state)
{
    (void)state;
    clear_env();
    setenv("SPANMALLOC_RELEASE", "free", 1);
    setenv("SPANMALLOC_SCAVENGE", "no", 1);
    setenv("SPANMALLOC_RETAIN", "25", 1);
    setenv("SPANMALLOC_MEMLIMIT", "64MiB", 1);
    setenv("SPANMALLOC_CHECK", "0", 1);
    capture_start();
    sm_options_init();
    const char *err = capture_end();
    assert_string_equal(err, "");
    assert_int_equal(sm_opts.release, SM_RELEASE_FREE);
    assert_false(sm_opts.scavenge);
    assert_int_equal(sm_opts.retain_percent, 25);
    assert_int_equal(sm_opts.memlimit, 64 << 20);
    clear_env();
    sm_options_set_defaults();
}

/* Each bad value: exactly one line naming the variable and the value, and
 * the default in effect. */
static void test_env_bad_values(void **state)
{
    (void)state;
    static const struct { const char *name, *value; } bad[] = {
        {"SPANMALLOC_RELEASE", "sometimes"}, {"SPANMALLOC_SCAVENGE", "maybe"},
        {"SPANMALLOC_RETAIN", "lots"},       {"SPANMALLOC_MEMLIMIT", "0"},
        {"SPANMALLOC_PROFILE_RATE", "fast"}, {"SPANMALLOC_PROFILE", ""},
        {"SPANMALLOC_PROFILE_SIGNAL", "NOPE"}, {"SPANMALLOC_PROFILE_INTERVAL", "0s"},
        {"SPANMALLOC_STATS", "often"},       {"SPANMALLOC_CHECK", "2"},
        {"SPANMALLOC_VERBOSE", "very"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        clear_env();
        setenv(bad[k].name, bad[k].value, 1);
        capture_start();
        sm_options_init();
        const char *err = capture_end();
        char want[256];
        snprintf(want, sizeof want, "spanmalloc: %s: ignoring bad value %s\n", bad[k].name,
                 bad[k].value);
        assert_string_equal(err, want);
        /* The default, as printed, is in effect. */
        const struct sm_option *o = opt(bad[k].name);
        assert_string_equal(printed(o), *o->def ? o->def : "unset");
    }
    /* All at once: one line each, nothing else. */
    clear_env();
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        setenv(bad[k].name, bad[k].value, 1);
    capture_start();
    sm_options_init();
    assert_int_equal(count_lines(capture_end()), sizeof bad / sizeof bad[0]);
    clear_env();
    sm_options_set_defaults();
}

/* Each SPANMALLOC_* name that is no option: one line naming it; the
 * options are read as if it were not there.  SPANMALLOC_LIB (the
 * library's path, which make check sets) is not warned about. */
static void test_env_unknown_names(void **state)
{
    (void)state;
    clear_env();
    setenv("SPANMALLOC_RELAESE", "free", 1);
    setenv("SPANMALLOC_SCAVENGE", "off", 1);
    setenv("SPANMALLOC_", "x", 1);
    setenv("SPANMALLOC_RELEASEX", "free", 1);
    setenv("SPANMALLOC_LIB", "/nonexistent/libspanmalloc.so", 0);
    setenv("XSPANMALLOC_RELEASE", "free", 1);
    capture_start();
    sm_options_init();
    const char *err = capture_end();
    assert_int_equal(count_lines(err), 3);
    assert_non_null(strstr(err, "spanmalloc: SPANMALLOC_RELAESE: unknown variable, ignored\n"));
    assert_non_null(strstr(err, "spanmalloc: SPANMALLOC_: unknown variable, ignored\n"));
    assert_non_null(strstr(err, "spanmalloc: SPANMALLOC_RELEASEX: unknown variable, ignored\n"));
    assert_null(strstr(err, "SPANMALLOC_LIB"));
    assert_int_equal(sm_opts.release, SM_RELEASE_DONTNEED);
    assert_false(sm_opts.scavenge);
    unsetenv("SPANMALLOC_RELAESE");
    unsetenv("SPANMALLOC_");
    unsetenv("SPANMALLOC_RELEASEX");
    unsetenv("XSPANMALLOC_RELEASE");
    clear_env();
    sm_options_set_defaults();
}

/* sm_options_print: one line per option, NAME=value. */
static void test_print(void **state)
{
    (void)state;
    sm_options_set_defaults();
    sm_opts.release = SM_RELEASE_FREE;
    sm_opts.memlimit = (size_t)1 << 30;
    capture_start();
    sm_options_print();
    const char *err = capture_end();
    assert_int_equal(count_lines(err), sm_noptions);
    for (size_t i = 0; i < sm_noptions; i++) {
        char want[128];
        snprintf(want, sizeof want, "spanmalloc: %s=", sm_options[i].name);
        assert_non_null(strstr(err, want));
    }
    assert_non_null(strstr(err, "spanmalloc: SPANMALLOC_RELEASE=free\n"));
    assert_non_null(strstr(err, "spanmalloc: SPANMALLOC_MEMLIMIT=1073741824\n"));
    assert_non_null(strstr(err, "spanmalloc: SPANMALLOC_SCAVENGE=on\n"));
    assert_non_null(strstr(err, "spanmalloc: SPANMALLOC_PROFILE=unset\n"));
    sm_options_set_defaults();
}

/* A real process started with SPANMALLOC_VERBOSE=1 and the library
 * preloaded prints every value in effect at start, and nothing else. */
static void test_verbose_process(void **state)
{
    (void)state;
    const char *lib = getenv("SPANMALLOC_LIB");
    assert_non_null(lib);   /* set by make check */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        clear_env();
        setenv("SPANMALLOC_VERBOSE", "1", 1);
        setenv("SPANMALLOC_RELEASE", "free", 1);
        setenv("SPANMALLOC_STATS", "30s", 1);
        setenv("LD_PRELOAD", lib, 1);
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[8192];
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(count_lines(buf), sm_noptions);
    assert_non_null(strstr(buf, "spanmalloc: SPANMALLOC_RELEASE=free\n"));
    assert_non_null(strstr(buf, "spanmalloc: SPANMALLOC_STATS=30s\n"));
    assert_non_null(strstr(buf, "spanmalloc: SPANMALLOC_VERBOSE=on\n"));
    assert_non_null(strstr(buf, "spanmalloc: SPANMALLOC_SCAVENGE=on\n"));
    assert_non_null(strstr(buf, "spanmalloc: SPANMALLOC_PROFILE_RATE=524288\n"));
}

/* A process started with SPANMALLOC_PROFILE_SIGNAL set: this program run
 * again (main's child mode), reporting whether the signal has a handler
 * after the library started.  A refused signal: one warning, no handler;
 * an accepted one: the profiler's handler. */
static void run_signal_child(const char *value, int sig, char *err, size_t cap, int *handled)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        clear_env();
        setenv("SPANMALLOC_PROFILE_SIGNAL", value, 1);
        char arg[16];
        snprintf(arg, sizeof arg, "%d", sig);
        setenv("TEST_OPTIONS_SIGNAL_CHILD", arg, 1);
        execl("/proc/self/exe", "test_options", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (len < cap - 1 && (n = read(fds[0], err + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    err[len] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_true(WEXITSTATUS(status) == 10 || WEXITSTATUS(status) == 11);
    *handled = WEXITSTATUS(status) == 11;
}

static void test_signal_process(void **state)
{
    (void)state;
    char err[4096];
    int handled;
    static const struct { const char *value; int sig; } refused[] = {
        {"TERM", SIGTERM}, {"INT", SIGINT}, {"SEGV", SIGSEGV}, {"CHLD", SIGCHLD},
        {"3", SIGQUIT}, {"PROF", SIGPROF},
    };
    for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++) {
        run_signal_child(refused[k].value, refused[k].sig, err, sizeof err, &handled);
        char want[128];
        snprintf(want, sizeof want,
                 "spanmalloc: SPANMALLOC_PROFILE_SIGNAL: ignoring bad value %s\n", refused[k].value);
        assert_string_equal(err, want);
        assert_false(handled);
    }
    run_signal_child("USR2", SIGUSR2, err, sizeof err, &handled);
    assert_string_equal(err, "");
    assert_true(handled);
}

/* ---- the README ------------------------------------------------------------------- */

#define DOC_BEGIN "<!-- environment table: generated by doc/mkoptionsdoc from src/options.c; do not edit -->\n"
#define DOC_END "<!-- end of environment table -->\n"

static void test_readme_table(void **state)
{
    (void)state;
    const char *srcdir = getenv("srcdir");
    assert_non_null(srcdir);   /* set by make check */
    char path[4096];
    snprintf(path, sizeof path, "%s/README.md", srcdir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char readme[1 << 17];
    size_t n = fread(readme, 1, sizeof readme - 1, f);
    fclose(f);
    readme[n] = '\0';
    char *begin = strstr(readme, DOC_BEGIN);
    assert_non_null(begin);
    begin += strlen(DOC_BEGIN);
    char *end = strstr(begin, DOC_END);
    assert_non_null(end);
    *end = '\0';

    char tpath[] = "/tmp/test_options_doc.XXXXXX";
    int fd = mkstemp(tpath);
    assert_true(fd >= 0);
    unlink(tpath);
    sm_options_write_doc(fd);
    static char table[1 << 15];
    ssize_t m = pread(fd, table, sizeof table - 1, 0);
    close(fd);
    assert_true(m > 0);
    table[m] = '\0';
    if (strcmp(begin, table) != 0)
        fail_msg("README.md's environment table differs from the options table: "
                 "regenerate it with 'make options-doc'");
    assert_int_equal(count_lines(table), sm_noptions + 2);
}

int main(void)
{
    /* test_signal_process's child: exit 11 if the signal has a handler
     * (the library has started: its constructor ran), else 10. */
    const char *child = getenv("TEST_OPTIONS_SIGNAL_CHILD");
    if (child != NULL) {
        struct sigaction sa;
        if (sigaction(atoi(child), NULL, &sa) != 0)
            _exit(1);
        _exit(sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN ? 10 : 11);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_enum),
        cmocka_unit_test(test_percent),
        cmocka_unit_test(test_size_and_limit),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_duration_and_stats),
        cmocka_unit_test(test_signal),
        cmocka_unit_test(test_signal_process),
        cmocka_unit_test(test_env_good_values),
        cmocka_unit_test(test_env_bad_values),
        cmocka_unit_test(test_env_unknown_names),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_verbose_process),
        cmocka_unit_test(test_readme_table),
    };
    sm_init();
    return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
