#!/bin/sh
# The soft memory limit holds whenever the heap takes pages, on a workload
# that reuses released pages (tests/integration/limit_workload.c: rounds of
# 4-32 KiB objects, 90% freed, then 1-4 MiB objects, all freed; at most
# about 200 MiB live).  The workload runs under LD_PRELOAD and measures
# itself: Rss from /proc/self/smaps_rollup every 2 ms, and the kernel's
# VmHWM at the end.
#
#   1. SPANMALLOC_MEMLIMIT=256MiB with the scavenger off, so the limit alone
#      must hold: sampled peak and VmHWM <= limit + 10%, and the stats count
#      releases forced by the limit;
#   2. the same with the scavenger on;
#   3. no limit, scavenger off: VmHWM above limit + 10%, so the workload
#      does need the limit and case 1 can fail (it reached 369 MiB when
#      the limit was enforced only when the heap grew).
#
# Output is TAP.  Environment: SPANMALLOC_LIB (set by make check), builddir.
set -u
echo "1..7"
. "$(cd "$(dirname "$0")" && pwd)/tap.sh"
[ -n "${SPANMALLOC_LIB:-}" ] && [ -f "$SPANMALLOC_LIB" ] ||
	bail_out "SPANMALLOC_LIB does not name the built shared library"
prog=${builddir:-.}/tests/integration/limit_workload
[ -x "$prog" ] || bail_out "no $prog"
lib=$(readlink -f "$SPANMALLOC_LIB")
work=$(mktemp -d "${TMPDIR:-/tmp}/spanmalloc-limit.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM

bound_kib=$((256 * 1024 * 11 / 10))   # the limit plus 10%

# run NAME ENV...: the workload under spanmalloc with ENV, stats at exit.
run() {
	name=$1
	shift
	env ROUNDS=4 SPANMALLOC_STATS=exit LD_PRELOAD="$lib" "$@" \
		timeout -k 10 300 "$prog" >"$work/$name.out" 2>"$work/$name.err"
	st=$?
	cat "$work/$name.out" | sed "s/^/# $name: /"
	return $st
}
field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" "$work/$1.out"; }
memstat() { awk -v k="$2" '$1 == k { print $2 }' "$work/$1.err"; }

check "limit, scavenger off: workload ran" run limit SPANMALLOC_MEMLIMIT=256MiB SPANMALLOC_SCAVENGE=off
check "limit, scavenger off: sampled peak RSS $(field limit peak_rss_kib) KiB <= $bound_kib KiB" \
	test "$(field limit peak_rss_kib)" -le "$bound_kib"
check "limit, scavenger off: VmHWM $(field limit vmhwm_kib) KiB <= $bound_kib KiB" \
	test "$(field limit vmhwm_kib)" -le "$bound_kib"
check "limit, scavenger off: $(memstat limit num_release_limit) releases forced by the limit" \
	test "$(memstat limit num_release_limit)" -gt 0
run scav SPANMALLOC_MEMLIMIT=256MiB SPANMALLOC_SCAVENGE=on
check "limit, scavenger on: VmHWM $(field scav vmhwm_kib) KiB <= $bound_kib KiB" \
	test "$(field scav vmhwm_kib)" -le "$bound_kib"
check "no limit: workload ran" run nolimit SPANMALLOC_SCAVENGE=off
check "no limit: VmHWM $(field nolimit vmhwm_kib) KiB > $bound_kib KiB (the workload needs the limit)" \
	test "$(field nolimit vmhwm_kib)" -gt "$bound_kib"
exit $((failed != 0))
