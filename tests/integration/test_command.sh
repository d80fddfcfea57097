#!/bin/sh
# The spanmalloc command (tools/spanmalloc.in), run from the build tree
# with SPANMALLOC_LIB naming the library, then installed with
# `make install DESTDIR=...`:
#
#   run   sets LD_PRELOAD and the variables of its options: the program
#         runs on spanmalloc (its endpoint answers, with the limit given),
#         --profile writes the profile at exit, a bad --release is refused;
#   top   prints a header and one line per sample from the endpoint, with
#         a mallocs/s rate from the second line on;
#   diff  names what grew between two profiles of leak_app.c (the leaking
#         function, not the churning one), and says clearly when no pprof
#         is found;
#   install  the command lands in bin, the library in the libdir the
#         command names, the man pages in man1 and man3; the installed
#         command runs a program on the installed library.
# Loopback only; every request has curl's --max-time.  About 20 seconds.
# Environment (set by make check): SPANMALLOC_LIB, CC, srcdir, builddir.

set -u
planned=15
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
build=${builddir:-$(pwd)}
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_HTTP SPANMALLOC_MEMLIMIT SPANMALLOC_STATS SPANMALLOC_PROFILE SPANMALLOC_RELEASE
. "$here/tap.sh"
echo "1..$planned"

[ -n "${SPANMALLOC_LIB:-}" ] && [ -f "$SPANMALLOC_LIB" ] || bail_out "SPANMALLOC_LIB names no library"
export SPANMALLOC_LIB
cmd=$build/tools/spanmalloc
[ -x "$cmd" ] || bail_out "no $cmd (make builds it)"
command -v curl >/dev/null 2>&1 || bail_out "curl is not installed (scripts/bootstrap.sh)"
command -v go >/dev/null 2>&1 || bail_out "go is not installed (scripts/bootstrap.sh)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-cmd.XXXXXX") || exit 1
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	[ -n "${SM_TEST_KEEP:-}" ] && echo "# files kept in $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
PPROF_TMPDIR=$tmp/pprof
export PPROF_TMPDIR
${CC:-cc} -O2 -g -o "$tmp/leak_app" "$src/tests/integration/leak_app.c" || bail_out "cannot build leak_app"

# ---- run ----------------------------------------------------------------------
"$cmd" run --release=free --limit=1GiB --http=127.0.0.1:0 --profile="$tmp/run" -- \
	"$tmp/leak_app" 12 >"$tmp/run.out" 2>"$tmp/run.err" &
pid=$!
pids="$pids $pid"
i=0
addr=
while [ -z "$addr" ] && [ $i -lt 50 ]; do
	sleep 0.1
	addr=$(sed -n 's/^spanmalloc: http endpoint listening on //p' "$tmp/run.err")
	i=$((i + 1))
done
check "run --http: the program's endpoint answers ($addr)" [ -n "$addr" ]
check "run --limit=1GiB: the limit is in effect" \
	sh -c "curl -s --max-time 10 'http://$addr/metrics' | grep -qx 'spanmalloc_memory_limit_bytes 1073741824'"
check "run: LD_PRELOAD and SPANMALLOC_RELEASE are set for the program" \
	sh -c "tr '\\0' '\\n' </proc/$pid/environ | grep -qx 'LD_PRELOAD=$SPANMALLOC_LIB' && \
	       tr '\\0' '\\n' </proc/$pid/environ | grep -qx 'SPANMALLOC_RELEASE=free'"

# ---- top ----------------------------------------------------------------------
"$cmd" top --count 3 "$addr" >"$tmp/top.out" 2>&1
rc=$?
diag "$(cat "$tmp/top.out")"
check "top --count 3 prints a header and 3 lines" \
	sh -c "[ $rc -eq 0 ] && [ \$(wc -l <'$tmp/top.out') -eq 4 ] && head -1 '$tmp/top.out' | grep -q 'rss_MiB.*inuse_MiB.*idle_MiB.*released.*lazy_free.*mallocs/s'"
check "top: the rate is a number from the second line on" \
	sh -c "sed -n '3,4p' '$tmp/top.out' | awk '\$7 !~ /^[0-9]+\$/ { exit 1 }'"
"$cmd" top --count 1 127.0.0.1:1 >"$tmp/top-bad.out" 2>&1
rc=$?
check "top on a dead address: exit $rc, '$(cat "$tmp/top-bad.out")'" \
	sh -c "[ $rc -ne 0 ] && grep -q 'no answer from 127.0.0.1:1' '$tmp/top-bad.out'"

# ---- diff: two profiles of the leak, 3 seconds apart ---------------------------
curl -s --max-time 20 -o "$tmp/old.pb.gz" "http://$addr/debug/pprof/heap"
sleep 3
curl -s --max-time 20 -o "$tmp/new.pb.gz" "http://$addr/debug/pprof/heap"
"$cmd" diff "$tmp/old.pb.gz" "$tmp/new.pb.gz" >"$tmp/diff.out" 2>&1
diag "$(grep -A3 'flat%' "$tmp/diff.out")"
check "diff: the function that grew is open_session, first" \
	sh -c "grep -A1 'flat%' '$tmp/diff.out' | tail -1 | grep -q 'open_session\$'"
check "diff: the churning make_reply did not grow" \
	sh -c "! grep -q 'make_reply' '$tmp/diff.out' || grep 'make_reply' '$tmp/diff.out' | awk '{ exit (\$1 != \"0\") }'"
PATH=$tmp/nothing "$cmd" diff "$tmp/old.pb.gz" "$tmp/new.pb.gz" >"$tmp/nopprof.out" 2>&1
rc=$?
check "diff without pprof: exit $rc and a clear error" \
	sh -c "[ $rc -eq 2 ] && grep -q 'diff needs pprof' '$tmp/nopprof.out'"

wait "$pid"
check "run --profile: the profile at exit is written" sh -c "ls '$tmp'/run.*.heap.pb.gz >/dev/null 2>&1"
"$cmd" run --release=sometimes -- true >"$tmp/badrel.out" 2>&1
rc=$?
check "run --release=sometimes is refused (exit $rc)" \
	sh -c "[ $rc -eq 2 ] && grep -q 'want free, dontneed or off' '$tmp/badrel.out'"

# ---- make install DESTDIR=... ------------------------------------------------------
dest=$tmp/dest
make -s -C "$build" install DESTDIR="$dest" >"$tmp/install.out" 2>&1 || { cat "$tmp/install.out"; bail_out "make install failed"; }
inst=$(find "$dest" -path '*/bin/spanmalloc' -type f | head -1)
libdir=$(sed -n "s/^libdir='\\(.*\\)'\$/\\1/p" "$inst" 2>/dev/null)
check "make install puts the command in bin, naming libdir $libdir" [ -x "$inst" -a -n "$libdir" ]
check "and the library where the command looks for it" [ -f "$dest$libdir/libspanmalloc.so" ]
check "and the man pages in man1 and man3" \
	sh -c "[ -n \"\$(find '$dest' -path '*/man1/spanmalloc.1')\" ] && [ -n \"\$(find '$dest' -path '*/man3/spanmalloc.3')\" ]"
out=$(SPANMALLOC_LIB=$dest$libdir/libspanmalloc.so "$inst" run --stats=exit -- "$tmp/leak_app" 0.2 2>&1)
check "the installed command runs a program on the installed library" \
	sh -c "printf '%s\n' '$out' | grep -q 'rss breakdown: live'"

exit $((failed != 0))
