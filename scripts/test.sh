#!/bin/sh
# Build spanmalloc and run the whole test suite; print the totals last as
# one line "N passed, N failed" and exit non-zero on any failure.
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
sh scripts/bootstrap.sh || exit 2
sh scripts/build.sh || { echo "0 passed, 1 failed"; exit 1; }
cd _build || exit 2
make -j"$(nproc)" check >check.out 2>&1
rc=$?
grep -E '^(PASS|FAIL|ERROR|XPASS|SKIP):' check.out | grep -v '^PASS' | head -50
for f in $(grep -lE '^(FAIL|ERROR)' $(find tests -name '*.log' 2>/dev/null) 2>/dev/null); do
    echo "---- $f"; tail -30 "$f"
done
log=test-suite.log
if [ ! -f "$log" ]; then
    tail -30 check.out
    echo "0 passed, 1 failed"
    exit 1
fi
num() { sed -n "s/^# $1: *\([0-9]*\).*/\1/p" "$log" | head -1; }
pass=$(num PASS); fail=$(num FAIL); err=$(num ERROR); xpass=$(num XPASS)
failed=$(( ${fail:-0} + ${err:-0} + ${xpass:-0} ))
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
pass=${pass:-0}
# The suites outside make check (each prints PASS:/FAIL: lines and ends with
# its own "N passed, N failed"): fuzzing, sanitizers and fault walks, then
# real programs at length.
cd "$top" || exit 2
for extra in scripts/ci-robust.sh scripts/ci-long.sh; do
    [ -f "$extra" ] || continue
    echo "==== $extra"
    "./$extra" >"_build/$(basename "$extra" .sh).out" 2>&1
    xrc=$?
    grep -E '^(PASS|FAIL|  )' "_build/$(basename "$extra" .sh).out"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "_build/$(basename "$extra" .sh).out" | tail -1)
    if [ -z "$line" ]; then
        tail -20 "_build/$(basename "$extra" .sh).out"
        failed=$((failed + 1))
        continue
    fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed}
    pass=$((pass + p)); failed=$((failed + f))
    [ "$xrc" -ne 0 ] && [ "$f" -eq 0 ] && failed=$((failed + 1))
done
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
