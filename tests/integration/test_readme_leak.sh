#!/bin/sh
# README.md's "Finding the leak": the lines between the markers
# "<!-- finding-the-leak" and "<!-- end finding-the-leak -->" are taken from
# the README itself and run as they are, with two changes only: port 6060
# becomes a free port (make check runs beside other programs), and
# `spanmalloc` is the build tree's (PATH, SPANMALLOC_LIB).  Then their
# output must say what the README says it does: pprof's -base and
# `spanmalloc diff` name open_session first, top prints its lines, /metrics
# and the POST answer.  About 25 seconds.
# Environment (set by make check): SPANMALLOC_LIB, srcdir, builddir.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
build=${builddir:-$(pwd)}
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_HTTP
. "$here/tap.sh"
echo "1..6"
[ -n "${SPANMALLOC_LIB:-}" ] && [ -f "$SPANMALLOC_LIB" ] || bail_out "SPANMALLOC_LIB names no library"
for t in go curl cc /usr/bin/python3; do
	command -v "$t" >/dev/null 2>&1 || bail_out "$t is not installed (scripts/bootstrap.sh)"
done
export SPANMALLOC_LIB
PATH=$build/tools:$PATH
export PATH

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-readme.XXXXXX") || exit 1
trap '[ -n "${SM_TEST_KEEP:-}" ] && echo "# files kept in $tmp" || rm -rf "$tmp"' EXIT
PPROF_TMPDIR=$tmp/pprof
export PPROF_TMPDIR

sed -n '/^<!-- finding-the-leak/,/^<!-- end finding-the-leak -->/p' "$src/README.md" |
	sed -e '1,2d' -e '$d' | sed '$d' >"$tmp/readme.sh"
diag "from README.md:" "$(cat "$tmp/readme.sh")"
check "the README section has its ten commands" [ "$(wc -l <"$tmp/readme.sh")" -eq 10 ]

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed "s/6060/$port/g" "$tmp/readme.sh" >"$tmp/run.sh"
ln -s "$src/tests" "$tmp/tests"
(cd "$tmp" && timeout 120 sh -e ./run.sh) >"$tmp/out" 2>&1
rc=$?
diag "$(cat "$tmp/out")"
check "the commands run through (exit $rc)" [ $rc -eq 0 ]
check "go tool pprof -top -base names open_session first" \
	sh -c "grep -m1 -A1 'flat%' '$tmp/out' | tail -1 | grep -q 'open_session\$'"
check "spanmalloc top prints a header and three lines" \
	[ "$(grep -c '^[0-9][0-9]:[0-9][0-9]:[0-9][0-9] ' "$tmp/out")" -eq 3 -a "$(grep -c 'rss_MiB' "$tmp/out")" -eq 1 ]
check "spanmalloc diff names open_session first too" \
	sh -c "[ \$(grep -A1 'flat%' '$tmp/out' | grep -c 'open_session\$') -eq 2 ]"
check "/metrics and the POST answer" \
	sh -c "grep -Eq '^go_memstats_heap_inuse_bytes [0-9]+\$' '$tmp/out' && grep -Eqx '[0-9]+' '$tmp/out'"
exit $((failed != 0))
