#!/bin/sh
# Set up a fresh Debian machine, build spanmalloc, and run the demo: an
# unmodified program under LD_PRELOAD.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh scripts/bootstrap.sh
sh scripts/build.sh
lib="$top/_build/src/.libs/libspanmalloc.so"
cc -O2 -o _build/hello doc/examples/hello.c -ldl
echo "== an unmodified program, without and with LD_PRELOAD=$lib"
./_build/hello
LD_PRELOAD="$lib" ./_build/hello
echo
echo "== RSS after a burst is freed: MADV_FREE against MADV_DONTNEED"
cc -O2 -Iinclude -o _build/rss_demo doc/examples/rss_demo.c -ldl
SPANMALLOC_RELEASE=free LD_PRELOAD="$lib" ./_build/rss_demo
echo
SPANMALLOC_RELEASE=dontneed LD_PRELOAD="$lib" ./_build/rss_demo
