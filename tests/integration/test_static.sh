#!/bin/sh
# Static linking: `pkg-config --static --libs spanmalloc` lists what
# libspanmalloc.a needs (zlib for the profiles, pthread; not libm, whose
# ln and exp the profiler computes itself, see src/fmath.h), and a fully
# static program built with those flags
# (`cc -static app.c -lspanmalloc -lpthread -lz`) runs: allocates,
# frees and writes a heap profile, also when every allocation is sampled,
# so that the C library's own mallocs before its start-up is done (in
# _dl_non_dynamic_init) are sampled too.  That once aborted in libgcc's
# unwinder.  go tool pprof, when present, names main in the profile.
#
# Environment (set by make check): SPANMALLOC_LIB (the shared library; the
# static one and the build's spanmalloc.pc are found from it), CC, srcdir.

set -u

planned=6
here=$(cd "$(dirname "$0")" && pwd)
src=${srcdir:-$here/../..}
LC_ALL=C
export LC_ALL
unset LD_PRELOAD SPANMALLOC_PROFILE SPANMALLOC_PROFILE_SIGNAL SPANMALLOC_PROFILE_RATE
. "$here/tap.sh"

echo "1..$planned"

need_lib
pcdir=$(cd "$libdir/../.." && pwd)
if [ ! -f "$libdir/libspanmalloc.a" ] || [ ! -f "$pcdir/spanmalloc.pc" ]; then
	echo "Bail out! no libspanmalloc.a in $libdir or spanmalloc.pc in $pcdir"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-static.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

libs=$(PKG_CONFIG_PATH=$pcdir pkg-config --static --libs-only-l spanmalloc)
diag "pkg-config --static --libs-only-l spanmalloc: $libs"
check "pkg-config --static lists -lz and not -lm" \
	eval 'printf " %s \n" "$libs" | grep -q " -lz " && ! printf " %s \n" "$libs" | grep -q " -lm "'
# libm mapped into every process costs about half a MiB of RSS (its IFUNC
# resolvers and hash tables are touched at start-up).
check "the shared library does not need libm" \
	eval '! readelf -d "$SPANMALLOC_LIB" | grep NEEDED | grep -q "libm\."'

# The same flags a user would take from pkg-config, with the build's
# directories in place of the installed ones.
# shellcheck disable=SC2086
if ${CC:-cc} -static -O2 -g -I"$src/include" -o "$tmp/app" "$src/tests/integration/static_app.c" \
	-L"$libdir" $libs -pthread 2>"$tmp/cc.err" &&
	! readelf -l "$tmp/app" | grep -q INTERP; then
	ok "a fully static program links with the pkg-config flags"
else
	not_ok "a fully static program links with the pkg-config flags"
	diag "$(cat "$tmp/cc.err")"
fi

limit=
command -v timeout >/dev/null 2>&1 && limit="timeout 60"
run() {
	$limit env "$@" "$tmp/app" "$tmp/p.pb.gz" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ $rc -eq 0 ] && grep -q "^static_app: ok" "$tmp/out" && [ -s "$tmp/p.pb.gz" ] ||
		{ diag "exit $rc" "$(cat "$tmp/err")"; return 1; }
}
check "it runs: malloc, free, a profile written, exit 0" run SPANMALLOC_PROFILE_RATE=524288
rm -f "$tmp/p.pb.gz"
check "... with every allocation sampled from the first" run SPANMALLOC_PROFILE_RATE=1

if command -v go >/dev/null 2>&1; then
	top=$(cd "$tmp" && HOME=$tmp GOCACHE=$tmp/gocache GOFLAGS= GOPROXY=off GOTOOLCHAIN=local \
		GOTELEMETRY=off PPROF_TMPDIR=$tmp go tool pprof -top "$tmp/p.pb.gz" 2>&1)
	if printf "%s\n" "$top" | grep -q " main$"; then
		ok "go tool pprof names main in the static program's profile"
	else
		not_ok "go tool pprof names main in the static program's profile"
		diag "$top"
	fi
else
	skip 1 "go is not installed"
fi

[ $count -eq $planned ] || echo "# planned $planned checks, ran $count"
[ $failed -eq 0 ] && [ $count -eq $planned ]
