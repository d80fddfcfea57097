#!/bin/sh
# check_sizeclasses_generated.sh - src/sizeclasses.h must be exactly what
# src/mksizeclasses.c prints.
#
# Builds the generator with ${CC:-cc} in a temporary directory, runs it (it
# exits non-zero if its own checks fail) and compares its output with the
# checked-in header.  The source tree is $srcdir (set by the automake test
# harness), else the repository root two levels above this script.
# Output is TAP; exit status 0 on pass, 1 on failure.

if [ -z "${srcdir:-}" ]; then
	srcdir=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
fi
cc=${CC:-cc}
gen=$srcdir/src/mksizeclasses.c
header=$srcdir/src/sizeclasses.h
name="src/sizeclasses.h matches the output of src/mksizeclasses.c"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sizeclasses.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

echo "1..1"

not_ok() {
	echo "not ok 1 - $name"
	echo "# $1"
	if [ -s "$tmp/log" ]; then
		sed 's/^/#   /' "$tmp/log"
	fi
	exit 1
}

[ -r "$gen" ] || not_ok "cannot read $gen"
[ -r "$header" ] || not_ok "cannot read $header"
# $cc may carry flags (CC="gcc -m64"), so it is split on purpose.
# shellcheck disable=SC2086
$cc -O2 -o "$tmp/mksizeclasses" "$gen" >"$tmp/log" 2>&1 ||
	not_ok "$cc failed to build $gen"
"$tmp/mksizeclasses" >"$tmp/sizeclasses.h" 2>"$tmp/log" ||
	not_ok "mksizeclasses failed its own checks"
diff -u "$header" "$tmp/sizeclasses.h" >"$tmp/log" 2>&1 ||
	not_ok "out of date; regenerate with: $cc -O2 -o mksizeclasses src/mksizeclasses.c && ./mksizeclasses > src/sizeclasses.h"

echo "ok 1 - $name"
exit 0
