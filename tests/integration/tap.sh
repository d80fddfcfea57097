# tap.sh - TAP output for the integration test scripts, sourced by them:
#   . "$here/tap.sh"
# Each script prints its own plan ("1..N"), calls these for its checks, and
# exits with "exit $((failed != 0))" or bail_out.

count=0
failed=0

ok() {
	count=$((count + 1))
	echo "ok $count - $1"
}

not_ok() {
	count=$((count + 1))
	failed=$((failed + 1))
	echo "not ok $count - $1"
}

# check DESCRIPTION COMMAND...: ok if COMMAND succeeds.
check() {
	what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}

# skip N REASON: mark the next N checks skipped.
skip() {
	n=$1
	while [ "$n" -gt 0 ]; do
		count=$((count + 1))
		echo "ok $count # SKIP $2"
		n=$((n - 1))
	done
}

diag() {
	printf '%s\n' "$@" | sed 's/^/# /'
}

bail_out() {
	echo "Bail out! $1"
	exit 1
}

# need_lib: SPANMALLOC_LIB (set by make check) names the shared library;
# sets $libdir and $lib to absolute paths, or bails out.
need_lib() {
	if [ -z "${SPANMALLOC_LIB:-}" ] || [ ! -f "$SPANMALLOC_LIB" ]; then
		bail_out "SPANMALLOC_LIB (${SPANMALLOC_LIB:-unset}) names no shared library"
	fi
	libdir=$(cd "$(dirname "$SPANMALLOC_LIB")" && pwd)
	lib=$libdir/$(basename "$SPANMALLOC_LIB")
}

# pprof ARGS...: go tool pprof in a sandbox under $tmp (its own HOME and
# caches, no network, no remote symbols), run from $tmp, output and errors
# on stdout.
pprof() {
	mkdir -p "$tmp/home/pproftmp"
	(
		HOME=$tmp/home GOCACHE=$tmp/home/gocache GOPATH=$tmp/home/gopath \
		PPROF_TMPDIR=$tmp/home/pproftmp PPROF_BINARY_PATH=$tmp/home/binaries \
		GOFLAGS= GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off
		export HOME GOCACHE GOPATH PPROF_TMPDIR PPROF_BINARY_PATH GOFLAGS GOPROXY \
			GOTOOLCHAIN GOTELEMETRY
		cd "$tmp" && go tool pprof ${PPROF_FLAGS:-} "$@" 2>&1
	)
}
