#!/usr/bin/env bash
# e2e_checkpoints.sh: end-to-end test of checkpoints against the real daemon (called by
# tests/e2e.sh; runs alone too). A few seconds.
#
# Usage: tests/e2e_checkpoints.sh path/to/tdlab
#
# Starts `tdlab serve` on a free port with a temporary database, one worker and
# --max-upload 64K, then checks:
#   - POST /api/v1/checkpoints: 201 + Location with the tensors listed; GET .../{id} and
#     GET .../{id}/file (the same bytes); 404 for an unknown id;
#   - refusals, each a JSON error: 400 naming the problem for a NaN (field = the tensor), a
#     truncated header, a header length beyond the body, a duplicate tensor name, an unknown
#     dtype, an integer dtype, overlapping offsets, an empty body; 415 for a wrong content
#     type; 413 beyond --max-upload;
#   - a job record has "parent": null and "children": [];
#   - `tdlab run --artifacts DIR` writes the artifacts the server stores, byte for byte, and
#     the params.safetensors it wrote uploads as a checkpoint;
#   - when the train kind's schema has params.init_from / params.fork (the trainer): a job
#     naming a checkpoint whose tensors do not fit its model is refused with a 400 naming the
#     tensor; a fork at a step without a checkpoint is refused with a 400 listing the steps
#     that have one; a fork records its parent, and a fork that changes nothing continues
#     bitwise as its parent;
#   - with --blas-threads 1 on both sides, a server job's metrics are bitwise those of
#     `tdlab run --blas-threads 1`.
# Safetensors files are built with printf (8-byte little-endian header length, JSON, data).
# Needs bash, curl, grep, sed, cmp. Prints one line per check and "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init ckpt "$@"

upload() { # upload FILE [content type]
  req POST /api/v1/checkpoints -H "Content-Type: ${2:-application/octet-stream}" --data-binary "@$1"
}
# expect_upload_error NAME STATUS FIELD|- MESSAGE_PART FILE [content type]
expect_upload_error() {
  local name="$1" want="$2" field="$3" part="$4" file="$5"
  upload "$file" "${6:-application/octet-stream}"
  local got_field msg
  got_field=$(jstr field "$TMP/body")
  msg=$(jstr message "$TMP/body")
  if [ "$CODE" = "$want" ] && is_json_error && { [ "$field" = - ] || [ "$got_field" = "$field" ]; } &&
     { [ -z "$part" ] || grep -qF -- "$part" <<<"$msg"; }; then
    ok "refused: $name -> $CODE${got_field:+ field=$got_field}: $msg"
  else
    bad "refused: $name: got $CODE, wanted $want (field $field, '$part'): $(head -c 300 "$TMP/body")"
  fi
}

# mkst OUT HEADER [DATA]: a safetensors file with header length ${#HEADER} (HEADER is ASCII)
# and DATA (printf escapes) after it.
le64() { local n="$1"; printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' $((n & 255)) $((n >> 8 & 255)) $((n >> 16 & 255)) $((n >> 24 & 255)); }
mkst() {
  local out="$1" hdr="$2" data="${3:-}"
  printf "$(le64 ${#hdr})" >"$out"
  printf '%s' "$hdr" >>"$out"
  printf "$data" >>"$out"
}
zeros() { local s=""; for _ in $(seq 1 "$1"); do s="$s\\x00"; done; printf '%s' "$s"; }
NAN64='\x00\x00\x00\x00\x00\x00\xf8\x7f'
t() { printf '"%s":{"dtype":"%s","shape":%s,"data_offsets":[%s,%s]}' "$@"; }

# ---------------------------------------------------------------- start

e2e_start --blas-threads 1 --workers 1 --batch-ms 100 --max-upload 64K
ok "checkpoints: the daemon starts ($BASE, --max-upload 64K)"

# ---------------------------------------------------------------- upload and read

# The model of the specs below: synthetic data d=3, hidden [4], 1 output.
GOOD_HDR="{$(t layers.0.weight F64 '[4,3]' 0 96),$(t layers.0.bias F64 '[4]' 96 128),$(t layers.1.weight F64 '[1,4]' 128 160),$(t layers.1.bias F64 '[1]' 160 168)}"
mkst "$TMP/good.st" "$GOOD_HDR" "$(zeros 168)"
upload "$TMP/good.st"
GOOD=$(jnum id "$TMP/body")
check "POST /api/v1/checkpoints answers 201 + Location with the tensors and their shapes" \
  bash -c "[ '$CODE' = 201 ] && grep -qi '^location: /api/v1/checkpoints/$GOOD' '$TMP/hdr' &&
           grep -q '{\"name\":\"layers.0.weight\",\"dtype\":\"F64\",\"shape\":\[4,3\]}' '$TMP/body' &&
           [ \$(grep -o '\"name\":' '$TMP/body' | wc -l) = 4 ] &&
           grep -q '\"bytes\":$(stat -c %s "$TMP/good.st")' '$TMP/body'"
req GET "/api/v1/checkpoints/$GOOD"
check "GET /api/v1/checkpoints/$GOOD returns the same record" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"id\":$GOOD,' '$TMP/body' && grep -q 'layers.1.bias' '$TMP/body'"
curl -s -o "$TMP/back.st" "$BASE/api/v1/checkpoints/$GOOD/file"
check "GET /api/v1/checkpoints/$GOOD/file returns the uploaded bytes" cmp -s "$TMP/back.st" "$TMP/good.st"
req GET /api/v1/checkpoints/999999
check "GET of an unknown checkpoint is a 404 JSON error" bash -c "[ '$CODE' = 404 ] && grep -q '\"code\":\"not_found\"' '$TMP/body'"
req GET /api/v1/checkpoints/abc
check "GET of a non-numeric checkpoint id is a 404" bash -c "[ '$CODE' = 404 ]"

# ---------------------------------------------------------------- refusals

mkst "$TMP/nan.st" "{$(t w F64 '[2]' 0 16)}" "$(zeros 8)$NAN64"
expect_upload_error "a NaN" 400 w "non-finite value (nan) at flat index 1" "$TMP/nan.st"
TRUNC="${GOOD_HDR:0:50}"
mkst "$TMP/trunc.st" "$TRUNC" ""
expect_upload_error "a truncated header" 400 body "header JSON" "$TMP/trunc.st"
{ printf "$(le64 4096)"; printf '%s' "$GOOD_HDR"; printf "$(zeros 168)"; } >"$TMP/hlen.st"
expect_upload_error "a header length beyond the body" 400 body "header length 4096 exceeds the" "$TMP/hlen.st"
mkst "$TMP/dup.st" "{$(t w F64 '[1]' 0 8),$(t w F64 '[1]' 8 16)}" "$(zeros 16)"
expect_upload_error "a duplicate tensor name" 400 body "duplicate tensor name" "$TMP/dup.st"
mkst "$TMP/dtype.st" "{$(t w F128 '[1]' 0 8)}" "$(zeros 8)"
expect_upload_error "an unknown dtype" 400 w "unknown dtype 'F128'" "$TMP/dtype.st"
mkst "$TMP/int.st" "{$(t w I64 '[1]' 0 8)}" "$(zeros 8)"
expect_upload_error "an integer dtype" 400 w "only F64 and F32" "$TMP/int.st"
mkst "$TMP/overlap.st" "{$(t a F64 '[2]' 0 16),$(t b F64 '[2]' 8 24)}" "$(zeros 24)"
expect_upload_error "overlapping offsets" 400 - "overlap" "$TMP/overlap.st"
mkst "$TMP/range.st" "{$(t a F64 '[2]' 0 16)}" "$(zeros 8)"
expect_upload_error "offsets beyond the data" 400 a "beyond the 8-byte data buffer" "$TMP/range.st"
: >"$TMP/empty.st"
expect_upload_error "an empty body" 400 body "empty" "$TMP/empty.st"
expect_upload_error "a JSON content type" 415 - "application/octet-stream" "$TMP/good.st" application/json
head -c 70000 /dev/zero >"$TMP/big.st"
expect_upload_error "a body beyond --max-upload" 413 - "limit is 65536" "$TMP/big.st"
req GET /healthz
check "the daemon is healthy after the refusals" bash -c "[ '$CODE' = 200 ]"

# ---------------------------------------------------------------- job links

req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary '{"kind":"nqm","params":{"dim":10,"max_steps":5}}'
J=$(jnum id "$TMP/body")
check "a job record shows \"parent\": null and \"children\": []" \
  bash -c "[ '$CODE' = 201 ] && grep -q '\"parent\":null,\"children\":\[\]' '$TMP/body'"

# ---------------------------------------------------------------- tdlab run --artifacts

CURV='{"kind":"curvature","params":{"data":{"name":"synthetic","n":64,"d":3},"loss":"mse","model":{"hidden":[4]},"steps":3,"analysis":{"top_k":1,"lanczos_steps":10}}}'
printf '%s' "$CURV" >"$TMP/curv.json"
"$TDLAB" run "$TMP/curv.json" --artifacts "$TMP/art" --blas-threads 1 >"$TMP/curv.jsonl" 2>"$TMP/curv.err"
rc=$?
names=$(grep -o '^{"artifact":"[^"]*"' "$TMP/curv.jsonl" | sed 's/.*:"//; s/"$//' | sort -u)
check "tdlab run --artifacts writes every artifact it reports into DIR" \
  bash -c "[ '$rc' = 0 ] && [ -n '$names' ] && for n in $(echo $names); do [ -f '$TMP/art/'\$n ] || exit 1; done &&
           [ \$(ls '$TMP/art' | wc -l) = $(echo "$names" | wc -l) ]"
req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "$CURV"
C=$(jnum id "$TMP/body")
st=""
for _ in $(seq 1 300); do
  st=$(curl -s "$BASE/api/v1/jobs/$C" | grep -o '"status":"[a-z]*"' | head -1)
  case "$st" in *succeeded*|*failed*) break ;; esac
  sleep 0.1
done
same=1
for n in $names; do
  curl -s -o "$TMP/srv_$n" "$BASE/api/v1/jobs/$C/artifacts/$n"
  cmp -s "$TMP/srv_$n" "$TMP/art/$n" || { same=0; echo "     differs: $n"; }
done
srv_names=$(curl -s "$BASE/api/v1/jobs/$C/artifacts" | grep -o '"name":"[^"]*"' | sed 's/.*:"//; s/"$//' | sort -u)
check "the server stores the same artifacts, byte for byte (one worker, tiny model)" \
  bash -c "[ '$st' = '\"status\":\"succeeded\"' ] && [ '$same' = 1 ] && [ '$(echo $srv_names)' = '$(echo $names)' ]"
upload "$TMP/art/params.safetensors"
check "the params.safetensors that tdlab run wrote uploads as a checkpoint" \
  bash -c "[ '$CODE' = 201 ] && grep -q '{\"name\":\"layers.0.weight\",\"dtype\":\"F64\",\"shape\":\[4,3\]}' '$TMP/body'"

# ---------------------------------------------------------------- init_from and fork

if curl -s "$BASE/api/v1/kinds" | grep -q '"init_from\.'; then
  mkst "$TMP/wrong.st" "{$(t layers.0.weight F64 '[4,2]' 0 64),$(t layers.0.bias F64 '[4]' 64 96),$(t layers.1.weight F64 '[1,4]' 96 128),$(t layers.1.bias F64 '[1]' 128 136)}" "$(zeros 136)"
  upload "$TMP/wrong.st"
  WRONG=$(jnum id "$TMP/body")
  SPEC='"kind":"train","params":{"data":{"name":"synthetic","n":64,"d":3},"loss":"mse","model":{"hidden":[4]},"batch_size":16,"steps":4'
  req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "{$SPEC,\"init_from\":{\"checkpoint\":$WRONG}}}"
  check "a job whose init_from checkpoint has a wrong shape is a 400 naming the tensor" \
    bash -c "[ '$CODE' = 400 ] && grep -q '\"field\":\"params.init_from\"' '$TMP/body' &&
             grep -q \"tensor 'layers.0.weight' has shape (4, 2), the model expects (4, 3)\" '$TMP/body'"
  req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "{$SPEC,\"init_from\":{\"checkpoint\":$GOOD}}}"
  check "a job whose init_from checkpoint fits is accepted" bash -c "[ '$CODE' = 201 ]"
  req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "{$SPEC,\"init_from\":{\"checkpoint\":999999}}}"
  check "init_from an unknown checkpoint is a 400" bash -c "[ '$CODE' = 400 ] && grep -q 'params.init_from.checkpoint' '$TMP/body'"
  if curl -s "$BASE/api/v1/kinds" | grep -q '"checkpoint_every"'; then
    req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "{$SPEC,\"checkpoint_every\":2}}"
    P=$(jnum id "$TMP/body")
    for _ in $(seq 1 300); do
      st=$(curl -s "$BASE/api/v1/jobs/$P" | grep -o '"status":"[a-z]*"' | head -1)
      case "$st" in *succeeded*|*failed*|*diverged*) break ;; esac
      sleep 0.1
    done
    req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "{$SPEC,\"fork\":{\"job\":$P,\"step\":3}}}"
    check "a fork at a step without a checkpoint is a 400 listing the steps that have one" \
      bash -c "[ '$CODE' = 400 ] && grep -q '\"field\":\"params.fork.step\"' '$TMP/body' && grep -q 'checkpoints at steps 2, 4' '$TMP/body'"
    req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "{$SPEC,\"fork\":{\"job\":$P,\"step\":2}}}"
    K=$(jnum id "$TMP/body")
    check "a fork is accepted and records its parent" \
      bash -c "[ '$CODE' = 201 ] && grep -q '\"parent\":{\"job\":$P,\"step\":2}' '$TMP/body' &&
               curl -s '$BASE/api/v1/jobs/$P' | grep -q '\"children\":\[$K\]'"
    for _ in $(seq 1 300); do
      st=$(curl -s "$BASE/api/v1/jobs/$K" | grep -o '"status":"[a-z]*"' | head -1)
      case "$st" in *succeeded*|*failed*|*diverged*) break ;; esac
      sleep 0.1
    done
    # The fork changes nothing: its steps 3..4 must be the parent's, bitwise (the server runs
    # with --blas-threads 1). The CSV carries every value with 17 significant digits.
    curl -s "$BASE/api/v1/jobs/$P/metrics.csv" | awk -F, 'NR > 1 && $2 >= 3' | sort >"$TMP/parent.csv"
    curl -s "$BASE/api/v1/jobs/$K/metrics.csv" | awk -F, 'NR > 1' | sort >"$TMP/child.csv"
    check "a fork that changes nothing continues bitwise as its parent (steps 3-4, every key)" \
      bash -c "[ '$st' = '\"status\":\"succeeded\"' ] && [ -s '$TMP/child.csv' ] &&
               [ \$(grep -c '^train_loss,' '$TMP/child.csv') = 2 ] && cmp -s '$TMP/parent.csv' '$TMP/child.csv'"
  else
    bad "the train kind's schema has no checkpoint_every"
  fi
else
  bad "the train kind's schema has no params.init_from"
fi

# ---------------------------------------------------------------- tdlab run == server

# One BLAS thread on both sides (the server was started with --blas-threads 1 and one worker):
# the metrics of a job are bitwise those of `tdlab run --blas-threads 1` (README).
BIG='{"kind":"train","params":{"data":{"name":"synthetic","n":512,"d":64},"loss":"mse","model":{"hidden":[256,256]},"batch_size":128,"steps":12,"optimizer":{"name":"adam","lr":0.001}}}'
printf '%s' "$BIG" >"$TMP/big.json"
"$TDLAB" run "$TMP/big.json" --blas-threads 1 >"$TMP/big.jsonl" 2>/dev/null
req POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "$BIG"
B=$(jnum id "$TMP/body")
for _ in $(seq 1 300); do
  st=$(curl -s "$BASE/api/v1/jobs/$B" | grep -o '"status":"[a-z]*"' | head -1)
  case "$st" in *succeeded*|*failed*|*diverged*) break ;; esac
  sleep 0.1
done
curl -s "$BASE/api/v1/jobs/$B/metrics.csv" >"$TMP/big.csv"
check "a server job's metrics are bitwise those of tdlab run --blas-threads 1" \
  python3 - "$TMP/big.jsonl" "$TMP/big.csv" <<'PY'
import csv, json, sys
run = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "key" in d and "step" in d:
        v = d["value"]
        run[(d["key"], int(d["step"]))] = float(v) if not isinstance(v, str) else float(v.replace("Infinity", "inf"))
srv = {}
rows = list(csv.reader(open(sys.argv[2])))
for k, st, v in rows[1:]:
    srv[(k, int(st))] = float(v.replace("Infinity", "inf"))
ok = len(run) > 50 and run.keys() == srv.keys() and all(
    (run[k] == srv[k]) or (run[k] != run[k] and srv[k] != srv[k]) for k in run)
if not ok:
    diff = [k for k in run if k in srv and run[k] != srv[k]][:3]
    print("     run %d points, server %d, differing e.g. %s" % (len(run), len(srv), diff))
sys.exit(0 if ok else 1)
PY

finish
