#!/usr/bin/python3
"""plot_nqm.py: run the three noisy-quadratic-model sweeps of docs/sweeps.md through a running
tdlab server and draw their plots into docs/img/ (docs only; not part of `make test`).

    make run &                       # or: build/tdlab serve --port 8080
    scripts/plot_nqm.py [--url http://127.0.0.1:8080] [--out docs/img] [--reuse]

Each sweep scans the batch size B at a fixed target loss, with the learning rate tuned per B
(nqm's tune_lr, as Zhang et al. 2019 do), and fits S(B) = S_min (1 + B_crit / B) (McCandlish
et al. 2018) to the steps to target. --reuse takes finished sweeps of the same names from the
server instead of submitting new ones. Needs Debian's python3-matplotlib (apt-get install
python3-matplotlib); only the standard library otherwise.
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
FIT = {"law": "critical_batch", "x": "params.batch_size", "y": "summary.steps_to_target"}
BASE = {"dim": 100, "target_loss": 0.01, "max_steps": 200000, "tune_lr": True}


def sweep(name, optimizer=None):
    base = dict(BASE)
    if optimizer:
        base["optimizer"] = optimizer
    return {"name": name, "kind": "nqm", "base": base,
            "axes": {"batch_size": {"values": BATCHES}}, "fit": FIT}


SWEEPS = {
    "sgd": sweep("nqm-sgd"),
    "heavy_ball": sweep("nqm-heavy-ball", {"name": "heavy_ball", "momentum": 0.9}),
    "precond": sweep("nqm-precond", {"name": "precond", "power": 0.5}),
}
COLORS = {"sgd": "#2563eb", "heavy_ball": "#dc2626", "precond": "#16a34a"}
LABELS = {"sgd": "SGD", "heavy_ball": "heavy ball (momentum 0.9)",
          "precond": "preconditioned SGD (p = 0.5)"}


def api(url, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit("tdlab: %s %s: %s %s" % ("POST" if data else "GET", path, e.code, e.read().decode()))


def run_sweeps(url, reuse):
    ids = {}
    existing = {}
    if reuse:
        for s in api(url, "/api/v1/sweeps?limit=1000")["sweeps"]:
            if s["status"] == "finished" and s["name"] not in existing:
                existing[s["name"]] = s["id"]  # newest first
    for key, spec in SWEEPS.items():
        if spec["name"] in existing:
            ids[key] = existing[spec["name"]]
        else:
            ids[key] = api(url, "/api/v1/sweeps", spec)["id"]
            print("submitted sweep %d (%s)" % (ids[key], spec["name"]))
    out = {}
    for key, sid in ids.items():
        while True:
            s = api(url, "/api/v1/sweeps/%d" % sid)
            if s["status"] in ("finished", "cancelled"):
                break
            time.sleep(1)
        out[key] = s
    return out


def points(s):
    xs, ys = [], []
    for c in s["children"]:
        st = (c.get("summary") or {}).get("steps_to_target")
        if c["status"] == "succeeded" and isinstance(st, (int, float)) and st > 0:
            xs.append(c["axis_values"]["batch_size"])
            ys.append(st)
    return xs, ys


def draw(ax, key, s, band=True, asymptotes=False):
    xs, ys = points(s)
    fit = s.get("fit") or {}
    col = COLORS[key]
    if fit.get("curve") and not fit.get("error"):
        c = fit["curve"]
        p = fit["params"]
        lab = "%s fit: B_crit = %.3g [%.3g, %.3g]" % (
            LABELS[key], p["B_crit"]["value"], *(p["B_crit"]["ci95"] or [float("nan")] * 2))
        ax.plot(c["x"], c["y"], color=col, lw=1.6, label=lab)
        if band and c.get("lo") and c.get("hi"):
            ax.fill_between(c["x"], c["lo"], c["hi"], color=col, alpha=0.15, lw=0)
        if asymptotes:
            smin, bc = p["S_min"]["value"], p["B_crit"]["value"]
            ax.plot(c["x"], [smin] * len(c["x"]), ":", color="#64748b", lw=1,
                    label="S_min = %.3g steps" % smin)
            ax.plot(c["x"], [smin * bc / b for b in c["x"]], "--", color="#94a3b8", lw=1,
                    label="E_min / B (perfect scaling), E_min = %.3g" % (smin * bc))
            ax.axvline(bc, color=col, lw=0.8, alpha=0.5)
    ax.plot(xs, ys, "o", color=col, ms=5, label=LABELS[key] + " (tuned lr per B)")


def finish(ax, title, path):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("steps to target (E[L] <= 0.01)")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper right")
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=110)
    print("wrote", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "img"))
    ap.add_argument("--reuse", action="store_true", help="use finished sweeps of the same names")
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run_sweeps(a.url.rstrip("/"), a.reuse)
    os.makedirs(a.out, exist_ok=True)
    for key in s:
        f = s[key]["fit"] or {}
        if f.get("params"):
            print("%-11s B_crit %.4g %s  S_min %.4g  E_min %.4g  (sweep %d)" % (
                key, f["params"]["B_crit"]["value"], f["params"]["B_crit"]["ci95"],
                f["params"]["S_min"]["value"], f["derived"]["E_min"]["value"], s[key]["id"]))

    fig, ax = plt.subplots(figsize=(7, 4.6))
    draw(ax, "sgd", s["sgd"], asymptotes=True)
    finish(ax, "NQM, SGD: steps to target scale as 1/B up to the critical batch size",
           os.path.join(a.out, "nqm_sgd.png"))
    fig, ax = plt.subplots(figsize=(7, 4.6))
    draw(ax, "sgd", s["sgd"])
    draw(ax, "heavy_ball", s["heavy_ball"])
    finish(ax, "NQM: momentum helps only at large batch sizes",
           os.path.join(a.out, "nqm_momentum.png"))
    fig, ax = plt.subplots(figsize=(7, 4.6))
    draw(ax, "sgd", s["sgd"])
    draw(ax, "precond", s["precond"])
    finish(ax, "NQM: preconditioning raises the critical batch size",
           os.path.join(a.out, "nqm_precond.png"))


if __name__ == "__main__":
    main()
