#!/bin/sh
# zlib is opened when a profile is first written, not at start-up: the
# shared library does not need libz.so.1, a program that writes no profile
# does not map it (its text and tables cost about 84 KiB of resident
# memory), and a program that writes one gets a zlib-compressed file.
#
# Environment (set by make check): SPANMALLOC_LIB.

set -u

planned=5
here=$(cd "$(dirname "$0")" && pwd)
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_PROFILE SPANMALLOC_PROFILE_SIGNAL SPANMALLOC_PROFILE_INTERVAL \
	SPANMALLOC_PROFILE_GROWTH SPANMALLOC_HTTP
. "$here/tap.sh"

echo "1..$planned"

need_lib

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-zlib.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

check "the shared library does not need libz" \
	eval '! readelf -d "$lib" | grep -q "NEEDED.*libz"'

# cat links no libz of its own.
LD_PRELOAD=$lib cat /proc/self/maps >"$tmp/maps" 2>"$tmp/err"
check "a program that writes no profile runs with spanmalloc and maps no libz" \
	eval 'grep -q libspanmalloc "$tmp/maps" && ! grep -q "libz\.so" "$tmp/maps"'

# The same program writing a profile at exit, every allocation sampled.
SPANMALLOC_PROFILE=$tmp/p SPANMALLOC_PROFILE_RATE=1 LD_PRELOAD=$lib \
	cat /proc/self/maps >"$tmp/maps2" 2>"$tmp/err2"
set -- "$tmp"/p.*.heap.pb.gz
prof=$1
check "with SPANMALLOC_PROFILE set, the profile is written at exit" test -s "$prof"
[ -s "$prof" ] || diag "$(cat "$tmp/err2")"

check "... and gunzips to a protobuf that names the program's allocations" \
	python3 -c '
import gzip, sys
data = gzip.open(sys.argv[1]).read()
sys.exit(0 if len(data) > 100 and b"alloc_space" in data else 1)' "$prof"

# zlib writes 3 (Unix) in the header's OS byte; the stored fallback 255.
check "... compressed by zlib, not stored" \
	python3 -c '
import sys
b = open(sys.argv[1], "rb").read()
sys.exit(0 if b[:2] == b"\x1f\x8b" and b[9] == 3 else 1)' "$prof"

exit $((failed != 0))
