-- 0004_metric_pyramid.sql: pre-reduced buckets of every metric series, so that a downsampled
-- read costs what its output costs; and wall-clock anchors of the points, for a time x-axis.
--
-- metric_pyr: level L (1..4) bucket b of (job, key) holds the points with
-- floor(step / 32^L) = b: their count and the point of least and of greatest value (a NaN
-- value, stored as NULL, never wins the minimum unless it is alone and always wins the
-- maximum, as in the raw downsampler). The metric writer keeps it up to date as points are
-- committed (store.c); rows of the finer levels are merged with an upsert.
CREATE TABLE metric_pyr (
  job_id   INTEGER NOT NULL,
  key_id   INTEGER NOT NULL,
  level    INTEGER NOT NULL,
  bucket   INTEGER NOT NULL,
  cnt      INTEGER NOT NULL,
  min_step INTEGER NOT NULL,
  min_val  REAL,
  max_step INTEGER NOT NULL,
  max_val  REAL,
  PRIMARY KEY (job_id, key_id, level, bucket)
) WITHOUT ROWID;

-- metric_times: (step, unix milliseconds) anchors of a job's clock, written once per batch of
-- metric points (the last step of the batch, at the time of its commit) and for the first
-- point. The time of any step is interpolated linearly between anchors, so its resolution
-- is the writer's batch interval (250 ms by default). One row per batch keeps the bytes per
-- point as they were.
CREATE TABLE metric_times (
  job_id INTEGER NOT NULL,
  step   INTEGER NOT NULL,
  t_ms   INTEGER NOT NULL,
  PRIMARY KEY (job_id, step)
) WITHOUT ROWID;

-- The pyramid of the points already stored (level 1 from the points, each level from the one
-- below). Equal values keep the earliest step.
INSERT INTO metric_pyr
  SELECT DISTINCT job_id, key_id, 1, b,
         count(*) OVER w,
         first_value(step) OVER wmin, first_value(value) OVER wmin,
         first_value(step) OVER wmax, first_value(value) OVER wmax
  FROM (SELECT job_id, key_id, step >> 5 AS b, step, value FROM metrics)
  WINDOW w AS (PARTITION BY job_id, key_id, b),
         wmin AS (PARTITION BY job_id, key_id, b ORDER BY value IS NULL, value, step
                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
         wmax AS (PARTITION BY job_id, key_id, b ORDER BY value IS NULL DESC, value DESC, step
                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING);
INSERT INTO metric_pyr
  SELECT DISTINCT job_id, key_id, 2, b,
         sum(cnt) OVER w,
         first_value(min_step) OVER wmin, first_value(min_val) OVER wmin,
         first_value(max_step) OVER wmax, first_value(max_val) OVER wmax
  FROM (SELECT job_id, key_id, bucket >> 5 AS b, cnt, min_step, min_val, max_step, max_val
        FROM metric_pyr WHERE level = 1)
  WINDOW w AS (PARTITION BY job_id, key_id, b),
         wmin AS (PARTITION BY job_id, key_id, b ORDER BY min_val IS NULL, min_val, min_step
                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
         wmax AS (PARTITION BY job_id, key_id, b ORDER BY max_val IS NULL DESC, max_val DESC,
                  max_step ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING);
INSERT INTO metric_pyr
  SELECT DISTINCT job_id, key_id, 3, b,
         sum(cnt) OVER w,
         first_value(min_step) OVER wmin, first_value(min_val) OVER wmin,
         first_value(max_step) OVER wmax, first_value(max_val) OVER wmax
  FROM (SELECT job_id, key_id, bucket >> 5 AS b, cnt, min_step, min_val, max_step, max_val
        FROM metric_pyr WHERE level = 2)
  WINDOW w AS (PARTITION BY job_id, key_id, b),
         wmin AS (PARTITION BY job_id, key_id, b ORDER BY min_val IS NULL, min_val, min_step
                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
         wmax AS (PARTITION BY job_id, key_id, b ORDER BY max_val IS NULL DESC, max_val DESC,
                  max_step ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING);
INSERT INTO metric_pyr
  SELECT DISTINCT job_id, key_id, 4, b,
         sum(cnt) OVER w,
         first_value(min_step) OVER wmin, first_value(min_val) OVER wmin,
         first_value(max_step) OVER wmax, first_value(max_val) OVER wmax
  FROM (SELECT job_id, key_id, bucket >> 5 AS b, cnt, min_step, min_val, max_step, max_val
        FROM metric_pyr WHERE level = 3)
  WINDOW w AS (PARTITION BY job_id, key_id, b),
         wmin AS (PARTITION BY job_id, key_id, b ORDER BY min_val IS NULL, min_val, min_step
                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
         wmax AS (PARTITION BY job_id, key_id, b ORDER BY max_val IS NULL DESC, max_val DESC,
                  max_step ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING);
