#!/bin/sh
# valgrind's memcheck on a program that uses spanmalloc through LD_PRELOAD.
#
# vg_errors.c is built with debug information and run under memcheck with
# the library preloaded, the way doc/valgrind.md says:
#
#   LD_PRELOAD=libspanmalloc.so valgrind --soname-synonyms=somalloc=nouserintercepts ...
#
# (without the option memcheck replaces every malloc it finds, ours too).
# "errors" makes one error of each kind; each must be in memcheck's output
# as its own record naming the function that made it: a small and a large
# leak (definitely lost, with the allocating function), a read after free
# (with the block's free and allocation stacks), a write past the end of a
# small block and a read past the end of a large one (0 bytes after the
# block, of the size asked for, not the size class), and a branch on
# uninitialised memory; and nothing else: 6 errors.  The stacks must come
# from spanmalloc (sm_* frames), which shows our allocator was the one
# running.  "clean" uses every entry point correctly, from two threads:
# memcheck must find 0 errors and every block freed.
#
# Output is TAP.  Environment: SPANMALLOC_LIB (the shared library, set by
# make check), CC (default cc).  valgrind is required (scripts/bootstrap.sh
# installs it).

set -u
planned=11
echo "1..$planned"
. "$(cd "$(dirname "$0")" && pwd)/tap.sh"
[ -n "${SPANMALLOC_LIB:-}" ] && [ -f "$SPANMALLOC_LIB" ] ||
	bail_out "SPANMALLOC_LIB does not name the built shared library"
command -v valgrind >/dev/null 2>&1 ||
	bail_out "valgrind is not installed (scripts/bootstrap.sh installs it)"
lib=$(readlink -f "$SPANMALLOC_LIB")
src=${srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/vg_errors.c

work=$(mktemp -d "${TMPDIR:-/tmp}/spanmalloc-valgrind.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM
${CC:-cc} -g -O0 -pthread -o "$work/vg_errors" "$src" || bail_out "cannot build vg_errors.c"

memcheck() {
	# memcheck LOG ARG: run vg_errors ARG under memcheck, its output in LOG.
	LD_PRELOAD=$lib timeout -k 10 600 valgrind --leak-check=full \
		--soname-synonyms=somalloc=nouserintercepts --num-callers=30 \
		"$work/vg_errors" "$2" >"$1.out" 2>"$1"
}

# record LOG HEAD WORD...: some record of LOG (memcheck's lines between two
# empty ones) has a line containing HEAD and lines containing every WORD.
record() {
	log=$1
	shift
	awk -v want="$*" '
		BEGIN { n = split(want, w, "\t") }
		function done() {
			if (index(rec, w[1]) == 0) return
			for (i = 2; i <= n; i++) if (index(rec, w[i]) == 0) return
			found = 1
		}
		/^==[0-9]+== *$/ { done(); rec = ""; next }
		{ rec = rec "\n" $0 }
		END { done(); exit found ? 0 : 1 }
	' "$log"
}

tab=$(printf '\t')
rec() {
	log=$1
	shift
	old_ifs=$IFS
	IFS=$tab
	args="$*"
	IFS=$old_ifs
	record "$log" "$args"
}

memcheck "$work/errors.log" errors
memcheck "$work/clean.log" clean

check "errors: the program ran to its end" grep -q "errors done" "$work/errors.log.out"
check "errors: the blocks were described by spanmalloc" \
	rec "$work/errors.log" "Block was alloc'd at" "sm_valgrind_malloc" "read_after_free"
check "errors: a small leak is definitely lost, with the allocating function" \
	rec "$work/errors.log" "40 bytes in 1 blocks are definitely lost" "make_leak (vg_errors.c"
check "errors: a large leak is definitely lost, with the allocating function" \
	rec "$work/errors.log" "100,000 bytes in 1 blocks are definitely lost" "make_large_leak (vg_errors.c"
check "errors: a read after free, with the block's free stack" \
	rec "$work/errors.log" "Invalid read of size 1" "read_after_free (vg_errors.c" \
	"10 bytes inside a block of size 64 free'd"
check "errors: a write past the end of a 24-byte block" \
	rec "$work/errors.log" "Invalid write of size 1" "write_past_end (vg_errors.c" \
	"0 bytes after a block of size 24 alloc'd"
check "errors: a read past the end of a 100,000-byte block" \
	rec "$work/errors.log" "Invalid read of size 1" "read_past_large_end (vg_errors.c" \
	"0 bytes after a block of size 100,000 alloc'd"
check "errors: a branch on uninitialised memory" \
	rec "$work/errors.log" "Conditional jump or move depends on uninitialised value" "use_uninit (vg_errors.c"
check "errors: those 6 errors and no others" grep -q "ERROR SUMMARY: 6 errors from 6 contexts" "$work/errors.log"
check "clean: 0 errors" grep -q "ERROR SUMMARY: 0 errors from 0 contexts" "$work/clean.log"
check "clean: every block freed" grep -q "All heap blocks were freed -- no leaks are possible" "$work/clean.log"

if [ "$failed" -ne 0 ]; then
	echo "# memcheck on vg_errors errors:"
	sed 's/^/# /' "$work/errors.log"
	echo "# memcheck on vg_errors clean:"
	sed 's/^/# /' "$work/clean.log"
fi
[ "$failed" -eq 0 ]
