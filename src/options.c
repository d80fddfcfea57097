/*
 * options.c - every SPANMALLOC_* environment variable, read once at start.
 *
 * The table below is the single list: name, default, parser.  Values are
 * read from environ directly (getenv is fine too, but nothing here may call
 * malloc: this runs inside the first malloc).  A bad value gives one warning
 * line on stderr and keeps the default; nothing here can abort.
 */
#include <limits.h>
#include <signal.h>
#include <string.h>

#include "internal.h"
#include "spanmalloc.h"

extern char **environ;

SM_HIDDEN struct sm_options sm_opts = {
    .release = SM_RELEASE_DONTNEED,
    .scavenge = true,
    .retain_percent = 10,
    .memlimit = SIZE_MAX,
    .profile_rate = 512 * 1024,
};

static const char *env_get(const char *name)
{
    size_t n = strlen(name);
    if (environ == NULL)
        return NULL;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static bool parse_u64(const char **sp, uint64_t *out)
{
    const char *s = *sp;
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return false;
    while (*s >= '0' && *s <= '9') {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        s++;
    }
    *sp = s;
    *out = v;
    return true;
}

/* "123", "64KiB", "512MiB", "2GiB", "1TiB" (also K, M, G, KB, MB, GB as
 * binary multiples, as GOMEMLIMIT's parser does for the IEC forms). */
bool sm_parse_size(const char *s, size_t *out)
{
    uint64_t v;
    if (!parse_u64(&s, &v))
        return false;
    static const struct { const char *suffix; unsigned shift; } units[] = {
        {"", 0}, {"B", 0}, {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40},
        {"K", 10}, {"M", 20}, {"G", 30}, {"T", 40},
        {"KB", 10}, {"MB", 20}, {"GB", 30}, {"TB", 40},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(s, units[i].suffix) == 0) {
            if (units[i].shift && v > (UINT64_MAX >> units[i].shift))
                return false;
            *out = (size_t)(v << units[i].shift);
            return true;
        }
    }
    return false;
}

/* "10s", "500ms", "2m", "1h"; a bare number is seconds. */
bool sm_parse_duration(const char *s, uint64_t *ns)
{
    uint64_t v;
    if (!parse_u64(&s, &v))
        return false;
    uint64_t mul;
    if (*s == '\0' || strcmp(s, "s") == 0)
        mul = 1000000000ull;
    else if (strcmp(s, "ms") == 0)
        mul = 1000000ull;
    else if (strcmp(s, "m") == 0)
        mul = 60ull * 1000000000ull;
    else if (strcmp(s, "h") == 0)
        mul = 3600ull * 1000000000ull;
    else
        return false;
    if (v == 0 || v > UINT64_MAX / mul)
        return false;
    *ns = v * mul;
    return true;
}

static void bad_value(const char *name, const char *value)
{
    sm_warn(name, ": ignoring bad value ", value);
}

static int parse_signal(const char *s)
{
    static const struct { const char *name; int sig; } sigs[] = {
        {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"HUP", SIGHUP}, {"PROF", SIGPROF},
        {"URG", SIGURG}, {"WINCH", SIGWINCH}, {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},
    };
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (strcmp(s, sigs[i].name) == 0)
            return sigs[i].sig;
    const char *p = s;
    uint64_t v;
    if (parse_u64(&p, &v) && *p == '\0' && v > 0 && v < 65)
        return (int)v;
    return 0;
}

void sm_options_init(void)
{
    const char *v;
    if ((v = env_get("SPANMALLOC_RELEASE")) != NULL) {
        if (strcmp(v, "dontneed") == 0)
            sm_opts.release = SM_RELEASE_DONTNEED;
        else if (strcmp(v, "free") == 0)
            sm_opts.release = SM_RELEASE_FREE;
        else if (strcmp(v, "off") == 0)
            sm_opts.release = SM_RELEASE_NONE;
        else
            bad_value("SPANMALLOC_RELEASE", v);
    }
    if ((v = env_get("SPANMALLOC_SCAVENGE")) != NULL) {
        if (strcmp(v, "on") == 0 || strcmp(v, "1") == 0)
            sm_opts.scavenge = true;
        else if (strcmp(v, "off") == 0 || strcmp(v, "0") == 0)
            sm_opts.scavenge = false;
        else
            bad_value("SPANMALLOC_SCAVENGE", v);
    }
    if ((v = env_get("SPANMALLOC_RETAIN")) != NULL) {
        const char *p = v;
        uint64_t n;
        if (parse_u64(&p, &n) && (*p == '\0' || strcmp(p, "%") == 0) && n <= 10000)
            sm_opts.retain_percent = (uint32_t)n;
        else
            bad_value("SPANMALLOC_RETAIN", v);
    }
    if ((v = env_get("SPANMALLOC_MEMLIMIT")) != NULL) {
        size_t n;
        if (strcmp(v, "off") == 0 || strcmp(v, "none") == 0)
            sm_opts.memlimit = SIZE_MAX;
        else if (sm_parse_size(v, &n) && n > 0)
            sm_opts.memlimit = n;
        else
            bad_value("SPANMALLOC_MEMLIMIT", v);
    }
    if ((v = env_get("SPANMALLOC_PROFILE_RATE")) != NULL) {
        size_t n;
        if (sm_parse_size(v, &n))
            sm_opts.profile_rate = n;
        else
            bad_value("SPANMALLOC_PROFILE_RATE", v);
    }
    if ((v = env_get("SPANMALLOC_PROFILE")) != NULL) {
        if (*v != '\0' && strlen(v) < sizeof sm_opts.profile_prefix - 64)
            strcpy(sm_opts.profile_prefix, v);
        else
            bad_value("SPANMALLOC_PROFILE", v);
    }
    if ((v = env_get("SPANMALLOC_PROFILE_SIGNAL")) != NULL) {
        int sig = parse_signal(v);
        if (sig)
            sm_opts.profile_signal = sig;
        else
            bad_value("SPANMALLOC_PROFILE_SIGNAL", v);
    }
    if ((v = env_get("SPANMALLOC_PROFILE_INTERVAL")) != NULL) {
        if (!sm_parse_duration(v, &sm_opts.profile_interval_ns))
            bad_value("SPANMALLOC_PROFILE_INTERVAL", v);
    }
    if ((v = env_get("SPANMALLOC_STATS")) != NULL) {
        if (strcmp(v, "exit") == 0)
            sm_opts.stats_mode = SM_STATS_EXIT;
        else if (strcmp(v, "off") == 0 || *v == '\0')
            sm_opts.stats_mode = SM_STATS_OFF;
        else if (sm_parse_duration(v, &sm_opts.stats_interval_ns))
            sm_opts.stats_mode = SM_STATS_INTERVAL;
        else
            bad_value("SPANMALLOC_STATS", v);
    }
    if ((v = env_get("SPANMALLOC_HTTP")) != NULL) {
        /* host:port, :port (loopback) or unix:/path; checked fully when
         * the server binds (http.c), here only that it fits. */
        if (*v != '\0' && strlen(v) < sizeof sm_opts.http_addr &&
            (strncmp(v, "unix:/", 6) == 0 || strrchr(v, ':') != NULL))
            strcpy(sm_opts.http_addr, v);
        else
            bad_value("SPANMALLOC_HTTP", v);
    }
    if ((v = env_get("SPANMALLOC_STATS_FORMAT")) != NULL) {
        if (strcmp(v, "json") == 0)
            sm_opts.stats_json = true;
        else if (strcmp(v, "text") == 0)
            sm_opts.stats_json = false;
        else
            bad_value("SPANMALLOC_STATS_FORMAT", v);
    }
    if ((v = env_get("SPANMALLOC_CHECK")) != NULL) {
        if (strcmp(v, "1") == 0)
            sm_opts.check = true;
        else if (strcmp(v, "0") == 0)
            sm_opts.check = false;
        else
            bad_value("SPANMALLOC_CHECK", v);
    }
}
