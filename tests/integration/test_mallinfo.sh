#!/bin/sh
# mallinfo2, mallinfo, malloc_stats and malloc_info under LD_PRELOAD answer
# from spanmalloc's stats, not glibc's empty arena: a program holding
# 2000 x 5000 bytes and 1 MiB sees uordblks == spanmalloc's heap_alloc
# (about 11.2 MB: 5376-byte class objects and 128 pages), arena == heap_sys,
# malloc_stats prints glibc's lines with those numbers, and malloc_info's
# XML parses (python3's xml.etree) with its totals adding up to heap_alloc.
#
# Environment (set by make check): SPANMALLOC_LIB, CC, srcdir.

set -u

planned=6
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_PROFILE SPANMALLOC_PROFILE_SIGNAL
. "$here/tap.sh"

echo "1..$planned"

need_lib

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-mallinfo.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

${CC:-cc} -O2 -I"$src/include" -o "$tmp/app" "$src/tests/integration/mallinfo_app.c" 2>"$tmp/cc.err" ||
	{ diag "$(cat "$tmp/cc.err")"; echo "Bail out! cannot build mallinfo_app"; exit 1; }

LD_PRELOAD=$lib SPANMALLOC_SCAVENGE=off "$tmp/app" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ -n "${SM_TEST_VERBOSE:-}" ] && diag "$(cat "$tmp/out" "$tmp/err")"
val() { awk -v k="$1" '$1 == k { print $2; exit }' "$tmp/out"; }
alloc=$(val sm_heap_alloc)
sys=$(val sm_heap_sys)
diag "exit $rc; heap_alloc $alloc, heap_sys $sys; mallinfo2: arena $(val arena) uordblks $(val uordblks) fordblks $(val fordblks) fsmblks $(val fsmblks) keepcost $(val keepcost)"

check "mallinfo2: uordblks = heap_alloc (over 11 MB held), arena = heap_sys, fordblks = the rest" \
	eval '[ $rc -eq 0 ] && [ -n "$alloc" ] && [ "$alloc" -gt 11000000 ] &&
		[ "$(val uordblks)" = "$alloc" ] && [ "$(val arena)" = "$sys" ] &&
		[ "$(val fordblks)" -eq $((sys - alloc)) ]'
check "mallinfo: the same numbers in ints" \
	eval '[ "$(val mallinfo_uordblks)" = "$alloc" ] && [ "$(val mallinfo_arena)" = "$sys" ]'
check "malloc_stats: glibc's lines on stderr, with heap_sys and heap_alloc" \
	eval 'grep -q "^Arena 0:" "$tmp/err" &&
		[ "$(awk "/^system bytes/ { print \$4; exit }" "$tmp/err")" = "$sys" ] &&
		[ "$(awk "/^in use bytes/ { print \$5; exit }" "$tmp/err")" = "$alloc" ]'
check "malloc_info(1, fp) fails with EINVAL, as glibc's" \
	eval 'grep -qx "malloc_info_option -1 EINVAL" "$tmp/out"'
sed '1,/^xml$/d' "$tmp/out" >"$tmp/info.xml"
if command -v python3 >/dev/null 2>&1; then
	check "malloc_info: the XML parses, <malloc version=\"1\">, its totals add up to heap_alloc" \
		python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "malloc" and root.get("version") == "1"
heap = root.find("heap")
sizes = heap.find("sizes")
assert any(s.get("count") == "2000" and int(s.get("total")) >= 2000 * 5000 for s in sizes.findall("size"))
total = sum(int(t.get("size")) for t in root.findall("total"))
assert total == int(sys.argv[2]), (total, sys.argv[2])
assert int(root.find("system[@type=\"current\"]").get("size")) > 0
' "$tmp/info.xml" "$alloc"
else
	skip 1 "no python3"
fi
# Without spanmalloc the same program gets glibc's answers: not ours.
"$tmp/app" >"$tmp/out" 2>"$tmp/err"
check "without LD_PRELOAD the program runs on glibc's (no sm_ symbols)" \
	eval '[ -z "$(val sm_heap_alloc)" ] && [ "$(val uordblks)" -gt 0 ]'

[ $count -eq $planned ] || echo "# planned $planned checks, ran $count"
[ $failed -eq 0 ] && [ $count -eq $planned ]
