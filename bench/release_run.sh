#!/bin/sh
# release_run.sh - how fast each allocator gives freed memory back to the OS.
#
# Builds bench/release_bench.c (a plain C program, not linked to any
# allocator) and runs it once per (allocator, repetition) with the
# allocator's library in LD_PRELOAD (glibc: no preload).  Repetitions are
# interleaved: repetition 1 runs every allocator, then repetition 2, and the
# order of the allocators rotates from one repetition to the next.
#
# Each allocator is checked first: the program must report that malloc comes
# from the preloaded library, else the allocator is skipped with the reason.
#
# Output, in the output directory (default bench/results/release-<date>):
#   meta.txt               machine, settings and library paths (key=value)
#   release_bench          the program that was run
#   raw/<alloc>.<rep>.csv  its output: allocator,phase,seconds,rss,lazyfree
#   raw/<alloc>.<rep>.fail exit status, present only if the run failed
# bench/release_report.py turns them into a table and a chart.

# shellcheck disable=SC2086
set -u -f

here=$(cd "$(dirname "$0")" && pwd)

usage() {
	cat <<EOF
usage: $0 [options]

  -a, --allocators LIST  comma-separated allocators to run
                         (default: spanmalloc,jemalloc,glibc,tcmalloc,mimalloc)
  -r, --reps N           repetitions per allocator (default: 3)
  -q, --quick            wait 0.5, 1, 2 s instead of 1, 5, 15 s (for testing)
  -w, --waits LIST       wait times in seconds (default: 1,5,15)
  -m, --mib N            size of the burst in MiB (default: 256)
  -s, --spanmalloc PATH  libspanmalloc.so (default: src/.libs/libspanmalloc.so
                         under the current directory, then the source tree,
                         then _build/ in the source tree)
  -l, --lib NAME=PATH    use PATH for allocator NAME
  -o, --out DIR          output directory (default: bench/results/release-<date>)
  -c, --cc CC            C compiler (default: \$CC or cc)
      --report           run release_report.py on the results afterwards
      --doc              run release_report.py --doc afterwards (implies --report)
  -h, --help             this text

Libraries: jemalloc libjemalloc.so.2; tcmalloc libtcmalloc_minimal.so.4, else
libtcmalloc.so.4; mimalloc libmimalloc.so.2, else libmimalloc.so.  A missing
library skips that allocator.
EOF
}

die() {
	echo "release_run.sh: $*" >&2
	exit 2
}

allocators="spanmalloc jemalloc glibc tcmalloc mimalloc"
reps=3
waits=1,5,15
mib=256
spanmalloc_so=""
lib_overrides=""
out=""
cc=${CC:-cc}
report=0
doc=0

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
	-q | --quick)
		waits=0.5,1,2
		shift
		continue
		;;
	--report)
		report=1
		shift
		continue
		;;
	--doc)
		report=1
		doc=1
		shift
		continue
		;;
	-a | --allocators | -r | --reps | -w | --waits | -m | --mib | -s | --spanmalloc | -l | --lib | -o | --out | -c | --cc)
		[ $# -ge 2 ] || die "option $opt needs a value (try --help)"
		;;
	*) die "unknown option $opt (try --help)" ;;
	esac
	case $opt in
	-a | --allocators) allocators=$(echo "$2" | tr ',' ' ') ;;
	-r | --reps) reps=$2 ;;
	-w | --waits) waits=$2 ;;
	-m | --mib) mib=$2 ;;
	-s | --spanmalloc) spanmalloc_so=$2 ;;
	-l | --lib) lib_overrides="$lib_overrides $2" ;;
	-o | --out) out=$2 ;;
	-c | --cc) cc=$2 ;;
	esac
	shift 2
done

case $reps in '' | *[!0-9]* | 0) die "--reps wants a positive integer, not '$reps'" ;; esac

[ -n "$out" ] || out=$here/results/release-$(date +%Y-%m-%d-%H%M%S)
mkdir -p "$out/raw" || die "cannot create $out"
out=$(cd "$out" && pwd)

bin=$out/release_bench
$cc -O2 -o "$bin" "$here/release_bench.c" -ldl || die "cannot build $here/release_bench.c"

# ---- where each allocator's library is (as in run.sh) ---------------------

first_file() {
	for f in "$@"; do
		if [ -f "$f" ]; then
			echo "$f"
			return 0
		fi
	done
	return 1
}

multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch=$(uname -m)-linux-gnu
libdirs="/usr/lib/$multiarch /lib/$multiarch /usr/lib64 /lib64 /usr/local/lib /usr/lib /lib"

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
			first_file src/.libs/libspanmalloc.so "$here/../src/.libs/libspanmalloc.so" \
				"$here/../_build/src/.libs/libspanmalloc.so" ||
				{
					echo "libspanmalloc.so not found (build it with 'make', or pass --spanmalloc PATH)"
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

echo "release_run.sh: results in $out"
: >"$out/meta.txt"
meta() { echo "$1=$2" >>"$out/meta.txt"; }
active=""
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
	# A tiny burst and no waiting: only the first comment line matters.
	got=$(with_lib "$lib" "$bin" --mib 1 --waits 0 --no-release 2>&1 | sed -n 's/^# malloc_from=.* detected=//p')
	if [ "$got" != "$a" ]; then
		echo "  $a: skipped: with it preloaded the program detects '${got:-nothing}'"
		meta "skipped.$a" "detected ${got:-nothing}"
		continue
	fi
	echo "  $a: ${lib:-no preload}"
	meta "lib.$a" "${lib:-none}"
	active="$active $a"
done
set -- $active
nalloc=$#
[ "$nalloc" -gt 0 ] || die "no allocator left to run"

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null)
meta date "$(date '+%Y-%m-%d %H:%M:%S %z')"
meta cpu "${cpu:-unknown}"
meta cores "$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
meta memory "${mem:-unknown}"
meta kernel "$(uname -sr)"
meta thp "$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
meta allocators "$(echo $active)"
meta reps "$reps"
meta waits "$waits"
meta mib "$mib"
meta spanmalloc_rev "$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta spanmalloc_release_env "${SPANMALLOC_RELEASE:-default}"

total=$((reps * nalloc))
echo "release_run.sh: $nalloc allocators x $reps repetitions = $total runs, waits $waits s," \
	"burst $mib MiB (load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"

# ---- measure --------------------------------------------------------------

start=$(date +%s)
nrun=0
nfail=0
rep=1
while [ "$rep" -le "$reps" ]; do
	order=$(echo $active | awk -v k=$(((rep - 1) % nalloc)) \
		'{ for (i = 0; i < NF; i++) printf "%s ", $((i + k) % NF + 1) }')
	for a in $order; do
		nrun=$((nrun + 1))
		lib=$(sed -n "s/^lib\.$a=//p" "$out/meta.txt")
		[ "$lib" != none ] || lib=""
		stem=$out/raw/$a.$rep
		rm -f "$stem.fail"
		with_lib "$lib" "$bin" --waits "$waits" --mib "$mib" --timeline --interval 100 \
			--name "$a" >"$stem.csv" 2>"$stem.err"
		rc=$?
		[ -s "$stem.err" ] || rm -f "$stem.err"
		if [ $rc -ne 0 ] || ! grep -q "^$a,release," "$stem.csv"; then
			echo "$rc" >"$stem.fail"
			nfail=$((nfail + 1))
			printf '[%d/%d] %-10s rep %d FAILED (exit %d)\n' "$nrun" "$total" "$a" "$rep" "$rc"
			continue
		fi
		# peak, last wait and release, in MiB
		awk -F, -v a="$a" -v n="$nrun" -v t="$total" -v r="$rep" '
			$2 == "peak" { p = $4 } $2 == "wait" { w = $4; ws = $3 } $2 == "release" { x = $4 }
			END { printf "[%d/%d] %-10s rep %d  peak %6.1f MiB  after %s s %6.1f MiB  release %6.1f MiB\n",
			      n, t, a, r, p / 1048576, ws + 0, w / 1048576, x / 1048576 }' "$stem.csv"
	done
	rep=$((rep + 1))
done
end=$(date +%s)
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
meta duration_s "$((end - start))"
echo "release_run.sh: $total runs in $((end - start)) s, $nfail failed; results in $out"

if [ "$report" -eq 1 ]; then
	if [ "$doc" -eq 1 ]; then
		python3 "$here/release_report.py" --doc "$out" || exit 1
	else
		python3 "$here/release_report.py" "$out" || exit 1
	fi
else
	echo "release_run.sh: next: python3 $here/release_report.py $out"
fi
[ "$nfail" -eq 0 ]
