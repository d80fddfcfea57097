#!/bin/sh
# The robustness parts of CI that do not belong in 'make check' (they need
# instrumented builds of the allocator and run for a fixed budget):
#
#   ubsan        the unit tests, test_api, test_threads, test_badptr and
#                test_stress over the allocator built with
#                -fsanitize=undefined -fno-sanitize-recover=all
#   tsan-stress  test_stress over the allocator built with ThreadSanitizer
#                (entry points renamed, tests/sanitize/sm_prefix.h)
#   fuzz         the libFuzzer target for FUZZ_SECONDS (default 90) from
#                the checked-in seed corpus
#   debug        the allocator configured with --enable-debug (-O0,
#                SM_DEBUG_ASSERT on, sm_mheap_check as every process ends)
#                in _build/debug: the unit tests but the fault walk, the
#                API, thread, bad-pointer and checked-mode tests, and
#                test_stress for DEBUG_STRESS_OPS operations
#
# The fault-injection walk (tests/unit/test_os_faults) is part of
# 'make check'.  doc/testing.md says what each part proves.
#
# Prints one line "PASS: part" or "FAIL: part" per part (with the log's tail
# after a failure), then "N passed, N failed"; exits non-zero on any
# failure.  A part whose toolchain is missing fails: scripts/bootstrap.sh
# installs it.  Logs go to _build/robust/.
#
# Environment: FUZZ_SECONDS (fuzzing budget), TSAN_STRESS_OPS (default
# 400000), UBSAN_STRESS_OPS (default 1000000), DEBUG_STRESS_OPS (default
# 500000).
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
sh scripts/bootstrap.sh || exit 2
FUZZ_SECONDS=${FUZZ_SECONDS:-90}
TSAN_STRESS_OPS=${TSAN_STRESS_OPS:-400000}
UBSAN_STRESS_OPS=${UBSAN_STRESS_OPS:-1000000}
DEBUG_STRESS_OPS=${DEBUG_STRESS_OPS:-500000}
pass=0
fail=0
now() { date +%s; }

report() {   # report part status seconds logfile [detail]
    if [ "$2" -eq 0 ]; then
        echo "PASS: $1 (${3}s)${5:+ $5}"
        pass=$((pass + 1))
    else
        echo "FAIL: $1 (${3}s)${5:+ $5}"
        [ -f "$4" ] && tail -40 "$4" | sed 's/^/    /'
        fail=$((fail + 1))
    fi
}

t0=$(now)
if ! sh scripts/build.sh >/dev/null 2>&1; then
    echo "FAIL: build"
    echo "0 passed, 1 failed"
    exit 1
fi
cd _build || exit 2
mkdir -p robust
log=robust/build.log
make -j2 robust-programs >$log 2>&1
rc=$?
report build $rc $(($(now) - t0)) $log

# Run one cmocka test program with TAP output; fails on a non-zero exit or
# any "not ok".
run_tap() {   # run_tap logfile program
    out=$1
    shift
    CMOCKA_MESSAGE_OUTPUT=TAP srcdir="$top" builddir="$top/_build" "$@" >>"$out" 2>&1
    r=$?
    if [ $r -ne 0 ] || grep -q '^not ok' "$out"; then
        echo "    $* exited $r" >>"$out"
        return 1
    fi
    return 0
}

# ---- UBSan ----
t0=$(now)
log=robust/ubsan.log
: >$log
rc=0
if [ ! -x tests/sanitize/test_stress_ubsan ]; then
    echo "the UBSan programs were not built (configure found no -fsanitize=undefined)" >>$log
    rc=1
else
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    for t in sizeclasses mheap mcentral mcache mprof profproto os_faults api threads badptr; do
        echo "== test_${t}_ubsan" >>$log
        run_tap $log tests/sanitize/test_${t}_ubsan || rc=1
    done
    echo "== test_stress_ubsan" >>$log
    STRESS_OPS=$UBSAN_STRESS_OPS run_tap $log tests/sanitize/test_stress_ubsan || rc=1
    unset UBSAN_OPTIONS
fi
grep -q 'runtime error' $log && rc=1
n=$(grep -c '^ok' $log)
report ubsan $rc $(($(now) - t0)) $log "$n test cases"

# ---- TSan ----
t0=$(now)
log=robust/tsan.log
: >$log
rc=0
if [ ! -x tests/sanitize/test_stress_tsan ]; then
    echo "the TSan program was not built (configure found no -fsanitize=thread)" >>$log
    rc=1
else
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
    # Three quarters at the default sampling rate; a quarter sampling
    # every 4 KiB, so the profiler marks and unmarks spans whose other
    # objects are being freed by other threads; then eight short runs,
    # each a new start with eight threads making their first allocations
    # at once (the allocator is not used before them in this build).
    echo "== test_stress_tsan" >>$log
    STRESS_OPS=$((TSAN_STRESS_OPS * 3 / 4)) run_tap $log tests/sanitize/test_stress_tsan || rc=1
    echo "== test_stress_tsan, SPANMALLOC_PROFILE_RATE=4096" >>$log
    SPANMALLOC_PROFILE_RATE=4096 STRESS_SEED=2 STRESS_OPS=$((TSAN_STRESS_OPS / 4)) \
        run_tap $log tests/sanitize/test_stress_tsan || rc=1
    for seed in 3 4 5 6 7 8 9 10; do
        echo "== test_stress_tsan, seed $seed" >>$log
        STRESS_SEED=$seed STRESS_OPS=10000 run_tap $log tests/sanitize/test_stress_tsan || rc=1
    done
    unset TSAN_OPTIONS
    grep -q 'WARNING: ThreadSanitizer' $log && rc=1
fi
ops=$(sed -n 's/^# stress: \([0-9]*\) operations.*/\1/p' $log | awk '{n += $1} END {print n + 0}')
report tsan-stress $rc $(($(now) - t0)) $log "$ops operations"

# ---- fuzzing ----
t0=$(now)
log=robust/fuzz.log
: >$log
rc=0
detail=
if [ ! -x tests/fuzz/fuzz_malloc ]; then
    echo "the fuzz target was not built (configure found no clang with libFuzzer)" >>$log
    rc=1
else
    work=$(mktemp -d)
    mkdir -p robust/fuzz-artifacts
    # New inputs go to a scratch directory; the checked-in seeds stay as
    # they are.  No leak detection: the target's objects come from the
    # allocator under test, which LeakSanitizer does not see, and what it
    # does see (libFuzzer's, libc's) is not ours.
    tests/fuzz/fuzz_malloc -max_total_time="$FUZZ_SECONDS" -timeout=60 -rss_limit_mb=4096 \
        -detect_leaks=0 -print_final_stats=1 -artifact_prefix=robust/fuzz-artifacts/ \
        "$work" "$top/tests/fuzz/corpus" >>$log 2>&1 || rc=1
    rm -rf "$work"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' $log)
    [ -n "$runs" ] || rc=1
    detail="$runs executions in ${FUZZ_SECONDS}s"
    if [ $rc -ne 0 ]; then
        detail="$detail; inputs in _build/robust/fuzz-artifacts/"
    fi
fi
report fuzz $rc $(($(now) - t0)) $log "$detail"

# ---- debug build ----
# A second build tree beside the release one.  test_init checks that the
# heap check at exit is on in this build (and says so in its log).
t0=$(now)
log=robust/debug.log
: >$log
rc=0
detail=
debug_tests="tests/unit/test_sizeclasses tests/unit/test_mheap tests/unit/test_mcentral
  tests/unit/test_mcache tests/unit/test_large tests/unit/test_malloc tests/unit/test_mspan
  tests/unit/test_check tests/unit/test_options tests/unit/test_init tests/unit/test_pagemap
  tests/unit/test_mprof tests/integration/test_api tests/integration/test_threads
  tests/integration/test_badptr tests/integration/test_check tests/stress/test_stress"
mkdir -p debug
if ! (cd debug && { [ -f Makefile ] || "$top/configure" -q --enable-debug; } &&
      make -j2 >/dev/null) >>$log 2>&1; then
    echo "the debug build failed" >>$log
    rc=1
else
    (cd debug && STRESS_OPS=$DEBUG_STRESS_OPS make -j2 check TESTS="$(echo $debug_tests)") >>$log 2>&1 || rc=1
    grep -q '^# debug build: yes' debug/tests/unit/test_init.log 2>/dev/null || {
        echo "test_init did not run in a debug build" >>$log
        rc=1
    }
    [ -f debug/test-suite.log ] && cat debug/test-suite.log >>$log
    detail="$(sed -n 's/^# PASS: *//p' debug/test-suite.log 2>/dev/null) test cases"
fi
report debug $rc $(($(now) - t0)) $log "$detail"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
