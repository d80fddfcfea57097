/*
 * http.c - the live endpoint, off unless SPANMALLOC_HTTP names an address.
 *
 * What Go's net/http/pprof and expvar give a Go service, for a C program:
 *
 *   GET  /debug/pprof/heap     the heap profile, gzipped profile.proto, so
 *                              `go tool pprof http://ADDR/debug/pprof/heap`
 *                              works as for a Go service
 *   GET  /debug/pprof/allocs   the same profile with alloc_space as its
 *                              default sample type, as Go serves it
 *   GET  /metrics              Prometheus text format (mstats.c): Go's
 *                              go_memstats_* names, spanmalloc_* for the rest
 *   GET  /debug/vars           expvar's shape: {"memstats": {...}}
 *   POST /debug/spanmalloc/free_os_memory
 *                              sm_free_os_memory(); answers the bytes released
 *
 * Addresses: "host:port" (a numeric IPv4 or [IPv6] address, or localhost),
 * ":port" for 127.0.0.1 (loopback unless the address says otherwise: Go's
 * ":6060" would listen on every interface, which is not what a malloc
 * should do behind a user's back), or "unix:/path" (a socket of mode 0600).
 * Port 0 takes a free port and says which on stderr.  No name look-up.
 *
 * One thread serves one connection at a time (as a debugging endpoint is
 * used: a scrape, a profile), each bounded in time: the request must
 * arrive within SM_HTTP_READ_MS and the response leave within
 * SM_HTTP_WRITE_MS, on a non-blocking socket with poll, so a slow or
 * silent client costs at most a few seconds and others wait in the
 * listen queue (SOMAXCONN deep) meanwhile.  Requests over 8 KiB, garbage,
 * unknown paths and methods get 431, 400, 404 and 405.  Every response
 * closes the connection.
 *
 * Locks and malloc.  The thread is an ordinary thread of the process: it is
 * started by the background worker (worker.c), never from inside malloc,
 * holds no allocator lock of its own, and takes the allocator's locks only
 * through the public entry points (stats reads, the profile snapshot), like
 * any thread calling them.  The response body is rendered into a memfd
 * (through stdio for the printers of mstats.c, and with write(2) by the
 * profile writer, which calls no malloc), then sent with sendfile with its
 * Content-Length; so a slow client never holds the stats or the profiler.
 *
 * Start and failure.  The endpoint is tried once per program: a fork child
 * neither serves nor keeps the listening socket (it is closed in the child,
 * as Go's runtime would not have it either), and a program started by this
 * one that inherits SPANMALLOC_HTTP finds the address taken: bind fails,
 * one warning line, and the program runs on without the endpoint.  A unix
 * socket left behind by a process that died is replaced (nobody answers on
 * it); one that answers is not.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "mprof.h"
#include "spanmalloc.h"

#define SM_HTTP_READ_MS 3000      /* the whole request, from accept */
#define SM_HTTP_WRITE_MS 10000    /* the whole response */
#define SM_HTTP_LINGER_MS 200     /* waiting for the client to close */
#define SM_HTTP_MAX_REQUEST 8192  /* request line and headers */
#define SM_HTTP_MAX_SYMBOL_BODY (16u << 20)

static int listen_fd = -1;
static int tried;                 /* sm_http_start ran in this program */
static int running;               /* the server thread is alive (atomic) */
static pid_t unix_owner;          /* pid that bound unix_path */
static char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static int body_fd = -1;          /* memfd the responses are rendered into */
static char req[SM_HTTP_MAX_REQUEST + 1];

static int64_t now_ms(void)
{
    return (int64_t)(sm_nanotime() / 1000000);
}

/* ---- the address --------------------------------------------------------- */

static bool parse_port(const char *s, uint16_t *port)
{
    unsigned long v = 0;
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > 65535)
            return false;
    }
    *port = (uint16_t)v;
    return true;
}

/* Fill ss from "host:port", ":port", "[v6]:port"; false if it is none. */
static bool parse_inet(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
        return false;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    uint16_t port;
    if (!parse_port(colon + 1, &port))
        return false;
    memset(ss, 0, sizeof *ss);
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return false;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *len = sizeof *s6;
        return true;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (hl == 0 || strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return false;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    *len = sizeof *s4;
    return true;
}

static void warn_errno(const char *what, int err)
{
    char msg[160];
    snprintf(msg, sizeof msg, ": %s; running without the endpoint", strerror(err));
    sm_warn("SPANMALLOC_HTTP: cannot ", what, msg);
}

static void unlink_socket(void)
{
    if (unix_path[0] && getpid() == unix_owner)
        unlink(unix_path);
}

/* A unix socket at path that nobody answers on is left over: remove it. */
static bool stale_socket(const struct sockaddr_un *sun)
{
    struct stat st;
    if (lstat(sun->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool stale = connect(fd, (const struct sockaddr *)sun, sizeof *sun) < 0 && errno == ECONNREFUSED;
    close(fd);
    return stale && unlink(sun->sun_path) == 0;
}

static int bind_unix(const char *path)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun.sun_path) {
        sm_warn("SPANMALLOC_HTTP: socket path too long: ", path, "; running without the endpoint");
        return -1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        warn_errno("make a socket", errno);
        return -1;
    }
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    if (rc < 0 && errno == EADDRINUSE && stale_socket(&sun))
        rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    if (rc < 0) {
        warn_errno("bind", errno);
        close(fd);
        return -1;
    }
    /* Before listen(), no one can connect: the mode is set in time. */
    if (chmod(path, 0600) < 0) {
        warn_errno("chmod the socket", errno);
        unlink(path);
        close(fd);
        return -1;
    }
    strcpy(unix_path, path);
    unix_owner = getpid();
    return fd;
}

static int bind_inet(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!parse_inet(addr, &ss, &len)) {
        sm_warn("SPANMALLOC_HTTP: bad address ", addr,
                " (want host:port, :port or unix:/path); running without the endpoint");
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        warn_errno("make a socket", errno);
        return -1;
    }
    /* Lets a restarted program bind while old connections linger in
     * TIME_WAIT; two live listeners still cannot share the port. */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
        char what[160];
        snprintf(what, sizeof what, "bind %s", addr);
        warn_errno(what, errno);
        close(fd);
        return -1;
    }
    uint16_t port = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port;
    if (port == 0) {
        /* The kernel chose: say which, or nobody can find it. */
        socklen_t l = sizeof ss;
        char host[INET6_ADDRSTRLEN], msg[INET6_ADDRSTRLEN + 32];
        getsockname(fd, (struct sockaddr *)&ss, &l);
        if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
            snprintf(msg, sizeof msg, "[%s]:%u", host, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
        } else {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
            snprintf(msg, sizeof msg, "%s:%u", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
        }
        sm_warn("http endpoint listening on ", msg, NULL);
    }
    return fd;
}

/* ---- one connection --------------------------------------------------------- */

/* Wait for fd to be ready for events until deadline; false on timeout. */
static bool wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {fd, events, 0};
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return true;
        if (rc < 0 && errno != EINTR)
            return false;
    }
}

static bool send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(fd, POLLOUT, deadline))
                return false;
        } else {
            return false;
        }
    }
    return true;
}

static bool send_body(int fd, size_t n, int64_t deadline)
{
    off_t off = 0;
    while ((size_t)off < n) {
        ssize_t w = sendfile(fd, body_fd, &off, n - (size_t)off);
        if (w > 0)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(fd, POLLOUT, deadline))
                return false;
        } else {
            return false;
        }
    }
    return true;
}

static void respond(int fd, int code, const char *extra_headers, size_t body_len, int64_t deadline)
{
    static const struct { int code; const char *text; } reasons[] = {
        {200, "OK"}, {400, "Bad Request"}, {404, "Not Found"}, {405, "Method Not Allowed"},
        {408, "Request Timeout"}, {413, "Content Too Large"}, {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
    };
    const char *reason = "Error";
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].code == code)
            reason = reasons[i].text;
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\nConnection: close\r\n"
                     "X-Content-Type-Options: nosniff\r\n\r\n",
                     code, reason, extra_headers, body_len);
    if (n > 0 && (size_t)n < sizeof head && send_all(fd, head, (size_t)n, deadline) && body_len)
        send_body(fd, body_len, deadline);
}

/* Empty the body file for the next response. */
static void body_reset(void)
{
    if (ftruncate(body_fd, 0) < 0 || lseek(body_fd, 0, SEEK_SET) < 0)
        return;
}

/* The body through stdio (the printers of mstats.c); its length, or -1. */
static FILE *body_open(void)
{
    body_reset();
    int fd = dup(body_fd);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w");
    if (f == NULL)
        close(fd);
    return f;
}

static ssize_t body_close(FILE *f)
{
    if (fclose(f) != 0)
        return -1;
    off_t end = lseek(body_fd, 0, SEEK_END);
    return end < 0 ? -1 : (ssize_t)end;
}

static ssize_t body_text(const char *s)
{
    FILE *f = body_open();
    if (f == NULL)
        return -1;
    fputs(s, f);
    return body_close(f);
}

enum route { R_NONE, R_HEAP, R_ALLOCS, R_METRICS, R_VARS, R_FREE, R_SYMBOL, R_SYMBOL_POST };

static const struct {
    const char *path;
    const char *method;
    enum route route;
} routes[] = {
    {"/debug/pprof/heap", "GET", R_HEAP},
    {"/debug/pprof/allocs", "GET", R_ALLOCS},
    {"/metrics", "GET", R_METRICS},
    {"/debug/vars", "GET", R_VARS},
    {"/debug/spanmalloc/free_os_memory", "POST", R_FREE},
    {"/debug/pprof/symbol", "GET", R_SYMBOL},
    {"/debug/pprof/symbol", "POST", R_SYMBOL_POST},
};

/* /debug/pprof/symbol, Go's protocol, which pprof asks for every mapping
 * the profile does not symbolize and pprof could not symbolize from the
 * files: the body is hex addresses joined by '+', the answer one line
 * "0xADDR name" per address that has a name (dladdr: exported and
 * dynamic symbols; the rest stay for pprof's own symbolizer).  Read as a
 * stream, so any number of addresses costs a fixed buffer. */
static void symbol_one(FILE *f, const char *tok, size_t n)
{
    uint64_t a = 0;
    size_t i = 0;
    if (n > 2 && tok[0] == '0' && (tok[1] == 'x' || tok[1] == 'X'))
        i = 2;
    if (i == n)
        return;
    for (; i < n; i++) {
        char c = tok[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0 || a >> 60)
            return;
        a = a << 4 | (uint64_t)d;
    }
    Dl_info info;
    if (dladdr((void *)(uintptr_t)a, &info) != 0 && info.dli_sname != NULL)
        fprintf(f, "%#" PRIx64 " %s\n", a, info.dli_sname);
}

static ssize_t symbols(int fd, const char *have, size_t nhave, uint64_t body_len, int64_t deadline)
{
    FILE *f = body_open();
    if (f == NULL)
        return -1;
    char tok[40], chunk[4096];
    size_t ntok = 0;
    bool overlong = false;
    while (body_len > 0) {
        if (nhave == 0) {
            size_t want = body_len < sizeof chunk ? (size_t)body_len : sizeof chunk;
            ssize_t r = recv(fd, chunk, want, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                break;
            if (r < 0) {
                if (!wait_fd(fd, POLLIN, deadline))
                    break;
                continue;
            }
            have = chunk;
            nhave = (size_t)r;
        }
        for (; nhave > 0 && body_len > 0; have++, nhave--, body_len--) {
            char c = *have;
            if (c == '+' || c == '\n' || c == '\r' || c == ' ') {
                if (!overlong)
                    symbol_one(f, tok, ntok);
                ntok = 0;
                overlong = false;
            } else if (ntok < sizeof tok) {
                tok[ntok++] = c;
            } else {
                overlong = true;
            }
        }
    }
    if (!overlong)
        symbol_one(f, tok, ntok);
    return body_close(f);
}

static void serve_route(int fd, enum route r, int64_t deadline)
{
    const char *type = "Content-Type: text/plain; charset=utf-8\r\n";
    ssize_t len = -1;
    if (r == R_HEAP || r == R_ALLOCS) {
        body_reset();
        if (sm_mprof_write_fd(body_fd, r == R_HEAP ? "inuse_space" : "alloc_space") == 0)
            len = lseek(body_fd, 0, SEEK_END);
        type = r == R_HEAP ? "Content-Type: application/octet-stream\r\n"
                             "Content-Disposition: attachment; filename=\"heap\"\r\n"
                           : "Content-Type: application/octet-stream\r\n"
                             "Content-Disposition: attachment; filename=\"allocs\"\r\n";
    } else if (r == R_METRICS || r == R_VARS) {
        struct sm_memstats ms;
        sm_read_memstats(&ms);
        FILE *f = body_open();
        if (f != NULL) {
            if (r == R_METRICS) {
                sm_mstats_print_prometheus(f, &ms);
                type = "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n";
            } else {
                fputs("{\"memstats\": ", f);
                sm_mstats_print_json(f, &ms);
                fputs("}\n", f);
                type = "Content-Type: application/json; charset=utf-8\r\n";
            }
            len = body_close(f);
        }
    } else if (r == R_SYMBOL) {
        /* Go's answer: symbols can be asked for. */
        len = body_text("num_symbols: 1\n");
    } else if (r == R_FREE) {
        char buf[32];
        snprintf(buf, sizeof buf, "%zu\n", sm_free_os_memory());
        len = body_text(buf);
    }
    if (len < 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "spanmalloc: %s\n", strerror(errno));
        ssize_t n = body_text(msg);
        respond(fd, 500, "Content-Type: text/plain; charset=utf-8\r\n", n < 0 ? 0 : (size_t)n,
                deadline);
    } else {
        respond(fd, 200, type, (size_t)len, deadline);
    }
}

static void error_reply(int fd, int code, const char *extra, const char *text, int64_t deadline)
{
    ssize_t n = body_text(text);
    char headers[256];
    snprintf(headers, sizeof headers, "Content-Type: text/plain; charset=utf-8\r\n%s", extra);
    respond(fd, code, headers, n < 0 ? 0 : (size_t)n, deadline);
}

/* Read the request line and headers (a body, if any, is not read). */
static int read_request(int fd, int64_t deadline, size_t *len)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, req + n, SM_HTTP_MAX_REQUEST - n, 0);
        if (r > 0) {
            n += (size_t)r;
            req[n] = '\0';
            if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
                break;
            if (n == SM_HTTP_MAX_REQUEST)
                return 431;
        } else if (r == 0) {
            return -1;  /* closed before a whole request: nobody to answer */
        } else if (errno == EAGAIN || errno == EINTR) {
            if (!wait_fd(fd, POLLIN, deadline))
                return 408;
        } else {
            return -1;
        }
    }
    *len = n;
    return 0;
}

static void serve(int fd)
{
    int64_t start = now_ms();
    int64_t rdeadline = start + SM_HTTP_READ_MS;
    int64_t wdeadline = start + SM_HTTP_READ_MS + SM_HTTP_WRITE_MS;
    size_t n = 0;
    int rc = read_request(fd, rdeadline, &n);
    if (rc < 0)
        return;
    if (rc == 408) {
        error_reply(fd, 408, "", "request timeout\n", wdeadline);
        return;
    }
    if (rc == 431) {
        error_reply(fd, 431, "", "request too large\n", wdeadline);
        return;
    }
    /* Where the body starts, and how long it is (for POST). */
    char *end = strstr(req, "\r\n\r\n");
    char *body = end ? end + 4 : strstr(req, "\n\n") + 2;
    uint64_t body_len = 0;
    for (char *h = strchr(req, '\n'); h != NULL && h + 1 < body; h = strchr(h + 1, '\n')) {
        if (strncasecmp(h + 1, "content-length:", 15) == 0) {
            body_len = strtoull(h + 16, NULL, 10);
        }
    }
    /* METHOD SP TARGET SP HTTP/1.x */
    char *line_end = strpbrk(req, "\r\n");
    *line_end = '\0';
    char *sp1 = strchr(req, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == req || sp2 == sp1 + 1 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        error_reply(fd, 400, "", "bad request\n", wdeadline);
        return;
    }
    *sp1 = *sp2 = '\0';
    const char *method = req, *target = sp1 + 1;
    char *q = strchr(sp1 + 1, '?');
    if (q != NULL)
        *q = '\0';
    const char *allowed = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(target, routes[i].path) != 0)
            continue;
        if (strcmp(method, routes[i].method) != 0) {
            allowed = routes[i].method;
            continue;
        }
        if (routes[i].route == R_SYMBOL_POST) {
            size_t have = n - (size_t)(body - req);
            if (body_len > SM_HTTP_MAX_SYMBOL_BODY) {
                error_reply(fd, 413, "", "too many addresses\n", wdeadline);
                return;
            }
            ssize_t len = symbols(fd, body, have, body_len, rdeadline + SM_HTTP_WRITE_MS / 2);
            if (len < 0)
                error_reply(fd, 500, "", "cannot answer\n", wdeadline);
            else
                respond(fd, 200, "Content-Type: text/plain; charset=utf-8\r\n", (size_t)len, wdeadline);
            return;
        }
        serve_route(fd, routes[i].route, wdeadline);
        return;
    }
    if (allowed != NULL) {
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", allowed);
        error_reply(fd, 405, allow, "method not allowed\n", wdeadline);
        return;
    }
    error_reply(fd, 404, "", "404 page not found\n", wdeadline);
}

/* After the response: stop sending and wait briefly for the client to
 * close, so that closing with its unread bytes (a request body) does not
 * reset the connection before it read the answer. */
static void finish(int fd)
{
    shutdown(fd, SHUT_WR);
    int64_t deadline = now_ms() + SM_HTTP_LINGER_MS;
    char sink[512];
    for (;;) {
        ssize_t r = recv(fd, sink, sizeof sink, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            break;
        if (r < 0 && !wait_fd(fd, POLLIN, deadline))
            break;
    }
    close(fd);
}

static void *server_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            /* Out of descriptors or memory: the queue waits a moment. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct timespec ts = {0, 100 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        serve(fd);
        finish(fd);
    }
    return NULL;
}

/* ---- start ---------------------------------------------------------------- */

bool sm_http_wanted(void)
{
    return sm_opts.http_addr[0] != '\0';
}

int sm_http_running(void)
{
    return __atomic_load_n(&running, __ATOMIC_ACQUIRE);
}

void sm_http_start(void)
{
    if (!sm_http_wanted() || __atomic_exchange_n(&tried, 1, __ATOMIC_ACQ_REL))
        return;
    const char *addr = sm_opts.http_addr;
    int fd = strncmp(addr, "unix:", 5) == 0 ? bind_unix(addr + 5) : bind_inet(addr);
    if (fd < 0)
        return;
    if (listen(fd, SOMAXCONN) < 0) {
        warn_errno("listen", errno);
        close(fd);
        unlink_socket();
        return;
    }
    body_fd = memfd_create("spanmalloc-http", MFD_CLOEXEC);
    if (body_fd < 0) {
        warn_errno("make the response buffer (memfd_create)", errno);
        close(fd);
        unlink_socket();
        return;
    }
    listen_fd = fd;
    if (unix_path[0])
        atexit(unlink_socket);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    /* The caller (the worker) blocks every signal; the thread inherits it. */
    __atomic_store_n(&running, 1, __ATOMIC_RELEASE);
    pthread_t t;
    int err = pthread_create(&t, &attr, server_main, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        __atomic_store_n(&running, 0, __ATOMIC_RELEASE);
        warn_errno("start its thread", err);
        close(listen_fd);
        listen_fd = -1;
        unlink_socket();
    }
}

void sm_http_fork_child(void)
{
    /* The server thread is not in the child: its sockets go, so that the
     * address is free once the parent is gone; the child does not serve. */
    __atomic_store_n(&running, 0, __ATOMIC_RELAXED);
    if (listen_fd >= 0) {
        close(listen_fd);
        listen_fd = -1;
    }
    if (body_fd >= 0) {
        close(body_fd);
        body_fd = -1;
    }
}
