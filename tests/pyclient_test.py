"""pyclient_test.py: the Python client (clients/python/tdlab.py) against the real daemon.

Run by tests/e2e_pyclient.sh with Debian's /usr/bin/python3, which starts the daemon and sets
  TDLAB_URL    the daemon (started with --token-file)
  TDLAB_TOKEN  its lab token
  TDLAB_BIN    the tdlab binary (tests that kill and restart a server start their own)
  TDLAB_ROOT   the repository (web/, migrations/, clients/python/)
  TDLAB_TMP    a scratch directory
Every check reads the server back with plain urllib (raw() below), not with the client under
test. Prints one line per test ("ok   - ...", "FAIL - ...", "skip - ...: reason") and a final
"N passed, M failed, K skipped"; exits non-zero when a test failed.
"""

import csv
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

ROOT = os.environ["TDLAB_ROOT"]
URL = os.environ["TDLAB_URL"]
TOKEN = os.environ["TDLAB_TOKEN"]
BIN = os.environ["TDLAB_BIN"]
TMP = os.environ["TDLAB_TMP"]
assert os.path.isdir(TMP), "TDLAB_TMP must be a scratch directory"
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import tdlab  # noqa: E402

LINREG = {"data": {"name": "synthetic", "n": 200, "d": 50, "noise": 0.1}, "lr": 0.1,
          "steps": 300, "seed": 0}
# A job that runs for many seconds (cancelled, never awaited to the end).
LONG = {"data": {"name": "fashion-mnist", "n_train": 20000, "n_test": 500},
        "model": {"hidden": [256, 256]}, "batch_size": 32, "epochs": 200,
        "eval_every": 1000000, "seed": 1}


def raw(method, path, body=None, token=TOKEN, base=URL, data=None, ctype="application/json"):
    """(status, bytes) of one request, independent of tdlab.py."""
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw_json(path, **kw):
    st, b = raw("GET", path, **kw)
    assert st == 200, (path, st, b[:300])
    return json.loads(b)


def csv_points(job_id, base=URL):
    """{(key, step): value string} from metrics.csv, and the number of rows."""
    st, b = raw("GET", f"/api/v1/jobs/{job_id}/metrics.csv", base=base)
    assert st == 200, (st, b[:300])
    rows = list(csv.reader(io.StringIO(b.decode())))
    assert rows[0] == ["key", "step", "value"], rows[:1]
    return {(r[0], int(r[1])): r[2] for r in rows[1:]}, len(rows) - 1


def wait_status(job_id, want, secs=60, base=URL):
    deadline = time.time() + secs
    while time.time() < deadline:
        j = raw_json(f"/api/v1/jobs/{job_id}", base=base)
        if j["status"] in want:
            return j
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} is {j['status']}, wanted {want}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """A daemon of the test's own (kill -9 and restart on the same port and database)."""

    def __init__(self, name, *flags):
        self.db = os.path.join(TMP, name + ".db")
        self.port = free_port()
        self.flags = flags
        self.log = os.path.join(TMP, name + ".log")
        self.proc = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [BIN, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--db", self.db,
                 "--web", os.path.join(ROOT, "web"), "--migrations",
                 os.path.join(ROOT, "migrations"), "--workers", "1", "--batch-ms", "100",
                 *self.flags], stderr=log, stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                if raw("GET", "/healthz", base=self.base, token=None)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill9()
        raise AssertionError(f"the test's daemon did not start: {open(self.log).read()[-2000:]}")

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


HAVE_PANDAS = importlib.util.find_spec("pandas") is not None


class ClientTest(unittest.TestCase):
    """The calls on existing endpoints: jobs, metrics, lists, sweeps, fits, errors."""

    @classmethod
    def setUpClass(cls):
        cls.c = tdlab.Client()  # from TDLAB_URL / TDLAB_TOKEN

    def test_env_and_token(self):
        """Client() reads TDLAB_URL and TDLAB_TOKEN; a client without the token gets a 401."""
        self.assertEqual(self.c.url, URL.rstrip("/"))
        self.assertEqual(self.c.token, TOKEN)
        with self.assertRaises(tdlab.Error) as cm:
            tdlab.Client(url=URL, token="").submit("linreg", LINREG)
        self.assertEqual(cm.exception.status, 401)

    def test_submit_get_wait(self):
        """submit -> id; the job record by raw GET has the name, tags, priority; wait ends
        succeeded and returns the same record as a raw GET."""
        jid = tdlab.submit("linreg", LINREG, name="py-linreg", tags=["py", "t1"], priority=3)
        self.assertIsInstance(jid, int)
        rec = raw_json(f"/api/v1/jobs/{jid}")
        self.assertEqual((rec["kind"], rec["name"], rec["tags"], rec["priority"]),
                         ("linreg", "py-linreg", ["py", "t1"], 3))
        self.assertEqual(tdlab.get(jid)["params"], rec["params"])
        err = io.StringIO()  # not a terminal: no progress bar
        old, sys.stderr = sys.stderr, err
        try:
            final = tdlab.wait(jid, poll=0.1, timeout=60)
        finally:
            sys.stderr = old
        self.assertEqual(final["status"], "succeeded")
        self.assertEqual(final, raw_json(f"/api/v1/jobs/{jid}"))
        self.assertEqual(err.getvalue(), "")

    def test_submit_executor(self):
        """executor="remote" is passed through (the job waits, queued, for a remote runner);
        "slurm" on a server without --executor slurm is a 400 naming executor."""
        jid = self.c.submit("linreg", LINREG, executor="remote")
        rec = raw_json(f"/api/v1/jobs/{jid}")
        self.assertEqual((rec["executor"], rec["status"]), ("remote", "queued"))
        self.c.cancel(jid)
        with self.assertRaises(tdlab.Error) as cm:
            self.c.submit("linreg", LINREG, executor="slurm")
        self.assertEqual((cm.exception.status, cm.exception.field), (400, "executor"))

    def test_wait_progress_bar_on_a_terminal(self):
        """On a terminal, wait draws a bar with done/total and ends the line."""
        jid = self.c.submit("linreg", LINREG)
        tty = FakeTTY()
        old, sys.stderr = sys.stderr, tty
        try:
            self.c.wait(jid, poll=0.1, timeout=60)
        finally:
            sys.stderr = old
        out = tty.getvalue()
        self.assertIn("\rjob %d " % jid, out)
        self.assertIn("300/300 100.0%", out)
        self.assertIn("[" + "#" * 30 + "]", out)
        self.assertTrue(out.endswith("\n"))

    def test_wait_raises_on_diverged(self):
        """lr 5 > 2/lambda_max diverges: wait raises JobFailed carrying the record, or returns it
        with raise_on_failure=False."""
        p = dict(LINREG, lr=5.0)
        jid = self.c.submit("linreg", p)
        with self.assertRaises(tdlab.JobFailed) as cm:
            self.c.wait(jid, poll=0.1, timeout=60)
        self.assertEqual(cm.exception.job["status"], "diverged")
        self.assertIsInstance(cm.exception, tdlab.Error)
        self.assertIn(f"job {jid} ended diverged", str(cm.exception))
        j = self.c.wait(jid, poll=0.1, raise_on_failure=False)
        self.assertEqual(j["status"], "diverged")

    def test_wait_timeout_and_cancel(self):
        """wait(timeout) raises WaitTimeout (a TimeoutError) on a long job; cancel stops it and
        wait then returns the cancelled job without raising."""
        jid = self.c.submit("train", LONG)
        t0 = time.monotonic()
        with self.assertRaises(tdlab.WaitTimeout) as cm:
            self.c.wait(jid, timeout=0.5, poll=0.1)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIsInstance(cm.exception, TimeoutError)
        ans = self.c.cancel(jid)
        self.assertIsInstance(ans, dict)
        j = self.c.wait(jid, poll=0.1, timeout=60)
        self.assertEqual(j["status"], "cancelled")
        self.assertEqual(raw_json(f"/api/v1/jobs/{jid}")["status"], "cancelled")
        with self.assertRaises(tdlab.Error) as cm:
            self.c.cancel(jid)
        self.assertEqual(cm.exception.status, 409)

    def test_metrics_columns_equal_csv(self):
        """metrics() holds every point of metrics.csv, as floats, step for step; keys,
        max_points and since_step are passed through."""
        jid = self.c.submit("linreg", LINREG)
        self.c.wait(jid, poll=0.1, timeout=60)
        m = self.c.metrics(jid)
        pts, n = csv_points(jid)
        self.assertEqual(sum(len(c["step"]) for c in m.values()), n)
        for k, col in m.items():
            self.assertEqual(len(col["step"]), len(col["value"]))
            for s, v in zip(col["step"], col["value"]):
                self.assertEqual(v, float(pts[(k, s)]))
        m2 = self.c.metrics(jid, keys=["loss"], max_points=10, since_step=5)
        self.assertEqual(list(m2), ["loss"])
        self.assertLessEqual(len(m2["loss"]["step"]), 10)
        self.assertEqual(m2["loss"]["step"][0], 5)
        self.assertEqual(m2["loss"]["step"][-1], max(s for k, s in pts if k == "loss"))
        m3 = self.c.metrics(jid, keys=["loss"], time=True)
        self.assertEqual(len(m3["loss"]["time"]), len(m3["loss"]["step"]))
        self.assertLess(abs(m3["loss"]["time"][-1] - time.time()), 600)

    @unittest.skipUnless(HAVE_PANDAS, "pandas is not installed in this Python")
    def test_dataframes(self):
        """With pandas: metrics(as_dataframe=True) is indexed by step, one column per key, and
        jobs() is a DataFrame."""
        import pandas as pd  # noqa: PLC0415
        jid = self.c.submit("linreg", LINREG)
        self.c.wait(jid, poll=0.1, timeout=60)
        df = self.c.metrics(jid, as_dataframe=True)
        pts, _ = csv_points(jid)
        self.assertEqual(df.index.name, "step")
        self.assertEqual(df.loc[0, "loss"], float(pts[("loss", 0)]))
        self.assertIsInstance(self.c.jobs(kind="linreg"), pd.DataFrame)

    @unittest.skipIf(HAVE_PANDAS, "pandas is installed (test_dataframes covers it)")
    def test_dataframe_without_pandas_is_a_clear_import_error(self):
        """Without pandas: as_dataframe=True and to_pandas() raise ImportError naming pandas;
        jobs() returns a list of dicts."""
        jid = self.c.submit("linreg", LINREG)
        self.c.wait(jid, poll=0.1, timeout=60)
        with self.assertRaises(ImportError) as cm:
            self.c.metrics(jid, as_dataframe=True)
        self.assertIn("needs pandas, which is not installed", str(cm.exception))
        with self.assertRaises(ImportError):
            self.c.metrics(jid).to_pandas()
        with self.assertRaises(ImportError):
            self.c.jobs(kind="linreg", as_dataframe=True)
        self.assertIsInstance(self.c.jobs(kind="linreg"), list)

    def test_jobs_follows_every_page(self):
        """jobs() with page_size=2 over 5 tagged jobs returns all 5, newest first, with params
        and summaries as flat columns; q and status filter."""
        tag = f"page{os.getpid()}"
        ids = [self.c.submit("linreg", dict(LINREG, lr=lr), tags=[tag])
               for lr in (0.01, 0.02, 0.03, 0.04, 0.05)]
        for i in ids:
            self.c.wait(i, poll=0.1, timeout=60)
        rows = self.c.jobs(tag=tag, page_size=2, as_dataframe=False)
        self.assertEqual([r["id"] for r in rows], ids[::-1])
        for r, lr in zip(rows, (0.05, 0.04, 0.03, 0.02, 0.01)):
            self.assertEqual(r["params.lr"], lr)
            self.assertEqual(r["params.data.name"], "synthetic")
            self.assertEqual(r["summary.d"], 50)
            self.assertEqual(r["status"], "succeeded")
        rows = self.c.jobs(q="lr>0.025 and lr<0.045", tag=tag, page_size=1, as_dataframe=False)
        self.assertEqual([r["id"] for r in rows], [ids[3], ids[2]])
        self.assertEqual(self.c.jobs(tag=tag, status=["failed", "queued"], as_dataframe=False), [])
        self.assertEqual(len(self.c.jobs(tag=tag, max_rows=3, page_size=2, as_dataframe=False)), 3)

    def test_sweep_and_fit(self):
        """sweep() creates the children (grid x seeds); a fit recovers a power law that made its
        points (E 0.5, A 3, alpha 0.7: the generating values, to 1e-6 relative)."""
        sw = self.c.sweep("linreg", {"lr": {"values": [0.05, 0.1]}}, base=LINREG, seeds=2,
                          name="py-sweep")
        self.assertEqual(len(sw["children"]), 4)
        rec = raw_json(f"/api/v1/sweeps/{sw['id']}")
        self.assertEqual(rec["name"], "py-sweep")
        self.assertEqual(sorted(c["id"] for c in rec["children"]),
                         sorted(c["id"] for c in sw["children"]))
        self.assertEqual(self.c.get_sweep(sw["id"], children=False).get("children"), None)
        pts = [{"x": x, "y": 0.5 + 3.0 * x ** -0.7} for x in (1, 2, 4, 8, 16, 32, 64, 128)]
        f = self.c.fit("power_offset", pts, bootstrap=20, seed=0)
        for k, want in (("E", 0.5), ("A", 3.0), ("alpha", 0.7)):
            self.assertAlmostEqual(f["params"][k]["value"] / want, 1.0, delta=1e-6)
        with self.assertRaises(tdlab.Error) as cm:
            self.c.fit("power_offset", [{"x": 1}])
        self.assertEqual(cm.exception.status, 400)
        self.assertTrue(cm.exception.field.startswith("points"), cm.exception.field)

    def test_errors_name_the_field(self):
        """A bad kind and a bad param are tdlab.Error with status 400, code and field; an
        unknown id is a 404."""
        with self.assertRaises(tdlab.Error) as cm:
            self.c.submit("no_such_kind")
        e = cm.exception
        self.assertEqual((e.status, e.field), (400, "kind"))
        self.assertTrue(e.code)
        self.assertIn("no_such_kind", e.message)
        with self.assertRaises(tdlab.Error) as cm:
            self.c.submit("linreg", dict(LINREG, lr=-1))
        self.assertEqual((cm.exception.status, cm.exception.field), (400, "params.lr"))
        self.assertIn("params.lr", str(cm.exception))
        with self.assertRaises(tdlab.Error) as cm:
            self.c.get(987654321)
        self.assertEqual(cm.exception.status, 404)
        with self.assertRaises(tdlab.Error) as cm:
            self.c.metrics(987654321)
        self.assertEqual(cm.exception.status, 404)

    def test_server_down_is_a_clear_error_after_bounded_retries(self):
        """No server: Error(code unreachable, status None) after retries+1 attempts, within the
        stated bound (backoff 0.1: 0.1+0.2+0.4 = 0.7 s of waiting)."""
        c = tdlab.Client(url=f"http://127.0.0.1:{free_port()}", retries=3, backoff=0.1)
        t0 = time.monotonic()
        with self.assertRaises(tdlab.Error) as cm:
            c.submit("linreg", LINREG)
        dt = time.monotonic() - t0
        e = cm.exception
        self.assertEqual((e.status, e.code), (None, "unreachable"))
        self.assertIn("gave up after 4 attempts", str(e))
        self.assertGreaterEqual(dt, 0.69)
        self.assertLess(dt, 5)


class RunTest(unittest.TestCase):
    """start_run / Run against POST /api/v1/runs and the ingestion endpoints."""

    def test_start_run_records_meta(self):
        """The job is kind external, running, with the params as given plus _meta: the git
        commit of this script's repository, host, Python and torch versions."""
        run = tdlab.start_run(name="meta", params={"lr": 0.1, "model": {"width": 8}},
                              tags=["py-run"])
        try:
            self.assertEqual(len(run.token), 64)
            rec = raw_json(f"/api/v1/jobs/{run.id}")
            self.assertEqual((rec["kind"], rec["status"], rec["name"], rec["tags"]),
                             ("external", "running", "meta", ["py-run"]))
            self.assertEqual(rec["params"]["lr"], 0.1)
            self.assertEqual(rec["params"]["model"], {"width": 8})
            meta = rec["params"]["_meta"]
            want = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)),
                                   "rev-parse", "HEAD"], capture_output=True, text=True)
            if want.returncode == 0:
                self.assertEqual(meta["git_commit"], want.stdout.strip())
            self.assertEqual(meta["host"], socket.gethostname())
            self.assertEqual(meta["python"], "%d.%d.%d" % sys.version_info[:3])
            try:
                tv = importlib.metadata.version("torch")
            except importlib.metadata.PackageNotFoundError:
                tv = None
            self.assertEqual(meta["torch"], tv)
            self.assertNotIn("torch", sys.modules)  # recorded without importing it
        finally:
            run.finish()

    def test_log_then_finish_sends_every_point(self):
        """20000 points in 4 keys, then finish: metrics.csv has each exactly once with the
        logged value, and the job ends succeeded with the summary."""
        run = tdlab.start_run(name="many", params={"n": 20000})
        want = {}
        for t in range(5000):
            row = {"loss": 1.0 / (t + 1), "acc": t / 5000, "lr": 0.1 * 0.999 ** t, "gn": t * 1e-3}
            run.log(row, step=t)
            for k, v in row.items():
                want[(k, t)] = v
        ans = run.finish(summary={"final_loss": 1.0 / 5000, "note": "ok"})
        self.assertIsInstance(ans, dict)
        pts, n = csv_points(run.id)
        self.assertEqual(n, 20000)
        self.assertEqual(set(pts), set(want))
        self.assertTrue(all(float(pts[k]) == v for k, v in want.items()))
        rec = raw_json(f"/api/v1/jobs/{run.id}")
        self.assertEqual(rec["status"], "succeeded")
        self.assertEqual(rec["summary"], {"final_loss": 1.0 / 5000, "note": "ok"})
        self.assertEqual(run.accepted, 20000)
        with self.assertRaises(tdlab.Error):
            run.log({"loss": 1.0}, step=5001)

    def test_nonfinite_round_trip(self):
        """NaN, Infinity and -Infinity logged come back as floats from metrics() and as
        NaN/Infinity/-Infinity in metrics.csv; a NaN summary value is stored as "NaN"."""
        run = tdlab.start_run(name="nonfinite")
        run.log({"x": math.nan}, step=0)
        run.log({"x": math.inf}, step=1)
        run.log({"x": -math.inf}, step=2)
        run.log({"x": 2.5}, step=3)
        run.finish(summary={"best": math.nan, "worst": math.inf})
        m = tdlab.metrics(run.id)
        self.assertEqual(m["x"]["step"], [0, 1, 2, 3])
        v = m["x"]["value"]
        self.assertTrue(math.isnan(v[0]))
        self.assertEqual(v[1:], [math.inf, -math.inf, 2.5])
        pts, _ = csv_points(run.id)
        self.assertEqual([pts[("x", s)] for s in range(4)], ["NaN", "Infinity", "-Infinity", "2.5"])
        self.assertEqual(raw_json(f"/api/v1/jobs/{run.id}")["summary"],
                         {"best": "NaN", "worst": "Infinity"})

    def test_same_key_and_step_twice_keeps_one_point(self):
        """Logged twice (in the buffer, and again after it was sent): one point, the first
        value, as the server keeps the first."""
        run = tdlab.start_run(name="dupes")
        run.log({"loss": 1.0}, step=7)
        run.log({"loss": 2.0}, step=7)  # still buffered: dropped locally
        run.flush()
        run.log({"loss": 3.0}, step=7)  # already sent: the server ignores it
        run.flush()
        run.finish()
        pts, n = csv_points(run.id)
        self.assertEqual((n, pts[("loss", 7)]), (1, "1"))
        self.assertEqual(run.duplicates, 1)

    def test_two_line_loop_and_context_manager(self):
        """A training loop tracked with two lines (no torch: a plain loop); the step counts on
        when not given; an exception in a with-block finishes the run failed with its text."""
        w, losses = 3.0, []
        run = tdlab.start_run(name="loop", params={"lr": 0.1})
        for _ in range(50):
            loss = w * w
            w -= 0.1 * 2 * w
            losses.append(loss)
            run.log({"loss": loss})
        run.finish()
        m = tdlab.metrics(run.id)
        self.assertEqual(m["loss"]["step"], list(range(50)))
        self.assertEqual(m["loss"]["value"], losses)
        with self.assertRaises(ZeroDivisionError):
            with tdlab.start_run(name="boom") as r2:
                r2.log({"a": 1.0}, step=0)
                1 / 0  # noqa: B018
        rec = raw_json(f"/api/v1/jobs/{r2.id}")
        self.assertEqual(rec["status"], "failed")
        self.assertIn("ZeroDivisionError", rec["error"])
        self.assertEqual(csv_points(r2.id)[1], 1)
        with tdlab.start_run(name="fine") as r3:
            r3.log({"a": 1.0}, step=0)
        self.assertEqual(raw_json(f"/api/v1/jobs/{r3.id}")["status"], "succeeded")

    def test_bad_points_are_refused_at_log(self):
        """A bad key, step or value raises at log() (nothing is sent)."""
        run = tdlab.start_run(name="bad")
        for data, step, exc in (({"a b": 1.0}, 0, ValueError), ({"a,b": 1.0}, 0, ValueError),
                                ({"k" * 129: 1.0}, 0, ValueError), ({"a": "x"}, 0, TypeError), ({"a": "1.5"}, 0, TypeError),
                                ({"a": 1.0}, 2 ** 60, ValueError), ({"a": 1.0}, 1.5, TypeError),
                                ([("a", 1.0)], 0, TypeError)):
            with self.assertRaises(exc):
                run.log(data, step=step)
        run.finish()
        self.assertEqual(csv_points(run.id)[1], 0)

    def test_artifact_progress_and_cancel(self):
        """log_artifact stores bytes with their content type; progress (given, or from the steps
        with total=) reaches the job record; a cancel through the API reaches the run through its heartbeat."""
        run = tdlab.start_run(name="art", heartbeat_interval=0.3, flush_interval=0.1)
        blob = bytes(range(256)) * 4
        run.log_artifact("weights.bin", blob, "application/octet-stream")
        run.log_artifact("notes.json", json.dumps({"a": 1}), "application/json")
        st, b = raw("GET", f"/api/v1/jobs/{run.id}/artifacts/weights.bin")
        self.assertEqual((st, b), (200, blob))
        st, b = raw("GET", f"/api/v1/jobs/{run.id}/artifacts/notes.json")
        self.assertEqual((st, json.loads(b)), (200, {"a": 1}))
        run.progress(5, 10)
        deadline = time.time() + 10
        while time.time() < deadline:
            if raw_json(f"/api/v1/jobs/{run.id}")["progress"] == {"done": 5, "total": 10}:
                break
            time.sleep(0.1)
        self.assertEqual(raw_json(f"/api/v1/jobs/{run.id}")["progress"], {"done": 5, "total": 10})
        r2 = tdlab.start_run(name="total", total=40, heartbeat_interval=0.3, flush_interval=0.1)
        for t in range(25):
            r2.log({"a": 1.0}, step=t)
        deadline = time.time() + 10
        while time.time() < deadline and raw_json(f"/api/v1/jobs/{r2.id}")["progress"]["done"] != 25:
            time.sleep(0.1)
        self.assertEqual(raw_json(f"/api/v1/jobs/{r2.id}")["progress"], {"done": 25, "total": 40})
        r2.finish()
        # a run shorter than the heartbeat pace: finish sends the last progress before it ends
        r3 = tdlab.start_run(name="short", total=100, heartbeat_interval=3600, flush_interval=60)
        for t in range(100):
            r3.log({"a": 1.0}, step=t)
        r3.finish()
        self.assertEqual(raw_json(f"/api/v1/jobs/{r3.id}")["progress"], {"done": 100, "total": 100})
        st, _ = raw("POST", f"/api/v1/jobs/{run.id}/cancel")
        self.assertIn(st, (200, 202))
        deadline = time.time() + 10
        while time.time() < deadline and not run.cancel_requested:
            time.sleep(0.1)
        self.assertTrue(run.cancel_requested)
        run.finish()
        self.assertEqual(raw_json(f"/api/v1/jobs/{run.id}")["status"], "cancelled")

    def test_finish_at_exit(self):
        """A script that never calls finish: at a normal exit its run is succeeded with every
        point; after an uncaught exception it is failed with the exception's text."""
        for tail, want in (("", "succeeded"), ("raise RuntimeError('bad thing')\n", "failed")):
            script = os.path.join(TMP, "atexit_run.py")
            with open(script, "w") as f:
                f.write("import tdlab\nrun = tdlab.start_run(name='atexit')\nprint(run.id, flush=True)\n"
                        "for t in range(3000):\n    run.log({'loss': 1.0 / (t + 1)}, step=t)\n" + tail)
            env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "clients", "python"))
            p = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env,
                               timeout=120)
            rid = int(p.stdout.split()[0])
            rec = raw_json(f"/api/v1/jobs/{rid}")
            self.assertEqual(rec["status"], want, p.stderr[-500:])
            self.assertEqual(csv_points(rid)[1], 3000)
            if want == "failed":
                self.assertIn("RuntimeError: bad thing", rec["error"])
                self.assertIn("RuntimeError: bad thing", p.stderr)  # the traceback still shows

    def test_server_killed_and_restarted_loses_no_point(self):
        """kill -9 of the server while a run logs, restart on the same port and database: the
        run retries, and every point is there once after finish."""
        srv = Server("restart")
        srv.start()
        try:
            c = tdlab.Client(url=srv.base, token="")
            run = c.start_run(name="restart", flush_interval=0.05)
            for t in range(2000):
                run.log({"loss": float(t)}, step=t)
            run.flush()
            srv.kill9()
            for t in range(2000, 4000):
                run.log({"loss": float(t)}, step=t)
            time.sleep(1.0)  # the sender retries against nothing
            srv.start()
            run.finish()
            pts, n = csv_points(run.id, base=srv.base)
            self.assertEqual(n, 4000)
            self.assertEqual(set(pts), {("loss", t) for t in range(4000)})
            self.assertEqual(raw_json(f"/api/v1/jobs/{run.id}", base=srv.base)["status"],
                             "succeeded")
        finally:
            srv.stop()

    def test_crashed_run_is_resumed_by_the_sender(self):
        """A run whose heartbeats stop past --heartbeat-timeout (0.5 s) is marked crashed by the
        server; the next batch gets a 409, and the sender resumes the run (new token) and goes
        on: every point is stored and the run ends succeeded."""
        srv = Server("lease", "--heartbeat-timeout", "0.5")
        srv.start()
        try:
            c = tdlab.Client(url=srv.base, token="")
            run = c.start_run(name="lease", heartbeat_interval=3600, finish_at_exit=False)
            old = run.token
            run.log({"loss": 0.0}, step=0)
            run.flush()
            wait_status(run.id, ("crashed",), 15, base=srv.base)
            for t in range(1, 100):
                run.log({"loss": float(t)}, step=t)
            run.finish()
            self.assertEqual(run.resumes, 1)
            self.assertNotEqual(run.token, old)
            pts, n = csv_points(run.id, base=srv.base)
            self.assertEqual(n, 100)
            self.assertEqual(raw_json(f"/api/v1/jobs/{run.id}", base=srv.base)["status"],
                             "succeeded")
        finally:
            srv.stop()

    def test_server_away_beyond_the_bound_is_a_clear_error(self):
        """With the server gone for longer than retry_timeout (1.5 s here), finish raises
        Error saying how many points could not be sent, within the bound plus one request."""
        srv = Server("away")
        srv.start()
        c = tdlab.Client(url=srv.base, token="")
        try:
            run = c.start_run(name="away", retry_timeout=1.5, finish_at_exit=False)
        finally:
            srv.kill9()
        for t in range(100):
            run.log({"loss": 1.0}, step=t)
        t0 = time.monotonic()
        with self.assertRaises(tdlab.Error) as cm:
            run.finish()
        dt = time.monotonic() - t0
        self.assertIn("100 points of run %d could not be sent" % run.id, str(cm.exception))
        self.assertIn("retried for", str(cm.exception))
        self.assertIsNone(cm.exception.status)
        self.assertLess(dt, 1.5 + 0.5 + 5 + 5)  # the bound, a send, the short finish try
        with self.assertRaises(tdlab.Error):
            run.log({"loss": 1.0}, step=200)


class InstallTest(unittest.TestCase):
    def test_pip_install_in_a_venv_offline(self):
        """pip install --no-build-isolation --no-index of a copy of clients/python into a venv
        made with Debian's python3 -m venv --system-site-packages; import tdlab from it."""
        py = "/usr/bin/python3"
        if subprocess.run([py, "-c", "import setuptools, wheel"], capture_output=True).returncode:
            self.skipTest("Debian's python3-setuptools or python3-wheel is not installed")
        src = os.path.join(TMP, "pysrc")
        shutil.copytree(os.path.join(ROOT, "clients", "python"), src,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        venv = os.path.join(TMP, "venv")
        subprocess.run([py, "-m", "venv", "--system-site-packages", venv], check=True,
                       capture_output=True)
        env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        p = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation",
                            "--no-index", src], capture_output=True, text=True, env=env,
                           timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout[-1500:] + p.stderr[-1500:])
        p = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                            "import tdlab; print(tdlab.__file__); print(tdlab.__version__)"],
                           capture_output=True, text=True, env=env, cwd=TMP, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        path, ver = p.stdout.split()
        self.assertTrue(path.startswith(os.path.join(venv, "lib")), path)
        self.assertEqual(ver, tdlab.__version__)


class LineResult(unittest.TextTestResult):
    """One srvlib-style line per test."""

    def _name(self, test):
        doc = " ".join((test._testMethodDoc or "").split()).rstrip(".")
        return f"{test.id().split('.', 1)[1]}: {doc}" if doc else test.id().split(".", 1)[1]

    def printErrors(self):  # each failure was printed under its line already
        pass

    def addSuccess(self, test):
        super().addSuccess(test)
        self.stream.writeln(f"ok   - pyclient {self._name(test)}")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.stream.writeln(f"FAIL - pyclient {self._name(test)}\n{self._exc_info_to_string(err, test)}")

    def addError(self, test, err):
        super().addError(test, err)
        self.stream.writeln(f"FAIL - pyclient {self._name(test)}\n{self._exc_info_to_string(err, test)}")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.stream.writeln(f"skip - pyclient {self._name(test)}: {reason}")


if __name__ == "__main__":
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    if len(sys.argv) > 1:
        suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:], sys.modules[__name__])
    res = unittest.TextTestRunner(stream=sys.stdout, verbosity=0, resultclass=LineResult).run(suite)
    fails = len(res.failures) + len(res.errors)
    print(f"{res.testsRun - fails - len(res.skipped)} passed, {fails} failed, "
          f"{len(res.skipped)} skipped")
    sys.exit(1 if fails else 0)
