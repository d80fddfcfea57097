/*
 * options.c - every SPANMALLOC_* environment variable, in one table, read
 * once at start.
 *
 * The table (options[], like mimalloc's options.c) is the single list: each
 * line names a variable, its kind, its default as the variable would spell
 * it, the field of sm_opts it sets, and a line of help.  The kind chooses
 * the parser and the printer (kinds[]), so every boolean accepts the same
 * words and adding an option is one line here and one field in struct
 * sm_options.  From the same table come:
 *   - the defaults: sm_options_init parses each default first, with the
 *     same parser (a unit test checks that every default parses);
 *   - SPANMALLOC_VERBOSE=1: every value in effect, one line each on stderr
 *     (sm_options_print, called by init.c once checked mode has had its
 *     say);
 *   - the README's environment table (sm_options_write_doc, printed by
 *     doc/mkoptionsdoc.c; a unit test compares the README with it).
 *
 * Values are read from environ directly: this runs inside the first
 * malloc, so nothing here may call malloc (getenv would not, but the
 * printers must not either: they format into buffers on the stack).  A bad
 * value gives one warning line on stderr and keeps the default, and so does
 * each SPANMALLOC_* name that is not in the table; nothing here can abort.
 */
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "spanmalloc.h"

extern char **environ;

SM_HIDDEN struct sm_options sm_opts;

/* ---- parsers shared with other files ------------------------------------ */

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

/* ---- the kinds: one parser and one printer each --------------------------- */

/* A parser stores the value and returns true, or returns false and leaves
 * the field alone.  A printer writes the value in effect, spelt as the
 * variable would take it, and returns its length. */
struct kind {
    bool (*parse)(const struct sm_option *o, const char *s);
    size_t (*print)(const struct sm_option *o, char *buf, size_t cap);
    const char *values;   /* what it accepts, for the docs */
};

static size_t put(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return n;
}

static size_t put_u64(char *buf, size_t cap, uint64_t v)
{
    char tmp[24];
    tmp[sm_fmt_u64(tmp, v)] = '\0';
    return put(buf, cap, tmp);
}

static bool streq_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;
        if (x != *b)
            return false;
    }
    return *a == *b;
}

/* bool: on/off, 1/0, true/false, yes/no, in any case, for every boolean. */
static bool parse_bool(const struct sm_option *o, const char *s)
{
    static const char *const yes[] = {"on", "1", "true", "yes"};
    static const char *const no[] = {"off", "0", "false", "no"};
    for (size_t i = 0; i < 4; i++) {
        if (streq_nocase(s, yes[i])) {
            *(bool *)o->value = true;
            return true;
        }
        if (streq_nocase(s, no[i])) {
            *(bool *)o->value = false;
            return true;
        }
    }
    return false;
}
static size_t print_bool(const struct sm_option *o, char *buf, size_t cap)
{
    return put(buf, cap, *(const bool *)o->value ? "on" : "off");
}

/* enum: one of o->names, stored as its index (an int field). */
static bool parse_enum(const struct sm_option *o, const char *s)
{
    for (int i = 0; o->names[i] != NULL; i++)
        if (strcmp(s, o->names[i]) == 0) {
            *(int *)o->value = i;
            return true;
        }
    return false;
}
static size_t print_enum(const struct sm_option *o, char *buf, size_t cap)
{
    return put(buf, cap, o->names[*(const int *)o->value]);
}

/* percent: 0 to 10000, with or without '%' (a uint32_t field). */
static bool parse_percent(const struct sm_option *o, const char *s)
{
    uint64_t n;
    if (!parse_u64(&s, &n) || !(*s == '\0' || strcmp(s, "%") == 0) || n > 10000)
        return false;
    *(uint32_t *)o->value = (uint32_t)n;
    return true;
}
static size_t print_percent(const struct sm_option *o, char *buf, size_t cap)
{
    return put_u64(buf, cap, *(const uint32_t *)o->value);
}

/* size: bytes, with a unit or without (a size_t field). */
static bool parse_bytes(const struct sm_option *o, const char *s)
{
    return sm_parse_size(s, (size_t *)o->value);
}
static size_t print_bytes(const struct sm_option *o, char *buf, size_t cap)
{
    return put_u64(buf, cap, *(const size_t *)o->value);
}

/* limit: a size above 0, or "none"/"off" for no limit (SIZE_MAX). */
static bool parse_limit(const struct sm_option *o, const char *s)
{
    size_t n;
    if (strcmp(s, "off") == 0 || strcmp(s, "none") == 0)
        n = SIZE_MAX;
    else if (!sm_parse_size(s, &n) || n == 0)
        return false;
    *(size_t *)o->value = n;
    return true;
}
static size_t print_limit(const struct sm_option *o, char *buf, size_t cap)
{
    size_t n = *(const size_t *)o->value;
    return n == SIZE_MAX ? put(buf, cap, "none") : put_u64(buf, cap, n);
}

/* string: not empty, and it fits o->size bytes (a char array field).  A
 * path keeps 64 bytes more for what is appended to it (.pid.seq.pb.gz). */
static bool parse_string_room(const struct sm_option *o, const char *s, size_t room)
{
    if (*s == '\0' || strlen(s) + room >= o->size)
        return false;
    strcpy((char *)o->value, s);
    return true;
}
static bool parse_string(const struct sm_option *o, const char *s)
{
    return parse_string_room(o, s, 0);
}
static bool parse_path(const struct sm_option *o, const char *s)
{
    return parse_string_room(o, s, 64);
}
static size_t print_string(const struct sm_option *o, char *buf, size_t cap)
{
    const char *s = (const char *)o->value;
    return put(buf, cap, *s ? s : "unset");
}

/* address: host:port, :port (loopback) or unix:/path, fitting the field;
 * checked fully when the server binds (http.c), here only its shape. */
static bool parse_addr(const struct sm_option *o, const char *s)
{
    if (strncmp(s, "unix:/", 6) != 0 && strrchr(s, ':') == NULL)
        return false;
    return parse_string(o, s);
}

/* duration: an interval above 0 (a uint64_t field in ns; 0: unset). */
static size_t put_duration(char *buf, size_t cap, uint64_t ns)
{
    static const struct { const char *unit; uint64_t ns; } units[] = {
        {"h", 3600ull * 1000000000ull}, {"m", 60ull * 1000000000ull},
        {"s", 1000000000ull}, {"ms", 1000000ull},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (ns % units[i].ns == 0) {
            size_t n = put_u64(buf, cap, ns / units[i].ns);
            return n + put(buf + n, cap - n, units[i].unit);
        }
    return put_u64(buf, cap, ns);   /* not reachable: parsed ns are whole ms */
}
static bool parse_duration(const struct sm_option *o, const char *s)
{
    return sm_parse_duration(s, (uint64_t *)o->value);
}
static size_t print_duration(const struct sm_option *o, char *buf, size_t cap)
{
    uint64_t ns = *(const uint64_t *)o->value;
    return ns ? put_duration(buf, cap, ns) : put(buf, cap, "unset");
}

/* signal: a signal that means nothing to the process unless it says so,
 * by name (with or without SIG) or number (an int field; 0: none).  The
 * profiler's handler replaces the signal's default action, so only signals
 * a program or a user sends on purpose are taken: USR1, USR2 and HUP (the
 * signals daemons take for "reload" or "dump"), URG and WINCH (ignored by
 * default), and the real-time signals.  Every other is refused: those
 * that end the process or dump core by design (TERM, INT, QUIT, ABRT,
 * SEGV, BUS, FPE, ILL, KILL, ...), those that stop it (STOP, TSTP, TTIN,
 * TTOU), CHLD, PIPE, ALRM and PROF, which the program or its libraries use
 * (timers, CPU profilers), and glibc's two internal ones. */
static const struct { const char *name; int sig; } signals[] = {
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"HUP", SIGHUP},
    {"URG", SIGURG}, {"WINCH", SIGWINCH},
};
static bool parse_signal(const struct sm_option *o, const char *s)
{
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (strcmp(s, signals[i].name) == 0) {
            *(int *)o->value = signals[i].sig;
            return true;
        }
    uint64_t v;
    if (!parse_u64(&s, &v) || *s != '\0' || v == 0 || v > 64)
        return false;
    bool ok = (int)v >= SIGRTMIN && (int)v <= SIGRTMAX;
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        ok |= (int)v == signals[i].sig;
    if (!ok)
        return false;
    *(int *)o->value = (int)v;
    return true;
}
static size_t print_signal(const struct sm_option *o, char *buf, size_t cap)
{
    int sig = *(const int *)o->value;
    if (sig == 0)
        return put(buf, cap, "unset");
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (signals[i].sig == sig)
            return put(buf, cap, signals[i].name);
    return put_u64(buf, cap, (uint64_t)sig);
}

/* stats: "exit", "off" (or empty), or an interval: sets stats_mode and
 * stats_interval_ns together. */
static bool parse_stats(const struct sm_option *o, const char *s)
{
    (void)o;
    uint64_t ns;
    if (strcmp(s, "exit") == 0)
        sm_opts.stats_mode = SM_STATS_EXIT;
    else if (strcmp(s, "off") == 0 || *s == '\0')
        sm_opts.stats_mode = SM_STATS_OFF;
    else if (sm_parse_duration(s, &ns)) {
        sm_opts.stats_mode = SM_STATS_INTERVAL;
        sm_opts.stats_interval_ns = ns;
    } else
        return false;
    return true;
}
static size_t print_stats(const struct sm_option *o, char *buf, size_t cap)
{
    (void)o;
    if (sm_opts.stats_mode == SM_STATS_EXIT)
        return put(buf, cap, "exit");
    if (sm_opts.stats_mode == SM_STATS_INTERVAL)
        return put_duration(buf, cap, sm_opts.stats_interval_ns);
    return put(buf, cap, "off");
}

static const struct kind kinds[] = {
    [SM_OPT_BOOL] = {parse_bool, print_bool, "`on`, `off` (or `1`/`0`, `true`/`false`, `yes`/`no`)"},
    [SM_OPT_ENUM] = {parse_enum, print_enum, NULL},   /* its names */
    [SM_OPT_PERCENT] = {parse_percent, print_percent, "percent"},
    [SM_OPT_SIZE] = {parse_bytes, print_bytes, "bytes, with `KiB MiB GiB`"},
    [SM_OPT_LIMIT] = {parse_limit, print_limit, "bytes, with `KiB MiB GiB`; `none`"},
    [SM_OPT_STRING] = {parse_string, print_string, "text"},
    [SM_OPT_PATH] = {parse_path, print_string, "path prefix"},
    [SM_OPT_DURATION] = {parse_duration, print_duration, "interval, like `60s`, `500ms`, `2m`"},
    [SM_OPT_SIGNAL] = {parse_signal, print_signal, "`USR1`, `USR2`, `HUP`, `URG`, `WINCH`, or a real-time signal's number"},
    [SM_OPT_STATS] = {parse_stats, print_stats, "`exit`, or an interval like `10s`"},
    [SM_OPT_ADDR] = {parse_addr, print_string, "`host:port`, `:port` (loopback), `unix:/path`"},
};

/* ---- the table --------------------------------------------------------------- */

#define OPT(name, kind, def, field, help) \
    {"SPANMALLOC_" name, SM_OPT_##kind, def, &sm_opts.field, sizeof sm_opts.field, NULL, help}
#define OPT_ENUM(name, def, field, help, ...) \
    {"SPANMALLOC_" name, SM_OPT_ENUM, def, &sm_opts.field, sizeof sm_opts.field, \
     (const char *const[]){__VA_ARGS__, NULL}, help}

SM_HIDDEN const struct sm_option sm_options[] = {
    OPT_ENUM("RELEASE", "dontneed", release,
             "how idle pages go back to the OS (`MADV_DONTNEED`: RSS drops at once; `MADV_FREE`: when the kernel needs the memory)",
             "dontneed", "free", "off"),   /* in enum sm_release's order */
    OPT("SCAVENGE", BOOL, "on", scavenge, "background return of idle pages"),
    OPT("RETAIN", PERCENT, "10", retain_percent,
        "idle resident memory the scavenger keeps, over the heap in use; pages idle 5 s go back anyway.  A large free (over 32 KiB) that leaves more than twice that, plus twice the largest large object freed lately, idle and resident releases the excess at once ([doc/release.md](doc/release.md))"),
    OPT("MEMLIMIT", LIMIT, "none", memlimit,
        "soft limit like `GOMEMLIMIT`: whenever the heap takes pages that are not resident (new or released) and its resident pages would pass the limit, it first takes back the threads' large caches and releases other idle pages ([doc/release.md](doc/release.md))"),
    OPT("STATS", STATS, "off", stats_mode,
        "print the stats at exit, or one log line per interval on stderr"),
    OPT("PROFILE_RATE", SIZE, "524288", profile_rate, "mean bytes between heap profile samples (`0` off)"),
    OPT("PROFILE", PATH, "", profile_prefix, "write a heap profile at exit"),
    OPT("PROFILE_SIGNAL", SIGNAL, "", profile_signal, "write a heap profile each time the signal arrives"),
    OPT("PROFILE_INTERVAL", DURATION, "", profile_interval_ns, "write a heap profile every interval"),
    OPT("PROFILE_GROWTH", SIZE, "0", profile_growth,
        "write a heap profile each time the heap in use (heap_inuse) passes its last high-water mark by this much (`0` off); like gperftools' `HEAP_PROFILE_INUSE_INTERVAL`"),
    OPT("CHECK", BOOL, "off", check,
        "checked mode: double frees, interior and foreign pointers, writes past the requested size and writes after free are reported and abort; about 3 times slower ([doc/checking.md](doc/checking.md))"),
    OPT_ENUM("STATS_FORMAT", "text", stats_json,
             "`json`: the exit and interval stats as one JSON object per line (with `time` and `pid`)", "text", "json"),
    OPT("HTTP", ADDR, "", http_addr,
        "serve the live endpoint (profiles, `/metrics`, `/debug/vars`; see Finding the leak); `:port` is 127.0.0.1 only; a unix socket is mode 0600; an address in use: one warning, the program runs on"),
    OPT("VERBOSE", BOOL, "off", verbose, "print every value in effect on stderr at start"),
};
SM_HIDDEN const size_t sm_noptions = sizeof sm_options / sizeof sm_options[0];

/* ---- reading ------------------------------------------------------------------ */

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

bool sm_option_parse(const struct sm_option *o, const char *s)
{
    return kinds[o->kind].parse(o, s);
}

size_t sm_option_print(const struct sm_option *o, char *buf, size_t cap)
{
    return kinds[o->kind].print(o, buf, cap);
}

void sm_options_set_defaults(void)
{
    memset(&sm_opts, 0, sizeof sm_opts);
    for (size_t i = 0; i < sm_noptions; i++)
        if (*sm_options[i].def)   /* "": unset, the field stays zero */
            sm_option_parse(&sm_options[i], sm_options[i].def);
}

/* A SPANMALLOC_* name that is no option: a misspelt one (SPANMALLOC_RELAESE)
 * would otherwise leave its default in effect without a word.
 * SPANMALLOC_LIB is no option but the library's own path, which scripts
 * (the test suite's among them) pass on to the programs they preload it
 * into, so it is not warned about. */
static bool known_name(const char *entry, size_t n)
{
    for (size_t i = 0; i < sm_noptions; i++)
        if (strncmp(sm_options[i].name, entry, n) == 0 && sm_options[i].name[n] == '\0')
            return true;
    return n == sizeof "SPANMALLOC_LIB" - 1 && strncmp(entry, "SPANMALLOC_LIB", n) == 0;
}

static void warn_unknown(void)
{
    if (environ == NULL)
        return;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "SPANMALLOC_", 11) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        if (known_name(*e, n))
            continue;
        char name[128];
        if (n >= sizeof name)
            n = sizeof name - 1;
        memcpy(name, *e, n);
        name[n] = '\0';
        sm_warn(name, ": unknown variable, ignored", NULL);
    }
}

void sm_options_init(void)
{
    sm_options_set_defaults();
    for (size_t i = 0; i < sm_noptions; i++) {
        const struct sm_option *o = &sm_options[i];
        const char *v = env_get(o->name);
        if (v != NULL && !sm_option_parse(o, v))
            sm_warn(o->name, ": ignoring bad value ", v);
    }
    warn_unknown();
}

/* ---- printing ----------------------------------------------------------------- */

void sm_options_print(void)
{
    for (size_t i = 0; i < sm_noptions; i++) {
        char val[600];
        sm_option_print(&sm_options[i], val, sizeof val);
        sm_warn(sm_options[i].name, "=", val);
    }
}

static void out(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

void sm_options_write_doc(int fd)
{
    out(fd, "| variable | values | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < sm_noptions; i++) {
        const struct sm_option *o = &sm_options[i];
        out(fd, "| `");
        out(fd, o->name);
        out(fd, "` | ");
        if (o->names != NULL)
            for (size_t k = 0; o->names[k] != NULL; k++) {
                out(fd, k ? ", `" : "`");
                out(fd, o->names[k]);
                out(fd, "`");
            }
        else
            out(fd, kinds[o->kind].values);
        out(fd, " | ");
        if (*o->def) {
            out(fd, "`");
            out(fd, o->def);
            out(fd, "`");
        } else {
            out(fd, "unset");
        }
        out(fd, " | ");
        out(fd, o->help);
        out(fd, " |\n");
    }
}
