#!/bin/sh
# run.sh - run the benchmark binary under every allocator and keep the raw results.
#
# One binary (bench_allocators, which uses the default malloc) runs once per
# allocator with the allocator's shared library in LD_PRELOAD; glibc is the
# run without a preload.  Every benchmark case runs in its own process, so
# each case starts from a fresh heap and its peak RSS can be measured (by
# bench/maxrss, a fork/exec/wait4 wrapper).
#
# Runs are interleaved so that a slow spell of a shared machine hits every
# allocator alike: for each repetition, for each case, every allocator runs
# in turn, and the order of the allocators rotates from case to case and
# from repetition to repetition.
#
# Before measuring, each allocator is checked: its library must exist and
# the bench binary run under it must report that malloc now comes from that
# library (bench_allocators --malloc_library).  An allocator that fails the
# check is skipped with the reason, and the others still run.
#
# Output, in the output directory:
#   meta.txt                      machine, settings and library paths (key=value)
#   raw/<alloc>/<case>.<rep>.json google-benchmark JSON of one run
#   raw/<alloc>/<case>.<rep>.rss  peak RSS of that run, KiB
#   raw/<alloc>/<case>.<rep>.log  console output of that run
#   raw/<alloc>/<case>.<rep>.fail exit status, present only if the run failed
# bench/report.py turns them into tables and a chart.

# Lists (allocators, cases) are space-separated words split on purpose;
# globbing is off so that splitting is all that happens.
# shellcheck disable=SC2086,SC2116
set -u -f

here=$(cd "$(dirname "$0")" && pwd)

usage() {
	cat <<EOF
usage: $0 [options]

  -a, --allocators LIST  comma-separated allocators to run, in this order
                         (default: spanmalloc,jemalloc,glibc,tcmalloc,mimalloc)
  -r, --reps N           repetitions of every (case, allocator) run (default: 5)
  -f, --filter REGEX     only cases whose name matches (google-benchmark regex,
                         e.g. 'MallocFree|Larson'; default: all)
  -t, --min-time SEC     google-benchmark --benchmark_min_time per run (default: 0.5)
  -s, --spanmalloc PATH  libspanmalloc.so (default: src/.libs/libspanmalloc.so
                         under the current directory, then under the source tree)
  -l, --lib NAME=PATH    use PATH for allocator NAME; a new NAME adds an allocator
  -o, --out DIR          output directory (default: bench/results/<date>)
  -b, --bench PATH       benchmark binary (default: bench/bench_allocators)
  -m, --maxrss PATH      peak-RSS wrapper (default: bench/maxrss)
      --timeout SEC      kill a run after SEC seconds (default: 600)
  -h, --help             this text

Known allocators and where their library is looked for:
  spanmalloc  see --spanmalloc
  jemalloc    libjemalloc.so.2
  glibc       no preload
  tcmalloc    libtcmalloc_minimal.so.4, else libtcmalloc.so.4
  mimalloc    libmimalloc.so.2, else libmimalloc.so

Exit status: 0 if every run succeeded, 1 if some failed (they are recorded
and left out by report.py), 2 if nothing could be run.
EOF
}

die() {
	echo "run.sh: $*" >&2
	exit 2
}

allocators="spanmalloc jemalloc glibc tcmalloc mimalloc"
reps=5
filter=""
min_time=0.5
timeout_s=600
spanmalloc_so=""
bench=""
maxrss=""
out=""
lib_overrides=""

while [ $# -gt 0 ]; do
	opt=$1
	case $opt in
	--*=*)
		val=${opt#*=}
		opt=${opt%%=*}
		shift
		set -- "$opt" "$val" "$@"
		continue
		;;
	-h | --help)
		usage
		exit 0
		;;
	-a | --allocators | -r | --reps | -f | --filter | -t | --min-time | -s | --spanmalloc | -l | --lib | -o | --out | -b | --bench | -m | --maxrss | --timeout) [ $# -ge 2 ] || die "option $opt needs a value (try --help)" ;;
	*) die "unknown option $opt (try --help)" ;;
	esac
	case $opt in
	-a | --allocators) allocators=$(echo "$2" | tr ',' ' ') ;;
	-r | --reps) reps=$2 ;;
	-f | --filter) filter=$2 ;;
	-t | --min-time) min_time=$2 ;;
	-s | --spanmalloc) spanmalloc_so=$2 ;;
	-l | --lib) lib_overrides="$lib_overrides $2" ;;
	-o | --out) out=$2 ;;
	-b | --bench) bench=$2 ;;
	-m | --maxrss) maxrss=$2 ;;
	--timeout) timeout_s=$2 ;;
	*) die "unknown option $opt (try --help)" ;;
	esac
	shift 2
done

case $reps in '' | *[!0-9]* | 0) die "--reps wants a positive integer, not '$reps'" ;; esac

# First existing file among the arguments.
first_file() {
	for f in "$@"; do
		if [ -f "$f" ]; then
			echo "$f"
			return 0
		fi
	done
	return 1
}

[ -n "$bench" ] || bench=$(first_file bench/bench_allocators "$here/bench_allocators") ||
	die "no bench/bench_allocators here; build it with 'make bench/bench_allocators' or pass --bench"
[ -n "$maxrss" ] || maxrss=$(first_file bench/maxrss "$here/maxrss") ||
	die "no bench/maxrss here; build it with 'make bench/maxrss' or pass --maxrss"
[ -x "$bench" ] || die "$bench is not an executable"
[ -x "$maxrss" ] || die "$maxrss is not an executable"
case $bench in /*) ;; *) bench=$(pwd)/$bench ;; esac
case $maxrss in /*) ;; *) maxrss=$(pwd)/$maxrss ;; esac

[ -n "$out" ] || out=$here/results/$(date +%Y-%m-%d-%H%M%S)
mkdir -p "$out/raw" || die "cannot create $out"
out=$(cd "$out" && pwd)

if command -v timeout >/dev/null 2>&1; then
	timeout_cmd="timeout $timeout_s"
else
	timeout_cmd=""
fi

# ---- where each allocator's library is -----------------------------------

multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch=$(uname -m)-linux-gnu
libdirs="/usr/lib/$multiarch /lib/$multiarch /usr/lib64 /lib64 /usr/local/lib /usr/lib /lib"

# Full path of the first of the given sonames found in the usual directories
# or in the ld.so cache.
find_lib() {
	for name in "$@"; do
		for d in $libdirs; do
			if [ -e "$d/$name" ]; then
				echo "$d/$name"
				return 0
			fi
		done
		p=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) |
			awk -v n="$name" '$1 == n { print $NF; exit }')
		if [ -n "$p" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# Prints the library path of allocator $1 ("" for glibc); fails with a
# reason on stdout when it cannot be found.
lib_of() {
	for o in $lib_overrides; do
		if [ "${o%%=*}" = "$1" ]; then
			echo "${o#*=}"
			return 0
		fi
	done
	case $1 in
	glibc) echo "" ;;
	spanmalloc)
		if [ -n "$spanmalloc_so" ]; then
			echo "$spanmalloc_so"
		else
			first_file src/.libs/libspanmalloc.so "$here/../src/.libs/libspanmalloc.so" ||
				{
					echo "libspanmalloc.so not found in src/.libs (build it with 'make', or pass --spanmalloc PATH)"
					return 1
				}
		fi
		;;
	jemalloc) find_lib libjemalloc.so.2 || { echo "libjemalloc.so.2 not found (package libjemalloc2)"; return 1; } ;;
	tcmalloc) find_lib libtcmalloc_minimal.so.4 libtcmalloc.so.4 ||
		{ echo "libtcmalloc_minimal.so.4 not found (package libtcmalloc-minimal4)"; return 1; } ;;
	mimalloc) find_lib libmimalloc.so.2 libmimalloc.so ||
		{ echo "libmimalloc.so.2 not found (package libmimalloc2.0)"; return 1; } ;;
	*)
		echo "unknown allocator; give its library with --lib $1=PATH"
		return 1
		;;
	esac
}

# Runs its arguments with allocator library $1 preloaded ("" = none).
with_lib() {
	lib=$1
	shift
	if [ -n "$lib" ]; then
		env LD_PRELOAD="$lib" "$@"
	else
		env -u LD_PRELOAD "$@"
	fi
}

# ---- check every allocator ------------------------------------------------

echo "run.sh: results in $out"
active=""
: >"$out/meta.txt"
meta() { echo "$1=$2" >>"$out/meta.txt"; }

for a in $allocators; do
	if ! lib=$(lib_of "$a"); then
		echo "  $a: skipped: $lib"
		meta "skipped.$a" "$lib"
		continue
	fi
	if [ -n "$lib" ]; then
		if [ ! -f "$lib" ]; then
			echo "  $a: skipped: $lib does not exist"
			meta "skipped.$a" "$lib does not exist"
			continue
		fi
		lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
	fi
	if ! got=$(with_lib "$lib" "$bench" --malloc_library 2>"$out/check.$a.log"); then
		echo "  $a: skipped: $bench does not start with it preloaded:"
		sed 's/^/    /' "$out/check.$a.log"
		meta "skipped.$a" "does not start"
		continue
	fi
	if [ -n "$lib" ]; then
		want=$(readlink -f "$lib")
		have=$(readlink -f "$got" 2>/dev/null || echo "$got")
	else
		want=libc
		have=$(basename "$got")
		case $have in libc.so* | libc-*) have=libc ;; esac
	fi
	if [ "$want" != "$have" ]; then
		echo "  $a: skipped: with it preloaded malloc still comes from $got"
		sed 's/^/    /' "$out/check.$a.log"
		meta "skipped.$a" "malloc comes from $got"
		continue
	fi
	rm -f "$out/check.$a.log"
	echo "  $a: ${lib:-no preload} (malloc from $got)"
	meta "lib.$a" "${lib:-none}"
	meta "malloc.$a" "$got"
	active="$active $a"
done
set -- $active
nalloc=$#
[ "$nalloc" -gt 0 ] || die "no allocator left to run"

names=$("$bench" --benchmark_list_tests=true ${filter:+--benchmark_filter="$filter"} 2>/dev/null)
[ -n "$names" ] || die "no benchmark matches '$filter'"
ncases=$(echo "$names" | wc -l)
total=$((reps * ncases * nalloc))

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
meta date "$(date '+%Y-%m-%d %H:%M:%S %z')"
meta cpu "${cpu:-unknown}"
meta cores "$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
meta kernel "$(uname -sr)"
meta host "$(uname -n)"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
meta allocators "$(echo $active)"
meta reps "$reps"
meta min_time "$min_time"
meta filter "$filter"
meta cases "$(echo $names)"
meta bench "$bench"
meta spanmalloc_rev "$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"

echo "run.sh: $ncases cases x $nalloc allocators x $reps repetitions = $total runs" \
	"(min_time $min_time s; load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"

# ---- measure --------------------------------------------------------------

# run_one ALLOC CASE REP: one process, one case, one allocator.
run_one() {
	a=$1
	name=$2
	rep=$3
	base=${name%%/*}
	dir=$out/raw/$a
	mkdir -p "$dir"
	stem=$dir/$base.$rep
	rm -f "$stem.fail" "$stem.json" "$stem.rss"
	lib=$(sed -n "s/^lib\.$a=//p" "$out/meta.txt")
	[ "$lib" != none ] || lib=""
	# maxrss execs a program, so the preload goes through env; only the
	# measured process carries it.
	if [ -n "$lib" ]; then
		set -- env LD_PRELOAD="$lib"
	else
		set -- env -u LD_PRELOAD
	fi
	$timeout_cmd "$maxrss" -o "$stem.rss" "$@" "$bench" \
		--benchmark_filter="^$name\$" \
		--benchmark_min_time="$min_time" \
		--benchmark_out="$stem.json" --benchmark_out_format=json \
		--benchmark_format=console --benchmark_color=false >"$stem.log" 2>&1
	rc=$?
	if [ $rc -ne 0 ] || [ ! -s "$stem.json" ]; then
		echo "$rc" >"$stem.fail"
		printf '[%d/%d] %-26s %-10s FAILED (exit %d, see %s)\n' "$nrun" "$total" \
			"$base" "$a" "$rc" "$stem.log"
		return
	fi
	top=$(grep -o 'time_per_op=[^ ]*' "$stem.log" | head -n 1)
	kib=$(cat "$stem.rss" 2>/dev/null || echo 0)
	printf '[%d/%d] %-26s %-10s %-22s maxrss %7.1f MiB\n' "$nrun" "$total" \
		"$base" "$a" "$top" "$(echo "$kib" | awk '{ print $1 / 1024 }')"
}

start=$(date +%s)
nrun=0
rep=1
while [ "$rep" -le "$reps" ]; do
	k=0
	for name in $names; do
		# Rotate the allocator order by (rep + case index).
		order=$(echo $active | awk -v k=$(((rep - 1 + k) % nalloc)) \
			'{ for (i = 0; i < NF; i++) printf "%s ", $((i + k) % NF + 1) }')
		for a in $order; do
			nrun=$((nrun + 1))
			run_one "$a" "$name" "$rep"
		done
		k=$((k + 1))
	done
	rep=$((rep + 1))
done
end=$(date +%s)

meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
meta duration_s "$((end - start))"
nfail=$(find "$out/raw" -name '*.fail' | wc -l)
echo "run.sh: $total runs in $((end - start)) s, $nfail failed; results in $out"
echo "run.sh: next: python3 $here/report.py $out"
[ "$nfail" -eq 0 ]
