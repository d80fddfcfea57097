#!/bin/sh
# Configure and build spanmalloc in _build/ (out of tree).
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
mkdir -p _build
cd _build
[ -f Makefile ] || ../configure -q "$@"
make -j"$(nproc)" >/dev/null
