#!/usr/bin/env bash
# run_unit.sh: run every cmocka test binary in $BUILD/tests (default build) from the repo root,
# print one line per binary and a final "N passed, M failed"; exit nonzero if any failed.
# Usage: tests/run_unit.sh [BUILD_DIR]
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-build}"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
cd "$ROOT" || exit 2
export TDLAB_MIGRATIONS="${TDLAB_MIGRATIONS:-$ROOT/migrations}"
pass=0; fail=0; failed=()
shopt -s nullglob
bins=()
for t in "$BUILD"/tests/test_*; do
  case "$t" in *.o|*.d) continue ;; esac
  [ -x "$t" ] && [ -f "$t" ] && bins+=("$t")
done
if [ ${#bins[@]} -eq 0 ]; then
  echo "run_unit: no test binaries in $BUILD/tests (run make first)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT
for t in "${bins[@]}"; do
  name="$(basename "$t")"
  start=$(date +%s.%N)
  if timeout 300 "$t" >"$log_dir/$name.log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  if [ "$rc" -eq 0 ]; then
    pass=$((pass + 1)); printf 'PASS %-28s %6ss\n' "$name" "$secs"
  else
    fail=$((fail + 1)); failed+=("$name")
    printf 'FAIL %-28s %6ss (exit %d)\n' "$name" "$secs" "$rc"
    grep -E 'FAILED|ERROR|error|Failure|Assert' "$log_dir/$name.log" | head -20 | sed 's/^/     /'
  fi
done
[ $fail -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
