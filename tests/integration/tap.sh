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
