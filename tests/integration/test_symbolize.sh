#!/bin/sh
# Heap profiles that name their functions without the binaries.
#
# leak_sessions.c and leak_sessions.cc, built with plain `-O2 -g` and no
# other flag, leak about 1.5 KB per call of open_session (C, partly through
# libc's strdup, whose libc has only .dynsym) or SessionTable::open (C++,
# new and std::string).  Under LD_PRELOAD each writes a profile after each
# of two phases of N calls.  `go tool pprof -top -base p1 p2` (Debian's Go
# 1.19), without the binary and with it, must name the leaking function
# (C++ demangled) with its flat or cumulative bytes within 20% of what the
# program leaked between the profiles.  Before profiles carried names, the
# C++ run showed only [leak_sessions_cc] and [libstdc++.so.6.0.30].
#
# The same through the live endpoint: the programs run with "wait" and
# SPANMALLOC_HTTP=127.0.0.1:0, and after each phase the test fetches
# http://ADDR/debug/pprof/heap with go tool pprof itself (-proto for the
# first, -top -base p1 URL for the second).
#
# The rate is 64 KiB: 76 MB leaked between the profiles give over a
# thousand samples, so 20% is many standard deviations.  About 5 seconds.
# Set SM_TEST_KEEP=1 to keep the files, SM_TEST_VERBOSE=1 to see pprof.
#
# Environment (set by make check): SPANMALLOC_LIB, CC, CXX, srcdir.

set -u

planned=13
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_PROFILE SPANMALLOC_PROFILE_SIGNAL SPANMALLOC_PROFILE_INTERVAL \
	SPANMALLOC_PROFILE_RATE
. "$here/tap.sh"

echo "1..$planned"

need_lib
if ! command -v go >/dev/null 2>&1; then
	skip $planned "go is not installed (Debian: golang-go)"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-sym.XXXXXX") || exit 1
cleanup() {
	if [ -n "${SM_TEST_KEEP:-}" ]; then
		echo "# files kept in $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# go in a sandbox: its own HOME and caches, no network, no binary search
# path, and pprof's default symbolization (what a user gets).

# bytes_of FUNC: the larger of its flat and cum bytes in $top_out, 0 if
# it is not listed (the name is everything after the fifth column).
bytes_of() {
	printf '%s\n' "$top_out" | awk -v fn="$1" '
		$1 ~ /^-?[0-9]+B$/ {
			name = $6
			for (i = 7; i <= NF; i++) name = name " " $i
			if (name != fn) next
			f = $1; c = $4; sub(/B$/, "", f); sub(/B$/, "", c)
			print (f + 0 > c + 0 ? f : c); found = 1; exit
		}
		END { if (!found) print 0 }'
}

# near ESTIMATE TRUTH PERCENT
near() {
	awk -v e="$1" -v t="$2" -v p="$3" \
		'BEGIN { d = e - t; if (d < 0) d = -d; exit !(t > 0 && d <= t * p / 100) }'
}

# names WHAT FUNC TRUTH [BINARY]: pprof -top -base p1 [BINARY] p2 lists
# FUNC within 20% of TRUTH.
names() {
	top_out=$(pprof -top -unit=B -base "$d/p1.pb.gz" ${4:+"$4"} "$d/p2.pb.gz")
	e=$(bytes_of "$2")
	if [ -n "${SM_TEST_VERBOSE:-}" ] || ! near "$e" "$3" 20; then
		diag "\$ go tool pprof -top -base p1.pb.gz ${4:+$4 }p2.pb.gz" "$top_out"
	fi
	diag "$2: pprof $e B, leaked $3 B"
	check "$1" near "$e" "$3" 20
}

N=50000
limit=
command -v timeout >/dev/null 2>&1 && limit="timeout 120"

# run LANG COMPILER SOURCE: build with -O2 -g only, run under LD_PRELOAD;
# sets $truth to the bytes leaked between the two profiles.
run() {
	d=$tmp/$1
	mkdir -p "$d"
	truth=0
	$2 -O2 -g -o "$d/leak_sessions" "$3" 2>"$d/cc.err" || {
		diag "$(cat "$d/cc.err")"
		return 1
	}
	$limit env LD_PRELOAD="$lib" SPANMALLOC_PROFILE_RATE=65536 \
		"$d/leak_sessions" "$d" $N >"$d/out" 2>"$d/err" || {
		diag "$(cat "$d/err")"
		return 1
	}
	per=$(awk '$1 == "session_bytes" { print $2 }' "$d/out")
	truth=$((per * N))
	[ -s "$d/p1.pb.gz" ] && [ -s "$d/p2.pb.gz" ]
}

check "C: leak_sessions (gcc -O2 -g) writes two profiles under LD_PRELOAD" \
	run c "${CC:-cc}" "$src/tests/integration/leak_sessions.c"
c_per=${per:-0}
names "C: pprof -top -base without the binary names open_session" open_session "$truth"
names "C: ... and with the binary" open_session "$truth" "$d/leak_sessions"
# strdup is in libc, stripped to .dynsym: its frame is named, and the
# caller above it is the user's function.  Its 4.8 MB are only about 73
# samples at this rate, a standard error of 12%: 60% is five of them.
e=$(bytes_of strdup)
diag "strdup: pprof $e B, leaked $((96 * N)) B"
check "C: the frame in stripped libc is named strdup, with the 96-byte names" \
	near "$e" $((96 * N)) 60

check "C++: leak_sessions.cc (g++ -O2 -g) writes two profiles under LD_PRELOAD" \
	run cxx "${CXX:-c++}" "$src/tests/integration/leak_sessions.cc"
cxx_per=${per:-0}
names "C++: pprof -top -base without the binary names SessionTable::open" \
	SessionTable::open "$truth"
names "C++: ... and with the binary" SessionTable::open "$truth" "$d/leak_sessions"
check "C++: no frame of the program or libstdc++ is left as [file]" \
	eval '! printf "%s\n" "$top_out" | grep -Eq "\[(leak_sessions|libstdc\+\+[^]]*)\]"'
check "C++: names are demangled (no _Z symbol in the output)" \
	eval '! printf "%s\n" "$top_out" | grep -q " _Z"'

# ---- the same through the live endpoint -----------------------------------------

# wait_file FILE: until it exists (60 s at most).
wait_file() {
	i=0
	while [ ! -e "$1" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
	[ -e "$1" ]
}

# live LANG FUNC: run $tmp/LANG/leak_sessions (built above) with "wait" and
# the endpoint; pprof fetches the heap after each phase.
live() {
	d=$tmp/$1/live
	mkdir -p "$d"
	$limit env SPANMALLOC_HTTP=127.0.0.1:0 LD_PRELOAD="$lib" SPANMALLOC_PROFILE_RATE=65536 \
		"$tmp/$1/leak_sessions" "$d" $N wait >"$d/out" 2>"$d/err" &
	lpid=$!
	if ! wait_file "$d/p1.ready"; then
		kill $lpid 2>/dev/null
		diag "$(cat "$d/err")"
		return 1
	fi
	addr=$(sed -n 's/^spanmalloc: http endpoint listening on //p' "$d/err")
	url=http://$addr/debug/pprof/heap
	pprof -proto -output "$d/p1.pb.gz" "$url" >/dev/null
	touch "$d/p1.go"
	wait_file "$d/p2.ready"
	top_out=$(pprof -top -unit=B -base "$d/p1.pb.gz" "$url")
	touch "$d/p2.go"
	wait $lpid
	rc=$?
	e=$(bytes_of "$2")
	if [ -n "${SM_TEST_VERBOSE:-}" ] || ! near "$e" "$truth" 20; then
		diag "\$ go tool pprof -top -base p1.pb.gz $url" "$top_out"
	fi
	diag "$2 over $url: pprof $e B, leaked $truth B"
	[ $rc -eq 0 ] && [ -n "$addr" ] && [ -s "$d/p1.pb.gz" ]
}

truth=$((c_per * N))
check "C: under the endpoint, go tool pprof fetches URL/debug/pprof/heap after each phase" \
	live c open_session
check "C: go tool pprof -top -base p1 URL names open_session within 20%" near "$e" "$truth" 20
truth=$((cxx_per * N))
check "C++: the same run under the endpoint" live cxx SessionTable::open
check "C++: go tool pprof -top -base p1 URL names SessionTable::open within 20%" \
	near "$e" "$truth" 20

[ $count -eq $planned ] || echo "# planned $planned checks, ran $count"
[ $failed -eq 0 ] && [ $count -eq $planned ]
