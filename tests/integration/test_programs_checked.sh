#!/bin/sh
# test_programs.sh again in checked mode (SPANMALLOC_CHECK=1): python3,
# sort, gcc, git, perl and a threaded C++ program, preloaded, must behave
# exactly as in their plain runs, so any checked-mode report (a false one:
# it aborts the program) fails a check.  First makes sure the mode is on in
# a preloaded program: there malloc_usable_size is the size asked for.
set -u
here=$(cd "$(dirname "$0")" && pwd)
[ -n "${SPANMALLOC_LIB:-}" ] && [ -f "$SPANMALLOC_LIB" ] || {
	echo "Bail out! SPANMALLOC_LIB does not name the built shared library"
	exit 1
}
SPANMALLOC_CHECK=1
export SPANMALLOC_CHECK
usable=$(LD_PRELOAD=$(readlink -f "$SPANMALLOC_LIB") python3 -c '
import ctypes
c = ctypes.CDLL(None)
c.malloc.restype = ctypes.c_void_p
c.malloc_usable_size.argtypes = [ctypes.c_void_p]
print(c.malloc_usable_size(c.malloc(10)))')
[ "$usable" = 10 ] || {
	echo "Bail out! checked mode is not on under LD_PRELOAD (usable size of malloc(10): $usable)"
	exit 1
}
exec "$here/test_programs.sh"
