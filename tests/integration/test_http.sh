#!/bin/sh
# The live endpoint (SPANMALLOC_HTTP, src/http.c) with real clients:
# go tool pprof on /debug/pprof/heap and /allocs, the Prometheus client
# library's parser on /metrics, python3's json on /debug/vars, curl for the
# rest, while http_app.c's 8 threads allocate in the process.
#
#   - heap and allocs open in `go tool pprof -top URL` and name the
#     program's allocating function; allocs defaults to alloc_space;
#   - /metrics parses and says what it promises (http_metrics_check.py);
#   - /debug/vars is {"memstats": {...}} with the pid, a time, a null limit;
#   - POST free_os_memory answers a byte count; wrong method 405, unknown
#     path 404, garbage 400, an oversized request 431, a silent client
#     408 after the read timeout;
#   - load: 1,000 requests through curl --parallel at once, with silent
#     and garbage clients among them: every request answered 200, the
#     allocating threads never stall for a second, the process exits 0;
#   - a second process with the same SPANMALLOC_HTTP: one warning line,
#     and it runs to its end;
#   - unix:/path: a socket of mode 0600 that curl reaches, removed at exit;
#   - a fork child closes the listening socket; a program whose main
#     leaves with pthread_exit still ends (the worker counts the
#     endpoint's thread);
#   - a bad address: one warning line, the program runs.
# Loopback only.  Requests are bounded: curl --max-time, python timeouts.
# About 40 seconds.  Environment (set by make check): SPANMALLOC_LIB, CC,
# srcdir.  SM_TEST_KEEP=1 keeps the files.

set -u
planned=28
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_HTTP SPANMALLOC_MEMLIMIT SPANMALLOC_STATS
. "$here/tap.sh"
echo "1..$planned"

if [ -z "${SPANMALLOC_LIB:-}" ] || [ ! -f "$SPANMALLOC_LIB" ]; then
	bail_out "SPANMALLOC_LIB (${SPANMALLOC_LIB:-unset}) names no shared library"
fi
for tool in curl go /usr/bin/python3; do
	command -v "$tool" >/dev/null 2>&1 || bail_out "$tool is not installed (scripts/bootstrap.sh)"
done
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null ||
	bail_out "python3-prometheus-client is not installed (scripts/bootstrap.sh)"
PY=/usr/bin/python3
lib=$(cd "$(dirname "$SPANMALLOC_LIB")" && pwd)/$(basename "$SPANMALLOC_LIB")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-http.XXXXXX") || exit 1
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	[ -n "${SM_TEST_KEEP:-}" ] && echo "# files kept in $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
PPROF_TMPDIR=$tmp/pprof
export PPROF_TMPDIR

${CC:-cc} -O2 -g -pthread -fno-reorder-functions -o "$tmp/http_app" "$src/tests/integration/http_app.c" ||
	bail_out "cannot build http_app"

# start NAME SECONDS: run http_app under the library with SPANMALLOC_HTTP
# as set, output in $tmp/NAME.{out,err}, until SECONDS pass or the file
# $tmp/NAME.stop appears; sets $pid.
start() {
	LD_PRELOAD=$lib "$tmp/http_app" "$2" 8 "$tmp/$1.stop" >"$tmp/$1.out" 2>"$tmp/$1.err" &
	pid=$!
	pids="$pids $pid"
}

# address NAME: wait (5 s at most) for the "listening on" line; prints it.
address() {
	i=0
	while [ $i -lt 50 ]; do
		a=$(sed -n 's/^spanmalloc: http endpoint listening on //p' "$tmp/$1.err")
		[ -n "$a" ] && { echo "$a"; return 0; }
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

C="curl -s --max-time 30"

# ---- the main run: allocating until main.stop (at most 5 minutes) ----------------
SPANMALLOC_HTTP=127.0.0.1:0 start main 300
main_pid=$pid
unset SPANMALLOC_HTTP
addr=$(address main) || { cat "$tmp/main.err"; bail_out "the endpoint did not come up"; }
url=http://$addr
diag "endpoint at $url"
sleep 1

go tool pprof -top "$url/debug/pprof/heap" >"$tmp/heap.top" 2>&1
check "go tool pprof -top URL/debug/pprof/heap names the allocating function" \
	grep -q 'http_app_churn' "$tmp/heap.top"
check "the heap profile's default type is inuse_space" grep -q '^Type: inuse_space' "$tmp/heap.top"
go tool pprof -top "$url/debug/pprof/allocs" >"$tmp/allocs.top" 2>&1
check "URL/debug/pprof/allocs defaults to alloc_space and names the function" \
	sh -c "grep -q '^Type: alloc_space' '$tmp/allocs.top' && grep -q http_app_churn '$tmp/allocs.top'"
[ -n "${SM_TEST_VERBOSE:-}" ] && diag "$(head -15 "$tmp/heap.top")"

$C "$url/metrics" >"$tmp/metrics.txt"
check "/metrics parses with prometheus_client and adds up ($($PY "$src/tests/integration/http_metrics_check.py" <"$tmp/metrics.txt" | head -1))" \
	sh -c "$PY '$src/tests/integration/http_metrics_check.py' <'$tmp/metrics.txt' >/dev/null"
check "/metrics is served as text/plain version 0.0.4" \
	sh -c "$C -o /dev/null -w '%{content_type}' '$url/metrics' | grep -q 'text/plain; version=0.0.4'"

$C "$url/debug/vars" >"$tmp/vars.json"
check "/debug/vars is {\"memstats\": ...} with pid, time and a null limit" $PY -c '
import json, sys, time
d = json.load(open(sys.argv[1]))
m = d["memstats"]
assert set(d) == {"memstats"}, d.keys()
assert m["pid"] == int(sys.argv[2]), m["pid"]
assert abs(m["time"] - time.time()) < 60, m["time"]
assert m["memory_limit"] is None
assert m["heap_objects"] == m["mallocs"] - m["frees"]
assert len(m["by_size"]) == int(sys.argv[3])
parts = [m[k] for k in ("rss_live", "rss_span_free", "rss_idle_dirty", "rss_lazy_free", "rss_outside_heap")]
assert sum(parts) == m["rss"] and min(parts) >= 0, (parts, m["rss"])
' "$tmp/vars.json" "$main_pid" "$(sed -n 's/^#define SM_MEMSTATS_NUM_BY_SIZE //p' "$src/include/spanmalloc.h")"

code=$($C -o "$tmp/free.out" -w '%{http_code}' -X POST "$url/debug/spanmalloc/free_os_memory")
check "POST free_os_memory answers 200 and a byte count ($(cat "$tmp/free.out"))" \
	sh -c "[ '$code' = 200 ] && grep -Eqx '[0-9]+' '$tmp/free.out'"
check "GET free_os_memory is 405 with Allow: POST" \
	sh -c "$C -i '$url/debug/spanmalloc/free_os_memory' | tr -d '\r' | grep -q '^Allow: POST' && \
	       [ \$($C -o /dev/null -w '%{http_code}' '$url/debug/spanmalloc/free_os_memory') = 405 ]"
check "POST /metrics is 405" sh -c "[ \$($C -o /dev/null -w '%{http_code}' -X POST '$url/metrics') = 405 ]"
check "an unknown path is 404" sh -c "[ \$($C -o /dev/null -w '%{http_code}' '$url/debug/nothing') = 404 ]"
big=$(head -c 20000 /dev/zero | tr '\0' a)
code=$($C -o /dev/null -w '%{http_code}' -H "X-Big: $big" "$url/metrics")
check "a request with 20 KB of headers is 431 ($code)" [ "$code" = 431 ]

# raw CLIENT: a python client on the loopback socket.
raw() {
	$PY - "$addr" "$1" <<'PYEOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
mode = sys.argv[2]
s = socket.create_connection((host, int(port)), timeout=10)
if mode == "garbage":
    s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
elif mode == "silent":
    pass
elif mode == "half":
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
data = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
except socket.timeout:
    pass
print(data.split(b"\r\n", 1)[0].decode("latin-1"))
PYEOF
}
r=$(raw garbage)
check "garbage is 400 ($r)" [ "$r" = "HTTP/1.1 400 Bad Request" ]
t0=$(date +%s)
r=$(raw half)
t1=$(date +%s)
check "a client that stops mid-request gets 408 within the read timeout ($r, $((t1 - t0)) s)" \
	[ "$r" = "HTTP/1.1 408 Request Timeout" -a $((t1 - t0)) -le 5 ]

# ---- load: 1,000 requests at once, with silent and garbage clients -------------
i=0
: >"$tmp/load.cfg"
while [ $i -lt 1000 ]; do
	case $((i % 4)) in
	0) p=/metrics ;; 1) p=/debug/vars ;; 2) p=/debug/nothing ;; 3) p=/metrics ;;
	esac
	printf 'url = "%s%s"\noutput = "/dev/null"\n' "$url" "$p" >>"$tmp/load.cfg"
	i=$((i + 1))
done
for k in 1 2 3; do
	raw silent >/dev/null 2>&1 &
	raw garbage >/dev/null 2>&1 &
done
t0=$(date +%s)
curl -s --parallel --parallel-immediate --parallel-max 1000 --max-time 150 \
	-w '%{http_code}\n' -K "$tmp/load.cfg" >"$tmp/load.codes" 2>"$tmp/load.err"
t1=$(date +%s)
n200=$(grep -c '^200$' "$tmp/load.codes")
n404=$(grep -c '^404$' "$tmp/load.codes")
diag "1000 parallel requests in $((t1 - t0)) s: $n200 answered 200, $n404 answered 404"
check "1,000 concurrent requests: 750 answered 200 and 250 answered 404" \
	[ "$n200" -eq 750 -a "$n404" -eq 250 ]
check "the process is alive after the load" kill -0 "$main_pid"
check "/metrics still parses after the load" \
	sh -c "$C '$url/metrics' | $PY '$src/tests/integration/http_metrics_check.py' >/dev/null"

# ---- a second process with the same address, while the first serves ----------
SPANMALLOC_HTTP=$addr start second 1
second_pid=$pid
wait "$second_pid"
rc=$?
check "a second process on the same address runs to its end (exit $rc)" \
	sh -c "[ $rc -eq 0 ] && grep -q '^ops ' '$tmp/second.out'"
check "and warns once: $(head -1 "$tmp/second.err")" \
	sh -c "[ \$(wc -l <'$tmp/second.err') -eq 1 ] && grep -q 'SPANMALLOC_HTTP: cannot bind' '$tmp/second.err'"

touch "$tmp/main.stop"
wait "$main_pid"
rc=$?
check "the loaded process exits 0 ($(cat "$tmp/main.out"))" [ $rc -eq 0 ]
stall=$(sed -n 's/.*max_stall_ms //p' "$tmp/main.out")
ops=$(sed -n 's/^ops \([0-9]*\).*/\1/p' "$tmp/main.out")
check "its 8 threads never waited a second between two mallocs (longest gap ${stall:-?} ms)" \
	[ "${stall:-99999}" -lt 1000 ]
check "and kept allocating (${ops:-0} malloc/free pairs)" [ "${ops:-0}" -gt 1000000 ]

# ---- a unix socket ------------------------------------------------------------
sock=$tmp/sm.sock
SPANMALLOC_HTTP=unix:$sock start unix 3
unix_pid=$pid
i=0
while [ ! -S "$sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mode=$(stat -c %a "$sock" 2>/dev/null)
check "unix:/path makes a socket of mode 0600 (mode ${mode:-none})" [ "$mode" = 600 ]
check "curl --unix-socket reaches /metrics" \
	sh -c "curl -s --max-time 10 --unix-socket '$sock' http://x/metrics | grep -q '^go_memstats_heap_inuse_bytes '"
check "and go tool pprof can be fed from it" \
	sh -c "curl -s --max-time 10 --unix-socket '$sock' -o '$tmp/unix.pb.gz' http://x/debug/pprof/heap && \
	       go tool pprof -top '$tmp/unix.pb.gz' 2>&1 | grep -q http_app_churn"
wait "$unix_pid"
check "the socket is removed at exit" [ ! -e "$sock" ]

# ---- a fork child, and main leaving with pthread_exit ---------------------------
SPANMALLOC_HTTP=127.0.0.1:0 LD_PRELOAD=$lib "$tmp/http_app" fork >"$tmp/fork.out" 2>"$tmp/fork.err"
faddr=$(sed -n 's/^spanmalloc: http endpoint listening on //p' "$tmp/fork.err")
child=$(sed -n 's/^child //p' "$tmp/fork.out")
code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://$faddr/metrics")
rc=$?
alive=no
kill -0 "${child:-0}" 2>/dev/null && alive=yes
check "a fork child does not keep the port: refused at once while it lives (curl exit $rc, child alive: $alive)" \
	[ -n "$faddr" -a $rc -eq 7 -a $alive = yes ]
t0=$(date +%s)
timeout 20 env SPANMALLOC_HTTP=127.0.0.1:0 LD_PRELOAD="$lib" "$tmp/http_app" pthread_exit 2>/dev/null
rc=$?
t1=$(date +%s)
check "main leaving with pthread_exit ends the process with the endpoint on (exit $rc in $((t1 - t0)) s)" \
	[ $rc -eq 0 -a $((t1 - t0)) -le 5 ]

# ---- a bad address ------------------------------------------------------------
SPANMALLOC_HTTP=999.1.2.3:80 start bad 0.5
wait "$pid"
rc=$?
check "a bad address: one warning, the program runs (exit $rc; $(head -1 "$tmp/bad.err"))" \
	sh -c "[ $rc -eq 0 ] && [ \$(wc -l <'$tmp/bad.err') -eq 1 ] && grep -q 'bad address' '$tmp/bad.err'"

exit $((failed != 0))
