#!/usr/bin/env bash
# soak.sh: a long run of everything at once (`make soak`, 10 minutes; not part of make test).
# 2 workers train (nqm jobs of 20k-53k steps logging every 2nd, linreg of 5k-13k steps), a submitter keeps the
# queue topped up, one job in five is cancelled while it runs, 50 pollers read running jobs'
# pages and since_step metrics, and a CSV export runs every few seconds. Every minute it
# prints the server's RSS, open file descriptors and WAL size. At the end:
#   - RSS, fds and WAL are flat: the last minute's values are within a bound of minute 2's
#     (RSS +25 % + 8 MB, fds +8, WAL at most 64 MiB + 4 MiB: journal_size_limit plus one
#     autocheckpoint interval);
#   - every job ends in a final state once submissions stop (bounded wait);
#   - PRAGMA integrity_check is ok.
# Usage: tests/soak.sh path/to/tdlab. SOAK_SECONDS (600), SOAK_POLLERS (50).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TDLAB="${1:-}"
[ -x "$TDLAB" ] || { echo "usage: tests/soak.sh path/to/tdlab" >&2; exit 2; }
TDLAB="$(cd "$(dirname "$TDLAB")" && pwd)/$(basename "$TDLAB")"
DUR=${SOAK_SECONDS:-600}
NPOLL=${SOAK_POLLERS:-50}
TMP="$(mktemp -d /tmp/tdlab-soak.XXXXXX)"
DB="$TMP/soak.db"
. "$ROOT/tests/srvlib.sh"
KIDS=()
cleanup() {
  for k in "${KIDS[@]}"; do kill "$k" 2>/dev/null; done
  wait 2>/dev/null
  srv_kill9
  if [ "$FAIL" -eq 0 ]; then rm -rf "$TMP"; else echo "(kept $TMP)"; fi
}
trap cleanup EXIT
srv_start "$DB" --workers 2 --log-level warn || { bad "server starts"; finish; }
B="$SRV_BASE/api/v1"
STOP="$TMP/stop"
echo "# soak: $DUR s, $NPOLL pollers, server pid $SRV_PID"

submitter() {
  local i=0
  while [ ! -e "$STOP" ]; do
    local open
    open=$(curl -s --max-time 10 "$B/jobs?status=queued,running&limit=20" | grep -o '{"id":' | wc -l)
    if [ "$open" -lt 6 ]; then
      i=$((i + 1))
      if [ $((i % 2)) = 0 ]; then
        srv_submit '{"kind":"nqm","params":{"dim":30,"mode":"exact","lr":0.3,"max_steps":'$((20000 + RANDOM))',"log_every":2}}' >/dev/null
      else
        srv_submit '{"kind":"linreg","params":{"data":{"n":256,"d":16},"steps":'$((5000 + RANDOM / 4))',"seed":'$i'}}' >/dev/null
      fi
    fi
    sleep 0.5
  done
}
canceller() {
  while [ ! -e "$STOP" ]; do
    sleep 5
    local id
    id=$(curl -s --max-time 10 "$B/jobs?status=running&limit=1" | grep -o '{"id":[0-9]*' | grep -o '[0-9]*$' | head -1)
    [ -n "$id" ] && [ $((RANDOM % 5)) = 0 ] && curl -s --max-time 10 -X POST "$B/jobs/$id/cancel" >/dev/null
  done
}
poller() {
  local since=0 id=""
  while [ ! -e "$STOP" ]; do
    [ -z "$id" ] || [ $((RANDOM % 20)) = 0 ] &&
      id=$(curl -s --max-time 10 "$B/jobs?status=running&limit=2" | grep -o '{"id":[0-9]*' | grep -o '[0-9]*$' | shuf -n 1 2>/dev/null)
    if [ -n "$id" ]; then
      curl -s --max-time 10 -o /dev/null "$B/jobs/$id"
      since=$(curl -s --max-time 10 "$B/jobs/$id/metrics?since_step=$since&max_points=500" | grep -o '"step":\[[^]]*' | grep -o '[0-9]*$' | sort -n | tail -1)
      since=${since:-0}
    fi
    sleep 1
  done
}
exporter() {
  while [ ! -e "$STOP" ]; do
    local id
    id=$(curl -s --max-time 10 "$B/jobs?status=running,succeeded&limit=3" | grep -o '{"id":[0-9]*' | grep -o '[0-9]*$' | shuf -n 1 2>/dev/null)
    [ -n "$id" ] && curl -s --max-time 60 -o /dev/null "$B/jobs/$id/metrics.csv"
    sleep 3
  done
}
submitter & KIDS+=($!)
canceller & KIDS+=($!)
exporter & KIDS+=($!)
for _ in $(seq 1 "$NPOLL"); do poller & KIDS+=($!); done

sample() { # prints "rss_kb fds wal_bytes"
  echo "$(awk '/VmRSS/{print $2}' /proc/"$SRV_PID"/status) $(ls /proc/"$SRV_PID"/fd | wc -l) $(stat -c %s "$DB-wal" 2>/dev/null || echo 0)"
}
t0=$SECONDS
min=0
declare -a RSS FDS WAL
while [ $((SECONDS - t0)) -lt "$DUR" ]; do
  sleep $(( DUR - (SECONDS - t0) < 60 ? DUR - (SECONDS - t0) : 60 ))
  min=$((min + 1))
  kill -0 "$SRV_PID" 2>/dev/null || { bad "the server died in minute $min"; break; }
  read -r r f w <<<"$(sample)"
  RSS[$min]=$r FDS[$min]=$f WAL[$min]=$w
  jobs=$(curl -s --max-time 10 "$SRV_BASE/metrics" | awk '/^tdlab_jobs\{/{gsub(/.*status="|"\}/," "); printf "%s", $0}')
  echo "# minute $min: rss ${r} kB, fds $f, wal $((w / 1024)) kB, jobs:$jobs"
done
touch "$STOP"
for k in "${KIDS[@]}"; do wait "$k" 2>/dev/null; done
KIDS=()
first=2; [ "$min" -lt 2 ] && first=1
last=$min
if [ "$last" -ge 1 ]; then
  r0=${RSS[$first]} r1=${RSS[$last]}
  [ "$r1" -le $((r0 * 5 / 4 + 8192)) ] && ok "RSS is flat: $r0 kB at minute $first, $r1 kB at minute $last" || bad "RSS grew: $r0 -> $r1 kB"
  f0=${FDS[$first]} f1=${FDS[$last]}
  [ "$f1" -le $((f0 + 8)) ] && ok "open fds are flat: $f0 -> $f1" || bad "fds grew: $f0 -> $f1"
  wmax=0; for m in $(seq 1 "$last"); do [ "${WAL[$m]}" -gt "$wmax" ] && wmax=${WAL[$m]}; done
  [ "$wmax" -le $((68 * 1024 * 1024)) ] && ok "the WAL stays bounded: at most $((wmax / 1024)) kB at the minute marks" || bad "WAL reached $wmax bytes"
fi
deadline=$((SECONDS + 180))
while [ $SECONDS -lt $deadline ]; do
  n=$(curl -s --max-time 10 "$B/jobs?status=queued,running&limit=50" | grep -o '{"id":' | wc -l)
  [ "$n" = 0 ] && break
  sleep 1
done
[ "$n" = 0 ] && ok "every job ended in a final state ($(sqlite3 "$DB" "SELECT group_concat(status || '=' || c, ' ') FROM (SELECT status, count(*) c FROM jobs GROUP BY status)"))" || bad "$n jobs still queued or running 180 s after the end"
srv_term >/dev/null
ic=$(sqlite3 "$DB" "PRAGMA integrity_check")
[ "$ic" = ok ] && ok "PRAGMA integrity_check is ok" || bad "integrity_check: $ic"
finish
