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
echo "== without spanmalloc"
./_build/hello
echo "== LD_PRELOAD=$lib"
LD_PRELOAD="$lib" ./_build/hello
