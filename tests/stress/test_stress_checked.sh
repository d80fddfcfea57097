#!/bin/sh
# test_stress in checked mode (SPANMALLOC_CHECK=1): eight threads allocating,
# resizing, handing off and freeing with every byte checked, and checked
# mode watching each malloc and free.  The program uses the allocator
# correctly, so any report is a false one (it aborts the run), and the
# stress test's own checks still see every object's content intact.
# test_stress itself makes sure checked mode is on.  STRESS_OPS defaults
# to 1,000,000 here (about 5 s on an idle machine; checked mode takes
# about twice as long per operation as the default).
set -u
bin=${builddir:-.}/tests/stress/test_stress
[ -x "$bin" ] || { echo "Bail out! $bin not built"; exit 1; }
SPANMALLOC_CHECK=1
STRESS_OPS=${STRESS_OPS:-1000000}
export SPANMALLOC_CHECK STRESS_OPS
exec "$bin"
