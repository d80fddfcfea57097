#!/bin/sh
# callgrind.sh - instructions per malloc+free pair, for every allocator.
#
# Runs bench/fastpath (a loop of malloc(SIZE)+free pairs after a warm-up)
# under valgrind --tool=callgrind twice per allocator, with N1 and N2 pairs,
# and reports (Ir(N2) - Ir(N1)) / (N2 - N1): the instructions of one pair,
# with start-up, warm-up and exit cancelled out.  Instruction counts do not
# depend on the machine's load, so this is the number to watch for fast-path
# regressions on a noisy machine.  The loop's own instructions (measured with
# "fastpath N none") are included in each number and shown on their own line.
#
# Callgrind does not replace malloc (unlike memcheck), so the preloaded
# allocator is the one counted.  Allocators are found as in run.sh.
#
# Prints a markdown table; with --out DIR also writes it to DIR/callgrind.md,
# which bench/report.py includes in its report.

# Lists (allocators, cases) are space-separated words split on purpose;
# globbing is off so that splitting is all that happens.
# shellcheck disable=SC2086,SC2116
set -u -f

here=$(cd "$(dirname "$0")" && pwd)

usage() {
	cat <<EOF
usage: $0 [options]

  -a, --allocators LIST  comma-separated (default: spanmalloc,jemalloc,glibc,tcmalloc,mimalloc)
  -z, --size BYTES       allocation size (default: 64)
      --n1 N             pairs in the short run (default: 100000)
      --n2 N             pairs in the long run (default: 1100000)
  -s, --spanmalloc PATH  libspanmalloc.so (default: as in run.sh)
  -l, --lib NAME=PATH    library for allocator NAME
  -p, --fastpath PATH    the loop program (default: bench/fastpath)
  -o, --out DIR          also write DIR/callgrind.md
  -h, --help             this text
EOF
}

die() {
	echo "callgrind.sh: $*" >&2
	exit 2
}

allocators="spanmalloc jemalloc glibc tcmalloc mimalloc"
size=64
n1=100000
n2=1100000
spanmalloc_so=""
lib_overrides=""
fastpath=""
out=""

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
	-a | --allocators | -z | --size | --n1 | --n2 | -s | --spanmalloc | -l | --lib | -p | --fastpath | -o | --out) [ $# -ge 2 ] || die "option $opt needs a value (try --help)" ;;
	*) die "unknown option $opt (try --help)" ;;
	esac
	case $opt in
	-a | --allocators) allocators=$(echo "$2" | tr ',' ' ') ;;
	-z | --size) size=$2 ;;
	--n1) n1=$2 ;;
	--n2) n2=$2 ;;
	-s | --spanmalloc) spanmalloc_so=$2 ;;
	-l | --lib) lib_overrides="$lib_overrides $2" ;;
	-p | --fastpath) fastpath=$2 ;;
	-o | --out) out=$2 ;;
	*) die "unknown option $opt (try --help)" ;;
	esac
	shift 2
done
[ "$n2" -gt "$n1" ] 2>/dev/null || die "--n2 must be larger than --n1"

command -v valgrind >/dev/null 2>&1 || {
	echo "callgrind.sh: valgrind not found (package valgrind); no instruction counts" >&2
	exit 0
}
if [ -z "$fastpath" ]; then
	for f in bench/fastpath "$here/fastpath"; do
		if [ -x "$f" ]; then
			fastpath=$f
			break
		fi
	done
fi
if [ -z "$fastpath" ] || [ ! -x "$fastpath" ]; then
	die "no bench/fastpath; build it with 'make bench/fastpath' or pass --fastpath"
fi

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
			for f in src/.libs/libspanmalloc.so "$here/../src/.libs/libspanmalloc.so"; do
				if [ -f "$f" ]; then
					echo "$f"
					return 0
				fi
			done
			echo "libspanmalloc.so not found in src/.libs (build it with 'make', or pass --spanmalloc PATH)"
			return 1
		fi
		;;
	jemalloc) find_lib libjemalloc.so.2 || { echo "libjemalloc.so.2 not found"; return 1; } ;;
	tcmalloc) find_lib libtcmalloc_minimal.so.4 libtcmalloc.so.4 || { echo "libtcmalloc_minimal.so.4 not found"; return 1; } ;;
	mimalloc) find_lib libmimalloc.so.2 libmimalloc.so || { echo "libmimalloc.so.2 not found"; return 1; } ;;
	*)
		echo "unknown allocator; give its library with --lib $1=PATH"
		return 1
		;;
	esac
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/callgrind.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT INT TERM

# total_ir LIB N [none]: instructions of the whole fastpath run.
total_ir() {
	lib=$1
	n=$2
	mode=${3:-}
	f=$tmp/callgrind.out.$n
	if [ -n "$lib" ]; then
		set -- env LD_PRELOAD="$lib"
	else
		set -- env -u LD_PRELOAD
	fi
	set -- "$@" valgrind --tool=callgrind --callgrind-out-file="$f" "$fastpath" "$n" "$size" $mode
	"$@" >"$tmp/stdout" 2>"$tmp/stderr" || {
		echo "callgrind.sh: failed: $*" >&2
		sed 's/^/    /' "$tmp/stderr" >&2
		return 1
	}
	awk '/^(summary|totals):/ { print $2; exit }' "$f"
}

# per_pair LIB [none]: sets ir (instructions per pair) and from (the
# object malloc came from).
per_pair() {
	short=$(total_ir "$1" "$n1" ${2:-}) || return 1
	from=$(sed -n 's/^malloc from //p' "$tmp/stdout")
	long=$(total_ir "$1" "$n2" ${2:-}) || return 1
	ir=$(echo "$short $long $n1 $n2" | awk '{ printf "%.1f\n", ($2 - $1) / ($4 - $3) }')
}

table="| allocator | instructions per malloc($size)+free |
|---|---:|"
notes="
"
for a in $allocators; do
	if ! lib=$(lib_of "$a"); then
		notes="$notes
- $a: not run: $lib"
		continue
	fi
	if [ -n "$lib" ] && [ ! -f "$lib" ]; then
		notes="$notes
- $a: not run: $lib does not exist"
		continue
	fi
	if ! per_pair "$lib"; then
		table="$table
| $a | failed |"
		continue
	fi
	case $from in
	*libc.so* | *libc-*) [ -z "$lib" ] || notes="$notes
- $a: malloc came from $from, not $lib" ;;
	esac
	table="$table
| $a | $ir |"
	echo "callgrind.sh: $a: $ir instructions per pair (malloc from $from)" >&2
done
if per_pair "" none; then loop=$ir; else loop="?"; fi

text="## Instructions per malloc+free (callgrind)

Instructions retired per malloc($size)+free pair, from valgrind --tool=callgrind
on bench/fastpath: (Ir with $n2 pairs - Ir with $n1 pairs) / $((n2 - n1)).
Each number includes about $loop instructions of loop and touching.

$table$notes"

echo "$text"
if [ -n "$out" ]; then
	mkdir -p "$out" && echo "$text" >"$out/callgrind.md"
fi
