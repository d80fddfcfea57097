#!/bin/sh
# sm_active: a program linked with -lspanmalloc sees 1 when spanmalloc
# serves its malloc, and 0 when another allocator does (jemalloc, tcmalloc
# or mimalloc preloaded); then sm_write_heap_profile fails with ENOTSUP and
# one line on stderr instead of writing an empty profile.  Also: every sm_
# symbol the shared library exports is declared in spanmalloc.h, and every
# function the header declares is exported.
#
# Environment (set by make check): SPANMALLOC_LIB, CC, srcdir.

set -u

planned=6
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_PROFILE SPANMALLOC_PROFILE_SIGNAL SPANMALLOC_PROFILE_RATE
. "$here/tap.sh"

echo "1..$planned"

need_lib

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-active.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

${CC:-cc} -O2 -I"$src/include" -o "$tmp/app" "$src/tests/integration/active_app.c" \
	-L"$libdir" -lspanmalloc -Wl,-rpath,"$libdir" 2>"$tmp/cc.err" ||
	{ diag "$(cat "$tmp/cc.err")"; echo "Bail out! cannot build active_app"; exit 1; }

"$tmp/app" "$tmp/ours.pb.gz" >"$tmp/out" 2>"$tmp/err"
check "linked with -lspanmalloc: sm_active() is 1 and the profile is written" \
	eval 'grep -qx "active 1" "$tmp/out" && grep -qx "write 0 -" "$tmp/out" &&
		grep -qx "active_again 1" "$tmp/out" && [ -s "$tmp/ours.pb.gz" ]'
[ -n "${SM_TEST_VERBOSE:-}" ] && diag "$(cat "$tmp/out" "$tmp/err")"

# Another allocator first: the first one installed of these.
other=
for f in /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/x86_64-linux-gnu/libtcmalloc.so.4 \
	/usr/lib/x86_64-linux-gnu/libmimalloc.so.2; do
	if [ -f "$f" ]; then
		other=$f
		break
	fi
done
if [ -z "$other" ]; then
	skip 3 "no other allocator installed (scripts/bootstrap.sh installs jemalloc)"
else
	LD_PRELOAD=$other "$tmp/app" "$tmp/other.pb.gz" >"$tmp/out" 2>"$tmp/err"
	diag "with LD_PRELOAD=$other:" "$(cat "$tmp/out" "$tmp/err")"
	check "$(basename "$other") preloaded: sm_active() is 0, and stays 0" \
		eval 'grep -qx "active 0" "$tmp/out" && grep -qx "active_again 0" "$tmp/out"'
	check "... sm_write_heap_profile returns -1 with ENOTSUP and writes no file" \
		eval 'grep -qx "write -1 ENOTSUP" "$tmp/out" && [ ! -e "$tmp/other.pb.gz" ]'
	check "... and says why in one line on stderr" \
		eval '[ "$(grep -c "^spanmalloc: sm_write_heap_profile: this process.s malloc is another allocator.s" "$tmp/err")" -eq 1 ]'
fi

# The export list against the header.
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TW]$/ && $3 ~ /^sm_/ { print $3 }' | sort -u)
declared=$(sed -n 's/^SM_API [^(]*[ *]\(sm_[a-z0-9_]*\)(.*/\1/p' "$src/include/spanmalloc.h" | sort -u)
diag "exported sm_ functions: $(echo $exported)"
check "the library exports exactly the sm_ functions spanmalloc.h declares" \
	[ "$exported" = "$declared" ]
check "... sm_active among them" eval 'printf "%s\n" "$exported" | grep -qx sm_active'

[ $count -eq $planned ] || echo "# planned $planned checks, ran $count"
[ $failed -eq 0 ] && [ $count -eq $planned ]
