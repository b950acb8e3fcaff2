-- 0002_sweeps.sql: sweeps (a spec expanded into ordinary child jobs) and their children's
-- axis values. A child is a row of jobs with jobs.sweep_id set and the tag "sweep:<id>".
-- JSON columns hold text written by the server (trusted, well formed).

CREATE TABLE sweeps (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  name             TEXT    NOT NULL DEFAULT '',
  kind             TEXT    NOT NULL,
  mode             TEXT    NOT NULL DEFAULT 'grid' CHECK (mode IN ('grid','random')),
  -- queued: no child started yet; running: some child queued or running; finished: every
  -- child ended; cancelled: cancelled by request (children may still be stopping).
  status           TEXT    NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued','running','finished','cancelled')),
  spec             TEXT    NOT NULL,           -- the normalized spec (td_sweep_expand)
  n_children       INTEGER NOT NULL,
  max_concurrency  INTEGER NOT NULL DEFAULT 0, -- 0: no cap; enforced by the job claim
  early_stopping   TEXT,                       -- normalized rule (td_es_to_json) or NULL
  fit_spec         TEXT,                       -- normalized fit spec or NULL
  fit              TEXT,                       -- cached fit result (or {"error": ...}) or NULL
  fit_n            INTEGER NOT NULL DEFAULT -1,-- succeeded children the cached fit saw
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at       TEXT    NOT NULL,
  finished_at      TEXT
);

-- One row per child, in expansion order (idx), with the values of its point.
CREATE TABLE sweep_children (
  sweep_id    INTEGER NOT NULL REFERENCES sweeps (id) ON DELETE CASCADE,
  idx         INTEGER NOT NULL,              -- point * n_seeds + seed index
  job_id      INTEGER NOT NULL UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
  point       INTEGER NOT NULL,
  axis_values TEXT    NOT NULL,              -- {"optimizer.lr": 0.01, "seed": 0}
  PRIMARY KEY (sweep_id, idx)
) WITHOUT ROWID;

-- The claim counts a sweep's running children; counts by status per sweep.
CREATE INDEX jobs_sweep_status ON jobs (sweep_id, status) WHERE sweep_id IS NOT NULL;
