#!/bin/bash
# scale.sh: list, poll and export costs at lab scale. Generates (once, cached under
# $SCALE_DIR, default /tmp/tdlab-scale) a database of N jobs (SCALE_JOBS, default 1,000,000)
# and one job with SCALE_POINTS metric points (default 10,000,000), by bulk SQL on the real
# schema (tdlab migrate, then INSERT ... SELECT from a recursive CTE: the server's own insert
# path would take hours for a million jobs on a laptop), plus a 1,000-job database for the
# "flat in the job count" comparison. Then starts `tdlab serve --workers 0` on each and prints
#   BENCH scale_<what> jobs=<n> ms=<median of 5 curl total times>
# for: every list filter (status, kind, tag, sweep and pairs) at the first page and at the
# last page (keyset cursor near the oldest job), a since_step poll of the last 100 points, a
# max_points=1000 read, and metrics.csv of the 10M-point job (time and bytes); then since_step
# polls of a job that writes at full speed, against the same polls when it is idle.
# Usage: bench/scale.sh [BUILD_DIR]
set -u
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TDLAB=$(cd "$BUILD" && pwd)/tdlab
DIR=${SCALE_DIR:-/tmp/tdlab-scale}
NJOBS=${SCALE_JOBS:-1000000}
NPTS=${SCALE_POINTS:-10000000}
TMP=$DIR
mkdir -p "$DIR"
. "$ROOT/tests/srvlib.sh"

# gen DB N: jobs 1..N; job 1 is the big run (linreg, succeeded, NPTS points of train_loss).
# kind alternates nqm/linreg; status cycles succeeded x6, failed, cancelled, diverged, queued
# (so every status has ~N/10 jobs, "running" only 10); every job has tag t<id%20>, every
# 1000th also "rare"; every 100th belongs to sweep (id/100)%50+1.
gen() {
  local db=$1 n=$2
  [ -s "$db.done" ] && return 0
  rm -f "$db" "$db-wal" "$db-shm"
  "$TDLAB" migrate --db "$db" --migrations "$ROOT/migrations" >/dev/null || return 1
  local t0=$(date +%s.%N)
  sqlite3 "$db" <<SQL || return 1
PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA cache_size=-200000;
BEGIN;
INSERT INTO sweeps(id,kind,spec,n_children,status,created_at)
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<50)
  SELECT i,'nqm','{}',0,'finished','2026-01-01T00:00:00.000Z' FROM s;
INSERT INTO jobs(id,kind,name,status,params,tags,priority,attempt,sweep_id,progress_done,
                 progress_total,created_at,started_at,finished_at,summary)
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<$n)
  SELECT i, CASE i%2 WHEN 0 THEN 'nqm' ELSE 'linreg' END, 'job'||i,
    CASE WHEN i%100000=5 THEN 'running' ELSE
      CASE i%10 WHEN 6 THEN 'failed' WHEN 7 THEN 'cancelled' WHEN 8 THEN 'diverged'
                WHEN 9 THEN 'queued' ELSE 'succeeded' END END,
    '{"seed":'||i||',"steps":100,"lr":0.01}',
    CASE WHEN i%1000=0 THEN '["t'||(i%20)||'","rare"]' ELSE '["t'||(i%20)||'"]' END,
    0,1, CASE WHEN i%100=0 THEN (i/100)%50+1 END, 100,100,
    '2026-01-01T00:00:00.000Z','2026-01-01T00:00:01.000Z','2026-01-01T00:00:02.000Z',
    '{"final_loss":0.5}'
  FROM s;
INSERT INTO job_tags(tag,job_id) SELECT 't'||(id%20), id FROM jobs;
INSERT INTO job_tags(tag,job_id) SELECT 'rare', id FROM jobs WHERE id%1000=0;
UPDATE jobs SET status='succeeded' WHERE id=1;
INSERT INTO metric_keys(id,name) VALUES(1,'train_loss');
INSERT INTO job_keys(job_id,key_id) VALUES(1,1);
COMMIT;
SQL
  if [ "$n" -ge 1000000 ]; then
    sqlite3 "$db" <<SQL || return 1
PRAGMA synchronous=OFF; PRAGMA cache_size=-200000;
BEGIN;
INSERT INTO metrics(job_id,key_id,step,value)
  WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM s WHERE i<$NPTS-1)
  SELECT 1,1,i,1.0/(1+i) FROM s;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
  fi
  local t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN{printf "scale: generated %d jobs in %.1f s\n", n, b-a}' >&2
  echo ok >"$db.done"
}

# med URL: median of 5 curl total times in ms (after one warm-up).
med() {
  curl -s -o /dev/null "$1"
  for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "$1"; done |
    sort -n | sed -n 3p | awk '{printf "%.2f", $1*1000}'
}

# cursor_last URL: a cursor near the end of the filter's list (the 3rd-oldest match), read
# from the oldest page by ascending SQL on the same database.
run_one() {
  local db=$1 n=$2
  srv_start "$db" --workers 0 || return 1
  local B="$SRV_BASE/api/v1"
  local f
  for f in "" "status=failed" "status=running" "status=queued,failed" "kind=nqm" \
    "kind=nqm&status=failed" "tag=t3" "tag=t3&status=failed" "tag=t4&kind=nqm" "tag=rare" \
    "tag=rare&status=succeeded" "sweep=7" "sweep=7&status=succeeded"; do
    local first deep cur
    first=$(med "$B/jobs?limit=50&$f")
    # the keyset cursor of the last page: the id of the 51st-oldest match (+1 so it is kept)
    cur=$(sqlite3 "$db" "$(cursor_sql "$f")")
    if [ -n "$cur" ]; then deep=$(med "$B/jobs?limit=50&cursor=$cur&$f"); else deep=NA; fi
    echo "BENCH scale_list[${f:-all}] jobs=$n first_page_ms=$first last_page_ms=$deep"
  done
  if [ "$n" -ge 1000000 ]; then
    echo "BENCH scale_poll_since_step jobs=$n points=$NPTS ms=$(med "$B/jobs/1/metrics?keys=train_loss&since_step=$((NPTS - 100))")"
    echo "BENCH scale_read_max_points_1000 jobs=$n points=$NPTS ms=$(med "$B/jobs/1/metrics?keys=train_loss&max_points=1000")"
    local csv
    csv=$(curl -s -o /dev/null -w '%{time_total} %{size_download} %{time_starttransfer}' "$B/jobs/1/metrics.csv")
    echo "$csv" | awk -v n="$NPTS" '{printf "BENCH scale_metrics_csv points=%d s=%.2f bytes=%d first_byte_s=%.2f\n", n, $1, $2, $3}'
    echo "BENCH scale_rss_kb jobs=$n rss_kb=$(awk '/VmHWM/{print $2}' /proc/$SRV_PID/status)"
  fi
  srv_term >/dev/null
}

# cursor_sql FILTER: SQL giving the id just above the 51st-oldest job matching FILTER.
cursor_sql() {
  local w="1" p
  IFS='&' read -ra parts <<<"$1"
  for p in "${parts[@]}"; do
    case $p in
    status=*) w="$w AND status IN ('$(echo "${p#status=}" | sed "s/,/','/g")')" ;;
    kind=*) w="$w AND kind='${p#kind=}'" ;;
    tag=*) w="$w AND id IN (SELECT job_id FROM job_tags WHERE tag='${p#tag=}')" ;;
    sweep=*) w="$w AND sweep_id=${p#sweep=}" ;;
    esac
  done
  echo "SELECT id+1 FROM (SELECT id FROM jobs WHERE $w ORDER BY id LIMIT 51) ORDER BY id DESC LIMIT 1"
}

# live_poll: since_step polls of a job that writes as fast as it can (nqm exact, 3 points per
# step, one worker): 40 polls of the last ~100 steps, median / p95 / max ms, against the same
# polls once the job has ended (idle), and the job's ingest rate meanwhile.
live_poll() {
  rm -f "$DIR/live.db"*
  srv_start "$DIR/live.db" --workers 1 || return 1
  local B="$SRV_BASE/api/v1" id
  id=$(srv_submit '{"kind":"nqm","params":{"dim":20,"mode":"exact","lr":0.5,"max_steps":3000000,"log_every":1}}')
  srv_wait_running "$id" 30 || return 1
  sleep 2
  poll_series() { # prints one ms value per poll
    local i tot
    for i in $(seq 1 40); do
      tot=$(curl -s "$B/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
      curl -s -o /dev/null -w '%{time_total}\n' "$B/jobs/$id/metrics?keys=loss&since_step=$((tot > 100 ? tot - 100 : 0))"
      sleep 0.05
    done | awk '{print $1 * 1000}' | sort -n | awk '{v[NR]=$1} END {printf "median_ms=%.2f p95_ms=%.2f max_ms=%.2f", v[int(NR/2)+1], v[int(NR*0.95)], v[NR]}'
  }
  local p0 p1 live idle rate
  p0=$(curl -s "$B/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
  local t0=$(date +%s.%N)
  live=$(poll_series)
  local t1=$(date +%s.%N)
  p1=$(curl -s "$B/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
  rate=$(awk -v a="$p0" -v b="$p1" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.0f", 3 * (b - a) / (e - s)}')
  local wal=$(stat -c %s "$DIR/live.db-wal" 2>/dev/null || echo 0)
  curl -s -X POST "$B/jobs/$id/cancel" >/dev/null
  sleep 1
  idle=$(poll_series)
  echo "BENCH scale_poll_since_step_while_writing points_per_s=$rate $live wal_kb=$((wal / 1024))"
  echo "BENCH scale_poll_since_step_idle $idle"
  srv_term >/dev/null
}

gen "$DIR/small.db" 1000 || exit 1
gen "$DIR/big.db" "$NJOBS" || exit 1
echo "scale: database $(du -h "$DIR/big.db" | cut -f1) for $NJOBS jobs and $NPTS points" >&2
run_one "$DIR/small.db" 1000
run_one "$DIR/big.db" "$NJOBS"
live_poll
