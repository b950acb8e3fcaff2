-- 0006_remote.sql: runs that execute elsewhere (issue 16). jobs gains
--   executor      who runs it: 'local' (a worker thread of the server), 'remote' (`tdlab run
--                 --report` anywhere, started with POST /api/v1/jobs/{id}/start), 'slurm' (the
--                 Slurm executor) or 'external' (an outside script, POST /api/v1/runs);
--   executor_ref  the executor's own id of the run (e.g. the Slurm job id "123" or "123_4");
--   run_token_hash  hex SHA-256 of the current run token (the token itself is never stored);
--   heartbeat_at  RFC 3339 time of the last heartbeat (or start) of a remote/slurm/external run;
-- and the status 'crashed': an external run whose heartbeats stopped (it may be resumed).
-- SQLite cannot change a CHECK constraint, so the table is rebuilt (the procedure of
-- https://sqlite.org/lang_altertable.html#otheralter; store_migrate runs migrations with
-- foreign_keys off and checks PRAGMA foreign_key_check before each commit). Every index and
-- trigger of 0001-0005 on jobs is made again below, and the AUTOINCREMENT high-water mark is
-- kept (ids of deleted jobs are never reused).

CREATE TEMP TABLE m0006_seq AS SELECT seq FROM sqlite_sequence WHERE name = 'jobs';
-- job_tags_fill (0005) reads jobs; it is dropped while the table is renamed, then made again.
DROP TRIGGER IF EXISTS job_tags_fill;

CREATE TABLE jobs_new (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  kind             TEXT    NOT NULL,
  name             TEXT    NOT NULL DEFAULT '',
  status           TEXT    NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued','running','succeeded','failed','diverged','cancelled','pruned','crashed')),
  params           TEXT    NOT NULL,           -- JSON object, defaults filled in
  tags             TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings (copy of job_tags)
  priority         INTEGER NOT NULL DEFAULT 0, -- higher runs first
  attempt          INTEGER NOT NULL DEFAULT 1, -- 1 + restarts after a crash
  sweep_id         INTEGER,                    -- parent sweep, when there is one
  progress_done    INTEGER NOT NULL DEFAULT 0,
  progress_total   INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at       TEXT    NOT NULL,
  started_at       TEXT,
  finished_at      TEXT,
  error            TEXT,
  summary          TEXT,                       -- JSON object or NULL
  parent_job_id    INTEGER REFERENCES jobs (id) ON DELETE SET NULL, -- 0003
  parent_step      INTEGER,                                          -- 0003
  executor         TEXT    NOT NULL DEFAULT 'local'
                   CHECK (executor IN ('local','remote','slurm','external')),
  executor_ref     TEXT,
  run_token_hash   TEXT,
  heartbeat_at     TEXT
);
INSERT INTO jobs_new (id, kind, name, status, params, tags, priority, attempt, sweep_id,
                      progress_done, progress_total, cancel_requested, created_at, started_at,
                      finished_at, error, summary, parent_job_id, parent_step)
  SELECT id, kind, name, status, params, tags, priority, attempt, sweep_id, progress_done,
         progress_total, cancel_requested, created_at, started_at, finished_at, error, summary,
         parent_job_id, parent_step FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM m0006_seq), 0))
 WHERE name = 'jobs';
DROP TABLE m0006_seq;

-- 0001
CREATE INDEX jobs_claim ON jobs (status, priority DESC, id);
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_kind_id ON jobs (kind, id);
CREATE INDEX jobs_sweep_id ON jobs (sweep_id, id) WHERE sweep_id IS NOT NULL;
-- 0002
CREATE INDEX jobs_sweep_status ON jobs (sweep_id, status) WHERE sweep_id IS NOT NULL;
-- 0003
CREATE INDEX jobs_parent ON jobs (parent_job_id, id) WHERE parent_job_id IS NOT NULL;
-- 0005
CREATE INDEX jobs_kind_status ON jobs (kind, status);
CREATE TRIGGER job_tags_fill AFTER INSERT ON job_tags BEGIN
  UPDATE job_tags SET status = (SELECT j.status FROM jobs j WHERE j.id = NEW.job_id),
                      kind   = (SELECT j.kind FROM jobs j WHERE j.id = NEW.job_id)
   WHERE tag = NEW.tag AND job_id = NEW.job_id;
END;
CREATE TRIGGER jobs_status_tags AFTER UPDATE OF status ON jobs
  WHEN NEW.status IS NOT OLD.status BEGIN
  UPDATE job_tags SET status = NEW.status WHERE job_id = NEW.id;
END;
-- 0006: the lease check walks the running runs of the executors that have leases.
CREATE INDEX jobs_lease ON jobs (status, executor, heartbeat_at) WHERE executor <> 'local';
