-- 0005_scale.sql: indexes so that every job-list filter and combination is answered by keyset
-- pagination from an index (a page costs the same at any depth and any number of jobs).
-- store_job_list (server/store.c) builds one "ids below the cursor, newest first, LIMIT n"
-- subquery per requested status, each walking one of these indexes in id order:
--   status        jobs_status_id (status, id)
--   kind [+status] jobs_kind_status (kind, status, rowid)   [kind alone: jobs_kind_id]
--   sweep [+status] jobs_sweep_status (sweep_id, status, rowid) from 0002
--   tag [+status|+kind] job_tags_status / job_tags_kind below, on the tag rows themselves.
-- A job's status and kind are copied onto its tag rows (kept in step by the triggers below),
-- so that tag+status and tag+kind need no look-up of the job row per skipped tag row.

CREATE INDEX jobs_kind_status ON jobs (kind, status);

ALTER TABLE job_tags ADD COLUMN status TEXT NOT NULL DEFAULT '';
ALTER TABLE job_tags ADD COLUMN kind TEXT NOT NULL DEFAULT '';
UPDATE job_tags SET status = (SELECT j.status FROM jobs j WHERE j.id = job_tags.job_id),
                    kind   = (SELECT j.kind FROM jobs j WHERE j.id = job_tags.job_id);
CREATE INDEX job_tags_status ON job_tags (tag, status, job_id);
CREATE INDEX job_tags_kind ON job_tags (tag, kind, job_id);
-- A job's tags (the triggers, ON DELETE CASCADE and tdlab prune look them up by job).
CREATE INDEX job_tags_job ON job_tags (job_id);

-- Whoever inserts a tag row (the server, or a later tag edit) gets status and kind filled in.
CREATE TRIGGER job_tags_fill AFTER INSERT ON job_tags BEGIN
  UPDATE job_tags SET status = (SELECT j.status FROM jobs j WHERE j.id = NEW.job_id),
                      kind   = (SELECT j.kind FROM jobs j WHERE j.id = NEW.job_id)
   WHERE tag = NEW.tag AND job_id = NEW.job_id;
END;
CREATE TRIGGER jobs_status_tags AFTER UPDATE OF status ON jobs
  WHEN NEW.status IS NOT OLD.status BEGIN
  UPDATE job_tags SET status = NEW.status WHERE job_id = NEW.id;
END;

-- Metric points of a job are deleted with it (tdlab prune); metrics has no foreign key
-- (a point insert must not pay for a parent look-up), so the deletion is explicit there.
