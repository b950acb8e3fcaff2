-- 0001_init.sql: jobs, tags, metrics (compact keys) and artifacts.
-- Applied by store_migrate inside one transaction, recorded in schema_version.
-- Times are RFC 3339 UTC text with milliseconds, e.g. 2024-05-01T12:00:00.123Z.

CREATE TABLE jobs (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  kind             TEXT    NOT NULL,
  name             TEXT    NOT NULL DEFAULT '',
  status           TEXT    NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued','running','succeeded','failed','diverged','cancelled','pruned')),
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
  summary          TEXT                        -- JSON object or NULL
);
-- The claim: the highest priority, then the oldest queued job.
CREATE INDEX jobs_claim ON jobs (status, priority DESC, id);
-- Listing newest first, filtered by status, kind or sweep.
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_kind_id ON jobs (kind, id);
CREATE INDEX jobs_sweep_id ON jobs (sweep_id, id) WHERE sweep_id IS NOT NULL;

CREATE TABLE job_tags (
  tag    TEXT    NOT NULL,
  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  PRIMARY KEY (tag, job_id)
) WITHOUT ROWID;

-- Metric names are stored once; points refer to them by a small integer.
CREATE TABLE metric_keys (
  id   INTEGER PRIMARY KEY,
  name TEXT    NOT NULL UNIQUE
);

-- The keys each job has reported (so listing them needs no scan of its points).
CREATE TABLE job_keys (
  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  key_id INTEGER NOT NULL REFERENCES metric_keys (id),
  PRIMARY KEY (job_id, key_id)
) WITHOUT ROWID;

-- One row per (job, key, step): a re-run after a crash (deterministic from the seed) is
-- inserted with INSERT OR IGNORE, so it never duplicates a step and never replaces a point
-- that was already committed. value NULL encodes NaN (SQLite stores NaN as NULL);
-- +-Infinity are stored as REAL.
CREATE TABLE metrics (
  job_id INTEGER NOT NULL,
  key_id INTEGER NOT NULL,
  step   INTEGER NOT NULL,
  value  REAL,
  PRIMARY KEY (job_id, key_id, step)
) WITHOUT ROWID;

CREATE TABLE artifacts (
  job_id       INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  name         TEXT    NOT NULL,
  content_type TEXT    NOT NULL,
  data         BLOB    NOT NULL,
  created_at   TEXT    NOT NULL,
  PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
