#!/bin/sh
# Install what a fresh Debian machine lacks to build, test and benchmark
# spanmalloc.  Installs only missing packages; uses sudo when not root.
# redis, sqlite3, postgresql-15 and Python's regression tests (libpythonX.Y-testsuite, for
# the python3 that Debian installs) are for scripts/ci-long.sh.
set -e
# clang and libclang-rt-dev (libFuzzer's runtime and clang's sanitizer
# runtimes) are for scripts/ci-robust.sh; gcc's sanitizer runtimes come
# with build-essential.  curl and python3-prometheus-client are for the
# endpoint's test, groff-base for the man pages' test.
PKGS="build-essential autoconf automake libtool pkg-config libcmocka-dev zlib1g-dev
      libbenchmark-dev libjemalloc-dev libgoogle-perftools-dev libmimalloc-dev
      golang-go gnuplot-nox valgrind python3 git perl clang libclang-rt-dev
      redis-server redis-tools sqlite3
      curl python3-prometheus-client groff-base
      postgresql-15"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
updated=""

# install PACKAGE...: install those not installed yet.
install() {
    missing=""
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "bootstrap: installing$missing"
    if [ -z "$updated" ]; then
        $SUDO apt-get update -qq
        updated=yes
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install $PKGS
# The test package must match Debian's python3 (3.11 on bookworm).
pyver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
install "libpython$pyver-testsuite"
