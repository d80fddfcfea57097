#!/bin/sh
# Install what a fresh Debian machine lacks to build, test and benchmark
# spanmalloc.  Installs only missing packages; uses sudo when not root.
set -e
# clang and libclang-rt-dev (libFuzzer's runtime and clang's sanitizer
# runtimes) are for scripts/ci-robust.sh; gcc's sanitizer runtimes come
# with build-essential.
PKGS="build-essential autoconf automake libtool pkg-config libcmocka-dev zlib1g-dev
      libbenchmark-dev libjemalloc-dev libgoogle-perftools-dev libmimalloc-dev
      golang-go gnuplot-nox valgrind python3 git perl clang libclang-rt-dev"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "bootstrap: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
