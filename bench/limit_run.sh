#!/bin/sh
# limit_run.sh - the soft memory limit's effect as a chart: RSS over time of
# tests/integration/limit_workload.c (rounds of 4-32 KiB objects, 90%
# freed, then 1-4 MiB objects, all freed; at most about 200 MiB live) under
# spanmalloc with SPANMALLOC_MEMLIMIT=256MiB, under spanmalloc without a
# limit, and under glibc.  The scavenger is off in both spanmalloc runs, so
# the chart shows what the limit does by itself.
#
#   bench/limit_run.sh [--lib PATH] [--out DIR] [--rounds N] [--doc]
#
#   --lib PATH    libspanmalloc.so (default: src/.libs/libspanmalloc.so of
#                 the build tree this is run from)
#   --out DIR     raw samples and the chart (default bench/results/limit-<date>)
#   --rounds N    rounds of the workload (default 4)
#   --doc         copy the chart to doc/limit.png in the source tree
#
# Run it from the top of the build tree; gnuplot draws the chart.  Each run
# prints its sampled peak RSS and VmHWM; raw samples are DIR/NAME.csv
# ("ms,rss_bytes", one every 2 ms).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
lib=$PWD/src/.libs/libspanmalloc.so
out=bench/results/limit-$(date +%Y-%m-%d-%H%M%S)
rounds=4
doc=0
while [ $# -gt 0 ]; do
	case $1 in
	--lib) lib=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--doc) doc=1; shift ;;
	*) sed -n '2,21p' "$0" >&2; exit 2 ;;
	esac
done
[ -f "$lib" ] || { echo "limit_run.sh: no $lib (build first, or --lib)" >&2; exit 2; }
mkdir -p "$out"
${CC:-cc} -O2 -pthread -o "$out/limit_workload" "$src/tests/integration/limit_workload.c"

# run NAME ENV...: one run, samples in NAME.csv, the summary line in NAME.txt.
run() {
	name=$1
	shift
	env ROUNDS="$rounds" "$@" "$out/limit_workload" --csv >"$out/$name.csv" 2>"$out/$name.txt"
	echo "$name: $(cat "$out/$name.txt")"
}
run limit SPANMALLOC_SCAVENGE=off SPANMALLOC_MEMLIMIT=256MiB LD_PRELOAD="$lib"
run nolimit SPANMALLOC_SCAVENGE=off LD_PRELOAD="$lib"
run glibc

command -v gnuplot >/dev/null 2>&1 || { echo "limit_run.sh: gnuplot not found; no chart" >&2; exit 0; }
term=pngcairo
gnuplot -e "set terminal pngcairo" 2>/dev/null || term=png
cat >"$out/limit.gp" <<GP
set terminal $term size 1000,600 noenhanced
set output 'limit.png'
set title "limit_workload.c: RSS every 2 ms, at most ~200 MiB live, $rounds rounds\n$(nproc) cores, $(date -u +%Y-%m-%d); spanmalloc with the scavenger off"
set xlabel 'seconds'
set ylabel 'RSS (MiB)'
set yrange [0:*]
set grid
set key below
set datafile separator ','
plot 'limit.csv' using (\$1/1000):(\$2/1048576) with lines lw 2 title 'spanmalloc, SPANMALLOC_MEMLIMIT=256MiB', \\
     'nolimit.csv' using (\$1/1000):(\$2/1048576) with lines lw 2 title 'spanmalloc, no limit', \\
     'glibc.csv' using (\$1/1000):(\$2/1048576) with lines lw 2 title 'glibc', \\
     256 with lines dt 2 lc rgb 'black' title 'limit', \\
     256*1.1 with lines dt 3 lc rgb 'gray' title 'limit + 10%'
GP
(cd "$out" && gnuplot limit.gp)
echo "chart: $out/limit.png"
if [ "$doc" -eq 1 ]; then
	cp "$out/limit.png" "$src/doc/limit.png"
	echo "wrote $src/doc/limit.png"
fi
