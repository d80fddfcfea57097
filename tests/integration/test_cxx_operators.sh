#!/bin/sh
# C++'s operator new and delete come from the library when it is preloaded
# (src/malloc.c): cxx_operators.cc looks up each of the 20 replaceable
# operators and names the object that defines the one the program binds
# to; out of memory, the library's operators must still do what the C++
# runtime's do (call the new_handler, then throw std::bad_alloc, or return
# null for the nothrow forms), and every form must allocate and free.
# A plain run is the reference.  About 2 seconds.
#
# Environment (set by make check): SPANMALLOC_LIB, CXX.

set -u

planned=5
here=$(cd "$(dirname "$0")" && pwd)
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_PROFILE SPANMALLOC_PROFILE_SIGNAL SPANMALLOC_PROFILE_INTERVAL \
	SPANMALLOC_PROFILE_RATE SPANMALLOC_CHECK
. "$here/tap.sh"

echo "1..$planned"

need_lib
cxx=${CXX:-g++}
if ! command -v "${cxx%% *}" >/dev/null 2>&1; then
	skip $planned "$cxx is not installed"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-cxxops.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

# dladdr names a preloaded object by the path LD_PRELOAD gave.
base=$(basename "$lib")
# $cxx may carry flags, so it is split on purpose.
# shellcheck disable=SC2086
if ! $cxx -std=c++17 -O2 -o "$tmp/ops" "$here/cxx_operators.cc" -ldl 2>"$tmp/cc.err"; then
	not_ok "cxx_operators.cc builds"
	diag "$(tail -n 20 "$tmp/cc.err")"
	skip $((planned - 1)) "cxx_operators.cc did not build"
	exit 1
fi
ok "cxx_operators.cc builds"

"$tmp/ops" "$base" >"$tmp/plain.out" 2>"$tmp/plain.err"
plain=$?
LD_PRELOAD=$lib "$tmp/ops" "$base" >"$tmp/pre.out" 2>"$tmp/pre.err"
pre=$?
SPANMALLOC_CHECK=1 LD_PRELOAD=$lib "$tmp/ops" "$base" >"$tmp/checked.out" 2>"$tmp/checked.err"
checked=$?

ours=$(grep -c ' ours$' "$tmp/pre.out")
if [ "$ours" -eq 20 ] && [ "$(grep -c ' runtime$' "$tmp/plain.out")" -eq 20 ]; then
	ok "all 20 operators new and delete are the library's when preloaded, the runtime's plainly"
else
	not_ok "all 20 operators new and delete are the library's when preloaded, the runtime's plainly"
	diag "preloaded: $ours of 20 are ours" "$(grep -v ' ours$' "$tmp/pre.out" | head -n 20)"
fi

# The rest of the output: the out-of-memory behaviour and the block count.
sed -n '/^new/,$p' "$tmp/plain.out" >"$tmp/plain.rest"
sed -n '/^new/,$p' "$tmp/pre.out" >"$tmp/pre.rest"
sed -n '/^new/,$p' "$tmp/checked.out" >"$tmp/checked.rest"
if [ "$plain" -eq 0 ] && grep -q 'std::bad_alloc after 1 new_handler' "$tmp/plain.rest" &&
	grep -q '^new nothrow: null after 1 new_handler' "$tmp/plain.rest"; then
	ok "the plain run throws std::bad_alloc and returns null as the standard says"
else
	not_ok "the plain run throws std::bad_alloc and returns null as the standard says"
	diag "exit $plain" "$(cat "$tmp/plain.out" "$tmp/plain.err")"
fi
if [ "$pre" -eq 0 ] && [ -s "$tmp/pre.rest" ] && cmp -s "$tmp/plain.rest" "$tmp/pre.rest"; then
	ok "preloaded: new_handler, std::bad_alloc, null and 160 blocks as in the plain run"
else
	not_ok "preloaded: new_handler, std::bad_alloc, null and 160 blocks as in the plain run"
	diag "exit $pre" "$(diff "$tmp/plain.rest" "$tmp/pre.rest")" "$(cat "$tmp/pre.err")"
fi
if [ "$checked" -eq 0 ] && [ -s "$tmp/checked.rest" ] && cmp -s "$tmp/plain.rest" "$tmp/checked.rest"; then
	ok "the same in checked mode (SPANMALLOC_CHECK=1)"
else
	not_ok "the same in checked mode (SPANMALLOC_CHECK=1)"
	diag "exit $checked" "$(diff "$tmp/plain.rest" "$tmp/checked.rest")" "$(cat "$tmp/checked.err")"
fi
exit $((failed != 0))
