#!/usr/bin/env bash
# build.sh: build the libFuzzer harnesses tests/fuzz/fuzz_*.c with clang
# (-fsanitize=fuzzer,address,undefined) into build/fuzz/, then replay each seed corpus once
# (a quick regression check: every seed, past crashers included, must pass).
# Usage: tests/fuzz/build.sh [--no-replay]      (called by `make fuzz`)
# Env: FUZZ_BUILD (default build/fuzz).
# The libraries are built by the top-level Makefile in $FUZZ_BUILD/obj with
# -fsanitize=fuzzer-no-link, so that libFuzzer sees the coverage of the code under test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT="${FUZZ_BUILD:-build/fuzz}"
CLANG=clang
command -v "$CLANG" >/dev/null || { echo "fuzz: clang not found (scripts/deps.sh fuzz)" >&2; exit 2; }
UB="-fno-sanitize-recover=undefined"
OPT="-O1 -g -fno-omit-frame-pointer"
PKGS="libmicrohttpd jansson sqlite3 openblas lapacke zlib"
WARN="-std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -D_GNU_SOURCE"

make --no-print-directory -s BUILD="$OUT/obj" CC="$CLANG" OPT="$OPT" \
  SAN="-fsanitize=fuzzer-no-link,address,undefined $UB" \
  "$OUT/obj/libtdserver.a" "$OUT/obj/libtdcore.a"

# shellcheck disable=SC2046
for src in tests/fuzz/fuzz_*.c; do
  name="$(basename "$src" .c)"
  "$CLANG" $OPT $WARN -pthread -fsanitize=fuzzer,address,undefined $UB \
    -Icore -DTD_FUZZ_ROOT="\"$ROOT\"" $(pkg-config --cflags $PKGS) \
    -o "$OUT/$name" "$src" "$OUT/obj/libtdserver.a" "$OUT/obj/libtdcore.a" \
    $(pkg-config --libs $PKGS) -llbfgs -lm -pthread
  echo "fuzz: built $OUT/$name"
done

[ "${1:-}" = "--no-replay" ] && exit 0
# Replay the committed seeds (no mutation): fails on any crash, leak or failed check.
for src in tests/fuzz/fuzz_*.c; do
  name="$(basename "$src" .c)"
  corpus="tests/fuzz/corpus/${name#fuzz_}"
  [ -d "$corpus" ] || continue
  if ! "$OUT/$name" -runs=0 -artifact_prefix="$OUT/" "$corpus" >"$OUT/$name.replay.log" 2>&1; then
    echo "fuzz: $name FAILED on its seed corpus (log: $OUT/$name.replay.log)" >&2
    tail -30 "$OUT/$name.replay.log" >&2
    exit 1
  fi
  echo "fuzz: $name replayed $(find "$corpus" -type f | wc -l) seeds ok"
done
