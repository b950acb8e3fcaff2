#!/usr/bin/env bash
# e2e_ops.sh: operations against the real daemon (called by tests/e2e.sh; runs alone too):
#   - `tdlab backup` while a job ingests: the copy opens, passes integrity_check and holds
#     every point the API acknowledged before the backup began;
#   - schema upgrades: databases made by every earlier schema version (tests/fixtures/
#     schema_v*.sql, made from the repository's history by tests/fixtures/make_schema.sh)
#     open with the current binary with every row kept; a newer database is refused at
#     start-up with a message naming both versions;
#   - disk full (a database capped with TDLAB_MAX_PAGE_COUNT): the running job ends failed
#     with the reason and keeps every stored point, the server stays up and serves reads, a
#     submission gets 507 storage_full, and after space is freed a new job succeeds;
#   - tdlab prune: dry run by default, deletes only what matches with points and tags, and
#     the file shrinks (incremental vacuum, or one VACUUM for an older file).
#   - Prometheus series and format; If-None-Match answered 304 on the job, list and metrics.
# About 30 s on 2 cores.
# Usage: tests/e2e_ops.sh path/to/tdlab. Needs bash, curl, grep, sed, awk, sqlite3.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init ops "$@"
if ! command -v sqlite3 >/dev/null; then
  echo "e2e_ops: sqlite3 is missing"
  bad "sqlite3 CLI available"
  finish
fi

# ---------------------------------------------------------------- backup while ingesting
srv_start "$TMP/live.db" --workers 1 || { bad "server starts"; finish; }
id=$(srv_submit '{"kind":"nqm","params":{"dim":50,"mode":"exact","lr":0.5,"max_steps":400000,"log_every":1}}')
if srv_wait_running "$id" 20; then ok "an ingesting job runs"; else bad "an ingesting job runs"; fi
sleep 1
# points acknowledged (committed and visible to the API) before the backup starts
acked=$(curl -s "$SRV_BASE/api/v1/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
if "$TDLAB" backup --db "$TMP/live.db" --out "$TMP/copy.db" >"$TMP/backup.out" 2>&1; then
  ok "tdlab backup while the server writes ($(cat "$TMP/backup.out"))"
else
  bad "tdlab backup while the server writes: $(cat "$TMP/backup.out")"
fi
after=$(curl -s "$SRV_BASE/api/v1/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
ic=$(sqlite3 "$TMP/copy.db" "PRAGMA integrity_check" 2>&1)
[ "$ic" = ok ] && ok "the backup passes integrity_check" || bad "backup integrity_check: $ic"
inb=$(sqlite3 "$TMP/copy.db" "SELECT count(*) FROM metrics m JOIN metric_keys k ON k.id=m.key_id WHERE m.job_id=$id AND k.name='loss'")
if [ -n "$acked" ] && [ "${inb:-0}" -ge "$acked" ] && [ "$acked" -gt 0 ]; then
  ok "the backup holds every acknowledged point ($acked acknowledged before, $inb in the copy, $after after)"
else
  bad "the backup lost points: acknowledged $acked, copy $inb"
fi
# the copy is a working database: a server opens it and answers the job
"$TDLAB" backup --db "$TMP/live.db" --out "$TMP/copy.db" >/dev/null 2>&1 && bad "backup overwrites an existing file" || ok "backup refuses to overwrite an existing file"
curl -s -X POST "$SRV_BASE/api/v1/jobs/$id/cancel" >/dev/null
srv_term >/dev/null
cp "$TMP/copy.db" "$TMP/restored.db"
srv_start "$TMP/restored.db" --workers 0 || bad "a server starts on the restored copy"
n=$(curl -s "$SRV_BASE/api/v1/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
[ "$n" = "$inb" ] && ok "the restored copy serves the job's $n points" || bad "restored copy serves $n points, want $inb"
srv_term >/dev/null

# ---------------------------------------------------------------- schema upgrades
# snapshot DB COLS_FROM: every row of every data table of COLS_FROM's schema (not
# schema_version, which the upgrade extends) (its columns only, in
# SQL quote form, so NULL, NaN-as-NULL, +-Inf and blobs compare exactly), read from DB.
snapshot() {
  local db=$1 from=$2 t cols
  for t in $(sqlite3 "$from" "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT IN ('sqlite_sequence','schema_version') ORDER BY name"); do
    cols=$(sqlite3 "$from" "SELECT group_concat(name) FROM pragma_table_info('$t')")
    echo "== $t ($cols)"
    sqlite3 -cmd '.mode quote' "$db" "SELECT $cols FROM $t ORDER BY 1,2"
  done
}
for fx in "$ROOT"/tests/fixtures/schema_v*.sql; do
  name=$(basename "$fx" .sql)
  db="$TMP/$name.db"
  sqlite3 "$db" <"$fx"
  cp "$db" "$TMP/$name.orig.db"
  snapshot "$db" "$TMP/$name.orig.db" >"$TMP/$name.before"
  if "$TDLAB" migrate --db "$db" --migrations "$ROOT/migrations" 2>"$TMP/$name.mig"; then
    ok "$name: tdlab migrate upgrades it ($(grep -o 'version=[0-9]* applied=[0-9]*' "$TMP/$name.mig"))"
  else
    bad "$name: tdlab migrate: $(cat "$TMP/$name.mig")"
    continue
  fi
  snapshot "$db" "$TMP/$name.orig.db" >"$TMP/$name.after"
  if cmp -s "$TMP/$name.before" "$TMP/$name.after"; then
    ok "$name: every row of every table is unchanged ($(grep -vc '^==' "$TMP/$name.before") rows)"
  else
    bad "$name: rows changed: $(diff "$TMP/$name.before" "$TMP/$name.after" | head -5)"
  fi
  srv_start "$db" --workers 0 || { bad "$name: server starts"; continue; }
  B="$SRV_BASE/api/v1"
  j=$(curl -s "$B/jobs/1")
  case $j in *'"status":"succeeded"'*'"final_loss":0.25'*) ok "$name: job 1 served" ;; *) bad "$name: job 1: $j" ;; esac
  m=$(curl -s "$B/jobs/3/metrics?keys=loss")
  case $m in *'"value":[1,"Infinity","-Infinity","NaN"]'*) ok "$name: NaN and Inf points kept" ;; *) bad "$name: job 3 metrics: $m" ;; esac
  l=$(curl -s "$B/jobs?tag=a&status=succeeded" | grep -o '"id":[0-9]*' | tr '\n' ' ')
  l2=$(curl -s "$B/jobs?tag=b&status=queued,cancelled&kind=nqm" | grep -o '"id":[0-9]*' | tr '\n' ' ')
  [ "$l" = '"id":1 ' ] && [ "$l2" = '"id":6 ' ] && ok "$name: tag+status lists from the upgraded tag rows" || bad "$name: lists '$l' '$l2'"
  srv_term >/dev/null
  if sqlite3 "$db" "UPDATE jobs SET status='pruned' WHERE id=6" 2>"$TMP/$name.pr"; then
    ok "$name: a job can become pruned (status CHECK of the current schema)"
  else
    bad "$name: pruned refused: $(cat "$TMP/$name.pr")"
  fi
  t=$(sqlite3 "$db" "SELECT status FROM job_tags WHERE job_id=6")
  [ "$t" = pruned ] && ok "$name: the tag rows follow the status" || bad "$name: tag row status '$t'"
done
# a database from a newer tdlab is refused at start-up, naming both versions
cp "$TMP/$(basename "$(ls "$ROOT"/tests/fixtures/schema_v3_*.sql)" .sql).db" "$TMP/newer.db"
sqlite3 "$TMP/newer.db" "INSERT INTO schema_version VALUES(99,'0099_future.sql','2030-01-01T00:00:00.000Z')"
cur=$(ls "$ROOT"/migrations/*.sql | sed 's|.*/||' | sort | tail -1 | cut -c1-4 | sed 's/^0*//')
if "$TDLAB" serve --port 0 --db "$TMP/newer.db" --migrations "$ROOT/migrations" --workers 0 >"$TMP/newer.out" 2>&1; then
  bad "a newer database is refused (the server started)"
else
  grep -q "schema version 99" "$TMP/newer.out" && grep -q "($cur)" "$TMP/newer.out" &&
    ok "a newer database is refused naming both versions: $(grep -o 'the database.*' "$TMP/newer.out" | head -1)" ||
    bad "newer database message: $(cat "$TMP/newer.out")"
fi

# ---------------------------------------------------------------- disk full
# A database capped at 400 pages (1.6 MB; TDLAB_MAX_PAGE_COUNT sets PRAGMA max_page_count on
# every connection, so SQLite reports SQLITE_FULL exactly as on a full disk).
TDLAB_MAX_PAGE_COUNT=400 srv_start "$TMP/full.db" --workers 1 --batch-ms 50 || { bad "capped server starts"; finish; }
B="$SRV_BASE/api/v1"
fid=$(srv_submit '{"kind":"nqm","params":{"dim":20,"mode":"exact","lr":0.5,"max_steps":1000000,"log_every":1}}')
st=""
for _ in $(seq 1 300); do st=$(srv_status "$fid"); [ "$st" = running ] || [ "$st" = queued ] || break; sleep 0.1; done
j=$(curl -s "$B/jobs/$fid")
case $j in *'"status":"failed"'*'database or disk is full'*) ok "the job that filled the database ends failed with the reason" ;; *) bad "job on a full database: $j" ;; esac
kill -0 "$SRV_PID" 2>/dev/null && [ "$(curl -s -o /dev/null -w '%{http_code}' "$SRV_BASE/healthz")" = 200 ] && ok "the server stays up" || bad "the server died on a full database"
tot=$(curl -s "$B/jobs/$fid/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
read -r n mx <<<"$(sqlite3 -separator ' ' "$TMP/full.db" "SELECT count(*), max(step) FROM metrics m JOIN metric_keys k ON k.id=m.key_id WHERE job_id=$fid AND k.name='loss'")"
if [ "${tot:-0}" -gt 0 ] && [ "$tot" = "$n" ] && [ "$mx" = $((n - 1)) ]; then
  ok "every stored point is kept and served ($n points of loss, steps 0..$mx without a gap)"
else
  bad "stored points: api $tot, db $n, max step $mx"
fi
echo "  (reason: $(echo "$j" | grep -o '"error":"[^"]*"'))"
# submissions until one is refused (the last pages may still hold a few small rows)
code=201
for k in $(seq 1 200); do
  code=$(curl -s -o "$TMP/507.json" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary \
    '{"kind":"nqm","name":"'"$(head -c 190 /dev/zero | tr '\0' x)"'","params":{"dim":5,"max_steps":3},"priority":-1}' "$B/jobs")
  [ "$code" = 201 ] || break
done
grep -q '"code":"storage_full"' "$TMP/507.json" && [ "$code" = 507 ] && ok "a submission on the full database gets 507 storage_full (after $((k - 1)) accepted)" || bad "submission on a full database: $code $(cat "$TMP/507.json")"
# free space: delete the failed job's points (tdlab prune would do the same)
sqlite3 "$TMP/full.db" "DELETE FROM metrics WHERE job_id=$fid"
nid=$(srv_submit '{"kind":"nqm","params":{"dim":5,"mode":"exact","max_steps":50,"log_every":1}}')
for _ in $(seq 1 200); do st=$(srv_status "$nid"); [ "$st" = running ] || [ "$st" = queued ] || break; sleep 0.1; done
[ "$st" = succeeded ] && ok "once space is freed, a new job runs and succeeds" || bad "after freeing space: job $nid is '$st'"
srv_term >/dev/null

# ---------------------------------------------------------------- tdlab prune
# Two databases (one made by tdlab migrate: auto_vacuum incremental; one upgraded from the v3
# fixture: no auto_vacuum, so prune VACUUMs it once), each with 200 bulk jobs of 2000 points:
# even ids tagged "old", ids divisible by 4 succeeded, the rest failed; job 9 (v3) stays.
"$TDLAB" migrate --db "$TMP/pr1.db" --migrations "$ROOT/migrations" 2>/dev/null
sqlite3 "$TMP/pr2.db" <"$(ls "$ROOT"/tests/fixtures/schema_v3_*.sql)"
"$TDLAB" migrate --db "$TMP/pr2.db" --migrations "$ROOT/migrations" 2>/dev/null
for db in "$TMP/pr1.db" "$TMP/pr2.db"; do
  sqlite3 "$db" "INSERT OR IGNORE INTO metric_keys(id,name) VALUES(1,'loss');
    INSERT INTO jobs(id,kind,status,params,created_at,finished_at)
      WITH RECURSIVE s(i) AS (SELECT 100 UNION ALL SELECT i+1 FROM s WHERE i<299)
      SELECT i,'nqm',CASE WHEN i%4=0 THEN 'succeeded' ELSE 'failed' END,'{}','2026-01-01T00:00:00.000Z','2026-01-01T00:00:01.000Z' FROM s;
    INSERT INTO job_tags(tag,job_id) SELECT 'old', id FROM jobs WHERE id>=100 AND id%2=0;
    INSERT INTO job_keys SELECT id,1 FROM jobs WHERE id>=100;
    INSERT INTO metrics WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM s WHERE i<1999)
      SELECT j.id,1,s.i,s.i*0.5 FROM jobs j, s WHERE j.id>=100;"
  want_jobs=$(sqlite3 "$db" "SELECT count(*) FROM jobs WHERE id>=100 AND id%4=0")
  want_pts=$((want_jobs * 2000))
  keep=$(sqlite3 "$db" "SELECT count(*) FROM metrics WHERE job_id NOT IN (SELECT id FROM jobs WHERE id>=100 AND id%4=0)")
  out=$("$TDLAB" prune --db "$db" --tag old --status succeeded --older-than 30d)
  case $out in *"dry run: $want_jobs jobs with $want_pts metric points"*) ok "prune dry run counts $want_jobs jobs, $want_pts points ($(basename "$db"))" ;; *) bad "prune dry run: $out" ;; esac
  [ "$(sqlite3 "$db" "SELECT count(*) FROM jobs")" -ge 200 ] && ok "the dry run deletes nothing" || bad "the dry run deleted jobs"
  "$TDLAB" prune --db "$db" --status running >/dev/null 2>&1 && bad "prune refuses running jobs" || ok "prune refuses a status that is not final"
  size0=$(stat -c %s "$db")
  out=$("$TDLAB" prune --db "$db" --tag old --status succeeded --older-than 30d --yes)
  size1=$(stat -c %s "$db")
  left=$(sqlite3 "$db" "SELECT (SELECT count(*) FROM jobs WHERE id>=100 AND id%4=0), (SELECT count(*) FROM metrics WHERE job_id IN (SELECT job_id FROM job_tags WHERE tag='old') AND job_id%4=0), (SELECT count(*) FROM job_tags WHERE job_id>=100 AND job_id%4=0), (SELECT count(*) FROM metrics)")
  [ "$left" = "0|0|0|$keep" ] && ok "prune deleted the $want_jobs jobs with their points and tags, kept the other $keep points" || bad "after prune: $left (want 0|0|0|$keep): $out"
  [ "$size1" -lt $((size0 * 85 / 100)) ] && ok "the file shrank by more than 15 % (a quarter of the points went): $size0 -> $size1 bytes ($(sqlite3 "$db" 'PRAGMA auto_vacuum') = auto_vacuum now)" || bad "file did not shrink: $size0 -> $size1"
  ic=$(sqlite3 "$db" "PRAGMA integrity_check; PRAGMA foreign_key_check" | tr '\n' ' ')
  [ "$ic" = "ok " ] && ok "integrity and foreign keys hold after prune" || bad "after prune: $ic"
done

# ---------------------------------------------------------------- Prometheus
# promtool is not installed here (Debian's prometheus package); the checks below are the
# exposition-format rules it applies that matter here, written out.
srv_start "$TMP/prom.db" --workers 1 || bad "server starts (prometheus)"
pid=$(srv_submit '{"kind":"nqm","params":{"dim":5,"max_steps":20}}')
for _ in $(seq 1 100); do [ "$(srv_status "$pid")" = succeeded ] && break; sleep 0.1; done
curl -s "$SRV_BASE/api/v1/jobs/999999" >/dev/null
curl -s "$SRV_BASE/metrics" >"$TMP/prom.txt"
miss=""
for m in process_cpu_seconds_total process_resident_memory_bytes process_open_fds process_max_fds \
  process_start_time_seconds process_virtual_memory_bytes tdlab_build_info tdlab_db_bytes tdlab_wal_bytes \
  'tdlab_job_duration_seconds_bucket{le="+Inf"} 1' 'tdlab_job_queue_wait_seconds_count 1' \
  'tdlab_http_requests_total{route="jobs_get",code="404"} 1'; do
  grep -qF "$m" "$TMP/prom.txt" || miss="$miss [$m]"
done
[ -z "$miss" ] && ok "Prometheus: process_*, build_info, DB and WAL sizes, job histograms, code label" || bad "Prometheus series missing:$miss"
fds=$(awk '/^process_open_fds /{print $2}' "$TMP/prom.txt")
real=$(ls /proc/"$SRV_PID"/fd | wc -l)
st=$(awk '/^process_start_time_seconds /{printf "%d", $2}' "$TMP/prom.txt")
rss=$(awk '/^process_resident_memory_bytes /{print $2}' "$TMP/prom.txt")
rss_ps=$(($(ps -o rss= -p "$SRV_PID") * 1024))
now=$(date +%s)
[ $((fds - real)) -le 3 ] && [ $((real - fds)) -le 3 ] && [ $((now - st)) -ge 0 ] && [ $((now - st)) -lt 120 ] &&
  awk -v a="$rss" -v b="$rss_ps" 'BEGIN{exit !(a > b/2 && a < b*2)}' &&
  ok "process values agree with /proc and ps (fds $fds vs $real, start $((now - st)) s ago, rss $rss vs $rss_ps)" ||
  bad "process values: fds $fds vs $real, start $st vs now $now, rss $rss vs $rss_ps"
# format: every sample's family has a TYPE line; histogram buckets are cumulative and end in
# +Inf equal to _count; names and label names are valid
fmt=$(awk '
  /^# TYPE / { type[$3] = $4; next }
  /^#/ { next }
  {
    name = $1; sub(/\{.*/, "", name)
    if (name !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*$/) { print "bad name " $1; next }
    fam = name
    if (!(fam in type)) { f2 = fam; sub(/_(bucket|sum|count)$/, "", f2); if (f2 in type) fam = f2; else { print "no TYPE for " name; next } }
    if ($2 !~ /^[-+]?([0-9.]+([eE][-+]?[0-9]+)?|Inf|NaN)$/) print "bad value " $0
    if (name ~ /_bucket$/) { key = $1; sub(/le="[^"]*"/, "", key); if ((key in last) && $2 + 0 < last[key]) print "not cumulative " $0; last[key] = $2 + 0
      if ($1 ~ /le="\+Inf"/) inf[key] = $2 }
  }
  END { }' "$TMP/prom.txt")
[ -z "$fmt" ] && ok "Prometheus text format: TYPE for every family, valid names and values, cumulative buckets" || bad "Prometheus format: $(echo "$fmt" | head -3)"
srv_term >/dev/null

# ---------------------------------------------------------------- If-None-Match / 304
srv_start "$TMP/etag.db" --workers 1 || bad "server starts (etag)"
B="$SRV_BASE/api/v1"
eid=$(srv_submit '{"kind":"nqm","params":{"dim":5,"max_steps":30}}')
for _ in $(seq 1 100); do [ "$(srv_status "$eid")" = succeeded ] && break; sleep 0.1; done
for u in "$B/jobs/$eid" "$B/jobs?limit=5" "$B/jobs/$eid/metrics?keys=loss"; do
  tag=$(curl -s -D - -o "$TMP/etag.body" "$u" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
  c1=$(curl -s -o "$TMP/etag.304" -w '%{http_code}' -H "If-None-Match: $tag" "$u")
  c2=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "0000000000000000"' "$u")
  if [ -n "$tag" ] && [ "$c1" = 304 ] && [ ! -s "$TMP/etag.304" ] && [ "$c2" = 200 ]; then
    ok "If-None-Match: 304 without a body when unchanged, 200 otherwise (${u#"$B"})"
  else
    bad "ETag on ${u#"$B"}: tag '$tag', matching $c1, other $c2"
  fi
done
# a change gives a new tag: a new job changes the list
tag=$(curl -s -D - -o /dev/null "$B/jobs?limit=5" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
srv_submit '{"kind":"nqm","params":{"dim":5,"max_steps":3}}' >/dev/null
c=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $tag" "$B/jobs?limit=5")
[ "$c" = 200 ] && ok "the list's tag changes when a job is added (200 for the old tag)" || bad "stale 304 after a change: $c"
srv_term >/dev/null

# ---------------------------------------------------------------- metric points per job
# A job may write at most --max-job-points points: one that reaches it ends failed with the
# reason, keeping what it stored (a request cannot fill the disk).
srv_start "$TMP/cap.db" --workers 1 --max-job-points 500 || { bad "server starts with --max-job-points"; finish; }
cid=$(srv_submit '{"kind":"nqm","params":{"dim":5,"max_steps":100000,"log_every":1}}')
for _ in $(seq 1 300); do case "$(srv_status "$cid")" in failed|succeeded) break ;; esac; sleep 0.1; done
curl -s "$SRV_BASE/api/v1/jobs/$cid" >"$TMP/cap.json"
stored=$(sqlite3 "$TMP/cap.db" "SELECT count(*) FROM metrics WHERE job_id=$cid")
if grep -q '"status":"failed"' "$TMP/cap.json" && grep -q 'max-job-points' "$TMP/cap.json" &&
   [ "${stored:-0}" -gt 0 ] && [ "${stored:-0}" -le 500 ]; then
  ok "a job that reaches --max-job-points 500 ends failed with the reason ($stored points kept)"
else
  bad "--max-job-points: $(head -c 300 "$TMP/cap.json"), $stored points stored"
fi
srv_term >/dev/null

finish
