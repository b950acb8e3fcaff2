#!/usr/bin/env bash
# e2e_pyclient.sh: the Python client (clients/python/tdlab.py) against the real daemon (called
# by tests/e2e.sh; runs alone too). About 30 s on 2 cores.
#
# Usage: tests/e2e_pyclient.sh path/to/tdlab
#
# Starts `tdlab serve` with a lab token (--token-file) and 2 workers, then runs
# tests/pyclient_test.py with Debian's /usr/bin/python3 (TDLAB_URL, TDLAB_TOKEN, TDLAB_BIN,
# TDLAB_ROOT, TDLAB_TMP in its environment): submit/get/wait/cancel/metrics/jobs/sweep/fit and
# their errors, runs (start_run, log, finish, artifacts, heartbeats, a server killed and
# restarted, a server away past the retry bound), and `pip install` into a venv offline.
# Each Python test is one line here; without /usr/bin/python3 the script says so and fails.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init pyclient "$@"
PY=/usr/bin/python3

if [ ! -x "$PY" ]; then
  bad "pyclient: Debian's $PY is needed (apt install python3)"
  finish
fi
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/token"
e2e_start --workers 2 --batch-ms 100 --token-file "$TMP/token"
ok "pyclient: the daemon starts ($BASE, with a lab token)"

TDLAB_URL="$BASE" TDLAB_TOKEN="$(cat "$TMP/token")" TDLAB_BIN="$TDLAB" TDLAB_ROOT="$ROOT" \
  TDLAB_TMP="$TMP" PYTHONDONTWRITEBYTECODE=1 "$PY" "$ROOT/tests/pyclient_test.py" >"$TMP/py.out" 2>&1
rc=$?
grep -v '^[0-9]* passed, [0-9]* failed' "$TMP/py.out"
n_ok=$(grep -c '^ok   - ' "$TMP/py.out")
n_bad=$(grep -c '^FAIL - ' "$TMP/py.out")
PASS=$((PASS + n_ok))
FAIL=$((FAIL + n_bad))
if [ "$rc" != 0 ] && [ "$n_bad" = 0 ]; then bad "pyclient: tests/pyclient_test.py exited $rc"; fi
req GET /healthz
check "pyclient: the daemon is still up and healthy after the client tests" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"status\":\"ok\"' '$TMP/body'"
finish
