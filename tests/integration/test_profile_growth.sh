#!/bin/sh
# SPANMALLOC_PROFILE_GROWTH: a profile each time heap_inuse passes the last
# profile's high-water mark by the growth.  growth_app.c grows to 128 MiB
# in 2 MiB steps under LD_PRELOAD with SPANMALLOC_PROFILE_GROWTH=32MiB:
#   - it gets numbered files, 3 or 4 of them (marks near 32, 64, 96 and,
#     if the last step lands past it, 128 MiB), each reported on stderr;
#   - go tool pprof reads each one, the inuse_space of each is at least
#     32 MiB (less 20% for sampling) above the one before, and the last
#     names grow_cache;
#   - without the variable no numbered file is written, and a bad value
#     gives one warning line and the default (off).
#
# Environment (set by make check): SPANMALLOC_LIB, CC, srcdir.

set -u

planned=6
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_PROFILE SPANMALLOC_PROFILE_SIGNAL SPANMALLOC_PROFILE_INTERVAL \
	SPANMALLOC_PROFILE_RATE SPANMALLOC_PROFILE_GROWTH
. "$here/tap.sh"

echo "1..$planned"

need_lib
if ! command -v go >/dev/null 2>&1; then
	echo "Bail out! go is not installed (Debian: golang-go)"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-growth.XXXXXX") || exit 1
cleanup() {
	if [ -n "${SM_TEST_KEEP:-}" ]; then echo "# files kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# inuse FILE: the profile's inuse_space total in bytes.
inuse() {
	pprof -top -unit=B -sample_index=inuse_space "$1" |
		sed -n 's/.* of \([0-9]*\)B* total.*/\1/p' | head -1
}

${CC:-cc} -O2 -g -o "$tmp/app" "$src/tests/integration/growth_app.c" 2>"$tmp/cc.err" ||
	{ diag "$(cat "$tmp/cc.err")"; echo "Bail out! cannot build growth_app"; exit 1; }

d=$tmp/grow
mkdir -p "$d"
LD_PRELOAD=$lib SPANMALLOC_PROFILE="$d/p" SPANMALLOC_PROFILE_GROWTH=32MiB "$tmp/app" 2>"$d/err"
rc=$?
files=$(ls "$d" | grep '^p\.[0-9]*\.[0-9]*\.heap\.pb\.gz$' | sort -t. -k3,3n)
n=$(printf '%s\n' "$files" | grep -c .)
diag "exit $rc; growth files: $(echo $files)"
check "SPANMALLOC_PROFILE_GROWTH=32MiB over 128 MiB of growth: 3 or 4 numbered files, numbered from 1" \
	eval '[ $rc -eq 0 ] && [ "$n" -ge 3 ] && [ "$n" -le 4 ] &&
		printf "%s\n" "$files" | head -1 | grep -q "^p\.[0-9]*\.1\.heap\.pb\.gz$"'
check "... each reported on stderr" \
	[ "$(grep -c "^spanmalloc: heap profile written to $d/p\.[0-9]*\.[0-9]*\.heap" "$d/err")" -eq "$n" ]

prev=0
steps_ok=true
sizes=""
for f in $files; do
	b=$(inuse "$d/$f")
	sizes="$sizes $b"
	# 32 MiB less 20% for the sampling's error.
	if [ -z "$b" ] || [ "$b" -lt $((prev + 26843545)) ]; then steps_ok=false; fi
	prev=${b:-0}
done
diag "inuse_space of each:$sizes"
check "go tool pprof reads each; each holds at least 32 MiB (-20%) more than the one before" $steps_ok
last=$(printf '%s\n' "$files" | tail -1)
top_out=$(pprof -top -unit=B -sample_index=inuse_space "$tmp/app" "$d/$last")
[ -n "${SM_TEST_VERBOSE:-}" ] && diag "$top_out"
check "the last names grow_cache" eval 'printf "%s\n" "$top_out" | grep -q "grow_cache"'

d=$tmp/none
mkdir -p "$d"
LD_PRELOAD=$lib SPANMALLOC_PROFILE="$d/p" "$tmp/app" 2>"$d/err"
check "without SPANMALLOC_PROFILE_GROWTH: only the profile at exit" \
	eval '[ "$(ls "$d" | grep -c "^p\.[0-9]*\.[0-9]*\.heap\.pb\.gz$")" -eq 0 ] &&
		[ "$(ls "$d" | grep -c "^p\.[0-9]*\.heap\.pb\.gz$")" -eq 1 ]'

d=$tmp/bad
mkdir -p "$d"
LD_PRELOAD=$lib SPANMALLOC_PROFILE="$d/p" SPANMALLOC_PROFILE_GROWTH=lots "$tmp/app" 2>"$d/err"
rc=$?
check "SPANMALLOC_PROFILE_GROWTH=lots: one warning line, runs on with growth profiles off" \
	eval '[ $rc -eq 0 ] && [ "$(grep -c "SPANMALLOC_PROFILE_GROWTH" "$d/err")" -eq 1 ] &&
		[ "$(ls "$d" | grep -c "^p\.[0-9]*\.[0-9]*\.heap\.pb\.gz$")" -eq 0 ]'

[ $count -eq $planned ] || echo "# planned $planned checks, ran $count"
[ $failed -eq 0 ] && [ $count -eq $planned ]
