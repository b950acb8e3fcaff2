-- 0003_checkpoints.sql: uploaded checkpoints (POST /api/v1/checkpoints) and the parent link
-- of a job started with params.fork (a child continues its parent at parent_step).
-- A checkpoint written by a job is an artifact of that job (checkpoint_step<S>.safetensors).

CREATE TABLE checkpoints (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  created_at TEXT    NOT NULL,
  size       INTEGER NOT NULL,      -- bytes of the file
  tensors    TEXT    NOT NULL,      -- JSON array [{"name","dtype","shape"}], header order
  bytes      BLOB    NOT NULL       -- the safetensors file, validated on upload
);

-- A fork's parent job and the step it continues from (both NULL for other jobs).
ALTER TABLE jobs ADD COLUMN parent_job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL;
ALTER TABLE jobs ADD COLUMN parent_step INTEGER;
-- The children of a job, in id order (GET /api/v1/jobs/{id} lists them).
CREATE INDEX jobs_parent ON jobs (parent_job_id, id) WHERE parent_job_id IS NOT NULL;
