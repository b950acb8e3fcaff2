"""tdlab.py: the Python client of the tdlab server (standard library only).

Submit and follow jobs, read their metrics, run sweeps and fits, and track a training script of
your own (a PyTorch loop, say) as a tdlab run:

    import tdlab
    run = tdlab.start_run(name="mlp", params={"lr": 0.1})     # line 1
    for step in range(1000):
        loss = train_step()
        run.log({"loss": loss}, step=step)                      # line 2
    # run.finish() is optional: at a normal exit the run is finished as succeeded, after an
    # uncaught exception as failed; every buffered point is sent first.

The server is TDLAB_URL (default http://127.0.0.1:8080) and the lab token TDLAB_TOKEN (sent as
`Authorization: Bearer` on every call except the ingestion of a run, which uses the run's own
token), unless Client(url=..., token=...) says otherwise. The module-level functions
(tdlab.submit, tdlab.get, ...) use one default client made from the environment at first use
(tdlab.configure() replaces it).

Failures raise tdlab.Error, which carries the server's error code, message and field and the
HTTP status (None when no answer came). Bounds (all can be changed per client or per run):
  - a call of the client retries a refused connection and a 503 at most `retries` (4) times,
    waiting 0.25 s doubling (3.75 s in all), then raises Error(code="unreachable" or the 503);
  - a run's points wait in a buffer of at most `max_buffer` (1,000,000) points; when it is full
    run.log() blocks until the sender has made room (it never drops a point);
  - the sender posts batches of at most 5000 points and 512 KiB every 0.5 s; while the server
    is away it retries with backoff 0.2 s doubling to 10 s, for at most `retry_timeout` (900 s,
    15 minutes) per batch; past that the run is broken: log() and finish() raise Error, and the
    points not sent are counted in the message.
See README.md, "Python client", for the whole reference.
"""

import atexit
import http.client
import itertools
import json
import math
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = [
    "Client", "Run", "Error", "JobFailed", "WaitTimeout", "Metrics", "Rows", "configure",
    "default_client", "submit", "get", "wait", "cancel", "metrics", "sweep", "get_sweep", "fit",
    "jobs", "start_run", "resume_run",
]
__version__ = "0.1.0"

DEFAULT_URL = "http://127.0.0.1:8080"
FINAL = ("succeeded", "failed", "diverged", "cancelled", "pruned", "crashed")
FAILED = ("failed", "diverged", "crashed")

# The server's limits on one POST /api/v1/jobs/{id}/points (PROTOCOL16.md: at most 10000 points;
# the default --max-body is 1 MiB), kept well inside.
MAX_BATCH_POINTS = 5000
MAX_BATCH_BYTES = 512 * 1024
MAX_STEP = 2 ** 53  # steps are exact in a double (the server's limit)


class Error(Exception):
    """A failed call: the server's error envelope {"error": {"code", "message", "field"}} with the
    HTTP status, or no answer at all (status None, code "unreachable").

    Attributes: status (int or None), code (str or None), message (str), field (str or None),
    method and path of the request (str or None)."""

    def __init__(self, message, status=None, code=None, field=None, method=None, path=None):
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.method = method
        self.path = path
        super().__init__(self.__str__())

    def __str__(self):
        where = f"{self.method} {self.path}: " if self.method and self.path else ""
        head = " ".join(str(x) for x in (self.status, self.code) if x is not None)
        field = f" (field {self.field})" if self.field else ""
        return f"tdlab: {where}{head + ': ' if head else ''}{self.message}{field}"


class JobFailed(Error):
    """wait() saw the job end failed, diverged or crashed (raise_on_failure=True). `job` is the
    final job record; `message` is the job's error."""

    def __init__(self, job):
        self.job = job
        super().__init__(f"job {job.get('id')} ended {job.get('status')}: "
                         f"{job.get('error') or 'no error message'}", code=job.get("status"))


class WaitTimeout(Error, TimeoutError):
    """wait() gave up after its timeout; `job` is the last record seen."""

    def __init__(self, job, timeout):
        self.job = job
        super().__init__(f"job {job.get('id')} is still {job.get('status')} after {timeout:g} s",
                         code="timeout")


# ------------------------------------------------------------------ JSON helpers

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _num(v):
    """A metric value from the server: a number, or "NaN"/"Infinity"/"-Infinity" as a float."""
    if isinstance(v, str):
        return _NONFINITE.get(v, v)
    return v


def _finite_str(x):
    """A float as JSON can carry it: itself when finite, else "NaN"/"Infinity"/"-Infinity"."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _plain(o):
    """o made JSON-encodable: dicts, lists, tuples recursively; numpy/torch scalars and arrays
    through .item()/.tolist(); non-finite floats as the server's strings. Raises TypeError for
    anything else (naming its type)."""
    if o is None or isinstance(o, (bool, int, str)):
        return o
    if isinstance(o, float):
        return _finite_str(o)
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if hasattr(o, "tolist") and callable(o.tolist):  # numpy array or scalar, torch tensor
        return _plain(o.tolist())
    if hasattr(o, "item") and callable(o.item):
        return _plain(o.item())
    raise TypeError(f"tdlab: a value of type {type(o).__name__} cannot be sent as JSON")


def _dumps(o):
    return json.dumps(_plain(o), separators=(",", ":"), allow_nan=False).encode()


def _pandas():
    try:
        import pandas  # noqa: PLC0415 (optional dependency)
    except ImportError as e:
        raise ImportError(
            "tdlab: a DataFrame needs pandas, which is not installed in this Python "
            f"({sys.executable}); install it (pip install pandas, or apt install python3-pandas) "
            "or use the plain result (as_dataframe=False)") from e
    return pandas


def _have_pandas():
    import importlib.util  # noqa: PLC0415
    return importlib.util.find_spec("pandas") is not None


class Metrics(dict):
    """{key: {"step": [int, ...], "value": [float, ...]}} (plus "time": [unix seconds] when asked
    with time=True), values as floats with NaN and infinities restored. The job id is `job_id`."""

    job_id = None

    def to_pandas(self, wide=True):
        """A pandas DataFrame: wide (default) has one column per key indexed by step (outer join
        of the steps; a key without a point at a step reads NaN there), long has the columns
        key, step, value. Raises ImportError with a clear message when pandas is missing."""
        pd = _pandas()
        if not wide:
            rows = [(k, s, v) for k, col in self.items() for s, v in zip(col["step"], col["value"])]
            return pd.DataFrame(rows, columns=["key", "step", "value"])
        frame = pd.DataFrame({k: pd.Series(col["value"], index=col["step"], dtype="float64")
                              for k, col in self.items()})
        frame.index.name = "step"
        return frame.sort_index()


class Rows(list):
    """A list of flat dicts (one per job): id, name, kind, status, tags, created_at, started_at,
    finished_at, error, then every param as "params.<dotted path>" and every summary value as
    "summary.<dotted path>" (lists kept whole; "NaN"/"Infinity" restored as floats)."""

    def to_pandas(self):
        """A pandas DataFrame with one row per job (ImportError when pandas is missing)."""
        return _pandas().DataFrame(list(self))


def _flatten(prefix, o, out):
    if isinstance(o, dict) and o:
        for k, v in o.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = _num(o)


def _row(job):
    row = {k: job.get(k) for k in ("id", "name", "kind", "status", "tags", "created_at",
                                   "started_at", "finished_at", "error")}
    _flatten("params", job.get("params") or {}, row)
    _flatten("summary", job.get("summary") or {}, row)
    row.pop("params", None)
    row.pop("summary", None)
    return row


# ------------------------------------------------------------------ the client

class Client:
    """A connection to one tdlab server.

    url: the server's base URL (default: $TDLAB_URL, else http://127.0.0.1:8080).
    token: the lab token (default: $TDLAB_TOKEN; None sends no Authorization header).
    timeout: seconds for one HTTP request. retries, backoff: a refused connection or a 503 is
    retried `retries` times, waiting backoff, 2 backoff, ... seconds (default 4 retries from
    0.25 s: 3.75 s in all); a GET is also retried after a reset or a timeout."""

    def __init__(self, url=None, token=None, timeout=30.0, retries=4, backoff=0.25):
        url = url or os.environ.get("TDLAB_URL") or DEFAULT_URL
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.token = token if token is not None else (os.environ.get("TDLAB_TOKEN") or None)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def __repr__(self):
        return f"tdlab.Client({self.url!r})"

    # ---------------------------------------------------------------- HTTP

    def _once(self, method, path, data, headers, timeout):
        """One request: (status, headers, body bytes). HTTP errors come back as statuses; no
        answer raises OSError (urllib.error.URLError, socket.timeout, ConnectionError)."""
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            try:
                body = e.read()
            except OSError:
                body = b""
            return e.code, e.headers, body

    def request(self, method, path, body=None, *, query=None, bearer=None, raw=None,
                content_type="application/json", idempotent=None, retries=None, timeout=None):
        """Send one API request and return the decoded JSON answer (None for an empty body).

        path: e.g. "/api/v1/jobs/3"; query: dict of query parameters (None values left out);
        body: an object sent as JSON, or raw bytes in `raw` with `content_type`; bearer: the
        token for Authorization (default the lab token). Raises Error for a 4xx/5xx answer (with
        the server's code, message and field) and after the bounded retries when no answer
        came (code "unreachable")."""
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                path += "?" + urllib.parse.urlencode(q, quote_via=urllib.parse.quote)
        headers = {"Accept": "application/json", "User-Agent": f"tdlab-python/{__version__}"}
        tok = bearer if bearer is not None else self.token
        if tok:
            headers["Authorization"] = "Bearer " + tok
        data = None
        if raw is not None:
            data = bytes(raw)
            headers["Content-Type"] = content_type
        elif body is not None:
            data = _dumps(body)
            headers["Content-Type"] = "application/json"
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        retries = self.retries if retries is None else retries
        timeout = self.timeout if timeout is None else timeout
        t0 = time.monotonic()
        for attempt in itertools.count():
            last = attempt >= retries
            try:
                status, hdrs, payload = self._once(method, path, data, headers, timeout)
            except (OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                refused = isinstance(reason, ConnectionRefusedError)
                if last or not (refused or idempotent):
                    raise Error(f"could not reach {self.url}: {reason} (gave up after "
                                f"{attempt + 1} attempt{'s' if attempt else ''} over "
                                f"{time.monotonic() - t0:.1f} s)", code="unreachable",
                                method=method, path=path) from None
                time.sleep(self.backoff * 2 ** attempt)
                continue
            if status == 503 and not last:
                ra = hdrs.get("Retry-After") if hdrs else None
                try:
                    wait_s = min(float(ra), 10.0) if ra else self.backoff * 2 ** attempt
                except ValueError:
                    wait_s = self.backoff * 2 ** attempt
                time.sleep(wait_s)
                continue
            return self._decode(status, payload, method, path)

    @staticmethod
    def _decode(status, payload, method, path):
        try:
            doc = json.loads(payload) if payload else None
        except ValueError:
            doc = None
            if status < 400:
                raise Error(f"the answer is not JSON: {payload[:200]!r}", status=status,
                            code="bad_response", method=method, path=path) from None
        if status >= 400:
            err = doc.get("error") if isinstance(doc, dict) else None
            if isinstance(err, dict):
                raise Error(err.get("message") or "", status=status, code=err.get("code"),
                            field=err.get("field"), method=method, path=path)
            text = payload[:200].decode("utf-8", "replace") if payload else "(empty body)"
            raise Error(text, status=status, code="http_error", method=method, path=path)
        return doc

    # ---------------------------------------------------------------- jobs

    def submit(self, kind, params=None, name=None, tags=None, priority=None, executor=None):
        """POST /api/v1/jobs: queue a job of `kind` with `params` (checked against the kind's
        schema, defaults filled in by the server); name (str), tags (list of str), priority
        (int), executor ("local", "remote", "slurm"). Returns the new job's id (int). Raises
        Error (400 naming the field for bad params or an unknown kind; 503 when the queue stays
        full through the retries)."""
        body = {"kind": kind, "params": params if params is not None else {}}
        for k, v in (("name", name), ("tags", tags), ("priority", priority),
                     ("executor", executor)):
            if v is not None:
                body[k] = list(v) if k == "tags" else v
        return self.request("POST", "/api/v1/jobs", body)["id"]

    def get(self, job_id):
        """GET /api/v1/jobs/{id}: the job record (dict: id, kind, name, status, params,
        progress {done, total}, summary, error, times, attempt, tags, ...). Error 404 if none."""
        return self.request("GET", f"/api/v1/jobs/{int(job_id)}")

    def wait(self, job_id, timeout=None, poll=1.0, raise_on_failure=True, progress=None):
        """Poll the job every `poll` seconds until it ends (succeeded, failed, diverged,
        cancelled, pruned, or crashed) and return its final record.

        raise_on_failure (default True): raise JobFailed (an Error carrying the record) when it
        ended failed, diverged or crashed; cancelled and pruned are returned, not raised.
        timeout: seconds (None: no limit); past it WaitTimeout is raised. progress: draw a
        progress bar on stderr (default: only when stderr is a terminal)."""
        if progress is None:
            progress = _isatty(sys.stderr)
        t0 = time.monotonic()
        drawn = False
        try:
            while True:
                job = self.get(job_id)
                if progress:
                    _draw_bar(job, time.monotonic() - t0)
                    drawn = True
                if job.get("status") in FINAL:
                    break
                if timeout is not None and time.monotonic() - t0 >= timeout:
                    raise WaitTimeout(job, timeout)
                time.sleep(poll if timeout is None else
                           max(0.0, min(poll, timeout - (time.monotonic() - t0))))
        finally:
            if drawn:
                sys.stderr.write("\n")
                sys.stderr.flush()
        if raise_on_failure and job.get("status") in FAILED:
            raise JobFailed(job)
        return job

    def cancel(self, job_id):
        """POST /api/v1/jobs/{id}/cancel: a queued job is cancelled at once, a running one at its
        next step. Returns the server's answer (the job, or {"cancel_requested": true, ...}).
        Error 404 (no such job), 409 (already finished)."""
        return self.request("POST", f"/api/v1/jobs/{int(job_id)}/cancel", idempotent=True)

    def metrics(self, job_id, keys=None, max_points=None, since_step=None, time=False,
                as_dataframe=False):
        """GET /api/v1/jobs/{id}/metrics: the job's series as columns,
        Metrics {key: {"step": [...], "value": [...]}} with "NaN"/"Infinity"/"-Infinity" turned
        back into floats. keys: a list of keys (default all); max_points: downsample each series
        to at most this many points (keeping first, last and each bucket's min and max; default:
        every point); since_step: only steps >= it; time=True adds "time" (unix seconds).
        as_dataframe=True returns Metrics.to_pandas() instead (ImportError without pandas)."""
        q = {"keys": ",".join(keys) if keys else None, "max_points": max_points,
             "since_step": since_step, "time": 1 if time else None}
        doc = self.request("GET", f"/api/v1/jobs/{int(job_id)}/metrics", query=q)
        out = Metrics()
        out.job_id = doc.get("job_id")
        for k, col in (doc.get("metrics") or {}).items():
            c = {"step": list(col.get("step", [])),
                 "value": [_num(v) for v in col.get("value", [])]}
            if "time" in col:
                c["time"] = list(col["time"])
            out[k] = c
        return out.to_pandas() if as_dataframe else out

    def jobs(self, q=None, kind=None, status=None, tag=None, sweep=None, max_rows=None,
             as_dataframe=None, page_size=1000):
        """GET /api/v1/jobs, following every page (next_cursor), newest first: the matching
        jobs as flat rows (see Rows). q: a search ("optimizer.lr<0.1 and summary.test_acc>0.8");
        kind; status (a str or a list of them); tag; sweep (id); max_rows: stop after this many.
        as_dataframe: None (default) gives a pandas DataFrame when pandas is installed, else
        Rows (a list of dicts); True requires pandas (ImportError); False always gives Rows.
        page_size: jobs per request (1..1000)."""
        if status is not None and not isinstance(status, str):
            status = ",".join(status)
        query = {"q": q, "kind": kind, "status": status, "tag": tag, "sweep": sweep,
                 "limit": page_size}
        rows = Rows()
        while True:
            doc = self.request("GET", "/api/v1/jobs", query=query)
            for j in doc.get("jobs", []):
                rows.append(_row(j))
                if max_rows is not None and len(rows) >= max_rows:
                    break
            cur = doc.get("next_cursor")
            if not cur or (max_rows is not None and len(rows) >= max_rows):
                break
            query["cursor"] = cur
        if as_dataframe or (as_dataframe is None and _have_pandas()):
            return rows.to_pandas()
        return rows

    # ---------------------------------------------------------------- sweeps and fits

    def sweep(self, kind, axes, base=None, name=None, mode=None, seeds=None, samples=None,
              seed=None, max_concurrency=None, early_stopping=None, fit=None, **extra):
        """POST /api/v1/sweeps (docs/sweeps.md): `axes` maps a parameter path to {"values": [...]}
        (or {"uniform"/"log_uniform": [lo, hi]} with mode="random" and samples=N); base: the
        params every child shares; seeds: a count or a list; early_stopping, fit: as in the
        docs. Other body fields go through **extra. Returns the sweep record (dict with "id"
        and "children"). Error 400 naming the axis and point when a child would be invalid."""
        body = {"kind": kind, "axes": axes}
        for k, v in (("base", base), ("name", name), ("mode", mode), ("seeds", seeds),
                     ("samples", samples), ("seed", seed), ("max_concurrency", max_concurrency),
                     ("early_stopping", early_stopping), ("fit", fit)):
            if v is not None:
                body[k] = v
        body.update(extra)
        return self.request("POST", "/api/v1/sweeps", body)

    def get_sweep(self, sweep_id, children=True):
        """GET /api/v1/sweeps/{id}: the sweep with its counts, fit and (children=True) children."""
        return self.request("GET", f"/api/v1/sweeps/{int(sweep_id)}",
                            query=None if children else {"children": 0})

    def fit(self, law, points, **options):
        """POST /api/v1/fits: fit `law` ("power_offset" with points {x, y}, "chinchilla" with
        {N, D, L}, "critical_batch" with {B, S}) to `points` (a list of dicts); options such as
        bootstrap=200, seed=0. Returns the fit (params with 95% intervals, residuals, curve)."""
        body = {"law": law, "points": list(points)}
        body.update(options)
        return self.request("POST", "/api/v1/fits", body, idempotent=True)

    # ---------------------------------------------------------------- runs

    def start_run(self, name=None, params=None, tags=None, meta=True, **run_options):
        """POST /api/v1/runs: create a tracked run (kind external, status running) and return a
        Run that posts to it in the background. params are stored as given, plus (meta=True)
        params["_meta"] = {"git_commit", "git_dirty", "host", "python", "torch", "script"}
        (what can be found; see run_meta()). run_options go to Run (batch_size, flush_interval,
        heartbeat_interval, max_buffer, retry_timeout, finish_at_exit, total)."""
        params = dict(params or {})
        if meta:
            params.setdefault("_meta", run_meta())
        body = {"params": params}
        if name is not None:
            body["name"] = name
        if tags is not None:
            body["tags"] = list(tags)
        doc = self.request("POST", "/api/v1/runs", body)
        return Run(self, doc["id"], doc["token"],
                   server_heartbeat_timeout=doc.get("heartbeat_timeout_s"), **run_options)

    def resume_run(self, run_id, **run_options):
        """POST /api/v1/runs/{id}/resume: take up a crashed (or running) external run again with
        a new token (the old one stops working). Returns a Run; logging goes on from there."""
        doc = self.request("POST", f"/api/v1/runs/{int(run_id)}/resume", {})
        return Run(self, doc["id"], doc["token"],
                   server_heartbeat_timeout=doc.get("heartbeat_timeout_s"), **run_options)


def _isatty(f):
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


def _draw_bar(job, elapsed, width=30):
    p = job.get("progress") or {}
    done, total = p.get("done") or 0, p.get("total") or 0
    frac = min(1.0, done / total) if total > 0 else 0.0
    fill = int(frac * width)
    m, s = divmod(int(elapsed), 60)
    line = (f"\rjob {job.get('id')} {job.get('status', ''):<9} [{'#' * fill}{'.' * (width - fill)}]"
            f" {done}/{total} {100 * frac:5.1f}%  {m:02d}:{s:02d}")
    sys.stderr.write(line + "\x1b[K")
    sys.stderr.flush()


# ------------------------------------------------------------------ run metadata

def _script_dir():
    main = sys.modules.get("__main__")
    f = getattr(main, "__file__", None)
    if f:
        return os.path.dirname(os.path.abspath(f)), os.path.abspath(f)
    return os.getcwd(), None


def _git(args, cwd):
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _torch_version():
    t = sys.modules.get("torch")  # already imported: free; else read the installed metadata
    if t is not None and getattr(t, "__version__", None):
        return str(t.__version__)
    try:
        import importlib.metadata as md  # noqa: PLC0415
        return md.version("torch")
    except Exception:  # noqa: BLE001 (PackageNotFoundError, or broken metadata)
        return None


def run_meta():
    """What start_run records about the calling script, as W&B does: git_commit (`git rev-parse
    HEAD` in the directory of the __main__ script, else the working directory; None outside a
    repository or without git), git_dirty (tracked files modified), host, python (version),
    torch (torch.__version__ if torch is already imported, else the installed distribution's
    version without importing it; None when not installed), script (its absolute path)."""
    d, script = _script_dir()
    commit = _git(["rev-parse", "HEAD"], d)
    dirty = None
    if commit:
        st = _git(["status", "--porcelain", "--untracked-files=no"], d)
        dirty = bool(st) if st is not None else None
    return {"git_commit": commit, "git_dirty": dirty, "host": socket.gethostname(),
            "python": platform.python_version(), "torch": _torch_version(), "script": script}


# ------------------------------------------------------------------ runs

def _check_key(k):
    if not isinstance(k, str) or not 0 < len(k) <= 128 or \
            any(c < "!" or c > "~" or c in '",\\' for c in k):
        raise ValueError(f"tdlab: metric key {k!r}: a key is 1..128 printable ASCII characters "
                         "without spaces, quotes, commas or backslashes")


class Run:
    """A tracked run on the server (from start_run or resume_run). `id` is the job id, `token`
    the run token (Authorization: Bearer on the ingestion endpoints only).

    log() puts points in a buffer that a background thread posts in batches; finish() sends
    every buffered point, then the final status. As a context manager the run is finished
    succeeded, or failed with the exception's text when the block raises. A run never finished
    by the script is finished at interpreter exit (finish_at_exit=True): succeeded after a normal
    exit, failed after an uncaught exception.

    batch_size: points per request (<= 5000); flush_interval: seconds between sends;
    heartbeat_interval: seconds between heartbeats (default: a third of the server's
    --heartbeat-timeout, which POST /api/v1/runs reports; 20 s if it does not);
    max_buffer: points held before log() blocks; retry_timeout: seconds one batch is retried
    while the server is away before the run is declared broken. total: the number of steps
    the script will log; with it the progress (step + 1 of total) is reported by itself.

    When the server has marked the run crashed (its heartbeats stopped reaching it, e.g. while
    the server was away longer than its heartbeat timeout), the sender resumes it (POST
    /api/v1/runs/{id}/resume with the lab token, a new run token) and goes on, at most
    `max_resumes` (10) times."""

    def __init__(self, client, run_id, token, batch_size=MAX_BATCH_POINTS, flush_interval=0.5,
                 heartbeat_interval=None, max_buffer=1_000_000, retry_timeout=900.0,
                 finish_at_exit=True, max_resumes=10, server_heartbeat_timeout=None,
                 total=None):
        self.client = client
        self.id = int(run_id)
        self.token = token
        self.batch_size = max(1, min(int(batch_size), MAX_BATCH_POINTS))
        self.flush_interval = flush_interval
        if heartbeat_interval is None:
            hb = server_heartbeat_timeout
            heartbeat_interval = hb / 3.0 if isinstance(hb, (int, float)) and hb > 0 else 20.0
        self.heartbeat_interval = heartbeat_interval
        self.max_resumes = max_resumes
        self.total = None if total is None else int(total)
        self.resumes = 0  # times the sender resumed the run after the server marked it crashed
        self.max_buffer = max(1, int(max_buffer))
        self.retry_timeout = retry_timeout
        self.cancel_requested = False  # set when a heartbeat says the job was cancelled
        self.accepted = 0  # points the server stored
        self.duplicates = 0  # points it already had (same key and step)
        self.status = "running"
        self._cond = threading.Condition()
        self._pending = {}  # (key, step) -> value, in logging order; the first value wins
        self._inflight = 0
        self._closing = False
        self._error = None
        self._next_step = 0
        self._progress = None
        self._progress_sent = None
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"tdlab-run-{self.id}",
                                         daemon=True)
        self._thread.start()
        if finish_at_exit:
            _track_at_exit(self)

    def __repr__(self):
        return f"tdlab.Run(id={self.id}, status={self.status!r})"

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        if self.status != "running":
            return False
        if exc is None:
            self.finish()
            return False
        try:  # the block's exception is the one to propagate; a failed finish is only reported
            self.finish("failed", error=f"{etype.__name__}: {exc}")
        except Error as e:
            sys.stderr.write(f"{e}\n")
        return False

    # ---------------------------------------------------------------- the script's side

    def log(self, data, step=None):
        """Record {key: value, ...} at `step` (an int within +-2^53; default: one more than the
        last step logged, starting at 0). Values are numbers: anything float() takes except
        strings (Python numbers, numpy and torch scalars, one-element tensors); NaN and
        infinities are sent as "NaN"/"Infinity"/"-Infinity". The same
        (key, step) logged twice keeps the FIRST value, as the server does (a point already
        sent cannot be replaced). Blocks while the buffer holds max_buffer points. Raises
        ValueError/TypeError for a bad key, step or value, and Error when the run is finished or
        its sender gave up."""
        if step is None:
            step = self._next_step
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                step = int(step.__index__())
            except AttributeError:
                raise TypeError(f"tdlab: step must be an int, not {type(step).__name__}") from None
        if not -MAX_STEP <= step <= MAX_STEP:
            raise ValueError(f"tdlab: step must be an integer within +-2^53 (got {step})")
        if not hasattr(data, "items"):
            raise TypeError(f"tdlab: log() takes a dict {{key: value}}, not {type(data).__name__}")
        pts = []
        for k, v in data.items():
            _check_key(k)
            try:
                if isinstance(v, (str, bytes)):
                    raise TypeError
                x = float(v)
            except (TypeError, ValueError):
                raise TypeError(f"tdlab: metric {k!r} at step {step}: {v!r} is not a number") \
                    from None
            pts.append(((k, step), x))
        with self._cond:
            self._raise_if_broken()
            if self._closing:
                raise Error(f"run {self.id} is finished; log() after finish()", code="finished")
            for kv, x in pts:
                while len(self._pending) >= self.max_buffer and self._error is None:
                    self._cond.notify_all()
                    self._cond.wait(1.0)
                self._raise_if_broken()
                if kv not in self._pending:
                    self._pending[kv] = x
            if self.total and (self._progress is None or step + 1 > self._progress["done"]):
                self._progress = {"done": min(step + 1, self.total), "total": self.total}
            if len(self._pending) >= self.batch_size:
                self._cond.notify_all()
        self._next_step = step + 1

    def progress(self, done, total):
        """Report progress (done of total steps); sent with the next heartbeat, at most once a
        second, and shown on the dashboard like a tdlab job's. done is clamped to 0..total
        (the server refuses done > total with a 400) when total > 0."""
        done, total = max(int(done), 0), max(int(total), 0)
        if total > 0:
            done = min(done, total)
        with self._cond:
            self._progress = {"done": done, "total": total}
            self._cond.notify_all()

    def log_artifact(self, name, data, content_type="application/octet-stream"):
        """POST /api/v1/jobs/{id}/artifacts/{name}: store `data` (bytes; a str is sent as UTF-8)
        under `name` with its content type, at once (not buffered). Raises Error."""
        if isinstance(data, str):
            data = data.encode()
        path = f"/api/v1/jobs/{self.id}/artifacts/{urllib.parse.quote(name, safe='')}"
        return self.client.request("POST", path, raw=data, content_type=content_type,
                                   bearer=self.token, idempotent=True)

    def flush(self, timeout=None):
        """Block until every point logged so far has been sent (or the sender gave up: Error).
        timeout: seconds, None for no limit (the retry bound still applies); returns whether
        the buffer is empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._pending or self._inflight:
                self._raise_if_broken()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(0.5, left))
            self._raise_if_broken()
        return True

    def finish(self, status="succeeded", summary=None, error=None):
        """Send every buffered point, then POST /api/v1/jobs/{id}/finish with
        {"status": "succeeded"|"failed"|"diverged", "summary", "error"}; the token is dead after.
        Returns the server's answer. A second call does nothing (returns None). Raises Error
        when points could not be sent within the retry bound (the run is then finished failed
        if the server can be reached, so that it does not wait for its lease) or the finish is
        refused."""
        if status not in ("succeeded", "failed", "diverged"):
            raise ValueError("tdlab: status must be succeeded, failed or diverged "
                             f"(got {status!r})")
        with self._cond:
            if self._closing:
                return None
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        _untrack(self)
        lost = len(self._pending)
        if self._error is not None and lost:
            status, error = "failed", (f"{lost} points could not be sent: {self._error.message}"
                                      + (f"; {error}" if error else ""))
        if self._error is None and self._progress is not None and (
                self._progress != self._progress_sent):
            try:  # the last progress (the sender sends it at most once a second, so a short run
                self._heartbeat(self._progress)  # or its last second would never show it)
            except Error:
                pass  # the finish below reports what matters
        body = {"status": status}
        if summary is not None:
            body["summary"] = summary
        if error is not None:
            body["error"] = str(error)[:4000]  # the server takes at most 4096 bytes
        try:  # after a failed sender, one short try: the server was away for retry_timeout
            ans = self._post(f"/api/v1/jobs/{self.id}/finish", body,
                             give_up=None if self._error is None else time.monotonic() + 5.0)
        except Error:
            if self._error is None:
                raise
            ans = None
        self.status = status
        if self._error is not None:
            e = self._error
            if lost:
                raise Error(f"{lost} points of run {self.id} could not be sent: {e.message}",
                            status=e.status, code=e.code, field=e.field, method=e.method,
                            path=e.path)
            raise e
        return ans

    def _raise_if_broken(self):
        if self._error is not None:
            raise self._error

    # ---------------------------------------------------------------- the sender thread

    def _post(self, path, body, give_up=None, raw=None):
        """POST with the run token, retrying (0.2 s doubling to 10 s) while no answer comes or
        the server answers 5xx/429, for at most retry_timeout seconds (give_up: an absolute
        monotonic deadline instead). 4xx answers raise Error at once."""
        t0 = time.monotonic()
        deadline = give_up if give_up is not None else t0 + self.retry_timeout
        delay = 0.2
        while True:
            try:
                return self.client.request("POST", path, body, bearer=self.token, retries=0,
                                           idempotent=True, raw=raw)
            except Error as e:
                if e.status == 409 and self._resume_if_crashed():
                    continue
                retry = e.status is None or e.status >= 500 or e.status == 429
                if not retry or time.monotonic() + delay > deadline:
                    if retry:
                        e.message += (f" (retried for {time.monotonic() - t0:.1f} s, the bound "
                                      f"is {deadline - t0:.0f} s)")
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _resume_if_crashed(self):
        """After a 409 from an ingestion endpoint: when the server marked this run crashed, resume
        it (new token) and return True; else False."""
        if self.resumes >= self.max_resumes:
            return False
        try:
            if self.client.get(self.id).get("status") != "crashed":
                return False
            doc = self.client.request("POST", f"/api/v1/runs/{self.id}/resume", {})
        except Error:
            return False
        self.token = doc["token"]
        self.resumes += 1
        return True

    def _take_batch(self):
        """Take the oldest points out of the buffer (lock held): at most batch_size, and at most
        MAX_BATCH_BYTES of JSON (a point is its key plus at most 60 bytes)."""
        out, size = [], 16
        for kv in self._pending.items():
            size += len(kv[0][0]) + 60
            if len(out) >= self.batch_size or size > MAX_BATCH_BYTES:
                break
            out.append(kv)
        pend = self._pending
        for kv, _ in out:
            del pend[kv]
        return out

    @staticmethod
    def _encode(batch):
        """{"points": [...]} as JSON bytes, written directly (keys are checked by _check_key, so
        they need no escaping; repr of a float is its shortest round-trip form)."""
        parts = []
        for (k, s), v in batch:
            if v != v or v in (math.inf, -math.inf):
                val = '"' + _finite_str(v) + '"'
            else:
                val = repr(v)
            parts.append('{"key":"%s","step":%d,"value":%s}' % (k, s, val))
        return ('{"points":[' + ",".join(parts) + "]}").encode()

    def _loop(self):
        while True:
            with self._cond:
                if not self._closing and len(self._pending) < self.batch_size:
                    self._cond.wait(self.flush_interval)
                if self._error is not None:
                    self._cond.notify_all()
                    return
                batch = self._take_batch() if self._pending else []
                self._inflight = len(batch)
                beat = time.monotonic() - self._last_beat >= self.heartbeat_interval or (
                    self._progress != self._progress_sent
                    and time.monotonic() - self._last_beat >= 1.0)
                progress = self._progress
                if not batch and self._closing:
                    self._cond.notify_all()
                    return
            try:
                if batch:
                    ans = self._post(f"/api/v1/jobs/{self.id}/points", None,
                                     raw=self._encode(batch))
                    self.accepted += int((ans or {}).get("accepted", 0))
                    self.duplicates += int((ans or {}).get("duplicates", 0))
                if beat and not self._closing:
                    self._heartbeat(progress)
            except Error as e:
                with self._cond:
                    for kv, v in batch:  # back into the buffer, so finish() can count them
                        self._pending.setdefault(kv, v)
                    self._error = e
                    self._inflight = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._inflight = 0
                self._cond.notify_all()

    def _heartbeat(self, progress):
        self._last_beat = time.monotonic()
        body = {"progress": progress} if progress else {}
        try:
            ans = self.client.request("POST", f"/api/v1/jobs/{self.id}/heartbeat", body,
                                      bearer=self.token, retries=0, idempotent=True)
        except Error as e:
            if e.status == 409 and self._resume_if_crashed():
                return
            if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                raise  # refused (finished, token dead): the run cannot go on
            return  # the server is away: the next send retries
        self._progress_sent = progress
        if isinstance(ans, dict) and ans.get("cancel_requested"):
            self.cancel_requested = True


# Runs still open at interpreter exit are finished there (see Run).
_open_runs = {}
_open_lock = threading.Lock()
_exit_exc = []


def _track_at_exit(run):
    with _open_lock:
        first = not _open_runs and not _track_at_exit.installed
        _open_runs[id(run)] = run
        if first:
            _track_at_exit.installed = True
            prev = sys.excepthook

            def hook(etype, exc, tb):
                _exit_exc.append(f"{etype.__name__}: {exc}")
                prev(etype, exc, tb)
            sys.excepthook = hook
            atexit.register(_finish_open_runs)


_track_at_exit.installed = False


def _untrack(run):
    with _open_lock:
        _open_runs.pop(id(run), None)


def _finish_open_runs():
    with _open_lock:
        runs = list(_open_runs.values())
    for r in runs:
        try:
            if _exit_exc:
                r.finish("failed", error="uncaught exception: " + _exit_exc[-1])
            else:
                r.finish()
        except Error as e:
            sys.stderr.write(f"{e}\n")


# ------------------------------------------------------------------ module-level functions

_default = None
_default_lock = threading.Lock()


def configure(url=None, token=None, **options):
    """Replace the default client used by the module-level functions; returns it."""
    global _default
    with _default_lock:
        _default = Client(url=url, token=token, **options)
        return _default


def default_client():
    """The default client (made from TDLAB_URL / TDLAB_TOKEN at first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def submit(*a, **kw):
    """Client.submit on the default client."""
    return default_client().submit(*a, **kw)


def get(*a, **kw):
    """Client.get on the default client."""
    return default_client().get(*a, **kw)


def wait(*a, **kw):
    """Client.wait on the default client."""
    return default_client().wait(*a, **kw)


def cancel(*a, **kw):
    """Client.cancel on the default client."""
    return default_client().cancel(*a, **kw)


def metrics(*a, **kw):
    """Client.metrics on the default client."""
    return default_client().metrics(*a, **kw)


def sweep(*a, **kw):
    """Client.sweep on the default client."""
    return default_client().sweep(*a, **kw)


def get_sweep(*a, **kw):
    """Client.get_sweep on the default client."""
    return default_client().get_sweep(*a, **kw)


def fit(*a, **kw):
    """Client.fit on the default client."""
    return default_client().fit(*a, **kw)


def jobs(*a, **kw):
    """Client.jobs on the default client."""
    return default_client().jobs(*a, **kw)


def start_run(*a, **kw):
    """Client.start_run on the default client."""
    return default_client().start_run(*a, **kw)


def resume_run(*a, **kw):
    """Client.resume_run on the default client."""
    return default_client().resume_run(*a, **kw)
