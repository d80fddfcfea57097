#!/bin/sh
# Heap profiles read by the real `go tool pprof`, the way a user finds a leak.
#
#   C       mprof_leak.c, linked with the library, writes two profiles with
#           sm_write_heap_profile during its growth.  -top on inuse_space
#           names the leaking and the caching function with their sizes
#           within 20% of what the program says it holds; alloc_space names
#           the churning one; -base of the two shows only the leak grow.
#   C++     mprof_leak.cc, which knows nothing of spanmalloc, under
#           LD_PRELOAD: the same checks on the profiles SIGUSR2 makes
#           (SPANMALLOC_PROFILE_SIGNAL) while it waits between phases, and
#           the numbered files and the one at exit.
#   python  python3 under LD_PRELOAD: the profile written at exit opens,
#           counts what the script allocated, and names Python's functions
#           (when the interpreter's binaries have a symbol table).
#   timer   SPANMALLOC_PROFILE_INTERVAL writes numbered files.
#   off     SPANMALLOC_PROFILE_RATE=0 samples nothing.
#
# The default rate (512 KiB) is used throughout: the programs allocate a
# few hundred MiB, so each estimate rests on hundreds of samples and 20% is
# over three standard deviations.  The test programs are built with
# -fno-reorder-functions -fno-reorder-blocks-and-partition: the symbolizer
# built into go tool pprof (Go 1.19) finds no line for code GCC moves to
# .text.startup or .text.unlikely.  Output is TAP; the whole takes a few
# seconds.  Set SM_TEST_KEEP=1 to keep the files and SM_TEST_VERBOSE=1 to
# see every pprof output.
#
# Environment (set by make check): SPANMALLOC_LIB, CC, CXX, srcdir.

set -u

planned=17
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

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-mprof.XXXXXX") || exit 1
cleanup() {
	if [ -n "${SM_TEST_KEEP:-}" ]; then
		echo "# files kept in $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# A write to the C++ program's stdin after it died must not end the script.
trap '' PIPE

# --- pprof --------------------------------------------------------------------

# go tool pprof (tap.sh) with local symbolization only.
PPROF_FLAGS=-symbolize=local

# top INDEX FILE [BASE]: pprof -top in bytes; the text is in $top_out.
top() {
	if [ $# -eq 3 ]; then
		top_out=$(pprof -top -unit=B -sample_index="$1" -base "$3" "$2")
	else
		top_out=$(pprof -top -unit=B -sample_index="$1" "$2")
	fi
	rc=$?
	if [ -n "${SM_TEST_VERBOSE:-}" ] || [ $rc -ne 0 ]; then
		diag "\$ go tool pprof -top -sample_index=$1 ${3:+-base $3 }$2" "$top_out"
	fi
	return $rc
}

# flat FUNC: the function's flat bytes in $top_out (0 if not listed).
flat() {
	printf '%s\n' "$top_out" | awk -v fn="$1" '
		$NF == fn && $1 ~ /^-?[0-9]+B?$/ { v = $1; sub(/B$/, "", v); print v; found = 1; exit }
		END { if (!found) print 0 }'
}

# total: the total of $top_out ("... of N total").
total() {
	printf '%s\n' "$top_out" | sed -n 's/.* of \(-\{0,1\}[0-9]*\)B* total.*/\1/p' | head -1
}

# truth FILE PHASE FUNC inuse|alloc: what the program says it holds.
truth() {
	awk -v ph="$2" -v fn="$3" -v k="$4" \
		'$1 == "truth" && $2 == ph && $3 == fn { print (k == "inuse" ? $4 : $5) }' "$1"
}

# near ESTIMATE TRUTH PERCENT: |estimate - truth| <= percent of truth.
near() {
	awk -v e="$1" -v t="$2" -v p="$3" \
		'BEGIN { d = e - t; if (d < 0) d = -d; exit !(t > 0 && d <= t * p / 100) }'
}

# below VALUE LIMIT: |value| < limit.
below() {
	awk -v v="$1" -v l="$2" 'BEGIN { if (v < 0) v = -v; exit !(v < l) }'
}

# est_vs FUNC TRUTH: near within 20%, with a diagnostic line.
est_vs() {
	e=$(flat "$1")
	diag "$1: pprof $e B, truth $2 B"
	near "$e" "$2" 20
}

# wait_for FILE PATTERN: until a line of FILE matches (up to 60 s).
wait_for() {
	i=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 600 ] && return 1
		sleep 0.1
	done
	return 0
}

CFLAGS_TEST="-O2 -g -fno-reorder-functions -fno-reorder-blocks-and-partition"
# Each run is bounded, so a hang fails its check.
limit=
command -v timeout >/dev/null 2>&1 && limit="timeout 120"

# --- C: a program linked with the library -------------------------------------

d=$tmp/c
mkdir -p "$d"
if ${CC:-cc} $CFLAGS_TEST -I"$src/include" -o "$d/leak" "$src/tests/integration/mprof_leak.c" \
	-L"$libdir" -lspanmalloc -Wl,-rpath,"$libdir" 2>"$d/cc.err" &&
	$limit "$d/leak" "$d" >"$d/out" 2>"$d/err" &&
	[ "$(grep -c "^spanmalloc: heap profile written to $d/[ab].pb.gz\$" "$d/err")" -eq 2 ]; then
	ok "C: the program writes two profiles, each reported on stderr"
else
	not_ok "C: the program writes two profiles, each reported on stderr"
	diag "$(cat "$d/cc.err" "$d/err" 2>/dev/null)"
fi

top inuse_space "$d/b.pb.gz"
check "C: inuse_space names leak_context_chain within 20%" \
	est_vs leak_context_chain "$(truth "$d/out" b leak_context_chain inuse)"
check "C: inuse_space names cache_store within 20%" \
	est_vs cache_store "$(truth "$d/out" b cache_store inuse)"
check "C: inuse_space holds nothing of churn_buffers" [ "$(flat churn_buffers)" = 0 ]
top alloc_space "$d/b.pb.gz"
check "C: alloc_space names churn_buffers within 20%" \
	est_vs churn_buffers "$(truth "$d/out" b churn_buffers alloc)"
top inuse_space "$d/b.pb.gz" "$d/a.pb.gz"
grow=$(($(truth "$d/out" b leak_context_chain inuse) - $(truth "$d/out" a leak_context_chain inuse)))
check "C: -base shows leak_context_chain growing by its growth within 20%" \
	est_vs leak_context_chain "$grow"
cache_diff=$(flat cache_store)
diag "cache_store in the diff: $cache_diff B"
check "C: -base shows neither the cache nor the churn growing" \
	eval 'below "$cache_diff" $((grow / 10)) && [ "$(flat churn_buffers)" = 0 ]'

# --- C++: an unmodified program under LD_PRELOAD, profiled by a signal --------

d=$tmp/cxx
mkdir -p "$d"
run_cxx() {
	${CXX:-c++} $CFLAGS_TEST -o "$d/leak" "$src/tests/integration/mprof_leak.cc" 2>"$d/cc.err" ||
		return 1
	mkfifo "$d/in" || return 1
	LD_PRELOAD=$lib SPANMALLOC_PROFILE=$d/p SPANMALLOC_PROFILE_SIGNAL=USR2 \
		"$d/leak" <"$d/in" >"$d/out" 2>"$d/err" &
	pid=$!
	exec 3>"$d/in"
	# A hang fails the check instead of the whole run.
	(sleep 120; kill -9 $pid 2>/dev/null) &
	watchdog=$!
	wait_for "$d/out" '^phase a' &&
		kill -USR2 $pid &&
		wait_for "$d/err" "written to $d/p\.$pid\.1\.heap\.pb\.gz" &&
		echo >&3 &&
		wait_for "$d/out" '^phase b' &&
		kill -USR2 $pid &&
		wait_for "$d/err" "written to $d/p\.$pid\.2\.heap\.pb\.gz"
	synced=$?
	echo >&3
	exec 3>&-
	[ $synced -eq 0 ] || kill $pid 2>/dev/null
	wait $pid
	rc=$?
	kill $watchdog 2>/dev/null
	[ $rc -eq 0 ] || return 1
	[ $synced -eq 0 ] &&
		[ -s "$d/p.$pid.1.heap.pb.gz" ] && [ -s "$d/p.$pid.2.heap.pb.gz" ] &&
		[ -s "$d/p.$pid.heap.pb.gz" ] &&
		[ "$(grep -c '^spanmalloc: heap profile written to ' "$d/err")" -eq 3 ]
}
pid=0
if run_cxx; then
	ok "C++: SIGUSR2 writes p.<pid>.1 and p.<pid>.2, exit writes p.<pid>, each reported"
else
	not_ok "C++: SIGUSR2 writes p.<pid>.1 and p.<pid>.2, exit writes p.<pid>, each reported"
	diag "$(cat "$d/cc.err" "$d/err" 2>/dev/null)" "$(ls "$d")"
fi
p1=$d/p.$pid.1.heap.pb.gz
p2=$d/p.$pid.2.heap.pb.gz
top inuse_space "$p2"
check "C++: inuse_space names leak_context_chain within 20%" \
	est_vs leak_context_chain "$(truth "$d/out" b leak_context_chain inuse)"
check "C++: inuse_space names cache_store within 20%" \
	est_vs cache_store "$(truth "$d/out" b cache_store inuse)"
top alloc_space "$p2"
check "C++: alloc_space names churn_buffers within 20%" \
	est_vs churn_buffers "$(truth "$d/out" b churn_buffers alloc)"
top inuse_space "$p2" "$p1"
grow=$(($(truth "$d/out" b leak_context_chain inuse) - $(truth "$d/out" a leak_context_chain inuse)))
cache_diff=$(flat cache_store)
diag "cache_store in the diff: $cache_diff B"
check "C++: -base shows only leak_context_chain growing, by its growth within 20%" \
	eval 'est_vs leak_context_chain "$grow" && below "$cache_diff" $((grow / 10))'

# --- python3 under LD_PRELOAD ----------------------------------------------------

d=$tmp/py
mkdir -p "$d"
# The interpreter itself, not a wrapper script (pyenv's shims are bash).
py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
if [ -z "$py" ] || [ ! -x "$py" ]; then
	skip 2 "no python3"
else
	# 8000 objects of 8192 bytes + header: 9472-byte class objects from
	# malloc (pymalloc takes only objects up to 512 bytes).
	$limit env LD_PRELOAD="$lib" SPANMALLOC_PROFILE="$d/p" "$py" -c '
keep = [bytes(8192) for _ in range(8000)]
names = {i: str(i) * 50 for i in range(100000)}
' 2>"$d/err"
	f=$(ls "$d"/p.*.heap.pb.gz 2>/dev/null | head -1)
	if [ -n "$f" ] && top alloc_space "$f"; then
		t=$(total)
		diag "$py: alloc_space total $t B, at least 75776000 B allocated by the script"
		check "python3: the profile at exit opens and counts the script's allocations" \
			awk -v t="$t" 'BEGIN { exit !(t >= 75776000 * 0.8) }'
		# Go's pprof reads .symtab only: a stripped interpreter shows as
		# [python3.11]; then only that mapping can be checked.
		libpy=$(ldd "$py" | awk '/libpython/ { print $3 }')
		if [ -n "$(nm "$py" 2>/dev/null | head -1)" ] ||
			{ [ -n "$libpy" ] && [ -n "$(nm "$libpy" 2>/dev/null | head -1)" ]; }; then
			check "python3: pprof names Python's functions" \
				eval 'printf "%s\n" "$top_out" | grep -Eq " _?Py[A-Za-z]+_[A-Za-z]+$"'
		else
			check "python3: samples in the interpreter's mapping (stripped: no names)" \
				eval 'printf "%s\n" "$top_out" | grep -q "\[python"'
		fi
	else
		not_ok "python3: the profile at exit opens and counts the script's allocations"
		not_ok "python3: pprof names Python's functions"
		diag "$(cat "$d/err")" "$(ls "$d")"
	fi
fi

# --- the interval trigger ----------------------------------------------------------

d=$tmp/timer
mkdir -p "$d"
if [ -z "$py" ] || [ ! -x "$py" ]; then
	skip 2 "no python3"
else
	$limit env LD_PRELOAD="$lib" SPANMALLOC_PROFILE="$d/p" SPANMALLOC_PROFILE_INTERVAL=500ms \
		"$py" -c 'import time; time.sleep(2)' 2>"$d/err"
	n=$(ls "$d" | grep -c '^p\.[0-9]*\.[0-9]*\.heap\.pb\.gz$')
	diag "interval files: $(ls "$d" | tr '\n' ' ')"
	check "SPANMALLOC_PROFILE_INTERVAL=500ms over 2 s writes numbered files from 1" \
		eval '[ "$n" -ge 2 ] && ls "$d" | grep -q "^p\.[0-9]*\.1\.heap\.pb\.gz$" &&
			ls "$d" | grep -q "^p\.[0-9]*\.2\.heap\.pb\.gz$"'
	check "... and the one at exit, each reported on stderr" \
		eval 'ls "$d" | grep -q "^p\.[0-9]*\.heap\.pb\.gz$" &&
			[ "$(grep -c "^spanmalloc: heap profile written to $d/p\." "$d/err")" -eq $((n + 1)) ]'
fi

# --- profiling off -------------------------------------------------------------------

d=$tmp/off
mkdir -p "$d"
if $limit env SPANMALLOC_PROFILE_RATE=0 "$tmp/c/leak" "$d" >"$d/out" 2>"$d/err" && top alloc_space "$d/b.pb.gz"; then
	check "SPANMALLOC_PROFILE_RATE=0: the profile holds no sample" [ "$(total)" = 0 ]
else
	not_ok "SPANMALLOC_PROFILE_RATE=0: the profile holds no sample"
	diag "$(cat "$d/err")"
fi

[ $count -eq $planned ] || echo "# planned $planned checks, ran $count"
[ $failed -eq 0 ] && [ $count -eq $planned ]
