#!/usr/bin/env bash
# run.sh: run one libFuzzer harness (built by build.sh) with its settings.
# Usage: tests/fuzz/run.sh NAME [SECONDS] [extra libFuzzer flags...]
#   NAME: jobspec | sweep | query | idx | safetensors      SECONDS: default 600
# The working corpus grows in build/fuzz/corpus/NAME (seeded from tests/fuzz/corpus/NAME, which
# stays small); crashes, leaks and timeouts land in build/fuzz/artifacts/NAME/. At the end,
# libFuzzer's final stats (stat::number_of_executed_units ...) are printed; the full log is
# build/fuzz/NAME.log.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT="${FUZZ_BUILD:-build/fuzz}"
NAME="${1:?usage: tests/fuzz/run.sh jobspec|sweep|query|idx|safetensors [SECONDS] [flags...]}"
SECS="${2:-600}"
shift $(($# >= 2 ? 2 : 1))
case "$NAME" in
  jobspec|sweep) FLAGS=(-max_len=4096 -dict=tests/fuzz/json.dict) ;;
  query)         FLAGS=(-max_len=4096 -dict=tests/fuzz/query.dict) ;;
  idx)           FLAGS=(-max_len=65536) ;;
  safetensors)   FLAGS=(-max_len=16384 -dict=tests/fuzz/safetensors.dict) ;;
  *) echo "run.sh: unknown harness '$NAME'" >&2; exit 2 ;;
esac
BIN="$OUT/fuzz_$NAME"
[ -x "$BIN" ] || { echo "run.sh: $BIN missing; run make fuzz first" >&2; exit 2; }
mkdir -p "$OUT/corpus/$NAME" "$OUT/artifacts/$NAME"
set +e
"$BIN" "${FLAGS[@]}" -max_total_time="$SECS" -timeout=20 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$NAME/" "$@" \
  "$OUT/corpus/$NAME" "tests/fuzz/corpus/$NAME" >"$OUT/$NAME.log" 2>&1
rc=$?
set -e
grep -E '^(stat::|Done|INFO: seed|==[0-9]+==ERROR|SUMMARY)' "$OUT/$NAME.log" || true
ls "$OUT/artifacts/$NAME" 2>/dev/null | sed 's/^/artifact: /'
exit $rc
