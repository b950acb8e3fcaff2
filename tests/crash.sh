#!/usr/bin/env bash
# crash.sh: crash-recovery test. 10 rounds of kill -9 at random moments while several jobs
# ingest metrics as fast as they can, each followed by a restart and these checks:
#   - every metric row that the API showed before the kill (a metrics.csv snapshot of each
#     running job, taken just before the kill: "acknowledged") is still there after the
#     restart, with the same value (%.17g text, so bit-exact);
#   - no (key, step) appears twice;
#   - once recovery has run, no job is left `running` (the server is restarted with
#     --workers 0 for the checks, so nothing claims the re-queued jobs yet), and each
#     interrupted job is queued again with attempt + 1;
#   - PRAGMA integrity_check is ok (sqlite3 CLI).
# After the last round the jobs run to the end; every job must succeed with its complete
# series (max_steps + 1 points per key, steps 0..max_steps: no lost tail, no gap, no duplicate).
#
# Usage: tests/crash.sh path/to/tdlab
# Environment: CRASH_ROUNDS (10), CRASH_SEED (random; printed, to replay a run),
#   CRASH_WORKERS (3), CRASH_KEEP=1 keeps the scratch directory,
#   CRASH_SELFTEST_DROP=1 deletes one acknowledged row after each kill (the round's "still
#   there" check must then fail: a test of the test).
# Prints one line per check and a final "N passed, M failed"; exits non-zero on a failure.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TDLAB="${1:-}"
if [ -z "$TDLAB" ] || [ ! -x "$TDLAB" ]; then
  echo "usage: tests/crash.sh path/to/tdlab" >&2
  echo "0 passed, 1 failed"
  exit 2
fi
TDLAB="$(cd "$(dirname "$TDLAB")" && pwd)/$(basename "$TDLAB")"
ROUNDS="${CRASH_ROUNDS:-10}"
WORKERS="${CRASH_WORKERS:-3}"
SEED="${CRASH_SEED:-$(( $(date +%s) % 32768 ))}"
RANDOM=$SEED
TMP="$(mktemp -d /tmp/tdlab-crash.XXXXXX)"
DB="$TMP/crash.db"
# shellcheck source=srvlib.sh
. "$ROOT/tests/srvlib.sh"
cleanup() {
  srv_kill9
  if [ "$FAIL" -eq 0 ] && [ -z "${CRASH_KEEP:-}" ]; then rm -rf "$TMP"; else echo "(kept $TMP)"; fi
}
trap cleanup EXIT
command -v sqlite3 >/dev/null || { bad "the sqlite3 CLI is installed (make deps)"; finish; }
echo "# crash.sh: $ROUNDS rounds, $WORKERS workers, seed $SEED (CRASH_SEED=$SEED to replay)"

# Serve flags: small, frequent batches (many commits to interrupt); crashes never exhaust
# the retries, so every job can still finish at the end.
FLAGS=(--batch-ms 50 --max-attempts 1000 --log-level warn)

# A random job that ingests fast: nqm in exact mode (3 keys per step), nqm sampled (1 key),
# or linreg (3 keys: loss, loss_theory, dist_to_min_norm), logging every step, 20k..100k steps. Prints "SPEC<TAB>STEPS<TAB>KEYS".
random_job() {
  local s=$((20000 + RANDOM % 80001)) seed=$((RANDOM % 1000))
  case $((RANDOM % 3)) in
    0) printf '%s\t%s\t%s\n' "{\"kind\":\"nqm\",\"name\":\"crash-nqm-exact\",\"params\":{\"dim\":20,\"mode\":\"exact\",\"lr\":0.5,\"max_steps\":$s,\"log_every\":1}}" "$s" 3 ;;
    1) printf '%s\t%s\t%s\n' "{\"kind\":\"nqm\",\"name\":\"crash-nqm-sample\",\"params\":{\"dim\":20,\"mode\":\"sample\",\"replicas\":1,\"lr\":0.3,\"max_steps\":$s,\"log_every\":1,\"seed\":$seed}}" "$s" 1 ;;
    *) printf '%s\t%s\t%s\n' "{\"kind\":\"linreg\",\"name\":\"crash-linreg\",\"params\":{\"data\":{\"name\":\"synthetic\",\"n\":100,\"d\":10},\"lr\":0.1,\"steps\":$s,\"seed\":$seed}}" "$s" 3 ;;
  esac
}

# Job bookkeeping: "id steps keys" per line.
: >"$TMP/jobs"
submit_jobs() { # submit_jobs N
  local i line spec steps keys id
  for i in $(seq 1 "$1"); do
    line=$(random_job)
    spec=$(cut -f1 <<<"$line")
    steps=$(cut -f2 <<<"$line")
    keys=$(cut -f3 <<<"$line")
    id=$(srv_submit "$spec")
    if [ -n "$id" ]; then echo "$id $steps $keys" >>"$TMP/jobs"; else bad "submit a job"; fi
  done
}
# ids of jobs in a status (comma list accepted), one per line.
ids_with_status() {
  curl -s --max-time 30 "$SRV_BASE/api/v1/jobs?status=$1&limit=1000" |
    grep -o '{"id":[0-9]*' | grep -o '[0-9]*$'
}
csv() { curl -s --max-time 120 -o "$2" -w '%{http_code}' "$SRV_BASE/api/v1/jobs/$1/metrics.csv"; }
attempt_of() { sqlite3 "$DB" "SELECT attempt FROM jobs WHERE id=$1"; }

if ! srv_start "$DB" --workers "$WORKERS" "${FLAGS[@]}"; then
  bad "the daemon starts"
  finish
fi
ok "the daemon starts ($SRV_BASE)"
submit_jobs $((WORKERS + 1))

for round in $(seq 1 "$ROUNDS"); do
  # Keep every worker busy: top up to WORKERS + 2 unfinished jobs, wait until one is running,
  # then wait a random 0.05..1.5 s more. A round kills only while jobs run: when they all
  # finished during the wait, it tops up and tries again (shorter waits), for at most 60 s
  # (then the round fails: nothing ran). Before, it gave up after 3 tries and killed an idle
  # daemon, which counted as a failure although no data was lost (CRASH_SEED=16017).
  running=""
  try=0
  round_deadline=$((SECONDS + 60))
  while [ -z "$running" ] && [ $SECONDS -lt $round_deadline ]; do
    try=$((try + 1))
    open=$( (ids_with_status queued,running) | wc -l)
    [ "$open" -lt $((WORKERS + 2)) ] && submit_jobs $((WORKERS + 2 - open))
    for _ in $(seq 1 200); do
      [ -n "$(ids_with_status running)" ] && break
      sleep 0.05
    done
    sleep "$(awk -v r=$RANDOM -v t=$try 'BEGIN { if (t > 4) t = 4; printf "%.3f", 0.05 + 1.45 * r / 32767 / t }')"
    running=$(ids_with_status running | tr '\n' ' ')
  done
  # Snapshot what the API acknowledges for each running job, then kill at once.
  declare -A attempt_before=()
  snap_ok=1
  for id in $running; do
    [ "$(csv "$id" "$TMP/before.$id.csv")" = 200 ] || snap_ok=0
    attempt_before[$id]=$(curl -s "$SRV_BASE/api/v1/jobs/$id" | grep -o '"attempt":[0-9]*' | cut -d: -f2)
  done
  srv_kill9
  if [ -n "${CRASH_SELFTEST_DROP:-}" ] && [ -n "$running" ]; then
    victim=${running%% *}
    sqlite3 "$DB" "DELETE FROM metrics WHERE job_id=$victim AND step=(SELECT min(step) FROM metrics WHERE job_id=$victim)"
  fi
  rows=0
  for id in $running; do rows=$((rows + $(tail -n +2 "$TMP/before.$id.csv" | wc -l))); done
  if [ -n "$running" ] && [ "$snap_ok" = 1 ]; then
    ok "round $round: kill -9 with jobs [ ${running}] running, $rows rows acknowledged"
  else
    bad "round $round: jobs were running and their metrics could be read before the kill ($running)"
  fi
  # Restart without workers: recovery runs, and nothing re-claims the jobs while we look.
  if ! srv_start "$DB" --workers 0 "${FLAGS[@]}"; then
    bad "round $round: the daemon restarts after kill -9"
    break
  fi
  left=$(ids_with_status running | wc -l)
  [ "$left" = 0 ] && ok "round $round: no job is left running after recovery" ||
    bad "round $round: $left job(s) still running after recovery"
  lost=0 dups=0 changed=""
  for id in $running; do
    csv "$id" "$TMP/after.$id.csv" >/dev/null
    tail -n +2 "$TMP/before.$id.csv" | LC_ALL=C sort >"$TMP/b.sorted"
    tail -n +2 "$TMP/after.$id.csv" | LC_ALL=C sort >"$TMP/a.sorted"
    n=$(LC_ALL=C comm -23 "$TMP/b.sorted" "$TMP/a.sorted" | wc -l)
    lost=$((lost + n))
    d=$(cut -d, -f1,2 "$TMP/a.sorted" | uniq -d | wc -l)
    dups=$((dups + d))
    st=$(srv_status "$id")
    att=$(attempt_of "$id")
    # Interrupted: back in the queue with one more attempt (or finished just before the kill).
    if [ "$st" = queued ] && [ "$att" = $((${attempt_before[$id]:-0} + 1)) ]; then :
    elif [ "$st" = succeeded ]; then :
    else changed="$changed $id:$st/attempt=$att(was ${attempt_before[$id]:-?})"; fi
    rm -f "$TMP/before.$id.csv" "$TMP/after.$id.csv"
  done
  [ "$lost" = 0 ] && ok "round $round: every acknowledged row is still there, same value" ||
    bad "round $round: $lost acknowledged rows are missing or changed after the restart"
  [ "$dups" = 0 ] && ok "round $round: no (key, step) appears twice" ||
    bad "round $round: $dups duplicated (key, step) pairs"
  [ -z "$changed" ] && ok "round $round: interrupted jobs are queued again with attempt + 1" ||
    bad "round $round: unexpected job states after recovery:$changed"
  ic=$(sqlite3 "$DB" 'PRAGMA integrity_check' 2>&1)
  [ "$ic" = ok ] && ok "round $round: PRAGMA integrity_check is ok" ||
    bad "round $round: PRAGMA integrity_check says: $(head -c 300 <<<"$ic")"
  unset attempt_before
  srv_term || bad "round $round: the recovery-only daemon stops on SIGTERM"
  if ! srv_start "$DB" --workers "$WORKERS" "${FLAGS[@]}"; then
    bad "round $round: the daemon restarts with workers"
    break
  fi
done

# The end: let every job finish, then check each series is complete and exact.
deadline=$((SECONDS + 300))
while [ $SECONDS -lt $deadline ]; do
  [ -z "$(ids_with_status queued,running)" ] && break
  sleep 0.5
done
notdone=$(ids_with_status queued,running | wc -l)
[ "$notdone" = 0 ] && ok "after the last round every job runs to its end" ||
  bad "$notdone job(s) did not finish within 300 s"
incomplete=""
njobs=0
srv_term
while read -r id steps keys; do
  njobs=$((njobs + 1))
  st=$(sqlite3 "$DB" "SELECT status FROM jobs WHERE id=$id")
  # Per key: rows, distinct steps, min and max step; all must be (steps+1, steps+1, 0, steps).
  verdict=$(sqlite3 "$DB" "SELECT k.name, count(*), count(DISTINCT m.step), min(m.step), max(m.step)
      FROM metrics m JOIN metric_keys k ON k.id = m.key_id WHERE m.job_id = $id GROUP BY k.name" |
    awk -F'|' -v S="$steps" -v K="$keys" '
      { nk++; if ($2 != S + 1 || $3 != S + 1 || $4 != 0 || $5 != S) bad = 1; d = d " " $1 ":" $2 "/" $3 "[" $4 ".." $5 "]" }
      END { printf "%s keys=%d%s", (bad || nk != K) ? "bad" : "ok", nk, d }')
  if [ "$st" != succeeded ] || [ "${verdict%% *}" != ok ]; then
    incomplete="$incomplete
     job $id ($steps steps, $keys keys): $st $verdict"
  fi
done <"$TMP/jobs"
[ -z "$incomplete" ] && ok "all $njobs jobs succeeded with complete series (every key: steps 0..max_steps once each)" ||
  bad "incomplete or failed jobs:$incomplete"
ic=$(sqlite3 "$DB" 'PRAGMA integrity_check' 2>&1)
[ "$ic" = ok ] && ok "final PRAGMA integrity_check is ok" || bad "final integrity_check: $ic"
finish
