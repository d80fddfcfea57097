#!/bin/sh
# The man pages, doc/spanmalloc.1 and doc/spanmalloc.3, render with groff
# (man's own formatter) without a single warning, and say what they must:
# every sm_* function of spanmalloc.h is in spanmalloc(3), every
# SPANMALLOC_* variable of options.c's table is in spanmalloc(3), and the
# command's subcommands are in spanmalloc(1).  Environment: srcdir.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
. "$here/tap.sh"
echo "1..5"
command -v groff >/dev/null 2>&1 || bail_out "groff is not installed (Debian: groff-base)"
for page in 1 3; do
	f=$src/doc/spanmalloc.$page
	warn=$(groff -man -Tutf8 -ww -z "$f" 2>&1)
	check "spanmalloc.$page renders without warnings${warn:+: $warn}" [ -z "$warn" ]
done
missing=
for fn in $(sed -n 's/^SM_API [^(]*[ *]\(sm_[a-z_]*\)(.*/\1/p' "$src/include/spanmalloc.h"); do
	grep -q "$fn" "$src/doc/spanmalloc.3" || missing="$missing $fn"
done
check "spanmalloc.3 documents every sm_* function${missing:+ (missing:$missing)}" [ -z "$missing" ]
missing=
# The variables: the README's environment table, which doc/mkoptionsdoc
# writes from options.c's table (test_options checks that they agree).
vars=$(sed -n 's/^| `\(SPANMALLOC_[A-Z_]*\)`.*/\1/p' "$src/README.md")
[ -n "$vars" ] || bail_out "no SPANMALLOC_ variable found in README.md's table"
for v in $vars; do
	grep -q "$v" "$src/doc/spanmalloc.3" || missing="$missing $v"
done
check "spanmalloc.3 documents every SPANMALLOC_* variable${missing:+ (missing:$missing)}" [ -z "$missing" ]
missing=
for sub in run top diff; do
	grep -q "^\.B spanmalloc $sub" "$src/doc/spanmalloc.1" || missing="$missing $sub"
done
check "spanmalloc.1 documents run, top and diff${missing:+ (missing:$missing)}" [ -z "$missing" ]
exit $((failed != 0))
